"""The event loop a worker process runs on: uvloop where installed, as `serve` gets from uvicorn.

`uvicorn[standard]` brings uvloop, and `serve` (loop "auto") already runs its API and its
in-process worker on it; `llm-service worker` used asyncio's default loop, whose pure-Python
scheduling and selector transports cost more CPU per callback and per socket read. With 1,000
runs in flight the worker is CPU-bound on one core (bench/RESULTS.md, "## Jobs"), so the loop's
own cost is paid by every run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's `new_event_loop` when uvloop is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:  # an install without uvicorn[standard]: the default loop still works
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the worker's loop (`loop_factory`)."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
