"""Every query about tenants."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg


async def insert_tenant(
    conn: asyncpg.Connection, tenant_id: UUID, name: str, api_key_hash: str
) -> None:
    """Insert a tenant row (the caller's transaction has this tenant set)."""
    await conn.execute(
        "INSERT INTO tenants (id, name, api_key_hash) VALUES ($1, $2, $3)",
        tenant_id,
        name,
        api_key_hash,
    )


async def tenant_for_key_hash(conn: asyncpg.Connection, api_key_hash: str) -> UUID | None:
    """The tenant owning a key hash, through the narrow definer function."""
    result: UUID | None = await conn.fetchval("SELECT fn_tenant_for_api_key_hash($1)", api_key_hash)
    return result


async def get_tenant(conn: asyncpg.Connection, tenant_id: UUID) -> dict[str, Any] | None:
    """The current tenant's row (RLS shows no other)."""
    row = await conn.fetchrow(
        "SELECT id, name, monthly_cap_cents, created_at FROM tenants WHERE id = $1", tenant_id
    )
    return dict(row) if row else None


async def set_monthly_cap(conn: asyncpg.Connection, tenant_id: UUID, cap_cents: Decimal) -> bool:
    """Change a tenant's monthly cap; False if no such tenant."""
    status = await conn.execute(
        "UPDATE tenants SET monthly_cap_cents = $2 WHERE id = $1", tenant_id, cap_cents
    )
    return bool(status == "UPDATE 1")
