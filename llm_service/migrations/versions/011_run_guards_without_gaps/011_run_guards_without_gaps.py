"""010's run guards without the gaps two red-team rounds found in them.

Writes by the application role for a run (010: they need the run's lease token, the
transaction-local `llm.run_token`):
- Inserts of a run's events, tool calls and ledger rows:
  - are made in READ COMMITTED only (as 006's reservations): under an older snapshot
    (REPEATABLE READ) the run still showed the lease of before a takeover;
  - hold the run's row (KEY SHARE) until they commit, so a takeover cannot land between the
    check and the commit: the claim locks the row FOR UPDATE, SKIP LOCKED, and passes a run
    with a write in flight by. The renewal now locks FOR NO KEY UPDATE, which such a write does
    not block (its foreign key took KEY SHARE already, and made renewals skip busy runs);
  - need the run `running`: a finished run takes one more event only, its `final`;
  - name one run, never two (a ledger row naming both kinds was checked on one of them);
  - `queued` and `final` are once per run (writers of them queue on the run's row), each in
    the transaction that queued or ended the run (its `queued_at` or `finished_at` is that
    transaction's now()). Without a token only a never-claimed run takes them: `queued` while
    queued, `final` once cancelled (with the status `cancelled`).
- Updates of a run: a terminal run is never changed; an update changing nothing is skipped
  (it rewrote `updated_at`). Rows are compared as text: jsonb compares numbers by value
  (1.0 = 1.00), the stored text still changed. Without the token the cancel flag is raised,
  never lowered, and a queued run may become `cancelled` with the API's reason and `now()`.
  With the token a run is not queued again nor its lease moved later or removed while it
  runs (only the claim and the renewal extend a lease, as definers, within their one-hour
  bound), and it ends as of now (`finished_at` = now(), the mark its `final` event needs).
  The service's end locks the run FOR UPDATE first, so it waits for the run's writes in flight
  (KEY SHARE) and none commits after the end.
- Settling a run's ledger row (UPDATE of llm_api_calls) needs the run's token (the run held
  KEY SHARE until commit, as inserts hold it): a token-less
  session settled another worker's pending call at 0. A taken-over worker's pending row is
  left to the sweep, which counts it at its reserved worst case.
- An idempotency key names a real run of its kind and tenant (`job_idempotency_keys.run_id`
  has no foreign key: a key may name either kind's run).
Downgrade restores 010's guard functions and 009's renewal (their own text), and drops the rest.
"""

from types import ModuleType

from alembic import op
from sqlhelpers import APP_ROLE, CURRENT_TENANT, DEFINER_SEARCH_PATH, earlier_migration

revision = "011_run_guards_without_gaps"
down_revision = "010_run_writes_need_the_lease"
branch_labels = None
depends_on = None

# 008's JOB_KINDS as of this migration: kind name -> its runs' table.
RUN_TABLES = {"investigation": "investigations", "budget_optimization": "budget_optimization_jobs"}
# The reason investigations/repository.py request_cancel gives a run cancelled while queued.
CANCELLED_QUEUED = "cancelled before it started"


def _replacing(definition: str) -> str:
    return definition.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def _token_matches(hash_expr: str) -> str:
    """True when the transaction's run token is the one whose sha256 `hash_expr` keeps."""
    return f"""(nullif(current_setting('llm.run_token', true), '') IS NOT NULL
        AND {hash_expr} = sha256(uuid_send(current_setting('llm.run_token', true)::uuid)))"""


_READ_COMMITTED_ONLY = """IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'writes for a run are made in READ COMMITTED transactions only'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;"""

_INSERT_GUARD = f"""
CREATE OR REPLACE FUNCTION fn_run_insert_needs_lease() RETURNS trigger
    LANGUAGE plpgsql SET search_path = {DEFINER_SEARCH_PATH} AS $$
DECLARE
    v_row jsonb := to_jsonb(NEW);
    v_investigation uuid := (v_row ->> 'investigation_id')::uuid;
    v_job uuid := (v_row ->> 'budget_optimization_job_id')::uuid;
    v_once text := CASE WHEN TG_TABLE_NAME = 'investigation_events'
                         AND v_row ->> 'event_type' IN ('queued', 'final')
                        THEN v_row ->> 'event_type' END;
    v_status text;
    v_hash bytea;
    v_marked boolean;
BEGIN
    IF current_user <> '{APP_ROLE}' OR (v_investigation IS NULL AND v_job IS NULL) THEN
        RETURN NEW;  -- not the application role, or a row of no run (an explanation's call)
    END IF;
    IF v_investigation IS NOT NULL AND v_job IS NOT NULL THEN
        RAISE EXCEPTION 'a row belongs to one run, not two' USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- The run is read as of now and held until commit (see the migration's docstring).
    {_READ_COMMITTED_ONLY}
    IF v_once IS NOT NULL THEN
        -- Written by the transaction that queued or ended the run: its now() is that mark.
        SELECT status, lease_token_hash,
               CASE v_once WHEN 'queued' THEN queued_at ELSE finished_at END = now()
          INTO v_status, v_hash, v_marked FROM investigations
         WHERE id = v_investigation FOR NO KEY UPDATE;
        IF EXISTS (SELECT 1 FROM investigation_events e
                    WHERE e.investigation_id = v_investigation AND e.event_type = v_once) THEN
            RAISE EXCEPTION 'run % has its % event already', v_investigation, v_once
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NOT coalesce(v_marked, false) THEN
            NULL;  -- refused below
        ELSIF (v_once = 'queued' AND v_status = 'queued' AND v_hash IS NULL)
           OR (v_once = 'final' AND v_status = 'cancelled' AND v_hash IS NULL
               AND v_row #>> '{{data,status}}' = 'cancelled')
           OR (v_once = 'final' AND v_status NOT IN ('queued', 'running')
               AND {_token_matches("v_hash")}) THEN
            RETURN NEW;
        END IF;
    ELSIF v_investigation IS NOT NULL THEN
        SELECT status, lease_token_hash INTO v_status, v_hash FROM investigations
         WHERE id = v_investigation FOR KEY SHARE;
    ELSE
        SELECT status, lease_token_hash INTO v_status, v_hash FROM budget_optimization_jobs
         WHERE id = v_job FOR KEY SHARE;
    END IF;
    IF v_once IS NULL AND v_status = 'running' AND {_token_matches("v_hash")} THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'a write for run % needs the lease token of its claim',
        coalesce(v_investigation, v_job) USING ERRCODE = 'insufficient_privilege';
END
$$;
REVOKE ALL ON FUNCTION fn_run_insert_needs_lease() FROM PUBLIC;
"""

_UPDATE_GUARD = f"""
CREATE OR REPLACE FUNCTION fn_run_update_needs_lease() RETURNS trigger
    LANGUAGE plpgsql SET search_path = {DEFINER_SEARCH_PATH} AS $$
DECLARE
    v_old jsonb := to_jsonb(OLD);
    v_new jsonb := to_jsonb(NEW);
    v_cancel text[] := ARRAY['cancel_requested', 'status', 'reason', 'finished_at'];
BEGIN
    IF current_user <> '{APP_ROLE}' THEN
        RETURN NEW;
    END IF;
    -- As text: jsonb compares numbers by value (1.0 = 1.00) though the stored text changes.
    IF OLD.status NOT IN ('queued', 'running') OR v_old::text = v_new::text THEN
        RETURN NULL;  -- a terminal run is never changed, and a no-op rewrites nothing
    END IF;
    -- The holder ends its run (then, as of now) or hands it back; only the claim queues a
    -- run or extends a lease, and a running run always has one that can run out.
    IF OLD.status = 'running' AND {_token_matches("OLD.lease_token_hash")}
       AND (CASE WHEN NEW.status = 'running'
                THEN NEW.finished_at IS NOT DISTINCT FROM OLD.finished_at
                     AND NEW.lease_expires_at IS NOT NULL
                     AND (NEW.lease_expires_at <= now()
                          OR NEW.lease_expires_at = OLD.lease_expires_at)
                ELSE NEW.status <> 'queued' AND NEW.finished_at = now() END) THEN
        RETURN NEW;
    END IF;
    -- Without the token: the cancel flag is raised (never lowered), and a queued run may
    -- become cancelled as the API cancels it.
    IF coalesce((v_new ->> 'cancel_requested')::boolean, false) AND (
           (v_old - 'cancel_requested')::text = (v_new - 'cancel_requested')::text
        OR (OLD.status = 'queued' AND NEW.status = 'cancelled'
            AND NEW.reason = '{CANCELLED_QUEUED}' AND NEW.finished_at = now()
            AND (v_old - v_cancel)::text = (v_new - v_cancel)::text)) THEN
        RETURN NEW;
    END IF;
    RETURN NULL;  -- not this session's run to change: the row stays as it was
END
$$;
REVOKE ALL ON FUNCTION fn_run_update_needs_lease() FROM PUBLIC;
"""

_SETTLE_GUARD = f"""
CREATE FUNCTION fn_run_call_update_needs_lease() RETURNS trigger
    LANGUAGE plpgsql SET search_path = {DEFINER_SEARCH_PATH} AS $$
DECLARE
    v_hash bytea;
BEGIN
    IF current_user <> '{APP_ROLE}'
       OR (OLD.investigation_id IS NULL AND OLD.budget_optimization_job_id IS NULL) THEN
        RETURN NEW;
    END IF;
    {_READ_COMMITTED_ONLY}
    IF OLD.investigation_id IS NOT NULL THEN
        SELECT lease_token_hash INTO v_hash FROM investigations WHERE id = OLD.investigation_id
           FOR KEY SHARE;  -- held until commit, as the insert guard holds it
    ELSE
        SELECT lease_token_hash INTO v_hash FROM budget_optimization_jobs
         WHERE id = OLD.budget_optimization_job_id FOR KEY SHARE;
    END IF;
    IF v_hash IS NOT NULL AND {_token_matches("v_hash")} THEN
        RETURN NEW;
    END IF;
    RETURN NULL;  -- the run's holder settles its calls; a stale one's are swept as abandoned
END
$$;
REVOKE ALL ON FUNCTION fn_run_call_update_needs_lease() FROM PUBLIC;
CREATE TRIGGER trg_llm_api_calls_settle_needs_lease BEFORE UPDATE ON llm_api_calls
    FOR EACH ROW EXECUTE FUNCTION fn_run_call_update_needs_lease();
"""


def _key_check() -> str:
    lookups = "\n".join(
        f"""    IF NEW.kind = '{kind}' AND EXISTS (
        SELECT 1 FROM {table} WHERE id = NEW.run_id AND tenant_id = NEW.tenant_id) THEN
        RETURN NEW;
    END IF;"""
        for kind, table in RUN_TABLES.items()
    )
    return f"""
CREATE FUNCTION fn_job_key_names_a_run() RETURNS trigger
    LANGUAGE plpgsql SET search_path = {DEFINER_SEARCH_PATH} AS $$
BEGIN
    -- Another tenant's key is refused by row-level security (WITH CHECK), after this trigger.
    IF current_user <> '{APP_ROLE}' OR NEW.tenant_id IS DISTINCT FROM {CURRENT_TENANT} THEN
        RETURN NEW;
    END IF;
{lookups}
    RAISE EXCEPTION 'idempotency key % names no % run of this tenant',
        NEW.idempotency_key, NEW.kind USING ERRCODE = 'foreign_key_violation';
END
$$;
REVOKE ALL ON FUNCTION fn_job_key_names_a_run() FROM PUBLIC;
CREATE TRIGGER trg_job_idempotency_keys_names_a_run BEFORE INSERT ON job_idempotency_keys
    FOR EACH ROW EXECUTE FUNCTION fn_job_key_names_a_run();
"""


def _renewal(m009: ModuleType, lock: str) -> str:
    """009's renewal, its rows locked with `lock` (SKIP LOCKED)."""
    text: str = m009.renew_function(m009.JOB_KINDS)
    assert "FOR UPDATE SKIP LOCKED" in text
    return _replacing(text.replace("FOR UPDATE SKIP LOCKED", f"{lock} SKIP LOCKED"))


def upgrade() -> None:
    op.execute(_INSERT_GUARD)
    op.execute(_UPDATE_GUARD)
    op.execute(_SETTLE_GUARD)
    op.execute(_key_check())
    op.execute(_renewal(earlier_migration("009_job_leases_and_keys"), "FOR NO KEY UPDATE"))


def downgrade() -> None:
    m010 = earlier_migration("010_run_writes_need_the_lease")
    op.execute(_renewal(earlier_migration("009_job_leases_and_keys"), "FOR UPDATE"))
    op.execute("DROP TRIGGER trg_job_idempotency_keys_names_a_run ON job_idempotency_keys")
    op.execute("DROP FUNCTION fn_job_key_names_a_run()")
    op.execute("DROP TRIGGER trg_llm_api_calls_settle_needs_lease ON llm_api_calls")
    op.execute("DROP FUNCTION fn_run_call_update_needs_lease()")
    op.execute(_replacing(m010._UPDATE_GUARD))
    op.execute(_replacing(m010._INSERT_GUARD))
