"""The spend ledger in PostgreSQL: reserve before a call within the monthly cap, settle after.

Every function takes a connection inside a transaction that its caller owns and has set the
tenant on. The monthly row (`llm_monthly_costs`) is moved by a database trigger in the same
transaction as each settlement, so it can never drift from the calls behind it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from budgets.ceiling import CeilingReached
from budgets.money import cents_to_usd, usd_to_cents

CALL_STATUSES = frozenset({"succeeded", "failed", "timed_out", "cancelled"})

_CAP_SQL = """
SELECT t.monthly_cap_cents AS cap,
       coalesce((SELECT m.total_cost_cents FROM llm_monthly_costs m
                 WHERE m.tenant_id = t.id
                   AND m.month = date_trunc('month', now() AT TIME ZONE 'UTC')::date), 0) AS spent,
       coalesce((SELECT sum(c.reserved_cents) FROM llm_api_calls c
                 WHERE c.tenant_id = t.id AND c.status = 'pending'), 0) AS reserved
FROM tenants t WHERE t.id = $1
"""

# The database checks the reservation against the tenant's monthly cap (under a per-tenant
# advisory lock, after settling the tenant's expired reservations) and against the run's ceiling:
# see fn_llm_api_calls_reserve and fn_llm_api_calls_run_spend (migration 006).
_RESERVE_SQL = """
INSERT INTO llm_api_calls (id, tenant_id, request_id, endpoint, model, provider, attempt,
    reserved_cents, reservation_expires_at, max_tokens, investigation_id,
    budget_optimization_job_id, request_metadata)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + make_interval(secs => $9::double precision),
        $10, $11, $12, $13)
RETURNING reservation_expires_at
"""

_CAP_REFUSED = "LLCAP"
_RUN_CEILINGS = frozenset(
    {"ck_investigations_within_ceiling", "ck_budget_optimization_jobs_within_ceiling"}
)

_SETTLE_SQL = """
UPDATE llm_api_calls
   SET status = $2, input_tokens = $3, output_tokens = $4, cost_cents = $5, cost_is_estimate = $6,
       latency_ms = $7, provider_request_id = $8, error_type = $9, error_message = $10,
       usage_anomaly = $11, raw_usage = $12, usage_breakdown = $13, settled_at = now()
 WHERE id = $1 AND status = 'pending'
"""


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
    """A pending ledger row holding a call's worst case against the tenant's cap."""

    call_id: UUID
    tenant_id: UUID
    reserved_usd: Decimal
    expires_at: datetime


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


async def cap_status(conn: asyncpg.Connection, tenant_id: UUID) -> CapStatus:
    """The tenant's cap, this month's settled spend and its live reservations."""
    row = await conn.fetchrow(_CAP_SQL, tenant_id)
    if row is None:
        raise LookupError(f"tenant {tenant_id} is not visible in this transaction")
    return CapStatus(row["cap"], row["spent"], row["reserved"])


async def reserve_call(
    conn: asyncpg.Connection,
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
) -> CallReservation:
    """Write the pending row for a call, atomically within the tenant's monthly cap.

    The database does the checking (migration 006): a per-tenant advisory lock serialises
    reservations across every process and machine, so concurrent calls cannot each see the same
    room under the cap; expired reservations of crashed processes are settled (at their worst
    case) first, so they stop blocking; a run's recorded spend may not pass its ceiling.
    """
    needed = usd_to_cents(worst_case_usd)
    call_id = call_id or uuid.uuid4()
    try:
        expires_at = await conn.fetchval(
            _RESERVE_SQL,
            call_id,
            tenant_id,
            request_id or str(call_id),
            endpoint,
            model,
            provider,
            attempt,
            needed,
            lease_seconds,
            max_tokens,
            investigation_id,
            budget_optimization_job_id,
            request_metadata or {},
        )
    except asyncpg.PostgresError as exc:
        _raise_refusal(exc, needed)
        raise
    return CallReservation(call_id, tenant_id, cents_to_usd(needed), expires_at)


async def settle_call(
    conn: asyncpg.Connection,
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
    uncached_cents, rate_known}}), rolled up into the month by the database.
    """
    if status not in CALL_STATUSES:
        raise ValueError(f"unknown call status {status!r}")
    result = await conn.execute(
        _SETTLE_SQL,
        reservation.call_id,
        status,
        input_tokens,
        output_tokens,
        usd_to_cents(cost_usd),
        cost_is_estimate,
        latency_ms,
        provider_request_id,
        error_type,
        (error_message or "")[:2000] or None,
        usage_anomaly[:500] if usage_anomaly else None,
        raw_usage,
        usage_breakdown,
    )
    return bool(result == "UPDATE 1")


async def void_reservation(conn: asyncpg.Connection, call_id: UUID, reason: str) -> bool:
    """Settle at zero the reservation of a call that was never sent, if its row exists.

    For a reserving transaction whose outcome is unknown (the connection died around its
    commit): without this, a row that did commit would be counted at its worst case once swept.
    """
    result = await conn.execute(
        _SETTLE_SQL,
        call_id,
        "failed",
        None,
        None,
        Decimal(0),
        False,
        None,
        None,
        "NotSent",
        reason,
        None,
        None,
        None,
    )
    return bool(result == "UPDATE 1")


async def sweep_expired_reservations(conn: asyncpg.Connection) -> int:
    """Settle every tenant's expired reservations at their worst case (narrow definer function)."""
    count: int = await conn.fetchval("SELECT fn_sweep_expired_llm_reservations()")
    return count


def _raise_refusal(exc: asyncpg.PostgresError, needed: Decimal) -> None:
    """Turn the database's refusal of a reservation into the budget exception it stands for."""
    state = getattr(exc, "sqlstate", None)
    if state == _CAP_REFUSED:
        figures = dict(
            part.split("=", 1)
            for part in (getattr(exc, "detail", "") or "").split(";")
            if "=" in part
        )
        raise MonthlyCapExceeded(
            Decimal(figures.get("cap", "0")), Decimal(figures.get("committed", "0")), needed
        ) from exc
    if getattr(exc, "constraint_name", None) in _RUN_CEILINGS:
        raise CeilingReached(
            "the database refused a reservation past the run's ceiling",
            needed_usd=cents_to_usd(needed),
            available_usd=Decimal(0),
        ) from exc
