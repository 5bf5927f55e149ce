"""Red team: nothing reaches the provider before its reservation is committed (issue 15).

The provider is a real loopback HTTP server that counts every connection and every byte it
receives, so both transports (httpx and aiohttp) are seen at the socket; the gateway, litellm,
the ledger and PostgreSQL run for real, as the application role. A slow reservation is made by
holding the tenant's row lock (what every reservation of a tenant queues on) in a transaction
the test controls; the tests synchronise on the database's own lock graph and on the provider's
arrival events, never on sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from budgets.ceiling import CeilingReached, RunCeiling
from budgets.ledger import MonthlyCapExceeded
from llm_service.db.pool import presenting_run_token, tenant_transaction
from llm_service.db.queries import set_tenant
from llm_service.db.retry import is_database_outage
from llm_service.llm.gateway import LlmGateway, LlmRequest
from llm_service.llm.pricing import build_price_book
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant
from tests.helpers.waiting import wait_until
from tests.llm_service.investigations import claimed_runs

MODEL = "openai/gpt-4o-mini"
TRANSPORTS = ["httpx", "aiohttp"]

Answer = Callable[[dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]


def _completion(tag: str, prompt_tokens: int = 40, completion_tokens: int = 8) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"answer to {tag}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


async def _answer_ok(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, _completion(_tag(body))


def _tag(body: dict[str, Any]) -> str:
    messages = body.get("messages") or [{"content": ""}]
    return str(messages[-1].get("content", ""))


@dataclass
class LoopbackProvider:
    """An OpenAI-compatible HTTP/1.1 server on 127.0.0.1 counting what reaches its socket."""

    answer: Answer = _answer_ok
    connections: int = 0
    bytes_received: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    def tags(self) -> list[str]:
        return [_tag(r) for r in self.requests]

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.bytes_received += len(head)
                length = 0
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                raw = await reader.readexactly(length) if length else b""
                self.bytes_received += len(raw)
                body = json.loads(raw or b"{}")
                self.requests.append(body)
                self.arrived.set()
                status, reply = await self.answer(body)
                data = json.dumps(reply).encode()
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def provider() -> AsyncIterator[LoopbackProvider]:
    server = LoopbackProvider()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(autouse=True)
def _owner_for_runs(owner_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claimed_runs, "owner", owner_pool)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-redteam-loopback")


def _gateway(
    settings: Settings, pool: asyncpg.Pool, provider: LoopbackProvider, transport: str
) -> LlmGateway:
    configured = settings.model_copy(
        update={
            "llm_model": MODEL,
            "llm_api_base": provider.url,
            "llm_http_transport": transport,
            "llm_max_attempts": 3,
            "llm_request_timeout_s": 30.0,
            "embedding_model": "openai/text-embedding-3-small",
        }
    )
    return LlmGateway(configured, pool, build_price_book(configured))


def _request(tenant_id: UUID, tag: str, investigation_id: UUID | None = None) -> LlmRequest:
    return LlmRequest(
        tenant_id=tenant_id,
        endpoint="investigations" if investigation_id else "explanations",
        messages=[{"role": "user", "content": tag}],
        max_tokens=64,
        min_output_tokens=8,
        investigation_id=investigation_id,
    )


async def _rows(pool: asyncpg.Pool, tenant_id: UUID) -> list[asyncpg.Record]:
    async with tenant_transaction(pool, tenant_id) as conn:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT id, status, reserved_cents, cost_cents, request_metadata "
            "FROM llm_api_calls WHERE tenant_id = $1 ORDER BY created_at",
            tenant_id,
        )
    return rows


class TenantLock:
    """The tenant's row held FOR UPDATE by a transaction the test controls."""

    def __init__(self, owner_pool: asyncpg.Pool, tenant_id: UUID) -> None:
        self.owner_pool = owner_pool
        self.tenant_id = tenant_id
        self.conn: asyncpg.Connection | None = None
        self.tx: Any = None
        self.pid = 0

    async def __aenter__(self) -> TenantLock:
        self.conn = await self.owner_pool.acquire()
        self.tx = self.conn.transaction()
        await self.tx.start()
        await set_tenant(self.conn, self.tenant_id)
        await self.conn.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", self.tenant_id)
        self.pid = await self.conn.fetchval("SELECT pg_backend_pid()")
        return self

    async def waiters(self) -> list[int]:
        """The backends waiting on this transaction's locks (the reserves it holds up)."""
        assert self.conn is not None
        async with self.owner_pool.acquire() as probe:
            rows = await probe.fetch(
                "SELECT DISTINCT pid FROM pg_locks WHERE NOT granted "
                "AND $1 = ANY(pg_blocking_pids(pid))",
                self.pid,
            )
        return [r["pid"] for r in rows]

    async def release(self) -> None:
        if self.tx is not None:
            await self.tx.rollback()
            self.tx = None
        if self.conn is not None:
            await self.owner_pool.release(self.conn)
            self.conn = None

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


async def _set_cap(owner_pool: asyncpg.Pool, tenant_id: UUID, cents: Decimal) -> None:
    async with tenant_transaction(owner_pool, tenant_id) as conn:
        await conn.execute(
            "UPDATE tenants SET monthly_cap_cents = $2 WHERE id = $1", tenant_id, cents
        )


# -- 1. a refused reservation sends nothing ---------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_cap_refusal_sends_no_byte(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    provider: LoopbackProvider,
    transport: str,
) -> None:
    gateway = _gateway(test_settings, app_pool, provider, transport)
    await gateway.complete(_request(tenant.tenant_id, "warm"))  # a client cached and connected
    sent_before = (provider.connections, provider.bytes_received, len(provider.requests))
    await _set_cap(owner_pool, tenant.tenant_id, Decimal(0))
    with pytest.raises(MonthlyCapExceeded):
        await gateway.complete(_request(tenant.tenant_id, "refused"))
    assert (provider.connections, provider.bytes_received, len(provider.requests)) == sent_before
    assert provider.tags() == ["warm"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_run_ceiling_in_the_database_refuses_before_any_byte(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    provider: LoopbackProvider,
    transport: str,
) -> None:
    # The run's ceiling in PostgreSQL is below what the call reserves; the in-memory one is not.
    run_id = await claimed_runs.queue_claimed_run(
        app_pool, tenant.tenant_id, "why?", max_cost_cents=Decimal("0.0001")
    )
    gateway = _gateway(test_settings, app_pool, provider, transport)
    with (
        presenting_run_token(claimed_runs.claim_of(run_id).lease_token),
        pytest.raises(CeilingReached),
    ):
        await gateway.complete(
            _request(tenant.tenant_id, "over the run", run_id), ceiling=RunCeiling(Decimal("0.30"))
        )
    assert (provider.connections, provider.bytes_received) == (0, 0)
    assert await _rows(app_pool, tenant.tenant_id) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_taken_over_run_sends_nothing(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    provider: LoopbackProvider,
    transport: str,
) -> None:
    run_id = await claimed_runs.queue_claimed_run(app_pool, tenant.tenant_id, "why?")
    gateway = _gateway(test_settings, app_pool, provider, transport)
    with presenting_run_token(uuid.uuid4()), pytest.raises(Exception) as refused:
        await gateway.complete(
            _request(tenant.tenant_id, "stale lease", run_id), ceiling=RunCeiling(Decimal("0.30"))
        )
    assert not isinstance(refused.value, AssertionError)
    assert (provider.connections, provider.bytes_received) == (0, 0)
    assert await _rows(app_pool, tenant.tenant_id) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_database_error_in_reserve_sends_nothing(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    provider: LoopbackProvider,
    transport: str,
) -> None:
    gateway = _gateway(test_settings, app_pool, provider, transport)
    with pytest.raises(Exception) as refused:  # a tenant that does not exist: the row is refused
        await gateway.complete(_request(uuid.uuid4(), "no such tenant"))
    assert not isinstance(refused.value, AssertionError)
    assert (provider.connections, provider.bytes_received) == (0, 0)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_database_connection_killed_mid_reserve_sends_nothing(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    provider: LoopbackProvider,
    transport: str,
) -> None:
    gateway = _gateway(test_settings, app_pool, provider, transport)
    async with TenantLock(owner_pool, tenant.tenant_id) as lock:
        call = asyncio.create_task(gateway.complete(_request(tenant.tenant_id, "cut off")))
        (reserving,) = await wait_until(lock.waiters, "the reserve waits on the tenant's row")
        async with owner_pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", reserving)
        await lock.release()
        with pytest.raises(Exception) as failed:
            await call
    assert not isinstance(failed.value, AssertionError)
    assert (provider.connections, provider.bytes_received) == (0, 0)
    assert [r["status"] for r in await _rows(app_pool, tenant.tenant_id)] == []


# -- 2. a slow reservation: nothing while it waits, then exactly one request ------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_slow_reservation_holds_the_send_then_sends_once(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    provider: LoopbackProvider,
    transport: str,
) -> None:
    gateway = _gateway(test_settings, app_pool, provider, transport)
    async with TenantLock(owner_pool, tenant.tenant_id) as lock:
        call = asyncio.create_task(gateway.complete(_request(tenant.tenant_id, "slow")))
        await wait_until(lock.waiters, "the reserve waits on the tenant's row")
        # litellm has had every chance to build and send while the reserve waits
        for _ in range(50):
            await asyncio.sleep(0)  # yields to the loop, not a synchronisation delay
        assert (provider.connections, provider.bytes_received) == (0, 0)
        assert not call.done()
    result = await call
    assert provider.tags() == ["slow"]
    rows = await _rows(app_pool, tenant.tenant_id)
    assert [r["id"] for r in rows] == [result.call_id]
    assert rows[0]["status"] == "succeeded"


# -- 3. cancellation and timeout at every moment ----------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_cancelled_while_reserving_sends_nothing_and_leaves_nothing_pending(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    provider: LoopbackProvider,
    transport: str,
) -> None:
    gateway = _gateway(test_settings, app_pool, provider, transport)
    async with TenantLock(owner_pool, tenant.tenant_id) as lock:
        call = asyncio.create_task(gateway.complete(_request(tenant.tenant_id, "cancelled")))
        await wait_until(lock.waiters, "the reserve waits on the tenant's row")
        call.cancel()
        await lock.release()
        with pytest.raises(asyncio.CancelledError):
            await call
    assert (provider.connections, provider.bytes_received) == (0, 0)
    rows = await _rows(app_pool, tenant.tenant_id)
    assert [r["status"] for r in rows if r["status"] == "pending"] == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_cancelled_after_commit_before_send(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    provider: LoopbackProvider,
    transport: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = _gateway(test_settings, app_pool, provider, transport)
    opened = gateway.ledger.open_call

    async def open_then_cancelled(*args: Any) -> Any:
        call = await opened(*args)
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # the cut arrives the moment the row is committed
        return call

    monkeypatch.setattr(gateway.ledger, "open_call", open_then_cancelled)
    with pytest.raises(asyncio.CancelledError):
        await gateway.complete(_request(tenant.tenant_id, "cut after commit"))
    rows = await _rows(app_pool, tenant.tenant_id)
    assert len(rows) == 1 and rows[0]["status"] != "pending"
    if provider.requests:  # sent: then counted at its worst case
        assert rows[0]["cost_cents"] == rows[0]["reserved_cents"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_cancelled_during_send_is_counted_at_worst_case(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    provider: LoopbackProvider,
    transport: str,
) -> None:
    never = asyncio.Event()

    async def stall(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        await never.wait()  # the provider never answers: the cut is the behaviour under test
        return 200, _completion(_tag(body))

    provider.answer = stall
    gateway = _gateway(test_settings, app_pool, provider, transport)
    call = asyncio.create_task(gateway.complete(_request(tenant.tenant_id, "in flight")))
    await provider.arrived.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    rows = await _rows(app_pool, tenant.tenant_id)
    assert len(rows) == 1
    assert rows[0]["status"] == "cancelled"
    assert rows[0]["cost_cents"] == rows[0]["reserved_cents"] > 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_deadline_passed_while_reserving_sends_nothing(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    provider: LoopbackProvider,
    transport: str,
) -> None:
    gateway = _gateway(test_settings, app_pool, provider, transport)
    deadline = time.monotonic() + 1.0
    async with TenantLock(owner_pool, tenant.tenant_id) as lock:
        call = asyncio.create_task(
            gateway.complete(_request(tenant.tenant_id, "too late"), deadline=deadline)
        )
        await wait_until(lock.waiters, "the reserve waits on the tenant's row")

        async def past() -> bool:
            return time.monotonic() > deadline  # the deadline itself is under test

        await wait_until(past, "the caller's deadline passed")
    with pytest.raises(TimeoutError):
        await call
    assert provider.requests == [], "a request was sent after the caller's deadline"
    # The committed reservation is settled at once: timed out, at zero (nothing was sent).
    rows = await _rows(app_pool, tenant.tenant_id)
    assert [(r["status"], r["cost_cents"]) for r in rows] == [("timed_out", 0)]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_retry_reserves_again_and_a_refused_retry_sends_nothing(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    provider: LoopbackProvider,
    transport: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.helpers.openai_stub import fast_backoff

    fast_backoff(monkeypatch)

    async def fail_then_close_the_cap(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        # While the first attempt is answered 503, the tenant's cap closes: the retry must
        # reserve again (and be refused) before anything more is sent.
        await _set_cap(owner_pool, tenant.tenant_id, Decimal(0))
        return 503, {"error": {"message": "overloaded", "type": "server_error"}}

    provider.answer = fail_then_close_the_cap
    gateway = _gateway(test_settings, app_pool, provider, transport)
    with pytest.raises(MonthlyCapExceeded):
        await gateway.complete(_request(tenant.tenant_id, "retried"))
    assert provider.tags() == ["retried"]
    rows = await _rows(app_pool, tenant.tenant_id)
    assert len(rows) == 1 and rows[0]["status"] == "failed"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_each_retry_has_its_own_committed_row_before_its_send(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    provider: LoopbackProvider,
    transport: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.helpers.openai_stub import fast_backoff

    fast_backoff(monkeypatch)
    pending_at_arrival: list[int] = []

    async def count_rows_then_fail_twice(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        rows = await _rows(app_pool, tenant.tenant_id)
        pending_at_arrival.append(sum(1 for r in rows if r["status"] == "pending"))
        if len(provider.requests) < 3:
            return 503, {"error": {"message": "overloaded", "type": "server_error"}}
        return 200, _completion(_tag(body))

    provider.answer = count_rows_then_fail_twice
    gateway = _gateway(test_settings, app_pool, provider, transport)
    result = await gateway.complete(_request(tenant.tenant_id, "third time"))
    assert result.attempts == 3
    # every request arrived with exactly its own row committed and pending
    assert pending_at_arrival == [1, 1, 1]
    rows = await _rows(app_pool, tenant.tenant_id)
    assert [r["status"] for r in rows] == ["failed", "failed", "succeeded"]


# -- 4. concurrency: one call's reservation never opens another's gate ------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_held_tenant_stays_gated_while_other_tenants_calls_go(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
    provider: LoopbackProvider,
    transport: str,
) -> None:
    gateway = _gateway(test_settings, app_pool, provider, transport)
    held_tag = "held"
    async with TenantLock(owner_pool, tenant.tenant_id) as lock:
        held = [
            asyncio.create_task(gateway.complete(_request(tenant.tenant_id, f"{held_tag}-{i}")))
            for i in range(3)
        ]
        free = [
            asyncio.create_task(gateway.complete(_request(other_tenant.tenant_id, f"free-{i}")))
            for i in range(4)
        ]
        await wait_until(lock.waiters, "the held tenant's reserves wait on its row")
        await asyncio.gather(*free)  # four reservations committed, four gates opened, meanwhile
        assert sorted(provider.tags()) == [f"free-{i}" for i in range(4)]
        assert not any(t.done() for t in held)
    await asyncio.gather(*held)
    assert sorted(t for t in provider.tags() if t.startswith(held_tag)) == [
        f"{held_tag}-{i}" for i in range(3)
    ]
    assert len(await _rows(app_pool, tenant.tenant_id)) == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_gate_does_not_leak_into_an_embedding_or_a_second_client(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
    provider: LoopbackProvider,
    transport: str,
) -> None:
    import httpx

    async def answer(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if "input" in body:
            return 200, {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
            }
        return 200, _completion(_tag(body))

    provider.answer = answer
    gateway = _gateway(test_settings, app_pool, provider, transport)
    async with TenantLock(owner_pool, tenant.tenant_id) as lock:
        held = asyncio.create_task(gateway.complete(_request(tenant.tenant_id, "held")))
        await wait_until(lock.waiters, "the reserve waits on the tenant's row")
        vectors, _ = await gateway.embed(other_tenant.tenant_id, ["plain"])
        assert vectors == [[0.1, 0.2]]
        async with httpx.AsyncClient() as other:  # not a gateway call at all
            reply = await other.post(
                provider.url + "/chat/completions",
                json={"messages": [{"role": "user", "content": "bystander"}]},
            )
        assert reply.status_code == 200
        assert "held" not in provider.tags()
        assert not held.done()
    await held
    assert provider.tags().count("held") == 1


# -- 5. the money ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_every_request_has_its_row_and_the_run_never_passes_its_ceiling(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    provider: LoopbackProvider,
    transport: str,
) -> None:
    async def overbilling(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        # A hostile provider: it claims vastly more tokens than asked for.
        return 200, _completion(_tag(body), prompt_tokens=5_000_000, completion_tokens=900_000)

    provider.answer = overbilling
    run_id = await claimed_runs.queue_claimed_run(app_pool, tenant.tenant_id, "why?")
    gateway = _gateway(test_settings, app_pool, provider, transport)
    ceiling = RunCeiling(Decimal("0.30"))
    refused = 0
    with presenting_run_token(claimed_runs.claim_of(run_id).lease_token):
        for wave in range(12):  # 12 x 4 worst cases of ~1 cent each: well past 30 cents
            outcomes = await asyncio.gather(
                *(
                    gateway.complete(
                        LlmRequest(
                            tenant_id=tenant.tenant_id,
                            endpoint="investigations",
                            messages=[{"role": "user", "content": f"w{wave}-{i}"}],
                            max_tokens=16_000,
                            min_output_tokens=16_000,
                            investigation_id=run_id,
                        ),
                        ceiling=ceiling,
                    )
                    for i in range(4)
                ),
                return_exceptions=True,
            )
            refused += sum(isinstance(o, CeilingReached) for o in outcomes)
            assert all(
                not isinstance(o, BaseException) or isinstance(o, CeilingReached) for o in outcomes
            ), outcomes
    assert refused > 0, "the ceiling was never reached: the attack did not press on it"
    rows = await _rows(app_pool, tenant.tenant_id)
    # every request the provider received has its row (ids are per attempt; one attempt each)
    assert len(rows) == len(provider.requests)
    assert all(r["status"] == "succeeded" for r in rows)
    settled = sum((r["cost_cents"] for r in rows), Decimal(0))
    assert 0 < settled <= 30
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        run_spend = await conn.fetchval(
            "SELECT cost_cents FROM investigations WHERE id = $1", run_id
        )
    assert run_spend == settled <= 30


# -- 1b. PostgreSQL unreachable in the middle of the reserve ----------------------------------


class DatabaseLink:
    """A loopback TCP link to PostgreSQL (its Unix socket, or its TCP address when the suite
    runs against a server URL such as PostgreSQL 15's) that the test can cut: while cut, every
    connection attempt is counted and dropped at once (the server is unreachable)."""

    def __init__(self, upstream: str | tuple[str, int]) -> None:
        self.upstream = upstream
        self.up = True
        self.refused = 0
        self.refused_event = asyncio.Event()
        self.server: asyncio.Server | None = None
        self._links: list[asyncio.StreamWriter] = []

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    def cut(self) -> None:
        self.up = False
        for writer in self._links:
            writer.transport.abort()
        self._links.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            self.refused += 1
            self.refused_event.set()
            writer.transport.abort()
            return
        if isinstance(self.upstream, str):
            up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._links += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def stop(self) -> None:
        self.cut()
        assert self.server is not None
        self.server.close()


def _through(url: str, port: int) -> tuple[str, str | tuple[str, int]]:
    """`url` rewritten to reach PostgreSQL through 127.0.0.1:`port`, and where it really is."""
    from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if "host" in query:  # the embedded server: a Unix socket named in the query
        socket_dir, pg_port = query.pop("host")[0], query.pop("port", ["5432"])[0]
        query |= {"host": ["127.0.0.1"], "port": [str(port)]}
        rewritten = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
        return rewritten, f"{socket_dir}/.s.PGSQL.{pg_port}"
    upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc)), upstream


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_postgres_unreachable_mid_reserve_sends_nothing(
    test_settings: Settings,
    database_urls: Any,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    provider: LoopbackProvider,
    transport: str,
) -> None:
    from llm_service.db.pool import create_pool

    _, upstream = _through(database_urls.app, 0)
    link = DatabaseLink(upstream)
    await link.start()
    url, _ = _through(database_urls.app, link.port)
    pool = await create_pool(url, application_name="redteam-cut", min_size=1, max_size=2)
    try:
        gateway = _gateway(test_settings, pool, provider, transport)
        async with TenantLock(owner_pool, tenant.tenant_id) as lock:
            call = asyncio.create_task(gateway.complete(_request(tenant.tenant_id, "cut link")))
            await wait_until(lock.waiters, "the reserve waits on the tenant's row")
            link.cut()  # PostgreSQL is unreachable: the reserve's connection is gone
            await lock.release()
            await link.refused_event.wait()  # the gateway tried again while it was down
            assert (provider.connections, provider.bytes_received) == (0, 0)
            link.up = True  # and it comes back
            with pytest.raises(Exception) as failed:
                await call
        assert is_database_outage(failed.value), repr(failed.value)  # the caller is told why
        assert (provider.connections, provider.bytes_received) == (0, 0)
        rows = await _rows(app_pool, tenant.tenant_id)
        assert [r["status"] for r in rows if r["status"] == "pending"] == []
    finally:
        await pool.close()
        await link.stop()
