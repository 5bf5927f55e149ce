"""Helpers of the explanation tests: the mocked OpenAI endpoint, a running app, dates."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI

from llm_service.api.app import create_app
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
MODEL = "openai/gpt-4o-mini"
# A paraphrase the question matcher (cache.question_match) accepts: a word-order rewrite of
# "the decline in revenue" with the same opening.
QUESTION = "What explains the revenue decline?"
PARAPHRASE = "What explains the decline in revenue?"


def completion_body(
    content: str, prompt_tokens: int = 400, completion_tokens: int = 80
) -> dict[str, Any]:
    """A chat completion as OpenAI sends it."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class FakeModel:
    """The OpenAI chat endpoint: a valid explanation with a unique summary per call."""

    def __init__(self, delay: float = 0.0, *, status: int = 200, content: str | None = None):
        self.delay = delay
        self.status = status
        self.content = content
        self.calls = 0
        self.summaries: list[str] = []
        self.prompts: list[list[dict[str, Any]]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        self.prompts.append(json.loads(request.content)["messages"])
        if self.delay:
            await asyncio.sleep(self.delay)  # a slow provider is the behaviour under test
        if self.status != 200:
            return httpx.Response(
                self.status,
                json={"error": {"message": "overloaded", "type": "server_error"}},
            )
        summary = f"Model summary {uuid.uuid4().hex}: revenue fell on facebook_paid."
        self.summaries.append(summary)
        content = self.content or json.dumps(
            {
                "summary": summary,
                "drivers": [
                    {"label": "facebook_paid", "figure": "-1,234.56", "detail": "largest drop"}
                ],
                "confidence": "high",
                "citations": ["the model's own citations are ignored"],
            }
        )
        return httpx.Response(200, json=completion_body(content))


def model_settings(base: Settings, **overrides: Any) -> Settings:
    """`base` with the OpenAI model configured (and any overrides)."""
    return base.model_copy(update={"llm_model": MODEL, "llm_max_attempts": 2, **overrides})


@asynccontextmanager
async def serve(
    settings: Settings, pool: asyncpg.Pool
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The real application with its lifespan run, and an ASGI client."""
    app = create_app(settings, pool=pool, run_workers=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client


def auth(tenant: CreatedTenant) -> dict[str, str]:
    """The tenant's Authorization header."""
    return {"Authorization": f"Bearer {tenant.api_key}"}


def today() -> date:
    """Today in UTC."""
    return datetime.now(UTC).date()


def week(n: int) -> dict[str, str]:
    """The n-th full week (Monday to Monday) before the current one, as an absolute range."""
    monday = today() - timedelta(days=today().weekday())
    start = monday - timedelta(weeks=n)
    return {"start": start.isoformat(), "end": (start + timedelta(days=7)).isoformat()}


def days(start_days_ago: int, length: int) -> dict[str, str]:
    """An absolute range starting `start_days_ago` days ago, `length` days long."""
    start = today() - timedelta(days=start_days_ago)
    return {"start": start.isoformat(), "end": (start + timedelta(days=length)).isoformat()}
