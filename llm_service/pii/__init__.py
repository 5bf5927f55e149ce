"""PII guard: pure detection and redaction of personal data in text, JSON and chat messages."""

from llm_service.pii.redact import (
    PERSON_CONTEXT_KEYS,
    PERSONAL_KEYS,
    PiiFinding,
    is_personal_key,
    normalize_key,
    redact_json,
    redact_messages,
    redact_text,
)

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
