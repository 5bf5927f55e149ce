"""budgets talks to the database only through the LedgerStore interface the service implements."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from budgets import ledger
from budgets.ledger import CapStatus, PendingCall, Settlement

BUDGETS = Path(__file__).resolve().parents[2] / "budgets"
SERVICE_TABLES = ("llm_api_calls", "llm_monthly_costs", "tenants", "fn_sweep_expired")


def test_budgets_names_no_table_and_imports_nothing_of_llm_service() -> None:
    for source in sorted(BUDGETS.glob("*.py")):
        text = source.read_text()
        for name in SERVICE_TABLES:
            assert name not in text, f"{source.name} names {name}"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("llm_service"), source.name
            if isinstance(node, ast.Import):
                assert all(not a.name.startswith("llm_service") for a in node.names), source.name


class _MemoryStore:
    """An in-memory store behind the same interface."""

    def __init__(self) -> None:
        self.pending: dict[UUID, PendingCall] = {}
        self.settled: dict[UUID, Settlement] = {}

    async def insert_pending(self, call: PendingCall) -> datetime:
        self.pending[call.call_id] = call
        return datetime(2026, 12, 1, tzinfo=UTC)

    async def settle_pending(
        self, call_id: UUID, settlement: Settlement, settle_token: UUID | None
    ) -> bool:
        if call_id not in self.pending or call_id in self.settled:
            return False
        if settle_token is None or settle_token != self.pending[call_id].settle_token:
            return False
        self.settled[call_id] = settlement
        return True

    async def cap_figures(self, tenant_id: UUID) -> CapStatus | None:
        return None

    async def sweep_expired(self) -> int:
        return 0


async def test_the_rules_convert_cap_and_validate_through_any_store() -> None:
    store = _MemoryStore()
    reservation = await ledger.reserve_call(
        store,
        tenant_id=uuid4(),
        endpoint="explanations",
        model="m",
        provider="p",
        worst_case_usd=Decimal("0.0000000001"),
        lease_seconds=5,
    )
    [pending] = store.pending.values()
    assert pending.reserved_cents == Decimal("0.0000000100")
    assert pending.request_id == str(reservation.call_id)
    with pytest.raises(ValueError):
        await ledger.settle_call(store, reservation, status="paid", cost_usd=Decimal(0))
    assert await ledger.settle_call(
        store, reservation, status="failed", cost_usd=Decimal(0), error_message="x" * 5000
    )
    assert len(store.settled[reservation.call_id].error_message or "") == 2000
    # Each reservation gets its own settle secret, kept out of reprs (it never reaches a log).
    assert pending.settle_token is not None and pending.settle_token == reservation.settle_token
    assert str(reservation.settle_token) not in repr(reservation) + repr(pending)
    other = await ledger.reserve_call(
        store,
        tenant_id=uuid4(),
        endpoint="explanations",
        model="m",
        provider="p",
        worst_case_usd=Decimal(0),
        lease_seconds=5,
    )
    assert other.settle_token not in (None, reservation.settle_token)
    assert not await ledger.void_reservation(
        store, other.call_id, "no token", settle_token=reservation.settle_token
    )
    assert not await ledger.void_reservation(
        store, reservation.call_id, "late", settle_token=reservation.settle_token
    )
    with pytest.raises(LookupError):
        await ledger.cap_status(store, uuid4())
