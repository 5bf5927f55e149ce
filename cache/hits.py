"""Hit counts without slowing hits: counted in memory, written per tenant in one UPDATE.

`HitCounter.record` is synchronous and does no I/O, so a hit costs a dict update. `flush` writes
one `UPDATE ... FROM unnest(...)` per tenant, each in its own transaction with that tenant set
(row-level security allows nothing else), up to `concurrency` tenants at once. A tenant whose
write fails keeps its counts for the next flush, and the first error is raised after every tenant
was tried. The buffer holds at most `max_entries` distinct entries; hits beyond that are dropped
and counted in `dropped` (hit counts are statistics, not money).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from uuid import UUID

from cache.store import CacheHit, add_hits
from cache.tenancy import TenantTransactions

_log = logging.getLogger(__name__)
_MAX_INT4 = 2**31 - 1


class HitCounter:
    """Buffers cache hits and flushes them every few seconds and on shutdown."""

    def __init__(self, *, max_entries: int = 100_000, concurrency: int = 4) -> None:
        """An empty buffer; flushes use up to `concurrency` connections at once."""
        if max_entries < 1 or concurrency < 1:
            raise ValueError("max_entries and concurrency must be at least 1")
        self._max_entries = max_entries
        self._concurrency = concurrency
        self._pending: dict[UUID, dict[UUID, tuple[int, datetime]]] = {}
        self._entries = 0
        self._flush_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Hits recorded and not yet written."""
        return sum(n for hits in self._pending.values() for n, _ in hits.values())

    @property
    def pending_entries(self) -> int:
        """Distinct entries with hits not yet written."""
        return self._entries

    def record(self, tenant_id: UUID, entry_id: UUID, *, at: datetime | None = None) -> None:
        """Count one hit of `entry_id` (of `tenant_id`) at `at` (default: now)."""
        self._add(tenant_id, entry_id, 1, at or datetime.now(UTC))

    def record_hit(self, hit: CacheHit) -> None:
        """Count one hit of a lookup's result."""
        self.record(hit.tenant_id, hit.entry_id)

    def _add(self, tenant_id: UUID, entry_id: UUID, hits: int, at: datetime) -> None:
        """Add `hits` to the buffer, within the entry limit."""
        tenant = self._pending.setdefault(tenant_id, {})
        previous = tenant.get(entry_id)
        if previous is None:
            if self._entries >= self._max_entries:
                self.dropped += hits
                if not tenant:
                    del self._pending[tenant_id]
                return
            self._entries += 1
            tenant[entry_id] = (min(hits, _MAX_INT4), at)
        else:
            tenant[entry_id] = (min(previous[0] + hits, _MAX_INT4), max(previous[1], at))

    async def flush(self, tenants: TenantTransactions) -> int:
        """Write every buffered count, one UPDATE per tenant; return the number of hits written."""
        async with self._flush_lock:
            batch, self._pending, self._entries = self._pending, {}, 0
            slots = asyncio.Semaphore(self._concurrency)
            started: set[UUID] = set()
            written = 0
            errors: list[Exception] = []

            async def write(tenant_id: UUID) -> None:
                """Write one tenant's counts in its own transaction."""
                nonlocal written
                async with slots:
                    started.add(tenant_id)
                    hits = batch[tenant_id]
                    try:
                        async with tenants.transaction(tenant_id) as rows:
                            await add_hits(rows, tenant_id, hits)
                    except Exception as exc:  # rolled back: keep the counts for the next flush
                        self._requeue(tenant_id, hits)
                        errors.append(exc)
                    else:
                        written += sum(n for n, _ in hits.values())

            try:
                await asyncio.gather(*(write(tenant_id) for tenant_id in batch))
            finally:
                # Cancelled mid-flush: tenants not yet started go back (one in flight may or may
                # not have committed; it is not counted twice).
                for tenant_id, hits in batch.items():
                    if tenant_id not in started:
                        self._requeue(tenant_id, hits)
            if errors:
                raise errors[0]
            return written

    def _requeue(self, tenant_id: UUID, hits: dict[UUID, tuple[int, datetime]]) -> None:
        """Put a tenant's unwritten counts back into the buffer."""
        for entry_id, (count, at) in hits.items():
            self._add(tenant_id, entry_id, count, at)

    def start(self, tenants: TenantTransactions, *, interval_s: float = 10.0) -> None:
        """Flush every `interval_s` seconds in a background task until `aclose`."""
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        if self._task is not None and not self._task.done():
            raise RuntimeError("the hit counter is already running")
        self._stop.clear()
        self._task = asyncio.create_task(self._run(tenants, interval_s), name="cache-hit-counter")

    async def _run(self, tenants: TenantTransactions, interval_s: float) -> None:
        """Flush periodically; once stopped, flush a last time and return."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval_s)
            try:
                await self.flush(tenants)
            except Exception:
                _log.exception("flushing cache hit counts failed; they are kept for the next try")

    async def aclose(self, tenants: TenantTransactions | None = None) -> None:
        """Stop the background flushes after a last flush (or flush once into `tenants`)."""
        if self._task is not None:
            self._stop.set()
            await self._task
            self._task = None
        elif tenants is not None:
            await self.flush(tenants)
