"""Fixtures shared by the service's tests."""

from __future__ import annotations

import pytest

from llm_service.db.urls import DatabaseUrls
from tests.helpers.cli import RunCli, cli_in_thread


@pytest.fixture
def run_cli(
    monkeypatch: pytest.MonkeyPatch, database_urls: DatabaseUrls, capsys: pytest.CaptureFixture[str]
) -> RunCli:
    """`llm-service ...` against the session's database, in a worker thread: (exit code, stdout)."""
    return cli_in_thread(monkeypatch, database_urls, capsys)
