-- Canonical description of the `public` schema after `alembic upgrade head`.
-- Generated from the catalog, not by pg_dump; do not edit by hand. Regenerate with:
--   python -m llm_service.db.schema_dump URL > llm_service/migrations/canonical_schema.sql
-- (URL: the owner's URL of a freshly migrated database; the owner is shown as <owner>.)

EXTENSION plpgsql
EXTENSION vector

SCHEMA public GRANT USAGE TO llm_app
SCHEMA public GRANT USAGE TO llm_crosstenant

SEQUENCE investigation_events_seq_seq
    GRANT llm_app: USAGE
SEQUENCE pii_scan_queue_id_seq

TABLE alembic_version  -- owner: <owner>
    COMMENT NULL
    COLUMN version_num character varying(32) NOT NULL
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
    INDEX alembic_version_pkc: CREATE UNIQUE INDEX alembic_version_pkc ON public.alembic_version USING btree (version_num)
    ROW LEVEL SECURITY DISABLED NOT FORCED
    GRANT SELECT TO llm_app

TABLE attribution_allocations  -- owner: <owner>
    COMMENT 'How each event''s revenue is split across channels by an attribution model. Data class: derived business data. Owner: attribution. RLS: enabled and forced (tenant_isolation_policy).'
    COLUMN id uuid NOT NULL DEFAULT gen_random_uuid()
    COLUMN tenant_id uuid NOT NULL
    COLUMN event_id uuid NOT NULL
    COLUMN channel_code text NOT NULL
    COLUMN allocated_revenue_cents bigint NOT NULL
    COLUMN allocation_ratio numeric(9,8) NOT NULL
    COLUMN model_type text NOT NULL
    COLUMN model_version text NOT NULL DEFAULT '1'::text
    COLUMN confidence_score numeric(5,4)
    COLUMN credible_interval_lower_cents bigint
    COLUMN credible_interval_upper_cents bigint
    COLUMN convergence_r_hat numeric(8,5)
    COLUMN effective_sample_size numeric(12,2)
    COLUMN verified boolean NOT NULL DEFAULT false
    COLUMN verification_source text
    COLUMN verified_at timestamp with time zone
    COLUMN created_at timestamp with time zone NOT NULL DEFAULT now()
    COLUMN updated_at timestamp with time zone NOT NULL DEFAULT now()
    CONSTRAINT attribution_allocations_channel_code_fkey FOREIGN KEY (channel_code) REFERENCES channel_taxonomy(code)
    CONSTRAINT attribution_allocations_pkey PRIMARY KEY (id)
    CONSTRAINT attribution_allocations_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
    CONSTRAINT ck_attribution_allocations_confidence CHECK (confidence_score >= 0::numeric AND confidence_score <= 1::numeric)
    CONSTRAINT ck_attribution_allocations_ess CHECK (effective_sample_size >= 0::numeric)
    CONSTRAINT ck_attribution_allocations_interval CHECK (credible_interval_lower_cents IS NULL OR credible_interval_upper_cents IS NULL OR credible_interval_lower_cents <= credible_interval_upper_cents)
    CONSTRAINT ck_attribution_allocations_model_type CHECK (model_type = ANY (ARRAY['last_touch'::text, 'first_touch'::text, 'linear'::text, 'time_decay'::text, 'position_based'::text, 'data_driven'::text]))
    CONSTRAINT ck_attribution_allocations_r_hat CHECK (convergence_r_hat > 0::numeric)
    CONSTRAINT ck_attribution_allocations_ratio CHECK (allocation_ratio >= 0::numeric AND allocation_ratio <= 1::numeric)
    CONSTRAINT ck_attribution_allocations_revenue CHECK (allocated_revenue_cents >= 0)
    CONSTRAINT fk_attribution_allocations_event FOREIGN KEY (tenant_id, event_id) REFERENCES attribution_events(tenant_id, id) ON DELETE CASCADE
    CONSTRAINT uq_attribution_allocations_tenant_id UNIQUE (tenant_id, id)
    INDEX attribution_allocations_pkey: CREATE UNIQUE INDEX attribution_allocations_pkey ON public.attribution_allocations USING btree (id)
    INDEX idx_allocations_channel_performance: CREATE INDEX idx_allocations_channel_performance ON public.attribution_allocations USING btree (tenant_id, channel_code, created_at DESC) INCLUDE (allocated_revenue_cents, confidence_score)
    INDEX idx_allocations_event: CREATE INDEX idx_allocations_event ON public.attribution_allocations USING btree (tenant_id, event_id, model_type, model_version)
    INDEX uq_attribution_allocations_tenant_id: CREATE UNIQUE INDEX uq_attribution_allocations_tenant_id ON public.attribution_allocations USING btree (tenant_id, id)
    TRIGGER trg_allocation_sums_insert: CREATE TRIGGER trg_allocation_sums_insert AFTER INSERT ON attribution_allocations REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_check_allocation_sums()
    TRIGGER trg_allocation_sums_update: CREATE TRIGGER trg_allocation_sums_update AFTER UPDATE ON attribution_allocations REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_check_allocation_sums()
    TRIGGER trg_attribution_allocations_journal_delete: CREATE TRIGGER trg_attribution_allocations_journal_delete AFTER DELETE ON attribution_allocations REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_journal_attribution_allocations()
    TRIGGER trg_attribution_allocations_journal_insert: CREATE TRIGGER trg_attribution_allocations_journal_insert AFTER INSERT ON attribution_allocations REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_journal_attribution_allocations()
    TRIGGER trg_attribution_allocations_journal_update: CREATE TRIGGER trg_attribution_allocations_journal_update AFTER UPDATE ON attribution_allocations REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_journal_attribution_allocations()
    TRIGGER trg_attribution_allocations_updated_at: CREATE TRIGGER trg_attribution_allocations_updated_at BEFORE UPDATE ON attribution_allocations FOR EACH ROW EXECUTE FUNCTION fn_set_updated_at()
    ROW LEVEL SECURITY ENABLED FORCED
    POLICY crosstenant_policy AS PERMISSIVE FOR SELECT TO llm_crosstenant USING (true)
    POLICY tenant_isolation_policy AS PERMISSIVE FOR ALL TO public USING ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid)) WITH CHECK ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid))
    GRANT DELETE, INSERT, SELECT, UPDATE TO llm_app
    GRANT SELECT TO llm_crosstenant

TABLE attribution_events  -- owner: <owner>
    COMMENT 'Clickstream and conversion events. Data class: customer behavioural data, may hold PII in raw_payload. Owner: ingestion. RLS: enabled and forced (tenant_isolation_policy).'
    COLUMN id uuid NOT NULL DEFAULT gen_random_uuid()
    COLUMN tenant_id uuid NOT NULL
    COLUMN occurred_at timestamp with time zone NOT NULL
    COLUMN event_timestamp timestamp with time zone NOT NULL
    COLUMN ingested_at timestamp with time zone NOT NULL DEFAULT now()
    COLUMN session_id text
    COLUMN correlation_id uuid
    COLUMN external_event_id text
    COLUMN event_type text NOT NULL
    COLUMN channel text NOT NULL
    COLUMN campaign_id text
    COLUMN revenue_cents bigint NOT NULL DEFAULT 0
    COLUMN conversion_value_cents bigint
    COLUMN currency text NOT NULL DEFAULT 'USD'::text
    COLUMN raw_payload jsonb NOT NULL DEFAULT '{}'::jsonb
    COLUMN idempotency_key text NOT NULL
    COLUMN processing_status text NOT NULL DEFAULT 'pending'::text
    COLUMN processed_at timestamp with time zone
    COLUMN retry_count integer NOT NULL DEFAULT 0
    CONSTRAINT attribution_events_channel_fkey FOREIGN KEY (channel) REFERENCES channel_taxonomy(code)
    CONSTRAINT attribution_events_pkey PRIMARY KEY (id)
    CONSTRAINT attribution_events_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
    CONSTRAINT ck_attribution_events_conversion_value CHECK (conversion_value_cents >= 0)
    CONSTRAINT ck_attribution_events_currency CHECK (currency ~ '^[A-Z]{3}$'::text)
    CONSTRAINT ck_attribution_events_event_type CHECK (event_type = ANY (ARRAY['page_view'::text, 'click'::text, 'add_to_cart'::text, 'signup'::text, 'purchase'::text, 'conversion'::text]))
    CONSTRAINT ck_attribution_events_idempotency_key CHECK (btrim(idempotency_key) <> ''::text)
    CONSTRAINT ck_attribution_events_processing_status CHECK (processing_status = ANY (ARRAY['pending'::text, 'processed'::text, 'failed'::text]))
    CONSTRAINT ck_attribution_events_retry_count CHECK (retry_count >= 0)
    CONSTRAINT ck_attribution_events_revenue CHECK (revenue_cents >= 0)
    CONSTRAINT uq_attribution_events_tenant_id UNIQUE (tenant_id, id)
    INDEX attribution_events_pkey: CREATE UNIQUE INDEX attribution_events_pkey ON public.attribution_events USING btree (id)
    INDEX idx_events_idempotency: CREATE UNIQUE INDEX idx_events_idempotency ON public.attribution_events USING btree (tenant_id, idempotency_key)
    INDEX idx_events_processing_status: CREATE INDEX idx_events_processing_status ON public.attribution_events USING btree (tenant_id, ingested_at) WHERE (processing_status = 'pending'::text)
    INDEX idx_events_tenant_channel_occurred: CREATE INDEX idx_events_tenant_channel_occurred ON public.attribution_events USING btree (tenant_id, channel, occurred_at) INCLUDE (revenue_cents, event_type)
    INDEX idx_events_tenant_occurred: CREATE INDEX idx_events_tenant_occurred ON public.attribution_events USING btree (tenant_id, occurred_at DESC)
    INDEX uq_attribution_events_tenant_id: CREATE UNIQUE INDEX uq_attribution_events_tenant_id ON public.attribution_events USING btree (tenant_id, id)
    TRIGGER trg_attribution_events_immutable: CREATE TRIGGER trg_attribution_events_immutable BEFORE UPDATE ON attribution_events FOR EACH ROW EXECUTE FUNCTION fn_attribution_events_immutable()
    TRIGGER trg_attribution_events_journal_delete: CREATE TRIGGER trg_attribution_events_journal_delete AFTER DELETE ON attribution_events REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_journal_attribution_events()
    TRIGGER trg_attribution_events_journal_insert: CREATE TRIGGER trg_attribution_events_journal_insert AFTER INSERT ON attribution_events REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_journal_attribution_events()
    TRIGGER trg_attribution_events_pii_queue_insert: CREATE TRIGGER trg_attribution_events_pii_queue_insert AFTER INSERT ON attribution_events REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_pii_queue_attribution_events()
    ROW LEVEL SECURITY ENABLED FORCED
    POLICY crosstenant_policy AS PERMISSIVE FOR SELECT TO llm_crosstenant USING (true)
    POLICY tenant_isolation_policy AS PERMISSIVE FOR ALL TO public USING ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid)) WITH CHECK ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid))
    GRANT DELETE, INSERT, SELECT, UPDATE TO llm_app
    GRANT SELECT TO llm_crosstenant

TABLE budget_optimization_jobs  -- owner: <owner>
    COMMENT 'Budget reallocation jobs on the same queue as investigations. Data class: business plans. Owner: investigations. RLS: enabled and forced (tenant_isolation_policy).'
    COLUMN id uuid NOT NULL DEFAULT gen_random_uuid()
    COLUMN tenant_id uuid NOT NULL
    COLUMN status text NOT NULL DEFAULT 'queued'::text
    COLUMN reason text
    COLUMN degraded boolean NOT NULL DEFAULT false
    COLUMN params jsonb NOT NULL
    COLUMN recommendations jsonb
    COLUMN rationale text
    COLUMN max_cost_cents numeric(20,10) NOT NULL DEFAULT 30
    COLUMN cost_cents numeric(20,10) NOT NULL DEFAULT 0
    COLUMN idempotency_key text
    COLUMN attempts integer NOT NULL DEFAULT 0
    COLUMN lease_owner text
    COLUMN lease_expires_at timestamp with time zone
    COLUMN heartbeat_at timestamp with time zone
    COLUMN queued_at timestamp with time zone NOT NULL DEFAULT now()
    COLUMN started_at timestamp with time zone
    COLUMN finished_at timestamp with time zone
    COLUMN created_at timestamp with time zone NOT NULL DEFAULT now()
    COLUMN updated_at timestamp with time zone NOT NULL DEFAULT now()
    COLUMN lease_token_hash bytea
    COMMENT ON COLUMN lease_token_hash 'sha256 of the lease token the last claim returned to its worker (the token is stored nowhere): renewal, hand-back and the end of the run present the token.'
    CONSTRAINT budget_optimization_jobs_pkey PRIMARY KEY (id)
    CONSTRAINT budget_optimization_jobs_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
    CONSTRAINT ck_budget_optimization_jobs_cost CHECK (cost_cents >= 0::numeric)
    CONSTRAINT ck_budget_optimization_jobs_lease_token CHECK (length(lease_token_hash) = 32)
    CONSTRAINT ck_budget_optimization_jobs_max_cost CHECK (max_cost_cents > 0::numeric AND max_cost_cents <= 30::numeric)
    CONSTRAINT ck_budget_optimization_jobs_status CHECK (status = ANY (ARRAY['queued'::text, 'running'::text, 'succeeded'::text, 'budget_exhausted'::text, 'timed_out'::text, 'failed'::text, 'cancelled'::text]))
    CONSTRAINT ck_budget_optimization_jobs_within_ceiling CHECK (cost_cents <= max_cost_cents)
    INDEX budget_optimization_jobs_pkey: CREATE UNIQUE INDEX budget_optimization_jobs_pkey ON public.budget_optimization_jobs USING btree (id)
    INDEX idx_budget_optimization_jobs_lease_token: CREATE INDEX idx_budget_optimization_jobs_lease_token ON public.budget_optimization_jobs USING btree (lease_token_hash) WHERE (status = 'running'::text)
    INDEX idx_budget_optimization_jobs_leases: CREATE INDEX idx_budget_optimization_jobs_leases ON public.budget_optimization_jobs USING btree (lease_expires_at) WHERE (status = 'running'::text)
    INDEX idx_budget_optimization_jobs_queue: CREATE INDEX idx_budget_optimization_jobs_queue ON public.budget_optimization_jobs USING btree (queued_at) WHERE (status = 'queued'::text)
    INDEX idx_budget_optimization_jobs_tenant: CREATE INDEX idx_budget_optimization_jobs_tenant ON public.budget_optimization_jobs USING btree (tenant_id, created_at DESC)
    INDEX uq_budget_optimization_jobs_idempotency: CREATE UNIQUE INDEX uq_budget_optimization_jobs_idempotency ON public.budget_optimization_jobs USING btree (tenant_id, idempotency_key) WHERE (idempotency_key IS NOT NULL)
    TRIGGER trg_budget_optimization_jobs_updated_at: CREATE TRIGGER trg_budget_optimization_jobs_updated_at BEFORE UPDATE ON budget_optimization_jobs FOR EACH ROW EXECUTE FUNCTION fn_set_updated_at()
    ROW LEVEL SECURITY ENABLED FORCED
    POLICY crosstenant_policy AS PERMISSIVE FOR ALL TO llm_crosstenant USING (true) WITH CHECK (true)
    POLICY tenant_isolation_policy AS PERMISSIVE FOR ALL TO public USING ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid)) WITH CHECK ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid))
    GRANT SELECT TO llm_app
    GRANT SELECT, UPDATE TO llm_crosstenant
    GRANT INSERT (idempotency_key, max_cost_cents, params, tenant_id) TO llm_app

TABLE channel_assignment_corrections  -- owner: <owner>
    COMMENT 'Manual overrides of an event''s or allocation''s channel. Data class: business audit. Owner: attribution. RLS: enabled and forced (tenant_isolation_policy).'
    COLUMN id uuid NOT NULL DEFAULT gen_random_uuid()
    COLUMN tenant_id uuid NOT NULL
    COLUMN entity_type text NOT NULL
    COLUMN entity_id uuid NOT NULL
    COLUMN from_channel text NOT NULL
    COLUMN to_channel text NOT NULL
    COLUMN corrected_by text NOT NULL
    COLUMN corrected_at timestamp with time zone NOT NULL DEFAULT now()
    COLUMN reason text
    CONSTRAINT channel_assignment_corrections_from_channel_fkey FOREIGN KEY (from_channel) REFERENCES channel_taxonomy(code)
    CONSTRAINT channel_assignment_corrections_pkey PRIMARY KEY (id)
    CONSTRAINT channel_assignment_corrections_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
    CONSTRAINT channel_assignment_corrections_to_channel_fkey FOREIGN KEY (to_channel) REFERENCES channel_taxonomy(code)
    CONSTRAINT ck_channel_assignment_corrections_changes CHECK (from_channel <> to_channel)
    CONSTRAINT ck_channel_assignment_corrections_entity_type CHECK (entity_type = ANY (ARRAY['event'::text, 'allocation'::text]))
    INDEX channel_assignment_corrections_pkey: CREATE UNIQUE INDEX channel_assignment_corrections_pkey ON public.channel_assignment_corrections USING btree (id)
    INDEX idx_channel_corrections_entity: CREATE INDEX idx_channel_corrections_entity ON public.channel_assignment_corrections USING btree (tenant_id, entity_type, entity_id)
    INDEX idx_channel_corrections_tenant: CREATE INDEX idx_channel_corrections_tenant ON public.channel_assignment_corrections USING btree (tenant_id, corrected_at DESC)
    TRIGGER trg_channel_assignment_corrections_journal_delete: CREATE TRIGGER trg_channel_assignment_corrections_journal_delete AFTER DELETE ON channel_assignment_corrections REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_journal_channel_assignment_corrections()
    TRIGGER trg_channel_assignment_corrections_journal_insert: CREATE TRIGGER trg_channel_assignment_corrections_journal_insert AFTER INSERT ON channel_assignment_corrections REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_journal_channel_assignment_corrections()
    TRIGGER trg_channel_assignment_corrections_journal_update: CREATE TRIGGER trg_channel_assignment_corrections_journal_update AFTER UPDATE ON channel_assignment_corrections REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_journal_channel_assignment_corrections()
    ROW LEVEL SECURITY ENABLED FORCED
    POLICY crosstenant_policy AS PERMISSIVE FOR SELECT TO llm_crosstenant USING (true)
    POLICY tenant_isolation_policy AS PERMISSIVE FOR ALL TO public USING ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid)) WITH CHECK ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid))
    GRANT DELETE, INSERT, SELECT, UPDATE TO llm_app
    GRANT SELECT TO llm_crosstenant

TABLE channel_state_transitions  -- owner: <owner>
    COMMENT 'Lifecycle audit of taxonomy codes. Data class: reference audit. Owner: platform. RLS: none (global, like the taxonomy it audits).'
    COLUMN id uuid NOT NULL DEFAULT gen_random_uuid()
    COLUMN channel_code text NOT NULL
    COLUMN from_state text
    COLUMN to_state text NOT NULL
    COLUMN changed_by text NOT NULL
    COLUMN reason text
    COLUMN transitioned_at timestamp with time zone NOT NULL DEFAULT now()
    CONSTRAINT channel_state_transitions_channel_code_fkey FOREIGN KEY (channel_code) REFERENCES channel_taxonomy(code) ON DELETE CASCADE
    CONSTRAINT channel_state_transitions_pkey PRIMARY KEY (id)
    CONSTRAINT ck_channel_state_transitions_changes CHECK (from_state IS DISTINCT FROM to_state)
    CONSTRAINT ck_channel_state_transitions_from CHECK (from_state = ANY (ARRAY['draft'::text, 'active'::text, 'deprecated'::text, 'archived'::text]))
    CONSTRAINT ck_channel_state_transitions_to CHECK (to_state = ANY (ARRAY['draft'::text, 'active'::text, 'deprecated'::text, 'archived'::text]))
    INDEX channel_state_transitions_pkey: CREATE UNIQUE INDEX channel_state_transitions_pkey ON public.channel_state_transitions USING btree (id)
    INDEX idx_channel_state_transitions_code: CREATE INDEX idx_channel_state_transitions_code ON public.channel_state_transitions USING btree (channel_code, transitioned_at DESC)
    ROW LEVEL SECURITY DISABLED NOT FORCED
    GRANT SELECT TO llm_app

TABLE channel_taxonomy  -- owner: <owner>
    COMMENT 'Canonical channel codes shared by all tenants. Data class: reference data. Owner: platform. RLS: none (global, read-only for the application).'
    COLUMN code text NOT NULL
    COLUMN family text NOT NULL
    COLUMN is_paid boolean NOT NULL DEFAULT false
    COLUMN display_name text NOT NULL
    COLUMN is_active boolean NOT NULL DEFAULT true
    COLUMN state text NOT NULL DEFAULT 'active'::text
    COLUMN created_at timestamp with time zone NOT NULL DEFAULT now()
    COLUMN updated_at timestamp with time zone NOT NULL DEFAULT now()
    CONSTRAINT channel_taxonomy_pkey PRIMARY KEY (code)
    CONSTRAINT ck_channel_taxonomy_code CHECK (code ~ '^[a-z][a-z0-9_]{1,62}$'::text)
    CONSTRAINT ck_channel_taxonomy_display_name CHECK (btrim(display_name) <> ''::text)
    CONSTRAINT ck_channel_taxonomy_family CHECK (family ~ '^[a-z][a-z0-9_]*$'::text)
    CONSTRAINT ck_channel_taxonomy_state CHECK (state = ANY (ARRAY['draft'::text, 'active'::text, 'deprecated'::text, 'archived'::text]))
    INDEX channel_taxonomy_pkey: CREATE UNIQUE INDEX channel_taxonomy_pkey ON public.channel_taxonomy USING btree (code)
    TRIGGER trg_channel_taxonomy_updated_at: CREATE TRIGGER trg_channel_taxonomy_updated_at BEFORE UPDATE ON channel_taxonomy FOR EACH ROW EXECUTE FUNCTION fn_set_updated_at()
    ROW LEVEL SECURITY DISABLED NOT FORCED
    GRANT SELECT TO llm_app
    GRANT SELECT TO llm_crosstenant

TABLE data_change_journal  -- owner: <owner>
    COMMENT 'Per tenant, part of the data (events, allocations, ledger, ...), channel (a code; "*": every channel; empty: the roll-up of all changes) and UTC day, a version that statement triggers bump in the transaction of every change, so a data fingerprint is one small index range scan per part. Data class: derived metadata. Owner: analytics. RLS: enabled and forced (tenant_isolation_policy); the application may only read it, the definer triggers (llm_crosstenant) write it.'
    COLUMN tenant_id uuid NOT NULL
    COLUMN part text NOT NULL
    COLUMN channel text NOT NULL
    COLUMN day date NOT NULL
    COLUMN version bigint NOT NULL DEFAULT 1
    COLUMN changed_at timestamp with time zone NOT NULL DEFAULT now()
    CONSTRAINT ck_data_change_journal_part CHECK (part = ANY (ARRAY['events'::text, 'allocations'::text, 'ledger'::text, 'transitions'::text, 'dead_events'::text, 'corrections'::text, 'runs'::text]))
    CONSTRAINT ck_data_change_journal_version CHECK (version >= 1)
    CONSTRAINT data_change_journal_pkey PRIMARY KEY (tenant_id, part, channel, day)
    CONSTRAINT data_change_journal_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
    INDEX data_change_journal_pkey: CREATE UNIQUE INDEX data_change_journal_pkey ON public.data_change_journal USING btree (tenant_id, part, channel, day)
    ROW LEVEL SECURITY ENABLED FORCED
    POLICY crosstenant_policy AS PERMISSIVE FOR ALL TO llm_crosstenant USING (true) WITH CHECK (true)
    POLICY tenant_isolation_policy AS PERMISSIVE FOR ALL TO public USING ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid)) WITH CHECK ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid))
    GRANT SELECT TO llm_app
    GRANT INSERT, SELECT, UPDATE TO llm_crosstenant

TABLE dead_events  -- owner: <owner>
    COMMENT 'Events that failed ingestion, kept for remediation. Data class: raw customer data, may hold PII. Owner: ingestion. RLS: enabled and forced (tenant_isolation_policy).'
    COLUMN id uuid NOT NULL DEFAULT gen_random_uuid()
    COLUMN tenant_id uuid NOT NULL
    COLUMN source text NOT NULL
    COLUMN event_type text
    COLUMN error_type text NOT NULL
    COLUMN error_code text
    COLUMN error_message text NOT NULL
    COLUMN error_detail jsonb
    COLUMN error_traceback text
    COLUMN raw_payload jsonb NOT NULL DEFAULT '{}'::jsonb
    COLUMN retry_count integer NOT NULL DEFAULT 0
    COLUMN last_retry_at timestamp with time zone
    COLUMN remediation_status text NOT NULL DEFAULT 'pending'::text
    COLUMN remediation_notes text
    COLUMN resolved_at timestamp with time zone
    COLUMN ingested_at timestamp with time zone NOT NULL DEFAULT now()
    COLUMN updated_at timestamp with time zone NOT NULL DEFAULT now()
    CONSTRAINT ck_dead_events_remediation_status CHECK (remediation_status = ANY (ARRAY['pending'::text, 'in_progress'::text, 'resolved'::text, 'abandoned'::text]))
    CONSTRAINT ck_dead_events_retry_count CHECK (retry_count >= 0)
    CONSTRAINT dead_events_pkey PRIMARY KEY (id)
    CONSTRAINT dead_events_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
    INDEX dead_events_pkey: CREATE UNIQUE INDEX dead_events_pkey ON public.dead_events USING btree (id)
    INDEX idx_dead_events_tenant_status: CREATE INDEX idx_dead_events_tenant_status ON public.dead_events USING btree (tenant_id, remediation_status, ingested_at DESC)
    TRIGGER trg_dead_events_journal_delete: CREATE TRIGGER trg_dead_events_journal_delete AFTER DELETE ON dead_events REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_journal_dead_events()
    TRIGGER trg_dead_events_journal_insert: CREATE TRIGGER trg_dead_events_journal_insert AFTER INSERT ON dead_events REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_journal_dead_events()
    TRIGGER trg_dead_events_journal_update: CREATE TRIGGER trg_dead_events_journal_update AFTER UPDATE ON dead_events REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_journal_dead_events()
    TRIGGER trg_dead_events_pii_queue_insert: CREATE TRIGGER trg_dead_events_pii_queue_insert AFTER INSERT ON dead_events REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_pii_queue_dead_events()
    TRIGGER trg_dead_events_pii_queue_update: CREATE TRIGGER trg_dead_events_pii_queue_update AFTER UPDATE ON dead_events REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_pii_queue_dead_events()
    TRIGGER trg_dead_events_updated_at: CREATE TRIGGER trg_dead_events_updated_at BEFORE UPDATE ON dead_events FOR EACH ROW EXECUTE FUNCTION fn_set_updated_at()
    ROW LEVEL SECURITY ENABLED FORCED
    POLICY crosstenant_policy AS PERMISSIVE FOR SELECT TO llm_crosstenant USING (true)
    POLICY tenant_isolation_policy AS PERMISSIVE FOR ALL TO public USING ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid)) WITH CHECK ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid))
    GRANT DELETE, INSERT, SELECT, UPDATE TO llm_app
    GRANT SELECT TO llm_crosstenant

TABLE explanation_cache  -- owner: <owner>
    COMMENT 'Explanations served to dashboards. An entry matches only its exact scope and current data fingerprint, before expiry; the question is matched by embedding among those. Data class: derived business data. Owner: explanations. RLS: enabled and forced.'
    COLUMN id uuid NOT NULL DEFAULT gen_random_uuid()
    COLUMN tenant_id uuid NOT NULL
    COLUMN entity_type text NOT NULL
    COLUMN scope_key text NOT NULL
    COLUMN scope jsonb NOT NULL
    COLUMN question text NOT NULL DEFAULT ''::text
    COLUMN question_embedding vector
    COLUMN embedding_model text NOT NULL
    COLUMN embedding_dim integer
    COLUMN explanation jsonb NOT NULL
    COLUMN citations jsonb NOT NULL DEFAULT '[]'::jsonb
    COLUMN model text NOT NULL
    COLUMN prompt_version text NOT NULL
    COLUMN data_fingerprint text NOT NULL
    COLUMN cost_cents numeric(20,10) NOT NULL DEFAULT 0
    COLUMN cache_hit_count bigint NOT NULL DEFAULT 0
    COLUMN last_hit_at timestamp with time zone
    COLUMN expires_at timestamp with time zone NOT NULL
    COLUMN created_at timestamp with time zone NOT NULL DEFAULT now()
    CONSTRAINT ck_explanation_cache_cost CHECK (cost_cents >= 0::numeric)
    CONSTRAINT ck_explanation_cache_embedding_dim CHECK (embedding_dim > 0)
    CONSTRAINT ck_explanation_cache_question_embedding CHECK ((question = ''::text) = (question_embedding IS NULL))
    CONSTRAINT ck_explanation_cache_scope_key CHECK (scope_key ~ '^[0-9a-f]{64}$'::text)
    CONSTRAINT ck_explanation_cache_vector_dim CHECK (question_embedding IS NULL OR embedding_dim IS NOT NULL AND vector_dims(question_embedding) = embedding_dim)
    CONSTRAINT explanation_cache_pkey PRIMARY KEY (id)
    CONSTRAINT explanation_cache_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
    INDEX explanation_cache_pkey: CREATE UNIQUE INDEX explanation_cache_pkey ON public.explanation_cache USING btree (id)
    INDEX idx_explanation_cache_embedding_local: CREATE INDEX idx_explanation_cache_embedding_local ON public.explanation_cache USING hnsw (((question_embedding)::vector(384)) vector_cosine_ops) WHERE (embedding_model = 'local/all-MiniLM-L6-v2-int8'::text)
    INDEX idx_explanation_cache_expiry: CREATE INDEX idx_explanation_cache_expiry ON public.explanation_cache USING btree (expires_at)
    INDEX idx_explanation_cache_scope: CREATE INDEX idx_explanation_cache_scope ON public.explanation_cache USING btree (tenant_id, scope_key, embedding_model, data_fingerprint, expires_at DESC)
    ROW LEVEL SECURITY ENABLED FORCED
    POLICY crosstenant_policy AS PERMISSIVE FOR ALL TO llm_crosstenant USING (true) WITH CHECK (true)
    POLICY tenant_isolation_policy AS PERMISSIVE FOR ALL TO public USING ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid)) WITH CHECK ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid))
    GRANT DELETE, INSERT, SELECT, UPDATE TO llm_app
    GRANT DELETE, SELECT, UPDATE TO llm_crosstenant

TABLE investigation_events  -- owner: <owner>
    COMMENT 'Progress of each investigation, in order, for server-sent events across processes. Data class: derived, PII-redacted. Owner: investigations. RLS: enabled and forced.'
    COLUMN seq bigint NOT NULL GENERATED ALWAYS AS IDENTITY
    COLUMN tenant_id uuid NOT NULL
    COLUMN investigation_id uuid NOT NULL
    COLUMN event_type text NOT NULL
    COLUMN data jsonb NOT NULL DEFAULT '{}'::jsonb
    COLUMN created_at timestamp with time zone NOT NULL DEFAULT now()
    CONSTRAINT ck_investigation_events_type CHECK (event_type = ANY (ARRAY['queued'::text, 'started'::text, 'step'::text, 'tool_call'::text, 'llm_call'::text, 'note'::text, 'final'::text]))
    CONSTRAINT fk_investigation_events_investigation FOREIGN KEY (tenant_id, investigation_id) REFERENCES investigations(tenant_id, id) ON DELETE CASCADE
    CONSTRAINT investigation_events_pkey PRIMARY KEY (seq)
    CONSTRAINT investigation_events_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
    INDEX idx_investigation_events_run: CREATE INDEX idx_investigation_events_run ON public.investigation_events USING btree (tenant_id, investigation_id, seq)
    INDEX investigation_events_pkey: CREATE UNIQUE INDEX investigation_events_pkey ON public.investigation_events USING btree (seq)
    TRIGGER trg_investigation_events_insert_needs_lease: CREATE TRIGGER trg_investigation_events_insert_needs_lease BEFORE INSERT ON investigation_events FOR EACH ROW EXECUTE FUNCTION fn_run_insert_needs_lease()
    ROW LEVEL SECURITY ENABLED FORCED
    POLICY tenant_isolation_policy AS PERMISSIVE FOR ALL TO public USING ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid)) WITH CHECK ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid))
    GRANT INSERT, SELECT TO llm_app

TABLE investigation_tool_calls  -- owner: <owner>
    COMMENT 'Every tool call of an investigation: name, arguments, (capped) result, duration, error. Data class: derived business data, PII-redacted. Owner: investigations. RLS: enabled and forced.'
    COLUMN id uuid NOT NULL DEFAULT gen_random_uuid()
    COLUMN tenant_id uuid NOT NULL
    COLUMN investigation_id uuid NOT NULL
    COLUMN step integer NOT NULL DEFAULT 0
    COLUMN tool_name text NOT NULL
    COLUMN input_params jsonb NOT NULL DEFAULT '{}'::jsonb
    COLUMN output jsonb
    COLUMN output_truncated boolean NOT NULL DEFAULT false
    COLUMN duration_ms integer
    COLUMN error text
    COLUMN created_at timestamp with time zone NOT NULL DEFAULT now()
    CONSTRAINT ck_investigation_tool_calls_duration CHECK (duration_ms >= 0)
    CONSTRAINT fk_investigation_tool_calls_investigation FOREIGN KEY (tenant_id, investigation_id) REFERENCES investigations(tenant_id, id) ON DELETE CASCADE
    CONSTRAINT investigation_tool_calls_pkey PRIMARY KEY (id)
    CONSTRAINT investigation_tool_calls_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
    INDEX idx_investigation_tool_calls_run: CREATE INDEX idx_investigation_tool_calls_run ON public.investigation_tool_calls USING btree (tenant_id, investigation_id, created_at)
    INDEX investigation_tool_calls_pkey: CREATE UNIQUE INDEX investigation_tool_calls_pkey ON public.investigation_tool_calls USING btree (id)
    TRIGGER trg_investigation_tool_calls_insert_needs_lease: CREATE TRIGGER trg_investigation_tool_calls_insert_needs_lease BEFORE INSERT ON investigation_tool_calls FOR EACH ROW EXECUTE FUNCTION fn_run_insert_needs_lease()
    ROW LEVEL SECURITY ENABLED FORCED
    POLICY tenant_isolation_policy AS PERMISSIVE FOR ALL TO public USING ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid)) WITH CHECK ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid))
    GRANT INSERT, SELECT TO llm_app

TABLE investigations  -- owner: <owner>
    COMMENT 'Bounded agent runs, and the queue workers claim them from. Data class: analyst questions and findings. Owner: investigations. RLS: enabled and forced (tenant_isolation_policy).'
    COLUMN id uuid NOT NULL DEFAULT gen_random_uuid()
    COLUMN tenant_id uuid NOT NULL
    COLUMN question text NOT NULL
    COLUMN status text NOT NULL DEFAULT 'queued'::text
    COLUMN reason text
    COLUMN degraded boolean NOT NULL DEFAULT false
    COLUMN max_cost_cents numeric(20,10) NOT NULL DEFAULT 30
    COLUMN timeout_ms integer NOT NULL DEFAULT 60000
    COLUMN max_steps integer NOT NULL DEFAULT 12
    COLUMN cost_cents numeric(20,10) NOT NULL DEFAULT 0
    COLUMN elapsed_ms integer
    COLUMN result jsonb
    COLUMN idempotency_key text
    COLUMN attempts integer NOT NULL DEFAULT 0
    COLUMN lease_owner text
    COLUMN lease_expires_at timestamp with time zone
    COLUMN heartbeat_at timestamp with time zone
    COLUMN cancel_requested boolean NOT NULL DEFAULT false
    COLUMN queued_at timestamp with time zone NOT NULL DEFAULT now()
    COLUMN started_at timestamp with time zone
    COLUMN finished_at timestamp with time zone
    COLUMN created_at timestamp with time zone NOT NULL DEFAULT now()
    COLUMN updated_at timestamp with time zone NOT NULL DEFAULT now()
    COLUMN lease_token_hash bytea
    COMMENT ON COLUMN lease_token_hash 'sha256 of the lease token the last claim returned to its worker (the token is stored nowhere): renewal, hand-back and the end of the run present the token.'
    CONSTRAINT ck_investigations_cost CHECK (cost_cents >= 0::numeric)
    CONSTRAINT ck_investigations_elapsed CHECK (elapsed_ms >= 0)
    CONSTRAINT ck_investigations_lease_token CHECK (length(lease_token_hash) = 32)
    CONSTRAINT ck_investigations_max_cost CHECK (max_cost_cents > 0::numeric AND max_cost_cents <= 30::numeric)
    CONSTRAINT ck_investigations_max_steps CHECK (max_steps >= 1 AND max_steps <= 50)
    CONSTRAINT ck_investigations_question CHECK (btrim(question) <> ''::text AND length(question) <= 4000)
    CONSTRAINT ck_investigations_status CHECK (status = ANY (ARRAY['queued'::text, 'running'::text, 'succeeded'::text, 'budget_exhausted'::text, 'timed_out'::text, 'failed'::text, 'cancelled'::text]))
    CONSTRAINT ck_investigations_timeout CHECK (timeout_ms > 0 AND timeout_ms <= 60000)
    CONSTRAINT ck_investigations_within_ceiling CHECK (cost_cents <= max_cost_cents)
    CONSTRAINT investigations_pkey PRIMARY KEY (id)
    CONSTRAINT investigations_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
    CONSTRAINT uq_investigations_tenant_id UNIQUE (tenant_id, id)
    INDEX idx_investigations_lease_token: CREATE INDEX idx_investigations_lease_token ON public.investigations USING btree (lease_token_hash) WHERE (status = 'running'::text)
    INDEX idx_investigations_leases: CREATE INDEX idx_investigations_leases ON public.investigations USING btree (lease_expires_at) WHERE (status = 'running'::text)
    INDEX idx_investigations_queue: CREATE INDEX idx_investigations_queue ON public.investigations USING btree (queued_at) WHERE (status = 'queued'::text)
    INDEX idx_investigations_tenant: CREATE INDEX idx_investigations_tenant ON public.investigations USING btree (tenant_id, created_at DESC)
    INDEX investigations_pkey: CREATE UNIQUE INDEX investigations_pkey ON public.investigations USING btree (id)
    INDEX uq_investigations_idempotency: CREATE UNIQUE INDEX uq_investigations_idempotency ON public.investigations USING btree (tenant_id, idempotency_key) WHERE (idempotency_key IS NOT NULL)
    INDEX uq_investigations_tenant_id: CREATE UNIQUE INDEX uq_investigations_tenant_id ON public.investigations USING btree (tenant_id, id)
    TRIGGER trg_investigations_updated_at: CREATE TRIGGER trg_investigations_updated_at BEFORE UPDATE ON investigations FOR EACH ROW EXECUTE FUNCTION fn_set_updated_at()
    ROW LEVEL SECURITY ENABLED FORCED
    POLICY crosstenant_policy AS PERMISSIVE FOR ALL TO llm_crosstenant USING (true) WITH CHECK (true)
    POLICY tenant_isolation_policy AS PERMISSIVE FOR ALL TO public USING ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid)) WITH CHECK ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid))
    GRANT SELECT TO llm_app
    GRANT SELECT, UPDATE TO llm_crosstenant
    GRANT INSERT (idempotency_key, max_cost_cents, max_steps, question, tenant_id, timeout_ms) TO llm_app

TABLE job_idempotency_keys  -- owner: <owner>
    COMMENT 'Idempotency-Keys of queued jobs of every kind, one per tenant and key: the run it made and the sha256 of its canonical request (NULL: back-filled by migration 009). Data class: request metadata. Owner: jobs. RLS: enabled and forced (tenant_isolation_policy).'
    COLUMN tenant_id uuid NOT NULL
    COLUMN idempotency_key text NOT NULL
    COLUMN kind text NOT NULL
    COLUMN run_id uuid NOT NULL
    COLUMN request_hash text
    COLUMN created_at timestamp with time zone NOT NULL DEFAULT now()
    CONSTRAINT ck_job_idempotency_keys_hash CHECK (request_hash ~ '^[0-9a-f]{64}$'::text)
    CONSTRAINT ck_job_idempotency_keys_key CHECK (length(idempotency_key) >= 1 AND length(idempotency_key) <= 200)
    CONSTRAINT ck_job_idempotency_keys_kind CHECK (kind ~ '^[a-z][a-z_]{0,49}$'::text)
    CONSTRAINT job_idempotency_keys_pkey PRIMARY KEY (tenant_id, idempotency_key)
    CONSTRAINT job_idempotency_keys_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
    INDEX job_idempotency_keys_pkey: CREATE UNIQUE INDEX job_idempotency_keys_pkey ON public.job_idempotency_keys USING btree (tenant_id, idempotency_key)
    TRIGGER trg_job_idempotency_keys_names_a_run: CREATE TRIGGER trg_job_idempotency_keys_names_a_run BEFORE INSERT ON job_idempotency_keys FOR EACH ROW EXECUTE FUNCTION fn_job_key_names_a_run()
    ROW LEVEL SECURITY ENABLED FORCED
    POLICY tenant_isolation_policy AS PERMISSIVE FOR ALL TO public USING ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid)) WITH CHECK ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid))
    GRANT INSERT, SELECT TO llm_app

TABLE llm_api_calls  -- owner: <owner>
    COMMENT 'One row per provider attempt, written before the call (pending, with its reserved worst case) and settled after. Data class: billing, prompts only in request_metadata. Owner: LLM gateway. RLS: enabled and forced (tenant_isolation_policy).'
    COLUMN id uuid NOT NULL DEFAULT gen_random_uuid()
    COLUMN tenant_id uuid NOT NULL
    COLUMN request_id text NOT NULL
    COLUMN endpoint text NOT NULL
    COLUMN model text NOT NULL
    COLUMN provider text NOT NULL
    COLUMN attempt integer NOT NULL DEFAULT 1
    COLUMN status text NOT NULL DEFAULT 'pending'::text
    COLUMN reserved_cents numeric(20,10) NOT NULL
    COLUMN reservation_expires_at timestamp with time zone NOT NULL
    COLUMN max_tokens integer
    COLUMN input_tokens integer
    COLUMN output_tokens integer
    COLUMN cost_cents numeric(20,10) NOT NULL DEFAULT 0
    COLUMN cost_is_estimate boolean NOT NULL DEFAULT false
    COLUMN latency_ms integer
    COLUMN was_cached boolean NOT NULL DEFAULT false
    COLUMN provider_request_id text
    COLUMN error_type text
    COLUMN error_message text
    COLUMN investigation_id uuid
    COLUMN budget_optimization_job_id uuid
    COLUMN request_metadata jsonb NOT NULL DEFAULT '{}'::jsonb
    COLUMN started_at timestamp with time zone NOT NULL DEFAULT now()
    COLUMN settled_at timestamp with time zone
    COLUMN created_at timestamp with time zone NOT NULL DEFAULT now()
    COLUMN usage_anomaly text
    COLUMN raw_usage jsonb
    COLUMN usage_breakdown jsonb
    COLUMN settle_token_hash bytea
    COMMENT ON COLUMN usage_anomaly 'Why the usage the provider reported was not believed (the call was then billed at its reservation); NULL when it was billed as reported.'
    COMMENT ON COLUMN raw_usage 'The usage object the provider returned, as it came (capped), kept as evidence.'
    COMMENT ON COLUMN usage_breakdown 'The cost of the call per kind of token as billed (input, cache_read, cache_write, input_audio, output, reasoning, output_audio): tokens, rate_usd, exact cost_cents, uncached_cents (at the base rate) and rate_known (false: charged the dearest known rate). NULL when the call was not billed from its usage (failed, estimated, anomalous).'
    CONSTRAINT ck_llm_api_calls_attempt CHECK (attempt >= 1)
    CONSTRAINT ck_llm_api_calls_cost CHECK (cost_cents >= 0::numeric)
    CONSTRAINT ck_llm_api_calls_endpoint CHECK (endpoint = ANY (ARRAY['explanations'::text, 'investigations'::text, 'budget_optimizations'::text, 'embeddings'::text]))
    CONSTRAINT ck_llm_api_calls_input_tokens CHECK (input_tokens >= 0)
    CONSTRAINT ck_llm_api_calls_latency CHECK (latency_ms >= 0)
    CONSTRAINT ck_llm_api_calls_max_tokens CHECK (max_tokens > 0)
    CONSTRAINT ck_llm_api_calls_output_tokens CHECK (output_tokens >= 0)
    CONSTRAINT ck_llm_api_calls_reserved CHECK (reserved_cents >= 0::numeric)
    CONSTRAINT ck_llm_api_calls_settled CHECK ((status = 'pending'::text) = (settled_at IS NULL))
    CONSTRAINT ck_llm_api_calls_status CHECK (status = ANY (ARRAY['pending'::text, 'succeeded'::text, 'failed'::text, 'timed_out'::text, 'cancelled'::text, 'abandoned'::text]))
    CONSTRAINT ck_llm_api_calls_usage_anomaly CHECK (length(usage_anomaly) >= 1 AND length(usage_anomaly) <= 500)
    CONSTRAINT ck_llm_api_calls_usage_breakdown CHECK (jsonb_typeof(usage_breakdown) = 'object'::text)
    CONSTRAINT ck_llm_api_calls_within_reservation CHECK (cost_cents <= reserved_cents)
    CONSTRAINT llm_api_calls_pkey PRIMARY KEY (id)
    CONSTRAINT llm_api_calls_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
    CONSTRAINT uq_llm_api_calls_request UNIQUE (tenant_id, endpoint, request_id)
    INDEX idx_llm_calls_budget_job: CREATE INDEX idx_llm_calls_budget_job ON public.llm_api_calls USING btree (tenant_id, budget_optimization_job_id) WHERE (budget_optimization_job_id IS NOT NULL)
    INDEX idx_llm_calls_investigation: CREATE INDEX idx_llm_calls_investigation ON public.llm_api_calls USING btree (tenant_id, investigation_id) WHERE (investigation_id IS NOT NULL)
    INDEX idx_llm_calls_pending: CREATE INDEX idx_llm_calls_pending ON public.llm_api_calls USING btree (tenant_id, reservation_expires_at) WHERE (status = 'pending'::text)
    INDEX idx_llm_calls_prompt_retention: CREATE INDEX idx_llm_calls_prompt_retention ON public.llm_api_calls USING btree (created_at) WHERE (request_metadata ?| ARRAY['prompt'::text, 'response'::text])
    INDEX idx_llm_calls_started: CREATE INDEX idx_llm_calls_started ON public.llm_api_calls USING btree (started_at)
    INDEX idx_llm_calls_tenant_endpoint: CREATE INDEX idx_llm_calls_tenant_endpoint ON public.llm_api_calls USING btree (tenant_id, endpoint, created_at DESC)
    INDEX idx_llm_calls_tenant_started: CREATE INDEX idx_llm_calls_tenant_started ON public.llm_api_calls USING btree (tenant_id, started_at)
    INDEX llm_api_calls_pkey: CREATE UNIQUE INDEX llm_api_calls_pkey ON public.llm_api_calls USING btree (id)
    INDEX uq_llm_api_calls_request: CREATE UNIQUE INDEX uq_llm_api_calls_request ON public.llm_api_calls USING btree (tenant_id, endpoint, request_id)
    TRIGGER trg_llm_api_calls_insert_needs_lease: CREATE TRIGGER trg_llm_api_calls_insert_needs_lease BEFORE INSERT ON llm_api_calls FOR EACH ROW EXECUTE FUNCTION fn_run_insert_needs_lease()
    TRIGGER trg_llm_api_calls_reserve: CREATE TRIGGER trg_llm_api_calls_reserve BEFORE INSERT ON llm_api_calls FOR EACH ROW EXECUTE FUNCTION fn_llm_api_calls_reserve()
    TRIGGER trg_llm_api_calls_rollup: CREATE TRIGGER trg_llm_api_calls_rollup AFTER INSERT OR UPDATE OF status ON llm_api_calls FOR EACH ROW EXECUTE FUNCTION fn_llm_api_calls_rollup()
    TRIGGER trg_llm_api_calls_run_spend: CREATE TRIGGER trg_llm_api_calls_run_spend AFTER INSERT OR UPDATE OF status, cost_cents ON llm_api_calls FOR EACH ROW EXECUTE FUNCTION fn_llm_api_calls_run_spend()
    TRIGGER trg_llm_api_calls_settled_immutable: CREATE TRIGGER trg_llm_api_calls_settled_immutable BEFORE UPDATE ON llm_api_calls FOR EACH ROW EXECUTE FUNCTION fn_llm_api_calls_settled_immutable()
    ROW LEVEL SECURITY ENABLED FORCED
    POLICY crosstenant_policy AS PERMISSIVE FOR ALL TO llm_crosstenant USING (true) WITH CHECK (true)
    POLICY tenant_isolation_policy AS PERMISSIVE FOR ALL TO public USING ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid)) WITH CHECK ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid))
    GRANT SELECT TO llm_app
    GRANT SELECT, UPDATE TO llm_crosstenant
    GRANT INSERT (attempt, budget_optimization_job_id, endpoint, id, investigation_id, max_tokens, model, provider, request_id, request_metadata, reservation_expires_at, reserved_cents, settle_token_hash, tenant_id) TO llm_app

TABLE llm_monthly_costs  -- owner: <owner>
    COMMENT 'What finance reviews: per tenant and UTC month, the exact sum of its settled calls, by model and endpoint. Written only by the ledger trigger. Data class: billing. Owner: finance. RLS: enabled and forced (tenant_isolation_policy); the application may only read it.'
    COLUMN id uuid NOT NULL DEFAULT gen_random_uuid()
    COLUMN tenant_id uuid NOT NULL
    COLUMN month date NOT NULL
    COLUMN total_cost_cents numeric(20,10) NOT NULL DEFAULT 0
    COLUMN estimated_cost_cents numeric(20,10) NOT NULL DEFAULT 0
    COLUMN total_calls bigint NOT NULL DEFAULT 0
    COLUMN total_input_tokens bigint NOT NULL DEFAULT 0
    COLUMN total_output_tokens bigint NOT NULL DEFAULT 0
    COLUMN model_breakdown jsonb NOT NULL DEFAULT '{}'::jsonb
    COLUMN endpoint_breakdown jsonb NOT NULL DEFAULT '{}'::jsonb
    COLUMN created_at timestamp with time zone NOT NULL DEFAULT now()
    COLUMN updated_at timestamp with time zone NOT NULL DEFAULT now()
    COLUMN kind_breakdown jsonb NOT NULL DEFAULT '{}'::jsonb
    COMMENT ON COLUMN kind_breakdown 'The month''s settled calls per kind of token: tokens, exact cost_cents and uncached_cents (what they would have cost at the base rate; the difference is what caching saved).'
    CONSTRAINT ck_llm_monthly_costs_month CHECK (EXTRACT(day FROM month) = 1::numeric)
    CONSTRAINT ck_llm_monthly_costs_total CHECK (total_cost_cents >= 0::numeric)
    CONSTRAINT llm_monthly_costs_pkey PRIMARY KEY (id)
    CONSTRAINT llm_monthly_costs_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
    CONSTRAINT uq_llm_monthly_costs_tenant_month UNIQUE (tenant_id, month)
    INDEX llm_monthly_costs_pkey: CREATE UNIQUE INDEX llm_monthly_costs_pkey ON public.llm_monthly_costs USING btree (id)
    INDEX uq_llm_monthly_costs_tenant_month: CREATE UNIQUE INDEX uq_llm_monthly_costs_tenant_month ON public.llm_monthly_costs USING btree (tenant_id, month)
    ROW LEVEL SECURITY ENABLED FORCED
    POLICY crosstenant_policy AS PERMISSIVE FOR ALL TO llm_crosstenant USING (true) WITH CHECK (true)
    POLICY tenant_isolation_policy AS PERMISSIVE FOR ALL TO public USING ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid)) WITH CHECK ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid))
    GRANT SELECT TO llm_app
    GRANT INSERT, SELECT, UPDATE TO llm_crosstenant

TABLE llm_validation_failures  -- owner: <owner>
    COMMENT 'Quarantine of model output that failed validation. Data class: model output (PII-redacted prompts). Owner: LLM gateway. RLS: enabled and forced (tenant_isolation_policy).'
    COLUMN id uuid NOT NULL DEFAULT gen_random_uuid()
    COLUMN tenant_id uuid NOT NULL
    COLUMN endpoint text NOT NULL
    COLUMN model text
    COLUMN llm_api_call_id uuid
    COLUMN validation_error text NOT NULL
    COLUMN request_payload jsonb
    COLUMN response_payload text
    COLUMN created_at timestamp with time zone NOT NULL DEFAULT now()
    CONSTRAINT llm_validation_failures_pkey PRIMARY KEY (id)
    CONSTRAINT llm_validation_failures_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
    INDEX idx_llm_validation_failures_retention: CREATE INDEX idx_llm_validation_failures_retention ON public.llm_validation_failures USING btree (created_at) WHERE ((request_payload IS NOT NULL) OR (response_payload IS NOT NULL))
    INDEX idx_llm_validation_failures_tenant: CREATE INDEX idx_llm_validation_failures_tenant ON public.llm_validation_failures USING btree (tenant_id, created_at DESC)
    INDEX llm_validation_failures_pkey: CREATE UNIQUE INDEX llm_validation_failures_pkey ON public.llm_validation_failures USING btree (id)
    ROW LEVEL SECURITY ENABLED FORCED
    POLICY crosstenant_policy AS PERMISSIVE FOR ALL TO llm_crosstenant USING (true) WITH CHECK (true)
    POLICY tenant_isolation_policy AS PERMISSIVE FOR ALL TO public USING ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid)) WITH CHECK ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid))
    GRANT INSERT, SELECT TO llm_app
    GRANT SELECT, UPDATE TO llm_crosstenant

TABLE pii_audit_findings  -- owner: <owner>
    COMMENT 'Where personal data was found (never the value itself). Data class: security audit. Owner: data protection. RLS: enabled and forced (tenant_isolation_policy).'
    COLUMN id uuid NOT NULL DEFAULT gen_random_uuid()
    COLUMN tenant_id uuid NOT NULL
    COLUMN source text NOT NULL DEFAULT 'scan'::text
    COLUMN table_name text
    COLUMN column_name text
    COLUMN record_id uuid
    COLUMN detected_key text NOT NULL
    COLUMN finding_kind text NOT NULL DEFAULT 'personal_key'::text
    COLUMN redacted_snippet text
    COLUMN detected_at timestamp with time zone NOT NULL DEFAULT now()
    CONSTRAINT ck_pii_audit_findings_source CHECK (source = ANY (ARRAY['scan'::text, 'llm_guard'::text, 'tool_output'::text]))
    CONSTRAINT pii_audit_findings_pkey PRIMARY KEY (id)
    CONSTRAINT pii_audit_findings_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
    INDEX idx_pii_audit_findings_tenant: CREATE INDEX idx_pii_audit_findings_tenant ON public.pii_audit_findings USING btree (tenant_id, detected_at DESC)
    INDEX pii_audit_findings_pkey: CREATE UNIQUE INDEX pii_audit_findings_pkey ON public.pii_audit_findings USING btree (id)
    INDEX uq_pii_audit_findings_scan: CREATE UNIQUE INDEX uq_pii_audit_findings_scan ON public.pii_audit_findings USING btree (tenant_id, table_name, column_name, record_id, detected_key) WHERE (source = 'scan'::text)
    ROW LEVEL SECURITY ENABLED FORCED
    POLICY crosstenant_policy AS PERMISSIVE FOR ALL TO llm_crosstenant USING (true) WITH CHECK (true)
    POLICY tenant_isolation_policy AS PERMISSIVE FOR ALL TO public USING ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid)) WITH CHECK ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid))
    GRANT INSERT, SELECT TO llm_app
    GRANT INSERT, SELECT TO llm_crosstenant

TABLE pii_scan_queue  -- owner: <owner>
    COMMENT 'Rows whose JSON (event and dead-event payloads, ledger metadata) changed and awaits the PII scan, queued by statement triggers in the transaction of the change; a scan batch deletes the entries it scanned. Data class: internal bookkeeping (ids only). Owner: data protection. RLS: enabled and forced (tenant_isolation_policy); the application may only read it, the definer functions (llm_crosstenant) write it.'
    COLUMN id bigint NOT NULL GENERATED ALWAYS AS IDENTITY
    COLUMN tenant_id uuid NOT NULL
    COLUMN source_table text NOT NULL
    COLUMN record_id uuid NOT NULL
    COLUMN queued_at timestamp with time zone NOT NULL DEFAULT now()
    CONSTRAINT ck_pii_scan_queue_source_table CHECK (source_table = ANY (ARRAY['attribution_events'::text, 'dead_events'::text, 'revenue_ledger'::text]))
    CONSTRAINT pii_scan_queue_pkey PRIMARY KEY (id)
    CONSTRAINT pii_scan_queue_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
    INDEX idx_pii_scan_queue_tenant: CREATE INDEX idx_pii_scan_queue_tenant ON public.pii_scan_queue USING btree (tenant_id)
    INDEX pii_scan_queue_pkey: CREATE UNIQUE INDEX pii_scan_queue_pkey ON public.pii_scan_queue USING btree (id)
    ROW LEVEL SECURITY ENABLED FORCED
    POLICY crosstenant_policy AS PERMISSIVE FOR ALL TO llm_crosstenant USING (true) WITH CHECK (true)
    POLICY tenant_isolation_policy AS PERMISSIVE FOR ALL TO public USING ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid)) WITH CHECK ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid))
    GRANT SELECT TO llm_app
    GRANT DELETE, INSERT, SELECT, UPDATE TO llm_crosstenant

TABLE reconciliation_runs  -- owner: <owner>
    COMMENT 'Job tracking for channel and revenue reconciliation. Data class: operational. Owner: reconciliation. RLS: enabled and forced (tenant_isolation_policy).'
    COLUMN id uuid NOT NULL DEFAULT gen_random_uuid()
    COLUMN tenant_id uuid NOT NULL
    COLUMN state text NOT NULL DEFAULT 'idle'::text
    COLUMN last_run_at timestamp with time zone
    COLUMN error_message text
    COLUMN run_metadata jsonb NOT NULL DEFAULT '{}'::jsonb
    COLUMN created_at timestamp with time zone NOT NULL DEFAULT now()
    COLUMN updated_at timestamp with time zone NOT NULL DEFAULT now()
    CONSTRAINT ck_reconciliation_runs_state CHECK (state = ANY (ARRAY['idle'::text, 'running'::text, 'failed'::text, 'completed'::text]))
    CONSTRAINT reconciliation_runs_pkey PRIMARY KEY (id)
    CONSTRAINT reconciliation_runs_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
    CONSTRAINT uq_reconciliation_runs_tenant_id UNIQUE (tenant_id, id)
    INDEX idx_reconciliation_runs_tenant: CREATE INDEX idx_reconciliation_runs_tenant ON public.reconciliation_runs USING btree (tenant_id, created_at DESC)
    INDEX reconciliation_runs_pkey: CREATE UNIQUE INDEX reconciliation_runs_pkey ON public.reconciliation_runs USING btree (id)
    INDEX uq_reconciliation_runs_tenant_id: CREATE UNIQUE INDEX uq_reconciliation_runs_tenant_id ON public.reconciliation_runs USING btree (tenant_id, id)
    TRIGGER trg_reconciliation_runs_journal_delete: CREATE TRIGGER trg_reconciliation_runs_journal_delete AFTER DELETE ON reconciliation_runs REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_journal_reconciliation_runs()
    TRIGGER trg_reconciliation_runs_journal_insert: CREATE TRIGGER trg_reconciliation_runs_journal_insert AFTER INSERT ON reconciliation_runs REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_journal_reconciliation_runs()
    TRIGGER trg_reconciliation_runs_journal_update: CREATE TRIGGER trg_reconciliation_runs_journal_update AFTER UPDATE ON reconciliation_runs REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_journal_reconciliation_runs()
    TRIGGER trg_reconciliation_runs_updated_at: CREATE TRIGGER trg_reconciliation_runs_updated_at BEFORE UPDATE ON reconciliation_runs FOR EACH ROW EXECUTE FUNCTION fn_set_updated_at()
    ROW LEVEL SECURITY ENABLED FORCED
    POLICY tenant_isolation_policy AS PERMISSIVE FOR ALL TO public USING ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid)) WITH CHECK ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid))
    GRANT DELETE, INSERT, SELECT, UPDATE TO llm_app

TABLE revenue_ledger  -- owner: <owner>
    COMMENT 'Verified money: authorisations, captures, refunds, chargebacks. Data class: financial, may hold PII in metadata. Owner: revenue. RLS: enabled and forced (tenant_isolation_policy).'
    COLUMN id uuid NOT NULL DEFAULT gen_random_uuid()
    COLUMN tenant_id uuid NOT NULL
    COLUMN transaction_id text NOT NULL
    COLUMN order_id text
    COLUMN allocation_id uuid
    COLUMN state text NOT NULL
    COLUMN previous_state text
    COLUMN amount_cents bigint NOT NULL
    COLUMN revenue_cents bigint NOT NULL
    COLUMN currency text NOT NULL DEFAULT 'USD'::text
    COLUMN is_verified boolean NOT NULL DEFAULT false
    COLUMN verified_at timestamp with time zone
    COLUMN verification_source text
    COLUMN reconciliation_run_id uuid
    COLUMN posted_at timestamp with time zone NOT NULL DEFAULT now()
    COLUMN metadata jsonb NOT NULL DEFAULT '{}'::jsonb
    COLUMN created_at timestamp with time zone NOT NULL DEFAULT now()
    COLUMN updated_at timestamp with time zone NOT NULL DEFAULT now()
    CONSTRAINT ck_revenue_ledger_amount CHECK (amount_cents >= 0)
    CONSTRAINT ck_revenue_ledger_currency CHECK (currency ~ '^[A-Z]{3}$'::text)
    CONSTRAINT ck_revenue_ledger_previous_state CHECK (previous_state = ANY (ARRAY['authorized'::text, 'captured'::text, 'refunded'::text, 'chargeback'::text]))
    CONSTRAINT ck_revenue_ledger_revenue CHECK (revenue_cents >= 0)
    CONSTRAINT ck_revenue_ledger_state CHECK (state = ANY (ARRAY['authorized'::text, 'captured'::text, 'refunded'::text, 'chargeback'::text]))
    CONSTRAINT ck_revenue_ledger_transaction_id CHECK (btrim(transaction_id) <> ''::text)
    CONSTRAINT fk_revenue_ledger_allocation FOREIGN KEY (tenant_id, allocation_id) REFERENCES attribution_allocations(tenant_id, id) ON DELETE SET NULL (allocation_id)
    CONSTRAINT fk_revenue_ledger_reconciliation_run FOREIGN KEY (tenant_id, reconciliation_run_id) REFERENCES reconciliation_runs(tenant_id, id) ON DELETE SET NULL (reconciliation_run_id)
    CONSTRAINT revenue_ledger_pkey PRIMARY KEY (id)
    CONSTRAINT revenue_ledger_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
    CONSTRAINT uq_revenue_ledger_tenant_id UNIQUE (tenant_id, id)
    INDEX idx_revenue_ledger_allocation: CREATE INDEX idx_revenue_ledger_allocation ON public.revenue_ledger USING btree (tenant_id, allocation_id)
    INDEX idx_revenue_ledger_order: CREATE INDEX idx_revenue_ledger_order ON public.revenue_ledger USING btree (tenant_id, order_id)
    INDEX idx_revenue_ledger_posted: CREATE INDEX idx_revenue_ledger_posted ON public.revenue_ledger USING btree (tenant_id, posted_at DESC)
    INDEX idx_revenue_ledger_transaction: CREATE UNIQUE INDEX idx_revenue_ledger_transaction ON public.revenue_ledger USING btree (tenant_id, transaction_id)
    INDEX revenue_ledger_pkey: CREATE UNIQUE INDEX revenue_ledger_pkey ON public.revenue_ledger USING btree (id)
    INDEX uq_revenue_ledger_tenant_id: CREATE UNIQUE INDEX uq_revenue_ledger_tenant_id ON public.revenue_ledger USING btree (tenant_id, id)
    TRIGGER trg_revenue_ledger_audit_state: CREATE TRIGGER trg_revenue_ledger_audit_state BEFORE UPDATE OF state ON revenue_ledger FOR EACH ROW EXECUTE FUNCTION fn_revenue_ledger_audit_state()
    TRIGGER trg_revenue_ledger_journal_delete: CREATE TRIGGER trg_revenue_ledger_journal_delete AFTER DELETE ON revenue_ledger REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_journal_revenue_ledger()
    TRIGGER trg_revenue_ledger_journal_insert: CREATE TRIGGER trg_revenue_ledger_journal_insert AFTER INSERT ON revenue_ledger REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_journal_revenue_ledger()
    TRIGGER trg_revenue_ledger_journal_update: CREATE TRIGGER trg_revenue_ledger_journal_update AFTER UPDATE ON revenue_ledger REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_journal_revenue_ledger()
    TRIGGER trg_revenue_ledger_pii_queue_insert: CREATE TRIGGER trg_revenue_ledger_pii_queue_insert AFTER INSERT ON revenue_ledger REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_pii_queue_revenue_ledger()
    TRIGGER trg_revenue_ledger_pii_queue_update: CREATE TRIGGER trg_revenue_ledger_pii_queue_update AFTER UPDATE ON revenue_ledger REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_pii_queue_revenue_ledger()
    TRIGGER trg_revenue_ledger_updated_at: CREATE TRIGGER trg_revenue_ledger_updated_at BEFORE UPDATE ON revenue_ledger FOR EACH ROW EXECUTE FUNCTION fn_set_updated_at()
    ROW LEVEL SECURITY ENABLED FORCED
    POLICY crosstenant_policy AS PERMISSIVE FOR SELECT TO llm_crosstenant USING (true)
    POLICY tenant_isolation_policy AS PERMISSIVE FOR ALL TO public USING ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid)) WITH CHECK ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid))
    GRANT DELETE, INSERT, SELECT, UPDATE TO llm_app
    GRANT SELECT TO llm_crosstenant

TABLE revenue_state_transitions  -- owner: <owner>
    COMMENT 'Audit of ledger state changes (refunds, chargebacks). Data class: financial audit. Owner: revenue. RLS: enabled and forced (tenant_isolation_policy).'
    COLUMN id uuid NOT NULL DEFAULT gen_random_uuid()
    COLUMN tenant_id uuid NOT NULL
    COLUMN ledger_id uuid NOT NULL
    COLUMN from_state text
    COLUMN to_state text NOT NULL
    COLUMN reason text
    COLUMN transitioned_at timestamp with time zone NOT NULL DEFAULT now()
    CONSTRAINT ck_revenue_state_transitions_changes CHECK (from_state IS DISTINCT FROM to_state)
    CONSTRAINT ck_revenue_state_transitions_from CHECK (from_state = ANY (ARRAY['authorized'::text, 'captured'::text, 'refunded'::text, 'chargeback'::text]))
    CONSTRAINT ck_revenue_state_transitions_to CHECK (to_state = ANY (ARRAY['authorized'::text, 'captured'::text, 'refunded'::text, 'chargeback'::text]))
    CONSTRAINT fk_revenue_state_transitions_ledger FOREIGN KEY (tenant_id, ledger_id) REFERENCES revenue_ledger(tenant_id, id) ON DELETE CASCADE
    CONSTRAINT revenue_state_transitions_pkey PRIMARY KEY (id)
    CONSTRAINT revenue_state_transitions_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
    INDEX idx_revenue_state_transitions_ledger: CREATE INDEX idx_revenue_state_transitions_ledger ON public.revenue_state_transitions USING btree (tenant_id, ledger_id)
    INDEX idx_revenue_state_transitions_tenant: CREATE INDEX idx_revenue_state_transitions_tenant ON public.revenue_state_transitions USING btree (tenant_id, transitioned_at DESC)
    INDEX revenue_state_transitions_pkey: CREATE UNIQUE INDEX revenue_state_transitions_pkey ON public.revenue_state_transitions USING btree (id)
    TRIGGER trg_revenue_state_transitions_journal_delete: CREATE TRIGGER trg_revenue_state_transitions_journal_delete AFTER DELETE ON revenue_state_transitions REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_journal_revenue_state_transitions()
    TRIGGER trg_revenue_state_transitions_journal_insert: CREATE TRIGGER trg_revenue_state_transitions_journal_insert AFTER INSERT ON revenue_state_transitions REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_journal_revenue_state_transitions()
    TRIGGER trg_revenue_state_transitions_journal_update: CREATE TRIGGER trg_revenue_state_transitions_journal_update AFTER UPDATE ON revenue_state_transitions REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fn_journal_revenue_state_transitions()
    ROW LEVEL SECURITY ENABLED FORCED
    POLICY crosstenant_policy AS PERMISSIVE FOR SELECT TO llm_crosstenant USING (true)
    POLICY tenant_isolation_policy AS PERMISSIVE FOR ALL TO public USING ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid)) WITH CHECK ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid))
    GRANT DELETE, INSERT, SELECT, UPDATE TO llm_app
    GRANT SELECT TO llm_crosstenant

TABLE run_cancel_requests  -- owner: <owner>
    COMMENT 'The API''s cancel requests of running runs, one per run, kept off the run''s row (a request left uncommitted holds no run). No foreign key to the run (its check would lock the run): fn_cancel_investigation writes a request only for a running run of the tenant. Data class: request metadata. Owner: jobs. RLS: enabled and forced (tenant_isolation_policy); the application may only read it.'
    COLUMN tenant_id uuid NOT NULL
    COLUMN run_id uuid NOT NULL
    COLUMN kind text NOT NULL
    COLUMN requested_at timestamp with time zone NOT NULL DEFAULT now()
    CONSTRAINT ck_run_cancel_requests_kind CHECK (kind = 'investigation'::text)
    CONSTRAINT run_cancel_requests_pkey PRIMARY KEY (tenant_id, run_id)
    CONSTRAINT run_cancel_requests_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
    INDEX run_cancel_requests_pkey: CREATE UNIQUE INDEX run_cancel_requests_pkey ON public.run_cancel_requests USING btree (tenant_id, run_id)
    ROW LEVEL SECURITY ENABLED FORCED
    POLICY crosstenant_policy AS PERMISSIVE FOR ALL TO llm_crosstenant USING (true) WITH CHECK (true)
    POLICY tenant_isolation_policy AS PERMISSIVE FOR ALL TO public USING ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid)) WITH CHECK ((tenant_id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid))
    GRANT SELECT TO llm_app
    GRANT INSERT, SELECT TO llm_crosstenant

TABLE tenants  -- owner: <owner>
    COMMENT 'Root of tenancy: one row per customer. Data class: account metadata. Owner: platform. RLS: enabled and forced, a tenant sees only its own row; API keys resolve through fn_tenant_for_api_key_hash().'
    COLUMN id uuid NOT NULL DEFAULT gen_random_uuid()
    COLUMN name text NOT NULL
    COLUMN api_key_hash text NOT NULL
    COLUMN notification_email text
    COLUMN created_at timestamp with time zone NOT NULL DEFAULT now()
    COLUMN updated_at timestamp with time zone NOT NULL DEFAULT now()
    COLUMN monthly_cap_cents numeric(20,10) NOT NULL DEFAULT 2000
    COMMENT ON COLUMN monthly_cap_cents 'The most this tenant may spend on LLM calls in a calendar month (UTC), in cents.'
    CONSTRAINT ck_tenants_api_key_hash_sha256 CHECK (api_key_hash ~ '^[0-9a-f]{64}$'::text)
    CONSTRAINT ck_tenants_monthly_cap CHECK (monthly_cap_cents >= 0::numeric)
    CONSTRAINT ck_tenants_name_not_blank CHECK (btrim(name) <> ''::text)
    CONSTRAINT tenants_pkey PRIMARY KEY (id)
    CONSTRAINT uq_tenants_api_key_hash UNIQUE (api_key_hash)
    INDEX tenants_pkey: CREATE UNIQUE INDEX tenants_pkey ON public.tenants USING btree (id)
    INDEX uq_tenants_api_key_hash: CREATE UNIQUE INDEX uq_tenants_api_key_hash ON public.tenants USING btree (api_key_hash)
    TRIGGER trg_tenants_updated_at: CREATE TRIGGER trg_tenants_updated_at BEFORE UPDATE ON tenants FOR EACH ROW EXECUTE FUNCTION fn_set_updated_at()
    ROW LEVEL SECURITY ENABLED FORCED
    POLICY crosstenant_lock_policy AS PERMISSIVE FOR UPDATE TO llm_crosstenant USING (true) WITH CHECK (false)
    POLICY crosstenant_policy AS PERMISSIVE FOR SELECT TO llm_crosstenant USING (true)
    POLICY tenant_isolation_policy AS PERMISSIVE FOR ALL TO public USING ((id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid)) WITH CHECK ((id = (NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))::uuid))
    GRANT SELECT TO llm_app
    GRANT SELECT TO llm_crosstenant
    GRANT UPDATE (monthly_cap_cents) TO llm_crosstenant

FUNCTION fn_attribution_events_immutable()  -- owner: <owner>; SECURITY INVOKER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_attribution_events_immutable()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
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
$function$

FUNCTION fn_breakdown_add(p_breakdown jsonb, p_key text, p_cost numeric, p_input bigint, p_output bigint)  -- owner: <owner>; SECURITY INVOKER; EXECUTE: llm_crosstenant, owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_breakdown_add(p_breakdown jsonb, p_key text, p_cost numeric, p_input bigint, p_output bigint)
 RETURNS jsonb
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT p_breakdown || jsonb_build_object(p_key, jsonb_build_object(
        'calls', coalesce((p_breakdown -> p_key ->> 'calls')::bigint, 0) + 1,
        'cost_cents', coalesce((p_breakdown -> p_key ->> 'cost_cents')::numeric, 0) + p_cost,
        'input_tokens', coalesce((p_breakdown -> p_key ->> 'input_tokens')::bigint, 0) + p_input,
        'output_tokens', coalesce((p_breakdown -> p_key ->> 'output_tokens')::bigint, 0) + p_output))
$function$

FUNCTION fn_cancel_investigation(p_run uuid)  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: llm_app, owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_cancel_investigation(p_run uuid)
 RETURNS SETOF investigations
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
DECLARE
    v_run investigations;
BEGIN
    -- A queued run is cancelled at once (its row written: see the docstring).
    RETURN QUERY
    UPDATE investigations r
       SET cancel_requested = true, status = 'cancelled', reason = 'cancelled before it started',
           finished_at = now()
     WHERE r.id = p_run AND r.tenant_id = nullif(current_setting('app.current_tenant_id', true), '')::uuid AND r.status = 'queued'
    RETURNING r.*;
    IF FOUND THEN
        RETURN;
    END IF;
    -- A running one has its cancel requested for its worker, once, without writing (nor
    -- keeping a lock on) the run's row. A write of the run in flight (its end) is waited for
    -- first, so the answer is what it committed: FOR SHARE (it waits for writers only, not for
    -- the holder's KEY SHARE) in a subtransaction rolled back at once, which releases the lock.
    BEGIN
        PERFORM 1 FROM investigations r
         WHERE r.id = p_run AND r.tenant_id = nullif(current_setting('app.current_tenant_id', true), '')::uuid AND r.status = 'running'
           FOR SHARE;
        RAISE EXCEPTION 'release' USING ERRCODE = 'LLREL';
    EXCEPTION WHEN SQLSTATE 'LLREL' THEN
        NULL;  -- the row lock went with the subtransaction
    END;
    -- A terminal run is left as it is.
    SELECT r.* INTO v_run FROM investigations r
     WHERE r.id = p_run AND r.tenant_id = nullif(current_setting('app.current_tenant_id', true), '')::uuid AND r.status = 'running'
       AND NOT (r.cancel_requested OR EXISTS (SELECT 1 FROM run_cancel_requests q WHERE q.tenant_id = r.tenant_id AND q.run_id = r.id AND q.kind = 'investigation'));
    IF NOT FOUND THEN
        RETURN;
    END IF;
    INSERT INTO run_cancel_requests (tenant_id, run_id, kind)
    VALUES (v_run.tenant_id, v_run.id, 'investigation')
    ON CONFLICT (tenant_id, run_id) DO NOTHING;
    IF FOUND THEN
        v_run.cancel_requested := true;
        RETURN NEXT v_run;
    END IF;
END
$function$

FUNCTION fn_check_allocation_sums()  -- owner: <owner>; SECURITY INVOKER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_check_allocation_sums()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
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
$function$

FUNCTION fn_claim_next_run(p_worker text, p_lease_seconds double precision, p_running uuid[], p_kinds text[])  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: llm_app, owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_claim_next_run(p_worker text, p_lease_seconds double precision, p_running uuid[] DEFAULT '{}'::uuid[], p_kinds text[] DEFAULT NULL::text[])
 RETURNS TABLE(kind text, run_id uuid, tenant_id uuid, takeover boolean, lease_token uuid)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
DECLARE
    v_id uuid;
    v_takeover boolean;
    v_token uuid;
BEGIN
    -- A lease is seconds to an hour: a caller cannot hold another tenant's run for years.
    IF p_lease_seconds IS NULL OR NOT (p_lease_seconds > 0 AND p_lease_seconds <= 3600)
       OR p_worker IS NULL OR length(p_worker) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'a claim needs a worker name (1-200 characters) and a lease of (0, 3600] s'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_takeover IN SELECT unnest(ARRAY[true, false]) LOOP
        IF p_kinds IS NULL OR 'investigation' = ANY (p_kinds) THEN
            SELECT r.id INTO v_id FROM investigations r
             -- A worker never takes over a run it is still executing (p_running: a late
             -- heartbeat is not a dead worker), but does take over its own runs it no longer
             -- executes (a claim whose answer was lost, an end not recorded in an outage).
             WHERE CASE WHEN v_takeover THEN r.status = 'running' AND r.lease_expires_at < now()
                                             AND (r.lease_owner IS DISTINCT FROM p_worker
                                                  OR r.id <> ALL (p_running))
                        ELSE r.status = 'queued' END
             ORDER BY r.queued_at LIMIT 1 FOR UPDATE SKIP LOCKED;
            IF v_id IS NOT NULL THEN
                v_token := gen_random_uuid();
                RETURN QUERY UPDATE investigations r
                    SET status = 'running', lease_owner = p_worker, heartbeat_at = now(),
                        lease_expires_at = now() + make_interval(secs => p_lease_seconds),
                        lease_token_hash = sha256(uuid_send(v_token)),
                        attempts = r.attempts + 1, started_at = coalesce(r.started_at, now())
                  WHERE r.id = v_id
                  RETURNING 'investigation'::text, r.id, r.tenant_id, v_takeover, v_token;
                RETURN;
            END IF;
        END IF;
        IF p_kinds IS NULL OR 'budget_optimization' = ANY (p_kinds) THEN
            SELECT r.id INTO v_id FROM budget_optimization_jobs r
             -- A worker never takes over a run it is still executing (p_running: a late
             -- heartbeat is not a dead worker), but does take over its own runs it no longer
             -- executes (a claim whose answer was lost, an end not recorded in an outage).
             WHERE CASE WHEN v_takeover THEN r.status = 'running' AND r.lease_expires_at < now()
                                             AND (r.lease_owner IS DISTINCT FROM p_worker
                                                  OR r.id <> ALL (p_running))
                        ELSE r.status = 'queued' END
             ORDER BY r.queued_at LIMIT 1 FOR UPDATE SKIP LOCKED;
            IF v_id IS NOT NULL THEN
                v_token := gen_random_uuid();
                RETURN QUERY UPDATE budget_optimization_jobs r
                    SET status = 'running', lease_owner = p_worker, heartbeat_at = now(),
                        lease_expires_at = now() + make_interval(secs => p_lease_seconds),
                        lease_token_hash = sha256(uuid_send(v_token)),
                        attempts = r.attempts + 1, started_at = coalesce(r.started_at, now())
                  WHERE r.id = v_id
                  RETURNING 'budget_optimization'::text, r.id, r.tenant_id, v_takeover, v_token;
                RETURN;
            END IF;
        END IF;
    END LOOP;
END
$function$

FUNCTION fn_finance_daily_costs(p_month date)  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: llm_app, owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_finance_daily_costs(p_month date)
 RETURNS TABLE(day date, tenant_id uuid, model text, cost_cents numeric, calls bigint)
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
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
$function$

FUNCTION fn_finance_monthly_costs(p_month date)  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: llm_app, owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_finance_monthly_costs(p_month date)
 RETURNS TABLE(tenant_id uuid, tenant_name text, total_cost_cents numeric, estimated_cost_cents numeric, calls bigint, input_tokens bigint, output_tokens bigint, model_breakdown jsonb, endpoint_breakdown jsonb, monthly_cap_cents numeric, kind_breakdown jsonb)
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
BEGIN
    IF p_month IS NULL OR extract(day FROM p_month) <> 1 THEN
        RAISE EXCEPTION 'month must be the first day of a month, not %', p_month
            USING ERRCODE = '22023';
    END IF;
    -- Every tenant that existed in the month or spent in it; no spend reads as zero.
    RETURN QUERY
    SELECT t.id, t.name, coalesce(m.total_cost_cents, 0), coalesce(m.estimated_cost_cents, 0),
           coalesce(m.total_calls, 0), coalesce(m.total_input_tokens, 0),
           coalesce(m.total_output_tokens, 0), coalesce(m.model_breakdown, '{}'::jsonb),
           coalesce(m.endpoint_breakdown, '{}'::jsonb), t.monthly_cap_cents, coalesce(m.kind_breakdown, '{}'::jsonb)
      FROM tenants t
      LEFT JOIN llm_monthly_costs m ON m.tenant_id = t.id AND m.month = p_month
     WHERE m.id IS NOT NULL OR t.created_at < (p_month + interval '1 month') AT TIME ZONE 'UTC'
     ORDER BY coalesce(m.total_cost_cents, 0) DESC, t.id;
END
$function$

FUNCTION fn_finish_investigation(p_run uuid, p_worker text, p_status text, p_reason text, p_elapsed_ms integer, p_result jsonb, p_degraded boolean)  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: llm_app, owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_finish_investigation(p_run uuid, p_worker text, p_status text, p_reason text, p_elapsed_ms integer, p_result jsonb, p_degraded boolean)
 RETURNS numeric
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
DECLARE
    v_hash bytea := CASE WHEN nullif(current_setting('llm.run_token', true), '') IS NOT NULL
        THEN sha256(uuid_send(current_setting('llm.run_token', true)::uuid)) END;
    v_spent numeric;
BEGIN
    IF p_status IS NULL OR p_status NOT IN ('succeeded', 'budget_exhausted', 'timed_out', 'failed', 'cancelled') THEN
        RAISE EXCEPTION 'a run ends in a terminal state, not %', p_status
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Locked FOR UPDATE first (by its holder only): the end waits for the run's writes in
    -- flight (KEY SHARE), and none of them commits after it.
    PERFORM 1 FROM investigations r WHERE r.id = p_run AND r.tenant_id = nullif(current_setting('app.current_tenant_id', true), '')::uuid AND r.status = 'running' AND r.lease_owner = p_worker AND r.lease_token_hash = v_hash FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE investigations r
       SET status = p_status, reason = p_reason, elapsed_ms = p_elapsed_ms, result = p_result,
           degraded = p_degraded, finished_at = now(), lease_owner = NULL, lease_expires_at = NULL
     WHERE r.id = p_run
    RETURNING r.cost_cents INTO v_spent;
    RETURN v_spent;
END
$function$

FUNCTION fn_finish_optimization(p_job uuid, p_worker text, p_status text, p_reason text, p_recommendations jsonb, p_rationale text, p_degraded boolean)  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: llm_app, owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_finish_optimization(p_job uuid, p_worker text, p_status text, p_reason text, p_recommendations jsonb, p_rationale text, p_degraded boolean)
 RETURNS boolean
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
DECLARE
    v_hash bytea := CASE WHEN nullif(current_setting('llm.run_token', true), '') IS NOT NULL
        THEN sha256(uuid_send(current_setting('llm.run_token', true)::uuid)) END;
BEGIN
    IF p_status IS NULL OR p_status NOT IN ('succeeded', 'budget_exhausted', 'timed_out', 'failed', 'cancelled') THEN
        RAISE EXCEPTION 'a run ends in a terminal state, not %', p_status
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- As an investigation's end: locked FOR UPDATE first, by its holder only.
    PERFORM 1 FROM budget_optimization_jobs r WHERE r.id = p_job AND r.tenant_id = nullif(current_setting('app.current_tenant_id', true), '')::uuid AND r.status = 'running' AND r.lease_owner = p_worker AND r.lease_token_hash = v_hash FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE budget_optimization_jobs r
       SET status = p_status, reason = p_reason, recommendations = p_recommendations,
           rationale = p_rationale, degraded = p_degraded, finished_at = now(),
           lease_owner = NULL, lease_expires_at = NULL
     WHERE r.id = p_job;
    RETURN FOUND;
END
$function$

FUNCTION fn_hand_back_run(p_kind text, p_run uuid, p_worker text)  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: llm_app, owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_hand_back_run(p_kind text, p_run uuid, p_worker text)
 RETURNS boolean
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
DECLARE
    v_hash bytea := CASE WHEN nullif(current_setting('llm.run_token', true), '') IS NOT NULL
        THEN sha256(uuid_send(current_setting('llm.run_token', true)::uuid)) END;
BEGIN
    -- The holder ends its lease at once (shutdown): any worker may take the run over now.
    IF p_kind = 'investigation' THEN
        UPDATE investigations r SET lease_expires_at = now() WHERE r.id = p_run AND r.tenant_id = nullif(current_setting('app.current_tenant_id', true), '')::uuid AND r.status = 'running' AND r.lease_owner = p_worker AND r.lease_token_hash = v_hash;
        RETURN FOUND;
    END IF;
    IF p_kind = 'budget_optimization' THEN
        UPDATE budget_optimization_jobs r SET lease_expires_at = now() WHERE r.id = p_run AND r.tenant_id = nullif(current_setting('app.current_tenant_id', true), '')::uuid AND r.status = 'running' AND r.lease_owner = p_worker AND r.lease_token_hash = v_hash;
        RETURN FOUND;
    END IF;
    RAISE EXCEPTION 'no job kind %', p_kind USING ERRCODE = 'invalid_parameter_value';
END
$function$

FUNCTION fn_is_personal_key(p_key text)  -- owner: <owner>; SECURITY INVOKER; EXECUTE: llm_app, llm_crosstenant, owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_is_personal_key(p_key text)
 RETURNS boolean
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT fn_normalize_json_key(p_key) = ANY (ARRAY['address', 'address1', 'address2', 'address_line1', 'address_line2', 'address_line_1', 'address_line_2', 'bank_account', 'bank_account_number', 'billing_address', 'billing_email', 'billing_name', 'billing_phone', 'birth_date', 'birthdate', 'birthday', 'card_holder', 'card_holder_name', 'card_number', 'cardholder_name', 'cc_number', 'cell_phone', 'cellphone', 'client_ip', 'contact_email', 'contact_name', 'contact_phone', 'credit_card', 'credit_card_number', 'customer_email', 'customer_ip', 'customer_name', 'customer_phone', 'cvc', 'cvv', 'date_of_birth', 'dob', 'driver_license', 'driver_license_number', 'drivers_license', 'drivers_license_number', 'driving_licence', 'driving_license', 'e_mail', 'e_mail_address', 'email', 'email_address', 'family_name', 'fax', 'first_name', 'firstname', 'full_name', 'fullname', 'geo_location', 'geolocation', 'given_name', 'home_address', 'home_phone', 'house_number', 'iban', 'ip', 'ip_address', 'ip_v4', 'ip_v6', 'ipv4', 'ipv6', 'itin', 'last_name', 'lastname', 'lat', 'latitude', 'lng', 'lon', 'longitude', 'maiden_name', 'mailing_address', 'middle_name', 'mobile', 'mobile_number', 'mobile_phone', 'msisdn', 'national_id', 'national_id_number', 'national_insurance_number', 'nino', 'passport', 'passport_no', 'passport_number', 'personal_email', 'phone', 'phone_no', 'phone_number', 'post_code', 'postal_address', 'postal_code', 'postcode', 'recipient_name', 'remote_addr', 'remote_address', 'remote_ip', 'shipping_address', 'shipping_email', 'shipping_name', 'shipping_phone', 'social_security', 'social_security_number', 'ssn', 'street', 'street_address', 'surname', 'tax_id', 'taxpayer_id', 'tel', 'telephone', 'telephone_number', 'tin', 'user_email', 'user_ip', 'user_name', 'username', 'work_email', 'work_phone', 'x_forwarded_for', 'x_real_ip', 'zip', 'zip_code', 'zipcode']::text[])
$function$

FUNCTION fn_job_key_names_a_run()  -- owner: <owner>; SECURITY INVOKER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_job_key_names_a_run()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
BEGIN
    -- Another tenant's key is refused by row-level security (WITH CHECK), after this trigger.
    IF current_user <> 'llm_app' OR NEW.tenant_id IS DISTINCT FROM nullif(current_setting('app.current_tenant_id', true), '')::uuid THEN
        RETURN NEW;
    END IF;
    IF NEW.kind = 'investigation' AND EXISTS (
        SELECT 1 FROM investigations WHERE id = NEW.run_id AND tenant_id = NEW.tenant_id) THEN
        RETURN NEW;
    END IF;
    IF NEW.kind = 'budget_optimization' AND EXISTS (
        SELECT 1 FROM budget_optimization_jobs WHERE id = NEW.run_id AND tenant_id = NEW.tenant_id) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'idempotency key % names no % run of this tenant',
        NEW.idempotency_key, NEW.kind USING ERRCODE = 'foreign_key_violation';
END
$function$

FUNCTION fn_journal_attribution_allocations()  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_journal_attribution_allocations()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
 SET enable_seqscan TO 'off'
 SET enable_hashjoin TO 'off'
 SET enable_mergejoin TO 'off'
AS $function$
BEGIN
    IF TG_RELID <> 'public.attribution_allocations'::regclass THEN
        RAISE EXCEPTION 'this trigger function belongs to public.attribution_allocations, not %',
            TG_RELID::regclass USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO data_change_journal AS j (tenant_id, part, channel, day)
        SELECT k.tenant_id, k.part, k.channel, k.day
          FROM (SELECT DISTINCT c.tenant_id, c.part, r.channel, c.day
                  FROM (
            SELECT x.tenant_id, 'allocations', (e.occurred_at AT TIME ZONE 'UTC')::date, x.channel_code
              FROM (SELECT DISTINCT tenant_id, event_id, channel_code FROM new_rows) AS x
              JOIN attribution_events e ON e.tenant_id = x.tenant_id AND e.id = x.event_id
             WHERE e.revenue_cents > 0
                       ) AS c (tenant_id, part, day, channel)
                 CROSS JOIN LATERAL (VALUES (c.channel), ('')) AS r (channel)
                 WHERE c.day IS NOT NULL AND r.channel IS NOT NULL) AS k
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
         ORDER BY k.tenant_id, k.part, k.channel, k.day
        ON CONFLICT (tenant_id, part, channel, day)
        DO UPDATE SET version = j.version + 1, changed_at = now();
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO data_change_journal AS j (tenant_id, part, channel, day)
        SELECT k.tenant_id, k.part, k.channel, k.day
          FROM (SELECT DISTINCT c.tenant_id, c.part, r.channel, c.day
                  FROM (SELECT c.*, true FROM (
            SELECT x.tenant_id, 'allocations', (e.occurred_at AT TIME ZONE 'UTC')::date, x.channel_code
              FROM (SELECT DISTINCT tenant_id, event_id, channel_code FROM (SELECT tenant_id, event_id, channel_code FROM old_rows UNION SELECT tenant_id, event_id, channel_code FROM new_rows) AS b) AS x
              JOIN attribution_events e ON e.tenant_id = x.tenant_id AND e.id = x.event_id
             WHERE e.revenue_cents > 0
            UNION ALL
            SELECT c.tenant_id, 'corrections', (e.occurred_at AT TIME ZONE 'UTC')::date, ch.channel
              FROM (
                SELECT u.tenant_id, u.id, u.event_id
                  FROM (SELECT tenant_id, id, event_id, count(*) OVER (PARTITION BY id) AS versions
                          FROM (SELECT tenant_id, id, event_id FROM old_rows
                                UNION SELECT tenant_id, id, event_id FROM new_rows) AS b
                       ) AS u
                 WHERE u.versions > 1) AS x
              JOIN channel_assignment_corrections c
                ON c.tenant_id = x.tenant_id AND c.entity_type = 'allocation'
               AND c.entity_id = x.id
              JOIN attribution_events e ON e.tenant_id = x.tenant_id AND e.id = x.event_id
             CROSS JOIN LATERAL (VALUES (c.from_channel), (c.to_channel)) AS ch (channel)
                        ) AS c (tenant_id, part, day, channel)
                        UNION ALL
                        SELECT m.*, false FROM (
            SELECT l.tenant_id, 'ledger', (l.posted_at AT TIME ZONE 'UTC')::date, r.channel_code
              FROM (
                SELECT u.tenant_id, u.id, u.channel_code
                  FROM (SELECT tenant_id, id, channel_code, count(*) OVER (PARTITION BY id) AS versions
                          FROM (SELECT tenant_id, id, channel_code FROM old_rows
                                UNION SELECT tenant_id, id, channel_code FROM new_rows) AS b
                       ) AS u
                 WHERE u.versions > 1) AS r
              JOIN revenue_ledger l ON l.tenant_id = r.tenant_id AND l.allocation_id = r.id
            UNION ALL
            SELECT t.tenant_id, 'transitions', (t.transitioned_at AT TIME ZONE 'UTC')::date, r.channel_code
              FROM (
                SELECT u.tenant_id, u.id, u.channel_code
                  FROM (SELECT tenant_id, id, channel_code, count(*) OVER (PARTITION BY id) AS versions
                          FROM (SELECT tenant_id, id, channel_code FROM old_rows
                                UNION SELECT tenant_id, id, channel_code FROM new_rows) AS b
                       ) AS u
                 WHERE u.versions > 1) AS r
              JOIN revenue_ledger l ON l.tenant_id = r.tenant_id AND l.allocation_id = r.id
              JOIN revenue_state_transitions t
                ON t.tenant_id = l.tenant_id AND t.ledger_id = l.id
                        ) AS m (tenant_id, part, day, channel)
                       ) AS c (tenant_id, part, day, channel, rolls_up)
                 CROSS JOIN LATERAL (VALUES (c.channel), (CASE WHEN c.rolls_up THEN '' END)) AS r (channel)
                 WHERE c.day IS NOT NULL AND r.channel IS NOT NULL) AS k
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
         ORDER BY k.tenant_id, k.part, k.channel, k.day
        ON CONFLICT (tenant_id, part, channel, day)
        DO UPDATE SET version = j.version + 1, changed_at = now();
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO data_change_journal AS j (tenant_id, part, channel, day)
        SELECT k.tenant_id, k.part, k.channel, k.day
          FROM (SELECT DISTINCT c.tenant_id, c.part, r.channel, c.day
                  FROM (
            SELECT x.tenant_id, 'allocations', (e.occurred_at AT TIME ZONE 'UTC')::date, x.channel_code
              FROM (SELECT DISTINCT tenant_id, event_id, channel_code FROM old_rows) AS x
              JOIN attribution_events e ON e.tenant_id = x.tenant_id AND e.id = x.event_id
             WHERE e.revenue_cents > 0
            UNION ALL
            SELECT c.tenant_id, 'corrections', (e.occurred_at AT TIME ZONE 'UTC')::date, ch.channel
              FROM old_rows AS x
              JOIN channel_assignment_corrections c
                ON c.tenant_id = x.tenant_id AND c.entity_type = 'allocation'
               AND c.entity_id = x.id
              JOIN attribution_events e ON e.tenant_id = x.tenant_id AND e.id = x.event_id
             CROSS JOIN LATERAL (VALUES (c.from_channel), (c.to_channel)) AS ch (channel)
                       ) AS c (tenant_id, part, day, channel)
                 CROSS JOIN LATERAL (VALUES (c.channel), ('')) AS r (channel)
                 WHERE c.day IS NOT NULL AND r.channel IS NOT NULL) AS k
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
         ORDER BY k.tenant_id, k.part, k.channel, k.day
        ON CONFLICT (tenant_id, part, channel, day)
        DO UPDATE SET version = j.version + 1, changed_at = now();
    END IF;
    RETURN NULL;
END
$function$

FUNCTION fn_journal_attribution_events()  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_journal_attribution_events()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
 SET enable_seqscan TO 'off'
 SET enable_hashjoin TO 'off'
 SET enable_mergejoin TO 'off'
AS $function$
BEGIN
    IF TG_RELID <> 'public.attribution_events'::regclass THEN
        RAISE EXCEPTION 'this trigger function belongs to public.attribution_events, not %',
            TG_RELID::regclass USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO data_change_journal AS j (tenant_id, part, channel, day)
        SELECT k.tenant_id, k.part, k.channel, k.day
          FROM (SELECT DISTINCT c.tenant_id, c.part, r.channel, c.day
                  FROM (
            SELECT n.tenant_id, 'events', (n.occurred_at AT TIME ZONE 'UTC')::date, n.channel FROM new_rows n
                       ) AS c (tenant_id, part, day, channel)
                 CROSS JOIN LATERAL (VALUES (c.channel), ('')) AS r (channel)
                 WHERE c.day IS NOT NULL AND r.channel IS NOT NULL) AS k
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
         ORDER BY k.tenant_id, k.part, k.channel, k.day
        ON CONFLICT (tenant_id, part, channel, day)
        DO UPDATE SET version = j.version + 1, changed_at = now();
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO data_change_journal AS j (tenant_id, part, channel, day)
        SELECT k.tenant_id, k.part, k.channel, k.day
          FROM (SELECT DISTINCT c.tenant_id, c.part, r.channel, c.day
                  FROM (
            SELECT o.tenant_id, p.part, (o.occurred_at AT TIME ZONE 'UTC')::date,
                   CASE WHEN p.part = 'events' THEN o.channel ELSE '*' END
              FROM old_rows o
             CROSS JOIN (VALUES ('events'), ('allocations'), ('corrections')) AS p (part)
             WHERE p.part <> 'allocations' OR o.revenue_cents > 0
                       ) AS c (tenant_id, part, day, channel)
                 CROSS JOIN LATERAL (VALUES (c.channel), ('')) AS r (channel)
                 WHERE c.day IS NOT NULL AND r.channel IS NOT NULL) AS k
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
         ORDER BY k.tenant_id, k.part, k.channel, k.day
        ON CONFLICT (tenant_id, part, channel, day)
        DO UPDATE SET version = j.version + 1, changed_at = now();
    END IF;
    RETURN NULL;
END
$function$

FUNCTION fn_journal_channel_assignment_corrections()  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_journal_channel_assignment_corrections()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
 SET enable_seqscan TO 'off'
 SET enable_hashjoin TO 'off'
 SET enable_mergejoin TO 'off'
AS $function$
BEGIN
    IF TG_RELID <> 'public.channel_assignment_corrections'::regclass THEN
        RAISE EXCEPTION 'this trigger function belongs to public.channel_assignment_corrections, not %',
            TG_RELID::regclass USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO data_change_journal AS j (tenant_id, part, channel, day)
        SELECT k.tenant_id, k.part, k.channel, k.day
          FROM (SELECT DISTINCT c.tenant_id, c.part, r.channel, c.day
                  FROM (
            SELECT r.tenant_id, 'corrections', d.day, ch.channel
              FROM new_rows AS r
              LEFT JOIN attribution_allocations a
                     ON r.entity_type = 'allocation' AND a.tenant_id = r.tenant_id
                    AND a.id = r.entity_id
              LEFT JOIN attribution_events e
                     ON e.tenant_id = r.tenant_id
                    AND e.id = CASE WHEN r.entity_type = 'event' THEN r.entity_id
                                    ELSE a.event_id END
             CROSS JOIN LATERAL (VALUES ((r.corrected_at AT TIME ZONE 'UTC')::date), ((e.occurred_at AT TIME ZONE 'UTC')::date))
                   AS d (day)
             CROSS JOIN LATERAL (VALUES (r.from_channel), (r.to_channel)) AS ch (channel)
                       ) AS c (tenant_id, part, day, channel)
                 CROSS JOIN LATERAL (VALUES (c.channel), ('')) AS r (channel)
                 WHERE c.day IS NOT NULL AND r.channel IS NOT NULL) AS k
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
         ORDER BY k.tenant_id, k.part, k.channel, k.day
        ON CONFLICT (tenant_id, part, channel, day)
        DO UPDATE SET version = j.version + 1, changed_at = now();
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO data_change_journal AS j (tenant_id, part, channel, day)
        SELECT k.tenant_id, k.part, k.channel, k.day
          FROM (SELECT DISTINCT c.tenant_id, c.part, r.channel, c.day
                  FROM (
            SELECT r.tenant_id, 'corrections', d.day, ch.channel
              FROM (SELECT * FROM old_rows UNION ALL SELECT * FROM new_rows) AS r
              LEFT JOIN attribution_allocations a
                     ON r.entity_type = 'allocation' AND a.tenant_id = r.tenant_id
                    AND a.id = r.entity_id
              LEFT JOIN attribution_events e
                     ON e.tenant_id = r.tenant_id
                    AND e.id = CASE WHEN r.entity_type = 'event' THEN r.entity_id
                                    ELSE a.event_id END
             CROSS JOIN LATERAL (VALUES ((r.corrected_at AT TIME ZONE 'UTC')::date), ((e.occurred_at AT TIME ZONE 'UTC')::date))
                   AS d (day)
             CROSS JOIN LATERAL (VALUES (r.from_channel), (r.to_channel)) AS ch (channel)
                       ) AS c (tenant_id, part, day, channel)
                 CROSS JOIN LATERAL (VALUES (c.channel), ('')) AS r (channel)
                 WHERE c.day IS NOT NULL AND r.channel IS NOT NULL) AS k
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
         ORDER BY k.tenant_id, k.part, k.channel, k.day
        ON CONFLICT (tenant_id, part, channel, day)
        DO UPDATE SET version = j.version + 1, changed_at = now();
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO data_change_journal AS j (tenant_id, part, channel, day)
        SELECT k.tenant_id, k.part, k.channel, k.day
          FROM (SELECT DISTINCT c.tenant_id, c.part, r.channel, c.day
                  FROM (
            SELECT r.tenant_id, 'corrections', d.day, ch.channel
              FROM old_rows AS r
              LEFT JOIN attribution_allocations a
                     ON r.entity_type = 'allocation' AND a.tenant_id = r.tenant_id
                    AND a.id = r.entity_id
              LEFT JOIN attribution_events e
                     ON e.tenant_id = r.tenant_id
                    AND e.id = CASE WHEN r.entity_type = 'event' THEN r.entity_id
                                    ELSE a.event_id END
             CROSS JOIN LATERAL (VALUES ((r.corrected_at AT TIME ZONE 'UTC')::date), ((e.occurred_at AT TIME ZONE 'UTC')::date))
                   AS d (day)
             CROSS JOIN LATERAL (VALUES (r.from_channel), (r.to_channel)) AS ch (channel)
                       ) AS c (tenant_id, part, day, channel)
                 CROSS JOIN LATERAL (VALUES (c.channel), ('')) AS r (channel)
                 WHERE c.day IS NOT NULL AND r.channel IS NOT NULL) AS k
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
         ORDER BY k.tenant_id, k.part, k.channel, k.day
        ON CONFLICT (tenant_id, part, channel, day)
        DO UPDATE SET version = j.version + 1, changed_at = now();
    END IF;
    RETURN NULL;
END
$function$

FUNCTION fn_journal_dead_events()  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_journal_dead_events()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
 SET enable_seqscan TO 'off'
 SET enable_hashjoin TO 'off'
 SET enable_mergejoin TO 'off'
AS $function$
BEGIN
    IF TG_RELID <> 'public.dead_events'::regclass THEN
        RAISE EXCEPTION 'this trigger function belongs to public.dead_events, not %',
            TG_RELID::regclass USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO data_change_journal AS j (tenant_id, part, channel, day)
        SELECT k.tenant_id, k.part, k.channel, k.day
          FROM (SELECT DISTINCT c.tenant_id, c.part, r.channel, c.day
                  FROM (
            SELECT r.tenant_id, 'dead_events', (r.ingested_at AT TIME ZONE 'UTC')::date, '*'
              FROM new_rows AS r
                       ) AS c (tenant_id, part, day, channel)
                 CROSS JOIN LATERAL (VALUES (c.channel), ('')) AS r (channel)
                 WHERE c.day IS NOT NULL AND r.channel IS NOT NULL) AS k
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
         ORDER BY k.tenant_id, k.part, k.channel, k.day
        ON CONFLICT (tenant_id, part, channel, day)
        DO UPDATE SET version = j.version + 1, changed_at = now();
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO data_change_journal AS j (tenant_id, part, channel, day)
        SELECT k.tenant_id, k.part, k.channel, k.day
          FROM (SELECT DISTINCT c.tenant_id, c.part, r.channel, c.day
                  FROM (
            SELECT r.tenant_id, 'dead_events', (r.ingested_at AT TIME ZONE 'UTC')::date, '*'
              FROM (SELECT * FROM old_rows UNION ALL SELECT * FROM new_rows) AS r
                       ) AS c (tenant_id, part, day, channel)
                 CROSS JOIN LATERAL (VALUES (c.channel), ('')) AS r (channel)
                 WHERE c.day IS NOT NULL AND r.channel IS NOT NULL) AS k
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
         ORDER BY k.tenant_id, k.part, k.channel, k.day
        ON CONFLICT (tenant_id, part, channel, day)
        DO UPDATE SET version = j.version + 1, changed_at = now();
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO data_change_journal AS j (tenant_id, part, channel, day)
        SELECT k.tenant_id, k.part, k.channel, k.day
          FROM (SELECT DISTINCT c.tenant_id, c.part, r.channel, c.day
                  FROM (
            SELECT r.tenant_id, 'dead_events', (r.ingested_at AT TIME ZONE 'UTC')::date, '*'
              FROM old_rows AS r
                       ) AS c (tenant_id, part, day, channel)
                 CROSS JOIN LATERAL (VALUES (c.channel), ('')) AS r (channel)
                 WHERE c.day IS NOT NULL AND r.channel IS NOT NULL) AS k
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
         ORDER BY k.tenant_id, k.part, k.channel, k.day
        ON CONFLICT (tenant_id, part, channel, day)
        DO UPDATE SET version = j.version + 1, changed_at = now();
    END IF;
    RETURN NULL;
END
$function$

FUNCTION fn_journal_reconciliation_runs()  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_journal_reconciliation_runs()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
 SET enable_seqscan TO 'off'
 SET enable_hashjoin TO 'off'
 SET enable_mergejoin TO 'off'
AS $function$
BEGIN
    IF TG_RELID <> 'public.reconciliation_runs'::regclass THEN
        RAISE EXCEPTION 'this trigger function belongs to public.reconciliation_runs, not %',
            TG_RELID::regclass USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO data_change_journal AS j (tenant_id, part, channel, day)
        SELECT k.tenant_id, k.part, k.channel, k.day
          FROM (SELECT DISTINCT c.tenant_id, c.part, r.channel, c.day
                  FROM (
            SELECT r.tenant_id, 'runs', (r.created_at AT TIME ZONE 'UTC')::date, '*'
              FROM new_rows AS r
                       ) AS c (tenant_id, part, day, channel)
                 CROSS JOIN LATERAL (VALUES (c.channel), ('')) AS r (channel)
                 WHERE c.day IS NOT NULL AND r.channel IS NOT NULL) AS k
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
         ORDER BY k.tenant_id, k.part, k.channel, k.day
        ON CONFLICT (tenant_id, part, channel, day)
        DO UPDATE SET version = j.version + 1, changed_at = now();
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO data_change_journal AS j (tenant_id, part, channel, day)
        SELECT k.tenant_id, k.part, k.channel, k.day
          FROM (SELECT DISTINCT c.tenant_id, c.part, r.channel, c.day
                  FROM (
            SELECT r.tenant_id, 'runs', (r.created_at AT TIME ZONE 'UTC')::date, '*'
              FROM (SELECT * FROM old_rows UNION ALL SELECT * FROM new_rows) AS r
                       ) AS c (tenant_id, part, day, channel)
                 CROSS JOIN LATERAL (VALUES (c.channel), ('')) AS r (channel)
                 WHERE c.day IS NOT NULL AND r.channel IS NOT NULL) AS k
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
         ORDER BY k.tenant_id, k.part, k.channel, k.day
        ON CONFLICT (tenant_id, part, channel, day)
        DO UPDATE SET version = j.version + 1, changed_at = now();
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO data_change_journal AS j (tenant_id, part, channel, day)
        SELECT k.tenant_id, k.part, k.channel, k.day
          FROM (SELECT DISTINCT c.tenant_id, c.part, r.channel, c.day
                  FROM (
            SELECT r.tenant_id, 'runs', (r.created_at AT TIME ZONE 'UTC')::date, '*'
              FROM old_rows AS r
                       ) AS c (tenant_id, part, day, channel)
                 CROSS JOIN LATERAL (VALUES (c.channel), ('')) AS r (channel)
                 WHERE c.day IS NOT NULL AND r.channel IS NOT NULL) AS k
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
         ORDER BY k.tenant_id, k.part, k.channel, k.day
        ON CONFLICT (tenant_id, part, channel, day)
        DO UPDATE SET version = j.version + 1, changed_at = now();
    END IF;
    RETURN NULL;
END
$function$

FUNCTION fn_journal_revenue_ledger()  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_journal_revenue_ledger()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
 SET enable_seqscan TO 'off'
 SET enable_hashjoin TO 'off'
 SET enable_mergejoin TO 'off'
AS $function$
BEGIN
    IF TG_RELID <> 'public.revenue_ledger'::regclass THEN
        RAISE EXCEPTION 'this trigger function belongs to public.revenue_ledger, not %',
            TG_RELID::regclass USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO data_change_journal AS j (tenant_id, part, channel, day)
        SELECT k.tenant_id, k.part, k.channel, k.day
          FROM (SELECT DISTINCT c.tenant_id, c.part, r.channel, c.day
                  FROM (
            SELECT r.tenant_id, 'ledger', (r.posted_at AT TIME ZONE 'UTC')::date, coalesce(a.channel_code, CASE WHEN r.allocation_id IS NULL THEN '' ELSE '*' END)
              FROM new_rows AS r
              LEFT JOIN attribution_allocations a
                     ON a.tenant_id = r.tenant_id AND a.id = r.allocation_id
                       ) AS c (tenant_id, part, day, channel)
                 CROSS JOIN LATERAL (VALUES (c.channel), ('')) AS r (channel)
                 WHERE c.day IS NOT NULL AND r.channel IS NOT NULL) AS k
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
         ORDER BY k.tenant_id, k.part, k.channel, k.day
        ON CONFLICT (tenant_id, part, channel, day)
        DO UPDATE SET version = j.version + 1, changed_at = now();
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO data_change_journal AS j (tenant_id, part, channel, day)
        SELECT k.tenant_id, k.part, k.channel, k.day
          FROM (SELECT DISTINCT c.tenant_id, c.part, r.channel, c.day
                  FROM (
            SELECT r.tenant_id, 'ledger', (r.posted_at AT TIME ZONE 'UTC')::date, coalesce(a.channel_code, CASE WHEN r.allocation_id IS NULL THEN '' ELSE '*' END)
              FROM (SELECT * FROM old_rows UNION ALL SELECT * FROM new_rows) AS r
              LEFT JOIN attribution_allocations a
                     ON a.tenant_id = r.tenant_id AND a.id = r.allocation_id
            UNION ALL
            SELECT t.tenant_id, 'transitions', (t.transitioned_at AT TIME ZONE 'UTC')::date,
                   coalesce(a.channel_code, CASE WHEN r.allocation_id IS NULL THEN '' ELSE '*' END)
              FROM (SELECT * FROM old_rows UNION ALL SELECT * FROM new_rows) AS r
              JOIN revenue_state_transitions t
                ON t.tenant_id = r.tenant_id AND t.ledger_id = r.id
              LEFT JOIN attribution_allocations a
                     ON a.tenant_id = r.tenant_id AND a.id = r.allocation_id
                       ) AS c (tenant_id, part, day, channel)
                 CROSS JOIN LATERAL (VALUES (c.channel), ('')) AS r (channel)
                 WHERE c.day IS NOT NULL AND r.channel IS NOT NULL) AS k
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
         ORDER BY k.tenant_id, k.part, k.channel, k.day
        ON CONFLICT (tenant_id, part, channel, day)
        DO UPDATE SET version = j.version + 1, changed_at = now();
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO data_change_journal AS j (tenant_id, part, channel, day)
        SELECT k.tenant_id, k.part, k.channel, k.day
          FROM (SELECT DISTINCT c.tenant_id, c.part, r.channel, c.day
                  FROM (
            SELECT r.tenant_id, 'ledger', (r.posted_at AT TIME ZONE 'UTC')::date, coalesce(a.channel_code, CASE WHEN r.allocation_id IS NULL THEN '' ELSE '*' END)
              FROM old_rows AS r
              LEFT JOIN attribution_allocations a
                     ON a.tenant_id = r.tenant_id AND a.id = r.allocation_id
                       ) AS c (tenant_id, part, day, channel)
                 CROSS JOIN LATERAL (VALUES (c.channel), ('')) AS r (channel)
                 WHERE c.day IS NOT NULL AND r.channel IS NOT NULL) AS k
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
         ORDER BY k.tenant_id, k.part, k.channel, k.day
        ON CONFLICT (tenant_id, part, channel, day)
        DO UPDATE SET version = j.version + 1, changed_at = now();
    END IF;
    RETURN NULL;
END
$function$

FUNCTION fn_journal_revenue_state_transitions()  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_journal_revenue_state_transitions()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
 SET enable_seqscan TO 'off'
 SET enable_hashjoin TO 'off'
 SET enable_mergejoin TO 'off'
AS $function$
BEGIN
    IF TG_RELID <> 'public.revenue_state_transitions'::regclass THEN
        RAISE EXCEPTION 'this trigger function belongs to public.revenue_state_transitions, not %',
            TG_RELID::regclass USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO data_change_journal AS j (tenant_id, part, channel, day)
        SELECT k.tenant_id, k.part, k.channel, k.day
          FROM (SELECT DISTINCT c.tenant_id, c.part, r.channel, c.day
                  FROM (
            SELECT r.tenant_id, 'transitions', (r.transitioned_at AT TIME ZONE 'UTC')::date,
                   CASE WHEN l.id IS NULL THEN '*' ELSE coalesce(a.channel_code, CASE WHEN l.allocation_id IS NULL THEN '' ELSE '*' END) END
              FROM new_rows AS r
              LEFT JOIN revenue_ledger l ON l.tenant_id = r.tenant_id AND l.id = r.ledger_id
              LEFT JOIN attribution_allocations a
                     ON a.tenant_id = l.tenant_id AND a.id = l.allocation_id
                       ) AS c (tenant_id, part, day, channel)
                 CROSS JOIN LATERAL (VALUES (c.channel), ('')) AS r (channel)
                 WHERE c.day IS NOT NULL AND r.channel IS NOT NULL) AS k
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
         ORDER BY k.tenant_id, k.part, k.channel, k.day
        ON CONFLICT (tenant_id, part, channel, day)
        DO UPDATE SET version = j.version + 1, changed_at = now();
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO data_change_journal AS j (tenant_id, part, channel, day)
        SELECT k.tenant_id, k.part, k.channel, k.day
          FROM (SELECT DISTINCT c.tenant_id, c.part, r.channel, c.day
                  FROM (
            SELECT r.tenant_id, 'transitions', (r.transitioned_at AT TIME ZONE 'UTC')::date,
                   CASE WHEN l.id IS NULL THEN '*' ELSE coalesce(a.channel_code, CASE WHEN l.allocation_id IS NULL THEN '' ELSE '*' END) END
              FROM (SELECT * FROM old_rows UNION ALL SELECT * FROM new_rows) AS r
              LEFT JOIN revenue_ledger l ON l.tenant_id = r.tenant_id AND l.id = r.ledger_id
              LEFT JOIN attribution_allocations a
                     ON a.tenant_id = l.tenant_id AND a.id = l.allocation_id
                       ) AS c (tenant_id, part, day, channel)
                 CROSS JOIN LATERAL (VALUES (c.channel), ('')) AS r (channel)
                 WHERE c.day IS NOT NULL AND r.channel IS NOT NULL) AS k
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
         ORDER BY k.tenant_id, k.part, k.channel, k.day
        ON CONFLICT (tenant_id, part, channel, day)
        DO UPDATE SET version = j.version + 1, changed_at = now();
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO data_change_journal AS j (tenant_id, part, channel, day)
        SELECT k.tenant_id, k.part, k.channel, k.day
          FROM (SELECT DISTINCT c.tenant_id, c.part, r.channel, c.day
                  FROM (
            SELECT r.tenant_id, 'transitions', (r.transitioned_at AT TIME ZONE 'UTC')::date,
                   CASE WHEN l.id IS NULL THEN '*' ELSE coalesce(a.channel_code, CASE WHEN l.allocation_id IS NULL THEN '' ELSE '*' END) END
              FROM old_rows AS r
              LEFT JOIN revenue_ledger l ON l.tenant_id = r.tenant_id AND l.id = r.ledger_id
              LEFT JOIN attribution_allocations a
                     ON a.tenant_id = l.tenant_id AND a.id = l.allocation_id
                       ) AS c (tenant_id, part, day, channel)
                 CROSS JOIN LATERAL (VALUES (c.channel), ('')) AS r (channel)
                 WHERE c.day IS NOT NULL AND r.channel IS NOT NULL) AS k
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = k.tenant_id)
         ORDER BY k.tenant_id, k.part, k.channel, k.day
        ON CONFLICT (tenant_id, part, channel, day)
        DO UPDATE SET version = j.version + 1, changed_at = now();
    END IF;
    RETURN NULL;
END
$function$

FUNCTION fn_jsonb_personal_paths(p_doc jsonb)  -- owner: <owner>; SECURITY INVOKER; EXECUTE: llm_app, llm_crosstenant, owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_jsonb_personal_paths(p_doc jsonb)
 RETURNS TABLE(path text, key text)
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    WITH RECURSIVE walk(path, value, key, personal) AS (
        SELECT '$'::text, p_doc, NULL::text, false
        UNION ALL
        SELECT w.path || e.step, e.value, e.key, coalesce(fn_is_personal_key(e.key), false)
        FROM walk w
        CROSS JOIN LATERAL (
            SELECT '.' || o.key AS step, o.value, o.key
            FROM jsonb_each(CASE WHEN jsonb_typeof(w.value) = 'object' THEN w.value END) o
            UNION ALL
            SELECT '[' || (a.ord - 1) || ']', a.value, NULL
            FROM jsonb_array_elements(CASE WHEN jsonb_typeof(w.value) = 'array' THEN w.value END)
                WITH ORDINALITY a(value, ord)
        ) e
        -- A personal key's subtree is one finding; do not descend into it. Each key is tested once.
        WHERE NOT w.personal
    )
    SELECT path, key FROM walk WHERE personal
$function$

FUNCTION fn_kind_breakdown_add(p_acc jsonb, p_call jsonb)  -- owner: <owner>; SECURITY INVOKER; EXECUTE: llm_crosstenant, owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_kind_breakdown_add(p_acc jsonb, p_call jsonb)
 RETURNS jsonb
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT coalesce(p_acc, '{}'::jsonb) || coalesce((
        SELECT jsonb_object_agg(k.key, jsonb_build_object(
            'tokens', coalesce((p_acc -> k.key ->> 'tokens')::bigint, 0)
                      + (k.value ->> 'tokens')::bigint,
            'cost_cents', coalesce((p_acc -> k.key ->> 'cost_cents')::numeric, 0)
                          + (k.value ->> 'cost_cents')::numeric,
            'uncached_cents', coalesce((p_acc -> k.key ->> 'uncached_cents')::numeric, 0)
                              + (k.value ->> 'uncached_cents')::numeric))
          FROM jsonb_each(coalesce(p_call, '{}'::jsonb)) k), '{}'::jsonb)
$function$

FUNCTION fn_llm_api_calls_reserve()  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_llm_api_calls_reserve()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
DECLARE
    v_cap numeric;
    v_spent numeric;
    v_reserved numeric;
BEGIN
    IF TG_RELID <> 'public.llm_api_calls'::regclass THEN
        RAISE EXCEPTION 'this trigger function belongs to public.llm_api_calls, not %',
            TG_RELID::regclass USING ERRCODE = 'insufficient_privilege';
    END IF;
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
$function$

FUNCTION fn_llm_api_calls_rollup()  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_llm_api_calls_rollup()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
DECLARE
    v_month date := date_trunc('month', NEW.started_at AT TIME ZONE 'UTC')::date;
    v_in bigint := coalesce(NEW.input_tokens, 0);
    v_out bigint := coalesce(NEW.output_tokens, 0);
BEGIN
    IF TG_RELID <> 'public.llm_api_calls'::regclass THEN
        RAISE EXCEPTION 'this trigger function belongs to public.llm_api_calls, not %',
            TG_RELID::regclass USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.status = 'pending' OR (TG_OP = 'UPDATE' AND OLD.status <> 'pending') THEN
        RETURN NULL;
    END IF;
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
    END IF;
    INSERT INTO llm_monthly_costs AS m (tenant_id, month, total_cost_cents, estimated_cost_cents,
        total_calls, total_input_tokens, total_output_tokens, model_breakdown, endpoint_breakdown, kind_breakdown)
    VALUES (NEW.tenant_id, v_month, NEW.cost_cents,
            CASE WHEN NEW.cost_is_estimate THEN NEW.cost_cents ELSE 0 END, 1, v_in, v_out,
            fn_breakdown_add('{}'::jsonb, NEW.model, NEW.cost_cents, v_in, v_out),
            fn_breakdown_add('{}'::jsonb, NEW.endpoint, NEW.cost_cents, v_in, v_out),
            fn_kind_breakdown_add('{}'::jsonb, NEW.usage_breakdown))
    ON CONFLICT (tenant_id, month) DO UPDATE SET
        total_cost_cents = m.total_cost_cents + EXCLUDED.total_cost_cents,
        estimated_cost_cents = m.estimated_cost_cents + EXCLUDED.estimated_cost_cents,
        total_calls = m.total_calls + 1,
        total_input_tokens = m.total_input_tokens + v_in,
        total_output_tokens = m.total_output_tokens + v_out,
        model_breakdown = fn_breakdown_add(m.model_breakdown, NEW.model, NEW.cost_cents, v_in, v_out),
        endpoint_breakdown = fn_breakdown_add(m.endpoint_breakdown, NEW.endpoint, NEW.cost_cents, v_in, v_out),
        kind_breakdown = fn_kind_breakdown_add(m.kind_breakdown, NEW.usage_breakdown),
        updated_at = now();
    RETURN NULL;
END
$function$

FUNCTION fn_llm_api_calls_run_spend()  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_llm_api_calls_run_spend()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
DECLARE
    v_delta numeric := CASE WHEN NEW.status = 'pending' THEN NEW.reserved_cents
                            ELSE NEW.cost_cents END;
BEGIN
    IF TG_RELID <> 'public.llm_api_calls'::regclass THEN
        RAISE EXCEPTION 'this trigger function belongs to public.llm_api_calls, not %',
            TG_RELID::regclass USING ERRCODE = 'insufficient_privilege';
    END IF;
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
$function$

FUNCTION fn_llm_api_calls_settled_immutable()  -- owner: <owner>; SECURITY INVOKER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_llm_api_calls_settled_immutable()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF OLD.status <> 'pending' AND (NEW.status, NEW.cost_cents, NEW.input_tokens,
            NEW.output_tokens, NEW.cost_is_estimate, NEW.model, NEW.endpoint, NEW.tenant_id,
            NEW.started_at, NEW.reserved_cents, NEW.usage_anomaly, NEW.raw_usage,
            NEW.investigation_id, NEW.budget_optimization_job_id, NEW.settled_at, NEW.usage_breakdown)
        IS DISTINCT FROM (OLD.status, OLD.cost_cents, OLD.input_tokens,
            OLD.output_tokens, OLD.cost_is_estimate, OLD.model, OLD.endpoint, OLD.tenant_id,
            OLD.started_at, OLD.reserved_cents, OLD.usage_anomaly, OLD.raw_usage,
            OLD.investigation_id, OLD.budget_optimization_job_id, OLD.settled_at, OLD.usage_breakdown) THEN
        RAISE EXCEPTION 'llm_api_calls row % is settled; its money facts are immutable', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$function$

FUNCTION fn_normalize_json_key(p_key text)  -- owner: <owner>; SECURITY INVOKER; EXECUTE: llm_app, llm_crosstenant, owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_normalize_json_key(p_key text)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    -- Fast path: most keys are already snake_case, and normalise to themselves.
    SELECT CASE WHEN p_key ~ '^[a-z0-9]+(_[a-z0-9]+)*$' THEN p_key ELSE
        btrim(regexp_replace(lower(
            regexp_replace(regexp_replace(btrim(p_key), '([A-Z]+)([A-Z][a-z]{2,})', '\1_\2', 'g'),
                           '([a-z0-9])([A-Z])', '\1_\2', 'g')),
            '[^a-z0-9]+', '_', 'g'), '_')
    END
$function$

FUNCTION fn_pii_queue_attribution_events()  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_pii_queue_attribution_events()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
BEGIN
    -- Only for its own table: attached elsewhere it would queue forged ids.
    IF TG_RELID <> 'public.attribution_events'::regclass THEN
        RAISE EXCEPTION 'this trigger function belongs to public.attribution_events, not %',
            TG_RELID::regclass USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO pii_scan_queue (tenant_id, source_table, record_id)
        SELECT n.tenant_id, 'attribution_events', n.id FROM new_rows n WHERE jsonb_typeof(n.raw_payload) IN ('object', 'array') AND n.raw_payload NOT IN ('{}', '[]');
    END IF;
    RETURN NULL;
END
$function$

FUNCTION fn_pii_queue_dead_events()  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_pii_queue_dead_events()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
BEGIN
    -- Only for its own table: attached elsewhere it would queue forged ids.
    IF TG_RELID <> 'public.dead_events'::regclass THEN
        RAISE EXCEPTION 'this trigger function belongs to public.dead_events, not %',
            TG_RELID::regclass USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO pii_scan_queue (tenant_id, source_table, record_id)
        SELECT n.tenant_id, 'dead_events', n.id FROM new_rows n WHERE jsonb_typeof(n.raw_payload) IN ('object', 'array') AND n.raw_payload NOT IN ('{}', '[]');
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO pii_scan_queue (tenant_id, source_table, record_id)
        SELECT n.tenant_id, 'dead_events', n.id
          FROM (SELECT tenant_id, id, raw_payload FROM new_rows
                EXCEPT SELECT tenant_id, id, raw_payload FROM old_rows) AS n
         WHERE jsonb_typeof(n.raw_payload) IN ('object', 'array') AND n.raw_payload NOT IN ('{}', '[]');
    END IF;
    RETURN NULL;
END
$function$

FUNCTION fn_pii_queue_revenue_ledger()  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_pii_queue_revenue_ledger()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
BEGIN
    -- Only for its own table: attached elsewhere it would queue forged ids.
    IF TG_RELID <> 'public.revenue_ledger'::regclass THEN
        RAISE EXCEPTION 'this trigger function belongs to public.revenue_ledger, not %',
            TG_RELID::regclass USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO pii_scan_queue (tenant_id, source_table, record_id)
        SELECT n.tenant_id, 'revenue_ledger', n.id FROM new_rows n WHERE jsonb_typeof(n.metadata) IN ('object', 'array') AND n.metadata NOT IN ('{}', '[]');
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO pii_scan_queue (tenant_id, source_table, record_id)
        SELECT n.tenant_id, 'revenue_ledger', n.id
          FROM (SELECT tenant_id, id, metadata FROM new_rows
                EXCEPT SELECT tenant_id, id, metadata FROM old_rows) AS n
         WHERE jsonb_typeof(n.metadata) IN ('object', 'array') AND n.metadata NOT IN ('{}', '[]');
    END IF;
    RETURN NULL;
END
$function$

FUNCTION fn_pii_scan_batch(p_limit integer, p_upto bigint)  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: llm_app, owner
    COMMENT 'One bounded batch of the incremental PII scan: takes up to p_limit queued rows (skipping those another scan holds; only entries up to p_upto if given), records one finding per personal key at any depth with its tenant and JSON path, never the value; returns the entries taken and the findings added. Idempotent; commit each batch on its own.'
CREATE OR REPLACE FUNCTION public.fn_pii_scan_batch(p_limit integer DEFAULT 1000, p_upto bigint DEFAULT NULL::bigint)
 RETURNS TABLE(scanned integer, findings integer)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
BEGIN
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 10000 THEN
        RAISE EXCEPTION 'PII scan batch size must be between 1 and 10000, not %', p_limit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Planned for each batch: a plan cached while the tables were small must not outlive them.
    EXECUTE $q$
WITH taken AS (
    DELETE FROM pii_scan_queue q
     WHERE q.id IN (SELECT id FROM pii_scan_queue WHERE $2::bigint IS NULL OR id <= $2
                     ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING q.source_table, q.record_id
), docs (table_name, column_name, tenant_id, record_id, doc) AS MATERIALIZED (
    SELECT DISTINCT ON (d.table_name, d.record_id) d.*
      FROM (
            SELECT 'attribution_events'::text, 'raw_payload'::text, s.tenant_id, s.id, s.raw_payload
              FROM taken k JOIN attribution_events s ON s.id = k.record_id
             WHERE k.source_table = 'attribution_events'
            UNION ALL
            SELECT 'dead_events'::text, 'raw_payload'::text, s.tenant_id, s.id, s.raw_payload
              FROM taken k JOIN dead_events s ON s.id = k.record_id
             WHERE k.source_table = 'dead_events'
            UNION ALL
            SELECT 'revenue_ledger'::text, 'metadata'::text, s.tenant_id, s.id, s.metadata
              FROM taken k JOIN revenue_ledger s ON s.id = k.record_id
             WHERE k.source_table = 'revenue_ledger'
           ) AS d (table_name, column_name, tenant_id, record_id, doc)
), found AS (
    SELECT h.tenant_id, h.table_name, h.column_name, h.record_id,
           CASE WHEN length(p.path) <= 400 THEN p.path
                ELSE left(p.path, 360) || '...#' || md5(p.path) END AS path,
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
$q$ INTO scanned, findings USING p_limit, p_upto;
    RETURN NEXT;
END
$function$

FUNCTION fn_purge_expired_explanation_cache(p_batch_size integer)  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: llm_app, owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_purge_expired_explanation_cache(p_batch_size integer)
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
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
$function$

FUNCTION fn_purge_llm_call_prompts(p_before timestamp with time zone, p_batch_size integer)  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_purge_llm_call_prompts(p_before timestamp with time zone, p_batch_size integer)
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
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
                              || '{"purged": true}'::jsonb
     WHERE c.id IN (SELECT p.id FROM llm_api_calls p
                     WHERE p.request_metadata ?| ARRAY['prompt', 'response']
                       AND p.created_at < p_before
                     ORDER BY p.created_at LIMIT p_batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$function$

FUNCTION fn_purge_llm_validation_payloads(p_before timestamp with time zone, p_batch_size integer)  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_purge_llm_validation_payloads(p_before timestamp with time zone, p_batch_size integer)
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
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
$function$

FUNCTION fn_queue_depth()  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: llm_app, owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_queue_depth()
 RETURNS TABLE(kind text, status text, runs bigint)
 LANGUAGE sql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
    SELECT 'investigation', status, count(*) FROM investigations
     WHERE status IN ('queued', 'running') GROUP BY status
    UNION ALL
    SELECT 'budget_optimization', status, count(*) FROM budget_optimization_jobs
     WHERE status IN ('queued', 'running') GROUP BY status
$function$

FUNCTION fn_reconcile_monthly_costs(p_month date)  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: llm_app, owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_reconcile_monthly_costs(p_month date DEFAULT NULL::date)
 RETURNS TABLE(tenant_id uuid, month date, recorded_cost_cents numeric, computed_cost_cents numeric, recorded_calls bigint, computed_calls bigint, breakdowns_match boolean)
 LANGUAGE sql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
    WITH settled AS (
        SELECT c.tenant_id, date_trunc('month', c.started_at AT TIME ZONE 'UTC')::date AS month,
               c.model, c.endpoint, c.cost_cents, c.cost_is_estimate,
               coalesce(c.input_tokens, 0) AS input_tokens,
               coalesce(c.output_tokens, 0) AS output_tokens, coalesce(c.usage_breakdown, '{}'::jsonb) AS usage_breakdown
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
    ),
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
    )
    SELECT coalesce(r.tenant_id, c.tenant_id), coalesce(r.month, c.month),
           coalesce(r.total_cost_cents, 0), coalesce(c.cost, 0),
           coalesce(r.total_calls, 0), coalesce(c.calls, 0),
           coalesce(r.estimated_cost_cents, 0) = coalesce(c.estimated, 0)
             AND coalesce(r.total_input_tokens, 0) = coalesce(c.input_tokens, 0)
             AND coalesce(r.total_output_tokens, 0) = coalesce(c.output_tokens, 0)
             AND coalesce(r.model_breakdown, '{}'::jsonb) = coalesce(c.models, '{}'::jsonb)
             AND coalesce(r.endpoint_breakdown, '{}'::jsonb) = coalesce(c.endpoints, '{}'::jsonb)
             AND coalesce(r.kind_breakdown, '{}'::jsonb) = coalesce(kd.kinds, '{}'::jsonb)
    FROM recorded r FULL JOIN computed c ON c.tenant_id = r.tenant_id AND c.month = r.month
      LEFT JOIN kinds kd ON kd.tenant_id = coalesce(r.tenant_id, c.tenant_id)
                        AND kd.month = coalesce(r.month, c.month)
    ORDER BY 2, 1
$function$

FUNCTION fn_renew_leases(p_worker text, p_lease_seconds double precision, p_tokens uuid[])  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: llm_app, owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_renew_leases(p_worker text, p_lease_seconds double precision, p_tokens uuid[])
 RETURNS TABLE(run_id uuid, cancel_requested boolean, renewed boolean)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
DECLARE
    v_hashes bytea[];
BEGIN
    -- A lease is seconds to an hour: a caller cannot hold another tenant's run for years.
    IF p_lease_seconds IS NULL OR NOT (p_lease_seconds > 0 AND p_lease_seconds <= 3600)
       OR p_worker IS NULL OR length(p_worker) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'a renewal needs a worker name (1-200 characters) and a lease of (0, 3600] s'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_tokens IS NULL OR cardinality(p_tokens) > 10000 THEN
        RAISE EXCEPTION 'a renewal names 0 to 10000 leases'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_hashes := ARRAY(SELECT sha256(uuid_send(t)) FROM unnest(p_tokens) AS t WHERE t IS NOT NULL);
    RETURN QUERY
    WITH
    h_0 AS (
        SELECT r.id, (r.cancel_requested OR EXISTS (SELECT 1 FROM run_cancel_requests q WHERE q.tenant_id = r.tenant_id AND q.run_id = r.id AND q.kind = 'investigation')) AS cancel_requested
          FROM investigations r WHERE r.lease_token_hash = ANY (v_hashes) AND r.lease_owner = p_worker AND r.status = 'running'),
    r_0 AS (
        UPDATE investigations r
           SET lease_expires_at = now() + make_interval(secs => p_lease_seconds),
               heartbeat_at = now()
         WHERE r.lease_token_hash = ANY (v_hashes) AND r.lease_owner = p_worker AND r.status = 'running'
           AND r.id IN (SELECT l.id FROM investigations l WHERE l.lease_token_hash = ANY (v_hashes) AND l.lease_owner = p_worker AND l.status = 'running' FOR NO KEY UPDATE SKIP LOCKED)
        RETURNING r.id, (r.cancel_requested OR EXISTS (SELECT 1 FROM run_cancel_requests q WHERE q.tenant_id = r.tenant_id AND q.run_id = r.id AND q.kind = 'investigation')) AS cancel_requested),
    h_1 AS (
        SELECT r.id, false AS cancel_requested
          FROM budget_optimization_jobs r WHERE r.lease_token_hash = ANY (v_hashes) AND r.lease_owner = p_worker AND r.status = 'running'),
    r_1 AS (
        UPDATE budget_optimization_jobs r
           SET lease_expires_at = now() + make_interval(secs => p_lease_seconds),
               heartbeat_at = now()
         WHERE r.lease_token_hash = ANY (v_hashes) AND r.lease_owner = p_worker AND r.status = 'running'
           AND r.id IN (SELECT l.id FROM budget_optimization_jobs l WHERE l.lease_token_hash = ANY (v_hashes) AND l.lease_owner = p_worker AND l.status = 'running' FOR NO KEY UPDATE SKIP LOCKED)
        RETURNING r.id, false AS cancel_requested)
        SELECT h_0.id, coalesce(r_0.cancel_requested, h_0.cancel_requested), r_0.id IS NOT NULL FROM h_0 LEFT JOIN r_0 ON r_0.id = h_0.id
        UNION ALL SELECT h_1.id, coalesce(r_1.cancel_requested, h_1.cancel_requested), r_1.id IS NOT NULL FROM h_1 LEFT JOIN r_1 ON r_1.id = h_1.id;
END
$function$

FUNCTION fn_revenue_ledger_audit_state()  -- owner: <owner>; SECURITY INVOKER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_revenue_ledger_audit_state()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF NEW.state IS DISTINCT FROM OLD.state THEN
        NEW.previous_state := OLD.state;
        INSERT INTO revenue_state_transitions (tenant_id, ledger_id, from_state, to_state, reason)
        VALUES (NEW.tenant_id, NEW.id, OLD.state, NEW.state, NEW.metadata ->> 'state_change_reason');
    END IF;
    RETURN NEW;
END
$function$

FUNCTION fn_run_cancel_requested(p_run uuid)  -- owner: <owner>; SECURITY INVOKER; EXECUTE: llm_app, owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_run_cancel_requested(p_run uuid)
 RETURNS boolean
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
    SELECT EXISTS (SELECT 1 FROM run_cancel_requests q
                    WHERE q.tenant_id = nullif(current_setting('app.current_tenant_id', true), '')::uuid AND q.run_id = p_run
                      AND q.kind = 'investigation')
$function$

FUNCTION fn_run_insert_needs_lease()  -- owner: <owner>; SECURITY INVOKER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_run_insert_needs_lease()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
DECLARE
    v_row jsonb := to_jsonb(NEW);
    v_investigation uuid := (v_row ->> 'investigation_id')::uuid;
    v_job uuid := (v_row ->> 'budget_optimization_job_id')::uuid;
    v_once text := CASE WHEN TG_TABLE_NAME = 'investigation_events'
                         AND v_row ->> 'event_type' IN ('queued', 'final')
                        THEN v_row ->> 'event_type' END;
BEGIN
    -- An invoker function: current_user is the role writing (a definer's would be its owner).
    IF current_user <> 'llm_app' OR (v_investigation IS NULL AND v_job IS NULL) THEN
        RETURN NEW;  -- not the application role, or a row of no run (an explanation's call)
    END IF;
    IF v_investigation IS NOT NULL AND v_job IS NOT NULL THEN
        RAISE EXCEPTION 'a row belongs to one run, not two' USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- The run is read as of now and held until commit, by the definer step (migration 012).
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'writes for a run are made in READ COMMITTED transactions only'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    IF fn_run_write_lock(v_investigation, v_job, v_once, v_row #>> '{data,status}') THEN
        IF v_once IS NULL THEN
            RETURN NEW;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM investigation_events e
                        WHERE e.investigation_id = v_investigation AND e.event_type = v_once) THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'run % has its % event already', v_investigation, v_once
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RAISE EXCEPTION 'a write for run % needs the lease token of its claim',
        coalesce(v_investigation, v_job) USING ERRCODE = 'insufficient_privilege';
END
$function$

FUNCTION fn_run_write_lock(p_investigation uuid, p_job uuid, p_once text, p_final_status text)  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: llm_app, owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_run_write_lock(p_investigation uuid, p_job uuid, p_once text, p_final_status text)
 RETURNS boolean
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
DECLARE
    v_hash bytea := CASE WHEN nullif(current_setting('llm.run_token', true), '') IS NOT NULL
        THEN sha256(uuid_send(current_setting('llm.run_token', true)::uuid)) END;
BEGIN
    -- Whether this transaction may write for the run (a row of one run); if so the run is held
    -- until commit (KEY SHARE: a takeover cannot land before the write commits; NO KEY UPDATE
    -- for the once-per-run events, whose writers queue on the row). A row failing the WHERE
    -- is never locked: no session locks a run it may not write for.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'writes for a run are made in READ COMMITTED transactions only'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    IF (p_investigation IS NULL) = (p_job IS NULL)
       OR (p_once IS NOT NULL AND (p_investigation IS NULL OR p_once NOT IN ('queued', 'final'))) THEN
        RETURN false;
    END IF;
    IF p_once IS NOT NULL THEN
        -- Written by the transaction that queued or ended the run: its now() is that mark.
        PERFORM 1 FROM investigations r
         WHERE r.id = p_investigation AND r.tenant_id = nullif(current_setting('app.current_tenant_id', true), '')::uuid
           AND CASE p_once WHEN 'queued' THEN r.queued_at ELSE r.finished_at END = now()
           AND ((p_once = 'queued' AND r.status = 'queued' AND r.lease_token_hash IS NULL)
                OR (p_once = 'final' AND r.status = 'cancelled' AND r.lease_token_hash IS NULL
                    AND p_final_status = 'cancelled')
                OR (p_once = 'final' AND r.status NOT IN ('queued', 'running')
                    AND r.lease_token_hash = v_hash))
           FOR NO KEY UPDATE;
    ELSIF p_investigation IS NOT NULL THEN
        PERFORM 1 FROM investigations r
         WHERE r.id = p_investigation AND r.tenant_id = nullif(current_setting('app.current_tenant_id', true), '')::uuid
           AND r.status = 'running' AND r.lease_token_hash = v_hash
           FOR KEY SHARE;
    ELSE
        PERFORM 1 FROM budget_optimization_jobs r
         WHERE r.id = p_job AND r.tenant_id = nullif(current_setting('app.current_tenant_id', true), '')::uuid
           AND r.status = 'running' AND r.lease_token_hash = v_hash
           FOR KEY SHARE;
    END IF;
    RETURN FOUND;
END
$function$

FUNCTION fn_scan_pii_contamination()  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: llm_app, owner
    COMMENT 'The incremental PII scan of every row queued so far, in one transaction (batches of 1000); returns the findings added. While serving, prefer fn_pii_scan_batch, one batch per transaction (llm-service pii-scan).'
CREATE OR REPLACE FUNCTION public.fn_scan_pii_contamination()
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
DECLARE
    upto bigint;
    total integer := 0;
    batch record;
BEGIN
    -- Everything queued when it starts (later entries wait for the next run), batch by batch.
    SELECT max(id) INTO upto FROM pii_scan_queue;
    LOOP
        EXIT WHEN upto IS NULL;
        SELECT * INTO batch FROM fn_pii_scan_batch(1000, upto);
        total := total + batch.findings;
        EXIT WHEN batch.scanned = 0;
    END LOOP;
    RETURN total;
END
$function$

FUNCTION fn_set_updated_at()  -- owner: <owner>; SECURITY INVOKER; EXECUTE: owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_set_updated_at()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$function$

FUNCTION fn_settle_call(p_call uuid, p_status text, p_input_tokens integer, p_output_tokens integer, p_cost_cents numeric, p_cost_is_estimate boolean, p_latency_ms integer, p_provider_request_id text, p_error_type text, p_error_message text, p_usage_anomaly text, p_raw_usage jsonb, p_usage_breakdown jsonb, p_settle_token uuid)  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: llm_app, owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_settle_call(p_call uuid, p_status text, p_input_tokens integer, p_output_tokens integer, p_cost_cents numeric, p_cost_is_estimate boolean, p_latency_ms integer, p_provider_request_id text, p_error_type text, p_error_message text, p_usage_anomaly text, p_raw_usage jsonb, p_usage_breakdown jsonb, p_settle_token uuid DEFAULT NULL::uuid)
 RETURNS boolean
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
DECLARE
    v_hash bytea := CASE WHEN nullif(current_setting('llm.run_token', true), '') IS NOT NULL
        THEN sha256(uuid_send(current_setting('llm.run_token', true)::uuid)) END;
    v_investigation uuid;
    v_job uuid;
    v_call_hash bytea;
BEGIN
    SELECT c.investigation_id, c.budget_optimization_job_id, c.settle_token_hash
      INTO v_investigation, v_job, v_call_hash
      FROM llm_api_calls c
     WHERE c.id = p_call AND c.tenant_id = nullif(current_setting('app.current_tenant_id', true), '')::uuid AND c.status = 'pending';
    IF NOT FOUND THEN
        RETURN false;  -- no pending call of this tenant: settled already, or not ours
    END IF;
    -- The request that reserved the call presents its token. A row without a hash (reserved
    -- before this migration) passes this step only if it is a run's (the lease token below).
    IF v_call_hash IS NULL THEN
        IF v_investigation IS NULL AND v_job IS NULL THEN
            RETURN false;  -- no secret to check: left to the sweep, at its worst case
        END IF;
    ELSIF p_settle_token IS NULL OR v_call_hash <> sha256(uuid_send(p_settle_token)) THEN
        RETURN false;
    END IF;
    IF v_investigation IS NOT NULL OR v_job IS NOT NULL THEN
        -- A run's call is settled by the run's holder (its token), the run held KEY SHARE
        -- until commit as its inserts hold it: a stale holder's call is swept as abandoned.
        IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'writes for a run are made in READ COMMITTED transactions only'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
        IF v_investigation IS NOT NULL THEN
            PERFORM 1 FROM investigations r
             WHERE r.id = v_investigation AND r.lease_token_hash = v_hash FOR KEY SHARE;
        ELSE
            PERFORM 1 FROM budget_optimization_jobs r
             WHERE r.id = v_job AND r.lease_token_hash = v_hash FOR KEY SHARE;
        END IF;
        IF NOT FOUND THEN
            RETURN false;
        END IF;
    END IF;
    UPDATE llm_api_calls c
       SET status = p_status, input_tokens = p_input_tokens, output_tokens = p_output_tokens,
           cost_cents = p_cost_cents, cost_is_estimate = p_cost_is_estimate,
           latency_ms = p_latency_ms, provider_request_id = p_provider_request_id,
           error_type = p_error_type, error_message = p_error_message,
           usage_anomaly = p_usage_anomaly, raw_usage = p_raw_usage,
           usage_breakdown = p_usage_breakdown, settled_at = now()
     WHERE c.id = p_call AND c.tenant_id = nullif(current_setting('app.current_tenant_id', true), '')::uuid AND c.status = 'pending';
    RETURN FOUND;
END
$function$

FUNCTION fn_sweep_expired_llm_reservations()  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: llm_app, owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_sweep_expired_llm_reservations()
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
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
$function$

FUNCTION fn_tenant_for_api_key_hash(p_hash text)  -- owner: llm_crosstenant; SECURITY DEFINER; EXECUTE: llm_app, owner
    COMMENT NULL
CREATE OR REPLACE FUNCTION public.fn_tenant_for_api_key_hash(p_hash text)
 RETURNS uuid
 LANGUAGE sql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'public', 'pg_temp'
AS $function$
    SELECT id FROM public.tenants WHERE api_key_hash = p_hash
$function$
