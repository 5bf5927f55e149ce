"""What cache needs from its host to reach a tenant's rows: a transaction with the tenant set.

`cache` names no table of the host and sets no tenant itself: row-level security reads the
tenant the host's transaction set (llm_service implements this with `db.pool.TenantTransactions`).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol
from uuid import UUID

import asyncpg


class TenantTransactions(Protocol):
    """Opens transactions whose tenant is set (committed on success, rolled back on error)."""

    def transaction(self, tenant_id: UUID) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A transaction on a connection whose current tenant is `tenant_id`."""
        ...
