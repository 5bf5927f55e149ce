"""Nothing reaches a provider before its reservation is committed: a gate at the HTTP send.

An attempt starts litellm building its request (a few ms of CPU before the first byte goes out)
while the reserve's round trip to PostgreSQL is in flight; the request itself waits here, at the
send of the HTTP clients litellm uses, until the attempt opens the gate (the reservation is
committed) or closes it (refused, failed or cut off: then nothing is sent). The gate is named by a
context variable set in the attempt's own sending task only; every other HTTP call in the process
passes straight through.

The sends gated: `httpx.AsyncClient.send` (the openai SDK's client and litellm's own handler, on
either transport: litellm's aiohttp transport sits under it), `aiohttp.ClientSession._request`
(litellm's direct aiohttp providers) and `httpx.Client.send` (a provider litellm calls
synchronously, in the worker thread `acompletion` runs `completion()` in: that thread blocks
until the gate is decided; on the event loop's own thread, where waiting would stall the
reserve, a send before the decision is refused).
"""

from __future__ import annotations

import asyncio
import logging
import threading
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
        self._loop = asyncio.get_running_loop()
        self._decided: asyncio.Future[None] = self._loop.create_future()
        self._opened = False
        self._decided_for_threads = threading.Event()

    def open(self) -> None:
        """Let the attempt's request go."""
        if not self._decided.done():
            self._opened = True
            self._decided.set_result(None)
            self._decided_for_threads.set()

    def close(self) -> None:
        """Refuse the attempt's request for good (a later `open()` changes nothing)."""
        if not self._decided.done():
            self._decided.set_exception(GateClosed("the reservation was not committed"))
            self._decided.exception()  # retrieved: the waiters, if any, raise it themselves
            self._decided_for_threads.set()

    async def wait(self) -> None:
        """Return once open; raise GateClosed once closed."""
        if not self._decided.done():
            # Shielded: a waiter cancelled (the call's timeout) must not decide for the attempt.
            await asyncio.shield(self._decided)
        self._decided.result()

    def wait_in_thread(self) -> None:
        """`wait()` for a synchronous send: blocks a worker thread until decided; on the event
        loop's thread (which must stay free to finish the reserve) refuses an undecided gate."""
        if not self._decided_for_threads.is_set() and _on_thread_of(self._loop):
            raise GateClosed("a synchronous send on the event loop cannot wait for its reservation")
        self._decided_for_threads.wait()
        if not self._opened:
            raise GateClosed("the reservation was not committed")

    async def run(self, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`call(*args)` with its HTTP sends behind this gate (run it as its own task: the
        context variable is set in the task's copy of the context only)."""
        _GATE.set(self)
        return await call(*args)


def _on_thread_of(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:  # no loop runs on this thread
        return False


def _gated(send: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def send_after_reservation(self: Any, *args: Any, **kwargs: Any) -> Any:
        gate = _GATE.get()
        if gate is not None:
            await gate.wait()
        return await send(self, *args, **kwargs)

    setattr(send_after_reservation, _MARK, True)
    send_after_reservation.__wrapped__ = send  # type: ignore[attr-defined]
    return send_after_reservation


def _gated_sync(send: Callable[..., Any]) -> Callable[..., Any]:
    def send_after_reservation(self: Any, *args: Any, **kwargs: Any) -> Any:
        gate = _GATE.get()
        if gate is not None:
            gate.wait_in_thread()
        return send(self, *args, **kwargs)

    setattr(send_after_reservation, _MARK, True)
    send_after_reservation.__wrapped__ = send  # type: ignore[attr-defined]
    return send_after_reservation


def _install(owner: type, name: str, gate: Callable[[Any], Any] = _gated) -> bool:
    send = getattr(owner, name, None)
    if send is None:
        return False
    if not getattr(send, _MARK, False):
        setattr(owner, name, gate(send))
    return True


def install_send_gate() -> None:
    """Gate the HTTP sends once (idempotent); a client that moved is reported."""
    import aiohttp
    import httpx

    for owner, gate in ((httpx.AsyncClient, _gated), (httpx.Client, _gated_sync)):
        if not _install(owner, "send", gate):  # pragma: no cover - httpx's API is stable
            raise RuntimeError(f"{owner.__name__}.send is gone: provider calls cannot be gated")
    if not _install(aiohttp.ClientSession, "_request"):  # pragma: no cover - another aiohttp
        logger.warning("aiohttp's ClientSession._request has moved; its direct sends are ungated")
