"""Which `serve` process runs the in-process job worker: the one holding a lock file.

With `serve --workers N`, uvicorn starts N identical processes; each tries a non-blocking
exclusive `flock` on one file in the data directory, and only the holder runs the job worker.
The kernel drops the lock when its process dies, so a restarted process can take it over:
there is never a second in-process job worker, whatever the number of serve processes.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class WorkerLock:
    """An exclusive, non-blocking lock on `path`, held until `release` (or process exit)."""

    def __init__(self, path: Path) -> None:
        """A lock on `path` (created if missing), not yet taken."""
        self.path = path
        self._fd: int | None = None

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
