"""Every serving process freezes its start-up heap, with or without the in-process worker."""

from __future__ import annotations

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
