"""No application-role session can hold a row lock on a run or a ledger row without its token.

PostgreSQL lets any role with UPDATE on a column of a table lock its rows (SELECT ... FOR
UPDATE / NO KEY UPDATE / SHARE / KEY SHARE). Through 006's column grants, a compromised llm_app
session without a lease token held, for as long as its transaction stayed open: NO KEY UPDATE
on a running run (the renewal, SKIP LOCKED, skipped it and the lease ran out), FOR UPDATE on a
running run (the holder's writes waited), KEY SHARE on an expired run (the takeover passed it
by), FOR UPDATE on a pending ledger row (its settle waited). Now:
- llm_app has no UPDATE privilege on investigations, budget_optimization_jobs and llm_api_calls
  (table or column), so it can lock none of their rows. It keeps its INSERT grants (queueing
  runs, reserving calls).
- Each write the application made with an UPDATE is a SECURITY DEFINER function (owner
  llm_crosstenant, as the claim) doing exactly its one transition, for a row of the current
  tenant (checked by the function: the definer's policy sees every tenant), with the lease
  token the transaction presents (`llm.run_token`, as 010's guards read it) where a run's
  holder makes it. None of them locks a row the caller is not entitled to change: the
  conditions are in the locking statement's WHERE, so a row that fails them is never locked.
  - fn_cancel_investigation(run): the API's cancel (a queued run becomes cancelled, with the
    reason spelled here only; a running one has its cancel requested, once). A running run's
    request never writes the run's row: a cancel left uncommitted would hold it (NO KEY
    UPDATE), and the renewal (SKIP LOCKED) would skip the run, its holder's reserve (the
    run_spend trigger's UPDATE) and end would wait. It is a row of run_cancel_requests
    (tenant, run, kind, requested_at; RLS forced; llm_app may only read it, the definer
    writes it once the run is found running and the tenant's). No foreign key to the run: the
    FK check would take KEY SHARE on the run's row, which holds off the claim's FOR UPDATE.
    Whoever reads the flag reads the row's flag OR a request: fn_renew_leases' answer and
    fn_run_cancel_requested(run) (the API's and the runner's `cancel_requested`). A queued
    run's cancel still writes its row (cancelled at once): held open, it only delays the
    claim of a run the attacker is cancelling anyway; a second cancel of a running run waits
    on an uncommitted first one (the same request's key) and answers nothing, as any second
    cancel does. The running run's cancel still waits for a write of the run in flight (its
    end), so it answers what that committed, through a row lock taken and released at once
    (a rolled-back subtransaction): it keeps none;
  - fn_finish_investigation(...) / fn_finish_optimization(...): the holder ends its run as of
    now (`finished_at` = now(), the mark its `final` event needs), the row locked FOR UPDATE
    first so the end waits for the run's writes in flight;
  - fn_hand_back_run(kind, run, worker): the holder ends its lease at once;
  - fn_settle_call(call, ..., settle_token): a pending ledger row of the current tenant is
    settled once, by the request that reserved it: the reserve writes settle_token_hash, the
    sha256 of a random token the gateway draws per call and presents (as a parameter) to its
    settle; a run's row needs the run's lease token as well (the run held KEY SHARE until
    commit, so a takeover cannot land between the check and the commit; a taken-over worker's
    row is left to the sweep, which counts it at its reserved worst case). Both, because each
    proves something the other does not: the lease token that the worker still holds the run
    (its spend may still be recorded against it), the call token that this is the request in
    flight (a leaked run token alone zeroes no call). A call of no run (an explanation's) had
    no secret at all before: any session of the tenant could settle it at 0 while it was in
    flight, and the real settle then lost the spend.
    Rows reserved before this migration have no hash: a run's pending row is settled by its
    holder with the lease token alone (there is no call token to check); a pending row of no
    run can no longer be settled by the application at all and is swept at its reserved worst
    case once it expires (over-counted, never under-counted).
- 011's insert guard read the run FOR KEY SHARE / FOR NO KEY UPDATE as the invoker: that read
  is now fn_run_write_lock, a definer step that locks the run only for a transaction entitled
  to write for it (its token is the run's, or, for the `queued` / `final` events of a run never
  claimed, its now() is the run's queued_at / finished_at), so it is no lock-taking gadget
  either. The guard itself stays an invoker function: `current_user` there is the role really
  writing (llm_app cannot SET ROLE to any other), which a definer's could not tell.
- 010/011's update guards (fn_run_update_needs_lease, fn_run_call_update_needs_lease) saw only
  llm_app's updates, of which there are none now: dropped. The functions above are the one
  place the transition rules live.
No table has a foreign key to llm_api_calls or budget_optimization_jobs; the two referencing
investigations (investigation_events, investigation_tool_calls) are insert-guarded, and a
refused insert never reaches its foreign-key check (the KEY SHARE it would take).
Downgrade restores 011's guards (their own text) and 006/007's column grants, and drops the rest.
"""

from alembic import op
from sqlhelpers import (
    APP_ROLE,
    CROSSTENANT_ROLE,
    CURRENT_TENANT,
    DEFINER_SEARCH_PATH,
    crosstenant_policy,
    earlier_migration,
    tenant_rls,
)

revision = "012_run_rows_unlockable_by_app"
down_revision = "011_run_guards_without_gaps"
branch_labels = None
depends_on = None

# 008's JOB_KINDS as of this migration: kind name -> its runs' table.
RUN_TABLES = {"investigation": "investigations", "budget_optimization": "budget_optimization_jobs"}
LOCKED_TABLES = (*RUN_TABLES.values(), "llm_api_calls")
# The reason a run cancelled while queued gets (the API's cancel; spelled here only).
CANCELLED_QUEUED = "cancelled before it started"
TERMINAL_STATES = ("succeeded", "budget_exhausted", "timed_out", "failed", "cancelled")

# 006's (and 007's usage_breakdown) column UPDATE grants of the application role, restored on
# downgrade.
APP_UPDATE_COLUMNS = {
    "llm_api_calls": (
        "status, input_tokens, output_tokens, cost_cents, cost_is_estimate, latency_ms, "
        "provider_request_id, error_type, error_message, settled_at, usage_anomaly, raw_usage, "
        "usage_breakdown"
    ),
    "investigations": (
        "status, reason, degraded, elapsed_ms, result, lease_owner, lease_expires_at, "
        "heartbeat_at, cancel_requested, finished_at"
    ),
    "budget_optimization_jobs": (
        "status, reason, degraded, recommendations, rationale, lease_owner, lease_expires_at, "
        "heartbeat_at, finished_at"
    ),
}

CANCEL_SIGNATURE = "fn_cancel_investigation(uuid)"
CANCEL_REQUESTED_SIGNATURE = "fn_run_cancel_requested(uuid)"
FINISH_INVESTIGATION_SIGNATURE = (
    "fn_finish_investigation(uuid, text, text, text, integer, jsonb, boolean)"
)
FINISH_OPTIMIZATION_SIGNATURE = (
    "fn_finish_optimization(uuid, text, text, text, jsonb, text, boolean)"
)
HAND_BACK_SIGNATURE = "fn_hand_back_run(text, uuid, text)"
SETTLE_SIGNATURE = (
    "fn_settle_call(uuid, text, integer, integer, numeric, boolean, integer, text, text, text, "
    "text, jsonb, jsonb, uuid)"
)
# The sha256 of the call's settle token (the reserve writes it; llm_app may insert it, never
# update it: it has no UPDATE on llm_api_calls).
SETTLE_TOKEN_COLUMN = "settle_token_hash"
WRITE_LOCK_SIGNATURE = "fn_run_write_lock(uuid, uuid, text, text)"
APP_FUNCTIONS = (
    CANCEL_SIGNATURE,
    FINISH_INVESTIGATION_SIGNATURE,
    FINISH_OPTIMIZATION_SIGNATURE,
    HAND_BACK_SIGNATURE,
    SETTLE_SIGNATURE,
    WRITE_LOCK_SIGNATURE,
    CANCEL_REQUESTED_SIGNATURE,
)


def _renewal_of_011() -> str:
    """fn_renew_leases as 011 left it (CREATE OR REPLACE)."""
    m011 = earlier_migration("011_run_guards_without_gaps")
    text: str = m011._renewal(earlier_migration("009_job_leases_and_keys"), "FOR NO KEY UPDATE")
    return text


# The sha256 of the transaction's run token (NULL when it presents none): what a run's
# lease_token_hash must equal for its holder.
_PRESENTED_HASH = """CASE WHEN nullif(current_setting('llm.run_token', true), '') IS NOT NULL
        THEN sha256(uuid_send(current_setting('llm.run_token', true)::uuid)) END"""

_READ_COMMITTED_ONLY = """IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'writes for a run are made in READ COMMITTED transactions only'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;"""


def _definer(signature: str, header: str, body: str) -> str:
    """A SECURITY DEFINER function owned by the cross-tenant role, executable by llm_app only."""
    return f"""
CREATE FUNCTION {header}
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = {DEFINER_SEARCH_PATH} AS $$
{body}
$$;
ALTER FUNCTION {signature} OWNER TO {CROSSTENANT_ROLE};
REVOKE ALL ON FUNCTION {signature} FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {signature} TO {APP_ROLE};
"""


def _held(alias: str) -> str:
    """The lease is held by worker `p_worker` presenting the claim's token (v_hash)."""
    return (
        f"{alias}.tenant_id = {CURRENT_TENANT} AND {alias}.status = 'running' "
        f"AND {alias}.lease_owner = p_worker AND {alias}.lease_token_hash = v_hash"
    )


_TERMINAL_ONLY = f"""IF p_status IS NULL OR p_status NOT IN ({", ".join(f"'{s}'" for s in TERMINAL_STATES)}) THEN
        RAISE EXCEPTION 'a run ends in a terminal state, not %', p_status
            USING ERRCODE = 'invalid_parameter_value';
    END IF;"""

_WRITE_LOCK = _definer(
    WRITE_LOCK_SIGNATURE,
    "fn_run_write_lock(p_investigation uuid, p_job uuid, p_once text, p_final_status text) "
    "RETURNS boolean",
    f"""DECLARE
    v_hash bytea := {_PRESENTED_HASH};
BEGIN
    -- Whether this transaction may write for the run (a row of one run); if so the run is held
    -- until commit (KEY SHARE: a takeover cannot land before the write commits; NO KEY UPDATE
    -- for the once-per-run events, whose writers queue on the row). A row failing the WHERE
    -- is never locked: no session locks a run it may not write for.
    {_READ_COMMITTED_ONLY}
    IF (p_investigation IS NULL) = (p_job IS NULL)
       OR (p_once IS NOT NULL AND (p_investigation IS NULL OR p_once NOT IN ('queued', 'final'))) THEN
        RETURN false;
    END IF;
    IF p_once IS NOT NULL THEN
        -- Written by the transaction that queued or ended the run: its now() is that mark.
        PERFORM 1 FROM investigations r
         WHERE r.id = p_investigation AND r.tenant_id = {CURRENT_TENANT}
           AND CASE p_once WHEN 'queued' THEN r.queued_at ELSE r.finished_at END = now()
           AND ((p_once = 'queued' AND r.status = 'queued' AND r.lease_token_hash IS NULL)
                OR (p_once = 'final' AND r.status = 'cancelled' AND r.lease_token_hash IS NULL
                    AND p_final_status = 'cancelled')
                OR (p_once = 'final' AND r.status NOT IN ('queued', 'running')
                    AND r.lease_token_hash = v_hash))
           FOR NO KEY UPDATE;
    ELSIF p_investigation IS NOT NULL THEN
        PERFORM 1 FROM investigations r
         WHERE r.id = p_investigation AND r.tenant_id = {CURRENT_TENANT}
           AND r.status = 'running' AND r.lease_token_hash = v_hash
           FOR KEY SHARE;
    ELSE
        PERFORM 1 FROM budget_optimization_jobs r
         WHERE r.id = p_job AND r.tenant_id = {CURRENT_TENANT}
           AND r.status = 'running' AND r.lease_token_hash = v_hash
           FOR KEY SHARE;
    END IF;
    RETURN FOUND;
END""",
)

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
BEGIN
    -- An invoker function: current_user is the role writing (a definer's would be its owner).
    IF current_user <> '{APP_ROLE}' OR (v_investigation IS NULL AND v_job IS NULL) THEN
        RETURN NEW;  -- not the application role, or a row of no run (an explanation's call)
    END IF;
    IF v_investigation IS NOT NULL AND v_job IS NOT NULL THEN
        RAISE EXCEPTION 'a row belongs to one run, not two' USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- The run is read as of now and held until commit, by the definer step (migration 012).
    {_READ_COMMITTED_ONLY}
    IF fn_run_write_lock(v_investigation, v_job, v_once, v_row #>> '{{data,status}}') THEN
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
$$;
REVOKE ALL ON FUNCTION fn_run_insert_needs_lease() FROM PUBLIC;
"""

_CANCEL_REQUESTS_TABLE = f"""
CREATE TABLE run_cancel_requests (
    tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    run_id uuid NOT NULL,
    kind text NOT NULL CONSTRAINT ck_run_cancel_requests_kind CHECK (kind = 'investigation'),
    requested_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, run_id)
);
COMMENT ON TABLE run_cancel_requests IS
    'The API''s cancel requests of running runs, one per run, kept off the run''s row (a '
    'request left uncommitted holds no run). No foreign key to the run (its check would lock '
    'the run): fn_cancel_investigation writes a request only for a running run of the tenant. '
    'Data class: request metadata. Owner: jobs. RLS: enabled and forced '
    '(tenant_isolation_policy); the application may only read it.';
{tenant_rls("run_cancel_requests", app_privileges="SELECT")}
{crosstenant_policy("run_cancel_requests", privileges="SELECT, INSERT")}
"""


def _asked(alias: str) -> str:
    """Whether run `alias` (an investigations row) has its cancel requested: the row's flag
    (raised before migration 012) or a request."""
    return (
        f"({alias}.cancel_requested OR EXISTS (SELECT 1 FROM run_cancel_requests q "
        f"WHERE q.tenant_id = {alias}.tenant_id AND q.run_id = {alias}.id "
        "AND q.kind = 'investigation'))"
    )


# The API's and the runner's flag (an invoker function: the tenant's policy applies).
_CANCEL_REQUESTED = f"""
CREATE FUNCTION {CANCEL_REQUESTED_SIGNATURE.replace("(uuid)", "(p_run uuid)")} RETURNS boolean
    LANGUAGE sql STABLE SET search_path = {DEFINER_SEARCH_PATH} AS $$
    SELECT EXISTS (SELECT 1 FROM run_cancel_requests q
                    WHERE q.tenant_id = {CURRENT_TENANT} AND q.run_id = p_run
                      AND q.kind = 'investigation')
$$;
REVOKE ALL ON FUNCTION {CANCEL_REQUESTED_SIGNATURE} FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {CANCEL_REQUESTED_SIGNATURE} TO {APP_ROLE};
"""

# The SQLSTATE that rolls back the cancel's waiting step (and so its row lock).
_RELEASE = "LLREL"

_CANCEL = _definer(
    CANCEL_SIGNATURE,
    "fn_cancel_investigation(p_run uuid) RETURNS SETOF investigations",
    f"""DECLARE
    v_run investigations;
BEGIN
    -- A queued run is cancelled at once (its row written: see the docstring).
    RETURN QUERY
    UPDATE investigations r
       SET cancel_requested = true, status = 'cancelled', reason = '{CANCELLED_QUEUED}',
           finished_at = now()
     WHERE r.id = p_run AND r.tenant_id = {CURRENT_TENANT} AND r.status = 'queued'
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
         WHERE r.id = p_run AND r.tenant_id = {CURRENT_TENANT} AND r.status = 'running'
           FOR SHARE;
        RAISE EXCEPTION 'release' USING ERRCODE = '{_RELEASE}';
    EXCEPTION WHEN SQLSTATE '{_RELEASE}' THEN
        NULL;  -- the row lock went with the subtransaction
    END;
    -- A terminal run is left as it is.
    SELECT r.* INTO v_run FROM investigations r
     WHERE r.id = p_run AND r.tenant_id = {CURRENT_TENANT} AND r.status = 'running'
       AND NOT {_asked("r")};
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
END""",
)


def _renew() -> str:
    """011's renewal, its answer's flag the row's OR a request (the text 011 builds, with the
    one expression replaced: asserted, so a change of that text fails here, not silently)."""
    text: str = _renewal_of_011()
    row_flag = "r.cancel_requested AS cancel_requested"
    assert text.count(row_flag) == 2, "009's renewal text changed"
    return text.replace(row_flag, f"{_asked('r')} AS cancel_requested")


_FINISH_INVESTIGATION = _definer(
    FINISH_INVESTIGATION_SIGNATURE,
    "fn_finish_investigation(p_run uuid, p_worker text, p_status text, p_reason text, "
    "p_elapsed_ms integer, p_result jsonb, p_degraded boolean) RETURNS numeric",
    f"""DECLARE
    v_hash bytea := {_PRESENTED_HASH};
    v_spent numeric;
BEGIN
    {_TERMINAL_ONLY}
    -- Locked FOR UPDATE first (by its holder only): the end waits for the run's writes in
    -- flight (KEY SHARE), and none of them commits after it.
    PERFORM 1 FROM investigations r WHERE r.id = p_run AND {_held("r")} FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE investigations r
       SET status = p_status, reason = p_reason, elapsed_ms = p_elapsed_ms, result = p_result,
           degraded = p_degraded, finished_at = now(), lease_owner = NULL, lease_expires_at = NULL
     WHERE r.id = p_run
    RETURNING r.cost_cents INTO v_spent;
    RETURN v_spent;
END""",
)

_FINISH_OPTIMIZATION = _definer(
    FINISH_OPTIMIZATION_SIGNATURE,
    "fn_finish_optimization(p_job uuid, p_worker text, p_status text, p_reason text, "
    "p_recommendations jsonb, p_rationale text, p_degraded boolean) RETURNS boolean",
    f"""DECLARE
    v_hash bytea := {_PRESENTED_HASH};
BEGIN
    {_TERMINAL_ONLY}
    -- As an investigation's end: locked FOR UPDATE first, by its holder only.
    PERFORM 1 FROM budget_optimization_jobs r WHERE r.id = p_job AND {_held("r")} FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE budget_optimization_jobs r
       SET status = p_status, reason = p_reason, recommendations = p_recommendations,
           rationale = p_rationale, degraded = p_degraded, finished_at = now(),
           lease_owner = NULL, lease_expires_at = NULL
     WHERE r.id = p_job;
    RETURN FOUND;
END""",
)


def _hand_back() -> str:
    blocks = "\n".join(
        f"""    IF p_kind = '{kind}' THEN
        UPDATE {table} r SET lease_expires_at = now() WHERE r.id = p_run AND {_held("r")};
        RETURN FOUND;
    END IF;"""
        for kind, table in RUN_TABLES.items()
    )
    return _definer(
        HAND_BACK_SIGNATURE,
        "fn_hand_back_run(p_kind text, p_run uuid, p_worker text) RETURNS boolean",
        f"""DECLARE
    v_hash bytea := {_PRESENTED_HASH};
BEGIN
    -- The holder ends its lease at once (shutdown): any worker may take the run over now.
{blocks}
    RAISE EXCEPTION 'no job kind %', p_kind USING ERRCODE = 'invalid_parameter_value';
END""",
    )


_SETTLE = _definer(
    SETTLE_SIGNATURE,
    "fn_settle_call(p_call uuid, p_status text, p_input_tokens integer, "
    "p_output_tokens integer, p_cost_cents numeric, p_cost_is_estimate boolean, "
    "p_latency_ms integer, p_provider_request_id text, p_error_type text, "
    "p_error_message text, p_usage_anomaly text, p_raw_usage jsonb, p_usage_breakdown jsonb, "
    "p_settle_token uuid DEFAULT NULL) RETURNS boolean",
    f"""DECLARE
    v_hash bytea := {_PRESENTED_HASH};
    v_investigation uuid;
    v_job uuid;
    v_call_hash bytea;
BEGIN
    SELECT c.investigation_id, c.budget_optimization_job_id, c.{SETTLE_TOKEN_COLUMN}
      INTO v_investigation, v_job, v_call_hash
      FROM llm_api_calls c
     WHERE c.id = p_call AND c.tenant_id = {CURRENT_TENANT} AND c.status = 'pending';
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
        {_READ_COMMITTED_ONLY}
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
     WHERE c.id = p_call AND c.tenant_id = {CURRENT_TENANT} AND c.status = 'pending';
    RETURN FOUND;
END""",
)


def upgrade() -> None:
    op.execute(f"REVOKE UPDATE ON {', '.join(LOCKED_TABLES)} FROM {APP_ROLE}")
    op.execute(f"ALTER TABLE llm_api_calls ADD COLUMN {SETTLE_TOKEN_COLUMN} bytea")
    op.execute(f"GRANT INSERT ({SETTLE_TOKEN_COLUMN}) ON llm_api_calls TO {APP_ROLE}")
    op.execute(_WRITE_LOCK)
    op.execute(_INSERT_GUARD)
    for table in RUN_TABLES.values():
        op.execute(f"DROP TRIGGER trg_{table}_update_needs_lease ON {table}")
    op.execute("DROP FUNCTION fn_run_update_needs_lease()")
    op.execute("DROP TRIGGER trg_llm_api_calls_settle_needs_lease ON llm_api_calls")
    op.execute("DROP FUNCTION fn_run_call_update_needs_lease()")
    op.execute(_CANCEL_REQUESTS_TABLE)
    op.execute(_CANCEL_REQUESTED)
    op.execute(_CANCEL)
    op.execute(_renew())
    op.execute(_FINISH_INVESTIGATION)
    op.execute(_FINISH_OPTIMIZATION)
    op.execute(_hand_back())
    op.execute(_SETTLE)


def downgrade() -> None:
    m011 = earlier_migration("011_run_guards_without_gaps")
    for signature in (
        SETTLE_SIGNATURE,
        HAND_BACK_SIGNATURE,
        FINISH_OPTIMIZATION_SIGNATURE,
        FINISH_INVESTIGATION_SIGNATURE,
        CANCEL_SIGNATURE,
        CANCEL_REQUESTED_SIGNATURE,
    ):
        op.execute(f"DROP FUNCTION {signature}")
    op.execute(_renewal_of_011())
    # A running run's pending request goes back onto its row, where 011 kept it.
    # (As the owner, every tenant: FORCE lifted for this statement's transaction only.)
    op.execute("""
ALTER TABLE investigations NO FORCE ROW LEVEL SECURITY;
ALTER TABLE run_cancel_requests NO FORCE ROW LEVEL SECURITY;
UPDATE investigations r SET cancel_requested = true FROM run_cancel_requests q
 WHERE q.tenant_id = r.tenant_id AND q.run_id = r.id AND NOT r.cancel_requested;
ALTER TABLE investigations FORCE ROW LEVEL SECURITY;
""")
    op.execute("DROP TABLE run_cancel_requests")
    op.execute(m011._SETTLE_GUARD)
    op.execute(m011._UPDATE_GUARD)  # CREATE OR REPLACE: it creates the function again
    for table in RUN_TABLES.values():
        op.execute(
            f"CREATE TRIGGER trg_{table}_update_needs_lease BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION fn_run_update_needs_lease()"
        )
    op.execute(m011._INSERT_GUARD)
    op.execute(f"DROP FUNCTION {WRITE_LOCK_SIGNATURE}")
    for table, columns in APP_UPDATE_COLUMNS.items():
        op.execute(f"GRANT UPDATE ({columns}) ON {table} TO {APP_ROLE}")
    op.execute(f"ALTER TABLE llm_api_calls DROP COLUMN {SETTLE_TOKEN_COLUMN}")
