"""PII controls: the findings table and a scan that sees every tenant, walks nested JSON, and is idempotent.

Revision ID: 002_pii_controls
Revises: 001_core_schema
Create Date: 2026-11-25
"""

from alembic import op
from sqlhelpers import APP_ROLE, CROSSTENANT_ROLE, crosstenant_policy, tenant_rls

revision = "002_pii_controls"
down_revision = "001_core_schema"
branch_labels = None
depends_on = None

# Keep in step with llm_service.pii.redact.PERSONAL_KEYS (a test compares the two).
PERSONAL_KEYS = (
    "address",
    "address1",
    "address2",
    "address_line1",
    "address_line2",
    "address_line_1",
    "address_line_2",
    "bank_account",
    "bank_account_number",
    "billing_address",
    "billing_email",
    "billing_name",
    "billing_phone",
    "birth_date",
    "birthdate",
    "birthday",
    "card_holder",
    "card_holder_name",
    "card_number",
    "cardholder_name",
    "cc_number",
    "cell_phone",
    "cellphone",
    "client_ip",
    "contact_email",
    "contact_name",
    "contact_phone",
    "credit_card",
    "credit_card_number",
    "customer_email",
    "customer_ip",
    "customer_name",
    "customer_phone",
    "cvc",
    "cvv",
    "date_of_birth",
    "dob",
    "driver_license",
    "driver_license_number",
    "drivers_license",
    "drivers_license_number",
    "driving_licence",
    "driving_license",
    "e_mail",
    "e_mail_address",
    "email",
    "email_address",
    "family_name",
    "fax",
    "first_name",
    "firstname",
    "full_name",
    "fullname",
    "geo_location",
    "geolocation",
    "given_name",
    "home_address",
    "home_phone",
    "house_number",
    "iban",
    "ip",
    "ip_address",
    "ip_v4",
    "ip_v6",
    "ipv4",
    "ipv6",
    "itin",
    "last_name",
    "lastname",
    "lat",
    "latitude",
    "lng",
    "lon",
    "longitude",
    "maiden_name",
    "mailing_address",
    "middle_name",
    "mobile",
    "mobile_number",
    "mobile_phone",
    "msisdn",
    "national_id",
    "national_id_number",
    "national_insurance_number",
    "nino",
    "passport",
    "passport_no",
    "passport_number",
    "personal_email",
    "phone",
    "phone_no",
    "phone_number",
    "post_code",
    "postal_address",
    "postal_code",
    "postcode",
    "recipient_name",
    "remote_addr",
    "remote_address",
    "remote_ip",
    "shipping_address",
    "shipping_email",
    "shipping_name",
    "shipping_phone",
    "social_security",
    "social_security_number",
    "ssn",
    "street",
    "street_address",
    "surname",
    "tax_id",
    "taxpayer_id",
    "tel",
    "telephone",
    "telephone_number",
    "tin",
    "user_email",
    "user_ip",
    "user_name",
    "username",
    "work_email",
    "work_phone",
    "x_forwarded_for",
    "x_real_ip",
    "zip",
    "zip_code",
    "zipcode",
)

FINDINGS = f"""
CREATE TABLE pii_audit_findings (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    source text NOT NULL DEFAULT 'scan' CONSTRAINT ck_pii_audit_findings_source
        CHECK (source IN ('scan', 'llm_guard', 'tool_output')),
    table_name text,
    column_name text,
    record_id uuid,
    detected_key text NOT NULL,
    finding_kind text NOT NULL DEFAULT 'personal_key',
    redacted_snippet text,
    detected_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pii_audit_findings IS
    'Where personal data was found (never the value itself). Data class: security audit. Owner: '
    'data protection. RLS: enabled and forced (tenant_isolation_policy).';
-- One finding per place: a second scan inserts nothing.
CREATE UNIQUE INDEX uq_pii_audit_findings_scan ON pii_audit_findings
    (tenant_id, table_name, column_name, record_id, detected_key) WHERE source = 'scan';
CREATE INDEX idx_pii_audit_findings_tenant ON pii_audit_findings (tenant_id, detected_at DESC);
{tenant_rls("pii_audit_findings", app_privileges="SELECT, INSERT")}
{crosstenant_policy("pii_audit_findings", privileges="SELECT, INSERT")}
{crosstenant_policy("attribution_events")}
{crosstenant_policy("dead_events")}
{crosstenant_policy("revenue_ledger")}
"""

KEY_FUNCTIONS = """
CREATE FUNCTION fn_normalize_json_key(p_key text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    -- Fast path: most keys are already snake_case, and normalise to themselves.
    SELECT CASE WHEN p_key ~ '^[a-z0-9]+(_[a-z0-9]+)*$' THEN p_key ELSE
        btrim(regexp_replace(lower(
            regexp_replace(regexp_replace(btrim(p_key), '([A-Z]+)([A-Z][a-z]{{2,}})', '\\1_\\2', 'g'),
                           '([a-z0-9])([A-Z])', '\\1_\\2', 'g')),
            '[^a-z0-9]+', '_', 'g'), '_')
    END
$$;

CREATE FUNCTION fn_is_personal_key(p_key text) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT fn_normalize_json_key(p_key) = ANY (ARRAY[{keys}]::text[])
$$;

-- Every key/value pair at any depth of a JSON document, with its JSON path.
CREATE FUNCTION fn_jsonb_personal_paths(p_doc jsonb) RETURNS TABLE (path text, key text)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
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
$$;
""".format(keys=", ".join(f"'{k}'" for k in PERSONAL_KEYS))

SCAN = f"""
CREATE FUNCTION fn_scan_pii_contamination() RETURNS integer
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
ALTER FUNCTION fn_scan_pii_contamination() OWNER TO {CROSSTENANT_ROLE};
REVOKE ALL ON FUNCTION fn_scan_pii_contamination() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fn_scan_pii_contamination() TO {APP_ROLE};
"""


def upgrade() -> None:
    op.execute(FINDINGS)
    op.execute(KEY_FUNCTIONS)
    op.execute(SCAN)


def downgrade() -> None:
    op.execute(
        """
        DROP FUNCTION fn_scan_pii_contamination();
        DROP FUNCTION fn_jsonb_personal_paths(jsonb);
        DROP FUNCTION fn_is_personal_key(text);
        DROP FUNCTION fn_normalize_json_key(text);
        DROP TABLE pii_audit_findings;
        DROP POLICY crosstenant_policy ON attribution_events;
        DROP POLICY crosstenant_policy ON dead_events;
        DROP POLICY crosstenant_policy ON revenue_ledger;
        """
    )
    op.execute(
        f"REVOKE ALL ON attribution_events, dead_events, revenue_ledger FROM {CROSSTENANT_ROLE}"
    )
