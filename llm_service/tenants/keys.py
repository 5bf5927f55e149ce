"""API keys: generated once, shown once, stored only as a hash."""

from __future__ import annotations

import hashlib
import re
import secrets

KEY_PREFIX = "lsk_"
_KEY_PATTERN = re.compile(r"^lsk_[A-Za-z0-9_-]{43}$")


def new_api_key() -> str:
    """A fresh API key with 256 bits of randomness."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """The stored form of a key (sha256 hex; keys are random, so no slow hash is needed)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def is_well_formed(key: str) -> bool:
    """Whether `key` has the shape of a key this service issues."""
    return bool(_KEY_PATTERN.fullmatch(key))
