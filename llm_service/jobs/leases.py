"""Keeping leases: ONE heartbeat loop per worker process renews all of its leases at once.

Every `interval_s` the loop sends one renewal naming every run it holds (`Renew`: one statement
on the keeper's own connection, never queued behind the runs' pool). The answer lists the runs
still held, each with its cancel flag. A run missing from it was lost (taken over by another
worker, or ended): its lease ends "lost" and the run stops. A run whose cancel was requested
ends "cancel". A run answered None was skipped (its row locked elsewhere): kept, not renewed,
tried again a few times within the round (`SKIP_RETRIES`, `skip_retry_s` apart: each try finds
the row at another moment, so a run whose row its own short transactions keep locking is not
starved of renewals), then next round. A failed renewal is tried again next round; but a run not
renewed for `lease_s - 2 * interval_s` is ended "lost" (even while a renewal hangs): BEFORE its
database lease can expire, so it has stopped by the time another worker may take it over. A
round sends at most RENEWAL_CHUNK runs per renewal (more: several renewals, one after another).
The loop runs only while it holds leases.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Literal
from uuid import UUID

from llm_service.db.retry import log_failure

_log = logging.getLogger(__name__)

LeaseEnd = Literal["lost", "cancel"]
# Renew these runs' leases; answer the runs still held, each with its cancel flag, or None for
# one still held but not renewed this round (its row locked by another transaction: skipped).
Renew = Callable[[Sequence[UUID]], Awaitable[Mapping[UUID, bool | None]]]
# The most runs one renewal names (fn_renew_leases refuses more: MAX_RENEWALS, migrations 008/009).
RENEWAL_CHUNK = 10_000
# Renewals of just the runs a round skipped (their rows locked), before the next round. A row is
# locked while any open transaction inserted an event, tool call or ledger row referencing it
# (the foreign key's share lock conflicts with the renewal's FOR UPDATE SKIP LOCKED).
SKIP_RETRIES = 7


def heartbeat_interval(lease_s: float) -> float:
    """How often leases of `lease_s` are renewed: five times a lease, at most every 0.2 s."""
    return max(0.2, lease_s / 5)


class Lease:
    """One run's lease, held by a `LeaseKeeper` until the run releases it or it ends."""

    def __init__(self, run_id: UUID) -> None:
        """A lease the claim has just set (so it counts as renewed now)."""
        self.run_id = run_id
        self.renewed_at = time.monotonic()
        self.ended: asyncio.Future[LeaseEnd] = asyncio.get_running_loop().create_future()

    def end(self, how: LeaseEnd) -> None:
        """Report the lease's end once (later reports are ignored)."""
        if not self.ended.done():
            self.ended.set_result(how)

    async def wait(self) -> LeaseEnd:
        """Until the lease is lost or the run's cancel is requested."""
        return await asyncio.shield(self.ended)


class LeaseKeeper:
    """The batched heartbeat of one worker process (or one stand-alone runner)."""

    def __init__(self, renew: Renew, *, lease_s: float, interval_s: float | None = None) -> None:
        """A keeper renewing through `renew` every `interval_s` (default: lease_s / 5)."""
        self.renew = renew
        self.lease_s = lease_s
        self.interval_s = heartbeat_interval(lease_s) if interval_s is None else interval_s
        # A lease not renewed for this long is ended: two rounds before the database's expiry
        # (the database's lease runs from its own now(), after `renewed_at`), never below one.
        self.deadline_s = max(lease_s - 2 * self.interval_s, self.interval_s)
        # The pause before renewing a round's skipped runs again (the retries spread over the
        # round, up to the next one: each finds the rows at another moment).
        self.skip_retry_s = self.interval_s / (SKIP_RETRIES + 1)
        self._held: dict[UUID, Lease] = {}
        self._task: asyncio.Task[None] | None = None
        self._renewing = False  # a round is in flight (it ends the loop itself when done)
        self.rounds = 0  # renewals sent (figures for the bench)
        self.retries = 0  # renewals of skipped runs only (figures for the bench)
        self.lost = 0  # leases that ended "lost"

    @property
    def held(self) -> int:
        """Leases held now."""
        return len(self._held)

    def hold(self, run_id: UUID) -> Lease:
        """Keep `run_id`'s lease (just claimed) from now on; starts the loop if it sleeps."""
        lease = Lease(run_id)
        self._held[run_id] = lease
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="lease-keeper")
        return lease

    def release(self, lease: Lease) -> None:
        """Stop renewing `lease` (its run ended, or stopped)."""
        if self._held.get(lease.run_id) is lease:
            del self._held[lease.run_id]
        if (
            not self._held
            and self._task is not None
            and not self._renewing
            and self._task is not asyncio.current_task()
        ):
            # Nothing left to renew: stop the loop now, not at its next round (no task is left
            # behind a run that has ended; the next `hold` starts a new one).
            self._task.cancel()
            self._task = None

    async def idle(self) -> None:
        """Until the loop has ended by itself (it holds nothing any more)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def aclose(self) -> None:
        """Stop the loop (leases held are simply no longer renewed)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _loop(self) -> None:
        try:
            # No await between the emptiness check and the exit: a `hold` never finds a task
            # that is about to end without renewing its lease.
            while self._held:
                await asyncio.sleep(self.interval_s)
                if self._held:
                    self._renewing = True
                    try:
                        await self._round()
                    finally:
                        self._renewing = False
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    async def _round(self) -> None:
        leases = list(self._held.values())
        skipped: list[Lease] = []
        for first in range(0, len(leases), RENEWAL_CHUNK):
            skipped += await self._renew(leases[first : first + RENEWAL_CHUNK])
        for _ in range(SKIP_RETRIES):
            skipped = [lease for lease in skipped if self._held.get(lease.run_id) is lease]
            if not skipped:
                return
            await asyncio.sleep(self.skip_retry_s)
            self.retries += 1
            skipped = await self._renew(skipped[:RENEWAL_CHUNK])

    async def _renew(self, leases: list[Lease]) -> list[Lease]:
        """One renewal of `leases`; returns those answered skipped (held, row locked)."""
        sent = time.monotonic()
        for lease in leases:
            if sent - lease.renewed_at >= self.deadline_s:
                self._end(lease, "lost")  # past its deadline already (earlier chunks were slow)
        leases = [lease for lease in leases if self._held.get(lease.run_id) is lease]
        if not leases:
            return []
        try:
            held = await self._answer(leases)
        except Exception as exc:
            log_failure(_log, "heartbeat failed", exc, {"leases": str(len(leases))})
            now = time.monotonic()
            for lease in leases:
                if now - lease.renewed_at >= self.deadline_s:
                    self._end(lease, "lost")
            return []
        self.rounds += 1
        skipped: list[Lease] = []
        for lease in leases:
            if self._held.get(lease.run_id) is not lease:
                continue  # released while the renewal was in flight
            if lease.run_id not in held:
                self._end(lease, "lost")
                continue
            cancel = held[lease.run_id]
            if cancel is None:
                skipped.append(lease)  # not renewed: tried again soon, its deadline still runs
            elif cancel:
                self._end(lease, "cancel")
            else:
                lease.renewed_at = sent
        return skipped

    async def _answer(self, leases: list[Lease]) -> Mapping[UUID, bool | None]:
        """The renewal's answer. Each lease still waiting for it at its deadline is ended then,
        whatever the renewal is waiting on (it must end before the database's lease does); the
        renewal itself is given up only when none of its leases is left within its deadline
        (one old lease, e.g. a run skipped for its locked row, never cancels the renewal of
        all the others, nor drops the keeper's connection with it)."""
        pending = asyncio.ensure_future(self.renew([lease.run_id for lease in leases]))
        try:
            while True:
                now = time.monotonic()
                waiting = []
                for lease in leases:
                    if self._held.get(lease.run_id) is not lease:
                        continue
                    if now - lease.renewed_at >= self.deadline_s:
                        self._end(lease, "lost")
                    else:
                        waiting.append(lease)
                if not waiting:
                    raise TimeoutError("no lease of the renewal is left within its deadline")
                due = min(lease.renewed_at for lease in waiting) + self.deadline_s
                done, _ = await asyncio.wait({pending}, timeout=max(0.0, due - now))
                if done:
                    return pending.result()
        finally:
            if not pending.done():
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)

    def _end(self, lease: Lease, how: LeaseEnd) -> None:
        if how == "lost" and not lease.ended.done():
            self.lost += 1
            _log.warning("lease lost", extra={"run_id": str(lease.run_id)})
        lease.end(how)
        self.release(lease)
