"""Single flight: one model call per scope and data, within a process and across processes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cache.embedding_local import MODEL_ID, LocalEmbedder
from cache.scope import CacheScope, normalise_question
from cache.single_flight import (
    SingleFlight,
    SingleFlightTimeout,
    advisory_lock_key,
    get_or_compute,
)
from llm_service.db.pool import tenant_transaction
from llm_service.db.urls import DatabaseUrls
from llm_service.explanations import cache_repository as store
from llm_service.explanations.flight_lock_repository import PgFlightLocks
from llm_service.tenants.service import CreatedTenant
from tests.helpers.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
ScopeFactory = Callable[..., CacheScope]


class Recorder:
    """An in-memory cache with a counted compute that says when it starts.

    `delay` is a slow model call (the behaviour under test: others arrive while it runs; the
    assertions hold whichever way they interleave); `gate`, when given, holds the compute until
    the test sets it; `hang` never finishes.
    """

    def __init__(
        self,
        *,
        delay: float = 0.3,
        fail_first: bool = False,
        hang: bool = False,
        gate: asyncio.Event | None = None,
    ):
        self.value: str | None = None
        self.computes = 0
        self.delay = delay
        self.fail_first = fail_first
        self.hang = hang
        self.gate = gate
        self.started = asyncio.Event()

    async def lookup(self) -> str | None:
        return self.value

    async def compute(self) -> str:
        self.computes += 1
        self.started.set()
        if self.hang:
            await asyncio.Event().wait()  # until cancelled
        if self.gate is not None:
            await self.gate.wait()
        else:
            await asyncio.sleep(self.delay)  # the slow model call (see the class docstring)
        if self.fail_first and self.computes == 1:
            raise RuntimeError("provider down")
        self.value = f"answer-{self.computes}"
        return self.value


async def _advisory_lock_waiters(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        )
    return count


async def _advisory_locks(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        )
    return count


async def test_fifty_concurrent_identical_misses_make_one_call(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    recorder = Recorder()
    flight = SingleFlight()
    results = await asyncio.gather(
        *(
            flight.get_or_compute(
                PgFlightLocks(app_pool),
                tenant.tenant_id,
                "scope-key:fp",
                recorder.lookup,
                recorder.compute,
                wait_timeout_s=10,
            )
            for _ in range(50)
        )
    )
    assert recorder.computes == 1
    assert {value for value, _ in results} == {"answer-1"}
    assert sum(computed for _, computed in results) == 1
    assert flight.in_flight == 0


async def test_a_hit_never_touches_the_lock(tenant: CreatedTenant) -> None:
    recorder = Recorder()
    recorder.value = "cached"
    broken_pool: Any = object()  # any use of the pool would fail
    value, computed = await get_or_compute(
        PgFlightLocks(broken_pool),
        tenant.tenant_id,
        "k",
        recorder.lookup,
        recorder.compute,
        wait_timeout_s=1,
    )
    assert (value, computed, recorder.computes) == ("cached", False, 0)


async def test_different_keys_and_tenants_do_not_wait_for_each_other(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    flight = SingleFlight()
    everyone_started = asyncio.Event()
    recorders = [Recorder(gate=everyone_started) for _ in range(3)]

    async def all_three_computing() -> None:
        # Each compute is held until all three run at once: one after another, this never happens.
        await asyncio.wait_for(asyncio.gather(*(r.started.wait() for r in recorders)), 30)
        everyone_started.set()

    await asyncio.gather(
        all_three_computing(),
        flight.get_or_compute(
            PgFlightLocks(app_pool),
            tenant.tenant_id,
            "a",
            recorders[0].lookup,
            recorders[0].compute,
            wait_timeout_s=5,
        ),
        flight.get_or_compute(
            PgFlightLocks(app_pool),
            tenant.tenant_id,
            "b",
            recorders[1].lookup,
            recorders[1].compute,
            wait_timeout_s=5,
        ),
        flight.get_or_compute(
            PgFlightLocks(app_pool),
            other_tenant.tenant_id,
            "a",
            recorders[2].lookup,
            recorders[2].compute,
            wait_timeout_s=5,
        ),
    )
    assert [r.computes for r in recorders] == [1, 1, 1]
    assert advisory_lock_key(tenant.tenant_id, "a") != advisory_lock_key(
        other_tenant.tenant_id, "a"
    )


async def test_paraphrases_coalesce_and_a_different_question_computes_its_own(
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    make_scope: ScopeFactory,
    local_embedder: LocalEmbedder,
) -> None:
    scope = make_scope(tenant.tenant_id)
    fingerprint = f"fp-{uuid.uuid4().hex}"
    computed_for: list[str] = []
    flight = SingleFlight()

    async def ask(question: str) -> tuple[uuid.UUID, bool]:
        vector = await local_embedder.aembed([normalise_question(question)])

        async def lookup() -> uuid.UUID | None:
            async with tenant_transaction(app_pool, tenant.tenant_id, readonly=True) as conn:
                hit = await store.lookup(
                    conn,
                    scope,
                    fingerprint=fingerprint,
                    question=question,
                    question_embedding=vector[0],
                    embedding_model=MODEL_ID,
                )
            return hit.entry_id if hit else None

        async def compute() -> uuid.UUID:
            computed_for.append(question)
            # The slow model call: the others arrive while it runs (the counts hold either way).
            await asyncio.sleep(0.3)
            async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
                return await store.store(
                    conn,
                    scope,
                    question=question,
                    question_embedding=vector[0],
                    embedding_model=MODEL_ID,
                    fingerprint=fingerprint,
                    explanation={"text": question},
                    citations=[],
                    cost_cents=Decimal("0.5"),
                    ttl_seconds=600,
                )

        return await flight.get_or_compute(
            PgFlightLocks(app_pool),
            tenant.tenant_id,
            scope.flight_key(fingerprint),
            lookup,
            compute,
            wait_timeout_s=20,
        )

    same = ["What explains the revenue decline?"] * 10 + [
        "What explains the decline in revenue?"
    ] * 10
    different = ["Which campaign performed best?"] * 5
    results = await asyncio.gather(*(ask(q) for q in same + different))
    # One call for the 20 paraphrases, one for the 5 different (they waited, missed, then one
    # of them led the next flight and the other four found its answer).
    assert len(computed_for) == 2
    assert len({entry for entry, _ in results[:20]}) == 1
    assert len({entry for entry, _ in results[20:]}) == 1
    assert sum(computed for _, computed in results) == 2


async def test_a_leader_that_fails_lets_a_waiter_compute(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    recorder = Recorder(delay=0.2, fail_first=True)
    flight = SingleFlight()
    results = await asyncio.gather(
        *(
            flight.get_or_compute(
                PgFlightLocks(app_pool),
                tenant.tenant_id,
                "k",
                recorder.lookup,
                recorder.compute,
                wait_timeout_s=10,
            )
            for _ in range(6)
        ),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)  # only the leader's caller
    assert recorder.computes == 2
    values = [r for r in results if not isinstance(r, BaseException)]
    assert {v for v, _ in values} == {"answer-2"}
    assert sum(c for _, c in values) == 1
    assert flight.in_flight == 0


async def test_a_failed_leader_in_another_process_lets_a_waiter_compute(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    # Two registries stand for two processes: only the advisory lock connects them.
    fail = asyncio.Event()
    recorder = Recorder(fail_first=True, gate=fail)
    first, second = SingleFlight(), SingleFlight()
    leader = asyncio.create_task(
        first.get_or_compute(
            PgFlightLocks(app_pool),
            tenant.tenant_id,
            "k",
            recorder.lookup,
            recorder.compute,
            wait_timeout_s=30,
        )
    )
    await recorder.started.wait()  # the leader holds the lock and computes
    waiter = asyncio.create_task(
        second.get_or_compute(
            PgFlightLocks(app_pool),
            tenant.tenant_id,
            "k",
            recorder.lookup,
            recorder.compute,
            wait_timeout_s=30,
        )
    )
    await wait_until(lambda: _advisory_lock_waiters(app_pool), "the second one waits for the lock")
    fail.set()
    with pytest.raises(RuntimeError):
        await leader
    value, computed = await waiter
    assert (value, computed, recorder.computes) == ("answer-2", True, 2)


async def test_waiting_in_process_is_bounded(app_pool: asyncpg.Pool, tenant: CreatedTenant) -> None:
    recorder = Recorder(hang=True)
    flight = SingleFlight()
    leader = asyncio.create_task(
        flight.get_or_compute(
            PgFlightLocks(app_pool),
            tenant.tenant_id,
            "k",
            recorder.lookup,
            recorder.compute,
            wait_timeout_s=60,
        )
    )
    await recorder.started.wait()
    with pytest.raises(SingleFlightTimeout, match=r"waited 0\.5s"):
        await flight.get_or_compute(
            PgFlightLocks(app_pool),
            tenant.tenant_id,
            "k",
            recorder.lookup,
            recorder.compute,
            wait_timeout_s=0.5,
        )
    # The waiter gave up on its own bound while the leader still computes.
    assert not leader.done() and recorder.computes == 1
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert flight.in_flight == 0


async def test_waiting_across_processes_is_bounded_and_a_cancelled_leader_frees_the_lock(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    recorder = Recorder(hang=True)
    first, second = SingleFlight(), SingleFlight()
    locks_before = await _advisory_locks(app_pool)
    leader = asyncio.create_task(
        first.get_or_compute(
            PgFlightLocks(app_pool),
            tenant.tenant_id,
            "k",
            recorder.lookup,
            recorder.compute,
            wait_timeout_s=60,
        )
    )
    await recorder.started.wait()  # computing, so holding the lock
    assert await _advisory_locks(app_pool) == locks_before + 1
    with pytest.raises(SingleFlightTimeout, match="another process"):
        await second.get_or_compute(
            PgFlightLocks(app_pool),
            tenant.tenant_id,
            "k",
            recorder.lookup,
            recorder.compute,
            wait_timeout_s=0.5,
        )
    # The waiter gave up on its own bound while the leader still computes.
    assert not leader.done() and recorder.computes == 1

    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert await _advisory_locks(app_pool) == locks_before
    fresh = Recorder(delay=0.0)
    value, computed = await second.get_or_compute(  # would time out if the lock were held
        PgFlightLocks(app_pool),
        tenant.tenant_id,
        "k",
        fresh.lookup,
        fresh.compute,
        wait_timeout_s=0.5,
    )
    assert (value, computed) == ("answer-1", True)


async def test_wait_timeout_must_be_positive(app_pool: asyncpg.Pool, tenant: CreatedTenant) -> None:
    recorder = Recorder()
    with pytest.raises(ValueError):
        await get_or_compute(
            PgFlightLocks(app_pool),
            tenant.tenant_id,
            "k",
            recorder.lookup,
            recorder.compute,
            wait_timeout_s=0,
        )


WORKER = textwrap.dedent(
    """
    import asyncio, json, sys, time, uuid
    from datetime import date
    from llm_service.explanations import cache_repository as store
    from cache.scope import CacheScope
    from cache.single_flight import get_or_compute
    from llm_service.db.pool import create_pool, tenant_transaction
    from llm_service.explanations.flight_lock_repository import PgFlightLocks

    URL, TENANT, FINGERPRINT = sys.argv[1:4]
    TENANT_ID = uuid.UUID(TENANT)
    SCOPE = CacheScope(
        tenant_id=TENANT_ID, subject="channel_performance",
        params={"channel": "paid_social", "metric": "revenue",
                "start": date(2026, 11, 9), "end": date(2026, 11, 15)},
        model="openai/gpt-4o-mini", prompt_version="explain-v1",
    )

    async def main():
        pool = await create_pool(URL, application_name="single-flight-test", max_size=4)

        async def lookup():
            async with tenant_transaction(pool, TENANT_ID, readonly=True) as conn:
                hit = await store.lookup(conn, SCOPE, fingerprint=FINGERPRINT, question=None,
                                         question_embedding=None, embedding_model="any")
            return str(hit.entry_id) if hit else None

        async def compute():
            # The slow model call: the other process arrives while it runs (the counts hold
            # either way).
            await asyncio.sleep(1.5)
            async with tenant_transaction(pool, TENANT_ID) as conn:
                entry = await store.store(
                    conn, SCOPE, question=None, question_embedding=None,
                    embedding_model="any", fingerprint=FINGERPRINT,
                    explanation={"pid": __import__("os").getpid()}, citations=[],
                    cost_cents=1, ttl_seconds=600)
            return str(entry)

        print("ready", flush=True)  # both processes are up: the test says go to both at once
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        results = await asyncio.gather(*(
            get_or_compute(PgFlightLocks(pool), TENANT_ID, SCOPE.flight_key(FINGERPRINT), lookup,
                           compute, wait_timeout_s=30)
            for _ in range(10)))
        print(json.dumps([[value, computed] for value, computed in results]))
        await pool.close()

    asyncio.run(main())
    """
)


async def test_across_processes_one_call_in_total(
    app_pool: asyncpg.Pool, database_urls: DatabaseUrls, tenant: CreatedTenant
) -> None:
    fingerprint = f"fp-{uuid.uuid4().hex}"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            database_urls.app,
            str(tenant.tenant_id),
            fingerprint,
            cwd=REPO_ROOT,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for process in processes:
        assert process.stdout is not None
        ready = await asyncio.wait_for(process.stdout.readline(), timeout=60)
        assert ready == b"ready\n", ready
    outputs = []
    for process in processes:  # go, to both at once
        assert process.stdin is not None
        process.stdin.write(b"go\n")
    for process in processes:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, stderr.decode()
        outputs.append(json.loads(stdout))
    results = [item for output in outputs for item in output]
    assert len(results) == 20
    assert len({value for value, _ in results}) == 1
    assert sum(computed for _, computed in results) == 1
    # The process that did not compute got the answer through lookup, after waiting for the lock.
    assert sorted(any(c for _, c in output) for output in outputs) == [False, True]

    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        rows = await conn.fetchval(
            "SELECT count(*) FROM explanation_cache WHERE data_fingerprint = $1", fingerprint
        )
    assert rows == 1
