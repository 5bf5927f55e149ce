"""The demo data writer's named statements (the caller's transaction has the tenant set)."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg

_EVENT_EXISTS = """
SELECT EXISTS (SELECT 1 FROM attribution_events WHERE tenant_id = $1 AND idempotency_key = $2)
"""

# Foreign-key checks run from plans cached per connection; one made while the tables were nearly
# empty would scan them whole for every row of a bulk load. Sent before each batch to replan.
DISCARD_PLANS = "DISCARD PLANS"

# Refund and charge back in one UPDATE; the ledger's trigger audits each change.
UPDATE_LEDGER_STATES = """
UPDATE revenue_ledger l
   SET state = v.state,
       metadata = l.metadata || jsonb_build_object(
           'state_change_reason', v.reason, 'state_changed_at', v.at)
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS v(id, state, reason, at)
 WHERE l.tenant_id = $5 AND l.id = v.id
"""

# The trigger stamps transitions with now(); move them to the simulated moment of change.
RESTAMP_TRANSITIONS = """
UPDATE revenue_state_transitions t
   SET transitioned_at = v.at::timestamptz
  FROM unnest($1::uuid[], $2::text[]) AS v(id, at)
 WHERE t.tenant_id = $3 AND t.ledger_id = v.id AND t.transitioned_at = now()
"""

SETTLE_RUNS = """
UPDATE reconciliation_runs r
   SET run_metadata = r.run_metadata || jsonb_build_object(
           'transactions_checked', c.checked, 'amount_cents', c.amount, 'mismatches', 0)
  FROM (SELECT reconciliation_run_id AS id, count(*) AS checked,
               sum(amount_cents) AS amount
          FROM revenue_ledger
         WHERE tenant_id = $1 AND reconciliation_run_id = ANY($2::uuid[])
         GROUP BY reconciliation_run_id) c
 WHERE r.tenant_id = $1 AND r.id = c.id
"""


# Passed as typed arrays, in binary; every other column goes as text[] and is cast (jsonb as
# text also keeps the insert independent of the connection's JSON codec).
BINARY_TYPES = frozenset(("bigint", "integer", "boolean", "uuid", "timestamptz"))


def bulk_insert_sql(table: str, columns: Sequence[tuple[str, str]]) -> str:
    """One INSERT of many rows into `table`, its (column, SQL type) `columns` passed
    column-wise as arrays (native or text, then cast): `unnest(params) u(names)`."""
    for name, kind in (("", table), *columns):
        assert all(part.isidentifier() for part in f"{name} {kind}".split()), (name, kind)
    names = ", ".join(name for name, _ in columns)
    params = ", ".join(
        f"${k}::{kind if kind in BINARY_TYPES else 'text'}[]"
        for k, (_, kind) in enumerate(columns, 1)
    )
    values = ", ".join(
        f"u.{name}" if kind in BINARY_TYPES or kind == "text" else f"u.{name}::{kind}"
        for name, kind in columns
    )
    return f"INSERT INTO {table} ({names}) SELECT {values} FROM unnest({params}) u({names})"


async def event_exists(conn: asyncpg.Connection, tenant_id: UUID, idempotency_key: str) -> bool:
    """Whether the tenant already holds an attribution event with this idempotency key."""
    return bool(await conn.fetchval(_EVENT_EXISTS, tenant_id, idempotency_key))
