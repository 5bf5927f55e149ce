"""The job kit: one claim function and one batched lease renewal, generated for every job kind.

Investigations and budget optimisation jobs are two kinds on one queue. Both functions are now
generated from one definition (`JOB_KINDS`: kind name -> table, and whether the table has a
`cancel_requested` column), so a third kind adds one entry here (in its own migration, calling
`claim_function` / `renew_function` with the longer list) instead of a third copy of the SQL.

- `fn_claim_next_run(worker, lease_s, running, kinds)`: as before (takeovers first, then the
  oldest queued, SKIP LOCKED), but only of the kinds the calling worker has registered
  (`kinds` NULL: every kind), so a worker never claims a run it cannot execute.
- `fn_renew_leases(worker, lease_s, runs)`: ONE statement renewing every lease a worker process
  holds, across tenants (a definer function: the app role sees one tenant at a time). It returns
  the runs still held, with their cancel flag; a run missing from the answer was lost (taken
  over, ended, or never this worker's). It writes only lease_expires_at and heartbeat_at, and
  only of running rows whose lease_owner is the caller: it cannot claim or end anything.
"""

from alembic import op
from sqlhelpers import APP_ROLE, CROSSTENANT_ROLE, DEFINER_SEARCH_PATH, earlier_migration

revision = "008_job_kit"
down_revision = "007_priced_as_billed"
branch_labels = None
depends_on = None

# kind -> (table, has a cancel_requested column). Order = claim preference within a pass.
JOB_KINDS: dict[str, tuple[str, bool]] = {
    "investigation": ("investigations", True),
    "budget_optimization": ("budget_optimization_jobs", False),
}

_CHECK_ARGS = """
    -- A lease is seconds to an hour: a caller cannot hold another tenant's run for years.
    IF p_lease_seconds IS NULL OR NOT (p_lease_seconds > 0 AND p_lease_seconds <= 3600)
       OR p_worker IS NULL OR length(p_worker) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'a claim needs a worker name (1-200 characters) and a lease of (0, 3600] s'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;"""

CLAIM_SIGNATURE = "fn_claim_next_run(text, double precision, uuid[], text[])"
OLD_CLAIM_SIGNATURE = "fn_claim_next_run(text, double precision, uuid[])"
RENEW_SIGNATURE = "fn_renew_leases(text, double precision, uuid[])"
# The most leases one renewal may name (a worker process runs at most a few thousand).
MAX_RENEWALS = 10_000


def _claim_block(kind: str, table: str) -> str:
    return f"""
        IF p_kinds IS NULL OR '{kind}' = ANY (p_kinds) THEN
            SELECT r.id INTO v_id FROM {table} r
             -- A worker never takes over a run it is still executing (p_running: a late
             -- heartbeat is not a dead worker), but does take over its own runs it no longer
             -- executes (a claim whose answer was lost, an end not recorded in an outage).
             WHERE CASE WHEN v_takeover THEN r.status = 'running' AND r.lease_expires_at < now()
                                             AND (r.lease_owner IS DISTINCT FROM p_worker
                                                  OR r.id <> ALL (p_running))
                        ELSE r.status = 'queued' END
             ORDER BY r.queued_at LIMIT 1 FOR UPDATE SKIP LOCKED;
            IF v_id IS NOT NULL THEN
                RETURN QUERY UPDATE {table} r
                    SET status = 'running', lease_owner = p_worker, heartbeat_at = now(),
                        lease_expires_at = now() + make_interval(secs => p_lease_seconds),
                        attempts = r.attempts + 1, started_at = coalesce(r.started_at, now())
                  WHERE r.id = v_id
                  RETURNING '{kind}'::text, r.id, r.tenant_id, v_takeover;
                RETURN;
            END IF;
        END IF;"""


def claim_function(kinds: dict[str, tuple[str, bool]]) -> str:
    """The claim function over `kinds` (takeovers of every kind first, then queued runs)."""
    blocks = "".join(_claim_block(kind, table) for kind, (table, _) in kinds.items())
    signature = CLAIM_SIGNATURE
    return f"""
CREATE FUNCTION fn_claim_next_run(
    p_worker text, p_lease_seconds double precision, p_running uuid[] DEFAULT '{{}}',
    p_kinds text[] DEFAULT NULL)
    RETURNS TABLE (kind text, run_id uuid, tenant_id uuid, takeover boolean)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = {DEFINER_SEARCH_PATH} AS $$
DECLARE
    v_id uuid;
    v_takeover boolean;
BEGIN{_CHECK_ARGS}
    FOR v_takeover IN SELECT unnest(ARRAY[true, false]) LOOP{blocks}
    END LOOP;
END
$$;
ALTER FUNCTION {signature} OWNER TO {CROSSTENANT_ROLE};
REVOKE ALL ON FUNCTION {signature} FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {signature} TO {APP_ROLE};
"""


def renew_function(kinds: dict[str, tuple[str, bool]]) -> str:
    """The batched lease renewal over `kinds`: one UPDATE per table in one statement."""
    updates = ",\n".join(
        f"""    r_{n} AS (
        UPDATE {table} r
           SET lease_expires_at = now() + make_interval(secs => p_lease_seconds),
               heartbeat_at = now()
         WHERE r.id = ANY (p_runs) AND r.lease_owner = p_worker AND r.status = 'running'
        RETURNING r.id, {"r.cancel_requested" if cancels else "false"} AS cancel_requested)"""
        for n, (table, cancels) in enumerate(kinds.values())
    )
    selects = "\n        UNION ALL ".join(
        f"SELECT r_{n}.id, r_{n}.cancel_requested FROM r_{n}" for n in range(len(kinds))
    )
    return f"""
CREATE FUNCTION fn_renew_leases(
    p_worker text, p_lease_seconds double precision, p_runs uuid[])
    RETURNS TABLE (run_id uuid, cancel_requested boolean)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = {DEFINER_SEARCH_PATH} AS $$
BEGIN{_CHECK_ARGS.replace("a claim needs", "a renewal needs")}
    IF p_runs IS NULL OR cardinality(p_runs) > {MAX_RENEWALS} THEN
        RAISE EXCEPTION 'a renewal names 0 to {MAX_RENEWALS} runs'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    WITH
{updates}
        {selects};
END
$$;
ALTER FUNCTION {RENEW_SIGNATURE} OWNER TO {CROSSTENANT_ROLE};
REVOKE ALL ON FUNCTION {RENEW_SIGNATURE} FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {RENEW_SIGNATURE} TO {APP_ROLE};
"""


def upgrade() -> None:
    op.execute(f"DROP FUNCTION {OLD_CLAIM_SIGNATURE}")
    op.execute(claim_function(JOB_KINDS))
    op.execute(renew_function(JOB_KINDS))


def _claim_function_of_004() -> str:
    """004's own text of the claim function and its grants (a downgrade restores it exactly)."""
    queue: str = earlier_migration("004_llm_subsystem").QUEUE
    start = queue.index("CREATE FUNCTION fn_claim_next_run(")
    last = f"GRANT EXECUTE ON FUNCTION {OLD_CLAIM_SIGNATURE} TO {APP_ROLE};"
    return queue[start : queue.index(last) + len(last)]


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {RENEW_SIGNATURE}")
    op.execute(f"DROP FUNCTION {CLAIM_SIGNATURE}")
    op.execute(_claim_function_of_004())
