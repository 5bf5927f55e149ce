"""LLM subsystem: the call ledger, monthly costs, investigations, cache, jobs, validation quarantine.

Revision ID: 004_llm_subsystem
Revises: 003_data_governance
Create Date: 2026-11-25
"""

from alembic import op
from sqlhelpers import (
    APP_ROLE,
    CROSSTENANT_ROLE,
    DEFINER_SEARCH_PATH,
    crosstenant_policy,
    tenant_rls,
    trigger_table_guard,
    updated_at_trigger,
)

revision = "004_llm_subsystem"
down_revision = "003_data_governance"
branch_labels = None
depends_on = None

# Money is NUMERIC(20,10) cents: a one-token call of the cheapest model is not zero.
MONEY = "numeric(20, 10)"
RUN_STATES = (
    "('queued', 'running', 'succeeded', 'budget_exhausted', 'timed_out', 'failed', 'cancelled')"
)

CAP = f"""
CREATE EXTENSION IF NOT EXISTS vector;

ALTER TABLE tenants ADD COLUMN monthly_cap_cents {MONEY} NOT NULL DEFAULT 2000
    CONSTRAINT ck_tenants_monthly_cap CHECK (monthly_cap_cents >= 0);
COMMENT ON COLUMN tenants.monthly_cap_cents IS
    'The most this tenant may spend on LLM calls in a calendar month (UTC), in cents.';
"""

LEDGER = f"""
CREATE TABLE llm_api_calls (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    request_id text NOT NULL,
    endpoint text NOT NULL CONSTRAINT ck_llm_api_calls_endpoint
        CHECK (endpoint IN ('explanations', 'investigations', 'budget_optimizations', 'embeddings')),
    model text NOT NULL,
    provider text NOT NULL,
    attempt integer NOT NULL DEFAULT 1 CONSTRAINT ck_llm_api_calls_attempt CHECK (attempt >= 1),
    status text NOT NULL DEFAULT 'pending' CONSTRAINT ck_llm_api_calls_status CHECK (status IN
        ('pending', 'succeeded', 'failed', 'timed_out', 'cancelled', 'abandoned')),
    reserved_cents {MONEY} NOT NULL CONSTRAINT ck_llm_api_calls_reserved CHECK (reserved_cents >= 0),
    reservation_expires_at timestamptz NOT NULL,
    max_tokens integer CONSTRAINT ck_llm_api_calls_max_tokens CHECK (max_tokens > 0),
    input_tokens integer CONSTRAINT ck_llm_api_calls_input_tokens CHECK (input_tokens >= 0),
    output_tokens integer CONSTRAINT ck_llm_api_calls_output_tokens CHECK (output_tokens >= 0),
    cost_cents {MONEY} NOT NULL DEFAULT 0 CONSTRAINT ck_llm_api_calls_cost CHECK (cost_cents >= 0),
    cost_is_estimate boolean NOT NULL DEFAULT false,
    latency_ms integer CONSTRAINT ck_llm_api_calls_latency CHECK (latency_ms >= 0),
    was_cached boolean NOT NULL DEFAULT false,
    provider_request_id text,
    error_type text,
    error_message text,
    investigation_id uuid,
    budget_optimization_job_id uuid,
    request_metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    started_at timestamptz NOT NULL DEFAULT now(),
    settled_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_llm_api_calls_request UNIQUE (tenant_id, endpoint, request_id),
    CONSTRAINT ck_llm_api_calls_settled CHECK ((status = 'pending') = (settled_at IS NULL))
);
COMMENT ON TABLE llm_api_calls IS
    'One row per provider attempt, written before the call (pending, with its reserved worst case) '
    'and settled after. Data class: billing, prompts only in request_metadata. Owner: LLM gateway. '
    'RLS: enabled and forced (tenant_isolation_policy).';
CREATE INDEX idx_llm_calls_tenant_endpoint ON llm_api_calls (tenant_id, endpoint, created_at DESC);
CREATE INDEX idx_llm_calls_pending ON llm_api_calls (tenant_id, reservation_expires_at)
    WHERE status = 'pending';
CREATE INDEX idx_llm_calls_investigation ON llm_api_calls (tenant_id, investigation_id)
    WHERE investigation_id IS NOT NULL;
CREATE INDEX idx_llm_calls_tenant_started ON llm_api_calls (tenant_id, started_at);
CREATE INDEX idx_llm_calls_budget_job ON llm_api_calls (tenant_id, budget_optimization_job_id)
    WHERE budget_optimization_job_id IS NOT NULL;
{tenant_rls("llm_api_calls", app_privileges="SELECT, INSERT, UPDATE")}
{crosstenant_policy("llm_api_calls", privileges="SELECT, UPDATE")}

-- Money facts of a settled call never change again.
CREATE FUNCTION fn_llm_api_calls_settled_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
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
CREATE TRIGGER trg_llm_api_calls_settled_immutable BEFORE UPDATE ON llm_api_calls
    FOR EACH ROW EXECUTE FUNCTION fn_llm_api_calls_settled_immutable();

CREATE TABLE llm_monthly_costs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    month date NOT NULL CONSTRAINT ck_llm_monthly_costs_month CHECK (extract(day FROM month) = 1),
    total_cost_cents {MONEY} NOT NULL DEFAULT 0 CONSTRAINT ck_llm_monthly_costs_total CHECK (total_cost_cents >= 0),
    estimated_cost_cents {MONEY} NOT NULL DEFAULT 0,
    total_calls bigint NOT NULL DEFAULT 0,
    total_input_tokens bigint NOT NULL DEFAULT 0,
    total_output_tokens bigint NOT NULL DEFAULT 0,
    model_breakdown jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    endpoint_breakdown jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_llm_monthly_costs_tenant_month UNIQUE (tenant_id, month)
);
COMMENT ON TABLE llm_monthly_costs IS
    'What finance reviews: per tenant and UTC month, the exact sum of its settled calls, by model '
    'and endpoint. Written only by the ledger trigger. Data class: billing. Owner: finance. RLS: '
    'enabled and forced (tenant_isolation_policy); the application may only read it.';
{tenant_rls("llm_monthly_costs", app_privileges="SELECT")}
{crosstenant_policy("llm_monthly_costs", privileges="SELECT, INSERT, UPDATE")}

CREATE FUNCTION fn_breakdown_add(p_breakdown jsonb, p_key text, p_cost {MONEY},
                                 p_input bigint, p_output bigint) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_breakdown || jsonb_build_object(p_key, jsonb_build_object(
        'calls', coalesce((p_breakdown -> p_key ->> 'calls')::bigint, 0) + 1,
        'cost_cents', coalesce((p_breakdown -> p_key ->> 'cost_cents')::numeric, 0) + p_cost,
        'input_tokens', coalesce((p_breakdown -> p_key ->> 'input_tokens')::bigint, 0) + p_input,
        'output_tokens', coalesce((p_breakdown -> p_key ->> 'output_tokens')::bigint, 0) + p_output))
$$;

-- The monthly row moves in the same transaction as the call is settled, never otherwise.
CREATE FUNCTION fn_llm_api_calls_rollup() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = {DEFINER_SEARCH_PATH} AS $$
DECLARE
    v_month date := date_trunc('month', NEW.started_at AT TIME ZONE 'UTC')::date;
    v_in bigint := coalesce(NEW.input_tokens, 0);
    v_out bigint := coalesce(NEW.output_tokens, 0);
BEGIN
    {trigger_table_guard("llm_api_calls")}
    IF NEW.status = 'pending' OR (TG_OP = 'UPDATE' AND OLD.status <> 'pending') THEN
        RETURN NULL;
    END IF;
    INSERT INTO llm_monthly_costs AS m (tenant_id, month, total_cost_cents, estimated_cost_cents,
        total_calls, total_input_tokens, total_output_tokens, model_breakdown, endpoint_breakdown)
    VALUES (NEW.tenant_id, v_month, NEW.cost_cents,
            CASE WHEN NEW.cost_is_estimate THEN NEW.cost_cents ELSE 0 END, 1, v_in, v_out,
            fn_breakdown_add('{{}}'::jsonb, NEW.model, NEW.cost_cents, v_in, v_out),
            fn_breakdown_add('{{}}'::jsonb, NEW.endpoint, NEW.cost_cents, v_in, v_out))
    ON CONFLICT (tenant_id, month) DO UPDATE SET
        total_cost_cents = m.total_cost_cents + EXCLUDED.total_cost_cents,
        estimated_cost_cents = m.estimated_cost_cents + EXCLUDED.estimated_cost_cents,
        total_calls = m.total_calls + 1,
        total_input_tokens = m.total_input_tokens + v_in,
        total_output_tokens = m.total_output_tokens + v_out,
        model_breakdown = fn_breakdown_add(m.model_breakdown, NEW.model, NEW.cost_cents, v_in, v_out),
        endpoint_breakdown = fn_breakdown_add(m.endpoint_breakdown, NEW.endpoint, NEW.cost_cents, v_in, v_out),
        updated_at = now();
    RETURN NULL;
END
$$;
ALTER FUNCTION fn_llm_api_calls_rollup() OWNER TO {CROSSTENANT_ROLE};
REVOKE ALL ON FUNCTION fn_llm_api_calls_rollup() FROM PUBLIC;
CREATE TRIGGER trg_llm_api_calls_rollup AFTER INSERT OR UPDATE OF status ON llm_api_calls
    FOR EACH ROW EXECUTE FUNCTION fn_llm_api_calls_rollup();
"""

LEDGER_FUNCTIONS = f"""
-- A reservation whose process died is settled at its reserved worst case (flagged as an
-- estimate: the provider may have billed it), so it stops blocking and money stays counted.
CREATE FUNCTION fn_sweep_expired_llm_reservations() RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    UPDATE llm_api_calls
       SET status = 'abandoned', cost_cents = reserved_cents, cost_is_estimate = true,
           settled_at = now(), error_type = 'lease_expired',
           error_message = 'the calling process stopped before settling; counted at its reserved worst case'
     WHERE id IN (SELECT c.id FROM llm_api_calls c
                   WHERE c.status = 'pending' AND c.reservation_expires_at <= now()
                   -- A row some transaction holds (its settle in flight, or a session holding
                   -- it on purpose) is left for the next round, not waited for.
                   FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
ALTER FUNCTION fn_sweep_expired_llm_reservations() OWNER TO {CROSSTENANT_ROLE};
REVOKE ALL ON FUNCTION fn_sweep_expired_llm_reservations() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fn_sweep_expired_llm_reservations() TO {APP_ROLE};

-- Every monthly row against the sum of its settled calls, across tenants (finance's proof).
CREATE FUNCTION fn_reconcile_monthly_costs(p_month date DEFAULT NULL)
    RETURNS TABLE (tenant_id uuid, month date, recorded_cost_cents numeric,
                   computed_cost_cents numeric, recorded_calls bigint, computed_calls bigint,
                   breakdowns_match boolean)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    WITH settled AS (
        SELECT c.tenant_id, date_trunc('month', c.started_at AT TIME ZONE 'UTC')::date AS month,
               c.model, c.endpoint, c.cost_cents, c.cost_is_estimate,
               coalesce(c.input_tokens, 0) AS input_tokens,
               coalesce(c.output_tokens, 0) AS output_tokens
        FROM llm_api_calls c
        WHERE c.status <> 'pending'
          AND (p_month IS NULL OR date_trunc('month', c.started_at AT TIME ZONE 'UTC')::date = p_month)
    ),
    by_key AS (
        SELECT s.tenant_id, s.month, k.kind, k.key, count(*) AS calls, sum(s.cost_cents) AS cost,
               sum(s.cost_cents) FILTER (WHERE s.cost_is_estimate) AS estimated,
               sum(s.input_tokens) AS input_tokens, sum(s.output_tokens) AS output_tokens
        FROM settled s CROSS JOIN LATERAL (VALUES ('model', s.model), ('endpoint', s.endpoint)) k(kind, key)
        GROUP BY 1, 2, 3, 4
    ),
    computed AS (
        SELECT b.tenant_id, b.month,
               sum(b.cost) FILTER (WHERE b.kind = 'model') AS cost,
               sum(b.calls) FILTER (WHERE b.kind = 'model')::bigint AS calls,
               sum(b.estimated) FILTER (WHERE b.kind = 'model') AS estimated,
               sum(b.input_tokens) FILTER (WHERE b.kind = 'model') AS input_tokens,
               sum(b.output_tokens) FILTER (WHERE b.kind = 'model') AS output_tokens,
               jsonb_object_agg(b.key, jsonb_build_object('calls', b.calls, 'cost_cents', b.cost,
                   'input_tokens', b.input_tokens, 'output_tokens', b.output_tokens))
                   FILTER (WHERE b.kind = 'model') AS models,
               jsonb_object_agg(b.key, jsonb_build_object('calls', b.calls, 'cost_cents', b.cost,
                   'input_tokens', b.input_tokens, 'output_tokens', b.output_tokens))
                   FILTER (WHERE b.kind = 'endpoint') AS endpoints
        FROM by_key b GROUP BY 1, 2
    ),
    recorded AS (
        SELECT m.* FROM llm_monthly_costs m WHERE p_month IS NULL OR m.month = p_month
    )
    SELECT coalesce(r.tenant_id, c.tenant_id), coalesce(r.month, c.month),
           coalesce(r.total_cost_cents, 0), coalesce(c.cost, 0),
           coalesce(r.total_calls, 0), coalesce(c.calls, 0),
           coalesce(r.estimated_cost_cents, 0) = coalesce(c.estimated, 0)
             AND coalesce(r.total_input_tokens, 0) = coalesce(c.input_tokens, 0)
             AND coalesce(r.total_output_tokens, 0) = coalesce(c.output_tokens, 0)
             AND coalesce(r.model_breakdown, '{{}}'::jsonb) = coalesce(c.models, '{{}}'::jsonb)
             AND coalesce(r.endpoint_breakdown, '{{}}'::jsonb) = coalesce(c.endpoints, '{{}}'::jsonb)
    FROM recorded r FULL JOIN computed c ON c.tenant_id = r.tenant_id AND c.month = r.month
    ORDER BY 2, 1
$$;
ALTER FUNCTION fn_reconcile_monthly_costs(date) OWNER TO {CROSSTENANT_ROLE};
REVOKE ALL ON FUNCTION fn_reconcile_monthly_costs(date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fn_reconcile_monthly_costs(date) TO {APP_ROLE};
"""

RUNS = f"""
CREATE TABLE investigations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    question text NOT NULL CONSTRAINT ck_investigations_question
        CHECK (btrim(question) <> '' AND length(question) <= 4000),
    status text NOT NULL DEFAULT 'queued' CONSTRAINT ck_investigations_status CHECK (status IN {RUN_STATES}),
    reason text,
    degraded boolean NOT NULL DEFAULT false,
    -- The hard limits, recorded per run: at most $0.30 and 60 s, a request may ask for less.
    max_cost_cents {MONEY} NOT NULL DEFAULT 30
        CONSTRAINT ck_investigations_max_cost CHECK (max_cost_cents > 0 AND max_cost_cents <= 30),
    timeout_ms integer NOT NULL DEFAULT 60000
        CONSTRAINT ck_investigations_timeout CHECK (timeout_ms > 0 AND timeout_ms <= 60000),
    max_steps integer NOT NULL DEFAULT 12 CONSTRAINT ck_investigations_max_steps CHECK (max_steps BETWEEN 1 AND 50),
    cost_cents {MONEY} NOT NULL DEFAULT 0 CONSTRAINT ck_investigations_cost CHECK (cost_cents >= 0),
    elapsed_ms integer CONSTRAINT ck_investigations_elapsed CHECK (elapsed_ms >= 0),
    result jsonb,
    idempotency_key text,
    attempts integer NOT NULL DEFAULT 0,
    lease_owner text,
    lease_expires_at timestamptz,
    heartbeat_at timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    queued_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_investigations_tenant_id UNIQUE (tenant_id, id),
    -- The database itself refuses a run whose recorded spend passes its ceiling.
    CONSTRAINT ck_investigations_within_ceiling CHECK (cost_cents <= max_cost_cents)
);
COMMENT ON TABLE investigations IS
    'Bounded agent runs, and the queue workers claim them from. Data class: analyst questions and '
    'findings. Owner: investigations. RLS: enabled and forced (tenant_isolation_policy).';
CREATE UNIQUE INDEX uq_investigations_idempotency ON investigations (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX idx_investigations_queue ON investigations (queued_at) WHERE status = 'queued';
CREATE INDEX idx_investigations_leases ON investigations (lease_expires_at) WHERE status = 'running';
CREATE INDEX idx_investigations_tenant ON investigations (tenant_id, created_at DESC);
{tenant_rls("investigations", app_privileges="SELECT, INSERT, UPDATE")}
{updated_at_trigger("investigations")}

CREATE TABLE investigation_tool_calls (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    investigation_id uuid NOT NULL,
    step integer NOT NULL DEFAULT 0,
    tool_name text NOT NULL,
    input_params jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    output jsonb,
    output_truncated boolean NOT NULL DEFAULT false,
    duration_ms integer CONSTRAINT ck_investigation_tool_calls_duration CHECK (duration_ms >= 0),
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT fk_investigation_tool_calls_investigation FOREIGN KEY (tenant_id, investigation_id)
        REFERENCES investigations (tenant_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE investigation_tool_calls IS
    'Every tool call of an investigation: name, arguments, (capped) result, duration, error. Data '
    'class: derived business data, PII-redacted. Owner: investigations. RLS: enabled and forced.';
CREATE INDEX idx_investigation_tool_calls_run ON investigation_tool_calls (tenant_id, investigation_id, created_at);
{tenant_rls("investigation_tool_calls", app_privileges="SELECT, INSERT")}

CREATE TABLE budget_optimization_jobs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    status text NOT NULL DEFAULT 'queued' CONSTRAINT ck_budget_optimization_jobs_status CHECK (status IN {RUN_STATES}),
    reason text,
    degraded boolean NOT NULL DEFAULT false,
    params jsonb NOT NULL,
    recommendations jsonb,
    rationale text,
    max_cost_cents {MONEY} NOT NULL DEFAULT 30
        CONSTRAINT ck_budget_optimization_jobs_max_cost CHECK (max_cost_cents > 0 AND max_cost_cents <= 30),
    cost_cents {MONEY} NOT NULL DEFAULT 0 CONSTRAINT ck_budget_optimization_jobs_cost CHECK (cost_cents >= 0),
    idempotency_key text,
    attempts integer NOT NULL DEFAULT 0,
    lease_owner text,
    lease_expires_at timestamptz,
    heartbeat_at timestamptz,
    queued_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_budget_optimization_jobs_within_ceiling CHECK (cost_cents <= max_cost_cents)
);
COMMENT ON TABLE budget_optimization_jobs IS
    'Budget reallocation jobs on the same queue as investigations. Data class: business plans. '
    'Owner: investigations. RLS: enabled and forced (tenant_isolation_policy).';
CREATE UNIQUE INDEX uq_budget_optimization_jobs_idempotency ON budget_optimization_jobs
    (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX idx_budget_optimization_jobs_queue ON budget_optimization_jobs (queued_at) WHERE status = 'queued';
CREATE INDEX idx_budget_optimization_jobs_leases ON budget_optimization_jobs (lease_expires_at)
    WHERE status = 'running';
CREATE INDEX idx_budget_optimization_jobs_tenant ON budget_optimization_jobs (tenant_id, created_at DESC);
{tenant_rls("budget_optimization_jobs", app_privileges="SELECT, INSERT, UPDATE")}
{updated_at_trigger("budget_optimization_jobs")}
"""

QUEUE = f"""
CREATE TABLE investigation_events (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    investigation_id uuid NOT NULL,
    event_type text NOT NULL CONSTRAINT ck_investigation_events_type CHECK (event_type IN
        ('queued', 'started', 'step', 'tool_call', 'llm_call', 'note', 'final')),
    data jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT fk_investigation_events_investigation FOREIGN KEY (tenant_id, investigation_id)
        REFERENCES investigations (tenant_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE investigation_events IS
    'Progress of each investigation, in order, for server-sent events across processes. Data '
    'class: derived, PII-redacted. Owner: investigations. RLS: enabled and forced.';
CREATE INDEX idx_investigation_events_run ON investigation_events (tenant_id, investigation_id, seq);
{tenant_rls("investigation_events", app_privileges="SELECT, INSERT")}
GRANT USAGE ON SEQUENCE investigation_events_seq_seq TO {APP_ROLE};

{crosstenant_policy("investigations", privileges="SELECT, UPDATE")}
{crosstenant_policy("budget_optimization_jobs", privileges="SELECT, UPDATE")}

-- The queue: claim the next run (first any whose worker died, then the oldest queued), across
-- every tenant, with SKIP LOCKED so any number of workers never claim the same row.
CREATE FUNCTION fn_claim_next_run(
    p_worker text, p_lease_seconds double precision, p_running uuid[] DEFAULT '{{}}')
    RETURNS TABLE (kind text, run_id uuid, tenant_id uuid, takeover boolean)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    v_id uuid;
    v_takeover boolean;
BEGIN
    -- A lease is seconds to an hour: a caller cannot hold another tenant's run for years.
    IF p_lease_seconds IS NULL OR NOT (p_lease_seconds > 0 AND p_lease_seconds <= 3600)
       OR p_worker IS NULL OR length(p_worker) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'a claim needs a worker name (1-200 characters) and a lease of (0, 3600] s'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_takeover IN SELECT unnest(ARRAY[true, false]) LOOP
        SELECT i.id INTO v_id FROM investigations i
         -- A worker never takes over a run it is still executing (p_running: a late heartbeat
         -- is not a dead worker), but does take over its own runs it no longer executes: one
         -- whose claim's answer was lost with the connection, or whose end could not be
         -- recorded during a database outage.
         WHERE CASE WHEN v_takeover THEN i.status = 'running' AND i.lease_expires_at < now()
                                         AND (i.lease_owner IS DISTINCT FROM p_worker
                                              OR i.id <> ALL (p_running))
                    ELSE i.status = 'queued' END
         ORDER BY i.queued_at LIMIT 1 FOR UPDATE SKIP LOCKED;
        IF v_id IS NOT NULL THEN
            RETURN QUERY UPDATE investigations i
                SET status = 'running', lease_owner = p_worker, heartbeat_at = now(),
                    lease_expires_at = now() + make_interval(secs => p_lease_seconds),
                    attempts = i.attempts + 1, started_at = coalesce(i.started_at, now())
              WHERE i.id = v_id
              RETURNING 'investigation'::text, i.id, i.tenant_id, v_takeover;
            RETURN;
        END IF;
        SELECT j.id INTO v_id FROM budget_optimization_jobs j
         WHERE CASE WHEN v_takeover THEN j.status = 'running' AND j.lease_expires_at < now()
                                         AND (j.lease_owner IS DISTINCT FROM p_worker
                                              OR j.id <> ALL (p_running))
                    ELSE j.status = 'queued' END
         ORDER BY j.queued_at LIMIT 1 FOR UPDATE SKIP LOCKED;
        IF v_id IS NOT NULL THEN
            RETURN QUERY UPDATE budget_optimization_jobs j
                SET status = 'running', lease_owner = p_worker, heartbeat_at = now(),
                    lease_expires_at = now() + make_interval(secs => p_lease_seconds),
                    attempts = j.attempts + 1, started_at = coalesce(j.started_at, now())
              WHERE j.id = v_id
              RETURNING 'budget_optimization'::text, j.id, j.tenant_id, v_takeover;
            RETURN;
        END IF;
    END LOOP;
END
$$;
ALTER FUNCTION fn_claim_next_run(text, double precision, uuid[]) OWNER TO {CROSSTENANT_ROLE};
REVOKE ALL ON FUNCTION fn_claim_next_run(text, double precision, uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fn_claim_next_run(text, double precision, uuid[]) TO {APP_ROLE};

-- How deep the queue is, for metrics and readiness (counts only, no tenant data).
CREATE FUNCTION fn_queue_depth() RETURNS TABLE (kind text, status text, runs bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT 'investigation', status, count(*) FROM investigations
     WHERE status IN ('queued', 'running') GROUP BY status
    UNION ALL
    SELECT 'budget_optimization', status, count(*) FROM budget_optimization_jobs
     WHERE status IN ('queued', 'running') GROUP BY status
$$;
ALTER FUNCTION fn_queue_depth() OWNER TO {CROSSTENANT_ROLE};
REVOKE ALL ON FUNCTION fn_queue_depth() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fn_queue_depth() TO {APP_ROLE};
"""

CACHE = f"""
CREATE TABLE explanation_cache (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    entity_type text NOT NULL,
    -- sha256 of the exact structured scope: subject, parameters, model, prompt version.
    scope_key text NOT NULL CONSTRAINT ck_explanation_cache_scope_key CHECK (scope_key ~ '^[0-9a-f]{{64}}$'),
    scope jsonb NOT NULL,
    -- '' = no free text: such an entry has no vector and matches only requests without one.
    question text NOT NULL DEFAULT '',
    question_embedding vector,
    embedding_model text NOT NULL,
    embedding_dim integer CONSTRAINT ck_explanation_cache_embedding_dim CHECK (embedding_dim > 0),
    explanation jsonb NOT NULL,
    citations jsonb NOT NULL DEFAULT '[]'::jsonb,
    model text NOT NULL,
    prompt_version text NOT NULL,
    data_fingerprint text NOT NULL,
    cost_cents {MONEY} NOT NULL DEFAULT 0 CONSTRAINT ck_explanation_cache_cost CHECK (cost_cents >= 0),
    cache_hit_count bigint NOT NULL DEFAULT 0,
    last_hit_at timestamptz,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_explanation_cache_vector_dim CHECK (question_embedding IS NULL
        OR (embedding_dim IS NOT NULL AND vector_dims(question_embedding) = embedding_dim)),
    CONSTRAINT ck_explanation_cache_question_embedding CHECK (
        (question = '') = (question_embedding IS NULL))
);
COMMENT ON TABLE explanation_cache IS
    'Explanations served to dashboards. An entry matches only its exact scope and current data '
    'fingerprint, before expiry; the question is matched by embedding among those. Data class: '
    'derived business data. Owner: explanations. RLS: enabled and forced.';
CREATE INDEX idx_explanation_cache_scope ON explanation_cache
    (tenant_id, scope_key, embedding_model, data_fingerprint, expires_at DESC);
CREATE INDEX idx_explanation_cache_expiry ON explanation_cache (expires_at);
-- HNSW needs one dimension: one partial expression index per embedding model in use.
CREATE INDEX idx_explanation_cache_embedding_local ON explanation_cache
    USING hnsw ((question_embedding::vector(384)) vector_cosine_ops)
    WHERE embedding_model = 'local/all-MiniLM-L6-v2-int8';
{tenant_rls("explanation_cache")}
{crosstenant_policy("explanation_cache", privileges="SELECT, UPDATE, DELETE")}
-- Expired entries of every tenant, one batch per call (each call its own short transaction when
-- run outside one); SKIP LOCKED never waits for a row a hit-counter flush is updating.
CREATE FUNCTION fn_purge_expired_explanation_cache(p_batch_size integer) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    IF p_batch_size IS NULL OR p_batch_size < 1 OR p_batch_size > 100000 THEN
        RAISE EXCEPTION 'batch size must be between 1 and 100000, not %', p_batch_size
            USING ERRCODE = '22023';
    END IF;
    DELETE FROM explanation_cache
     WHERE id IN (SELECT id FROM explanation_cache WHERE expires_at <= now()
                  ORDER BY expires_at LIMIT p_batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
ALTER FUNCTION fn_purge_expired_explanation_cache(integer) OWNER TO {CROSSTENANT_ROLE};
REVOKE ALL ON FUNCTION fn_purge_expired_explanation_cache(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fn_purge_expired_explanation_cache(integer) TO {APP_ROLE};

CREATE TABLE llm_validation_failures (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    endpoint text NOT NULL,
    model text,
    llm_api_call_id uuid,
    validation_error text NOT NULL,
    request_payload jsonb,
    response_payload text,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE llm_validation_failures IS
    'Quarantine of model output that failed validation. Data class: model output (PII-redacted '
    'prompts). Owner: LLM gateway. RLS: enabled and forced (tenant_isolation_policy).';
CREATE INDEX idx_llm_validation_failures_tenant ON llm_validation_failures (tenant_id, created_at DESC);
{tenant_rls("llm_validation_failures", app_privileges="SELECT, INSERT")}
"""


FINANCE = f"""
-- Finance reads every tenant's month through two narrow definer functions, never a superuser:
-- the recorded totals, breakdowns and cap of each tenant, and settled spend per day and model.
CREATE INDEX idx_llm_calls_started ON llm_api_calls (started_at);

CREATE FUNCTION fn_finance_monthly_costs(p_month date)
    RETURNS TABLE (tenant_id uuid, tenant_name text, total_cost_cents numeric,
                   estimated_cost_cents numeric, calls bigint, input_tokens bigint,
                   output_tokens bigint, model_breakdown jsonb, endpoint_breakdown jsonb,
                   monthly_cap_cents numeric)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF p_month IS NULL OR extract(day FROM p_month) <> 1 THEN
        RAISE EXCEPTION 'month must be the first day of a month, not %', p_month
            USING ERRCODE = '22023';
    END IF;
    -- Every tenant that existed in the month or spent in it; no spend reads as zero.
    RETURN QUERY
    SELECT t.id, t.name, coalesce(m.total_cost_cents, 0), coalesce(m.estimated_cost_cents, 0),
           coalesce(m.total_calls, 0), coalesce(m.total_input_tokens, 0),
           coalesce(m.total_output_tokens, 0), coalesce(m.model_breakdown, '{{}}'::jsonb),
           coalesce(m.endpoint_breakdown, '{{}}'::jsonb), t.monthly_cap_cents
      FROM tenants t
      LEFT JOIN llm_monthly_costs m ON m.tenant_id = t.id AND m.month = p_month
     WHERE m.id IS NOT NULL OR t.created_at < (p_month + interval '1 month') AT TIME ZONE 'UTC'
     ORDER BY coalesce(m.total_cost_cents, 0) DESC, t.id;
END
$$;
ALTER FUNCTION fn_finance_monthly_costs(date) OWNER TO {CROSSTENANT_ROLE};
REVOKE ALL ON FUNCTION fn_finance_monthly_costs(date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fn_finance_monthly_costs(date) TO {APP_ROLE};

CREATE FUNCTION fn_finance_daily_costs(p_month date)
    RETURNS TABLE (day date, tenant_id uuid, model text, cost_cents numeric, calls bigint)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF p_month IS NULL OR extract(day FROM p_month) <> 1 THEN
        RAISE EXCEPTION 'month must be the first day of a month, not %', p_month
            USING ERRCODE = '22023';
    END IF;
    -- Settled calls only, by the UTC day they started (the day the monthly roll-up uses).
    RETURN QUERY
    SELECT (c.started_at AT TIME ZONE 'UTC')::date, c.tenant_id, c.model, sum(c.cost_cents),
           count(*)
      FROM llm_api_calls c
     WHERE c.status <> 'pending'
       AND c.started_at >= p_month::timestamp AT TIME ZONE 'UTC'
       AND c.started_at < (p_month + interval '1 month') AT TIME ZONE 'UTC'
     GROUP BY 1, 2, 3
     ORDER BY 1, 2, 3;
END
$$;
ALTER FUNCTION fn_finance_daily_costs(date) OWNER TO {CROSSTENANT_ROLE};
REVOKE ALL ON FUNCTION fn_finance_daily_costs(date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fn_finance_daily_costs(date) TO {APP_ROLE};
"""

RETENTION = f"""
-- Retention: prompt and response text older than a cutoff leaves the ledger and the validation
-- quarantine, one batch per call (SKIP LOCKED: never waits for a call being settled). Money
-- columns and every other fact of a row stay; the cutoff must be at least a day in the past.
CREATE INDEX idx_llm_calls_prompt_retention ON llm_api_calls (created_at)
    WHERE request_metadata ?| ARRAY['prompt', 'response'];
CREATE FUNCTION fn_purge_llm_call_prompts(p_before timestamptz, p_batch_size integer)
    RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    IF p_before IS NULL OR p_before > now() - interval '1 day' THEN
        RAISE EXCEPTION 'the retention cutoff must be at least a day in the past, not %', p_before
            USING ERRCODE = '22023';
    END IF;
    IF p_batch_size IS NULL OR p_batch_size < 1 OR p_batch_size > 100000 THEN
        RAISE EXCEPTION 'batch size must be between 1 and 100000, not %', p_batch_size
            USING ERRCODE = '22023';
    END IF;
    UPDATE llm_api_calls c
       SET request_metadata = (c.request_metadata - ARRAY['prompt', 'response'])
                              || '{{"purged": true}}'::jsonb
     WHERE c.id IN (SELECT p.id FROM llm_api_calls p
                     WHERE p.request_metadata ?| ARRAY['prompt', 'response']
                       AND p.created_at < p_before
                     ORDER BY p.created_at LIMIT p_batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
ALTER FUNCTION fn_purge_llm_call_prompts(timestamptz, integer) OWNER TO {CROSSTENANT_ROLE};
REVOKE ALL ON FUNCTION fn_purge_llm_call_prompts(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fn_purge_llm_call_prompts(timestamptz, integer) TO {APP_ROLE};

CREATE INDEX idx_llm_validation_failures_retention ON llm_validation_failures (created_at)
    WHERE request_payload IS NOT NULL OR response_payload IS NOT NULL;
{crosstenant_policy("llm_validation_failures", privileges="SELECT, UPDATE")}
CREATE FUNCTION fn_purge_llm_validation_payloads(p_before timestamptz, p_batch_size integer)
    RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    IF p_before IS NULL OR p_before > now() - interval '1 day' THEN
        RAISE EXCEPTION 'the retention cutoff must be at least a day in the past, not %', p_before
            USING ERRCODE = '22023';
    END IF;
    IF p_batch_size IS NULL OR p_batch_size < 1 OR p_batch_size > 100000 THEN
        RAISE EXCEPTION 'batch size must be between 1 and 100000, not %', p_batch_size
            USING ERRCODE = '22023';
    END IF;
    UPDATE llm_validation_failures f SET request_payload = NULL, response_payload = NULL
     WHERE f.id IN (SELECT v.id FROM llm_validation_failures v
                     WHERE (v.request_payload IS NOT NULL OR v.response_payload IS NOT NULL)
                       AND v.created_at < p_before
                     ORDER BY v.created_at LIMIT p_batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
ALTER FUNCTION fn_purge_llm_validation_payloads(timestamptz, integer) OWNER TO {CROSSTENANT_ROLE};
REVOKE ALL ON FUNCTION fn_purge_llm_validation_payloads(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fn_purge_llm_validation_payloads(timestamptz, integer) TO {APP_ROLE};
"""

DROP_FINANCE_AND_RETENTION = f"""
DROP FUNCTION fn_purge_llm_validation_payloads(timestamptz, integer);
DROP POLICY crosstenant_policy ON llm_validation_failures;
REVOKE ALL ON llm_validation_failures FROM {CROSSTENANT_ROLE};
DROP INDEX idx_llm_validation_failures_retention;
DROP FUNCTION fn_purge_llm_call_prompts(timestamptz, integer);
DROP INDEX idx_llm_calls_prompt_retention;
DROP FUNCTION fn_finance_daily_costs(date);
DROP FUNCTION fn_finance_monthly_costs(date);
DROP INDEX idx_llm_calls_started;
"""


def upgrade() -> None:
    op.execute(CAP)
    op.execute(LEDGER)
    op.execute(LEDGER_FUNCTIONS)
    op.execute(RUNS)
    op.execute(QUEUE)
    op.execute(CACHE)
    op.execute(FINANCE)
    op.execute(RETENTION)


def downgrade() -> None:
    op.execute(DROP_FINANCE_AND_RETENTION)
    op.execute(
        """
        DROP FUNCTION fn_queue_depth();
        DROP FUNCTION fn_claim_next_run(text, double precision, uuid[]);
        DROP TABLE investigation_events;
        DROP FUNCTION fn_purge_expired_explanation_cache(integer);
        DROP TABLE llm_validation_failures, explanation_cache, budget_optimization_jobs,
            investigation_tool_calls, investigations, llm_monthly_costs, llm_api_calls;
        DROP FUNCTION fn_reconcile_monthly_costs(date);
        DROP FUNCTION fn_sweep_expired_llm_reservations();
        DROP FUNCTION fn_llm_api_calls_rollup();
        DROP FUNCTION fn_breakdown_add(jsonb, text, numeric, bigint, bigint);
        DROP FUNCTION fn_llm_api_calls_settled_immutable();
        ALTER TABLE tenants DROP COLUMN monthly_cap_cents;
        DROP EXTENSION IF EXISTS vector;
        """
    )
    op.execute(f"REVOKE ALL ON SCHEMA public FROM {APP_ROLE}")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}")
