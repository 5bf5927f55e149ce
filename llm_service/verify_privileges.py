"""`verify`'s privilege checks: what the application role could widen, read from the catalog.

A future migration that reopens a hole (a function left to PUBLIC, a definer function without a
pinned search_path, TEMP or CREATE for the application role, a money column it may write) fails
these checks, and so the suite.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import asyncpg

from llm_service.verify_queries import (
    CREATE_PRIVILEGES_SQL,
    DEFINER_TRIGGERS_SQL,
    EXTRA_POLICIES_SQL,
    LOCKABLE_TABLES_SQL,
    PUBLIC_FUNCTIONS_SQL,
    ROLE_WIDENING_SQL,
    UNPINNED_DEFINERS_SQL,
    WRITABLE_PROTECTED_SQL,
)

CROSSTENANT_ROLE = "llm_crosstenant"


# The guard of llm_service/migrations/sqlhelpers.trigger_table_guard, as code (not in a comment).
_GUARD = re.compile(r"^\s*IF TG_RELID <> 'public\.([a-z_][a-z0-9_]*)'::regclass THEN", re.MULTILINE)


# Money and limits the service committed, the hash of a run's lease token (only the claim
# sets it, migration 009) and of a call's settle token (set at its reserve only, migration
# 012): the application role may not write (UPDATE) them.
PROTECTED_COLUMNS: dict[str, tuple[str, ...]] = {
    "investigations": (
        "tenant_id", "max_cost_cents", "timeout_ms", "max_steps", "cost_cents", "question",
        "lease_token_hash",
    ),
    "budget_optimization_jobs": (
        "tenant_id", "max_cost_cents", "cost_cents", "params", "lease_token_hash",
    ),
    "llm_api_calls": (
        "tenant_id", "reserved_cents", "reservation_expires_at", "model", "endpoint",
        "investigation_id", "budget_optimization_job_id", "started_at", "max_tokens",
        "settle_token_hash",
    ),
    # A taken Idempotency-Key is never moved to another run or request (migration 009).
    "job_idempotency_keys": (
        "tenant_id", "idempotency_key", "kind", "run_id", "request_hash", "created_at",
    ),
}  # fmt: skip
# Columns the application role may not set when it creates a row (the month a call counts in,
# a run's recorded spend and state: the database sets them).
PROTECTED_AT_INSERT: dict[str, tuple[str, ...]] = {
    "investigations": (
        "cost_cents", "status", "result", "started_at", "attempts", "lease_token_hash",
    ),
    "budget_optimization_jobs": (
        "cost_cents", "status", "recommendations", "started_at", "lease_token_hash",
    ),
    "llm_api_calls": (
        "started_at", "cost_cents", "status", "settled_at", "input_tokens", "output_tokens",
        "usage_anomaly", "raw_usage", "cost_is_estimate",
    ),
}  # fmt: skip
# The month's roll-up (the ledger trigger writes it) and a running run's cancel requests (only
# fn_cancel_investigation writes them, for a running run of the tenant: migration 012).
READ_ONLY_TABLES = ("llm_monthly_costs", "run_cancel_requests")
# Runs and ledger rows: llm_app holds no UPDATE privilege on them, so it can lock none of their
# rows (migration 012); it writes them through definer functions that check the lease token.
UNLOCKABLE_TABLES = ("investigations", "budget_optimization_jobs", "llm_api_calls")


async def privilege_checks(
    owner: asyncpg.Connection, app_role: str, check: Callable[[str, bool, str], object]
) -> None:
    """Add each privilege check through `check(name, ok, detail)`."""
    open_functions = [r[0] for r in await owner.fetch(PUBLIC_FUNCTIONS_SQL)]
    check(
        "no function of ours executable by PUBLIC",
        not open_functions,
        "none" if not open_functions else ", ".join(open_functions),
    )
    unpinned = [r[0] for r in await owner.fetch(UNPINNED_DEFINERS_SQL)]
    check(
        "every definer function pins search_path, pg_temp last",
        not unpinned,
        "all pinned" if not unpinned else "unpinned: " + ", ".join(unpinned),
    )
    unguarded = [r["function"] for r in await owner.fetch(DEFINER_TRIGGERS_SQL) if not _guarded(r)]
    check(
        "definer trigger functions refuse other tables (TG_RELID)",
        not unguarded,
        "all guarded" if not unguarded else "unguarded: " + ", ".join(unguarded),
    )
    creatable = [r[0] for r in await owner.fetch(CREATE_PRIVILEGES_SQL, app_role)]
    check(
        "application role can create nothing (no TEMP, no CREATE, no large objects)",
        not creatable,
        f"{app_role}: " + ("nothing" if not creatable else ", ".join(creatable)),
    )
    tables = [t for t, cols in PROTECTED_COLUMNS.items() for _ in cols]
    columns = [c for cols in PROTECTED_COLUMNS.values() for c in cols]
    insert_tables = [t for t, cols in PROTECTED_AT_INSERT.items() for _ in cols]
    insert_columns = [c for cols in PROTECTED_AT_INSERT.values() for c in cols]
    writable = [
        r[0]
        for r in await owner.fetch(
            WRITABLE_PROTECTED_SQL,
            app_role,
            tables,
            columns,
            list(READ_ONLY_TABLES),
            insert_tables,
            insert_columns,
        )
    ]
    check(
        "committed money and limits are read-only to the application role",
        not writable,
        f"{len(columns) + len(insert_columns)} columns, {len(READ_ONLY_TABLES)} tables protected"
        + (f"; writable: {', '.join(writable)}" if writable else ""),
    )
    lockable = [
        r[0] for r in await owner.fetch(LOCKABLE_TABLES_SQL, app_role, list(UNLOCKABLE_TABLES))
    ]
    check(
        "application role can lock no run or ledger row (no UPDATE on their tables)",
        not lockable,
        f"{len(UNLOCKABLE_TABLES)} tables"
        + (f"; UPDATE granted: {', '.join(lockable)}" if lockable else ""),
    )
    widened = [r[0] for r in await owner.fetch(ROLE_WIDENING_SQL, app_role)]
    check(
        "application role has no membership, stored setting or REPLICATION",
        not widened,
        f"{app_role}: " + ("none" if not widened else ", ".join(widened)),
    )
    extra = [r[0] for r in await owner.fetch(EXTRA_POLICIES_SQL, CROSSTENANT_ROLE)]
    check(
        "tenant tables carry only the tenant and cross-tenant policies",
        not extra,
        "none extra" if not extra else "extra: " + ", ".join(extra),
    )


def _guarded(trigger_function: asyncpg.Record) -> bool:
    """The function opens with the table guard, and every trigger using it is on that table."""
    guard = _GUARD.search(trigger_function["source"])
    if guard is None:
        return False
    own = {guard.group(1), f"public.{guard.group(1)}"}
    return all(table in own for table in trigger_function["tables"])
