"""Run retention to completion: each kind batch by batch, each batch its own short transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from llm_service.errors import InvalidRequest
from llm_service.retention import repository

MAX_BATCH_SIZE = 100_000


@dataclass(frozen=True)
class RetentionReport:
    """What one retention run removed."""

    cutoff: datetime
    prompt_days: int
    call_prompts: int
    validation_payloads: int
    cache_entries: int
    batches: int


async def _drain(batch: Callable[[], Awaitable[int]]) -> tuple[int, int]:
    """Run `batch` until it finds nothing more; (rows, batches)."""
    total = batches = 0
    while (n := await batch()) > 0:
        total += n
        batches += 1
    return total, batches + 1


async def run_retention(
    conn: asyncpg.Connection, *, prompt_days: int, batch_size: int
) -> RetentionReport:
    """Purge what is past its age, in batches; `conn` must not be inside a transaction.

    Each batch commits on its own and skips rows another transaction holds, so requests keep
    being served; the cutoff is fixed once at the start, from the database's clock.
    """
    if prompt_days < 1:
        raise InvalidRequest("prompt retention must be at least 1 day")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise InvalidRequest(f"batch size must be between 1 and {MAX_BATCH_SIZE}")
    if conn.is_in_transaction():
        raise RuntimeError(
            "retention commits batch by batch: pass a connection outside a transaction"
        )
    before = await repository.cutoff(conn, prompt_days)
    prompts, b1 = await _drain(lambda: repository.purge_call_prompts(conn, before, batch_size))
    payloads, b2 = await _drain(
        lambda: repository.purge_validation_payloads(conn, before, batch_size)
    )
    cache, b3 = await _drain(lambda: repository.purge_expired_cache(conn, batch_size))
    return RetentionReport(
        cutoff=before,
        prompt_days=prompt_days,
        call_prompts=prompts,
        validation_payloads=payloads,
        cache_entries=cache,
        batches=b1 + b2 + b3,
    )


def render(report: RetentionReport) -> str:
    """A short summary of a retention run."""
    return "\n".join(
        (
            f"retention cutoff: {report.cutoff.isoformat()} ({report.prompt_days} days)",
            f"llm_api_calls prompts purged: {report.call_prompts}",
            f"llm_validation_failures payloads purged: {report.validation_payloads}",
            f"expired explanation_cache entries deleted: {report.cache_entries}",
            f"batches: {report.batches}",
        )
    )
