"""Trust: a privilege model the application role cannot widen, usage anomalies, fixed limits.

What a compromised application-role session could do before this revision, and what stops it now:

* create objects (TEMP tables, anything in `public`) and attach our SECURITY DEFINER trigger
  functions to them, forging any tenant's monthly bill: TEMP and CREATE are revoked from PUBLIC
  and the service roles, EXECUTE on every function of ours is revoked from PUBLIC (granted back
  only where a role calls it), definer trigger functions refuse any table but their own, and
  every definer function searches `pg_temp` last;
* rewrite money the service already committed, or a run's limits: the application role may
  write only the columns its job needs (a ledger row's reservation, model and owner, a run's
  ceiling, timeout, step limit and spend are not among them); a run's spend is kept by a
  trigger from its ledger rows; ledger rows are born pending and settle at most at their
  reservation; the monthly cap is checked by the database on every reservation.

`llm-service verify` checks all of this from the catalog.
"""

from alembic import op
from sqlhelpers import APP_ROLE, CROSSTENANT_ROLE, DEFINER_SEARCH_PATH, trigger_table_guard

revision = "006_trust_privileges"
down_revision = "005_pii_scan_incremental"
branch_labels = None
depends_on = None

# Functions of ours (not an extension's) in public.
_OUR_FUNCTIONS = """
SELECT p.oid::regprocedure AS signature, p.prosecdef AS definer
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'public'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                   AND d.objid = p.oid AND d.deptype = 'e')
"""

CLOSE_DATABASE = f"""
DO $$
BEGIN
    EXECUTE format('REVOKE TEMPORARY, CREATE ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('REVOKE TEMPORARY, CREATE ON DATABASE %I FROM {APP_ROLE}, {CROSSTENANT_ROLE}',
                   current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO {APP_ROLE}', current_database());
END
$$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE CREATE ON SCHEMA public FROM {APP_ROLE}, {CROSSTENANT_ROLE};

-- Large objects live outside every table and its row-level security: nobody needs them here.
-- Revoking needs the owner of pg_catalog (a superuser); where the owner is not one (a managed
-- service), verify reports the gap instead of the migration failing.
DO $$
BEGIN
    REVOKE EXECUTE ON FUNCTION pg_catalog.lo_create(oid), pg_catalog.lo_creat(integer),
        pg_catalog.lo_from_bytea(oid, bytea), pg_catalog.lo_import(text),
        pg_catalog.lo_import(text, oid) FROM PUBLIC;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'large-object functions left executable: the owner is not a superuser';
END
$$;
"""

CLOSE_FUNCTIONS = f"""
DO $$
DECLARE
    f record;
BEGIN
    FOR f IN {_OUR_FUNCTIONS} LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f.signature);
        IF f.definer THEN
            EXECUTE format('ALTER FUNCTION %s SET search_path = {DEFINER_SEARCH_PATH}', f.signature);
        END IF;
    END LOOP;
END
$$;
-- Purging every tenant's prompts is the operator's (`llm-service retention`, as the owner), not
-- something a request-serving session should be able to do with a cutoff of its choosing.
REVOKE EXECUTE ON FUNCTION fn_purge_llm_call_prompts(timestamptz, integer),
    fn_purge_llm_validation_payloads(timestamptz, integer) FROM {APP_ROLE};
-- Functions created later by the migrating role start closed too.
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- Pure helpers: the definer functions call them (the roll-up, the PII scan), and the PII rules
-- are the same in SQL and in Python (the application checks its keys against them).
GRANT EXECUTE ON FUNCTION fn_breakdown_add(jsonb, text, numeric, bigint, bigint)
    TO {CROSSTENANT_ROLE};
GRANT EXECUTE ON FUNCTION fn_normalize_json_key(text), fn_is_personal_key(text),
    fn_jsonb_personal_paths(jsonb) TO {CROSSTENANT_ROLE}, {APP_ROLE};
"""

# The columns the application role writes, and no others.
LEDGER_COLUMNS = f"""
ALTER TABLE llm_api_calls
    ADD COLUMN usage_anomaly text CONSTRAINT ck_llm_api_calls_usage_anomaly
        CHECK (length(usage_anomaly) BETWEEN 1 AND 500),
    ADD COLUMN raw_usage jsonb,
    ADD CONSTRAINT ck_llm_api_calls_within_reservation CHECK (cost_cents <= reserved_cents);
COMMENT ON COLUMN llm_api_calls.usage_anomaly IS
    'Why the usage the provider reported was not believed (the call was then billed at its '
    'reservation); NULL when it was billed as reported.';
COMMENT ON COLUMN llm_api_calls.raw_usage IS
    'The usage object the provider returned, as it came (capped), kept as evidence.';

REVOKE INSERT, UPDATE ON llm_api_calls FROM {APP_ROLE};
GRANT INSERT (id, tenant_id, request_id, endpoint, model, provider, attempt, reserved_cents,
              reservation_expires_at, max_tokens, investigation_id, budget_optimization_job_id,
              request_metadata)
    ON llm_api_calls TO {APP_ROLE};
GRANT UPDATE (status, input_tokens, output_tokens, cost_cents, cost_is_estimate, latency_ms,
              provider_request_id, error_type, error_message, settled_at, usage_anomaly, raw_usage)
    ON llm_api_calls TO {APP_ROLE};

REVOKE INSERT, UPDATE ON investigations FROM {APP_ROLE};
GRANT INSERT (tenant_id, question, max_cost_cents, timeout_ms, max_steps, idempotency_key)
    ON investigations TO {APP_ROLE};
GRANT UPDATE (status, reason, degraded, elapsed_ms, result, lease_owner, lease_expires_at,
              heartbeat_at, cancel_requested, finished_at)
    ON investigations TO {APP_ROLE};

REVOKE INSERT, UPDATE ON budget_optimization_jobs FROM {APP_ROLE};
GRANT INSERT (tenant_id, params, max_cost_cents, idempotency_key)
    ON budget_optimization_jobs TO {APP_ROLE};
GRANT UPDATE (status, reason, degraded, recommendations, rationale, lease_owner,
              lease_expires_at, heartbeat_at, finished_at)
    ON budget_optimization_jobs TO {APP_ROLE};
"""

# Every row is born pending, and its reservation must fit under the tenant's monthly cap: checked
# here, in the database, under a per-tenant advisory lock, whoever inserts it. Expired
# reservations of the tenant are settled at their worst case first, so they stop blocking.
RESERVE_TRIGGER = f"""
CREATE FUNCTION fn_llm_api_calls_reserve() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = {DEFINER_SEARCH_PATH} AS $$
DECLARE
    v_cap numeric;
    v_spent numeric;
    v_reserved numeric;
BEGIN
    {trigger_table_guard("llm_api_calls")}
    IF NEW.status <> 'pending' OR NEW.cost_cents <> 0 OR NEW.settled_at IS NOT NULL THEN
        RAISE EXCEPTION 'a provider call is recorded pending, then settled'
            USING ERRCODE = 'check_violation';
    END IF;
    -- The sums below must see every reservation committed before this one: a snapshot taken
    -- earlier in the transaction (REPEATABLE READ) would not, and could pass the cap.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'reservations are made in READ COMMITTED transactions only'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    -- Reservations of a tenant queue on its row, locked as the definer: the application role
    -- cannot take this lock (no UPDATE on tenants), so no session can hold a tenant's
    -- reservations hostage, as it could an advisory lock. NO KEY: inserts referencing the
    -- tenant (KEY SHARE) do not wait for it.
    SELECT t.monthly_cap_cents INTO v_cap FROM tenants t WHERE t.id = NEW.tenant_id
       FOR NO KEY UPDATE;
    UPDATE llm_api_calls
       SET status = 'abandoned', cost_cents = reserved_cents, cost_is_estimate = true,
           settled_at = now(), error_type = 'lease_expired',
           error_message = 'the calling process stopped before settling; '
                           'counted at its reserved worst case'
     WHERE id IN (SELECT c.id FROM llm_api_calls c
                   WHERE c.tenant_id = NEW.tenant_id AND c.status = 'pending'
                     AND c.reservation_expires_at <= now()
                   FOR UPDATE SKIP LOCKED);
    IF v_cap IS NULL THEN
        RAISE EXCEPTION 'tenant % does not exist', NEW.tenant_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT coalesce(sum(m.total_cost_cents), 0) INTO v_spent FROM llm_monthly_costs m
     WHERE m.tenant_id = NEW.tenant_id
       AND m.month = date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    SELECT coalesce(sum(c.reserved_cents), 0) INTO v_reserved FROM llm_api_calls c
     WHERE c.tenant_id = NEW.tenant_id AND c.status = 'pending';
    IF v_spent + v_reserved + NEW.reserved_cents > v_cap THEN
        RAISE EXCEPTION 'the monthly cap leaves no room for this reservation'
            USING ERRCODE = 'LLCAP',
                  DETAIL = format('cap=%s;committed=%s;needed=%s',
                                  v_cap, v_spent + v_reserved, NEW.reserved_cents);
    END IF;
    RETURN NEW;
END
$$;
ALTER FUNCTION fn_llm_api_calls_reserve() OWNER TO {CROSSTENANT_ROLE};
-- The row lock above needs UPDATE on a column and an UPDATE policy; nothing updates the row.
GRANT UPDATE (monthly_cap_cents) ON tenants TO {CROSSTENANT_ROLE};
CREATE POLICY crosstenant_lock_policy ON tenants FOR UPDATE TO {CROSSTENANT_ROLE}
    USING (true) WITH CHECK (false);
REVOKE ALL ON FUNCTION fn_llm_api_calls_reserve() FROM PUBLIC;
CREATE TRIGGER trg_llm_api_calls_reserve BEFORE INSERT ON llm_api_calls
    FOR EACH ROW EXECUTE FUNCTION fn_llm_api_calls_reserve();
"""

# A run's recorded spend is the sum of its ledger rows (a pending row at its reservation), kept
# by this trigger alone; the run's CHECK then refuses any reservation past its ceiling.
RUN_SPEND_TRIGGER = f"""
CREATE FUNCTION fn_llm_api_calls_run_spend() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = {DEFINER_SEARCH_PATH} AS $$
DECLARE
    v_delta numeric := CASE WHEN NEW.status = 'pending' THEN NEW.reserved_cents
                            ELSE NEW.cost_cents END;
BEGIN
    {trigger_table_guard("llm_api_calls")}
    IF TG_OP = 'UPDATE' THEN
        v_delta := v_delta - CASE WHEN OLD.status = 'pending' THEN OLD.reserved_cents
                                  ELSE OLD.cost_cents END;
    END IF;
    IF v_delta = 0 THEN
        RETURN NULL;
    END IF;
    IF NEW.investigation_id IS NOT NULL THEN
        UPDATE investigations SET cost_cents = cost_cents + v_delta
         WHERE tenant_id = NEW.tenant_id AND id = NEW.investigation_id;
    END IF;
    IF NEW.budget_optimization_job_id IS NOT NULL THEN
        UPDATE budget_optimization_jobs SET cost_cents = cost_cents + v_delta
         WHERE tenant_id = NEW.tenant_id AND id = NEW.budget_optimization_job_id;
    END IF;
    RETURN NULL;
END
$$;
ALTER FUNCTION fn_llm_api_calls_run_spend() OWNER TO {CROSSTENANT_ROLE};
REVOKE ALL ON FUNCTION fn_llm_api_calls_run_spend() FROM PUBLIC;
CREATE TRIGGER trg_llm_api_calls_run_spend AFTER INSERT OR UPDATE OF status, cost_cents
    ON llm_api_calls FOR EACH ROW EXECUTE FUNCTION fn_llm_api_calls_run_spend();
"""

# Settled rows: every fact of the call is final (the anomaly and raw usage now too).
SETTLED_IMMUTABLE = """
CREATE OR REPLACE FUNCTION fn_llm_api_calls_settled_immutable() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'pending' AND (NEW.status, NEW.cost_cents, NEW.input_tokens,
            NEW.output_tokens, NEW.cost_is_estimate, NEW.model, NEW.endpoint, NEW.tenant_id,
            NEW.started_at, NEW.reserved_cents, NEW.usage_anomaly, NEW.raw_usage,
            NEW.investigation_id, NEW.budget_optimization_job_id, NEW.settled_at)
        IS DISTINCT FROM (OLD.status, OLD.cost_cents, OLD.input_tokens,
            OLD.output_tokens, OLD.cost_is_estimate, OLD.model, OLD.endpoint, OLD.tenant_id,
            OLD.started_at, OLD.reserved_cents, OLD.usage_anomaly, OLD.raw_usage,
            OLD.investigation_id, OLD.budget_optimization_job_id, OLD.settled_at) THEN
        RAISE EXCEPTION 'llm_api_calls row % is settled; its money facts are immutable', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION fn_llm_api_calls_settled_immutable() FROM PUBLIC;
"""

# 004's version, restored on downgrade.
_SETTLED_IMMUTABLE_004 = """
CREATE OR REPLACE FUNCTION fn_llm_api_calls_settled_immutable() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'pending' AND (NEW.status, NEW.cost_cents, NEW.input_tokens, NEW.output_tokens,
            NEW.cost_is_estimate, NEW.model, NEW.endpoint, NEW.tenant_id, NEW.started_at)
        IS DISTINCT FROM (OLD.status, OLD.cost_cents, OLD.input_tokens, OLD.output_tokens,
            OLD.cost_is_estimate, OLD.model, OLD.endpoint, OLD.tenant_id, OLD.started_at) THEN
        RAISE EXCEPTION 'llm_api_calls row % is settled; its money facts are immutable', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
"""


def upgrade() -> None:
    op.execute(CLOSE_DATABASE)
    op.execute(LEDGER_COLUMNS)
    op.execute(SETTLED_IMMUTABLE)
    op.execute(RESERVE_TRIGGER)
    op.execute(RUN_SPEND_TRIGGER)
    op.execute(CLOSE_FUNCTIONS)


def downgrade() -> None:
    op.execute(
        f"""
        DROP TRIGGER trg_llm_api_calls_run_spend ON llm_api_calls;
        DROP FUNCTION fn_llm_api_calls_run_spend();
        DROP TRIGGER trg_llm_api_calls_reserve ON llm_api_calls;
        DROP FUNCTION fn_llm_api_calls_reserve();
        DROP POLICY crosstenant_lock_policy ON tenants;
        REVOKE UPDATE (monthly_cap_cents) ON tenants FROM {CROSSTENANT_ROLE};
        GRANT EXECUTE ON FUNCTION fn_purge_llm_call_prompts(timestamptz, integer),
            fn_purge_llm_validation_payloads(timestamptz, integer) TO {APP_ROLE};
        {_SETTLED_IMMUTABLE_004}
        ALTER TABLE llm_api_calls DROP CONSTRAINT ck_llm_api_calls_within_reservation,
            DROP COLUMN raw_usage, DROP COLUMN usage_anomaly;
        GRANT INSERT, UPDATE ON llm_api_calls, investigations, budget_optimization_jobs
            TO {APP_ROLE};
        ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO PUBLIC;
        REVOKE EXECUTE ON FUNCTION fn_breakdown_add(jsonb, text, numeric, bigint, bigint),
            fn_normalize_json_key(text), fn_is_personal_key(text), fn_jsonb_personal_paths(jsonb)
            FROM {CROSSTENANT_ROLE};
        REVOKE EXECUTE ON FUNCTION fn_normalize_json_key(text), fn_is_personal_key(text),
            fn_jsonb_personal_paths(jsonb) FROM {APP_ROLE};
        GRANT CREATE ON SCHEMA public TO PUBLIC;
        DO $$
        BEGIN
            EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO PUBLIC', current_database());
            GRANT EXECUTE ON FUNCTION pg_catalog.lo_create(oid), pg_catalog.lo_creat(integer),
                pg_catalog.lo_from_bytea(oid, bytea), pg_catalog.lo_import(text),
                pg_catalog.lo_import(text, oid) TO PUBLIC;
        EXCEPTION WHEN insufficient_privilege THEN
            NULL;
        END
        $$;
        """
    )
    # Invoker functions go back to PUBLIC, as they were created; definers stay closed (004 closed
    # all but one of them itself, and reopening that hole would help nobody) and keep their
    # pinned search_path (the earlier revisions create them pinned).
    op.execute(
        f"""
        DO $$
        DECLARE
            f record;
        BEGIN
            FOR f IN {_OUR_FUNCTIONS} AND NOT p.prosecdef LOOP
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f.signature);
            END LOOP;
        END
        $$;
        """
    )
