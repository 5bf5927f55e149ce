"""Rules for untrusted text, a caller's or a model's, before it reaches the database."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator

from llm_service.errors import InvalidRequest

# PostgreSQL text and jsonb cannot hold U+0000: such input is refused as invalid (422), never
# left to fail as a database error (500).
NO_NUL = r"^[^\x00]*$"
MAX_IDEMPOTENCY_KEY_CHARS = 200

# What shows nothing on screen: Unicode whitespace (str.isspace: NBSP, U+3000, U+2028, ...),
# control and format characters (zero-width space, joiners, BOM, bidi marks, soft hyphen) and
# the "filler" letters that render blank (Hangul fillers, the Braille blank).
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
BLANK_MESSAGE = "must not be blank (only whitespace or invisible characters)"


def _invisible(char: str) -> bool:
    return (
        char.isspace()
        or char in _BLANK_LETTERS
        or unicodedata.category(char) in _INVISIBLE_CATEGORIES
    )


def trim(text: str) -> str:
    """`text` without the whitespace and invisible characters at either end."""
    start, end = 0, len(text)
    while start < end and _invisible(text[start]):
        start += 1
    while end > start and _invisible(text[end - 1]):
        end -= 1
    return text[start:end]


def is_blank(text: str) -> bool:
    """True when `text` holds nothing visible: empty, Unicode whitespace or invisible only."""
    return not trim(text)


def visible(text: str) -> str:
    """`text` trimmed, or ValueError when it is blank (a pydantic validator)."""
    if is_blank(text):
        raise ValueError(BLANK_MESSAGE)
    return trim(text)


#: Free text a caller writes (a question): refused when blank, kept trimmed of invisible ends.
VisibleText = Annotated[str, AfterValidator(visible)]


def check_idempotency_key(key: str | None) -> None:
    """Refuse an Idempotency-Key that is empty, longer than 200 characters or holds a NUL."""
    if key is not None and (not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS or "\x00" in key):
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters, none of them NUL"
        )


# `\u0000`, or a lone surrogate `\ud800`-`\udfff`, escaped in JSON text: preceded by an even
# number of backslashes (or none). A surrogate pair (high then low) is valid and kept.
_JSON_BAD_ESCAPE = re.compile(
    r"(?<!\\)((?:\\\\)*)(?:\\u0000|\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
    r"|(?<![dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")


def storable(text: object) -> str:
    """`text` with every NUL and lone surrogate, raw or escaped in the JSON it holds, as U+FFFD.

    PostgreSQL text and jsonb hold neither, and what a model writes is stored (its tool calls,
    events, findings) and parsed: one such character in it would fail the run that records it.
    A provider may also send null or a non-string where text belongs (a tool call's name or
    arguments): None becomes "", anything else its JSON text, so nothing downstream crashes.
    """
    if not isinstance(text, str):
        text = _as_text(text)
    return _JSON_BAD_ESCAPE.sub(r"\1\\ufffd", _BAD_CHARS.sub("\ufffd", text))


def _as_text(value: object) -> str:
    if value is None:
        return ""
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (ValueError, TypeError, RecursionError):  # circular, or nested past the stack
        return f"[unreadable {type(value).__name__}]"
