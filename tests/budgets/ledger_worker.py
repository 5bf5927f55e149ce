"""A separate OS process for the ledger's concurrency tests (run by test_ledger_concurrency.py).

ledger_worker.py load URL TENANT TASKS WORST_CASE_USD START_AT
    TASKS concurrent reservations of WORST_CASE_USD each, from START_AT (epoch seconds);
    each one that fits sleeps a little and settles at a random cost no more than reserved.
    Prints {"reserved": n, "refused": n, "settled_cents": "..."} as JSON.
ledger_worker.py crash URL TENANT WORST_CASE_USD LEASE_SECONDS
    Reserves once, prints {"call_id": ..., "expires_at": ...} and then hangs until killed.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from decimal import Decimal
from uuid import UUID

from budgets.money import usd_to_cents
from llm_service.costs.ledger_repository import MonthlyCapExceeded, reserve_call, settle_call
from llm_service.db.pool import create_pool, tenant_transaction


async def _load(url: str, tenant_id: UUID, tasks: int, worst_usd: Decimal, start_at: float) -> None:
    pool = await create_pool(url, application_name="ledger-worker", min_size=10, max_size=10)
    outcomes: list[Decimal | None] = []

    async def one(i: int) -> None:
        try:
            async with tenant_transaction(pool, tenant_id) as conn:
                reservation = await reserve_call(
                    conn,
                    tenant_id=tenant_id,
                    endpoint="investigations",
                    model="openai/gpt-4o-mini",
                    provider="openai",
                    worst_case_usd=worst_usd,
                    lease_seconds=60,
                )
        except MonthlyCapExceeded:
            outcomes.append(None)
            return
        await asyncio.sleep(random.uniform(0.005, 0.05))  # the call: settles interleave with others
        cost = worst_usd * Decimal(random.randint(0, 1000)) / 1000
        async with tenant_transaction(pool, tenant_id) as conn:
            await settle_call(
                conn,
                reservation,
                status="succeeded",
                cost_usd=cost,
                input_tokens=i,
                output_tokens=1,
            )
        outcomes.append(usd_to_cents(cost))

    try:
        # Both processes burst together, for contention; the cap holds however they interleave.
        await asyncio.sleep(max(0.0, start_at - time.time()))
        await asyncio.gather(*(one(i) for i in range(tasks)))
    finally:
        await pool.close()
    settled = [c for c in outcomes if c is not None]
    print(
        json.dumps(
            {
                "reserved": len(settled),
                "refused": len(outcomes) - len(settled),
                "settled_cents": str(sum(settled, Decimal(0))),
            }
        ),
        flush=True,
    )


async def _crash(url: str, tenant_id: UUID, worst_usd: Decimal, lease: float) -> None:
    pool = await create_pool(url, application_name="ledger-worker-crash", max_size=1)
    async with tenant_transaction(pool, tenant_id) as conn:
        reservation = await reserve_call(
            conn,
            tenant_id=tenant_id,
            endpoint="investigations",
            model="openai/gpt-4o-mini",
            provider="openai",
            worst_case_usd=worst_usd,
            lease_seconds=lease,
        )
    payload = {
        "call_id": str(reservation.call_id),
        "expires_at": reservation.expires_at.isoformat(),
    }
    print(json.dumps(payload), flush=True)
    await asyncio.sleep(600)  # the "call" never returns: the test kills this process


def main(argv: list[str]) -> None:
    """Run one mode (see the module docstring)."""
    mode, url, tenant = argv[0], argv[1], UUID(argv[2])
    if mode == "load":
        asyncio.run(_load(url, tenant, int(argv[3]), Decimal(argv[4]), float(argv[5])))
    elif mode == "crash":
        asyncio.run(_crash(url, tenant, Decimal(argv[3]), float(argv[4])))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
