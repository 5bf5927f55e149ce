"""Fixtures shared by the investigation tests."""

from __future__ import annotations

import pytest

from llm_service.settings import Settings


@pytest.fixture
def model_settings(test_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with an OpenAI model (a dummy key; respx answers) and one attempt per call."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    return test_settings.model_copy(
        update={"llm_model": "openai/gpt-4o-mini", "llm_max_attempts": 1}
    )
