"""The worker process's event loop: uvloop where installed (as `serve` gets it), else asyncio's."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from llm_service.workers import event_loop


async def _loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_the_worker_runs_on_uvloop_when_it_is_installed() -> None:
    assert event_loop.run(_loop_type()) is uvloop.Loop


def test_without_uvloop_the_worker_runs_on_asyncios_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    loop_type = event_loop.run(_loop_type())
    assert loop_type is not uvloop.Loop
    assert issubclass(loop_type, asyncio.BaseEventLoop)


def test_run_returns_the_result_and_raises_the_error_of_its_coroutine() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    async def fail() -> None:
        raise LookupError("from the coroutine")

    assert event_loop.run(answer()) == 42
    with pytest.raises(LookupError, match="from the coroutine"):
        event_loop.run(fail())


def test_each_run_gets_a_fresh_loop_closed_afterwards() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    async def keep() -> None:
        loops.append(asyncio.get_running_loop())

    event_loop.run(keep())
    event_loop.run(keep())
    assert loops[0] is not loops[1]
    assert all(loop.is_closed() for loop in loops)
