"""Keeping a lease: renewals on a timer, failures tolerated within the lease, fenced after it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from llm_service.leases import keep_lease


def _renewals(
    *answers: bool | Exception | None,
) -> tuple[Callable[[], Awaitable[bool | None]], dict[str, int]]:
    calls = {"n": 0}

    async def renew() -> bool | None:
        answer = answers[min(calls["n"], len(answers) - 1)]
        calls["n"] += 1
        if isinstance(answer, Exception):
            raise answer
        return answer

    return renew, calls


async def test_a_cancel_request_ends_the_lease_as_cancel() -> None:
    renew, calls = _renewals(False, False, True)
    assert await keep_lease(renew, lease_s=1, interval_s=0.01, context={}) == "cancel"
    assert calls["n"] == 3


async def test_a_lease_taken_by_another_worker_is_lost() -> None:
    renew, _ = _renewals(False, None)
    assert await keep_lease(renew, lease_s=1, interval_s=0.01, context={}) == "lost"


async def test_failures_within_the_lease_are_retried() -> None:
    outage = asyncpg.ConnectionDoesNotExistError("connection was closed")
    renew, calls = _renewals(outage, ValueError("a defect"), True)
    assert await keep_lease(renew, lease_s=5, interval_s=0.01, context={}) == "cancel"
    assert calls["n"] == 3


async def test_failing_past_the_lease_counts_as_lost() -> None:
    renew, calls = _renewals(asyncpg.TooManyConnectionsError("too many clients"))
    assert await keep_lease(renew, lease_s=0.1, interval_s=0.02, context={}) == "lost"
    assert 3 <= calls["n"] <= 10
