"""Database outages: which errors mean "the server or the connection went away", and a bounded
retry (tenacity) for the few writes that must land once the database is back."""

from __future__ import annotations

import logging
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

# Lost connections and a server that is shutting down, crashed or still starting (SQLSTATE
# classes 08 and 57P0x). A statement timeout (57014) is NOT an outage: retrying repeats it.
_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
)


def is_database_outage(exc: BaseException) -> bool:
    """The database could not be reached or dropped the connection (worth retrying later)."""
    if isinstance(exc, _OUTAGE_ERRORS):
        return True
    # asyncpg leaves a connection whose server session was terminated mid-query in a busy state:
    # the pool's reset then raises "cannot switch to state 15; another operation (2) is in
    # progress" (asyncpg#784) after terminating it. The next connection is a fresh one.
    if isinstance(exc, asyncpg.InternalClientError):
        return True
    message = str(exc)
    if isinstance(exc, asyncpg.InterfaceError) and "connection" in message and "closed" in message:
        return True
    # Refused, reset or missing socket; TimeoutError is an OSError too, but it is a deadline.
    return isinstance(exc, OSError) and not isinstance(exc, TimeoutError)


async def retry_through_outage(
    work: Callable[[], Awaitable[T]], *, within_s: float, what: str
) -> T:
    """Run `work` (one whole, idempotent transaction), again after an outage, for `within_s`."""
    retrying = AsyncRetrying(
        retry=retry_if_exception(is_database_outage),
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
