"""Three gaps the red team found in 010's run guards, closed.

- Inserts for a run are made in READ COMMITTED transactions only. The guard reads the run's
  lease hash under the transaction's snapshot: a REPEATABLE READ snapshot taken before a
  takeover committed still showed the old hash, so the taken-over worker kept adding events.
  Same rule and error as the reservation trigger of 006 (invalid_transaction_state).
- A terminal run is never changed by the application role, token or not: raising the cancel
  flag of a finished run rewrote its row (and a second, racing cancel of a queued run went on
  to add a second `final` event). The row is left as it was (`UPDATE 0`).
- An idempotency key taken by the application role names a real run of its kind and tenant.
  `job_idempotency_keys.run_id` had no foreign key (a key may name either kind's run), so a
  session could burn a key on a run that does not exist; a trigger checks it now.
Downgrade restores 010's functions (010's own text) and drops the key check.
"""

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op
from sqlhelpers import APP_ROLE, CURRENT_TENANT, DEFINER_SEARCH_PATH

revision = "011_run_guards_close_three_gaps"
down_revision = "010_run_writes_need_the_lease"
branch_labels = None
depends_on = None

# 008's JOB_KINDS as of this migration: kind name -> its runs' table.
RUN_TABLES = {"investigation": "investigations", "budget_optimization": "budget_optimization_jobs"}


def _migration_010() -> ModuleType:
    folder = Path(__file__).resolve().parents[1] / "010_run_writes_need_the_lease"
    spec = importlib.util.spec_from_file_location(
        "_migration_010", folder / "010_run_writes_need_the_lease.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _replacing(definition: str) -> str:
    return definition.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


_READ_COMMITTED_ONLY = """
    -- The lookup above must have seen the run as of now: an older snapshot (REPEATABLE READ)
    -- could still show the lease hash of before a takeover.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'writes for a run are made in READ COMMITTED transactions only'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    IF TG_TABLE_NAME = 'investigation_events' AND v_hash IS NULL"""

_TERMINAL_UNCHANGED = f"""
    IF current_user = '{APP_ROLE}' AND OLD.status NOT IN ('queued', 'running') THEN
        RETURN NULL;  -- a terminal run is never changed by the application role
    END IF;
    IF current_user <> '{APP_ROLE}' OR (v_old = v_new AND NOT v_uncancel) THEN"""


def _insert_guard(previous: ModuleType) -> str:
    """010's insert guard, refusing snapshots other than READ COMMITTED for a run's rows."""
    text: str = previous._INSERT_GUARD
    anchor = "\n    IF TG_TABLE_NAME = 'investigation_events' AND v_hash IS NULL"
    assert text.count(anchor) == 1
    return _replacing(text.replace(anchor, _READ_COMMITTED_ONLY, 1))


def _update_guard(previous: ModuleType) -> str:
    """010's update guard, leaving every terminal run as it was."""
    text: str = previous._UPDATE_GUARD
    anchor = f"\n    IF current_user <> '{APP_ROLE}' OR (v_old = v_new AND NOT v_uncancel) THEN"
    assert text.count(anchor) == 1
    return _replacing(text.replace(anchor, _TERMINAL_UNCHANGED, 1))


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


def upgrade() -> None:
    previous = _migration_010()
    op.execute(_insert_guard(previous))
    op.execute(_update_guard(previous))
    op.execute(_key_check())


def downgrade() -> None:
    previous = _migration_010()
    op.execute("DROP TRIGGER trg_job_idempotency_keys_names_a_run ON job_idempotency_keys")
    op.execute("DROP FUNCTION fn_job_key_names_a_run()")
    op.execute(_replacing(previous._UPDATE_GUARD))
    op.execute(_replacing(previous._INSERT_GUARD))
