"""`serve --workers N`: only the holder of the lock file runs the in-process job worker."""

from __future__ import annotations

from pathlib import Path

from llm_service.api.worker_election import WorkerLock


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
