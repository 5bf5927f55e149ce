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

from budgets.money import cents_to_usd, usd_to_cents

CALL_STATUSES = frozenset({"succeeded", "failed", "timed_out", "cancelled"})

_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended('llm-cap:' || $1::text, 0))"

_CAP_SQL = """
SELECT t.monthly_cap_cents AS cap,
       coalesce((SELECT m.total_cost_cents FROM llm_monthly_costs m
                 WHERE m.tenant_id = t.id
                   AND m.month = date_trunc('month', now() AT TIME ZONE 'UTC')::date), 0) AS spent,
       coalesce((SELECT sum(c.reserved_cents) FROM llm_api_calls c
                 WHERE c.tenant_id = t.id AND c.status = 'pending'), 0) AS reserved
FROM tenants t WHERE t.id = $1
"""

# Sweep, cap check and insert in one statement (one round trip instead of three), run after the
# advisory lock so that its snapshot sees every reservation committed before the lock was won.
# The swept rows are still 'pending' in that snapshot: they count as reserved rather than as
# spent, the same amount (a swept row of an earlier month is counted once more, conservatively).
_RESERVE_SQL = """
WITH swept AS (
    UPDATE llm_api_calls
       SET status = 'abandoned', cost_cents = reserved_cents, cost_is_estimate = true,
           settled_at = now(), error_type = 'lease_expired',
           error_message = 'the calling process stopped before settling; '
                           'counted at its reserved worst case'
     WHERE tenant_id = $2 AND status = 'pending' AND reservation_expires_at <= now()
    RETURNING id
),
cap AS (
    SELECT t.monthly_cap_cents AS cap,
           coalesce((SELECT m.total_cost_cents FROM llm_monthly_costs m
                     WHERE m.tenant_id = t.id
                       AND m.month = date_trunc('month', now() AT TIME ZONE 'UTC')::date),
                    0) AS spent,
           coalesce((SELECT sum(c.reserved_cents) FROM llm_api_calls c
                     WHERE c.tenant_id = t.id AND c.status = 'pending'), 0) AS reserved
    FROM tenants t WHERE t.id = $2
),
inserted AS (
    INSERT INTO llm_api_calls (id, tenant_id, request_id, endpoint, model, provider, attempt,
        status, reserved_cents, reservation_expires_at, max_tokens, investigation_id,
        budget_optimization_job_id, request_metadata)
    SELECT $1::uuid, $2::uuid, $3::text, $4::text, $5::text, $6::text, $7::integer, 'pending',
           $8::numeric, now() + make_interval(secs => $9::double precision), $10::integer,
           $11::uuid, $12::uuid, $13::jsonb
      FROM cap
     WHERE cap.spent + cap.reserved + $8::numeric <= cap.cap
    RETURNING reservation_expires_at
)
SELECT cap.cap, cap.spent, cap.reserved, (SELECT reservation_expires_at FROM inserted) AS expires_at
  FROM cap
"""

_SETTLE_SQL = """
UPDATE llm_api_calls
   SET status = $2, input_tokens = $3, output_tokens = $4, cost_cents = $5, cost_is_estimate = $6,
       latency_ms = $7, provider_request_id = $8, error_type = $9, error_message = $10,
       settled_at = now()
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

    A per-tenant advisory lock serialises reservations across every process and machine, so
    concurrent calls cannot each see the same room under the cap. Expired reservations of
    crashed processes are settled (at their worst case) first, so they stop blocking.
    """
    needed = usd_to_cents(worst_case_usd)
    await conn.execute(_LOCK_SQL, str(tenant_id))
    call_id = call_id or uuid.uuid4()
    row = await conn.fetchrow(
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
    if row is None:
        raise LookupError(f"tenant {tenant_id} is not visible in this transaction")
    if row["expires_at"] is None:
        raise MonthlyCapExceeded(row["cap"], row["spent"] + row["reserved"], needed)
    return CallReservation(call_id, tenant_id, cents_to_usd(needed), row["expires_at"])


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
) -> bool:
    """Settle a pending call with what it really cost; False if it was already settled (swept)."""
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
    )
    return bool(result == "UPDATE 1")


async def void_reservation(conn: asyncpg.Connection, call_id: UUID, reason: str) -> bool:
    """Settle at zero the reservation of a call that was never sent, if its row exists.

    For a reserving transaction whose outcome is unknown (the connection died around its
    commit): without this, a row that did commit would be counted at its worst case once swept.
    """
    result = await conn.execute(
        _SETTLE_SQL, call_id, "failed", None, None, Decimal(0), False, None, None, "NotSent", reason
    )
    return bool(result == "UPDATE 1")


async def sweep_expired_reservations(conn: asyncpg.Connection) -> int:
    """Settle every tenant's expired reservations at their worst case (narrow definer function)."""
    count: int = await conn.fetchval("SELECT fn_sweep_expired_llm_reservations()")
    return count
