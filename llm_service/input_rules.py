"""Rules for untrusted text, a caller's or a model's, before it reaches the database."""

from __future__ import annotations

import re

from llm_service.errors import InvalidRequest

# PostgreSQL text and jsonb cannot hold U+0000: such input is refused as invalid (422), never
# left to fail as a database error (500).
NO_NUL = r"^[^\x00]*$"
MAX_IDEMPOTENCY_KEY_CHARS = 200


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


def storable(text: str) -> str:
    """`text` with every NUL and lone surrogate, raw or escaped in the JSON it holds, as U+FFFD.

    PostgreSQL text and jsonb hold neither, and what a model writes is stored (its tool calls,
    events, findings) and parsed: one such character in it would fail the run that records it.
    """
    return _JSON_BAD_ESCAPE.sub(r"\1\\ufffd", _BAD_CHARS.sub("\ufffd", text))
