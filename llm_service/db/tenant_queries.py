"""The statements that set a transaction's tenant: the only SQL that does (see `db.pool`)."""

from __future__ import annotations

# The tenant for the current transaction only (`true`: never the session).
SET_TENANT = "SELECT set_config('app.current_tenant_id', $1, true)"

# The tenant of an API key's hash, set for the current transaction in the same statement that
# resolves it: the database, not the request, decides whose rows the transaction sees. An
# unknown (or revoked) key sets '' (no tenant: every tenant table reads empty, fail closed)
# and the statement returns ''.
SET_TENANT_FROM_KEY = (
    "SELECT set_config('app.current_tenant_id',"
    " coalesce(fn_tenant_for_api_key_hash($1)::text, ''), true)"
)
