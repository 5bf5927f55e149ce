"""The spend ledger's rows in PostgreSQL: the `budgets.ledger.LedgerStore` llm_service implements.

Every statement about reserving, settling and sweeping `llm_api_calls`, and the one query of a
tenant's cap, spend and reservations. The connection-first functions below are the ledger's
rules (`budgets.ledger`) bound to this store, for callers holding a tenant transaction; the
`*_alone` ones bind them to `PgStatementStore` (each step one statement, no transaction block:
the gateway's path).

The service reserves only through `reserve_call_alone`. The transactional reserve
(`reserve_call`, `PgLedgerStore.insert_pending`) is kept as the baseline of bench/ledger_before.py
(the bench's "before" column) and for tests that seed reservations inside a tenant transaction;
the database applies the same cap, ceiling and RLS checks to both. `PgLedgerStore` stays whole
anyway: it is the `LedgerStore` of the in-transaction settle, cap and sweep steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from budgets import ledger
from budgets.ceiling import CeilingReached
from budgets.ledger import (
    CallReservation,
    CapStatus,
    MonthlyCapExceeded,
    PendingCall,
    Settlement,
)
from budgets.money import cents_to_usd
from llm_service.db.bind import on_connection
from llm_service.db.queries import run_token_setting_sql, set_tenant, tenant_setting_sql
from llm_service.pii.repository import insert_findings_sql

__all__ = [
    "CallReservation",
    "CapStatus",
    "MonthlyCapExceeded",
    "PgLedgerStore",
    "PgStatementStore",
    "cap_and_reserved",
    "cap_status",
    "reserve_call",
    "reserve_call_alone",
    "settle_call",
    "settle_call_alone",
    "sweep_expired_reservations",
    "void_reservation",
]

# Cap, settled spend of month $2 (the current UTC month when NULL), every live reservation, and
# the live reservations of calls started in that month.
_CAP_SQL = """
WITH m AS (SELECT coalesce($2::date, date_trunc('month', now() AT TIME ZONE 'UTC')::date) AS month)
SELECT t.monthly_cap_cents AS cap,
       coalesce((SELECT mc.total_cost_cents FROM llm_monthly_costs mc
                 WHERE mc.tenant_id = t.id AND mc.month = m.month), 0) AS spent,
       coalesce(r.reserved, 0) AS reserved,
       coalesce(r.reserved_in_month, 0) AS reserved_in_month
FROM tenants t CROSS JOIN m
LEFT JOIN LATERAL (
    SELECT sum(c.reserved_cents) AS reserved,
           sum(c.reserved_cents) FILTER (
               WHERE c.started_at >= (m.month)::timestamp AT TIME ZONE 'UTC'
                 AND c.started_at < (m.month + interval '1 month') AT TIME ZONE 'UTC'
           ) AS reserved_in_month
    FROM llm_api_calls c WHERE c.tenant_id = t.id AND c.status = 'pending'
) r ON true
WHERE t.id = $1
"""

# The database checks the reservation against the tenant's monthly cap (under a per-tenant
# advisory lock, after settling the tenant's expired reservations) and against the run's ceiling:
# see fn_llm_api_calls_reserve and fn_llm_api_calls_run_spend (migration 006).
# The row keeps the sha256 of the call's settle token ($14), never the token (migration 012).
_RESERVE_SQL = """
INSERT INTO llm_api_calls (id, tenant_id, request_id, endpoint, model, provider, attempt,
    reserved_cents, reservation_expires_at, max_tokens, investigation_id,
    budget_optimization_job_id, request_metadata, settle_token_hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + make_interval(secs => $9::double precision),
        $10, $11, $12, $13, sha256(uuid_send($14::uuid)))
RETURNING reservation_expires_at
"""

_SETTLEMENT_FIELDS = 12  # as _settlement_values gives them


def _settle_call_sql(first: int, settle_token: int) -> str:
    """Migration 012's fn_settle_call of the call $1 with the settlement's values from
    `$first` on and the call's settle token `$settle_token`: a pending row of the current
    tenant, settled once, by the request that reserved it (its token); a run's row by the run's
    holder only (the transaction's lease token) as well. The application role may not UPDATE
    (nor so lock) a ledger row itself."""
    values = ", ".join(f"${n}" for n in range(first, first + _SETTLEMENT_FIELDS))
    return f"fn_settle_call($1, {values}, ${settle_token}::uuid)"


_SETTLE_SQL = "SELECT " + _settle_call_sql(2, 2 + _SETTLEMENT_FIELDS)

# The same two steps, each ONE statement outside any transaction block (the gateway's path: one
# round trip each instead of BEGIN, set tenant, statement, COMMIT). Why that is safe:
# - the statement is its own implicit transaction, so the settings it makes (`set_config(...,
#   true)`) last exactly as long as it does; connections never keep a session-level tenant;
# - the settings come first: `s` is materialized and the rows come from it. An INSERT ... SELECT
#   FROM s produces its row only after `s` ran, and the row-level checks (RLS WITH CHECK, the
#   BEFORE triggers: the cap, migration 010's lease token) run on that row. The settle's
#   `SELECT fn_settle_call(...) FROM s` calls the function in the projection of s's one row,
#   so after `s` ran; when it settles nothing (settled already, say) the caller asks again in
#   a transaction (PgStatementStore.settle_pending), which tells settled from pending;
# - the lease token is set first of all (`token`, NULL for a call of no run).


def _settings(tenant: str, token: str, *, wait_for_flush: bool = True) -> str:
    """The CTE `s` that presents the run's lease token and sets the tenant, for one statement
    (and, unless `wait_for_flush`, lets its commit return before its WAL reaches the disk)."""
    flush = "" if wait_for_flush else ",\n           set_config('synchronous_commit', 'off', true)"
    return f"""
WITH s AS MATERIALIZED (
    SELECT {run_token_setting_sql(token + "::text")} AS run_token,
           {tenant_setting_sql(tenant + "::uuid::text")} AS tenant{flush}
)"""


_FINDINGS = insert_findings_sql(
    tenant="$2::uuid",
    source="$15::text",
    context="$4::text",
    locations="$16::text[]",
    kinds="$17::text[]",
    after="s",
)

_RESERVE_ALONE_SQL = f"""{_settings("$2", "$14")}, findings AS ({_FINDINGS})
INSERT INTO llm_api_calls (id, tenant_id, request_id, endpoint, model, provider, attempt,
    reserved_cents, reservation_expires_at, max_tokens, investigation_id,
    budget_optimization_job_id, request_metadata, settle_token_hash)
SELECT $1::uuid, $2::uuid, $3::text, $4::text, $5::text, $6::text, $7::integer, $8::numeric,
       now() + make_interval(secs => $9::double precision), $10::integer, $11::uuid, $12::uuid,
       $13::jsonb, sha256(uuid_send($18::uuid))
  FROM s
RETURNING reservation_expires_at
"""


def _settle_alone_sql(*, wait_for_flush: bool) -> str:
    """The one-statement settle. Its commit need not wait for the WAL flush: the settled row is
    visible to every session at once (the next reserve, the finance view); only a crash of
    PostgreSQL itself in the next ~0.6 s (3 x wal_writer_delay) could lose it, and then the row
    is pending again and swept at its reserved worst case, as after a crash of the caller
    before it settled: never under-counted. WAL is flushed in order, so any later commit that
    waits (the run's next reserve, which always does: a lost reservation of a call that was
    sent would be money unrecorded) makes this settle durable too."""
    return f"""{_settings("$2", "$15", wait_for_flush=wait_for_flush)}
SELECT {_settle_call_sql(3, 16)} FROM s
"""


_SETTLE_ALONE_SQL = _settle_alone_sql(wait_for_flush=False)

_SWEEP_SQL = "SELECT fn_sweep_expired_llm_reservations()"

_CAP_REFUSED = "LLCAP"
_RUN_CEILINGS = frozenset(
    {"ck_investigations_within_ceiling", "ck_budget_optimization_jobs_within_ceiling"}
)


def _pending_values(call: PendingCall) -> tuple[object, ...]:
    """A pending call's values in the order both reserve statements take them ($1..$13)."""
    return (
        call.call_id,
        call.tenant_id,
        call.request_id,
        call.endpoint,
        call.model,
        call.provider,
        call.attempt,
        call.reserved_cents,
        call.lease_seconds,
        call.max_tokens,
        call.investigation_id,
        call.budget_optimization_job_id,
        call.request_metadata,
    )


def _settlement_values(s: Settlement) -> tuple[object, ...]:
    """A settlement's values in the order the settle statements take them (after the id)."""
    return (
        s.status,
        s.input_tokens,
        s.output_tokens,
        s.cost_cents,
        s.cost_is_estimate,
        s.latency_ms,
        s.provider_request_id,
        s.error_type,
        s.error_message,
        s.usage_anomaly,
        s.raw_usage,
        s.usage_breakdown,
    )


@dataclass(frozen=True)
class PgLedgerStore:
    """The ledger's rows on one connection inside a transaction that has set the tenant."""

    conn: asyncpg.Connection

    async def insert_pending(self, call: PendingCall) -> datetime:
        """Write the pending row; the database refuses it past the cap or the run's ceiling
        (the transactional reserve: the bench's baseline and the tests', not the service's)."""
        try:
            expires_at: datetime = await self.conn.fetchval(
                _RESERVE_SQL, *_pending_values(call), call.settle_token
            )
        except asyncpg.PostgresError as exc:
            _raise_refusal(exc, call.reserved_cents)
            raise
        return expires_at

    async def settle_pending(
        self, call_id: UUID, settlement: Settlement, settle_token: UUID | None
    ) -> bool:
        """Settle the row if still pending and reserved with `settle_token` (the trigger moves
        the monthly row with it)."""
        settled: bool | None = await self.conn.fetchval(
            _SETTLE_SQL, call_id, *_settlement_values(settlement), settle_token
        )
        return bool(settled)

    async def cap_figures(self, tenant_id: UUID) -> CapStatus | None:
        """Cap, this month's settled spend and every live reservation of the tenant."""
        row = await self.conn.fetchrow(_CAP_SQL, tenant_id, None)
        return None if row is None else CapStatus(row["cap"], row["spent"], row["reserved"])

    async def sweep_expired(self) -> int:
        """Every tenant's expired reservations at their worst case (narrow definer function)."""
        count: int = await self.conn.fetchval(_SWEEP_SQL)
        return count


@dataclass(frozen=True)
class PgStatementStore:
    """The ledger's rows of one tenant, each step ONE statement outside a transaction block that
    sets the tenant (and the run's lease token) itself; the reservation writes the PII findings
    of its prompt (`findings`: (location, kind)) in the same statement."""

    conn: asyncpg.Connection
    tenant_id: UUID
    run_token: UUID | None = None
    findings: Sequence[tuple[str, str]] = ()
    findings_source: str = "llm_guard"

    async def insert_pending(self, call: PendingCall) -> datetime:
        """Write the pending row (and the findings); refused past the cap or the run's ceiling."""
        if call.tenant_id != self.tenant_id:
            raise ValueError("a statement store reserves for its own tenant only")
        try:
            expires_at: datetime = await self.conn.fetchval(
                _RESERVE_ALONE_SQL,
                *_pending_values(call),
                self._token(),
                self.findings_source,
                [location for location, _ in self.findings],
                [kind for _, kind in self.findings],
                call.settle_token,
            )
        except asyncpg.PostgresError as exc:
            _raise_refusal(exc, call.reserved_cents)
            raise
        return expires_at

    async def settle_pending(
        self, call_id: UUID, settlement: Settlement, settle_token: UUID | None
    ) -> bool:
        """Settle the row if still pending (and reserved with `settle_token`); when the
        statement saw no row, a transaction says whether it is settled already (idempotent) or
        still pending (then settles it)."""
        settled = await self.conn.fetchval(
            _SETTLE_ALONE_SQL,
            call_id,
            self.tenant_id,
            *_settlement_values(settlement),
            self._token(),
            settle_token,
        )
        if settled:
            return True
        async with self.conn.transaction():
            await set_tenant(self.conn, self.tenant_id, self.run_token)
            return await PgLedgerStore(self.conn).settle_pending(call_id, settlement, settle_token)

    async def cap_figures(self, tenant_id: UUID) -> CapStatus | None:
        """Cap, this month's settled spend and every live reservation (in a read transaction)."""
        async with self.conn.transaction(readonly=True):
            await set_tenant(self.conn, self.tenant_id)
            return await PgLedgerStore(self.conn).cap_figures(tenant_id)

    async def sweep_expired(self) -> int:
        """Every tenant's expired reservations at their worst case (narrow definer function)."""
        return await PgLedgerStore(self.conn).sweep_expired()

    def _token(self) -> str | None:
        return None if self.run_token is None else str(self.run_token)


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


async def cap_and_reserved(
    conn: asyncpg.Connection, tenant_id: UUID, month: date
) -> tuple[Decimal, Decimal]:
    """The tenant's monthly cap and the worst cases of its pending calls started in `month`."""
    row = await conn.fetchrow(_CAP_SQL, tenant_id, month)
    if row is None:
        raise LookupError(f"tenant {tenant_id} is not visible in this transaction")
    return row["cap"], row["reserved_in_month"]


cap_status = on_connection(PgLedgerStore, ledger.cap_status)
#: The transactional reserve: the bench's baseline and the tests' seeding (the module says why).
reserve_call = on_connection(PgLedgerStore, ledger.reserve_call)
settle_call = on_connection(PgLedgerStore, ledger.settle_call)
void_reservation = on_connection(PgLedgerStore, ledger.void_reservation)
#: The one sweep of expired reservations: the sweeper and reconcile both call it.
sweep_expired_reservations = on_connection(PgLedgerStore, ledger.sweep_expired_reservations)


async def reserve_call_alone(
    conn: asyncpg.Connection,
    *,
    run_token: UUID | None,
    findings: Sequence[tuple[str, str]] = (),
    **call: Any,
) -> CallReservation:
    """`budgets.ledger.reserve_call` (its keyword arguments in `call`) in ONE statement on a
    connection outside a transaction block, with the PII `findings` and the run's `run_token`."""
    store = PgStatementStore(conn, call["tenant_id"], run_token, tuple(findings))
    return await ledger.reserve_call(store, **call)


async def settle_call_alone(
    conn: asyncpg.Connection,
    reservation: CallReservation,
    *,
    run_token: UUID | None,
    **settlement: Any,
) -> bool:
    """`budgets.ledger.settle_call` (its keyword arguments in `settlement`) in ONE statement on a
    connection outside a transaction block."""
    store = PgStatementStore(conn, reservation.tenant_id, run_token)
    return await ledger.settle_call(store, reservation, **settlement)
