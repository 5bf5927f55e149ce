"""A pure PII guard: find personal data and replace it before it leaves the process.

Used before any text is sent to an LLM provider and before tool output reaches the model. No
database and no network: callers record the returned :class:`PiiFinding` objects themselves.
A finding names the *kind* of data and *where* it was (a JSON path or a ``text[start:end]``
offset into the original text); it never holds the value or any part of it.

Free-text detectors (placeholder ``[REDACTED:<kind>]``):

- ``email``: ``local@domain.tld`` with an ASCII local part (letters, digits, ``._%+'-``) and a
  dotted domain ending in an alphabetic (or ``xn--``) TLD.
- ``phone``: ``+CC`` international numbers (8-15 digits, separators space ``.`` ``-`` ``()``);
  North-American ``(415) 555-2671`` / ``415-555-2671`` / ``415.555.2671`` / ``415 555 2671``;
  trunk-prefixed national numbers ``020 7946 0958``, ``06 12 34 56 78``, ``030-1234567``
  (leading 0, one consistent separator, 9-15 digits). Unseparated digit strings are never
  phones (they cannot be told from amounts, cents or ids).
- ``card_number``: 13-19 digits, contiguous or in groups of 3+ digits with one consistent
  separator (space or ``-``), passing the Luhn check and matching a payment-card issuer prefix
  at that brand's lengths (Visa 4: 13/16/19; Mastercard 51-55 and 2221-2720: 16; Maestro 50,
  56-59; Amex 34/37: 15; JCB/Diners 30/35-39; Discover/UnionPay/Maestro 6x; Mir 2200-2204;
  UATP 1: 15; UnionPay/RuPay 81/82; Troy 9792). Ad-platform ids such as 17-digit ``2385...``
  campaign ids therefore stay, even when they happen to pass Luhn.
- ``ip_address``: IPv4 with valid octets; IPv6 (validated by :mod:`ipaddress`) with at least
  three non-empty groups, so Python slices such as ``x[1::2]`` do not match.
- ``ssn``: US ``ddd-dd-dddd`` excluding area 000/666/9xx, group 00 and serial 0000.
- ``iban``: uppercase IBAN country code, two check digits, then alphanumerics (single spaces
  allowed) up to exactly that country's IBAN length, passing ISO 13616 mod-97.
- ``national_id``: UK National Insurance number (``AB 12 34 56 C`` with HMRC prefix rules),
  Spanish DNI/NIE with its mod-23 check letter, US ITIN (``9dd-[5-9]d-dddd`` in the issued
  ranges), Italian codice fiscale (full 16-character format).

Digit candidates inside a UUID are ignored; overlapping candidates are merged into one
placeholder (and one finding) naming the most severe kind: card_number, ssn, national_id,
iban, email, phone, ip_address. Redaction repeats until nothing more is found, so
``redact_text`` is idempotent.

JSON: values under a key naming personal data (:data:`PERSONAL_KEYS`, after
:func:`normalize_key`) are replaced whole by ``[REDACTED:personal_key]``; ``None``, booleans,
empty strings/containers and that placeholder itself carry no data and are kept as they are.
``name`` alone is personal only in a person context (see :data:`PERSON_CONTEXT_KEYS`). Dict
keys that themselves contain PII are redacted too.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from llm_service.pii.detectors import scan

__all__ = [
    "PERSONAL_KEYS",
    "PERSON_CONTEXT_KEYS",
    "PiiFinding",
    "is_personal_key",
    "normalize_key",
    "redact_json",
    "redact_message",
    "redact_messages",
    "redact_text",
]


@dataclass(frozen=True, slots=True)
class PiiFinding:
    """One detection: what kind of data, and where. Never the value itself."""

    kind: str
    location: str


# --------------------------------------------------------------------------------------------
# Personal keys
# --------------------------------------------------------------------------------------------

#: Normalised key names (see :func:`normalize_key`) whose values are personal data. Exact
#: membership only, so a SQL function can mirror it with ``= ANY(ARRAY[...])``. Deliberately
#: absent: ``name`` (campaign/channel/event names; see PERSON_CONTEXT_KEYS), ``user_agent``
#: and device/cookie/click ids (pseudonymous attribution join keys on every event, not directly
#: identifying), ``gender``, ``account_number`` (ad accounts), ``password`` (a secret, not PII).
PERSONAL_KEYS: Final[frozenset[str]] = frozenset(
    {
        # e-mail
        "email", "e_mail", "email_address", "e_mail_address", "customer_email", "user_email",
        "contact_email", "billing_email", "shipping_email", "personal_email", "work_email",
        # phone
        "phone", "phone_number", "phone_no", "telephone", "telephone_number", "tel", "mobile",
        "mobile_number", "mobile_phone", "cell_phone", "cellphone", "fax", "msisdn",
        "customer_phone", "contact_phone", "billing_phone", "shipping_phone", "home_phone",
        "work_phone",
        # government ids
        "ssn", "social_security_number", "social_security", "national_id",
        "national_id_number", "national_insurance_number", "nino", "tax_id", "tin",
        "taxpayer_id", "itin", "passport", "passport_number", "passport_no",
        "drivers_license", "driver_license", "drivers_license_number",
        "driver_license_number", "driving_licence", "driving_license",
        # network
        "ip", "ip_address", "ipv4", "ipv6", "ip_v4", "ip_v6", "client_ip", "remote_ip",
        "remote_addr", "remote_address", "user_ip", "customer_ip", "x_forwarded_for",
        "x_real_ip",
        # names
        "first_name", "last_name", "full_name", "middle_name", "maiden_name", "given_name",
        "family_name", "surname", "firstname", "lastname", "fullname", "customer_name",
        "contact_name", "cardholder_name", "card_holder", "card_holder_name", "billing_name",
        "shipping_name", "recipient_name", "username", "user_name",
        # address and location
        "street", "street_address", "address", "address1", "address2", "address_line1",
        "address_line2", "address_line_1", "address_line_2", "home_address",
        "billing_address", "shipping_address", "mailing_address", "postal_address",
        "house_number", "postal_code", "postcode", "post_code", "zip", "zipcode", "zip_code",
        "latitude", "longitude", "lat", "lng", "lon", "geolocation", "geo_location",
        # birth
        "date_of_birth", "dob", "birthdate", "birth_date", "birthday",
        # payment
        "credit_card", "credit_card_number", "card_number", "cc_number", "cvv", "cvc",
        "iban", "bank_account", "bank_account_number",
    }
)  # fmt: skip

#: Normalised keys under which an object describes a person: there, a ``name`` key is
#: personal. ``name`` is also personal in any object that has another personal key as a
#: sibling (``{"name": ..., "email": ...}``). The nearest enclosing key counts, through lists
#: (``{"customers": [{"name": ...}]}``).
PERSON_CONTEXT_KEYS: Final[frozenset[str]] = frozenset(
    {
        "customer", "customers", "user", "users", "person", "people", "persons", "contact",
        "contacts", "buyer", "buyers", "client", "clients", "recipient", "recipients",
        "sender", "shopper", "shoppers", "member", "members", "subscriber", "subscribers",
        "lead", "leads", "patient", "employee", "employees", "cardholder", "account_holder",
        "billing", "shipping", "billing_address", "shipping_address", "profile",
    }
)  # fmt: skip

_CAMEL_ACRONYM = re.compile(r"([A-Z]+)([A-Z][a-z]{2,})")
_CAMEL_WORD = re.compile(r"([a-z0-9])([A-Z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


@lru_cache(maxsize=8192)
def normalize_key(key: str) -> str:
    """Normalise a key for :data:`PERSONAL_KEYS`: ``firstName``/``First-Name`` -> ``first_name``.

    Steps (mirror them in SQL): trim; split camelCase (``([A-Z]+)([A-Z][a-z]{2,})`` -> ``\\1_\\2``,
    then ``([a-z0-9])([A-Z])`` -> ``\\1_\\2``); lowercase; each run of characters outside
    ``[a-z0-9]`` becomes ``_``; leading/trailing ``_`` removed.
    """
    split = _CAMEL_WORD.sub(r"\1_\2", _CAMEL_ACRONYM.sub(r"\1_\2", key.strip()))
    return _NON_ALNUM.sub("_", split.lower()).strip("_")


def is_personal_key(key: str) -> bool:
    """Whether a JSON key names personal data (``name`` alone: see PERSON_CONTEXT_KEYS)."""
    return normalize_key(key) in PERSONAL_KEYS


# --------------------------------------------------------------------------------------------

_A = re.ASCII
PERSONAL_KEY: Final = "personal_key"
_MAX_PASSES: Final = 8


def _placeholder(kind: str) -> str:
    return f"[REDACTED:{kind}]"


# Characters that some detector consumes or looks at next to a candidate. When a placeholder
# has none of them beside it (and no space-then-digit), no new candidate can appear there.
_CONTEXT_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.@_%'/:()"
)


def _may_expose(text: str, start: int, end: int) -> bool:
    """Whether replacing [start, end) by a placeholder could let a new candidate match."""
    if start > 0:
        before = text[start - 1]
        if before in _CONTEXT_CHARS or (
            before.isspace() and start > 1 and text[start - 2] in "0123456789)"
        ):
            return True
    if end < len(text):
        after = text[end]
        if after in _CONTEXT_CHARS or (
            after.isspace() and end + 1 < len(text) and text[end + 1] in "0123456789+("
        ):
            return True
    return False


# (start in new text, end in new text, start in previous text, end in previous text)
_Replacement = tuple[int, int, int, int]


def _to_previous(
    replacements: list[_Replacement], starts: list[int], pos: int, *, end: bool
) -> int:
    i = bisect_right(starts, pos) - 1
    if i < 0:
        return pos
    new_start, new_end, old_start, old_end = replacements[i]
    if pos == new_start:
        return old_start
    if pos < new_end:
        return old_end if end else old_start
    return old_end + (pos - new_end)


def _redact(text: str) -> tuple[str, list[tuple[int, int, str]]]:
    """Redact to a fixed point; return the text and (start, end, kind) in original offsets."""
    current = text
    passes: list[tuple[list[_Replacement], list[int]]] = []
    found: list[tuple[int, int, str]] = []
    for _ in range(_MAX_PASSES):
        clusters = scan(current)
        if not clusters:
            break
        for s, e, kinds in clusters:
            for replacements, starts in reversed(passes):
                s = _to_previous(replacements, starts, s, end=False)
                e = _to_previous(replacements, starts, e, end=True)
            found.append((s, e, kinds[0]))
        parts: list[str] = []
        replacements = []
        pos = new_pos = 0
        exposed = False
        for s, e, kinds in clusters:
            exposed = exposed or _may_expose(current, s, e)
            parts.append(current[pos:s])
            new_pos += s - pos
            ph = _placeholder(kinds[0])
            parts.append(ph)
            replacements.append((new_pos, new_pos + len(ph), s, e))
            new_pos += len(ph)
            pos = e
        parts.append(current[pos:])
        current = "".join(parts)
        if not exposed:
            break
        passes.append((replacements, [r[0] for r in replacements]))
    found.sort()
    return current, found


def redact_text(text: str, *, location: str = "text") -> tuple[str, list[PiiFinding]]:
    """Replace PII in free text by ``[REDACTED:<kind>]``; findings at ``location[start:end]``.

    Offsets refer to the input text. Idempotent: ``redact_text(out)`` finds nothing more.
    """
    redacted, found = _redact(text)
    return redacted, [PiiFinding(kind, f"{location}[{s}:{e}]") for s, e, kind in found]


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------

PERSONAL_KEY_PLACEHOLDER: Final = _placeholder(PERSONAL_KEY)
_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", _A)

# A JSON path built lazily: (parent, segment). Materialised only for findings, so a deep
# document does not cost O(depth^2) in path strings.
_Path = tuple["_Path | None", str]


def _path_str(path: _Path) -> str:
    segments: list[str] = []
    node: _Path | None = path
    while node is not None:
        segments.append(node[1])
        node = node[0]
    return "".join(reversed(segments))


@lru_cache(maxsize=8192)
def _redact_key(key: str) -> tuple[str, tuple[tuple[int, int, str], ...]]:
    redacted, found = _redact(key)
    return redacted, tuple(found)


@lru_cache(maxsize=8192)
def _key_segment(key: str) -> str:
    if _IDENTIFIER_RE.fullmatch(key):
        return f".{key}"
    escaped = key.replace("\\", "\\\\").replace("'", "\\'")
    return f"['{escaped}']"


def _carries_data(value: object) -> bool:
    """False for values with nothing to leak: None, booleans, empties, an earlier placeholder."""
    if value is None or isinstance(value, bool) or value == PERSONAL_KEY_PLACEHOLDER:
        return False
    return not (isinstance(value, str | dict | list | tuple) and len(value) == 0)


def redact_json(value: object, *, location: str = "$") -> tuple[object, list[PiiFinding]]:
    """Return a redacted copy of a JSON-like value (the input is not modified).

    Values under personal keys become ``[REDACTED:personal_key]`` (whole subtree); other
    strings go through :func:`redact_text`; numbers, booleans and ``None`` pass through.
    Locations are JSON paths (``$.customer.email``, ``$.notes[3:20]`` for offsets in a
    string). Iterative: arbitrarily deep documents do not touch the Python stack.
    """
    findings: list[PiiFinding] = []
    root: list[object] = [None]
    # (value, target container, slot in it, path, nearest enclosing normalised key)
    stack: list[tuple[object, Any, Any, _Path, str]] = [(value, root, 0, (None, location), "")]
    while stack:
        node, target, slot, path, context = stack.pop()
        if isinstance(node, str):
            redacted, found = _redact(node)
            target[slot] = redacted
            if found:
                where = _path_str(path)
                findings.extend(PiiFinding(k, f"{where}[{s}:{e}]") for s, e, k in found)
        elif isinstance(node, dict):
            out: dict[Any, object] = {}
            target[slot] = out
            keys = [(key, normalize_key(key) if isinstance(key, str) else "") for key in node]
            person = context in PERSON_CONTEXT_KEYS or any(nk in PERSONAL_KEYS for _, nk in keys)
            children: list[tuple[object, Any, Any, _Path, str]] = []
            for key, nk in keys:
                child = node[key]
                out_key: object = key
                key_found: tuple[tuple[int, int, str], ...] = ()
                if isinstance(key, str):
                    base, key_found = _redact_key(key)
                    out_key, n = base, 2
                    while out_key in out:  # two keys redacted alike: keep both
                        out_key, n = f"{base}#{n}", n + 1
                    child_path: _Path = (path, _key_segment(out_key))
                    if key_found:
                        where = _path_str(child_path)
                        findings.extend(
                            PiiFinding(k, f"{where}<key>[{s}:{e}]") for s, e, k in key_found
                        )
                else:
                    child_path = (path, f"['{key}']")
                out[out_key] = None
                if (nk in PERSONAL_KEYS or (nk == "name" and person)) and _carries_data(child):
                    out[out_key] = PERSONAL_KEY_PLACEHOLDER
                    findings.append(PiiFinding(PERSONAL_KEY, _path_str(child_path)))
                else:
                    children.append((child, out, out_key, child_path, nk or context))
            stack.extend(reversed(children))
        elif isinstance(node, list | tuple):
            items: list[object] = [None] * len(node)
            target[slot] = items
            stack.extend(
                (node[i], items, i, (path, f"[{i}]"), context) for i in range(len(node) - 1, -1, -1)
            )
        else:
            target[slot] = node
    return root[0], findings


# --------------------------------------------------------------------------------------------
# Chat messages
# --------------------------------------------------------------------------------------------


def _redact_string_field(text: str, where: str) -> tuple[str, list[PiiFinding]]:
    """A message string: JSON objects/arrays (e.g. tool output) by key, anything else as text."""
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, dict | list):
            redacted, findings = redact_json(parsed, location=where)
            if not findings:
                return text, []
            try:
                return json.dumps(redacted, ensure_ascii=False), findings
            except (TypeError, ValueError, RecursionError):
                pass
    return redact_text(text, location=where)


def redact_messages(
    messages: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[PiiFinding]]:
    """Redact OpenAI-style chat messages; returns new messages (the input is not modified).

    Redacts ``content`` (a string, or the ``text`` of content parts), tool-call
    ``function.arguments`` (JSON parsed and redacted by key, else as text) and the legacy
    ``function_call.arguments``. A string content that is a JSON object/array (tool output)
    is redacted by key as well. Roles, ids, names and tool names are left alone.
    """
    out: list[dict[str, Any]] = []
    findings: list[PiiFinding] = []
    for i, message in enumerate(messages):
        new, found = redact_message(message, i)
        out.append(new)
        findings.extend(found)
    return out, findings


def redact_message(message: dict[str, Any], index: int) -> tuple[dict[str, Any], list[PiiFinding]]:
    """Redact one chat message, the `index`-th of its conversation (as :func:`redact_messages`
    does each; findings are located at ``messages[index]``). The input is not modified."""
    findings: list[PiiFinding] = []
    new = dict(message)
    base = f"messages[{index}]"
    content = message.get("content")
    if isinstance(content, str):
        new["content"], found = _redact_string_field(content, f"{base}.content")
        findings.extend(found)
    elif isinstance(content, list):
        parts: list[Any] = []
        for j, part in enumerate(content):
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                part = dict(part)
                part["text"], found = redact_text(
                    part["text"], location=f"{base}.content[{j}].text"
                )
                findings.extend(found)
            parts.append(part)
        new["content"] = parts
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        calls: list[Any] = []
        for k, call in enumerate(tool_calls):
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                call = dict(call)
                call["function"], found = _redact_function(
                    call["function"], f"{base}.tool_calls[{k}].function"
                )
                findings.extend(found)
            calls.append(call)
        new["tool_calls"] = calls
    if isinstance(message.get("function_call"), dict):
        new["function_call"], found = _redact_function(
            message["function_call"], f"{base}.function_call"
        )
        findings.extend(found)
    return new, findings


def _redact_function(
    function: dict[str, Any], where: str
) -> tuple[dict[str, Any], list[PiiFinding]]:
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        return dict(function), []
    new = dict(function)
    new["arguments"], found = _redact_arguments(arguments, f"{where}.arguments")
    return new, found


def _redact_arguments(arguments: str, where: str) -> tuple[str, list[PiiFinding]]:
    try:
        parsed = json.loads(arguments)
    except (ValueError, RecursionError):
        return redact_text(arguments, location=where)
    redacted, findings = redact_json(parsed, location=where)
    if not findings:
        return arguments, []
    try:
        return json.dumps(redacted, ensure_ascii=False), findings
    except (TypeError, ValueError, RecursionError):
        return redact_text(arguments, location=where)
