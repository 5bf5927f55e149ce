"""`serve --workers N`: only the holder of the lock file runs the in-process job worker, and
a process without it takes it once its holder lets go."""

from __future__ import annotations

import asyncio
from pathlib import Path

from llm_service.api.worker_election import WorkerLock, run_when_elected


def test_two_holders_never_both_run_a_worker(tmp_path: Path) -> None:
    path = tmp_path / "serve-worker.lock"
    first, second = WorkerLock(path), WorkerLock(path)
    # flock is per open file: two locks in one process conflict as two processes would.
    assert first.acquire() is True
    assert second.acquire() is False
    assert first.acquire() is True  # idempotent for the holder
    first.release()
    assert second.acquire() is True  # a replacement process takes over
    assert first.acquire() is False
    second.release()


async def test_a_waiting_process_takes_the_lock_once_its_holder_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "serve-worker.lock"
    holder, waiter = WorkerLock(path), WorkerLock(path)
    assert holder.acquire() is True
    started = asyncio.Event()

    async def worker() -> None:
        started.set()

    task = asyncio.create_task(run_when_elected(waiter, worker, retry_s=0.01))
    try:
        for _ in range(5):
            await asyncio.sleep(0)  # let it try (and fail) the lock
        assert not started.is_set() and not waiter.held
        holder.release()
        await asyncio.wait_for(started.wait(), 30)
        assert waiter.held
        await task
    finally:
        task.cancel()
        waiter.release()


async def test_cancelling_the_wait_leaves_the_lock_free(tmp_path: Path) -> None:
    path = tmp_path / "serve-worker.lock"
    holder, waiter = WorkerLock(path), WorkerLock(path)
    assert holder.acquire() is True

    async def worker() -> None:
        raise AssertionError("the worker must not run without the lock")

    task = asyncio.create_task(run_when_elected(waiter, worker, retry_s=0.01))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() and not waiter.held
    holder.release()
    third = WorkerLock(path)
    assert third.acquire() is True  # nobody holds it
    third.release()
