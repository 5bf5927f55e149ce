"""Core attribution schema: tenants, taxonomy, events, allocations, ledger, audits, roles, RLS.

Revision ID: 001_core_schema
Revises:
Create Date: 2026-11-25
"""

from alembic import op
from sqlhelpers import APP_ROLE, CROSSTENANT_ROLE, CURRENT_TENANT, tenant_rls, updated_at_trigger

revision = "001_core_schema"
down_revision = None
branch_labels = None
depends_on = None

ROLES = f"""
DO $$
BEGIN
    -- The application role: logs in, owns nothing, is not a superuser and cannot bypass RLS.
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
        CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT;
    END IF;
    -- Owns the few SECURITY DEFINER functions that must cross tenants; nobody logs in as it.
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{CROSSTENANT_ROLE}') THEN
        CREATE ROLE {CROSSTENANT_ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
END
$$;
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO {APP_ROLE}', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO {APP_ROLE}, {CROSSTENANT_ROLE};
-- Readiness checks compare the database's revision with the code's.
GRANT SELECT ON alembic_version TO {APP_ROLE};
-- The migrating owner must be able to hand functions over to the definer role.
GRANT {CROSSTENANT_ROLE} TO CURRENT_USER;
"""

FUNCTIONS = """
CREATE FUNCTION fn_set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
"""

TENANTS = f"""
CREATE TABLE tenants (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL CONSTRAINT ck_tenants_name_not_blank CHECK (btrim(name) <> ''),
    api_key_hash text NOT NULL CONSTRAINT uq_tenants_api_key_hash UNIQUE
        CONSTRAINT ck_tenants_api_key_hash_sha256 CHECK (api_key_hash ~ '^[0-9a-f]{{64}}$'),
    notification_email text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tenants IS
    'Root of tenancy: one row per customer. Data class: account metadata. Owner: platform. '
    'RLS: enabled and forced, a tenant sees only its own row; API keys resolve through '
    'fn_tenant_for_api_key_hash().';
-- The root table is isolated too: a tenant sees only itself.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation_policy ON tenants
    USING (id = {CURRENT_TENANT}) WITH CHECK (id = {CURRENT_TENANT});
GRANT SELECT ON tenants TO {APP_ROLE};
{updated_at_trigger("tenants")}

CREATE POLICY crosstenant_policy ON tenants FOR SELECT TO {CROSSTENANT_ROLE} USING (true);
GRANT SELECT ON tenants TO {CROSSTENANT_ROLE};

-- Authentication must find a tenant before any tenant is set: one narrow definer function.
CREATE FUNCTION fn_tenant_for_api_key_hash(p_hash text) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT id FROM public.tenants WHERE api_key_hash = p_hash
$$;
ALTER FUNCTION fn_tenant_for_api_key_hash(text) OWNER TO {CROSSTENANT_ROLE};
REVOKE ALL ON FUNCTION fn_tenant_for_api_key_hash(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fn_tenant_for_api_key_hash(text) TO {APP_ROLE};
"""

TAXONOMY = f"""
CREATE TABLE channel_taxonomy (
    code text PRIMARY KEY CONSTRAINT ck_channel_taxonomy_code CHECK (code ~ '^[a-z][a-z0-9_]{{1,62}}$'),
    family text NOT NULL CONSTRAINT ck_channel_taxonomy_family CHECK (family ~ '^[a-z][a-z0-9_]*$'),
    is_paid boolean NOT NULL DEFAULT false,
    display_name text NOT NULL CONSTRAINT ck_channel_taxonomy_display_name CHECK (btrim(display_name) <> ''),
    is_active boolean NOT NULL DEFAULT true,
    state text NOT NULL DEFAULT 'active'
        CONSTRAINT ck_channel_taxonomy_state CHECK (state IN ('draft', 'active', 'deprecated', 'archived')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE channel_taxonomy IS
    'Canonical channel codes shared by all tenants. Data class: reference data. Owner: platform. '
    'RLS: none (global, read-only for the application).';
GRANT SELECT ON channel_taxonomy TO {APP_ROLE}, {CROSSTENANT_ROLE};
{updated_at_trigger("channel_taxonomy")}

INSERT INTO channel_taxonomy (code, family, is_paid, display_name) VALUES
    ('facebook_paid', 'paid_social', true, 'Facebook Ads'),
    ('instagram_paid', 'paid_social', true, 'Instagram Ads'),
    ('tiktok_paid', 'paid_social', true, 'TikTok Ads'),
    ('linkedin_paid', 'paid_social', true, 'LinkedIn Ads'),
    ('google_search_paid', 'paid_search', true, 'Google Search Ads'),
    ('bing_search_paid', 'paid_search', true, 'Microsoft Search Ads'),
    ('google_shopping', 'shopping', true, 'Google Shopping'),
    ('display_programmatic', 'display', true, 'Programmatic Display'),
    ('youtube_video', 'video', true, 'YouTube Video Ads'),
    ('affiliate', 'affiliate', true, 'Affiliate Partners'),
    ('organic_search', 'organic_search', false, 'Organic Search'),
    ('organic_social', 'organic_social', false, 'Organic Social'),
    ('email', 'email', false, 'Email'),
    ('sms', 'messaging', false, 'SMS'),
    ('referral', 'referral', false, 'Referral'),
    ('direct', 'direct', false, 'Direct');

CREATE TABLE channel_state_transitions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    channel_code text NOT NULL REFERENCES channel_taxonomy(code) ON DELETE CASCADE,
    from_state text CONSTRAINT ck_channel_state_transitions_from
        CHECK (from_state IN ('draft', 'active', 'deprecated', 'archived')),
    to_state text NOT NULL CONSTRAINT ck_channel_state_transitions_to
        CHECK (to_state IN ('draft', 'active', 'deprecated', 'archived')),
    changed_by text NOT NULL,
    reason text,
    transitioned_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_channel_state_transitions_changes CHECK (from_state IS DISTINCT FROM to_state)
);
COMMENT ON TABLE channel_state_transitions IS
    'Lifecycle audit of taxonomy codes. Data class: reference audit. Owner: platform. '
    'RLS: none (global, like the taxonomy it audits).';
CREATE INDEX idx_channel_state_transitions_code ON channel_state_transitions (channel_code, transitioned_at DESC);
GRANT SELECT ON channel_state_transitions TO {APP_ROLE};
"""

EVENTS = f"""
CREATE TABLE attribution_events (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    occurred_at timestamptz NOT NULL,
    event_timestamp timestamptz NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    session_id text,
    correlation_id uuid,
    external_event_id text,
    event_type text NOT NULL CONSTRAINT ck_attribution_events_event_type
        CHECK (event_type IN ('page_view', 'click', 'add_to_cart', 'signup', 'purchase', 'conversion')),
    channel text NOT NULL REFERENCES channel_taxonomy(code),
    campaign_id text,
    revenue_cents bigint NOT NULL DEFAULT 0 CONSTRAINT ck_attribution_events_revenue CHECK (revenue_cents >= 0),
    conversion_value_cents bigint
        CONSTRAINT ck_attribution_events_conversion_value CHECK (conversion_value_cents >= 0),
    currency text NOT NULL DEFAULT 'USD' CONSTRAINT ck_attribution_events_currency CHECK (currency ~ '^[A-Z]{{3}}$'),
    raw_payload jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    idempotency_key text NOT NULL CONSTRAINT ck_attribution_events_idempotency_key CHECK (btrim(idempotency_key) <> ''),
    processing_status text NOT NULL DEFAULT 'pending' CONSTRAINT ck_attribution_events_processing_status
        CHECK (processing_status IN ('pending', 'processed', 'failed')),
    processed_at timestamptz,
    retry_count integer NOT NULL DEFAULT 0 CONSTRAINT ck_attribution_events_retry_count CHECK (retry_count >= 0),
    CONSTRAINT uq_attribution_events_tenant_id UNIQUE (tenant_id, id)
);
COMMENT ON TABLE attribution_events IS
    'Clickstream and conversion events. Data class: customer behavioural data, may hold PII in '
    'raw_payload. Owner: ingestion. RLS: enabled and forced (tenant_isolation_policy).';
-- Idempotency keys are unique per tenant: a global key would let one tenant probe another's.
CREATE UNIQUE INDEX idx_events_idempotency ON attribution_events (tenant_id, idempotency_key);
CREATE INDEX idx_events_processing_status ON attribution_events (tenant_id, ingested_at)
    WHERE processing_status = 'pending';
CREATE INDEX idx_events_tenant_occurred ON attribution_events (tenant_id, occurred_at DESC);
CREATE INDEX idx_events_tenant_channel_occurred ON attribution_events (tenant_id, channel, occurred_at)
    INCLUDE (revenue_cents, event_type);
{tenant_rls("attribution_events")}

CREATE TABLE attribution_allocations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    event_id uuid NOT NULL,
    channel_code text NOT NULL REFERENCES channel_taxonomy(code),
    allocated_revenue_cents bigint NOT NULL
        CONSTRAINT ck_attribution_allocations_revenue CHECK (allocated_revenue_cents >= 0),
    allocation_ratio numeric(9, 8) NOT NULL
        CONSTRAINT ck_attribution_allocations_ratio CHECK (allocation_ratio BETWEEN 0 AND 1),
    model_type text NOT NULL CONSTRAINT ck_attribution_allocations_model_type CHECK (model_type IN
        ('last_touch', 'first_touch', 'linear', 'time_decay', 'position_based', 'data_driven')),
    model_version text NOT NULL DEFAULT '1',
    confidence_score numeric(5, 4)
        CONSTRAINT ck_attribution_allocations_confidence CHECK (confidence_score BETWEEN 0 AND 1),
    credible_interval_lower_cents bigint,
    credible_interval_upper_cents bigint,
    convergence_r_hat numeric(8, 5) CONSTRAINT ck_attribution_allocations_r_hat CHECK (convergence_r_hat > 0),
    effective_sample_size numeric(12, 2)
        CONSTRAINT ck_attribution_allocations_ess CHECK (effective_sample_size >= 0),
    verified boolean NOT NULL DEFAULT false,
    verification_source text,
    verified_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_attribution_allocations_tenant_id UNIQUE (tenant_id, id),
    -- The composite key makes a cross-tenant reference impossible, not merely invisible.
    CONSTRAINT fk_attribution_allocations_event FOREIGN KEY (tenant_id, event_id)
        REFERENCES attribution_events (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT ck_attribution_allocations_interval CHECK (
        credible_interval_lower_cents IS NULL OR credible_interval_upper_cents IS NULL
        OR credible_interval_lower_cents <= credible_interval_upper_cents)
);
COMMENT ON TABLE attribution_allocations IS
    'How each event''s revenue is split across channels by an attribution model. Data class: '
    'derived business data. Owner: attribution. RLS: enabled and forced (tenant_isolation_policy).';
CREATE INDEX idx_allocations_channel_performance ON attribution_allocations
    (tenant_id, channel_code, created_at DESC) INCLUDE (allocated_revenue_cents, confidence_score);
CREATE INDEX idx_allocations_event ON attribution_allocations (tenant_id, event_id, model_type, model_version);
{tenant_rls("attribution_allocations")}
{updated_at_trigger("attribution_allocations")}
"""

LEDGER = f"""
CREATE TABLE reconciliation_runs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    state text NOT NULL DEFAULT 'idle' CONSTRAINT ck_reconciliation_runs_state
        CHECK (state IN ('idle', 'running', 'failed', 'completed')),
    last_run_at timestamptz,
    error_message text,
    run_metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_reconciliation_runs_tenant_id UNIQUE (tenant_id, id)
);
COMMENT ON TABLE reconciliation_runs IS
    'Job tracking for channel and revenue reconciliation. Data class: operational. Owner: '
    'reconciliation. RLS: enabled and forced (tenant_isolation_policy).';
CREATE INDEX idx_reconciliation_runs_tenant ON reconciliation_runs (tenant_id, created_at DESC);
{tenant_rls("reconciliation_runs")}
{updated_at_trigger("reconciliation_runs")}

CREATE TABLE revenue_ledger (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    transaction_id text NOT NULL CONSTRAINT ck_revenue_ledger_transaction_id CHECK (btrim(transaction_id) <> ''),
    order_id text,
    allocation_id uuid,
    state text NOT NULL CONSTRAINT ck_revenue_ledger_state
        CHECK (state IN ('authorized', 'captured', 'refunded', 'chargeback')),
    previous_state text CONSTRAINT ck_revenue_ledger_previous_state
        CHECK (previous_state IN ('authorized', 'captured', 'refunded', 'chargeback')),
    amount_cents bigint NOT NULL CONSTRAINT ck_revenue_ledger_amount CHECK (amount_cents >= 0),
    revenue_cents bigint NOT NULL CONSTRAINT ck_revenue_ledger_revenue CHECK (revenue_cents >= 0),
    currency text NOT NULL DEFAULT 'USD' CONSTRAINT ck_revenue_ledger_currency CHECK (currency ~ '^[A-Z]{{3}}$'),
    is_verified boolean NOT NULL DEFAULT false,
    verified_at timestamptz,
    verification_source text,
    reconciliation_run_id uuid,
    posted_at timestamptz NOT NULL DEFAULT now(),
    metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_revenue_ledger_tenant_id UNIQUE (tenant_id, id),
    CONSTRAINT fk_revenue_ledger_allocation FOREIGN KEY (tenant_id, allocation_id)
        REFERENCES attribution_allocations (tenant_id, id) ON DELETE SET NULL (allocation_id),
    CONSTRAINT fk_revenue_ledger_reconciliation_run FOREIGN KEY (tenant_id, reconciliation_run_id)
        REFERENCES reconciliation_runs (tenant_id, id) ON DELETE SET NULL (reconciliation_run_id)
);
COMMENT ON TABLE revenue_ledger IS
    'Verified money: authorisations, captures, refunds, chargebacks. Data class: financial, may '
    'hold PII in metadata. Owner: revenue. RLS: enabled and forced (tenant_isolation_policy).';
CREATE UNIQUE INDEX idx_revenue_ledger_transaction ON revenue_ledger (tenant_id, transaction_id);
CREATE INDEX idx_revenue_ledger_order ON revenue_ledger (tenant_id, order_id);
CREATE INDEX idx_revenue_ledger_posted ON revenue_ledger (tenant_id, posted_at DESC);
{tenant_rls("revenue_ledger")}
{updated_at_trigger("revenue_ledger")}

CREATE TABLE revenue_state_transitions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    ledger_id uuid NOT NULL,
    from_state text CONSTRAINT ck_revenue_state_transitions_from
        CHECK (from_state IN ('authorized', 'captured', 'refunded', 'chargeback')),
    to_state text NOT NULL CONSTRAINT ck_revenue_state_transitions_to
        CHECK (to_state IN ('authorized', 'captured', 'refunded', 'chargeback')),
    reason text,
    transitioned_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT fk_revenue_state_transitions_ledger FOREIGN KEY (tenant_id, ledger_id)
        REFERENCES revenue_ledger (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT ck_revenue_state_transitions_changes CHECK (from_state IS DISTINCT FROM to_state)
);
COMMENT ON TABLE revenue_state_transitions IS
    'Audit of ledger state changes (refunds, chargebacks). Data class: financial audit. Owner: '
    'revenue. RLS: enabled and forced (tenant_isolation_policy).';
CREATE INDEX idx_revenue_state_transitions_tenant ON revenue_state_transitions (tenant_id, transitioned_at DESC);
CREATE INDEX idx_revenue_state_transitions_ledger ON revenue_state_transitions (tenant_id, ledger_id);
{tenant_rls("revenue_state_transitions")}
"""

OPERATIONS = f"""
CREATE TABLE dead_events (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    source text NOT NULL,
    event_type text,
    error_type text NOT NULL,
    error_code text,
    error_message text NOT NULL,
    error_detail jsonb,
    error_traceback text,
    raw_payload jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    retry_count integer NOT NULL DEFAULT 0 CONSTRAINT ck_dead_events_retry_count CHECK (retry_count >= 0),
    last_retry_at timestamptz,
    remediation_status text NOT NULL DEFAULT 'pending' CONSTRAINT ck_dead_events_remediation_status
        CHECK (remediation_status IN ('pending', 'in_progress', 'resolved', 'abandoned')),
    remediation_notes text,
    resolved_at timestamptz,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE dead_events IS
    'Events that failed ingestion, kept for remediation. Data class: raw customer data, may hold '
    'PII. Owner: ingestion. RLS: enabled and forced (tenant_isolation_policy).';
CREATE INDEX idx_dead_events_tenant_status ON dead_events (tenant_id, remediation_status, ingested_at DESC);
{tenant_rls("dead_events")}
{updated_at_trigger("dead_events")}

CREATE TABLE channel_assignment_corrections (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    entity_type text NOT NULL CONSTRAINT ck_channel_assignment_corrections_entity_type
        CHECK (entity_type IN ('event', 'allocation')),
    entity_id uuid NOT NULL,
    from_channel text NOT NULL REFERENCES channel_taxonomy(code),
    to_channel text NOT NULL REFERENCES channel_taxonomy(code),
    corrected_by text NOT NULL,
    corrected_at timestamptz NOT NULL DEFAULT now(),
    reason text,
    CONSTRAINT ck_channel_assignment_corrections_changes CHECK (from_channel <> to_channel)
);
COMMENT ON TABLE channel_assignment_corrections IS
    'Manual overrides of an event''s or allocation''s channel. Data class: business audit. Owner: '
    'attribution. RLS: enabled and forced (tenant_isolation_policy).';
CREATE INDEX idx_channel_corrections_tenant ON channel_assignment_corrections (tenant_id, corrected_at DESC);
CREATE INDEX idx_channel_corrections_entity ON channel_assignment_corrections (tenant_id, entity_type, entity_id);
{tenant_rls("channel_assignment_corrections")}
"""


def upgrade() -> None:
    for block in (ROLES, FUNCTIONS, TENANTS, TAXONOMY, EVENTS, LEDGER, OPERATIONS):
        op.execute(block)


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE channel_assignment_corrections, dead_events, revenue_state_transitions,
            revenue_ledger, reconciliation_runs, attribution_allocations, attribution_events,
            channel_state_transitions, channel_taxonomy, tenants;
        DROP FUNCTION fn_tenant_for_api_key_hash(text);
        DROP FUNCTION fn_set_updated_at();
        """
    )
    # Roles are cluster-wide and may serve other databases: revoke here, never drop.
    op.execute(f"REVOKE ALL ON SCHEMA public FROM {APP_ROLE}, {CROSSTENANT_ROLE}")
    op.execute(
        f"DO $$ BEGIN EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM {APP_ROLE}', "
        "current_database()); END $$"
    )
