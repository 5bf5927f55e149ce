"""Fixtures for the cache tests: the local embedder and scope / vector factories."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from cache.embedding_local import LocalEmbedder, get_local_embedder
from cache.scope import CacheScope

BASE_PARAMS: dict[str, Any] = {
    "channel": "paid_social",
    "metric": "revenue",
    "start": date(2026, 11, 9),
    "end": date(2026, 11, 15),
    "comparison": "previous_period",
}


@pytest.fixture(scope="session")
def local_embedder() -> LocalEmbedder:
    """The process-wide offline embedder."""
    return get_local_embedder()


@pytest.fixture(scope="session")
def make_scope() -> Callable[..., CacheScope]:
    """Build a scope for a tenant; keyword `params` entries override the base parameters."""

    def build(tenant_id: uuid.UUID, **changes: Any) -> CacheScope:
        fields: dict[str, Any] = {
            "tenant_id": tenant_id,
            "subject": "channel_performance",
            "params": {**BASE_PARAMS, **changes.pop("params", {})},
            "model": "openai/gpt-4o-mini",
            "prompt_version": "explain-v1",
        }
        fields.update(changes)
        return CacheScope(**fields)

    return build


@pytest.fixture(scope="session")
def random_unit() -> Callable[..., list[float]]:
    """A random unit vector of a given dimension (seeded per call for reproducibility)."""

    def build(dimension: int = 384, seed: int | None = None) -> list[float]:
        rng = random.Random(seed)
        values = [rng.gauss(0.0, 1.0) for _ in range(dimension)]
        norm = sum(v * v for v in values) ** 0.5
        return [v / norm for v in values]

    return build
