"""Recording where personal data was found (never the value) in pii_audit_findings."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from llm_service.pii.redact import PiiFinding


def insert_findings_sql(
    *, tenant: str, source: str, context: str, locations: str, kinds: str, after: str = ""
) -> str:
    """The one INSERT of findings rows: one per element of the arrays `locations` and `kinds`
    (SQL expressions, as the other arguments); `after`: a relation drawn first (CROSS JOIN)."""
    first = f"{after} CROSS JOIN " if after else ""
    return f"""
    INSERT INTO pii_audit_findings (tenant_id, source, table_name, detected_key, finding_kind,
                                    redacted_snippet)
    SELECT {tenant}, {source}, {context}, f.location, f.kind, '[REDACTED:' || f.kind || ']'
      FROM {first}unnest({locations}, {kinds}) AS f(location, kind)
"""


_RECORD_FINDINGS_SQL = insert_findings_sql(
    tenant="$1::uuid",
    source="$2::text",
    context="$3::text",
    locations="$4::text[]",
    kinds="$5::text[]",
)


async def record_findings(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    findings: list[PiiFinding],
    *,
    source: str,
    context: str,
) -> None:
    """Insert one row per finding: its kind and location, in the tenant's transaction."""
    if not findings:
        return
    await conn.execute(
        _RECORD_FINDINGS_SQL,
        tenant_id,
        source,
        context,
        [f.location for f in findings],
        [f.kind for f in findings],
    )


async def scan_queued_batch(conn: asyncpg.Connection, batch_size: int) -> tuple[int, int]:
    """Run fn_pii_scan_batch: (rows scanned, findings added)."""
    row = await conn.fetchrow("SELECT scanned, findings FROM fn_pii_scan_batch($1)", batch_size)
    assert row is not None
    return row["scanned"], row["findings"]
