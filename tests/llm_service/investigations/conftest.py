"""Fixtures of the investigation tests: the claims helper takes leases as the owner."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import claimed_runs
import pytest


@pytest.fixture(autouse=True)
def _claims_as_owner(owner_pool: asyncpg.Pool) -> Iterator[None]:
    claimed_runs.owner = owner_pool
    yield
    claimed_runs.owner = None
