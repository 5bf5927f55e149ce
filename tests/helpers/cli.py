"""`llm-service ...` run in-process against the test session's database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from llm_service.cli import main
from llm_service.db import runtime
from llm_service.db.urls import DatabaseUrls
from llm_service.settings import get_settings

RunCli = Callable[..., Awaitable[tuple[int, str]]]


def cli_in_thread(
    monkeypatch: pytest.MonkeyPatch, database_urls: DatabaseUrls, capsys: pytest.CaptureFixture[str]
) -> RunCli:
    """`llm-service ...` against the session's database, in a worker thread: (exit code, stdout)."""
    monkeypatch.setenv("DATABASE_URL", database_urls.owner)
    monkeypatch.setenv("APP_DATABASE_URL", database_urls.app)
    monkeypatch.setattr(runtime, "_runtime", None)
    get_settings.cache_clear()

    async def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, list(args))
        get_settings.cache_clear()
        return code, capsys.readouterr().out

    return run
