"""One test helper: a run queued as the API would and claimed for a test's own worker."""

from __future__ import annotations

import uuid
from decimal import Decimal
from uuid import UUID

import asyncpg

from llm_service.db.pool import tenant_transaction
from llm_service.jobs.kinds import Claim

# The owner's pool, set for every test of this folder by conftest.py: only the claim function
# (and so, here, the owner) may set a run's lease token hash.
owner: asyncpg.Pool | None = None
_claims: dict[UUID, Claim] = {}


async def queue_claimed_run(
    pool: asyncpg.Pool,
    tenant_id: UUID,
    question: str,
    *,
    max_cost_cents: Decimal = Decimal(30),
    timeout_ms: int = 60_000,
    max_steps: int = 8,
    worker: str = "test-worker",
) -> UUID:
    """Insert the run with the columns the application role may write at creation, then take
    its lease as fn_claim_next_run would (not through the shared queue, which other tests use):
    a fresh token, the row keeping its hash. `claim_of(run_id)` is the claim."""
    assert owner is not None, "claimed_runs.owner is set by tests/llm_service/investigations"
    async with tenant_transaction(pool, tenant_id) as conn:
        run_id: UUID = await conn.fetchval(
            "INSERT INTO investigations (tenant_id, question, max_cost_cents, timeout_ms, "
            "max_steps) VALUES ($1, $2, $3, $4, $5) RETURNING id",
            tenant_id,
            question,
            max_cost_cents,
            timeout_ms,
            max_steps,
        )
    token = uuid.uuid4()
    async with tenant_transaction(owner, tenant_id) as conn:
        await conn.execute(
            "UPDATE investigations SET status = 'running', lease_owner = $2, "
            "lease_expires_at = now() + interval '1 minute', "
            "lease_token_hash = sha256(uuid_send($3::uuid)) WHERE id = $1",
            run_id,
            worker,
            token,
        )
    _claims[run_id] = Claim("investigation", run_id, tenant_id, False, token)
    return run_id


def claim_of(run_id: UUID) -> Claim:
    """The claim `queue_claimed_run` made for `run_id`."""
    return _claims[run_id]
