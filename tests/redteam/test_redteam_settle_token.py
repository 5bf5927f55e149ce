"""Red team: a ledger row is settled only by the request that reserved it (migration 012).

Each test acts as a compromised llm_app session (any GUC, no other request's token)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from decimal import Decimal

import asyncpg
import httpx
import pytest

from budgets import ledger
from llm_service.costs.ledger_repository import PgStatementStore
from llm_service.db.pool import _init_connection
from llm_service.db.urls import DatabaseUrls
from llm_service.tenants.service import CreatedTenant

SETTLE = (
    "SELECT fn_settle_call($1, 'succeeded', 1, 1, $2::numeric, false, 1, NULL, NULL, NULL, "
    "NULL, NULL, NULL, $3::uuid)"
)


async def _as_tenant(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> None:
    await conn.execute("SELECT set_config('app.current_tenant_id', $1, true)", str(tenant_id))


async def _reserve(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, token: uuid.UUID | None
) -> uuid.UUID:
    """An explanation call (no run) reserved at 5 cents with the sha256 of `token`."""
    call = uuid.uuid4()
    async with conn.transaction():
        await _as_tenant(conn, tenant_id)
        await conn.execute(
            "INSERT INTO llm_api_calls (id, tenant_id, request_id, endpoint, model, provider, "
            "attempt, reserved_cents, reservation_expires_at, max_tokens, settle_token_hash) "
            "VALUES ($1, $2, $3, 'explanations', 'gpt-4o-mini', 'openai', 1, 5, "
            "now() + interval '1 hour', 10, "
            "CASE WHEN $4::uuid IS NULL THEN NULL ELSE sha256(uuid_send($4::uuid)) END)",
            call,
            tenant_id,
            f"req-{call.hex[:8]}",
            token,
        )
    return call


async def _settle(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    call: uuid.UUID,
    token: uuid.UUID | None,
    cost: str = "1",
) -> bool:
    async with conn.transaction():
        await _as_tenant(conn, tenant_id)
        settled: bool = await conn.fetchval(SETTLE, call, cost, token)
    return settled


async def _status(conn: asyncpg.Connection, tenant_id: uuid.UUID, call: uuid.UUID) -> str:
    async with conn.transaction():
        await _as_tenant(conn, tenant_id)
        status: str = await conn.fetchval("SELECT status FROM llm_api_calls WHERE id = $1", call)
    return status


async def test_guessed_tokens_settle_nothing_and_the_honest_settle_still_works(
    app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    """NULL, zero, random, another call's token and the stored hash itself all fail."""
    token, other_token = uuid.uuid4(), uuid.uuid4()
    call = await _reserve(app_conn, tenant.tenant_id, token)
    await _reserve(app_conn, tenant.tenant_id, other_token)
    async with app_conn.transaction():
        await _as_tenant(app_conn, tenant.tenant_id)
        stored: bytes = await app_conn.fetchval(
            "SELECT settle_token_hash FROM llm_api_calls WHERE id = $1", call
        )
    assert stored == hashlib.sha256(token.bytes).digest()
    guesses = [
        None,
        uuid.UUID(int=0),
        uuid.uuid4(),
        other_token,
        uuid.UUID(bytes=stored[:16]),
        uuid.UUID(bytes=stored[16:]),
        call,
    ]
    for guess in guesses:
        assert await _settle(app_conn, tenant.tenant_id, call, guess, "0") is False
    assert await _status(app_conn, tenant.tenant_id, call) == "pending"
    assert await _settle(app_conn, tenant.tenant_id, call, token, "3") is True
    async with app_conn.transaction():
        await _as_tenant(app_conn, tenant.tenant_id)
        row = await app_conn.fetchrow(
            "SELECT status, cost_cents FROM llm_api_calls WHERE id = $1", call
        )
    assert (row["status"], row["cost_cents"]) == ("succeeded", Decimal(3))
    # Settled once: the right token again does nothing.
    assert await _settle(app_conn, tenant.tenant_id, call, token, "0") is False


async def test_another_tenants_call_cannot_be_settled_or_duplicated(
    app_conn: asyncpg.Connection, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    """With the victim's token but the attacker's tenant, or a forged row with the same id."""
    token = uuid.uuid4()
    call = await _reserve(app_conn, other_tenant.tenant_id, token)
    assert await _settle(app_conn, tenant.tenant_id, call, token, "0") is False
    # A forged row with the victim's id and a hash the attacker chose: refused by the key.
    forged_token = uuid.uuid4()
    with pytest.raises(asyncpg.UniqueViolationError):
        async with app_conn.transaction():
            await _as_tenant(app_conn, tenant.tenant_id)
            await app_conn.execute(
                "INSERT INTO llm_api_calls (id, tenant_id, request_id, endpoint, model, "
                "provider, attempt, reserved_cents, reservation_expires_at, max_tokens, "
                "settle_token_hash) VALUES ($1, $2, 'forged', 'explanations', 'm', 'openai', 1, "
                "5, now() + interval '1 hour', 10, sha256(uuid_send($3::uuid)))",
                call,
                tenant.tenant_id,
                forged_token,
            )
    assert await _settle(app_conn, tenant.tenant_id, call, forged_token, "0") is False
    assert await _status(app_conn, other_tenant.tenant_id, call) == "pending"
    assert await _settle(app_conn, other_tenant.tenant_id, call, token, "2") is True


async def test_settle_stays_within_the_reservation_and_above_zero(
    app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    """Even with its own token, a call settles neither below zero nor above its reservation."""
    token = uuid.uuid4()
    call = await _reserve(app_conn, tenant.tenant_id, token)
    for cost in ("-1", "5.01"):
        with pytest.raises(asyncpg.CheckViolationError):
            await _settle(app_conn, tenant.tenant_id, call, token, cost)
    assert await _status(app_conn, tenant.tenant_id, call) == "pending"
    assert await _settle(app_conn, tenant.tenant_id, call, token, "5") is True


async def test_a_row_without_a_hash_is_never_settled_by_the_app(
    app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    """A call of no run inserted with a NULL hash has no secret: no token settles it."""
    call = await _reserve(app_conn, tenant.tenant_id, None)
    for guess in (None, uuid.UUID(int=0), uuid.uuid4()):
        assert await _settle(app_conn, tenant.tenant_id, call, guess, "0") is False
    assert await _status(app_conn, tenant.tenant_id, call) == "pending"


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT 1 FROM llm_api_calls WHERE id = $1 FOR UPDATE",
        "SELECT 1 FROM llm_api_calls WHERE id = $1 FOR KEY SHARE",
        "UPDATE llm_api_calls SET status = 'abandoned' WHERE id = $1",
        "UPDATE llm_api_calls SET settle_token_hash = NULL WHERE id = $1",
        "DELETE FROM llm_api_calls WHERE id = $1",
        "SELECT 1 FROM run_cancel_requests WHERE run_id = $1 FOR KEY SHARE",
        "INSERT INTO run_cancel_requests (tenant_id, run_id, kind) "
        "VALUES (current_setting('app.current_tenant_id')::uuid, $1, 'investigation')",
        "UPDATE run_cancel_requests SET requested_at = now() WHERE run_id = $1",
        "DELETE FROM run_cancel_requests WHERE run_id = $1",
    ],
)
async def test_the_app_can_neither_lock_nor_write_ledger_rows_or_cancel_requests(
    app_conn: asyncpg.Connection, tenant: CreatedTenant, statement: str
) -> None:
    """Every lock-taking or writing statement a session could hold open is refused."""
    call = await _reserve(app_conn, tenant.tenant_id, uuid.uuid4())
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with app_conn.transaction():
            await _as_tenant(app_conn, tenant.tenant_id)
            await app_conn.execute(statement, call)


async def test_cancel_of_an_unknown_or_foreign_run_writes_no_request(
    app_conn: asyncpg.Connection, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    """No FK, so the definer must refuse: a run id of nothing (or of no running run) gets no row."""
    ghost = uuid.uuid4()
    async with app_conn.transaction():
        await _as_tenant(app_conn, tenant.tenant_id)
        rows = await app_conn.fetch("SELECT * FROM fn_cancel_investigation($1)", ghost)
        assert rows == []
        assert await app_conn.fetchval("SELECT fn_run_cancel_requested($1)", ghost) is False
        count = await app_conn.fetchval("SELECT count(*) FROM run_cancel_requests")
    assert count == 0


async def _running_run(
    owner: asyncpg.Pool, app: asyncpg.Connection, tenant_id: uuid.UUID
) -> tuple[uuid.UUID, uuid.UUID]:
    """A run queued as the API would, then claimed (as the claim does) with a fresh lease token."""
    async with app.transaction():
        await _as_tenant(app, tenant_id)
        run: uuid.UUID = await app.fetchval(
            "INSERT INTO investigations (tenant_id, question, max_cost_cents, timeout_ms, "
            "max_steps) VALUES ($1, 'q', 30, 60000, 8) RETURNING id",
            tenant_id,
        )
    lease = uuid.uuid4()
    async with owner.acquire() as conn, conn.transaction():
        await _as_tenant(conn, tenant_id)
        await conn.execute(
            "UPDATE investigations SET status = 'running', lease_owner = 'w', "
            "lease_expires_at = now() + interval '1 minute', "
            "lease_token_hash = sha256(uuid_send($2::uuid)) WHERE id = $1",
            run,
            lease,
        )
    return run, lease


async def _present(conn: asyncpg.Connection, tenant_id: uuid.UUID, lease: uuid.UUID | None) -> None:
    await _as_tenant(conn, tenant_id)
    await conn.execute(
        "SELECT set_config('llm.run_token', $1, true)", "" if lease is None else str(lease)
    )


async def test_a_run_call_needs_both_its_call_token_and_the_lease_token(
    owner_pool: asyncpg.Pool, app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    """A leaked lease token alone, or the call token alone, settles nothing; both do."""
    run, lease = await _running_run(owner_pool, app_conn, tenant.tenant_id)
    token, call = uuid.uuid4(), uuid.uuid4()
    async with app_conn.transaction():
        await _present(app_conn, tenant.tenant_id, lease)
        await app_conn.execute(
            "INSERT INTO llm_api_calls (id, tenant_id, request_id, endpoint, model, provider, "
            "attempt, reserved_cents, reservation_expires_at, max_tokens, investigation_id, "
            "settle_token_hash) VALUES ($1, $2, 'r', 'investigations', 'm', 'openai', 1, 5, "
            "now() + interval '1 hour', 10, $3, sha256(uuid_send($4::uuid)))",
            call,
            tenant.tenant_id,
            run,
            token,
        )
    for presented, guess in (
        (None, token),
        (uuid.uuid4(), token),
        (lease, None),
        (lease, uuid.uuid4()),
    ):
        async with app_conn.transaction():
            await _present(app_conn, tenant.tenant_id, presented)
            assert await app_conn.fetchval(SETTLE, call, "0", guess) is False
    async with app_conn.transaction():
        await _present(app_conn, tenant.tenant_id, lease)
        assert await app_conn.fetchval(SETTLE, call, "2", token) is True
    async with app_conn.transaction():
        await _as_tenant(app_conn, tenant.tenant_id)
        spent = await app_conn.fetchval("SELECT cost_cents FROM investigations WHERE id = $1", run)
    assert spent == Decimal(2)


async def test_cancel_requests_for_running_queued_and_foreign_runs(
    owner_pool: asyncpg.Pool,
    app_conn: asyncpg.Connection,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
) -> None:
    """A foreign run gets no request; the tenant's running run one (once); a queued run is
    cancelled at once."""
    run, _lease = await _running_run(owner_pool, app_conn, tenant.tenant_id)
    async with app_conn.transaction():
        await _as_tenant(app_conn, other_tenant.tenant_id)
        assert await app_conn.fetch("SELECT * FROM fn_cancel_investigation($1)", run) == []
        assert await app_conn.fetchval("SELECT fn_run_cancel_requested($1)", run) is False
    async with app_conn.transaction():
        await _as_tenant(app_conn, tenant.tenant_id)
        assert await app_conn.fetchval("SELECT fn_run_cancel_requested($1)", run) is False
        first = await app_conn.fetch("SELECT * FROM fn_cancel_investigation($1)", run)
        assert [(r["status"], r["cancel_requested"]) for r in first] == [("running", True)]
        assert await app_conn.fetch("SELECT * FROM fn_cancel_investigation($1)", run) == []
        assert await app_conn.fetchval("SELECT fn_run_cancel_requested($1)", run) is True
        queued: uuid.UUID = await app_conn.fetchval(
            "INSERT INTO investigations (tenant_id, question, max_cost_cents, timeout_ms, "
            "max_steps) VALUES ($1, 'q', 30, 60000, 8) RETURNING id",
            tenant.tenant_id,
        )
    async with app_conn.transaction():
        await _as_tenant(app_conn, tenant.tenant_id)
        rows = await app_conn.fetch("SELECT * FROM fn_cancel_investigation($1)", queued)
    assert [r["status"] for r in rows] == ["cancelled"]
    async with app_conn.transaction():
        await _as_tenant(app_conn, tenant.tenant_id)
        status = await app_conn.fetchval("SELECT status FROM investigations WHERE id = $1", run)
    assert status == "running"


async def test_an_uncommitted_cancel_holds_no_lock_on_the_running_run(
    owner_pool: asyncpg.Pool,
    app_conn: asyncpg.Connection,
    database_urls: object,
    tenant: CreatedTenant,
) -> None:
    """A cancel left open keeps no lock on the run: the holder's end goes through at once."""
    run, lease = await _running_run(owner_pool, app_conn, tenant.tenant_id)
    holder = await asyncpg.connect(database_urls.app)  # type: ignore[attr-defined]
    try:
        async with app_conn.transaction():
            await _as_tenant(app_conn, tenant.tenant_id)
            await app_conn.fetch("SELECT * FROM fn_cancel_investigation($1)", run)
            # Row locks live in the tuple, not pg_locks: NOWAIT fails at once on any held one.
            async with owner_pool.acquire() as conn, conn.transaction():
                await _as_tenant(conn, tenant.tenant_id)
                locked = await conn.fetchval(
                    "SELECT count(*) FROM (SELECT 1 FROM investigations WHERE id = $1 "
                    "FOR UPDATE NOWAIT) x",
                    run,
                )
            assert locked == 1
            async with holder.transaction():
                await _present(holder, tenant.tenant_id, lease)
                # A safety net against a hang, not a synchronisation.
                await holder.execute("SET LOCAL lock_timeout = '5s'")
                renewed = await holder.fetch(
                    "SELECT * FROM fn_finish_investigation($1, 'w', 'cancelled', 'asked', 1, "
                    "NULL, false)",
                    run,
                )
            assert renewed[0][0] == Decimal(0)
    finally:
        await holder.close()


async def test_the_settle_token_stays_out_of_reprs_logs_and_query_text(
    app_conn: asyncpg.Connection,
    database_urls: DatabaseUrls,
    tenant: CreatedTenant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through the gateway's one-statement path: the token is a parameter, never text."""
    caplog.set_level(logging.DEBUG)
    gateway = await asyncpg.connect(database_urls.app)
    await _init_connection(gateway)  # the app pool's JSON codecs
    try:
        store = PgStatementStore(gateway, tenant.tenant_id)
        token = uuid.uuid4()
        reservation = await ledger.reserve_call(
            store,
            tenant_id=tenant.tenant_id,
            worst_case_usd=Decimal("0.01"),
            endpoint="explanations",
            model="gpt-4o-mini",
            provider="openai",
            lease_seconds=60,
            max_tokens=10,
            settle_token=token,
        )
        assert reservation.settle_token == token
        assert str(token) not in repr(reservation)
        assert token.hex not in repr(reservation)
        settled = await ledger.settle_call(
            store, reservation, status="succeeded", cost_usd=Decimal("0.001")
        )
        assert settled is True
        # pg_stat_activity keeps an idle backend's last statement: the settle's.
        last = await app_conn.fetchval(
            "SELECT query FROM pg_stat_activity WHERE pid = $1", gateway.get_server_pid()
        )
        assert "fn_settle_call" in last
        assert str(token) not in last
        assert str(token) not in caplog.text
    finally:
        await gateway.close()


async def test_a_row_the_attacker_failed_to_settle_is_swept_at_its_worst_case(
    app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    """Failed guesses leave the row pending; once expired the sweep counts its reservation."""
    call = uuid.uuid4()
    async with app_conn.transaction():
        await _as_tenant(app_conn, tenant.tenant_id)
        await app_conn.execute(
            "INSERT INTO llm_api_calls (id, tenant_id, request_id, endpoint, model, provider, "
            "attempt, reserved_cents, reservation_expires_at, max_tokens, settle_token_hash) "
            "VALUES ($1, $2, 'r', 'explanations', 'm', 'openai', 1, 5, now(), 10, "
            "sha256(uuid_send($3::uuid)))",
            call,
            tenant.tenant_id,
            uuid.uuid4(),
        )
    for guess in (None, uuid.uuid4()):
        assert await _settle(app_conn, tenant.tenant_id, call, guess, "0") is False
    assert await app_conn.fetchval("SELECT fn_sweep_expired_llm_reservations()") >= 1
    async with app_conn.transaction():
        await _as_tenant(app_conn, tenant.tenant_id)
        row = await app_conn.fetchrow(
            "SELECT status, cost_cents FROM llm_api_calls WHERE id = $1", call
        )
    assert (row["status"], row["cost_cents"]) == ("abandoned", Decimal(5))


async def test_an_open_cancel_does_not_stall_the_renewal_and_a_committed_one_reaches_it(
    owner_pool: asyncpg.Pool,
    app_conn: asyncpg.Connection,
    database_urls: DatabaseUrls,
    tenant: CreatedTenant,
) -> None:
    """The renewal (SKIP LOCKED) still renews under an uncommitted cancel, then reads the
    committed request as `cancel_requested`."""
    run, lease = await _running_run(owner_pool, app_conn, tenant.tenant_id)
    worker = await asyncpg.connect(database_urls.app)
    renew = "SELECT run_id, cancel_requested, renewed FROM fn_renew_leases('w', 60, $1::uuid[])"
    try:
        tx = app_conn.transaction()
        await tx.start()
        try:
            await _as_tenant(app_conn, tenant.tenant_id)
            await app_conn.fetch("SELECT * FROM fn_cancel_investigation($1)", run)
            rows = await worker.fetch(renew, [lease])
            assert [(r["run_id"], r["renewed"]) for r in rows] == [(run, True)]
        finally:
            await tx.commit()
        rows = await worker.fetch(renew, [lease])
        assert [(r["run_id"], r["cancel_requested"], r["renewed"]) for r in rows] == [
            (run, True, True)
        ]
    finally:
        await worker.close()


async def test_the_api_answers_cancelled_for_queued_and_requested_for_running(
    owner_pool: asyncpg.Pool,
    app_conn: asyncpg.Connection,
    client: httpx.AsyncClient,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
) -> None:
    """The API's cancel: a queued run is cancelled, a running one has its request, a
    foreign run is not found and gets no request."""
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    running, lease = await _running_run(owner_pool, app_conn, tenant.tenant_id)
    foreign, _ = await _running_run(owner_pool, app_conn, other_tenant.tenant_id)
    response = await client.post(f"/v1/investigations/{foreign}/cancel", headers=headers)
    assert response.status_code == 404
    assert set(response.json()["error"]) >= {"code", "message"}
    response = await client.post(f"/v1/investigations/{running}/cancel", headers=headers)
    assert response.status_code == 200
    # The body has no `cancel_requested` field (InvestigationOut never had one): the request
    # is seen through fn_run_cancel_requested.
    assert response.json()["status"] == "running"
    assert str(lease) not in response.text
    async with app_conn.transaction():
        await _as_tenant(app_conn, tenant.tenant_id)
        assert await app_conn.fetchval("SELECT fn_run_cancel_requested($1)", running) is True
        await _as_tenant(app_conn, other_tenant.tenant_id)
        assert await app_conn.fetchval("SELECT fn_run_cancel_requested($1)", foreign) is False
        await _as_tenant(app_conn, tenant.tenant_id)
        queued: uuid.UUID = await app_conn.fetchval(
            "INSERT INTO investigations (tenant_id, question, max_cost_cents, timeout_ms, "
            "max_steps) VALUES ($1, 'q', 30, 60000, 8) RETURNING id",
            tenant.tenant_id,
        )
    response = await client.post(f"/v1/investigations/{queued}/cancel", headers=headers)
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"


async def test_a_cancel_racing_the_end_waits_for_it_and_writes_no_request(
    owner_pool: asyncpg.Pool,
    app_conn: asyncpg.Connection,
    database_urls: DatabaseUrls,
    tenant: CreatedTenant,
) -> None:
    """The end in flight (FOR UPDATE held) is waited for; the cancel then sees a terminal run."""
    run, lease = await _running_run(owner_pool, app_conn, tenant.tenant_id)
    holder = await asyncpg.connect(database_urls.app)
    try:
        tx = holder.transaction()
        await tx.start()
        try:
            await _present(holder, tenant.tenant_id, lease)
            spent = await holder.fetchval(
                "SELECT fn_finish_investigation($1, 'w', 'succeeded', NULL, 1, NULL, false)", run
            )
            assert spent == Decimal(0)

            async def cancel() -> list[asyncpg.Record]:
                async with app_conn.transaction():
                    await _as_tenant(app_conn, tenant.tenant_id)
                    return await app_conn.fetch("SELECT * FROM fn_cancel_investigation($1)", run)

            task = asyncio.ensure_future(cancel())
            pid = app_conn.get_server_pid()
            async with owner_pool.acquire() as watcher:
                while not task.done():
                    waiting = await watcher.fetchval(
                        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1",
                        pid,
                    )
                    if waiting:
                        break
            assert not task.done()
        finally:
            await tx.commit()
        assert await task == []
        async with app_conn.transaction():
            await _as_tenant(app_conn, tenant.tenant_id)
            assert await app_conn.fetchval("SELECT fn_run_cancel_requested($1)", run) is False
            status = await app_conn.fetchval("SELECT status FROM investigations WHERE id = $1", run)
        assert status == "succeeded"
    finally:
        await holder.close()


async def test_two_racing_cancels_write_one_request(
    owner_pool: asyncpg.Pool,
    app_conn: asyncpg.Connection,
    database_urls: DatabaseUrls,
    tenant: CreatedTenant,
) -> None:
    """The second cancel waits on the first's uncommitted request and then answers nothing."""
    run, _lease = await _running_run(owner_pool, app_conn, tenant.tenant_id)
    second = await asyncpg.connect(database_urls.app)
    try:
        tx = app_conn.transaction()
        await tx.start()
        try:
            await _as_tenant(app_conn, tenant.tenant_id)
            first = await app_conn.fetch("SELECT * FROM fn_cancel_investigation($1)", run)
            assert [r["cancel_requested"] for r in first] == [True]

            async def cancel() -> list[asyncpg.Record]:
                async with second.transaction():
                    await _as_tenant(second, tenant.tenant_id)
                    return await second.fetch("SELECT * FROM fn_cancel_investigation($1)", run)

            task = asyncio.ensure_future(cancel())
            async with owner_pool.acquire() as watcher:
                while not task.done():
                    if await watcher.fetchval(
                        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1",
                        second.get_server_pid(),
                    ):
                        break
            assert not task.done()
        finally:
            await tx.commit()
        assert await task == []
        async with owner_pool.acquire() as conn, conn.transaction():
            await _as_tenant(conn, tenant.tenant_id)
            count = await conn.fetchval(
                "SELECT count(*) FROM run_cancel_requests WHERE run_id = $1", run
            )
        assert count == 1
    finally:
        await second.close()


async def test_a_copied_hash_on_a_forged_row_changes_nothing(
    app_conn: asyncpg.Connection, tenant: CreatedTenant
) -> None:
    """A row inserted with the victim's hash (read through RLS) is settled by nobody but the
    victim's token, and the victim's settle touches its own row only."""
    token = uuid.uuid4()
    victim = await _reserve(app_conn, tenant.tenant_id, token)
    forged = uuid.uuid4()
    async with app_conn.transaction():
        await _as_tenant(app_conn, tenant.tenant_id)
        await app_conn.execute(
            "INSERT INTO llm_api_calls (id, tenant_id, request_id, endpoint, model, provider, "
            "attempt, reserved_cents, reservation_expires_at, max_tokens, settle_token_hash) "
            "SELECT $1, tenant_id, 'forged', endpoint, model, provider, 1, 5, "
            "now() + interval '1 hour', 10, settle_token_hash FROM llm_api_calls WHERE id = $2",
            forged,
            victim,
        )
    assert await _settle(app_conn, tenant.tenant_id, forged, uuid.uuid4(), "0") is False
    assert await _settle(app_conn, tenant.tenant_id, victim, token, "4") is True
    assert await _status(app_conn, tenant.tenant_id, forged) == "pending"
    assert await _status(app_conn, tenant.tenant_id, victim) == "succeeded"
