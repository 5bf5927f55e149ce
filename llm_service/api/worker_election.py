"""Which `serve` process runs the in-process job worker: the one holding a lock file.

With `serve --workers N`, uvicorn starts N identical processes; each tries a non-blocking
exclusive `flock` on one file in the data directory, and only the holder runs the job worker.
The kernel drops the lock when its process dies (or its holder releases it: a second serve on
the same data directory stopping), and every process that does not hold it tries again every
ELECTION_RETRY_S (`run_when_elected`), so a live process takes it over: there is never a second
in-process job worker, and never none for long while a serve process runs.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

# How often a process without the lock tries it again (a non-blocking flock: a system call).
ELECTION_RETRY_S = 1.0


class WorkerLock:
    """An exclusive, non-blocking lock on `path`, held until `release` (or process exit)."""

    def __init__(self, path: Path) -> None:
        """A lock on `path` (created if missing), not yet taken."""
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this process holds the lock."""
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock if no other holder has it; True if this process now holds it."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        """Give the lock up (another process may take it)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


async def run_when_elected(
    lock: WorkerLock, run: Callable[[], Awaitable[None]], retry_s: float = ELECTION_RETRY_S
) -> None:
    """Try `lock` every `retry_s` until this process holds it, then `run` (the job worker).

    Cancel the task while `lock.held` is False to give up waiting (shutdown)."""
    while True:
        if lock.acquire():
            break
        await asyncio.sleep(retry_s)  # polling: the kernel has no "lock released" event
    await run()
