"""What cache needs from its host to reach a tenant's rows: a store in a tenant's transaction.

`cache` names no table of the host and sets no tenant itself: the host opens the transaction,
sets its tenant and hands back its `cache.store.CacheRows` (llm_service implements this with
`llm_service.explanations.cache_repository.CacheTransactions`).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol
from uuid import UUID

from cache.store import CacheRows


class TenantTransactions(Protocol):
    """Opens transactions whose tenant is set (committed on success, rolled back on error)."""

    def transaction(self, tenant_id: UUID) -> AbstractAsyncContextManager[CacheRows]:
        """The cache's rows in a transaction whose current tenant is `tenant_id`."""
        ...
