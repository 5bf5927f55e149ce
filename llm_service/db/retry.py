"""Database outages: which errors mean "the server or the connection went away", and a bounded
retry (tenacity) for the few writes that must land once the database is back."""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

_log = logging.getLogger(__name__)
T = TypeVar("T")

# How long a write that must land (a run's end) waits for the database to come back.
OUTAGE_WAIT_S = 30.0

# Lost connections and a server that is shutting down, crashed, still starting, full or idle-
# timed-out (SQLSTATE 08, 57P0x, 53300). A statement timeout (57014) is NOT an outage: retrying
# repeats it.
_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.IdleSessionTimeoutError,
    asyncpg.TooManyConnectionsError,
    ConnectionError,  # refused, reset, aborted, broken pipe
    socket.gaierror,
)


def is_database_outage(exc: BaseException) -> bool:
    """The database could not be reached or dropped the connection (worth retrying later)."""
    if isinstance(exc, _OUTAGE_ERRORS):
        return True
    message = str(exc)
    # asyncpg leaves a connection whose server session was terminated mid-query in a busy state:
    # the pool's reset then raises "cannot switch to state 15; another operation (2) is in
    # progress" (asyncpg#784) after terminating it. The next connection is a fresh one.
    if type(exc) is asyncpg.InternalClientError and "cannot switch to state" in message:
        return True
    if isinstance(exc, asyncpg.InterfaceError) and "connection" in message and "closed" in message:
        return True
    # The server's Unix socket is gone (a file of ours that is missing names its file).
    return isinstance(exc, FileNotFoundError) and exc.filename is None


def log_failure(
    log: logging.Logger, message: str, exc: BaseException, extra: dict[str, str]
) -> None:
    """An outage as a warning naming its type; anything else (a defect) with its traceback."""
    if is_database_outage(exc):
        log.warning(message, extra={**extra, "error": type(exc).__name__})
    else:
        log.exception(message, extra=extra)


async def retry_through_outage(
    work: Callable[[], Awaitable[T]], *, within_s: float, what: str
) -> T:
    """Run `work` (one whole, idempotent transaction), again after an outage, for `within_s`."""
    retrying = AsyncRetrying(
        # A connect timeout (a host gone dark in a failover) is an outage here too.
        retry=retry_if_exception(
            lambda exc: is_database_outage(exc) or isinstance(exc, TimeoutError)
        ),
        wait=wait_exponential_jitter(initial=0.1, max=2.0),
        stop=stop_after_delay(within_s),
        reraise=True,
        before_sleep=lambda state: _log.warning(
            "database unavailable, retrying",
            extra={"action": what, "attempt": state.attempt_number},
        ),
    )
    async for attempt in retrying:
        with attempt:
            return await work()
    raise AssertionError("unreachable")  # pragma: no cover
