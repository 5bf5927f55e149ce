"""The worker loop: claim runs of the registered job kinds (SKIP LOCKED, via a definer function)
and run them concurrently, their leases kept by one batched heartbeat
(`llm_service.jobs.leases`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Iterable

import asyncpg

from llm_service.db.retry import OUTAGE_WAIT_S, log_failure
from llm_service.jobs.kinds import Claim, JobKind, Registry
from llm_service.jobs.runtime import LEASE_SECONDS, JobRuntime
from llm_service.llm.gateway import LlmGateway
from llm_service.workers.claimer import Claimer, claim_batch
from llm_service.workers.heap import freeze_startup_heap

__all__ = ["CLAIM_BATCH", "Claim", "Worker", "claim_batch", "claim_next", "worker_name"]

_log = logging.getLogger(__name__)
# Runs claimed per round trip when slots are free (keeps a large concurrency filled quickly:
# 1,000 free slots are claimed in ten statements on the claim loop's own connection).
CLAIM_BATCH = 100


def worker_name() -> str:
    """A name unique to this process, recorded as the lease owner."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def default_kinds(
    pool: asyncpg.Pool, gateway: LlmGateway | None, runtime: JobRuntime
) -> list[JobKind]:
    """The service's job kinds: investigations and budget optimisations."""
    from llm_service.investigations.runner import InvestigationRunner
    from llm_service.optimizations.runner import OptimizationRunner

    return [
        InvestigationRunner(pool, gateway, runtime.worker, runtime=runtime),
        OptimizationRunner(pool, gateway, runtime.worker, runtime=runtime),
    ]


async def claim_next(
    pool: asyncpg.Pool, worker: str, lease_s: float = LEASE_SECONDS
) -> Claim | None:
    """The next run of any kind for this worker, if any."""
    claims = await claim_batch(pool, worker, lease_s, 1)
    return claims[0] if claims else None


class Worker:
    """Claims and runs up to `concurrency` runs at a time until stopped."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        gateway: LlmGateway | None,
        *,
        concurrency: int = 50,
        poll_interval_s: float = 0.5,
        name: str | None = None,
        lease_s: float = LEASE_SECONDS,
        shutdown_grace_s: float = 10.0,
        heartbeat_url: str | None = None,
        kinds: Iterable[JobKind] | None = None,
        freeze_heap: bool = True,
    ) -> None:
        """A worker over `pool` (the application role). `heartbeat_url` (the application
        role's URL) gives the lease keeper and the claim loop each a connection of their own
        (claims then never wait behind the runs for the pool); `kinds` replaces the default
        job kinds (they must share this worker's `runtime`); `freeze_heap` False leaves the
        start-up heap to the host process (`serve` freezes it in its lifespan)."""
        self.pool = pool
        self.freeze_heap = freeze_heap
        self.lease_s = lease_s
        self.shutdown_grace_s = shutdown_grace_s
        self.name = name or worker_name()
        self.concurrency = concurrency
        self.poll_interval_s = poll_interval_s
        self.runtime = JobRuntime(pool, self.name, lease_s=lease_s, heartbeat_url=heartbeat_url)
        self.claimer = Claimer(pool, heartbeat_url)
        self.kinds = Registry(
            default_kinds(pool, gateway, self.runtime) if kinds is None else kinds
        )
        self._running: dict[asyncio.Task[str], Claim] = {}
        self._stopping = asyncio.Event()

    @property
    def in_flight(self) -> int:
        """Runs this worker is executing now."""
        return len(self._running)

    async def _claim(self, limit: int) -> list[Claim]:
        running = [claim.run_id for claim in self._running.values()]
        return await self.claimer.claim(self.name, self.lease_s, limit, running, self.kinds.names)

    async def run_until_stopped(self) -> None:
        """Claim and run work until `stop()`; then let runs in flight finish (see `_drain`)."""
        if self.freeze_heap:
            freeze_startup_heap()  # set up by now: full collections skip that heap from here on
        try:
            while not self._stopping.is_set():
                if self.in_flight >= self.concurrency:
                    await self._until_a_slot_frees_or_stop()
                    continue
                free = min(self.concurrency - self.in_flight, CLAIM_BATCH)
                try:
                    claims = await self._claim(free)
                except Exception as exc:  # the loop must outlive any error (or it stops)
                    log_failure(_log, "claim failed", exc, {})
                    claims = []
                if not claims:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self.poll_interval_s)
                    continue
                for claim in claims:
                    task = asyncio.create_task(self.process(claim))
                    self._running[task] = claim
                    task.add_done_callback(self._running.pop)
            await self._drain()
        finally:
            await self.claimer.aclose()
            await self.runtime.aclose()

    async def _until_a_slot_frees_or_stop(self) -> None:
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({*self._running, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()

    async def _drain(self) -> None:
        """Give runs in flight `shutdown_grace_s` to finish; cancel the rest and hand their
        leases back, so that another worker takes them over at once, not a lease later."""
        if not self._running:
            return
        _, late = await asyncio.wait(self._running, timeout=self.shutdown_grace_s)
        claims = [self._running[task] for task in late]
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        # A cancelled run may still be recording its end (shielded): let that land first, or
        # the hand-back could let another worker end the run over it.
        finishing = self.runtime.finishing
        if finishing:
            await asyncio.wait(finishing, timeout=OUTAGE_WAIT_S)
        for claim in claims:
            try:
                await self._hand_back(claim)
            except Exception as exc:  # the lease then simply expires
                _log.warning("hand back failed", extra={"error": type(exc).__name__})

    async def _hand_back(self, claim: Claim) -> None:
        kind = self.kinds.get(claim.kind)
        if kind is not None:
            await self.runtime.hand_back(kind.table, claim)
            _log.info("run handed back", extra={"run_id": str(claim.run_id)})

    async def run_once(self) -> str | None:
        """Claim one run and take it to its end (tests, the CLI); None when the queue is empty."""
        try:
            claims = await self._claim(1)
            return None if not claims else await self.process(claims[0])
        finally:
            await self.claimer.aclose()
            await self.runtime.aclose()

    async def process(self, claim: Claim) -> str:
        """Run one claimed item to a terminal state; "interrupted" if that was not recorded."""
        try:
            return await self._process(claim)
        except Exception as exc:
            # Typically the database went away at the start or the end of the run. It is still
            # `running` under this worker's lease; once that expires, this worker's claim loop
            # (or any other worker's) takes it over and ends it.
            log_failure(_log, "run interrupted", exc, {"run_id": str(claim.run_id)})
            return "interrupted"

    async def _process(self, claim: Claim) -> str:
        kind = self.kinds.get(claim.kind)
        if kind is None:
            # Never claimed by this worker (the claim names its kinds): a defect if it happens.
            # The run is left to a worker that knows its kind (its lease expires).
            _log.error("claimed a run of an unknown kind", extra={"kind": claim.kind[:100]})
            return "unknown kind"
        return await kind.execute(claim)

    def stop(self) -> None:
        """Stop claiming; runs in flight get the shutdown grace to finish (see `_drain`)."""
        self._stopping.set()
