"""One Idempotency-Key rule for every POST that takes one (Stripe's semantics).

- No key: every request creates a new resource.
- A new key: the resource is created (202).
- The same key and the same request: the original resource, created once (200), however many
  retries arrive and however they race; the unique index on (tenant_id, idempotency_key)
  settles the race in the database, so two concurrent requests can never create two rows.
- The same key and a different request: 409, never a silent replay that drops the new body.

"The same request" is decided on a canonical form of the validated request, not on its bytes:
JSON with sorted keys and exact numbers (Decimals normalised), so key order, whitespace and
equivalent spellings (10000 and "10000.00") do not matter. Each caller says which fields make
up its request, as its table stores them. Keys are per tenant: another tenant's use of the same
key is independent, and invisible (row-level security).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from llm_service.errors import Conflict

REUSED_KEY_MESSAGE = (
    "this Idempotency-Key was already used for a different request; send exactly the same "
    "request to get the original, or use a new key for a new request"
)


def _exact(value: object) -> str:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value.is_finite() else str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} has no canonical form")


def canonical(request: Mapping[str, Any]) -> str:
    """The request as canonical JSON: sorted keys, no whitespace, Decimals as their exact
    normalised text ("10.00" and 1E+1 are both "10"), dates ISO."""
    return json.dumps(
        request, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_exact
    )


def fingerprint(request: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical request: what a stored request hash would hold."""
    return hashlib.sha256(canonical(request).encode()).hexdigest()


def replay(created: bool, stored: Mapping[str, Any], requested: Mapping[str, Any]) -> None:
    """Accept a new resource or a true retry; raise Conflict (409) for a reused key.

    `stored` is the request as the existing row holds it, `requested` the new one in the same
    form; both are compared canonically.
    """
    if not created and canonical(stored) != canonical(requested):
        raise Conflict(REUSED_KEY_MESSAGE)
