"""What every job kind shares in one worker process: the batched lease keeper, the supervision
of a run (its one timeout, its lease, a cancel request) and the shielded recording of its end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar
from uuid import UUID

import asyncpg

from llm_service.db.pool import tenant_transaction
from llm_service.jobs import repository
from llm_service.jobs.kinds import ClaimLike, JobTable
from llm_service.jobs.leases import LeaseKeeper
from llm_service.settings import Settings

T = TypeVar("T")

# The one lease length (the setting WORKER_LEASE_S; this is its default).
LEASE_SECONDS: float = Settings.model_fields["worker_lease_s"].default


class DatabaseRenewal:
    """The keeper's renewal statement: on its own connection when given a URL (the worker),
    else through the pool (a stand-alone runner: tests, the evaluation). It presents the lease
    tokens of the runs it is asked to renew (`tokens`: run id -> token of the claim)."""

    def __init__(
        self, pool: asyncpg.Pool, worker: str, lease_s: float, *, url: str | None = None
    ) -> None:
        """Renew `worker`'s leases of `lease_s`; `url` opens the keeper's own connection."""
        self.pool = pool
        self.worker = worker
        self.lease_s = lease_s
        self.url = url
        self.tokens: dict[UUID, UUID] = {}
        self._conn: asyncpg.Connection | None = None

    async def __call__(self, run_ids: Sequence[UUID]) -> Mapping[UUID, bool | None]:
        """One renewal of `run_ids` (an answer later than half a lease counts as failed)."""
        timeout_s = self.lease_s / 2
        tokens = [self.tokens[run_id] for run_id in run_ids if run_id in self.tokens]
        if self.url is None:
            async with self.pool.acquire() as conn:
                return await repository.renew_leases(
                    conn, self.worker, self.lease_s, tokens, timeout_s=timeout_s
                )
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self.url,
                timeout=timeout_s,
                # The server ends a renewal this process gave up on by itself (a cancelled one
                # may still wait there on a row lock, holding the locks of rows it updated).
                server_settings={
                    "application_name": "llm-service-heartbeat",
                    "statement_timeout": str(max(1, int(timeout_s * 1000))),
                },
            )
        try:
            return await repository.renew_leases(
                self._conn, self.worker, self.lease_s, tokens, timeout_s=timeout_s
            )
        except BaseException:
            await self.aclose()  # a fresh connection next round
            raise

    async def aclose(self) -> None:
        """Close the own connection, if open."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()


@dataclass(frozen=True)
class Supervised(Generic[T]):
    """How supervised work ended: done (with its result), timed_out, cancel (requested), lost
    (the lease), or failed (with the exception)."""

    ended: Literal["done", "timed_out", "cancel", "lost", "failed"]
    result: T | None = None
    error: Exception | None = None


class JobRuntime:
    """The lease keeper and the run supervision every kind's runner of one process shares."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        worker: str,
        *,
        lease_s: float = LEASE_SECONDS,
        heartbeat_url: str | None = None,
    ) -> None:
        """The runtime of worker `worker`; `heartbeat_url`: the keeper's own connection."""
        self.pool = pool
        self.worker = worker
        self.lease_s = lease_s
        self.renewal = DatabaseRenewal(pool, worker, lease_s, url=heartbeat_url)
        self.leases = LeaseKeeper(self.renewal, lease_s=lease_s)
        # Ends being recorded (shielded: they outlive a cancelled run; see Worker._drain).
        self.finishing: set[asyncio.Future[Any]] = set()

    async def supervise(
        self, claim: ClaimLike, work: Coroutine[Any, Any, T], timeout_s: float
    ) -> Supervised[T]:
        """Run `work` under one `asyncio.timeout` while keeping the claim's lease; a lost lease
        or a cancel request cancels the work. Cancelling the caller cancels the work too."""
        self.renewal.tokens[claim.run_id] = claim.lease_token
        lease = self.leases.hold(claim.run_id)
        task = asyncio.ensure_future(work)

        async def watch() -> Literal["lost", "cancel"]:
            how = await lease.wait()
            task.cancel()
            return how

        watcher = asyncio.create_task(watch())
        try:
            async with asyncio.timeout(timeout_s):
                return Supervised("done", await task)
        except TimeoutError:
            return Supervised("timed_out")
        except asyncio.CancelledError:
            if watcher.done() and not watcher.cancelled():
                return Supervised(watcher.result())
            raise
        except Exception as exc:
            return Supervised("failed", error=exc)
        finally:
            self.leases.release(lease)
            if self.renewal.tokens.get(claim.run_id) == claim.lease_token:
                del self.renewal.tokens[claim.run_id]
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher

    async def record_end(self, end: Awaitable[T]) -> T:
        """Await `end` shielded (it lands even if the run is cancelled meanwhile), tracked in
        `finishing` so a shutting-down worker lets it land before handing leases back."""
        future = asyncio.ensure_future(end)
        self.finishing.add(future)
        future.add_done_callback(self.finishing.discard)
        return await asyncio.shield(future)

    async def hand_back(self, table: JobTable, claim: ClaimLike) -> bool:
        """End this worker's lease of `claim` at once (shutdown): another worker takes it over."""
        async with tenant_transaction(self.pool, claim.tenant_id) as conn:
            return await repository.hand_back(
                conn, table, claim.run_id, self.worker, claim.lease_token
            )

    async def aclose(self) -> None:
        """Stop the keeper and close its connection."""
        await self.leases.aclose()
        await self.renewal.aclose()
