"""Data governance: events are facts, allocations add up, ledger state changes are audited.

Revision ID: 003_data_governance
Revises: 002_pii_controls
Create Date: 2026-11-25
"""

from alembic import op

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
BEGIN
    SELECT a.event_id, a.model_type, a.model_version, e.revenue_cents,
           sum(a.allocated_revenue_cents) AS allocated
    INTO bad
    FROM (SELECT DISTINCT tenant_id, event_id, model_type, model_version FROM changed_rows) c
    JOIN attribution_allocations a
      ON a.tenant_id = c.tenant_id AND a.event_id = c.event_id
     AND a.model_type = c.model_type AND a.model_version = c.model_version
    JOIN attribution_events e ON e.tenant_id = a.tenant_id AND e.id = a.event_id
    GROUP BY a.event_id, a.model_type, a.model_version, e.revenue_cents
    HAVING abs(sum(a.allocated_revenue_cents) - e.revenue_cents) > 1
    LIMIT 1;
    IF FOUND THEN
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


def upgrade() -> None:
    op.execute(EVENT_FACTS)
    op.execute(ALLOCATION_SUMS)
    op.execute(LEDGER_AUDIT)


def downgrade() -> None:
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
