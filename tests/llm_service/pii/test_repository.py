"""The findings rows, as llm_app: `record_findings` and the gateway's one-statement reserve write
them through one statement builder, so the same findings give the same rows either way."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

import asyncpg
import pytest

from llm_service.costs.ledger_repository import reserve_call_alone
from llm_service.db.pool import tenant_transaction
from llm_service.pii.redact import PiiFinding
from llm_service.pii.repository import record_findings
from llm_service.tenants.service import CreatedTenant

# A location with a quote and a kind with SQL in it: values are parameters, never text.
FINDINGS = [("messages[0].content", "email"), ('messages[1]\'s "name"', "phone'); --")]


async def _rows(owner_pool: asyncpg.Pool, tenant_id: UUID) -> list[tuple[object, ...]]:
    async with owner_pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT source, table_name, detected_key, finding_kind, redacted_snippet "
            "FROM pii_audit_findings WHERE tenant_id = $1 ORDER BY detected_key",
            tenant_id,
        )
    return [tuple(r) for r in rows]


async def test_record_findings_writes_what_the_reserve_writes(
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
) -> None:
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        await record_findings(
            conn,
            tenant.tenant_id,
            [PiiFinding(kind, location) for location, kind in FINDINGS],
            source="llm_guard",
            context="explanations",
        )
    async with app_pool.acquire() as conn:
        await reserve_call_alone(
            conn,
            run_token=None,
            findings=FINDINGS,
            tenant_id=other_tenant.tenant_id,
            endpoint="explanations",
            model="openai/gpt-4o-mini",
            provider="openai",
            worst_case_usd=Decimal("0.001"),
            lease_seconds=60.0,
            max_tokens=10,
        )
    recorded = await _rows(owner_pool, tenant.tenant_id)
    assert recorded == [
        ("llm_guard", "explanations", "messages[0].content", "email", "[REDACTED:email]"),
        (
            "llm_guard",
            "explanations",
            'messages[1]\'s "name"',
            "phone'); --",
            "[REDACTED:phone'); --]",
        ),
    ]
    assert await _rows(owner_pool, other_tenant.tenant_id) == recorded


async def test_record_findings_writes_only_into_the_transactions_tenant(
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
) -> None:
    # Naming another tenant's id inside this tenant's transaction: RLS refuses the row.
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
            await record_findings(
                conn,
                other_tenant.tenant_id,
                [PiiFinding("email", "x")],
                source="llm_guard",
                context="explanations",
            )
    assert await _rows(owner_pool, other_tenant.tenant_id) == []
