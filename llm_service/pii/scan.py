"""The incremental PII scan of stored JSON: one bounded batch per call, or a drain batch by batch.

Rows are queued by triggers in the transaction that writes them (migration 005); each batch is a
narrow definer function that skips what another scan holds, so scans run while serving.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from llm_service.errors import InvalidRequest
from llm_service.pii.repository import scan_queued_batch

MAX_BATCH_SIZE = 10_000


@dataclass(frozen=True)
class ScanReport:
    """Queue entries scanned, findings added, and batches run."""

    scanned: int
    findings: int
    batches: int = 1


async def scan_batch(conn: asyncpg.Connection, batch_size: int) -> ScanReport:
    """Scan up to `batch_size` queued rows; commits with the caller's transaction (or at once)."""
    scanned, findings = await scan_queued_batch(conn, batch_size)
    return ScanReport(scanned=scanned, findings=findings)


async def drain(
    conn: asyncpg.Connection, *, batch_size: int = 1000, max_batches: int | None = None
) -> ScanReport:
    """Scan batch by batch, each committed on its own, until a batch comes back short.

    A short batch means nothing else was queued and free at that moment: rows another scan
    holds are that scan's to finish. `conn` must not be inside a transaction.
    """
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise InvalidRequest(f"batch size must be between 1 and {MAX_BATCH_SIZE}")
    if conn.is_in_transaction():
        raise RuntimeError("the PII scan commits batch by batch: pass a connection outside one")
    scanned = findings = batches = 0
    while max_batches is None or batches < max_batches:
        batch = await scan_batch(conn, batch_size)
        scanned += batch.scanned
        findings += batch.findings
        batches += 1
        if batch.scanned < batch_size:
            break
    return ScanReport(scanned=scanned, findings=findings, batches=batches)


def render(report: ScanReport) -> str:
    """A short summary of a scan run."""
    return (
        f"rows scanned: {report.scanned}\nfindings added: {report.findings}\n"
        f"batches: {report.batches}"
    )
