"""The free-text PII detectors: each finds validated candidates of one kind; `scan` merges them.

Pure functions, no state; the kinds and rules are listed in `llm_service.pii.redact`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from typing import Final

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

# (start, end, kinds most severe first); one placeholder and one finding, of the first kind
Cluster = tuple[int, int, list[str]]


def _in_uuid(text: str, s: int, e: int) -> bool:
    window_start = max(0, s - _UUID_LEN)
    for m in _UUID_RE.finditer(text, window_start, min(len(text), e + _UUID_LEN)):
        if m.start() < e and s < m.end():
            return True
    return False


def scan(text: str) -> list[Cluster]:
    """Every candidate in `text`, overlapping ones merged, kinds most severe first."""
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
    clusters: list[Cluster] = []
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
