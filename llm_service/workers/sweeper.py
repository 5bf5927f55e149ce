"""The reservation sweeper: expired reservations are settled without anyone running reconcile.

A reservation expires its call's timeout plus a grace after it was made; a caller that died (a
SIGKILL, an OOM, a settle that failed for good) leaves it pending. Every serve and worker process
runs this loop; each round settles every tenant's expired reservations at their worst case,
flagged as estimates. Rounds of several processes at once share the rows (the sweep skips rows
another transaction holds), so no election is needed and no session can stop the sweep by
holding a lock. A row is settled at most one interval (`LEDGER_SWEEP_INTERVAL_S`, default 10 s)
after it expires, unless a transaction holds it that long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import asyncpg

from llm_service.costs.ledger_repository import sweep_expired_reservations
from llm_service.db.pool import transaction
from llm_service.db.retry import log_failure
from llm_service.metrics import RESERVATIONS_SWEPT

_log = logging.getLogger(__name__)


async def sweep_once(pool: asyncpg.Pool) -> int:
    """One round: the number of rows settled."""
    async with transaction(pool) as conn:
        swept = await sweep_expired_reservations(conn)
    if swept:
        RESERVATIONS_SWEPT.inc(swept)
        _log.warning("expired reservations settled at their worst case", extra={"rows": swept})
    return swept


class ReservationSweeper:
    """Runs `sweep_once` every `interval_s` until stopped; outlives any error."""

    def __init__(self, pool: asyncpg.Pool, interval_s: float) -> None:
        """A sweeper over `pool` (the application role)."""
        self.pool = pool
        self.interval_s = interval_s
        self._stopping = asyncio.Event()

    async def run_until_stopped(self) -> None:
        """Sweep, wait an interval (or the stop), repeat."""
        while not self._stopping.is_set():
            try:
                await sweep_once(self.pool)
            except Exception as exc:  # the loop must outlive an outage or a defect
                log_failure(_log, "reservation sweep failed", exc, {})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)

    def stop(self) -> None:
        """End the loop after the current round."""
        self._stopping.set()


@dataclass
class RunningSweeper:
    """A sweeper looping in a background task; `stop` ends it and waits for the last round."""

    sweeper: ReservationSweeper
    task: asyncio.Task[None]

    async def stop(self) -> None:
        """Stop after the current round and wait for it."""
        self.sweeper.stop()
        await self.task


def start_sweeper(pool: asyncpg.Pool, interval_s: float) -> RunningSweeper:
    """Start the sweep loop in the background: the one way serve and `cli worker` start it."""
    sweeper = ReservationSweeper(pool, interval_s)
    task = asyncio.create_task(sweeper.run_until_stopped(), name="reservation-sweeper")
    return RunningSweeper(sweeper, task)
