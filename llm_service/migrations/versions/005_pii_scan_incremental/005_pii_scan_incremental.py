"""PII scan: incremental, in bounded batches, idempotent, fast on PostgreSQL 15.

Every insert into attribution_events, dead_events or revenue_ledger, and every update that changes
dead_events.raw_payload or revenue_ledger.metadata, queues its row in `pii_scan_queue`, from a
statement trigger in the same transaction as the change. A scan batch deletes up to N queue
entries (SKIP LOCKED) and records the findings of their rows in the same statement. So:

- no row is missed: an entry becomes visible exactly when its row's change commits, however late
  (a transaction that commits after a later one is simply queued later; there is no watermark to
  skip past it), and it leaves the queue only with the transaction that scanned the row version
  it queued, or a newer one (one snapshot serves the delete and the reads);
- a batch that fails rolls back, entries included; concurrent scans take disjoint entries and
  never wait for writers (nor for each other, unless both hold the same row through a replayed
  entry), and a finding is recorded once (the unique index of 002);
- a batch costs its own rows, whatever the size of the tables (the walk of each document is
  002's fn_jsonb_personal_paths, with its key tests now inlined by the planner).

Revision ID: 005_pii_scan_incremental
Revises: 004_llm_subsystem
Create Date: 2026-12-06
"""

from alembic import op
from sqlhelpers import (
    APP_ROLE,
    CROSSTENANT_ROLE,
    crosstenant_policy,
    tenant_rls,
    trigger_table_guard,
)

revision = "005_pii_scan_incremental"
down_revision = "004_llm_subsystem"
branch_labels = None
depends_on = None

#: Each scanned table with its JSON column, and whether that column can change after insert
#: (attribution_events are append-only: trg_attribution_events_immutable).
SCANNED = {
    "attribution_events": ("raw_payload", False),
    "dead_events": ("raw_payload", True),
    "revenue_ledger": ("metadata", True),
}
MAX_BATCH = 10_000
DEFAULT_BATCH = 1_000
# detected_key is in a btree unique index (at most ~2.7 kB a row): a longer path is kept as its
# head plus a digest of the whole, so it stays unique and the same on every scan.
MAX_PATH = 400

QUEUE = f"""
CREATE TABLE pii_scan_queue (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    source_table text NOT NULL CONSTRAINT ck_pii_scan_queue_source_table
        CHECK (source_table IN ({", ".join(f"'{t}'" for t in SCANNED)})),
    record_id uuid NOT NULL,
    queued_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pii_scan_queue IS
    'Rows whose JSON (event and dead-event payloads, ledger metadata) changed and awaits the PII '
    'scan, queued by statement triggers in the transaction of the change; a scan batch deletes '
    'the entries it scanned. Data class: internal bookkeeping (ids only). Owner: data protection. '
    'RLS: enabled and forced (tenant_isolation_policy); the application may only read it, the '
    'definer functions (llm_crosstenant) write it.';
CREATE INDEX idx_pii_scan_queue_tenant ON pii_scan_queue (tenant_id);
{tenant_rls("pii_scan_queue", app_privileges="SELECT")}
{crosstenant_policy("pii_scan_queue", privileges="SELECT, INSERT, UPDATE, DELETE")}
-- Not STRICT, so the planner inlines them (PostgreSQL 15 runs a non-inlined SQL function call
-- per key; 4x slower): on NULL they return NULL all the same.
ALTER FUNCTION fn_normalize_json_key(text) CALLED ON NULL INPUT;
ALTER FUNCTION fn_is_personal_key(text) CALLED ON NULL INPUT;
-- The scan runs as llm_crosstenant: keep its helpers callable whatever PUBLIC may execute.
GRANT EXECUTE ON FUNCTION fn_normalize_json_key(text), fn_is_personal_key(text),
    fn_jsonb_personal_paths(jsonb) TO {CROSSTENANT_ROLE};
"""


def _nontrivial(column: str) -> str:
    """Only an object or array other than an empty one can hold a key."""
    return f"jsonb_typeof(n.{column}) IN ('object', 'array') AND n.{column} NOT IN ('{{}}', '[]')"


def _queue_function(table: str, column: str, updatable: bool) -> str:
    """The statement trigger function (and triggers) that queue `table`'s new row versions."""
    update = ""
    triggers = (
        f"CREATE TRIGGER trg_{table}_pii_queue_insert AFTER INSERT ON {table}\n"
        f"    REFERENCING NEW TABLE AS new_rows\n"
        f"    FOR EACH STATEMENT EXECUTE FUNCTION fn_pii_queue_{table}();"
    )
    if updatable:
        # Only versions whose JSON (or id or tenant) changed: status updates queue nothing.
        update = f"""
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO pii_scan_queue (tenant_id, source_table, record_id)
        SELECT n.tenant_id, '{table}', n.id
          FROM (SELECT tenant_id, id, {column} FROM new_rows
                EXCEPT SELECT tenant_id, id, {column} FROM old_rows) AS n
         WHERE {_nontrivial(column)};"""
        triggers += (
            f"\nCREATE TRIGGER trg_{table}_pii_queue_update AFTER UPDATE ON {table}\n"
            f"    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows\n"
            f"    FOR EACH STATEMENT EXECUTE FUNCTION fn_pii_queue_{table}();"
        )
    return f"""
CREATE FUNCTION fn_pii_queue_{table}() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    -- Only for its own table: attached elsewhere it would queue forged ids.
    {trigger_table_guard(table)}
    IF TG_OP = 'INSERT' THEN
        INSERT INTO pii_scan_queue (tenant_id, source_table, record_id)
        SELECT n.tenant_id, '{table}', n.id FROM new_rows n WHERE {_nontrivial(column)};{update}
    END IF;
    RETURN NULL;
END
$$;
ALTER FUNCTION fn_pii_queue_{table}() OWNER TO {CROSSTENANT_ROLE};
REVOKE ALL ON FUNCTION fn_pii_queue_{table}() FROM PUBLIC;
{triggers}
"""


QUEUE_TRIGGERS = [_queue_function(t, c, u) for t, (c, u) in SCANNED.items()]

_DOCS = "\n            UNION ALL\n".join(
    f"""            SELECT '{table}'::text, '{column}'::text, s.tenant_id, s.id, s.{column}
              FROM taken k JOIN {table} s ON s.id = k.record_id
             WHERE k.source_table = '{table}'"""
    for table, (column, _) in SCANNED.items()
)

# One statement, so one snapshot: the entries it deletes and the rows it reads. An entry visible
# to it was committed with (or before) the row version it queued, so that version or a newer one
# is what it scans. Findings are inserted in key order so concurrent scans cannot deadlock.
BATCH_SQL = f"""
WITH taken AS (
    DELETE FROM pii_scan_queue q
     WHERE q.id IN (SELECT id FROM pii_scan_queue WHERE $2::bigint IS NULL OR id <= $2
                     ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING q.source_table, q.record_id
), docs (table_name, column_name, tenant_id, record_id, doc) AS MATERIALIZED (
    SELECT DISTINCT ON (d.table_name, d.record_id) d.*
      FROM (
{_DOCS}
           ) AS d (table_name, column_name, tenant_id, record_id, doc)
), found AS (
    SELECT h.tenant_id, h.table_name, h.column_name, h.record_id,
           CASE WHEN length(p.path) <= {MAX_PATH} THEN p.path
                ELSE left(p.path, {MAX_PATH - 40}) || '...#' || md5(p.path) END AS path,
           left(p.key, 100) AS key
      FROM docs h CROSS JOIN LATERAL fn_jsonb_personal_paths(h.doc) AS p
), inserted AS (
    INSERT INTO pii_audit_findings (tenant_id, source, table_name, column_name, record_id,
                                    detected_key, finding_kind, redacted_snippet)
    SELECT f.tenant_id, 'scan', f.table_name, f.column_name, f.record_id, f.path, 'personal_key',
           f.key || ': [REDACTED]'
      FROM found f
     ORDER BY f.tenant_id, f.table_name, f.column_name, f.record_id, f.path
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM taken)::integer, (SELECT count(*) FROM inserted)::integer
"""

SCAN = f"""
CREATE FUNCTION fn_pii_scan_batch(p_limit integer DEFAULT {DEFAULT_BATCH}, p_upto bigint DEFAULT NULL)
    RETURNS TABLE (scanned integer, findings integer)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $fn$
BEGIN
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > {MAX_BATCH} THEN
        RAISE EXCEPTION 'PII scan batch size must be between 1 and {MAX_BATCH}, not %', p_limit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Planned for each batch: a plan cached while the tables were small must not outlive them.
    EXECUTE $q${BATCH_SQL}$q$ INTO scanned, findings USING p_limit, p_upto;
    RETURN NEXT;
END
$fn$;
COMMENT ON FUNCTION fn_pii_scan_batch(integer, bigint) IS
    'One bounded batch of the incremental PII scan: takes up to p_limit queued rows (skipping '
    'those another scan holds; only entries up to p_upto if given), records one finding per '
    'personal key at any depth with its tenant and JSON path, never the value; returns the '
    'entries taken and the findings added. Idempotent; commit each batch on its own.';
ALTER FUNCTION fn_pii_scan_batch(integer, bigint) OWNER TO {CROSSTENANT_ROLE};
REVOKE ALL ON FUNCTION fn_pii_scan_batch(integer, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fn_pii_scan_batch(integer, bigint) TO {APP_ROLE};

CREATE OR REPLACE FUNCTION fn_scan_pii_contamination() RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $fn$
DECLARE
    upto bigint;
    total integer := 0;
    batch record;
BEGIN
    -- Everything queued when it starts (later entries wait for the next run), batch by batch.
    SELECT max(id) INTO upto FROM pii_scan_queue;
    LOOP
        EXIT WHEN upto IS NULL;
        SELECT * INTO batch FROM fn_pii_scan_batch({DEFAULT_BATCH}, upto);
        total := total + batch.findings;
        EXIT WHEN batch.scanned = 0;
    END LOOP;
    RETURN total;
END
$fn$;
COMMENT ON FUNCTION fn_scan_pii_contamination() IS
    'The incremental PII scan of every row queued so far, in one transaction (batches of '
    '{DEFAULT_BATCH}); returns the findings added. While serving, prefer fn_pii_scan_batch, '
    'one batch per transaction (llm-service pii-scan).';
"""

# What 002 defined (verbatim), for the downgrade; its owner and grants stay.
OLD_SCAN = """
CREATE OR REPLACE FUNCTION fn_scan_pii_contamination() RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    inserted integer := 0;
    n integer;
BEGIN
    INSERT INTO pii_audit_findings (tenant_id, source, table_name, column_name, record_id,
                                    detected_key, finding_kind, redacted_snippet)
    SELECT e.tenant_id, 'scan', 'attribution_events', 'raw_payload', e.id, p.path, 'personal_key',
           p.key || ': [REDACTED]'
    FROM attribution_events e CROSS JOIN LATERAL fn_jsonb_personal_paths(e.raw_payload) p
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    inserted := inserted + n;

    INSERT INTO pii_audit_findings (tenant_id, source, table_name, column_name, record_id,
                                    detected_key, finding_kind, redacted_snippet)
    SELECT d.tenant_id, 'scan', 'dead_events', 'raw_payload', d.id, p.path, 'personal_key',
           p.key || ': [REDACTED]'
    FROM dead_events d CROSS JOIN LATERAL fn_jsonb_personal_paths(d.raw_payload) p
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    inserted := inserted + n;

    INSERT INTO pii_audit_findings (tenant_id, source, table_name, column_name, record_id,
                                    detected_key, finding_kind, redacted_snippet)
    SELECT r.tenant_id, 'scan', 'revenue_ledger', 'metadata', r.id, p.path, 'personal_key',
           p.key || ': [REDACTED]'
    FROM revenue_ledger r CROSS JOIN LATERAL fn_jsonb_personal_paths(r.metadata) p
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN inserted + n;
END
$$;
COMMENT ON FUNCTION fn_scan_pii_contamination() IS
    'Scans every tenant''s event payloads, dead-event payloads and ledger metadata for keys that '
    'name personal data, at any depth; records one finding per place with its tenant; idempotent.';
"""


def upgrade() -> None:
    op.execute(QUEUE)
    for block in QUEUE_TRIGGERS:
        op.execute(block)
    op.execute(SCAN)
    # Everything already there is the first backlog.
    for table, (column, _) in SCANNED.items():
        op.execute(
            f"""INSERT INTO pii_scan_queue (tenant_id, source_table, record_id)
                SELECT n.tenant_id, '{table}', n.id FROM {table} n WHERE {_nontrivial(column)}"""
        )


def downgrade() -> None:
    op.execute(OLD_SCAN)
    op.execute("DROP FUNCTION fn_pii_scan_batch(integer, bigint)")
    for table, (_, updatable) in SCANNED.items():
        op.execute(f"DROP TRIGGER trg_{table}_pii_queue_insert ON {table}")
        if updatable:
            op.execute(f"DROP TRIGGER trg_{table}_pii_queue_update ON {table}")
        op.execute(f"DROP FUNCTION fn_pii_queue_{table}()")
    op.execute(
        f"""
        REVOKE EXECUTE ON FUNCTION fn_normalize_json_key(text), fn_is_personal_key(text),
            fn_jsonb_personal_paths(jsonb) FROM {CROSSTENANT_ROLE};
        DROP TABLE pii_scan_queue;
        ALTER FUNCTION fn_is_personal_key(text) STRICT;
        ALTER FUNCTION fn_normalize_json_key(text) STRICT;
        """
    )
