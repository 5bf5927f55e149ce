"""The per-request log line is sampled: one in N successes, every error and slow request."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from llm_service.api.observability import RequestContext


async def _answer(scope: Scope, receive: Receive, send: Send) -> None:
    status = 404 if scope["path"] == "/missing" else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _logged(app: RequestContext, paths: list[str], caplog: pytest.LogCaptureFixture) -> int:
    caplog.clear()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for path in paths:
            await client.get(path)
    return sum(1 for r in caplog.records if r.name == "llm_service.http")


async def test_one_in_n_successes_and_every_error_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="llm_service.http")
    app = RequestContext(_answer, log_every=3)
    assert await _logged(app, ["/ok"] * 7, caplog) == 3  # the 1st, 4th and 7th
    assert await _logged(app, ["/missing"] * 4, caplog) == 4
    assert await _logged(RequestContext(_answer, log_every=0), ["/ok"] * 5, caplog) == 0
    assert await _logged(RequestContext(_answer, log_every=1), ["/ok"] * 5, caplog) == 5
    # Slower than the threshold: always logged (a threshold of ~0 makes every request slow).
    slow = RequestContext(_answer, log_every=0, slow_ms=1e-6)
    assert await _logged(slow, ["/ok"] * 3, caplog) == 3


async def test_nothing_is_logged_when_the_logger_is_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="llm_service.http")
    app = RequestContext(_answer, log_every=1)
    assert await _logged(app, ["/ok", "/missing"], caplog) == 0
