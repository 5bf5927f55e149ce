"""Recording where personal data was found (never the value) in pii_audit_findings."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from llm_service.pii.redact import PiiFinding


async def record_findings(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    findings: list[PiiFinding],
    *,
    source: str,
    context: str,
) -> None:
    """Insert one row per finding: its kind and location, in the tenant's transaction."""
    await conn.executemany(
        """
        INSERT INTO pii_audit_findings (tenant_id, source, table_name, detected_key, finding_kind,
                                        redacted_snippet)
        VALUES ($1, $2, $3, $4, $5, $6)
        """,
        [
            (tenant_id, source, context, f.location, f.kind, f"[REDACTED:{f.kind}]")
            for f in findings
        ],
    )


async def scan_queued_batch(conn: asyncpg.Connection, batch_size: int) -> tuple[int, int]:
    """Run fn_pii_scan_batch: (rows scanned, findings added)."""
    row = await conn.fetchrow("SELECT scanned, findings FROM fn_pii_scan_batch($1)", batch_size)
    assert row is not None
    return row["scanned"], row["findings"]
