"""Every serving process freezes its start-up heap, with or without the in-process worker."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

import llm_service.api.app as app_module
from llm_service.settings import Settings


async def test_a_serving_process_without_the_worker_freezes_before_it_serves(
    test_settings: Settings, app_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `serve --workers N` runs the worker in one process only; the others serve hits, and a
    # full collection over their unfrozen start-up heap stops the loop for ~250 ms.
    order: list[str] = []
    monkeypatch.setattr(app_module, "freeze_startup_heap", lambda: order.append("freeze"))
    app = app_module.create_app(test_settings, pool=app_pool, run_workers=False)
    async with app.router.lifespan_context(app):
        assert order == ["freeze"]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/healthz")).status_code == 200
    assert order == ["freeze"]


async def test_a_serving_process_with_the_worker_freezes_once(
    test_settings: Settings, app_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lifespan freezes for the whole process; the in-process worker must not freeze again
    # (a second call was a no-op only by the module's flag, after a wasted call).
    import llm_service.workers.claimer as claimer_module
    import llm_service.workers.worker as worker_module

    order: list[str] = []
    claimed = asyncio.Event()
    monkeypatch.setattr(app_module, "freeze_startup_heap", lambda: order.append("app freeze"))
    monkeypatch.setattr(worker_module, "freeze_startup_heap", lambda: order.append("worker freeze"))

    async def no_claims(*_args: object, **_kwargs: object) -> list[worker_module.Claim]:
        order.append("claim")
        claimed.set()
        return []

    monkeypatch.setattr(claimer_module.Claimer, "claim", no_claims)  # the worker's claims
    app = app_module.create_app(test_settings, pool=app_pool, run_workers=True)
    async with app.router.lifespan_context(app):
        await claimed.wait()  # the worker is past its start
    assert order[:2] == ["app freeze", "claim"]
    assert "worker freeze" not in order
