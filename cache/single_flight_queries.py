"""The single-flight lock's named statements (transaction-scoped advisory locks)."""

from __future__ import annotations

TRY_LOCK = "SELECT pg_try_advisory_xact_lock($1)"
LOCK = "SELECT pg_advisory_xact_lock($1)"
SET_TIMEOUTS = (
    "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true)"
)
