"""Data governance: events are facts, allocations add up, ledger state changes are audited,
and every change to the data explanations rest on is journaled per tenant, day, part and channel.

Revision ID: 003_data_governance
Revises: 002_pii_controls
Create Date: 2026-11-25
"""

from collections.abc import Mapping

from alembic import op
from sqlhelpers import (
    CROSSTENANT_ROLE,
    DEFINER_SEARCH_PATH,
    crosstenant_policy,
    tenant_rls,
    trigger_table_guard,
)

revision = "003_data_governance"
down_revision = "002_pii_controls"
branch_labels = None
depends_on = None

EVENT_FACTS = """
-- An event is a fact: only its processing bookkeeping may change after it is written.
CREATE FUNCTION fn_attribution_events_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.tenant_id, NEW.occurred_at, NEW.event_timestamp, NEW.event_type, NEW.channel,
        NEW.revenue_cents, NEW.conversion_value_cents, NEW.currency, NEW.idempotency_key,
        NEW.raw_payload, NEW.session_id, NEW.correlation_id, NEW.external_event_id, NEW.campaign_id)
       IS DISTINCT FROM
       (OLD.tenant_id, OLD.occurred_at, OLD.event_timestamp, OLD.event_type, OLD.channel,
        OLD.revenue_cents, OLD.conversion_value_cents, OLD.currency, OLD.idempotency_key,
        OLD.raw_payload, OLD.session_id, OLD.correlation_id, OLD.external_event_id, OLD.campaign_id)
    THEN
        RAISE EXCEPTION 'attribution_events are append-only: only processing_status, processed_at '
                        'and retry_count may change (event %)', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER trg_attribution_events_immutable BEFORE UPDATE ON attribution_events
    FOR EACH ROW EXECUTE FUNCTION fn_attribution_events_immutable();
"""

ALLOCATION_SUMS = """
-- Per event and model version, allocations must add up to the event's revenue (within one cent).
-- Checked once per statement over the rows it touched, so an event's split is written together.
CREATE FUNCTION fn_check_allocation_sums() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
    found_rows bigint;
BEGIN
    -- Dynamic SQL: planned for each statement, so a plan cached while the table was small
    -- cannot make a later bulk load crawl.
    EXECUTE $q$
        SELECT a.event_id, a.model_type, a.model_version, e.revenue_cents,
               sum(a.allocated_revenue_cents) AS allocated
        FROM (SELECT DISTINCT tenant_id, event_id, model_type, model_version FROM changed_rows) c
        JOIN attribution_allocations a
          ON a.tenant_id = c.tenant_id AND a.event_id = c.event_id
         AND a.model_type = c.model_type AND a.model_version = c.model_version
        JOIN attribution_events e ON e.tenant_id = a.tenant_id AND e.id = a.event_id
        GROUP BY a.event_id, a.model_type, a.model_version, e.revenue_cents
        HAVING abs(sum(a.allocated_revenue_cents) - e.revenue_cents) > 1
        LIMIT 1
    $q$ INTO bad;
    -- EXECUTE does not set FOUND; its row count says whether a bad split came back.
    GET DIAGNOSTICS found_rows = ROW_COUNT;
    IF found_rows > 0 THEN
        RAISE EXCEPTION 'allocations of event % under model %/% sum to % cents, event revenue is % cents',
            bad.event_id, bad.model_type, bad.model_version, bad.allocated, bad.revenue_cents
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER trg_allocation_sums_insert AFTER INSERT ON attribution_allocations
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fn_check_allocation_sums();
CREATE TRIGGER trg_allocation_sums_update AFTER UPDATE ON attribution_allocations
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fn_check_allocation_sums();
"""

LEDGER_AUDIT = """
-- Every ledger state change is audited, whoever makes it.
CREATE FUNCTION fn_revenue_ledger_audit_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state IS DISTINCT FROM OLD.state THEN
        NEW.previous_state := OLD.state;
        INSERT INTO revenue_state_transitions (tenant_id, ledger_id, from_state, to_state, reason)
        VALUES (NEW.tenant_id, NEW.id, OLD.state, NEW.state, NEW.metadata ->> 'state_change_reason');
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER trg_revenue_ledger_audit_state BEFORE UPDATE OF state ON revenue_ledger
    FOR EACH ROW EXECUTE FUNCTION fn_revenue_ledger_audit_state();
"""


# --------------------------------------------------------------------------------------------
# The data-change journal: what llm_service.analytics.fingerprint_queries.data_fingerprint reads.
# --------------------------------------------------------------------------------------------

#: The parts of the data an explanation rests on (FINGERPRINT_PARTS in analytics.fingerprint_queries).
JOURNAL_PARTS = (
    "events",
    "allocations",
    "ledger",
    "transitions",
    "dead_events",
    "corrections",
    "runs",
)
# The channel of a journal row. A change concerns a channel code (an event's, an allocation's, a
# ledger row's allocation's, a correction's from and to), every channel ('*': the parts without
# a channel, and channels that can no longer be resolved, e.g. a deleted allocation's) or none
# (a ledger row without an allocation). Every change also bumps its part and day's roll-up row,
# channel '': a fingerprint over all channels reads only roll-ups, one per part and day, and one
# for a channel reads that channel's rows and the '*' rows; so neither depends on how many
# channels there are. Channel codes are [a-z][a-z0-9_]+: never '' or '*'.
ROLL_UP = "''"
ANY_CHANNEL = "'*'"
NO_CHANNEL = ROLL_UP  # only the roll-up

JOURNAL_TABLE = f"""
CREATE TABLE data_change_journal (
    tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    part text NOT NULL CONSTRAINT ck_data_change_journal_part
        CHECK (part IN ({", ".join(f"'{p}'" for p in JOURNAL_PARTS)})),
    channel text NOT NULL,
    day date NOT NULL,
    version bigint NOT NULL DEFAULT 1 CONSTRAINT ck_data_change_journal_version CHECK (version >= 1),
    changed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, part, channel, day)
) WITH (fillfactor = 70);
COMMENT ON TABLE data_change_journal IS
    'Per tenant, part of the data (events, allocations, ledger, ...), channel (a code; "*": '
    'every channel; empty: the roll-up of all changes) and UTC day, a version that statement '
    'triggers bump in the transaction of every change, so a data fingerprint is one small index '
    'range scan per part. Data class: derived metadata. Owner: analytics. RLS: enabled and '
    'forced (tenant_isolation_policy); the application may only read it, the definer triggers '
    '(llm_crosstenant) write it.';
{tenant_rls("data_change_journal", app_privileges="SELECT")}
{crosstenant_policy("data_change_journal", privileges="SELECT, INSERT, UPDATE")}
-- What the definer triggers read besides the journal (events and ledger: policies from 002).
{crosstenant_policy("attribution_allocations")}
{crosstenant_policy("revenue_state_transitions")}
{crosstenant_policy("channel_assignment_corrections")}
-- The ledger rows of an allocation (its channel change moves them; ON DELETE SET NULL too).
CREATE INDEX idx_revenue_ledger_allocation ON revenue_ledger (tenant_id, allocation_id);
"""


def _day(column: str) -> str:
    """The UTC day of a timestamptz: periods are [start, end) between UTC midnights."""
    return f"({column} AT TIME ZONE 'UTC')::date"


def _upsert(changes: str, moves: str | None = None) -> str:
    """One statement: bump (or create) the journal row of every distinct key `changes` yields.

    `changes` selects (tenant_id, part, day, channel); each key also bumps its roll-up (channel
    ''). `moves` selects the same, for data that only moved between channels: their channels'
    rows move, the roll-up (every channel together) does not. Rows are locked in key order, so
    two statements touching the same keys queue rather than deadlock. A tenant being deleted
    (its rows go by cascade) is skipped.
    """
    rows = f"({changes}\n                       ) AS c (tenant_id, part, day, channel)"
    roll_up = ROLL_UP
    if moves is not None:
        rows = f"""(SELECT c.*, true FROM ({changes}
                        ) AS c (tenant_id, part, day, channel)
                        UNION ALL
                        SELECT m.*, false FROM ({moves}
                        ) AS m (tenant_id, part, day, channel)
                       ) AS c (tenant_id, part, day, channel, rolls_up)"""
        roll_up = f"CASE WHEN c.rolls_up THEN {ROLL_UP} END"
    return f"""
        INSERT INTO data_change_journal AS j (tenant_id, part, channel, day)
        SELECT k.tenant_id, k.part, k.channel, k.day
          FROM (SELECT DISTINCT c.tenant_id, c.part, r.channel, c.day
                  FROM {rows}
                 CROSS JOIN LATERAL (VALUES (c.channel), ({roll_up})) AS r (channel)
                 WHERE c.day IS NOT NULL AND r.channel IS NOT NULL) AS k
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
         ORDER BY k.tenant_id, k.part, k.channel, k.day
        ON CONFLICT (tenant_id, part, channel, day)
        DO UPDATE SET version = j.version + 1, changed_at = now();"""


def _referencing(op: str) -> str:
    if op == "INSERT":
        return "NEW TABLE AS new_rows"
    if op == "DELETE":
        return "OLD TABLE AS old_rows"
    return "OLD TABLE AS old_rows NEW TABLE AS new_rows"


def _journal_function(table: str, changes: Mapping[str, str | tuple[str, str]]) -> str:
    """A SECURITY DEFINER trigger function: per TG_OP, one journal upsert of `changes[TG_OP]`
    (the changes, or the changes and the moves between channels).

    Statement-level with transition tables, so a bulk statement costs one more statement; one
    trigger per event type (a trigger with transition tables serves a single event). PL/pgSQL
    caches each statement's plan for the session, possibly made while the tables were small (a
    hash join over a full scan of the events would then run on every later statement): with
    sequential scans and hash and merge joins off, every lookup is an index probe per changed
    row, right at any size (the transition tables themselves are scanned once; they pair up by
    aggregation, never by join).
    """
    branches = "\n    ELS".join(
        f"IF TG_OP = '{op}' THEN" + (_upsert(*sql) if isinstance(sql, tuple) else _upsert(sql))
        for op, sql in changes.items()
    )
    triggers = "\n".join(
        f"CREATE TRIGGER trg_{table}_journal_{op.lower()} AFTER {op} ON {table}\n"
        f"    REFERENCING {_referencing(op)}\n"
        f"    FOR EACH STATEMENT EXECUTE FUNCTION fn_journal_{table}();"
        for op in changes
    )
    return f"""
CREATE FUNCTION fn_journal_{table}() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = {DEFINER_SEARCH_PATH}
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
BEGIN
    {trigger_table_guard(table)}
    {branches}
    END IF;
    RETURN NULL;
END
$$;
ALTER FUNCTION fn_journal_{table}() OWNER TO {CROSSTENANT_ROLE};
REVOKE ALL ON FUNCTION fn_journal_{table}() FROM PUBLIC;
{triggers}
"""


_OLD_AND_NEW = "(SELECT * FROM old_rows UNION ALL SELECT * FROM new_rows)"


def _each_op(rows_changes: str) -> dict[str, str]:
    """The same changes of the new rows (INSERT), old and new (UPDATE) or old rows (DELETE)."""
    return {
        "INSERT": rows_changes.format(rows="new_rows"),
        "UPDATE": rows_changes.format(rows=_OLD_AND_NEW),
        "DELETE": rows_changes.format(rows="old_rows"),
    }


# An event counts on its day, under its channel. Events are facts (trg_attribution_events_immutable):
# an UPDATE changes nothing journaled, so there is no UPDATE trigger. A deleted event takes its
# allocations (by cascade: unresolvable afterwards) and the corrections about it out of its day,
# for every channel.
JOURNAL_EVENTS = _journal_function(
    "attribution_events",
    {
        "INSERT": f"""
            SELECT n.tenant_id, 'events', {_day("n.occurred_at")}, n.channel FROM new_rows n""",
        "DELETE": f"""
            SELECT o.tenant_id, p.part, {_day("o.occurred_at")},
                   CASE WHEN p.part = 'events' THEN o.channel ELSE {ANY_CHANNEL} END
              FROM old_rows o
             CROSS JOIN (VALUES ('events'), ('allocations'), ('corrections')) AS p (part)
             WHERE p.part <> 'allocations' OR o.revenue_cents > 0""",
    },
)

# An allocation counts on its revenue event's day, under its own channel. One that changes
# channel moves its ledger rows (and their transitions) between channels; one that moves to
# another event moves the corrections about it between days; a deleted one takes those
# corrections out of its event's day.
_ALLOCATIONS_OF = f"""
            SELECT x.tenant_id, 'allocations', {_day("e.occurred_at")}, x.channel_code
              FROM (SELECT DISTINCT tenant_id, event_id, channel_code FROM {{rows}}) AS x
              JOIN attribution_events e ON e.tenant_id = x.tenant_id AND e.id = x.event_id
             WHERE e.revenue_cents > 0"""
_CORRECTIONS_OF_ALLOCATIONS = f"""
            SELECT c.tenant_id, 'corrections', {_day("e.occurred_at")}, ch.channel
              FROM {{rows}} AS x
              JOIN channel_assignment_corrections c
                ON c.tenant_id = x.tenant_id AND c.entity_type = 'allocation'
               AND c.entity_id = x.id
              JOIN attribution_events e ON e.tenant_id = x.tenant_id AND e.id = x.event_id
             CROSS JOIN LATERAL (VALUES (c.from_channel), (c.to_channel)) AS ch (channel)"""
# Both versions of each allocation whose `column` changed (old and new rows paired up by
# aggregation, not by a join).
_CHANGED = """(
                SELECT u.tenant_id, u.id, u.{column}
                  FROM (SELECT tenant_id, id, {column}, count(*) OVER (PARTITION BY id) AS versions
                          FROM (SELECT tenant_id, id, {column} FROM old_rows
                                UNION SELECT tenant_id, id, {column} FROM new_rows) AS b
                       ) AS u
                 WHERE u.versions > 1)"""
_ALLOCATION_REASSIGNED = _CORRECTIONS_OF_ALLOCATIONS.format(rows=_CHANGED.format(column="event_id"))
_ALLOCATION_RECHANNELED = """
            SELECT l.tenant_id, 'ledger', {posted}, r.channel_code
              FROM {changed} AS r
              JOIN revenue_ledger l ON l.tenant_id = r.tenant_id AND l.allocation_id = r.id
            UNION ALL
            SELECT t.tenant_id, 'transitions', {transitioned}, r.channel_code
              FROM {changed} AS r
              JOIN revenue_ledger l ON l.tenant_id = r.tenant_id AND l.allocation_id = r.id
              JOIN revenue_state_transitions t
                ON t.tenant_id = l.tenant_id AND t.ledger_id = l.id""".format(
    posted=_day("l.posted_at"),
    transitioned=_day("t.transitioned_at"),
    changed=_CHANGED.format(column="channel_code"),
)
JOURNAL_ALLOCATIONS = _journal_function(
    "attribution_allocations",
    {
        "INSERT": _ALLOCATIONS_OF.format(rows="new_rows"),
        "UPDATE": (
            _ALLOCATIONS_OF.format(
                rows="(SELECT tenant_id, event_id, channel_code FROM old_rows UNION "
                "SELECT tenant_id, event_id, channel_code FROM new_rows) AS b"
            )
            + "\n            UNION ALL"
            + _ALLOCATION_REASSIGNED,
            _ALLOCATION_RECHANNELED,
        ),
        "DELETE": _ALLOCATIONS_OF.format(rows="old_rows")
        + "\n            UNION ALL"
        + _CORRECTIONS_OF_ALLOCATIONS.format(rows="old_rows"),
    },
)


def _ledger_channel(ledger: str, allocation: str) -> str:
    """A ledger row's channel: its allocation's; none without one; '*' if it cannot be resolved."""
    return (
        f"coalesce({allocation}.channel_code, CASE WHEN {ledger}.allocation_id IS NULL "
        f"THEN {NO_CHANNEL} ELSE {ANY_CHANNEL} END)"
    )


# A ledger row counts on its posted day, under its allocation's channel. Every update moves its
# updated_at, which its transitions (on their own days) carry as well. A deleted row takes its
# transitions by cascade (journaled by their own trigger).
_LEDGER_ROWS = f"""
            SELECT r.tenant_id, 'ledger', {_day("r.posted_at")}, {_ledger_channel("r", "a")}
              FROM {{rows}} AS r
              LEFT JOIN attribution_allocations a
                     ON a.tenant_id = r.tenant_id AND a.id = r.allocation_id"""
_LEDGER_TRANSITIONS = f"""
            SELECT t.tenant_id, 'transitions', {_day("t.transitioned_at")},
                   {_ledger_channel("r", "a")}
              FROM {_OLD_AND_NEW} AS r
              JOIN revenue_state_transitions t
                ON t.tenant_id = r.tenant_id AND t.ledger_id = r.id
              LEFT JOIN attribution_allocations a
                     ON a.tenant_id = r.tenant_id AND a.id = r.allocation_id"""
JOURNAL_LEDGER = _journal_function(
    "revenue_ledger",
    {
        "INSERT": _LEDGER_ROWS.format(rows="new_rows"),
        "UPDATE": _LEDGER_ROWS.format(rows=_OLD_AND_NEW)
        + "\n            UNION ALL"
        + _LEDGER_TRANSITIONS,
        "DELETE": _LEDGER_ROWS.format(rows="old_rows"),
    },
)

# A transition counts on its own day, under its ledger row's channel.
JOURNAL_TRANSITIONS = _journal_function(
    "revenue_state_transitions",
    _each_op(
        f"""
            SELECT r.tenant_id, 'transitions', {_day("r.transitioned_at")},
                   CASE WHEN l.id IS NULL THEN {ANY_CHANNEL} ELSE {_ledger_channel("l", "a")} END
              FROM {{rows}} AS r
              LEFT JOIN revenue_ledger l ON l.tenant_id = r.tenant_id AND l.id = r.ledger_id
              LEFT JOIN attribution_allocations a
                     ON a.tenant_id = l.tenant_id AND a.id = l.allocation_id"""
    ),
)

# A correction counts on the day it was made and on its event's day (the event's own, or its
# allocation's event's), under both its channels.
JOURNAL_CORRECTIONS = _journal_function(
    "channel_assignment_corrections",
    _each_op(
        f"""
            SELECT r.tenant_id, 'corrections', d.day, ch.channel
              FROM {{rows}} AS r
              LEFT JOIN attribution_allocations a
                     ON r.entity_type = 'allocation' AND a.tenant_id = r.tenant_id
                    AND a.id = r.entity_id
              LEFT JOIN attribution_events e
                     ON e.tenant_id = r.tenant_id
                    AND e.id = CASE WHEN r.entity_type = 'event' THEN r.entity_id
                                    ELSE a.event_id END
             CROSS JOIN LATERAL (VALUES ({_day("r.corrected_at")}), ({_day("e.occurred_at")}))
                   AS d (day)
             CROSS JOIN LATERAL (VALUES (r.from_channel), (r.to_channel)) AS ch (channel)"""
    ),
)

# Dead events and reconciliation runs have no channel.
JOURNAL_DEAD_EVENTS = _journal_function(
    "dead_events",
    _each_op(
        f"""
            SELECT r.tenant_id, 'dead_events', {_day("r.ingested_at")}, {ANY_CHANNEL}
              FROM {{rows}} AS r"""
    ),
)
JOURNAL_RUNS = _journal_function(
    "reconciliation_runs",
    _each_op(
        f"""
            SELECT r.tenant_id, 'runs', {_day("r.created_at")}, {ANY_CHANNEL}
              FROM {{rows}} AS r"""
    ),
)

#: Each journaled table with the statements its triggers journal.
JOURNALED: dict[str, tuple[str, ...]] = {
    "attribution_events": ("insert", "delete"),
    "attribution_allocations": ("insert", "update", "delete"),
    "revenue_ledger": ("insert", "update", "delete"),
    "revenue_state_transitions": ("insert", "update", "delete"),
    "channel_assignment_corrections": ("insert", "update", "delete"),
    "dead_events": ("insert", "update", "delete"),
    "reconciliation_runs": ("insert", "update", "delete"),
}
JOURNAL_TRIGGERS = (
    JOURNAL_EVENTS,
    JOURNAL_ALLOCATIONS,
    JOURNAL_LEDGER,
    JOURNAL_TRANSITIONS,
    JOURNAL_CORRECTIONS,
    JOURNAL_DEAD_EVENTS,
    JOURNAL_RUNS,
)


def upgrade() -> None:
    op.execute(EVENT_FACTS)
    op.execute(ALLOCATION_SUMS)
    op.execute(LEDGER_AUDIT)
    op.execute(JOURNAL_TABLE)
    for block in JOURNAL_TRIGGERS:
        op.execute(block)


def downgrade() -> None:
    for table, events in JOURNALED.items():
        for event in events:
            op.execute(f"DROP TRIGGER trg_{table}_journal_{event} ON {table}")
        op.execute(f"DROP FUNCTION fn_journal_{table}()")
    op.execute(
        f"""
        DROP TABLE data_change_journal;
        DROP INDEX idx_revenue_ledger_allocation;
        DROP POLICY crosstenant_policy ON attribution_allocations;
        DROP POLICY crosstenant_policy ON revenue_state_transitions;
        DROP POLICY crosstenant_policy ON channel_assignment_corrections;
        REVOKE ALL ON attribution_allocations, revenue_state_transitions,
            channel_assignment_corrections FROM {CROSSTENANT_ROLE};
        """
    )
    op.execute(
        """
        DROP TRIGGER trg_revenue_ledger_audit_state ON revenue_ledger;
        DROP FUNCTION fn_revenue_ledger_audit_state();
        DROP TRIGGER trg_allocation_sums_update ON attribution_allocations;
        DROP TRIGGER trg_allocation_sums_insert ON attribution_allocations;
        DROP FUNCTION fn_check_allocation_sums();
        DROP TRIGGER trg_attribution_events_immutable ON attribution_events;
        DROP FUNCTION fn_attribution_events_immutable();
        """
    )
