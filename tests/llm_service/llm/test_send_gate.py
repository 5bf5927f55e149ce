"""litellm builds a request while its reservation is in flight; nothing is sent before it commits.

Each test first lets litellm get as far as asking to send (a spy on `httpx.AsyncClient.send`,
which both of litellm's transports go through, above the gate), while the reserve is held back,
then checks what the provider received. On both transports: httpx (respx answers) and the
production one, aiohttp, against a real OpenAI-compatible server on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import httpx
import pytest
import respx

from llm_service.costs.ledger_repository import MonthlyCapExceeded
from llm_service.db.pool import presenting_run_token, tenant_transaction
from llm_service.llm.gateway import LlmGateway, LlmRequest, ProviderUnavailable
from llm_service.llm.litellm_setup import use_transport
from llm_service.llm.pricing import build_price_book
from llm_service.llm.send_gate import GateClosed, SendGate
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant, create_tenant
from tests.helpers.openai_stub import EMBEDDING_MODEL, EMBEDDINGS_URL, embeddings_reply
from tests.helpers.waiting import wait_until
from tests.llm_service.investigations import claimed_runs
from tests.llm_service.llm.test_gateway import OPENAI_URL, openai_completion
from tests.llm_service.llm.test_gateway_wire import WireStub


@dataclass
class Provider:
    """A gateway and the count of requests its provider has received."""

    gateway: LlmGateway
    received: Callable[[], int]
    transport: str


@pytest.fixture(params=["httpx", "aiohttp"])
async def provider(
    request: pytest.FixtureRequest,
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Provider]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-gate-test")
    update: dict[str, Any] = {
        "llm_model": "openai/gpt-4o-mini",
        "llm_max_attempts": 1,
        "llm_http_transport": request.param,
    }
    try:
        if request.param == "httpx":
            with respx.mock(assert_all_called=False) as router:
                route = router.post(OPENAI_URL).mock(
                    return_value=httpx.Response(200, json=openai_completion())
                )
                settings = test_settings.model_copy(update=update)
                gateway = LlmGateway(settings, app_pool, build_price_book(settings))
                yield Provider(gateway, lambda: route.call_count, "httpx")
        else:
            stub = WireStub()
            await stub.start()
            try:
                settings = test_settings.model_copy(update=update | {"llm_api_base": stub.base})
                gateway = LlmGateway(settings, app_pool, build_price_book(settings))
                yield Provider(gateway, lambda: len(stub.requests), "aiohttp")
            finally:
                await stub.stop()
    finally:
        use_transport(test_settings.llm_http_transport)


@pytest.fixture
def asked_to_send(provider: Provider, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set when litellm has built a request and asks its HTTP client to send it (above the
    gate: the gate decides whether it then goes)."""
    asked = asyncio.Event()
    gated = httpx.AsyncClient.send

    async def spy(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> Any:
        asked.set()
        return await gated(self, request, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "send", spy)
    return asked


def _hold_reserve_until(
    gateway: LlmGateway, event: asyncio.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reserve starts only once `event` is set (so litellm has had all the time it wants)."""
    real = gateway.ledger.open_call

    async def held(*args: Any) -> Any:
        await event.wait()
        return await real(*args)

    monkeypatch.setattr(gateway.ledger, "open_call", held)


def _request(tenant_id: UUID, **extra: Any) -> LlmRequest:
    return LlmRequest(
        tenant_id=tenant_id,
        endpoint="explanations",
        messages=[{"role": "user", "content": "Why did ROAS drop?"}],
        max_tokens=50,
        **extra,
    )


async def _rows(pool: asyncpg.Pool, tenant_id: UUID) -> list[tuple[str, Decimal]]:
    async with tenant_transaction(pool, tenant_id) as conn:
        rows = await conn.fetch(
            "SELECT status, cost_cents FROM llm_api_calls WHERE tenant_id = $1 ORDER BY created_at",
            tenant_id,
        )
    return [(r["status"], r["cost_cents"]) for r in rows]


class _TenantRowHeld:
    """The tenant's row locked by another transaction: every reserve of the tenant queues on it."""

    def __init__(self, owner_pool: asyncpg.Pool, tenant_id: UUID) -> None:
        self.owner_pool, self.tenant_id = owner_pool, tenant_id
        self._stack = contextlib.AsyncExitStack()
        self.pid = 0

    async def __aenter__(self) -> _TenantRowHeld:
        conn = await self._stack.enter_async_context(
            tenant_transaction(self.owner_pool, self.tenant_id)
        )
        locked = await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE) t",
            self.tenant_id,
        )
        assert locked == 1
        self.pid = await conn.fetchval("SELECT pg_backend_pid()")
        return self

    async def release(self) -> None:
        """Commit the holding transaction (its lock goes with it)."""
        await self._stack.aclose()

    async def __aexit__(self, *_: object) -> None:
        await self._stack.aclose()

    async def someone_waits(self) -> bool:
        """A session (the reserve) is blocked on this transaction's lock, as PostgreSQL says."""
        async with self.owner_pool.acquire() as conn:
            waiting: int = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE $1 = ANY (pg_blocking_pids(pid)) AND wait_event_type = 'Lock'",
                self.pid,
            )
        return waiting > 0


# ---------------------------------------------------------------------------------------------
# A refused reservation: the provider receives nothing, the caller gets the refusal
# ---------------------------------------------------------------------------------------------


async def test_a_reserve_past_the_monthly_cap_sends_nothing(
    provider: Provider,
    asked_to_send: asyncio.Event,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    poor = await create_tenant(owner_pool, "gate-poor", monthly_cap_cents=Decimal("0.0001"))
    _hold_reserve_until(provider.gateway, asked_to_send, monkeypatch)

    with pytest.raises(MonthlyCapExceeded):
        await provider.gateway.complete(_request(poor.tenant_id))

    assert asked_to_send.is_set()  # litellm had built the request and asked to send it
    assert provider.received() == 0
    assert await _rows(app_pool, poor.tenant_id) == []


async def test_a_reserve_past_the_runs_ceiling_in_the_database_sends_nothing(
    provider: Provider,
    asked_to_send: asyncio.Event,
    tenant: CreatedTenant,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from budgets.ceiling import CeilingReached

    claimed_runs.owner = owner_pool
    try:
        run_id = await claimed_runs.queue_claimed_run(
            app_pool, tenant.tenant_id, "why?", max_cost_cents=Decimal("0.0001")
        )
    finally:
        claimed_runs.owner = None
    _hold_reserve_until(provider.gateway, asked_to_send, monkeypatch)

    with (
        presenting_run_token(claimed_runs.claim_of(run_id).lease_token),
        pytest.raises(CeilingReached),
    ):
        await provider.gateway.complete(_request(tenant.tenant_id, investigation_id=run_id))

    assert asked_to_send.is_set()
    assert provider.received() == 0
    assert await _rows(app_pool, tenant.tenant_id) == []


async def test_a_reserve_for_a_run_whose_lease_is_not_held_sends_nothing(
    provider: Provider,
    asked_to_send: asyncio.Event,
    tenant: CreatedTenant,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    claimed_runs.owner = owner_pool
    try:
        run_id = await claimed_runs.queue_claimed_run(app_pool, tenant.tenant_id, "why?")
    finally:
        claimed_runs.owner = None
    _hold_reserve_until(provider.gateway, asked_to_send, monkeypatch)

    # Another worker's token (the lease was taken over): the database refuses the reservation.
    with presenting_run_token(uuid.uuid4()), pytest.raises(asyncpg.InsufficientPrivilegeError):
        await provider.gateway.complete(_request(tenant.tenant_id, investigation_id=run_id))

    assert asked_to_send.is_set()
    assert provider.received() == 0
    assert await _rows(app_pool, tenant.tenant_id) == []


# ---------------------------------------------------------------------------------------------
# A reservation held back: nothing goes until it commits, then exactly one request
# ---------------------------------------------------------------------------------------------


async def test_the_request_waits_at_the_gate_while_the_reserve_waits_for_its_lock(
    provider: Provider,
    asked_to_send: asyncio.Event,
    tenant: CreatedTenant,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
) -> None:
    async with _TenantRowHeld(owner_pool, tenant.tenant_id) as held:
        call = asyncio.create_task(provider.gateway.complete(_request(tenant.tenant_id)))
        await wait_until(held.someone_waits, "the reserve queues on the tenant's row")
        await asyncio.wait_for(asked_to_send.wait(), timeout=60)  # safety net only

        assert provider.received() == 0
        assert not call.done()
        assert await _rows(app_pool, tenant.tenant_id) == []  # not committed: not visible

        await held.release()
        result = await call

    assert provider.received() == 1
    assert result.content == "ok"
    assert await _rows(app_pool, tenant.tenant_id) == [("succeeded", result.cost_usd * 100)]


async def test_a_caller_cancelled_while_the_reserve_waits_sends_nothing_and_leaves_nothing_pending(
    provider: Provider,
    asked_to_send: asyncio.Event,
    tenant: CreatedTenant,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
) -> None:
    async with _TenantRowHeld(owner_pool, tenant.tenant_id) as held:
        call = asyncio.create_task(provider.gateway.complete(_request(tenant.tenant_id)))
        await wait_until(held.someone_waits, "the reserve queues on the tenant's row")
        await asyncio.wait_for(asked_to_send.wait(), timeout=60)  # safety net only

        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await held.release()

    # The attempt is over (its sending task ended on the closed gate): nothing went, and
    # nothing is left counted at its worst case.
    assert provider.received() == 0
    rows = await _rows(app_pool, tenant.tenant_id)
    assert all(status != "pending" and cost == 0 for status, cost in rows), rows


async def test_a_send_that_fails_after_a_good_reserve_is_settled_as_failed(
    provider: Provider,
    tenant: CreatedTenant,
    app_pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gated = httpx.AsyncClient.send

    async def refused_connection(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> Any:
        await gated(self, request, **kw)  # through the gate: sent, then the reply is lost
        raise httpx.ReadError("connection reset by peer", request=request)

    monkeypatch.setattr(httpx.AsyncClient, "send", refused_connection)

    with pytest.raises(ProviderUnavailable):
        await provider.gateway.complete(_request(tenant.tenant_id))

    assert provider.received() == 1
    [(status, cost)] = await _rows(app_pool, tenant.tenant_id)
    # Sent, so maybe billed: settled (not left pending), at the reserved worst case.
    assert status == "failed" and cost > 0


# ---------------------------------------------------------------------------------------------
# The gate itself: only the attempt's own sends wait; a closed gate lets nothing through
# ---------------------------------------------------------------------------------------------


@pytest.fixture
async def wire() -> AsyncIterator[WireStub]:
    stub = WireStub()
    await stub.start()
    try:
        yield stub
    finally:
        await stub.stop()


async def _post_with_aiohttp(base: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(base + "/chat/completions", json={"model": "m", "messages": []}) as reply,
    ):
        return reply.status


async def _post_with_httpx(base: str) -> int:
    async with httpx.AsyncClient() as client:
        reply = await client.post(base + "/chat/completions", json={"model": "m", "messages": []})
        return reply.status_code


@pytest.mark.parametrize("post", [_post_with_httpx, _post_with_aiohttp])
async def test_a_closed_gate_lets_neither_client_send(
    post: Callable[[str], Any], wire: WireStub, app_pool: asyncpg.Pool
) -> None:
    from llm_service.llm.litellm_setup import load_litellm

    load_litellm()  # installs the gate
    gate = SendGate()
    sending = asyncio.create_task(gate.run(post, wire.base))
    outside = await post(wire.base)  # not in the gate's task: straight through
    assert outside == 200 and len(wire.requests) == 1

    gate.close()
    with pytest.raises(GateClosed):
        await sending
    assert len(wire.requests) == 1

    opened = SendGate()
    opened.open()
    assert await opened.run(post, wire.base) == 200
    assert len(wire.requests) == 2


async def test_an_embedding_reserve_past_the_cap_sends_nothing(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-gate-test")
    settings = test_settings.model_copy(
        update={
            "llm_model": "openai/gpt-4o-mini",
            "embedding_model": EMBEDDING_MODEL,
            "llm_max_attempts": 1,
            "llm_http_transport": "httpx",
        }
    )
    gateway = LlmGateway(settings, app_pool, build_price_book(settings))
    poor = await create_tenant(owner_pool, "gate-poor-embed", monthly_cap_cents=Decimal("1E-9"))
    asked = asyncio.Event()
    gated = httpx.AsyncClient.send

    async def spy(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> Any:
        asked.set()
        return await gated(self, request, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "send", spy)
    _hold_reserve_until(gateway, asked, monkeypatch)

    with respx.mock(assert_all_called=False) as router:
        route = router.post(EMBEDDINGS_URL).mock(
            side_effect=lambda request: embeddings_reply(request, lambda _: [0.0] * 8)
        )
        with pytest.raises(MonthlyCapExceeded):
            await gateway.embed(poor.tenant_id, ["a question about ROAS"])

    assert asked.is_set() and route.call_count == 0
    assert await _rows(app_pool, poor.tenant_id) == []


def _post_with_sync_httpx(base: str) -> int:
    with httpx.Client() as client:
        reply = client.post(base + "/chat/completions", json={"model": "m", "messages": []})
        return reply.status_code


@pytest.fixture
def asked_to_send_sync(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set when a synchronous httpx client asks to send (above the gate)."""
    from llm_service.llm.litellm_setup import load_litellm

    load_litellm()  # installs the gate
    asked = threading.Event()
    gated = httpx.Client.send

    def spy(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> Any:
        asked.set()
        return gated(self, request, **kwargs)

    monkeypatch.setattr(httpx.Client, "send", spy)
    return asked


@pytest.mark.parametrize("decision", ["open", "close"])
async def test_a_synchronous_send_in_a_worker_thread_waits_for_the_decision(
    decision: str, wire: WireStub, asked_to_send_sync: threading.Event
) -> None:
    # litellm runs `completion()` in a worker thread (a provider it calls synchronously sends
    # from there): the thread sees the gate through the copied context and blocks on it.
    gate = SendGate()
    sending = asyncio.create_task(gate.run(asyncio.to_thread, _post_with_sync_httpx, wire.base))
    assert await asyncio.to_thread(asked_to_send_sync.wait, 60)  # safety net only
    assert wire.requests == []

    if decision == "open":
        gate.open()
        assert await sending == 200
        assert len(wire.requests) == 1
    else:
        gate.close()
        with pytest.raises(GateClosed):
            await sending
        assert wire.requests == []


async def test_a_synchronous_send_on_the_event_loop_is_refused_rather_than_stalling_it(
    wire: WireStub, asked_to_send_sync: threading.Event
) -> None:
    gate = SendGate()

    async def blocking_send_on_the_loop() -> int:
        return _post_with_sync_httpx(wire.base)

    with pytest.raises(GateClosed):
        await gate.run(blocking_send_on_the_loop)
    assert asked_to_send_sync.is_set() and wire.requests == []
