"""The worker freezes its start-up heap once, so full collections skip it."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap

import asyncpg
import pytest

import llm_service.workers.worker as worker_module
from llm_service.workers.worker import Worker

_SCRIPT = textwrap.dedent(
    """
    import gc
    from llm_service.workers.heap import YOUNG_THRESHOLD, freeze_startup_heap

    start_up = [["long-lived"]]
    assert any(o is start_up for o in gc.get_objects())
    assert gc.get_threshold()[0] < YOUNG_THRESHOLD
    assert freeze_startup_heap()
    assert gc.get_freeze_count() > 0
    # Young collections come less often (each stopped 1,000 runs' event loop): the threshold.
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    # Collections no longer see the start-up heap ...
    assert not any(o is start_up for o in gc.get_objects())
    # ... but everything created afterwards is collected as before.
    later = [["per run"]]
    assert any(o is later for o in gc.get_objects())
    frozen = gc.get_freeze_count()
    assert not freeze_startup_heap()  # once per process
    assert gc.get_freeze_count() == frozen
    print("ok")
    """
)


def test_the_start_up_heap_is_frozen_once_and_later_objects_are_not() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


async def test_the_worker_freezes_before_it_claims_anything(
    app_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []
    monkeypatch.setattr(worker_module, "freeze_startup_heap", lambda: order.append("freeze"))
    worker = Worker(app_pool, None, kinds=[])
    real_claim = worker._claim

    async def claim(limit: int) -> list[worker_module.Claim]:
        order.append("claim")
        worker.stop()
        return await real_claim(limit)

    monkeypatch.setattr(worker, "_claim", claim)
    await worker.run_until_stopped()
    assert order == ["freeze", "claim"]


def test_collections_are_timed_once_tracked() -> None:
    from llm_service.workers.heap import gc_paused_ms, track_gc_pauses

    track_gc_pauses()
    track_gc_pauses()  # idempotent: one hook, so no collection is counted twice
    hooks = [c for c in gc.callbacks if getattr(c, "__name__", "") == "_on_gc"]
    assert len(hooks) == 1
    before = gc_paused_ms()
    garbage = [[n] for n in range(10_000)]
    garbage.append(garbage)  # a cycle only the collector frees
    del garbage
    gc.collect()
    assert gc_paused_ms() > before
