"""The spend ledger's rules: reserve a call's worst case within the monthly cap, settle after.

The rows live in a store the service implements (`LedgerStore`; llm_service's is
`llm_service.costs.ledger_repository.PgLedgerStore`), so this module names no table. The store
works inside a transaction its caller owns and has set the tenant on; it enforces the cap and the
run's ceiling atomically and turns its refusals into `MonthlyCapExceeded` / `CeilingReached`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID

from budgets.money import cents_to_usd, usd_to_cents

CALL_STATUSES = frozenset({"succeeded", "failed", "timed_out", "cancelled"})


class MonthlyCapExceeded(Exception):
    """The tenant's monthly cap leaves no room for this call's worst case."""

    def __init__(self, cap_cents: Decimal, committed_cents: Decimal, needed_cents: Decimal) -> None:
        self.cap_cents = cap_cents
        self.committed_cents = committed_cents
        self.needed_cents = needed_cents
        left = max(cap_cents - committed_cents, Decimal(0))
        super().__init__(
            f"the tenant's monthly LLM cap of ${cents_to_usd(cap_cents):.2f} leaves "
            f"${cents_to_usd(left):.6f}; this call may cost up to ${cents_to_usd(needed_cents):.6f}"
        )


@dataclass(frozen=True)
class CallReservation:
    """A pending ledger row holding a call's worst case against the tenant's cap; its
    `settle_token` (the secret its settle presents) stays out of reprs."""

    call_id: UUID
    tenant_id: UUID
    reserved_usd: Decimal
    expires_at: datetime
    settle_token: UUID | None = field(default=None, repr=False)


@dataclass(frozen=True)
class CapStatus:
    """Where a tenant stands against its monthly cap, in cents."""

    cap_cents: Decimal
    spent_cents: Decimal
    reserved_cents: Decimal

    @property
    def available_cents(self) -> Decimal:
        """What is left for new reservations."""
        return max(self.cap_cents - self.spent_cents - self.reserved_cents, Decimal(0))


@dataclass(frozen=True)
class PendingCall:
    """What a reservation writes: the call it is for and its worst case in cents."""

    call_id: UUID
    tenant_id: UUID
    request_id: str
    endpoint: str
    model: str
    provider: str
    attempt: int
    reserved_cents: Decimal
    lease_seconds: float
    max_tokens: int | None
    investigation_id: UUID | None
    budget_optimization_job_id: UUID | None
    request_metadata: dict[str, Any]
    # The secret the call's settle presents; the store keeps only its sha256.
    settle_token: UUID | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Settlement:
    """What a settlement writes on a pending call (text fields already capped)."""

    status: str
    cost_cents: Decimal
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_is_estimate: bool = False
    latency_ms: int | None = None
    provider_request_id: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    usage_anomaly: str | None = None
    raw_usage: dict[str, Any] | None = None
    usage_breakdown: dict[str, Any] | None = None


class LedgerStore(Protocol):
    """Where the ledger's rows live; one instance per transaction (tenant already set)."""

    async def insert_pending(self, call: PendingCall) -> datetime:
        """Write the pending row within the cap and the run's ceiling; its expiry instant.

        Raises MonthlyCapExceeded or CeilingReached when the store refuses it.
        """
        ...

    async def settle_pending(
        self, call_id: UUID, settlement: Settlement, settle_token: UUID | None
    ) -> bool:
        """Settle the row if it is still pending and `settle_token` is the one it was reserved
        with; False if not (swept, absent, or not the reserving request's)."""
        ...

    async def cap_figures(self, tenant_id: UUID) -> CapStatus | None:
        """The tenant's cap, this month's settled spend and its live reservations; None if the
        tenant is not visible."""
        ...

    async def sweep_expired(self) -> int:
        """Settle every tenant's expired reservations at their worst case; how many."""
        ...


async def cap_status(store: LedgerStore, tenant_id: UUID) -> CapStatus:
    """The tenant's cap, this month's settled spend and its live reservations."""
    status = await store.cap_figures(tenant_id)
    if status is None:
        raise LookupError(f"tenant {tenant_id} is not visible in this transaction")
    return status


async def reserve_call(
    store: LedgerStore,
    *,
    tenant_id: UUID,
    endpoint: str,
    model: str,
    provider: str,
    worst_case_usd: Decimal,
    lease_seconds: float,
    max_tokens: int | None = None,
    attempt: int = 1,
    request_id: str | None = None,
    investigation_id: UUID | None = None,
    budget_optimization_job_id: UUID | None = None,
    request_metadata: dict[str, Any] | None = None,
    call_id: UUID | None = None,
    settle_token: UUID | None = None,
) -> CallReservation:
    """Write the pending row for a call, atomically within the tenant's monthly cap.

    The store does the checking: reservations of one tenant are serialised across every process
    and machine, so concurrent calls cannot each see the same room under the cap; expired
    reservations of crashed processes are settled (at their worst case) first, so they stop
    blocking; a run's recorded spend may not pass its ceiling. The call's settle needs
    `settle_token` (a fresh random one when not given): only the reserving request settles it.
    """
    needed = usd_to_cents(worst_case_usd)
    call_id = call_id or uuid.uuid4()
    settle_token = settle_token or uuid.uuid4()
    expires_at = await store.insert_pending(
        PendingCall(
            call_id=call_id,
            tenant_id=tenant_id,
            request_id=request_id or str(call_id),
            endpoint=endpoint,
            model=model,
            provider=provider,
            attempt=attempt,
            reserved_cents=needed,
            lease_seconds=lease_seconds,
            max_tokens=max_tokens,
            investigation_id=investigation_id,
            budget_optimization_job_id=budget_optimization_job_id,
            request_metadata=request_metadata or {},
            settle_token=settle_token,
        )
    )
    return CallReservation(call_id, tenant_id, cents_to_usd(needed), expires_at, settle_token)


async def settle_call(
    store: LedgerStore,
    reservation: CallReservation,
    *,
    status: str,
    cost_usd: Decimal,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    cost_is_estimate: bool = False,
    latency_ms: int | None = None,
    provider_request_id: str | None = None,
    error_type: str | None = None,
    error_message: str | None = None,
    usage_anomaly: str | None = None,
    raw_usage: dict[str, Any] | None = None,
    usage_breakdown: dict[str, Any] | None = None,
) -> bool:
    """Settle a pending call with what it really cost; False if it was already settled (swept).

    `usage_breakdown` is the cost per kind of token ({kind: {tokens, rate_usd, cost_cents,
    uncached_cents, rate_known}}), rolled up into the month by the store.
    """
    if status not in CALL_STATUSES:
        raise ValueError(f"unknown call status {status!r}")
    return await store.settle_pending(
        reservation.call_id,
        Settlement(
            status=status,
            cost_cents=usd_to_cents(cost_usd),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_is_estimate=cost_is_estimate,
            latency_ms=latency_ms,
            provider_request_id=provider_request_id,
            error_type=error_type,
            error_message=(error_message or "")[:2000] or None,
            usage_anomaly=usage_anomaly[:500] if usage_anomaly else None,
            raw_usage=raw_usage,
            usage_breakdown=usage_breakdown,
        ),
        reservation.settle_token,
    )


async def void_reservation(
    store: LedgerStore, call_id: UUID, reason: str, *, settle_token: UUID | None
) -> bool:
    """Settle at zero the reservation of a call that was never sent, if its row exists.

    For a reserving transaction whose outcome is unknown (the connection died around its
    commit): without this, a row that did commit would be counted at its worst case once swept.
    """
    return await store.settle_pending(
        call_id,
        Settlement(
            status="failed", cost_cents=Decimal(0), error_type="NotSent", error_message=reason
        ),
        settle_token,
    )


async def sweep_expired_reservations(store: LedgerStore) -> int:
    """Settle every tenant's expired reservations at their worst case."""
    return await store.sweep_expired()
