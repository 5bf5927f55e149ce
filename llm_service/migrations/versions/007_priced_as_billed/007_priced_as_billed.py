"""Priced as billed: each call's cost per kind of token, rolled up into the month and reconciled.

A provider bills cached reads, cache writes, audio and reasoning tokens at their own rates; the
gateway now prices each kind (budgets.usage) and settles a call with its breakdown
(`llm_api_calls.usage_breakdown`: {kind: {tokens, rate_usd, cost_cents, uncached_cents,
rate_known}}). The roll-up trigger sums it per tenant and month (`llm_monthly_costs.
kind_breakdown`: {kind: {tokens, cost_cents, uncached_cents}}), reconciliation compares that sum
with the calls, and finance reads it. The breakdown of a settled call is immutable like its cost.
"""

from alembic import op
from sqlhelpers import APP_ROLE, CROSSTENANT_ROLE, DEFINER_SEARCH_PATH, trigger_table_guard

revision = "007_priced_as_billed"
down_revision = "006_trust_privileges"
branch_labels = None
depends_on = None

COLUMNS = f"""
ALTER TABLE llm_api_calls ADD COLUMN usage_breakdown jsonb
    CONSTRAINT ck_llm_api_calls_usage_breakdown CHECK (jsonb_typeof(usage_breakdown) = 'object');
COMMENT ON COLUMN llm_api_calls.usage_breakdown IS
    'The cost of the call per kind of token as billed (input, cache_read, cache_write, '
    'input_audio, output, reasoning, output_audio): tokens, rate_usd, exact cost_cents, '
    'uncached_cents (at the base rate) and rate_known (false: charged the dearest known rate). '
    'NULL when the call was not billed from its usage (failed, estimated, anomalous).';
GRANT UPDATE (usage_breakdown) ON llm_api_calls TO {APP_ROLE};

ALTER TABLE llm_monthly_costs ADD COLUMN kind_breakdown jsonb NOT NULL DEFAULT '{{}}'::jsonb;
COMMENT ON COLUMN llm_monthly_costs.kind_breakdown IS
    'The month''s settled calls per kind of token: tokens, exact cost_cents and uncached_cents '
    '(what they would have cost at the base rate; the difference is what caching saved).';
"""

KIND_ADD = f"""
CREATE FUNCTION fn_kind_breakdown_add(p_acc jsonb, p_call jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(p_acc, '{{}}'::jsonb) || coalesce((
        SELECT jsonb_object_agg(k.key, jsonb_build_object(
            'tokens', coalesce((p_acc -> k.key ->> 'tokens')::bigint, 0)
                      + (k.value ->> 'tokens')::bigint,
            'cost_cents', coalesce((p_acc -> k.key ->> 'cost_cents')::numeric, 0)
                          + (k.value ->> 'cost_cents')::numeric,
            'uncached_cents', coalesce((p_acc -> k.key ->> 'uncached_cents')::numeric, 0)
                              + (k.value ->> 'uncached_cents')::numeric))
          FROM jsonb_each(coalesce(p_call, '{{}}'::jsonb)) k), '{{}}'::jsonb)
$$;
REVOKE ALL ON FUNCTION fn_kind_breakdown_add(jsonb, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fn_kind_breakdown_add(jsonb, jsonb) TO {CROSSTENANT_ROLE};
"""


# A settled call's breakdown must add up to the call: its kinds' tokens to its input and output
# counts, their exact costs to its cost (which is their sum rounded up to the ledger's 10 places).
# Whoever writes the row, the month's cached and uncached figures can then not be forged apart
# from its total.
BREAKDOWN_GUARD = """
    IF NEW.usage_breakdown IS NOT NULL AND NOT EXISTS (
        SELECT 1
          FROM (SELECT sum((b.value ->> 'tokens')::bigint) FILTER (
                           WHERE b.key IN ('input', 'cache_read', 'cache_write', 'input_audio'))
                           AS input_tokens,
                       sum((b.value ->> 'tokens')::bigint) FILTER (
                           WHERE b.key IN ('output', 'reasoning', 'output_audio'))
                           AS output_tokens,
                       sum((b.value ->> 'cost_cents')::numeric) AS cost,
                       -- Every figure finite and non-negative (NaN and Infinity sort above
                       -- every number), each kind's cost its tokens at its rate (to the ledger's last place), its
                       -- uncached cost equal to its cost but for the cache kinds (a read is
                       -- cheaper than uncached, a write dearer), rate_known a boolean.
                       bool_and(b.key IN ('input', 'cache_read', 'cache_write', 'input_audio',
                                          'output', 'reasoning', 'output_audio')
                                AND (b.value ->> 'tokens')::bigint >= 0
                                AND (b.value ->> 'cost_cents')::numeric >= 0
                                AND (b.value ->> 'cost_cents')::numeric < 'Infinity'::numeric
                                AND (b.value ->> 'rate_usd')::numeric >= 0
                                AND (b.value ->> 'rate_usd')::numeric < 'Infinity'::numeric
                                AND (b.value ->> 'uncached_cents')::numeric >= 0
                                AND (b.value ->> 'uncached_cents')::numeric < 'Infinity'::numeric
                                AND abs((b.value ->> 'cost_cents')::numeric
                                        - (b.value ->> 'tokens')::numeric
                                          * (b.value ->> 'rate_usd')::numeric * 100)
                                    <= 0.0000000001
                                AND CASE b.key
                                    WHEN 'cache_read' THEN (b.value ->> 'uncached_cents')::numeric
                                                           >= (b.value ->> 'cost_cents')::numeric
                                    WHEN 'cache_write' THEN (b.value ->> 'uncached_cents')::numeric
                                                            <= (b.value ->> 'cost_cents')::numeric
                                    ELSE (b.value ->> 'uncached_cents')::numeric
                                         = (b.value ->> 'cost_cents')::numeric END
                                AND jsonb_typeof(b.value -> 'rate_known') = 'boolean') AS sane
                  FROM jsonb_each(NEW.usage_breakdown) b) k
         WHERE k.sane
           AND coalesce(k.input_tokens, 0) = coalesce(NEW.input_tokens, -1)
           AND coalesce(k.output_tokens, 0) = coalesce(NEW.output_tokens, -1)
           AND k.cost <= NEW.cost_cents AND k.cost > NEW.cost_cents - 0.0000000001) THEN
        RAISE EXCEPTION 'the usage breakdown of call % does not add up to the call', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;"""


def _rollup(with_kinds: bool) -> str:
    kinds_col = ", kind_breakdown" if with_kinds else ""
    kinds_val = (
        ",\n            fn_kind_breakdown_add('{}'::jsonb, NEW.usage_breakdown)"
        if with_kinds
        else ""
    )
    kinds_set = (
        "\n        kind_breakdown = fn_kind_breakdown_add(m.kind_breakdown, NEW.usage_breakdown),"
        if with_kinds
        else ""
    )
    guard = BREAKDOWN_GUARD if with_kinds else ""
    return f"""
CREATE OR REPLACE FUNCTION fn_llm_api_calls_rollup() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = {DEFINER_SEARCH_PATH} AS $$
DECLARE
    v_month date := date_trunc('month', NEW.started_at AT TIME ZONE 'UTC')::date;
    v_in bigint := coalesce(NEW.input_tokens, 0);
    v_out bigint := coalesce(NEW.output_tokens, 0);
BEGIN
    {trigger_table_guard("llm_api_calls")}
    IF NEW.status = 'pending' OR (TG_OP = 'UPDATE' AND OLD.status <> 'pending') THEN
        RETURN NULL;
    END IF;{guard}
    INSERT INTO llm_monthly_costs AS m (tenant_id, month, total_cost_cents, estimated_cost_cents,
        total_calls, total_input_tokens, total_output_tokens, model_breakdown, endpoint_breakdown{kinds_col})
    VALUES (NEW.tenant_id, v_month, NEW.cost_cents,
            CASE WHEN NEW.cost_is_estimate THEN NEW.cost_cents ELSE 0 END, 1, v_in, v_out,
            fn_breakdown_add('{{}}'::jsonb, NEW.model, NEW.cost_cents, v_in, v_out),
            fn_breakdown_add('{{}}'::jsonb, NEW.endpoint, NEW.cost_cents, v_in, v_out){kinds_val})
    ON CONFLICT (tenant_id, month) DO UPDATE SET
        total_cost_cents = m.total_cost_cents + EXCLUDED.total_cost_cents,
        estimated_cost_cents = m.estimated_cost_cents + EXCLUDED.estimated_cost_cents,
        total_calls = m.total_calls + 1,
        total_input_tokens = m.total_input_tokens + v_in,
        total_output_tokens = m.total_output_tokens + v_out,
        model_breakdown = fn_breakdown_add(m.model_breakdown, NEW.model, NEW.cost_cents, v_in, v_out),
        endpoint_breakdown = fn_breakdown_add(m.endpoint_breakdown, NEW.endpoint, NEW.cost_cents, v_in, v_out),{kinds_set}
        updated_at = now();
    RETURN NULL;
END
$$;
"""


def _reconcile(with_kinds: bool) -> str:
    kinds_cte = (
        """,
    kinds AS (
        SELECT k.tenant_id, k.month, jsonb_object_agg(k.kind, jsonb_build_object(
                   'tokens', k.tokens, 'cost_cents', k.cost, 'uncached_cents', k.uncached)) AS kinds
        FROM (SELECT s.tenant_id, s.month, b.key AS kind,
                     sum((b.value ->> 'tokens')::bigint) AS tokens,
                     sum((b.value ->> 'cost_cents')::numeric) AS cost,
                     sum((b.value ->> 'uncached_cents')::numeric) AS uncached
                FROM settled s CROSS JOIN LATERAL jsonb_each(s.usage_breakdown) b
               GROUP BY 1, 2, 3) k
        GROUP BY 1, 2
    )"""
        if with_kinds
        else ""
    )
    kinds_col = (
        ", coalesce(c.usage_breakdown, '{}'::jsonb) AS usage_breakdown" if with_kinds else ""
    )
    kinds_match = (
        "\n             AND coalesce(r.kind_breakdown, '{}'::jsonb) = coalesce(kd.kinds, '{}'::jsonb)"
        if with_kinds
        else ""
    )
    kinds_join = (
        "\n      LEFT JOIN kinds kd ON kd.tenant_id = coalesce(r.tenant_id, c.tenant_id)"
        "\n                        AND kd.month = coalesce(r.month, c.month)"
        if with_kinds
        else ""
    )
    return f"""
CREATE OR REPLACE FUNCTION fn_reconcile_monthly_costs(p_month date DEFAULT NULL)
    RETURNS TABLE (tenant_id uuid, month date, recorded_cost_cents numeric,
                   computed_cost_cents numeric, recorded_calls bigint, computed_calls bigint,
                   breakdowns_match boolean)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = {DEFINER_SEARCH_PATH} AS $$
    WITH settled AS (
        SELECT c.tenant_id, date_trunc('month', c.started_at AT TIME ZONE 'UTC')::date AS month,
               c.model, c.endpoint, c.cost_cents, c.cost_is_estimate,
               coalesce(c.input_tokens, 0) AS input_tokens,
               coalesce(c.output_tokens, 0) AS output_tokens{kinds_col}
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
    ){kinds_cte}
    SELECT coalesce(r.tenant_id, c.tenant_id), coalesce(r.month, c.month),
           coalesce(r.total_cost_cents, 0), coalesce(c.cost, 0),
           coalesce(r.total_calls, 0), coalesce(c.calls, 0),
           coalesce(r.estimated_cost_cents, 0) = coalesce(c.estimated, 0)
             AND coalesce(r.total_input_tokens, 0) = coalesce(c.input_tokens, 0)
             AND coalesce(r.total_output_tokens, 0) = coalesce(c.output_tokens, 0)
             AND coalesce(r.model_breakdown, '{{}}'::jsonb) = coalesce(c.models, '{{}}'::jsonb)
             AND coalesce(r.endpoint_breakdown, '{{}}'::jsonb) = coalesce(c.endpoints, '{{}}'::jsonb){kinds_match}
    FROM recorded r FULL JOIN computed c ON c.tenant_id = r.tenant_id AND c.month = r.month{kinds_join}
    ORDER BY 2, 1
$$;
"""


def _finance(with_kinds: bool) -> str:
    kinds_col = ", kind_breakdown jsonb" if with_kinds else ""
    kinds_val = ", coalesce(m.kind_breakdown, '{}'::jsonb)" if with_kinds else ""
    return f"""
DROP FUNCTION fn_finance_monthly_costs(date);
CREATE FUNCTION fn_finance_monthly_costs(p_month date)
    RETURNS TABLE (tenant_id uuid, tenant_name text, total_cost_cents numeric,
                   estimated_cost_cents numeric, calls bigint, input_tokens bigint,
                   output_tokens bigint, model_breakdown jsonb, endpoint_breakdown jsonb,
                   monthly_cap_cents numeric{kinds_col})
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = {DEFINER_SEARCH_PATH} AS $$
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
           coalesce(m.endpoint_breakdown, '{{}}'::jsonb), t.monthly_cap_cents{kinds_val}
      FROM tenants t
      LEFT JOIN llm_monthly_costs m ON m.tenant_id = t.id AND m.month = p_month
     WHERE m.id IS NOT NULL OR t.created_at < (p_month + interval '1 month') AT TIME ZONE 'UTC'
     ORDER BY coalesce(m.total_cost_cents, 0) DESC, t.id;
END
$$;
ALTER FUNCTION fn_finance_monthly_costs(date) OWNER TO {CROSSTENANT_ROLE};
REVOKE ALL ON FUNCTION fn_finance_monthly_costs(date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fn_finance_monthly_costs(date) TO {APP_ROLE};
"""


def _settled_immutable(with_kinds: bool) -> str:
    new = ", NEW.usage_breakdown" if with_kinds else ""
    old = ", OLD.usage_breakdown" if with_kinds else ""
    return f"""
CREATE OR REPLACE FUNCTION fn_llm_api_calls_settled_immutable() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'pending' AND (NEW.status, NEW.cost_cents, NEW.input_tokens,
            NEW.output_tokens, NEW.cost_is_estimate, NEW.model, NEW.endpoint, NEW.tenant_id,
            NEW.started_at, NEW.reserved_cents, NEW.usage_anomaly, NEW.raw_usage,
            NEW.investigation_id, NEW.budget_optimization_job_id, NEW.settled_at{new})
        IS DISTINCT FROM (OLD.status, OLD.cost_cents, OLD.input_tokens,
            OLD.output_tokens, OLD.cost_is_estimate, OLD.model, OLD.endpoint, OLD.tenant_id,
            OLD.started_at, OLD.reserved_cents, OLD.usage_anomaly, OLD.raw_usage,
            OLD.investigation_id, OLD.budget_optimization_job_id, OLD.settled_at{old}) THEN
        RAISE EXCEPTION 'llm_api_calls row % is settled; its money facts are immutable', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
"""


def upgrade() -> None:
    op.execute(COLUMNS)
    op.execute(KIND_ADD)
    op.execute(_settled_immutable(True))
    op.execute(_rollup(True))
    op.execute(_reconcile(True))
    op.execute(_finance(True))


def downgrade() -> None:
    op.execute(_finance(False))
    op.execute(_reconcile(False))
    op.execute(_rollup(False))
    op.execute(_settled_immutable(False))
    op.execute(
        """
        DROP FUNCTION fn_kind_breakdown_add(jsonb, jsonb);
        ALTER TABLE llm_monthly_costs DROP COLUMN kind_breakdown;
        ALTER TABLE llm_api_calls DROP COLUMN usage_breakdown;
        """
    )
