"""Rules every piece of untrusted text from a caller obeys before it reaches the database."""

from __future__ import annotations

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
