"""Tenant rules: creating a tenant with a one-time key, resolving a key to its tenant."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

import asyncpg

from llm_service.db.pool import tenant_transaction
from llm_service.errors import InvalidRequest, NotFound, Unauthorized
from llm_service.input_rules import is_blank, trim
from llm_service.tenants import repository
from llm_service.tenants.keys import hash_api_key, is_well_formed, new_api_key

UNKNOWN_KEY_MESSAGE = "a valid API key is required: Authorization: Bearer <key>"


@dataclass(frozen=True)
class CreatedTenant:
    """A new tenant and its API key, which is never shown again."""

    tenant_id: UUID
    api_key: str


async def create_tenant(
    pool: asyncpg.Pool, name: str, *, monthly_cap_cents: Decimal | None = None
) -> CreatedTenant:
    """Create a tenant and return its freshly issued key (only the hash is stored)."""
    if is_blank(name):
        raise InvalidRequest("tenant name must not be blank")
    tenant_id = uuid.uuid4()
    api_key = new_api_key()
    async with tenant_transaction(pool, tenant_id) as conn:
        await repository.insert_tenant(conn, tenant_id, trim(name), hash_api_key(api_key))
        if monthly_cap_cents is not None:
            await repository.set_monthly_cap(conn, tenant_id, monthly_cap_cents)
    return CreatedTenant(tenant_id=tenant_id, api_key=api_key)


async def set_monthly_cap(pool: asyncpg.Pool, tenant_id: UUID, cap_cents: Decimal) -> None:
    """Set a tenant's monthly LLM spending cap."""
    if cap_cents < 0:
        raise InvalidRequest("the monthly cap must not be negative")
    async with tenant_transaction(pool, tenant_id) as conn:
        if not await repository.set_monthly_cap(conn, tenant_id, cap_cents):
            raise NotFound(f"no tenant {tenant_id}")


# No issued key hashes to this (keys are never empty): what a malformed header is looked up as.
_NO_KEY_HASH = hash_api_key("")


def presented_key_hash(authorization: str | None) -> str:
    """The hash to look up for an `Authorization: Bearer <key>` header (no I/O).

    A header that is not a well-formed bearer key gives a hash no tenant has, so it is still
    looked up (one hash, one indexed lookup, whatever was presented: an unknown key takes as
    long as a known one) and refused like an unknown key.
    """
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    key_hash = hash_api_key(key)
    if scheme.lower() != "bearer" or not is_well_formed(key):
        return _NO_KEY_HASH
    return key_hash


async def authenticate(pool: asyncpg.Pool, authorization: str | None) -> UUID:
    """The tenant of an `Authorization: Bearer <key>` header, or Unauthorized (see above)."""
    # One statement, no transaction around it. (The explanation hit path resolves the key in
    # its own transaction instead: `db.pool.key_transaction`.)
    async with pool.acquire() as conn:
        tenant_id = await repository.tenant_for_key_hash(conn, presented_key_hash(authorization))
    if tenant_id is None:
        raise Unauthorized(UNKNOWN_KEY_MESSAGE)
    return tenant_id


async def tenant_profile(
    pool: asyncpg.Pool, caller: UUID, *, requested: UUID | None = None
) -> dict[str, object]:
    """The caller's own tenant record; any other id is simply not found (404, never 403)."""
    target = requested or caller
    async with tenant_transaction(pool, caller, readonly=True) as conn:
        # RLS shows the caller only itself: another id reads as absent.
        row = await repository.get_tenant(conn, target)
    if row is None:
        raise NotFound("no such tenant")
    return {
        "tenant_id": row["id"],
        "name": row["name"],
        "monthly_cap_usd": row["monthly_cap_cents"] / 100,
    }
