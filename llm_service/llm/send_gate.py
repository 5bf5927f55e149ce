"""Nothing reaches a provider before its reservation is committed: a gate at the HTTP send.

An attempt starts litellm building its request (a few ms of CPU before the first byte goes out)
while the reserve's round trip to PostgreSQL is in flight; the request itself waits here, at the
send of the HTTP clients litellm uses, until the attempt opens the gate (the reservation is
committed) or closes it (refused, failed or cut off: then nothing is sent). The gate is named by a
context variable set in the attempt's own sending task only; every other HTTP call in the process
passes straight through.

The sends gated: `httpx.AsyncClient.send` (the openai SDK's client and litellm's own handler, on
either transport: litellm's aiohttp transport sits under it) and `aiohttp.ClientSession._request`
(litellm's direct aiohttp providers). The synchronous clients are not gated: litellm's async
calls do not use them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
_GATE: ContextVar[SendGate | None] = ContextVar("llm_service_send_gate", default=None)
_MARK = "_llm_service_send_gate"


class GateClosed(Exception):
    """The attempt's reservation was refused or cut off: its request must not be sent."""


class SendGate:
    """One attempt's gate: shut until `open()` (the reservation committed) or `close()`."""

    def __init__(self) -> None:
        """A shut gate of the running event loop."""
        self._decided: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def open(self) -> None:
        """Let the attempt's request go."""
        if not self._decided.done():
            self._decided.set_result(None)

    def close(self) -> None:
        """Refuse the attempt's request for good (a later `open()` changes nothing)."""
        if not self._decided.done():
            self._decided.set_exception(GateClosed("the reservation was not committed"))
            self._decided.exception()  # retrieved: the waiters, if any, raise it themselves

    async def wait(self) -> None:
        """Return once open; raise GateClosed once closed."""
        if not self._decided.done():
            # Shielded: a waiter cancelled (the call's timeout) must not decide for the attempt.
            await asyncio.shield(self._decided)
        self._decided.result()

    async def run(self, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`call(*args)` with its HTTP sends behind this gate (run it as its own task: the
        context variable is set in the task's copy of the context only)."""
        _GATE.set(self)
        return await call(*args)


def _gated(send: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def send_after_reservation(self: Any, *args: Any, **kwargs: Any) -> Any:
        gate = _GATE.get()
        if gate is not None:
            await gate.wait()
        return await send(self, *args, **kwargs)

    setattr(send_after_reservation, _MARK, True)
    send_after_reservation.__wrapped__ = send  # type: ignore[attr-defined]
    return send_after_reservation


def _install(owner: type, name: str) -> bool:
    send = getattr(owner, name, None)
    if send is None:
        return False
    if not getattr(send, _MARK, False):
        setattr(owner, name, _gated(send))
    return True


def install_send_gate() -> None:
    """Gate the async HTTP sends once (idempotent); a client that moved is reported."""
    import aiohttp
    import httpx

    if not _install(httpx.AsyncClient, "send"):  # pragma: no cover - httpx's API is stable
        raise RuntimeError("httpx.AsyncClient.send is gone: provider calls cannot be gated")
    if not _install(aiohttp.ClientSession, "_request"):  # pragma: no cover - another aiohttp
        logger.warning("aiohttp's ClientSession._request has moved; its direct sends are ungated")
