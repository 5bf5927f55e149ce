"""Every write for a claimed run presents its lease token, in the database.

009 kept only the token's sha256 on the run, but checked it in the service's own WHERE clauses:
an application-role session could still end a running run, expire or extend its lease (column
UPDATE grants of 006), and a worker whose lease was taken over could still add events, tool
calls and ledger rows for the run. Now:
- A transaction writing for a run sets `llm.run_token` (set_config(..., true)) to the token
  its claim returned. Its sha256 must equal the run's `lease_token_hash`.
- Updates of a run by the application role: without the token, only the cancel flag changes
  (and a queued run may become `cancelled`); any other change of a claimed run is skipped
  (the row is left as it was, as a lease-guarded WHERE would), and a terminal run is not
  rewritten. The claim, the renewal and the spend trigger run as their definer, not as the
  application role, and are not affected.
- Inserts by the application role of events, tool calls and ledger rows linked to a run are
  refused (insufficient_privilege) unless the token matches; ledger rows also need the run to
  be `running`, and a row naming a run the session cannot see (another tenant's) is refused. A run never claimed takes only the API's own events: `queued` while queued,
  `final` once cancelled before it started.
"""

from alembic import op
from sqlhelpers import APP_ROLE, DEFINER_SEARCH_PATH

revision = "010_run_writes_need_the_lease"
down_revision = "009_job_leases_and_keys"
branch_labels = None
depends_on = None

RUN_TABLES = ("investigations", "budget_optimization_jobs")

# True when the transaction's run token is the one whose hash `hash_expr` keeps.
_TOKEN_MATCHES = """(nullif(current_setting('llm.run_token', true), '') IS NOT NULL
        AND {hash} = sha256(uuid_send(current_setting('llm.run_token', true)::uuid)))"""

_UPDATE_GUARD = f"""
CREATE FUNCTION fn_run_update_needs_lease() RETURNS trigger
    LANGUAGE plpgsql SET search_path = {DEFINER_SEARCH_PATH} AS $$
DECLARE
    v_old jsonb := to_jsonb(OLD) - 'cancel_requested';
    v_new jsonb := to_jsonb(NEW) - 'cancel_requested';
    v_cancel text[] := ARRAY['status', 'reason', 'finished_at'];
    -- The cancel flag is raised without the token, never lowered.
    v_uncancel boolean := coalesce((to_jsonb(OLD) ->> 'cancel_requested')::boolean, false)
        AND NOT coalesce((to_jsonb(NEW) ->> 'cancel_requested')::boolean, false);
BEGIN
    IF current_user <> '{APP_ROLE}' OR (v_old = v_new AND NOT v_uncancel) THEN
        RETURN NEW;
    END IF;
    IF OLD.status = 'queued' AND NEW.status = 'cancelled' AND NOT v_uncancel
       AND (v_old - v_cancel) = (v_new - v_cancel) THEN
        RETURN NEW;
    END IF;
    IF OLD.status = 'running' AND {_TOKEN_MATCHES.format(hash="OLD.lease_token_hash")} THEN
        RETURN NEW;
    END IF;
    RETURN NULL;  -- not this session's run to change: the row stays as it was
END
$$;
REVOKE ALL ON FUNCTION fn_run_update_needs_lease() FROM PUBLIC;
"""


def _run_lookup(table: str, column: str) -> str:
    return (
        f"SELECT status, lease_token_hash INTO v_status, v_hash FROM {table} "
        f"WHERE id = (v_row ->> '{column}')::uuid;"
    )


_INSERT_GUARD = f"""
CREATE FUNCTION fn_run_insert_needs_lease() RETURNS trigger
    LANGUAGE plpgsql SET search_path = {DEFINER_SEARCH_PATH} AS $$
DECLARE
    v_status text;
    v_hash bytea;
    v_row jsonb := to_jsonb(NEW);
BEGIN
    IF current_user <> '{APP_ROLE}' THEN
        RETURN NEW;
    END IF;
    IF v_row ->> 'investigation_id' IS NOT NULL THEN
        {_run_lookup("investigations", "investigation_id")}
    ELSIF v_row ->> 'budget_optimization_job_id' IS NOT NULL THEN
        {_run_lookup("budget_optimization_jobs", "budget_optimization_job_id")}
    ELSE
        RETURN NEW;  -- a row of no run (an explanation's call)
    END IF;
    IF TG_TABLE_NAME = 'investigation_events' AND v_hash IS NULL
       AND ((v_status = 'queued' AND v_row ->> 'event_type' = 'queued')
            OR (v_status = 'cancelled' AND v_row ->> 'event_type' = 'final')) THEN
        RETURN NEW;
    END IF;
    IF v_status IS NOT NULL AND v_hash IS NOT NULL AND {_TOKEN_MATCHES.format(hash="v_hash")}
       AND (TG_TABLE_NAME <> 'llm_api_calls' OR v_status = 'running') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'a write for run % needs the lease token of its claim',
        coalesce(v_row ->> 'investigation_id', v_row ->> 'budget_optimization_job_id')
        USING ERRCODE = 'insufficient_privilege';
END
$$;
REVOKE ALL ON FUNCTION fn_run_insert_needs_lease() FROM PUBLIC;
"""

INSERT_GUARDED = ("investigation_events", "investigation_tool_calls", "llm_api_calls")


def upgrade() -> None:
    op.execute(_UPDATE_GUARD)
    for table in RUN_TABLES:
        op.execute(
            f"CREATE TRIGGER trg_{table}_update_needs_lease BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION fn_run_update_needs_lease()"
        )
    op.execute(_INSERT_GUARD)
    for table in INSERT_GUARDED:
        op.execute(
            f"CREATE TRIGGER trg_{table}_insert_needs_lease BEFORE INSERT ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION fn_run_insert_needs_lease()"
        )


def downgrade() -> None:
    for table in INSERT_GUARDED:
        op.execute(f"DROP TRIGGER trg_{table}_insert_needs_lease ON {table}")
    op.execute("DROP FUNCTION fn_run_insert_needs_lease()")
    for table in RUN_TABLES:
        op.execute(f"DROP TRIGGER trg_{table}_update_needs_lease ON {table}")
    op.execute("DROP FUNCTION fn_run_update_needs_lease()")
