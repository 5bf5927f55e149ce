"""Where the claim loop claims: a connection of its own when given a URL, else the runs' pool.

Through the pool a claim waits behind every run in flight for a connection (with 1,000 runs on
86 connections, claims p50 20 s: at most 550 runs ever in flight, bench/RESULTS.md "## Jobs").
On its own connection a claim is one statement whatever the runs do; the runs then wait for
the pool instead, which admits them at the rate the database serves them.
"""

from __future__ import annotations

from collections.abc import Collection
from uuid import UUID

import asyncpg

from llm_service.jobs import repository
from llm_service.jobs.kinds import Claim

#: The statement timeout of the claim connection (a claim is one short statement).
CLAIM_STATEMENT_TIMEOUT_MS = 15_000


def _claims(rows: list[asyncpg.Record]) -> list[Claim]:
    return [
        Claim(r["kind"], r["run_id"], r["tenant_id"], r["takeover"], r["lease_token"]) for r in rows
    ]


async def claim_batch(
    pool: asyncpg.Pool,
    worker: str,
    lease_s: float,
    limit: int = 1,
    running: Collection[UUID] = (),
    kinds: Collection[str] | None = None,
) -> list[Claim]:
    """Up to `limit` runs of `kinds` (None: every kind) for this worker, through `pool` (runs
    whose worker died or lost them come first)."""
    async with pool.acquire() as conn:
        rows = await repository.claim_batch(conn, worker, lease_s, limit, running, kinds)
    return _claims(rows)


class Claimer:
    """The claim loop's claims: on its own connection to `url` (opened on first use, opened
    again after a failure), else through `pool`."""

    def __init__(self, pool: asyncpg.Pool, url: str | None = None) -> None:
        """Claims through `pool`, or on a connection of their own to `url` (the app role's)."""
        self.pool = pool
        self.url = url
        self._conn: asyncpg.Connection | None = None

    async def claim(
        self,
        worker: str,
        lease_s: float,
        limit: int,
        running: Collection[UUID],
        kinds: Collection[str] | None,
    ) -> list[Claim]:
        """Up to `limit` runs of `kinds` for `worker` (see `claim_batch`)."""
        if self.url is None:
            return await claim_batch(self.pool, worker, lease_s, limit, running, kinds)
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self.url,
                server_settings={
                    "application_name": "llm-service-claims",
                    "statement_timeout": str(CLAIM_STATEMENT_TIMEOUT_MS),
                },
            )
        try:
            rows = await repository.claim_batch(self._conn, worker, lease_s, limit, running, kinds)
        except BaseException:
            await self.aclose()  # a fresh connection next time
            raise
        return _claims(rows)

    async def aclose(self) -> None:
        """Close the own connection, if open."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
