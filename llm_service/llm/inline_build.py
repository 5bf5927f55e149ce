"""litellm's request building on the event loop's own thread, not a hop to a worker thread.

`litellm.acompletion` runs its synchronous `completion()` in the loop's default executor. For a
provider with an async path that step only builds the request (a coroutine comes back; nothing is
sent there) and holds the GIL throughout, so the hop buys no parallelism: it costs a thread
wake-up, a GIL hand-over and a self-pipe write on the way back, about 0.4 ms per call here
(bench/RESULTS.md, "## Gateway"). The reserve still overlaps the build: the attempt's reserve
statement is on the wire before its sending task starts building (llm/attempt.py).

What runs inline is narrow: only litellm's own `completion` step, only inside `building_inline()`
(the gateway sets it around its own calls when the provider litellm routes the call to, model
and api_base read together, is in ASYNC_PROVIDERS), only when the loop's default executor is
`InlineBuildExecutor`. Everything else given to the default executor
(DNS lookups, `asyncio.to_thread`, litellm's other entry points, a provider litellm calls
synchronously) still goes to a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import Context, ContextVar
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")

# Providers whose litellm chat path is async (completion() returns a coroutine, the send happens
# when it is awaited): the ones the tests drive over HTTP. Another provider keeps the thread.
ASYNC_PROVIDERS = frozenset({"openai", "anthropic", "gemini"})

_INLINE: ContextVar[bool] = ContextVar("llm_service_inline_build", default=False)
_installed: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


class InlineBuildExecutor(ThreadPoolExecutor):
    """A default executor that runs litellm's request-building step in the caller's thread
    (inside `building_inline()`), and everything else on its worker threads."""

    def __init__(self, completion: Callable[..., Any] | None = None) -> None:
        """Threads as asyncio's own default executor has them; `completion` is the build step
        to run inline (default: litellm's `completion`, looked up when asked)."""
        super().__init__(thread_name_prefix="asyncio")
        self._completion = completion
        self.inline_runs = 0

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run `fn` now when it is litellm's build of one of our calls, else on a thread."""
        if not (_INLINE.get() and not args and not kwargs and self._is_build(fn)):
            return super().submit(fn, *args, **kwargs)
        done: Future[T] = Future()
        self.inline_runs += 1
        try:
            done.set_result(fn())
        except BaseException as exc:  # handed to the awaiting caller, as a thread would
            done.set_exception(exc)
        return done

    def _is_build(self, fn: Callable[..., Any]) -> bool:
        # acompletion submits partial(context.run, partial(completion, **kwargs)).
        if not isinstance(fn, partial) or len(fn.args) != 1 or fn.keywords:
            return False
        run = fn.func
        if getattr(run, "__name__", None) != "run" or not isinstance(
            getattr(run, "__self__", None), Context
        ):
            return False
        inner = fn.args[0]
        return isinstance(inner, partial) and inner.func is self._build_step()

    def _build_step(self) -> Callable[..., Any] | None:
        if self._completion is not None:
            return self._completion
        main = sys.modules.get("litellm.main")
        return None if main is None else getattr(main, "completion", None)


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Make `InlineBuildExecutor` the loop's default executor (once per loop).

    The executor it replaces is shut down without waiting (its running work finishes) where the
    loop shows it; uvloop does not, so that one's idle threads stay until the process exits.
    """
    if loop in _installed:
        return
    previous = getattr(loop, "_default_executor", None)
    loop.set_default_executor(InlineBuildExecutor())
    _installed.add(loop)
    if isinstance(previous, ThreadPoolExecutor):
        previous.shutdown(wait=False)


@contextlib.contextmanager
def building_inline(provider: str) -> Iterator[None]:
    """Inside, litellm builds the request on the loop's thread when `provider` is async."""
    token = _INLINE.set(provider in ASYNC_PROVIDERS)
    try:
        yield
    finally:
        _INLINE.reset(token)
