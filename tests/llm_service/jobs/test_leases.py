"""Keeping leases: one batched renewal per round, failures tolerated within the lease, fenced
after it; each run learns its own end (cancel, lost) from the answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from uuid import UUID, uuid4

import asyncpg

from llm_service.jobs.leases import LeaseKeeper, Renew

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
    assert await _one(renew, lease_s=0.1, interval_s=0.02) == "lost"
    assert 3 <= calls["n"] <= 10


async def test_a_row_locked_for_a_few_rounds_keeps_its_lease() -> None:
    renew, calls = _renewals(LOCKED, LOCKED, False, True)
    assert await _one(renew, lease_s=5, interval_s=0.01) == "cancel"
    assert calls["n"] == 4


async def test_a_row_locked_for_a_whole_lease_counts_as_lost() -> None:
    renew, calls = _renewals(LOCKED)
    assert await _one(renew, lease_s=0.1, interval_s=0.02) == "lost"
    assert calls["n"] >= 3


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
