"""The one place that decides whether and when a provider call is retried (tenacity)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

from tenacity import RetryCallState

# Errors that say nothing was billed: the provider refused or failed before generating.
_NOT_BILLED_STATUSES = frozenset(
    {400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 504, 529}
)
_TRANSIENT_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
# The connection was never made, so the request was never sent (httpx's, aiohttp's, the OS's).
# GateClosed: the request was held at our own send gate (send_gate.py) and never left.
_NOT_CONNECTED_ERRORS = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "ClientConnectorError",
        "ConnectionRefusedError",
        "GateClosed",
    }
)
_CONNECTION_ERRORS = frozenset(
    {"APIConnectionError", "ConnectError", "RemoteProtocolError", "ReadError", "WriteError"}
)


def status_code(exc: BaseException) -> int | None:
    """The HTTP status a provider error carries, if any (litellm says 500 for others too)."""
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised from (litellm wraps the SDK's, which wrap httpx's)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def answered_status(exc: BaseException) -> int | None:
    """The HTTP error status the provider really answered with; None if it never answered one.

    litellm reports a dropped connection, an unreadable body or a body without `choices` as
    status 500 too; only an `httpx.HTTPStatusError` in the chain proves an error response.
    """
    for cause in _chain(exc):
        if any(klass.__name__ == "HTTPStatusError" for klass in type(cause).__mro__):
            code = getattr(getattr(cause, "response", None), "status_code", None)
            if isinstance(code, int):
                return code
    return None


def is_timeout(exc: BaseException) -> bool:
    """A deadline passed while waiting for the provider."""
    if isinstance(exc, TimeoutError):
        return True
    return type(exc).__name__ in {"Timeout", "APITimeoutError"}


def is_connection_error(exc: BaseException) -> bool:
    """The connection failed or dropped (the request may or may not have been processed)."""
    return any(type(cause).__name__ in _CONNECTION_ERRORS for cause in _chain(exc))


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: rate limits, 5xx, timeouts, dropped connections."""
    if is_timeout(exc) or is_connection_error(exc):
        return True
    code = status_code(exc)
    return code in _TRANSIENT_STATUSES


def never_sent(exc: BaseException) -> bool:
    """The connection to the provider was never established: the request cannot have reached
    it (refused, unreachable, DNS, TLS or connect timeout)."""
    return any(type(cause).__name__ in _NOT_CONNECTED_ERRORS for cause in _chain(exc))


def surely_not_billed(exc: BaseException) -> bool:
    """Nothing is owed: the request was never sent, or the provider answered an error status.

    A dropped connection, a read timeout or an unreadable answer proves nothing (the provider may
    have billed it), even though litellm gives those status 500 as well.
    """
    if never_sent(exc):
        return True
    if is_timeout(exc) or is_connection_error(exc):
        return False
    return answered_status(exc) in _NOT_BILLED_STATUSES


def retry_after_seconds(exc: BaseException) -> float | None:
    """The provider's Retry-After (seconds), from litellm's copy of the response headers."""
    headers: Any = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("retry-after") if hasattr(headers, "get") else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None


class ProviderBackoff:
    """Tenacity wait: honour Retry-After, else full-jitter exponential backoff."""

    def __init__(self, initial: float = 0.5, maximum: float = 8.0) -> None:
        self.initial = initial
        self.maximum = maximum

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if exc is not None:
            after = retry_after_seconds(exc)
            if after is not None:
                return min(after, self.maximum * 4)
        ceiling = min(self.maximum, self.initial * 2 ** (state.attempt_number - 1))
        return random.uniform(0, ceiling)


class StopAtDeadlineOrAttempts:
    """Tenacity stop: after `attempts`, or when the next wait would pass the caller's deadline."""

    def __init__(self, attempts: int, deadline: float | None) -> None:
        self.attempts = attempts
        self.deadline = deadline

    def __call__(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self.attempts:
            return True
        if self.deadline is None:
            return False
        upcoming = state.upcoming_sleep or 0.0
        # Leave room for the next attempt to do something useful (at least half a second).
        return time.monotonic() + upcoming + 0.5 >= self.deadline
