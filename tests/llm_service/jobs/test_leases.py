"""Keeping leases: one batched renewal per round (in chunks the database takes), failures
tolerated until two rounds before the lease expires, fenced then (a hung renewal included);
each run learns its own end (cancel, lost) from the answer."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from uuid import UUID, uuid4

import asyncpg

from llm_service.jobs.leases import RENEWAL_CHUNK, LeaseKeeper, Renew
from tests.helpers.waiting import wait_until

LOCKED = "locked"


def _renewals(
    *answers: bool | Exception | str | None,
) -> tuple[Renew, dict[str, int]]:
    """A renewal answering for every run it is sent: held (False), cancel (True), lost (None),
    or held but not renewed because another transaction had the row locked (LOCKED)."""
    calls = {"n": 0}

    async def renew(run_ids: Sequence[UUID]) -> Mapping[UUID, bool | None]:
        answer = answers[min(calls["n"], len(answers) - 1)]
        calls["n"] += 1
        if isinstance(answer, Exception):
            raise answer
        if answer == LOCKED:
            return dict.fromkeys(run_ids, None)
        return {} if answer is None else dict.fromkeys(run_ids, bool(answer))

    return renew, calls


async def _one(renew: Renew, *, lease_s: float, interval_s: float) -> str:
    keeper = LeaseKeeper(renew, lease_s=lease_s, interval_s=interval_s)
    try:
        return await keeper.hold(uuid4()).wait()
    finally:
        await keeper.aclose()


async def test_a_cancel_request_ends_the_lease_as_cancel() -> None:
    renew, calls = _renewals(False, False, True)
    assert await _one(renew, lease_s=1, interval_s=0.01) == "cancel"
    assert calls["n"] == 3


async def test_a_lease_taken_by_another_worker_is_lost() -> None:
    renew, _ = _renewals(False, None)
    assert await _one(renew, lease_s=1, interval_s=0.01) == "lost"


async def test_failures_within_the_lease_are_retried() -> None:
    outage = asyncpg.ConnectionDoesNotExistError("connection was closed")
    renew, calls = _renewals(outage, ValueError("a defect"), True)
    assert await _one(renew, lease_s=5, interval_s=0.01) == "cancel"
    assert calls["n"] == 3


async def test_failing_past_the_lease_counts_as_lost() -> None:
    renew, calls = _renewals(asyncpg.TooManyConnectionsError("too many clients"))
    # Retried every round until two rounds before the lease expires (0.14 - 0.04 s), then lost.
    assert await _one(renew, lease_s=0.14, interval_s=0.02) == "lost"
    assert 3 <= calls["n"] <= 10


async def test_a_row_locked_for_a_few_rounds_keeps_its_lease() -> None:
    renew, calls = _renewals(LOCKED, LOCKED, False, True)
    assert await _one(renew, lease_s=5, interval_s=0.01) == "cancel"
    assert calls["n"] == 4


async def test_a_row_locked_for_a_whole_lease_counts_as_lost() -> None:
    renew, calls = _renewals(LOCKED)
    assert await _one(renew, lease_s=1.0, interval_s=0.01) == "lost"
    assert calls["n"] >= 2  # the first "locked" answer did not end it


async def test_one_renewal_per_round_names_every_lease_and_each_learns_its_own_end() -> None:
    kept, cancelled, stolen = uuid4(), uuid4(), uuid4()
    sent: list[set[UUID]] = []

    async def renew(run_ids: Sequence[UUID]) -> Mapping[UUID, bool | None]:
        sent.append(set(run_ids))
        return {kept: False, cancelled: True}  # `stolen` is no longer ours

    keeper = LeaseKeeper(renew, lease_s=5, interval_s=0.01)
    try:
        leases = {run: keeper.hold(run) for run in (kept, cancelled, stolen)}
        assert await leases[cancelled].wait() == "cancel"
        assert await leases[stolen].wait() == "lost"
        assert sent[0] == {kept, cancelled, stolen}  # one statement for all three
        assert not leases[kept].ended.done()
        assert keeper.held == 1 and keeper.lost == 1
    finally:
        await keeper.aclose()


async def test_a_lease_released_while_its_renewal_is_in_flight_is_not_reported_lost() -> None:
    keeper: LeaseKeeper

    async def renew(run_ids: Sequence[UUID]) -> Mapping[UUID, bool | None]:
        keeper.release(lease)  # the run ended meanwhile: its row is no longer `running`
        return {}

    keeper = LeaseKeeper(renew, lease_s=5, interval_s=0.01)
    lease = keeper.hold(uuid4())
    await keeper.idle()  # the loop ends by itself once it holds nothing
    assert not lease.ended.done()
    assert keeper.lost == 0 and keeper.rounds == 1


async def test_more_leases_than_one_renewal_takes_are_sent_in_chunks() -> None:
    sizes: list[int] = []
    first_round = asyncio.Event()

    async def renew(run_ids: Sequence[UUID]) -> Mapping[UUID, bool]:
        sizes.append(len(run_ids))
        if sum(sizes) >= RENEWAL_CHUNK + 1:
            first_round.set()
        return dict.fromkeys(run_ids, False)

    keeper = LeaseKeeper(renew, lease_s=5, interval_s=0.01)
    try:
        leases = [keeper.hold(uuid4()) for _ in range(RENEWAL_CHUNK + 1)]
        await asyncio.wait_for(first_round.wait(), 60)
        assert sizes[:2] == [RENEWAL_CHUNK, 1]  # within fn_renew_leases' limit, each renewed
        assert not any(lease.ended.done() for lease in leases) and keeper.lost == 0
    finally:
        await keeper.aclose()


async def test_a_renewal_that_hangs_is_given_up_and_the_lease_ends_before_the_database_s() -> None:
    cancelled = asyncio.Event()

    async def renew(run_ids: Sequence[UUID]) -> Mapping[UUID, bool]:
        try:
            await asyncio.Event().wait()  # a renewal waiting on a row lock, forever
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    keeper = LeaseKeeper(renew, lease_s=0.5, interval_s=0.05)
    # Two rounds of margin: it ends while the database's lease (lease_s from the last
    # renewal's own now(), later than the keeper's clock reading) still runs.
    assert keeper.deadline_s == 0.5 - 2 * 0.05
    assert await _one_of(keeper) == "lost"
    assert cancelled.is_set()


async def _one_of(keeper: LeaseKeeper) -> str:
    try:
        return await keeper.hold(uuid4()).wait()
    finally:
        await keeper.aclose()


async def test_a_run_skipped_for_its_locked_row_is_kept_unrenewed_and_the_others_renew() -> None:
    locked, other = uuid4(), uuid4()
    answered = asyncio.Event()
    renewed_at: dict[UUID, list[float]] = {locked: [], other: []}
    keeper: LeaseKeeper

    async def renew(run_ids: Sequence[UUID]) -> Mapping[UUID, bool | None]:
        for run in run_ids:
            renewed_at[run].append(leases[run].renewed_at)
        if len(renewed_at[other]) >= 4:
            answered.set()
        return {locked: None, other: False}  # `locked` skipped: another transaction holds it

    keeper = LeaseKeeper(renew, lease_s=5, interval_s=0.01)
    try:
        leases = {run: keeper.hold(run) for run in (locked, other)}
        await asyncio.wait_for(answered.wait(), 60)
        assert not leases[locked].ended.done() and keeper.lost == 0
        assert len(set(renewed_at[locked])) == 1  # never counted as renewed
        assert len(set(renewed_at[other])) > 1
    finally:
        await keeper.aclose()


async def test_a_run_skipped_past_its_deadline_is_lost() -> None:
    async def renew(run_ids: Sequence[UUID]) -> Mapping[UUID, bool | None]:
        return dict.fromkeys(run_ids)  # every round: skipped, its row locked

    keeper = LeaseKeeper(renew, lease_s=0.3, interval_s=0.02)
    assert await _one_of(keeper) == "lost"


async def test_a_row_locked_at_every_round_but_free_between_keeps_its_lease() -> None:
    # A busy run's own short transactions (events, tool calls, ledger rows: each takes a share
    # lock on the run's row through its foreign key) can hold its row at every round's moment;
    # the skipped run is tried again within the round, at other moments, before its deadline.
    busy, other = uuid4(), uuid4()
    rounds = {"full": 0}
    enough = asyncio.Event()

    async def renew(run_ids: Sequence[UUID]) -> Mapping[UUID, bool | None]:
        if other in run_ids:  # a full round: the busy run's row is locked just then
            rounds["full"] += 1
            if rounds["full"] >= 40:  # 40 rounds of 0.02 s: well past the 0.3 s lease
                enough.set()
            return {busy: None, other: False}
        return dict.fromkeys(run_ids, False)  # the retry of the skipped run finds it free

    keeper = LeaseKeeper(renew, lease_s=0.3, interval_s=0.02)
    try:
        leases = {run: keeper.hold(run) for run in (busy, other)}
        await asyncio.wait_for(enough.wait(), 60)
        assert not leases[busy].ended.done() and keeper.lost == 0
        assert keeper.retries >= 1
    finally:
        await keeper.aclose()


async def test_a_lease_reaching_its_deadline_during_a_slow_renewal_does_not_cancel_the_others() -> (
    None
):
    # An old lease (a run skipped for its locked row, round after round) comes to its deadline
    # while a slow renewal is in flight: it ends "lost" on time, but the renewal goes on and
    # renews the others (given up, it would leave every lease unrenewed, and the keeper's
    # connection dropped with it: under load, 825 of 1,000 leases were lost that way).
    old, fresh = uuid4(), uuid4()
    slow_started = asyncio.Event()
    release = asyncio.Event()
    outcome = {"cancelled": False, "answered": False}

    async def renew(run_ids: Sequence[UUID]) -> Mapping[UUID, bool | None]:
        if fresh not in run_ids:
            return {old: None}  # the old run's row is locked at every try
        slow_started.set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            outcome["cancelled"] = True
            raise
        outcome["answered"] = True
        return {old: None, fresh: False}

    keeper = LeaseKeeper(renew, lease_s=1.0, interval_s=0.1)  # deadline 0.8 s
    try:
        old_lease = keeper.hold(old)
        old_lease.renewed_at -= 0.5  # last renewed half a second ago (its row locked since)
        fresh_lease = keeper.hold(fresh)
        await asyncio.wait_for(slow_started.wait(), 60)
        assert await asyncio.wait_for(old_lease.wait(), 60) == "lost"
        release.set()

        async def answered() -> bool:
            return outcome["answered"] or outcome["cancelled"]

        await wait_until(answered, "the slow renewal ends")
        assert not outcome["cancelled"] and outcome["answered"]
        assert not fresh_lease.ended.done() and keeper.lost == 1
    finally:
        await keeper.aclose()
