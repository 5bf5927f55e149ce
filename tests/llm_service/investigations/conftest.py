"""Investigation test fixtures: model settings; the claims helper takes leases as the owner."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import claimed_runs
import pytest

from llm_service.settings import Settings


@pytest.fixture(autouse=True)
def _claims_as_owner(owner_pool: asyncpg.Pool) -> Iterator[None]:
    claimed_runs.owner = owner_pool
    yield
    claimed_runs.owner = None


@pytest.fixture
def model_settings(test_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with an OpenAI model (a dummy key; respx answers) and one attempt per call."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    return test_settings.model_copy(
        update={"llm_model": "openai/gpt-4o-mini", "llm_max_attempts": 1}
    )
