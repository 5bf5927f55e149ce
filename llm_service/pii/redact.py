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

import ipaddress
import json
import re
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

__all__ = [
    "PERSONAL_KEYS",
    "PERSON_CONTEXT_KEYS",
    "PiiFinding",
    "is_personal_key",
    "normalize_key",
    "redact_json",
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
# Free-text detectors: each yields (start, end, kind) of validated candidates.
#
# Every pattern starts with a consuming character class and checks its left context with a
# lookbehind *after* that character, so the regex engine can skip ahead with its fast
# first-character scan; quantifiers are bounded or possessive, so no input backtracks
# catastrophically.
# --------------------------------------------------------------------------------------------

_Spans = Iterator[tuple[int, int, str]]
_A = re.ASCII

EMAIL, PHONE, CARD, IP, SSN, IBAN, NATIONAL_ID = (
    "email", "phone", "card_number", "ip_address", "ssn", "iban", "national_id"
)  # fmt: skip
PERSONAL_KEY: Final = "personal_key"

_EMAIL_LOCAL_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+'-"
)
_EMAIL_DOMAIN_RE = re.compile(r"(?:[A-Za-z0-9-]++\.)+(?:xn--[A-Za-z0-9-]+|[A-Za-z]{2,63})", _A)


def _find_emails(text: str) -> _Spans:
    at = text.find("@")
    while at != -1:
        start = at
        while start > 0 and text[start - 1] in _EMAIL_LOCAL_CHARS:
            start -= 1
        while start < at and text[start] in "'.":  # a quote or dot before the local part
            start += 1
        domain = _EMAIL_DOMAIN_RE.match(text, at + 1)
        if start < at and domain is not None:
            yield start, domain.end(), EMAIL
        at = text.find("@", at + 1)


def _is_word(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


# Cards ----------------------------------------------------------------------------------------

# A maximal run of digit groups joined by single spaces/dashes, at least 13 characters long.
_DIGIT_RUN_RE = re.compile(r"\d(?<![0-9]\d)(?=[\d -]{12})\d*(?:[ -]\d+)*", _A)
_DIGIT_GROUP_RE = re.compile(r"\d+", _A)
_LUHN_DOUBLED: Final = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        total += _LUHN_DOUBLED[n] if i % 2 else n
    return total % 10 == 0


def _issuer_ok(digits: str) -> bool:
    """A payment-card issuer prefix with that brand's lengths (Luhn-valid ad ids stay out)."""
    first, p2, p4, n = digits[0], int(digits[:2]), int(digits[:4]), len(digits)
    if first == "4":  # Visa
        return n in (13, 16, 19)
    if first == "5":  # Mastercard 51-55: 16; Maestro 50, 56-59
        return n == 16 or not 51 <= p2 <= 55
    if first == "6":  # Discover, UnionPay, Maestro, RuPay
        return True
    if first == "3":  # Amex 34/37: 15; JCB 35; Diners 30/36/38/39
        return n == 15 if p2 in (34, 37) else (p2 == 30 or 35 <= p2 <= 39) and n >= 14
    if first == "2":  # Mir 2200-2204; Mastercard 2221-2720: 16
        return 2200 <= p4 <= 2204 or (2221 <= p4 <= 2720 and n == 16)
    if first == "1":  # UATP
        return n == 15
    if first == "8":  # UnionPay / RuPay
        return p2 in (81, 82) and n >= 16
    return p4 == 9792 and n == 16  # Troy


def _is_card(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and _issuer_ok(digits) and _luhn_ok(digits)


def _find_cards(text: str) -> _Spans:
    for run in _DIGIT_RUN_RE.finditer(text):
        s, e = run.span()
        if e - s < 13:
            continue
        groups = [(g.start() + s, g.end() + s) for g in _DIGIT_GROUP_RE.finditer(run.group())]
        if s > 0 and _is_word(text[s - 1]):
            groups.pop(0)  # glued to a word on the left: not a card group
        if groups and e < len(text) and _is_word(text[e]):
            groups.pop()
        # Every window of whole groups that is a card; overlapping windows merge later.
        for i, (gs, ge) in enumerate(groups):
            count, sep = ge - gs, ""
            if 13 <= count <= 19 and _is_card(text[gs:ge]):
                yield gs, ge, CARD
            if count < 3:
                continue
            for j in range(i + 1, len(groups)):
                hs, he = groups[j]
                if he - hs < 3 or (sep and text[hs - 1] != sep):
                    break
                sep = text[hs - 1]
                count += he - hs
                if count > 19:
                    break
                if count >= 13 and _is_card(text[gs:he].replace(sep, "")):
                    yield gs, he, CARD


# Phones ---------------------------------------------------------------------------------------

_PHONE_INTL_RE = re.compile(r"\+(?<![\w+]\+)[1-9](?:[ .()\-]{0,2}\d){7,14}(?!\d)", _A)
_PHONE_INTL_REJECT = re.compile(r"\+\d+\.\d+|\+\d{4}-\d\d-\d\d.*", _A)  # +1234567.89, +2025-..
_PHONE_NANP_RE = re.compile(
    r"[(\d](?<![\w+.\-][(\d])"
    r"(?:(?<=1)[ .-](?:\(\d{3}\) ?|\d{3}[ .-])|(?<=\()\d{3}\) ?|(?<=\d)\d\d[ .-])"
    r"\d{3}[ .-]\d{4}(?![\w-]|\.\d)",
    _A,
)
_PHONE_TRUNK_RE = re.compile(
    r"[(0](?<![\w+.\-/][(0])"
    r"(?:(?<=\()0[1-9]\d{0,3}\) ?\d{2,8}(?:[ .-]\d{2,8}){0,3}"
    r"|(?<=0)(?:0[1-9]\d{0,2}|[1-9]\d{0,3})([ .\-/])\d{2,8}(?:\1\d{2,8}){0,3})"
    r"(?![\w\-/]|\.\d)",
    _A,
)
_MAX_PHONE_DIGITS: Final = 15


def _space_run_too_long(text: str, s: int, e: int) -> bool:
    """Whether [s, e) sits in a space-separated digit run longer than a phone (e.g. a card)."""
    count = sum(ch.isdigit() for ch in text[s:e])
    i = s
    while count <= _MAX_PHONE_DIGITS and i >= 2 and text[i - 1] == " " and text[i - 2].isdigit():
        i -= 1
        while i > 0 and text[i - 1].isdigit():
            i -= 1
            count += 1
    j, n = e, len(text)
    while count <= _MAX_PHONE_DIGITS and j + 1 < n and text[j] == " " and text[j + 1].isdigit():
        j += 1
        while j < n and text[j].isdigit():
            j += 1
            count += 1
    return count > _MAX_PHONE_DIGITS


def _find_phones(text: str) -> _Spans:
    if "+" in text:
        for m in _PHONE_INTL_RE.finditer(text):
            if not _PHONE_INTL_REJECT.fullmatch(m.group()):
                yield m.start(), m.end(), PHONE
    for m in _PHONE_NANP_RE.finditer(text):
        if not _space_run_too_long(text, m.start(), m.end()):
            yield m.start(), m.end(), PHONE
    for m in _PHONE_TRUNK_RE.finditer(text):
        digits = sum(ch.isdigit() for ch in m.group())
        if 9 <= digits <= _MAX_PHONE_DIGITS and not _space_run_too_long(text, *m.span()):
            yield m.start(), m.end(), PHONE


# IP addresses ---------------------------------------------------------------------------------

_IPV4_RE = re.compile(r"\d(?<![\w.]\d)\d{0,2}(?:\.\d{1,3}){3}(?!\w|\.\d)", _A)
_HEX = "[0-9A-Fa-f]"
_IPV6_RE = re.compile(
    rf"[0-9A-Fa-f:](?<![\w:.][0-9A-Fa-f:])"
    rf"(?:(?<=:){_HEX}{{0,4}}(?::{_HEX}{{0,4}}){{1,7}}|{_HEX}{{0,3}}(?::{_HEX}{{0,4}}){{2,7}})"
    r"(?:\.\d{1,3}\.\d{1,3}\.\d{1,3})?(?![\w:]|\.\d)",
    _A,
)


def _ipv4_ok(candidate: str) -> bool:
    return all(int(o) <= 255 and (o == "0" or o[0] != "0") for o in candidate.split("."))


def _find_ips(text: str) -> _Spans:
    if "." in text:
        for m in _IPV4_RE.finditer(text):
            if _ipv4_ok(m.group()):
                yield m.start(), m.end(), IP
    if ":" in text:
        for m in _IPV6_RE.finditer(text):
            candidate = m.group()
            groups = [g for g in candidate.split(":") if g]
            if len(groups) + ("." in candidate) < 3:  # not ::1, fe80::1 or x[1::2]
                continue
            if "::" not in candidate and candidate.count(":") < 6:  # times, MAC addresses
                continue
            try:
                ipaddress.IPv6Address(candidate)
            except ValueError:
                continue
            yield m.start(), m.end(), IP


# US SSN and ITIN (same shape ddd-dd-dddd) -------------------------------------------------------

_SSN_SHAPE_RE = re.compile(r"\d(?<![0-9]\d)(?<![0-9]-\d)\d\d-\d\d-\d{4}(?!\d|-\d)", _A)


def _ssn_kind(area: int, group: int, serial: int) -> str | None:
    if area >= 900:  # ITIN: 9xx with group 50-65, 70-88, 90-92, 94-99
        ok = 50 <= group <= 65 or 70 <= group <= 88 or 90 <= group <= 92 or group >= 94
        return NATIONAL_ID if ok and serial else None
    return SSN if area not in (0, 666) and group and serial else None


def _find_ssns(text: str) -> _Spans:
    for m in _SSN_SHAPE_RE.finditer(text):
        raw = m.group()
        kind = _ssn_kind(int(raw[:3]), int(raw[4:6]), int(raw[7:]))
        if kind is not None:
            yield m.start(), m.end(), kind


# IBAN -----------------------------------------------------------------------------------------

_IBAN_RE = re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d\d(?: ?[A-Z0-9]){11,30}", _A)
# IBAN length by country: the ISO 13616 registry, plus the national IBAN-like formats of
# DZ AO BJ BF CM CV CF TD KM CG CI GQ GA GW HN IR MG ML MA MZ NE SN TG.
_IBAN_LENGTHS: Final[dict[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
    "DZ": 26, "AO": 25, "BJ": 28, "BF": 28, "CM": 27, "CV": 25, "CF": 27, "TD": 27, "KM": 27,
    "CG": 27, "CI": 28, "GQ": 27, "GA": 27, "GW": 25, "HN": 28, "IR": 26, "MG": 27, "ML": 28,
    "MA": 28, "MZ": 25, "NE": 28, "SN": 28, "TG": 28,
}  # fmt: skip


def _find_ibans(text: str) -> _Spans:
    n = len(text)
    m = _IBAN_RE.search(text)
    while m is not None:
        s, e = m.span()
        # The match may run on into the next word: resume the search inside it.
        m = _IBAN_RE.search(text, s + 1)
        expected = _IBAN_LENGTHS.get(text[s : s + 2])
        if expected is None:
            continue
        # Walk to the country's length; it must end where the match or a space ends it.
        length, end = 4, s + 4
        while end < e and length < expected:
            length += text[end] != " "
            end += 1
        if length != expected or (end < n and _is_word(text[end])):
            continue
        # ISO 13616: move the first four characters to the end, letters -> 10..35, mod 97 == 1.
        compact = text[s + 4 : end].replace(" ", "") + text[s : s + 4]
        if int("".join(str(int(ch, 36)) for ch in compact)) % 97 == 1:
            yield s, end, IBAN
            if m is not None and m.start() < end:
                m = _IBAN_RE.search(text, end)


# Other national ids: UK NINO, Italian codice fiscale, Spanish DNI/NIE ----------------------------

_NATIONAL_RE = re.compile(
    r"[A-Z0-9](?<![A-Za-z0-9][A-Z0-9])(?:"
    # NINO: prefix letters per HMRC, and never BG GB KN NK NT TN ZZ
    r"(?<=[A-CEGHJ-PR-TW-Z])(?!(?<=B)G|(?<=G)B|(?<=K)N|(?<=N)[KT]|(?<=T)N|(?<=Z)Z)"
    r"[A-CEGHJ-NPR-TW-Z] ?\d\d ?\d\d ?\d\d ?[A-D]"
    r"|(?<=[A-Z])[A-Z]{5}\d\d[ABCDEHLMPRST]\d\d[A-Z]\d{3}[A-Z]"  # codice fiscale
    r"|(?P<es>(?<=[XYZ])-?\d{7}|(?<=\d)\d{7})-?(?P<letter>[A-Z])"  # DNI / NIE
    r")(?![A-Za-z0-9])",
    _A,
)
_ES_LETTERS: Final = "TRWAGMYFPDXBNJZSQVHLCKE"


def _find_national_ids(text: str) -> _Spans:
    for m in _NATIONAL_RE.finditer(text):
        if m.group("es") is not None:
            number = (text[m.start()] + m.group("es")).replace("-", "")
            if number[0] in "XYZ":
                number = str("XYZ".index(number[0])) + number[1:]
            if _ES_LETTERS[int(number) % 23] != m.group("letter"):
                continue
        yield m.start(), m.end(), NATIONAL_ID


# Scanning -------------------------------------------------------------------------------------

_UUID_RE = re.compile(
    r"[0-9A-Fa-f](?<![0-9A-Fa-f-][0-9A-Fa-f])[0-9A-Fa-f]{7}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-"
    r"[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}(?![0-9A-Fa-f-])",
    _A,
)
_UUID_LEN: Final = 36
_ANY_DIGIT_RE = re.compile(r"\d", _A)

_DIGIT_DETECTORS: Final[tuple[Callable[[str], _Spans], ...]] = (
    _find_cards,
    _find_ssns,
    _find_national_ids,
    _find_ibans,
    _find_phones,
)
# Most severe first: the placeholder of merged overlapping candidates names the first.
_SEVERITY: Final = {k: i for i, k in enumerate((CARD, SSN, NATIONAL_ID, IBAN, EMAIL, PHONE, IP))}
_MAX_PASSES: Final = 8

# (start, end, kinds most severe first); one placeholder and one finding, of the first kind
_Cluster = tuple[int, int, list[str]]


def _in_uuid(text: str, s: int, e: int) -> bool:
    window_start = max(0, s - _UUID_LEN)
    for m in _UUID_RE.finditer(text, window_start, min(len(text), e + _UUID_LEN)):
        if m.start() < e and s < m.end():
            return True
    return False


def _scan(text: str) -> list[_Cluster]:
    candidates: list[tuple[int, int, str]] = []
    has_digit = _ANY_DIGIT_RE.search(text) is not None
    if not has_digit and "@" not in text and ":" not in text:
        return []  # every detector needs a digit, an "@" (e-mail) or a ":" (IPv6)
    if has_digit:
        for detect in _DIGIT_DETECTORS:
            candidates.extend(detect(text))
    if "@" in text:
        candidates.extend(_find_emails(text))
    candidates.extend(_find_ips(text))  # IPv6 may have no decimal digit
    if not candidates:
        return []
    if "-" in text:
        candidates = [c for c in candidates if c[2] == EMAIL or not _in_uuid(text, c[0], c[1])]
    candidates.sort()
    clusters: list[_Cluster] = []
    for s, e, kind in candidates:
        if clusters and s < clusters[-1][1]:
            cs, ce, kinds = clusters[-1]
            if kind not in kinds:
                kinds.append(kind)
            clusters[-1] = (cs, max(ce, e), kinds)
        else:
            clusters.append((s, e, [kind]))
    for _, _, kinds in clusters:
        kinds.sort(key=_SEVERITY.__getitem__)
    return clusters


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
        clusters = _scan(current)
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
        new = dict(message)
        base = f"messages[{i}]"
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
        out.append(new)
    return out, findings


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
