"""The finance credential: FINANCE_API_TOKEN only; a tenant's API key is refused with 403."""

from __future__ import annotations

import hmac

import asyncpg

from llm_service.errors import Forbidden, Unauthorized, Unavailable
from llm_service.tenants.keys import is_well_formed
from llm_service.tenants.service import authenticate

NOT_CONFIGURED = "finance access is not configured"
_TOKEN_REQUIRED = "the finance token is required: Authorization: Bearer <FINANCE_API_TOKEN>"
_TENANT_KEY = "a tenant API key cannot use the finance routes; they need FINANCE_API_TOKEN"


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


async def authorize_finance(
    pool: asyncpg.Pool, configured_token: str | None, authorization: str | None
) -> None:
    """Accept only `Bearer <configured token>`: 503 unconfigured, 403 tenant key, 401 otherwise."""
    expected = (configured_token or "").strip()
    if not expected:
        raise Unavailable(NOT_CONFIGURED)
    scheme, _, presented = (authorization or "").partition(" ")
    presented = presented.strip()
    # Constant time whatever is presented, so the comparison leaks nothing about the token.
    if hmac.compare_digest(_bytes(presented), _bytes(expected)) and scheme.lower() == "bearer":
        return
    if scheme.lower() == "bearer" and is_well_formed(presented):
        try:
            await authenticate(pool, authorization)
        except Unauthorized:
            pass
        else:
            raise Forbidden(_TENANT_KEY)
    raise Unauthorized(_TOKEN_REQUIRED)
