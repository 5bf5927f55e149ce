"""Red team: litellm's request built on the event loop's thread (llm/inline_build.py).

Each test is one attack on the promises of commit 84a82ae: only litellm's own build step of the
gateway's chat calls runs inline (nothing that blocks), the build does run inline where it
should (any loop kind), nothing is sent before the reservation commits, errors and cancellation
are as on the executor path, and the ledger's money is exact.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
import respx

from llm_service.db.pool import tenant_transaction
from llm_service.llm import inline_build
from llm_service.llm.gateway import LlmGateway, LlmRequest
from llm_service.llm.inline_build import InlineBuildExecutor
from llm_service.llm.litellm_setup import load_litellm, use_transport
from llm_service.llm.pricing import build_price_book
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant, create_tenant
from tests.helpers.waiting import wait_until
from tests.redteam.test_redteam_send_gate import LoopbackProvider, TenantLock
from tests.redteam.test_redteam_send_gate import _gateway as loopback_gateway
from tests.redteam.test_redteam_send_gate import _request as loopback_request

ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
OPENAI_URL = "https://api.openai.com/v1/chat/completions"
# A 1x1 transparent PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


def anthropic_message(input_tokens: int = 21, output_tokens: int = 5) -> dict[str, Any]:
    return {
        "id": "msg_01inline",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": [{"type": "text", "text": "a chart"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


class Executors:
    """Every InlineBuildExecutor `install` makes, with the threads litellm's builds ran on."""

    def __init__(self) -> None:
        self.made: list[InlineBuildExecutor] = []

    @property
    def inline_runs(self) -> int:
        return sum(e.inline_runs for e in self.made)


@pytest.fixture
def executors(monkeypatch: pytest.MonkeyPatch) -> Iterator[Executors]:
    """A fresh install on this test's loop, every executor it makes recorded."""
    seen = Executors()

    class Recorded(InlineBuildExecutor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            seen.made.append(self)

    monkeypatch.setattr(inline_build, "InlineBuildExecutor", Recorded)
    monkeypatch.setattr(inline_build, "_installed", inline_build.weakref.WeakSet())
    yield seen


def executor_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway as before the change: no provider builds inline (its hop to a thread)."""
    monkeypatch.setattr(inline_build, "ASYNC_PROVIDERS", frozenset())


def _gateway(test_settings: Settings, app_pool: asyncpg.Pool, **updates: Any) -> LlmGateway:
    settings = test_settings.model_copy(update={"llm_max_attempts": 1, **updates})
    return LlmGateway(settings, app_pool, build_price_book(settings))


def gemini_reply(prompt: int = 21, output: int = 5) -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {"parts": [{"text": "a chart"}], "role": "model"},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": prompt,
            "candidatesTokenCount": output,
            "totalTokenCount": prompt + output,
        },
        "modelVersion": "gemini-2.5-flash",
    }


# provider: (model, key variable, the provider's URL pattern, its reply)
PROVIDERS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "anthropic": (
        "anthropic/claude-haiku-4-5",
        "ANTHROPIC_API_KEY",
        r"^https://api\.anthropic\.com/v1/messages",
        anthropic_message(),
    ),
    "gemini": (
        "gemini/gemini-2.5-flash",
        "GEMINI_API_KEY",
        r"^https://generativelanguage\.googleapis\.com/.*generateContent",
        gemini_reply(),
    ),
}


@pytest.fixture(params=sorted(PROVIDERS))
def media_provider(
    request: pytest.FixtureRequest,
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[LlmGateway, str, dict[str, Any]]]:
    model, key, url, reply = PROVIDERS[request.param]
    monkeypatch.setenv(key, "sk-inline-test")
    try:
        yield (
            _gateway(test_settings, app_pool, llm_model=model, llm_http_transport="httpx"),
            url,
            reply,
        )
    finally:
        use_transport(test_settings.llm_http_transport)


def _image_request(tenant_id: Any, url: str) -> LlmRequest:
    return LlmRequest(
        tenant_id=tenant_id,
        endpoint="explanations",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What does this chart show?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
        max_tokens=50,
    )


async def _rows(pool: asyncpg.Pool, tenant_id: Any) -> list[asyncpg.Record]:
    async with tenant_transaction(pool, tenant_id) as conn:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT id, status, input_tokens, output_tokens, cost_cents, reserved_cents "
            "FROM llm_api_calls WHERE tenant_id = $1 ORDER BY created_at, attempt",
            tenant_id,
        )
    return rows


# -- 1. blocking work inside litellm's completion() ------------------------------------------


async def _image_call(
    media_provider: tuple[LlmGateway, str, dict[str, Any]],
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Any, list[int], respx.Route]:
    """A call whose prompt carries an http image URL: litellm fetches it (resolving its host
    with getaddrinfo first, for its SSRF check) and sends it inline as base64."""
    gateway, provider_url, reply = media_provider
    litellm = load_litellm()
    # A fresh URL (litellm caches fetched images by URL); an https one would go to Anthropic
    # as a URL, an http one is fetched and inlined as base64.
    url = f"http://img.example.test/{uuid.uuid4().hex}/chart.png"
    lookups: list[int] = []
    real = socket.getaddrinfo

    def recording(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "img.example.test":
            lookups.append(threading.get_ident())
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    monkeypatch.setattr(litellm, "user_url_validation", True, raising=False)
    with respx.mock(assert_all_called=False) as router:
        router.get(url__regex=r".*/chart\.png$").mock(
            return_value=httpx.Response(200, content=PNG, headers={"content-type": "image/png"})
        )
        route = router.post(url__regex=provider_url).mock(
            return_value=httpx.Response(200, json=reply)
        )
        try:
            result: Any = await gateway.complete(_image_request(tenant.tenant_id, url))
        except Exception as exc:
            result = exc
    return result, lookups, route


async def test_executor_path_an_http_image_prompt_is_answered(
    media_provider: tuple[LlmGateway, str, dict[str, Any]],
    tenant: CreatedTenant,
    app_pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The baseline (building_inline off): the build's image fetch waits in its worker thread
    for the reservation, then the call is answered."""
    executor_path(monkeypatch)
    result, lookups, route = await _image_call(media_provider, tenant, monkeypatch)
    assert not isinstance(result, Exception), repr(result)
    assert result.content == "a chart" and route.call_count == 1
    assert lookups and threading.get_ident() not in lookups
    assert [r["status"] for r in await _rows(app_pool, tenant.tenant_id)] == ["succeeded"]


async def test_an_http_image_prompt_is_fetched_off_the_loop_and_answered(
    media_provider: tuple[LlmGateway, str, dict[str, Any]],
    tenant: CreatedTenant,
    app_pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
    executors: Executors,
) -> None:
    """Attack: litellm's Anthropic and Gemini transforms turn an http image URL into base64
    (convert_url_to_base64: a blocking getaddrinfo and a synchronous GET). Were that inside
    the inline completion() it would be blocking I/O on the loop's thread (and the send gate
    refuses a synchronous send there before the reserve): the call must still be answered,
    the lookup made off the loop, and the image sent."""
    result, lookups, route = await _image_call(media_provider, tenant, monkeypatch)
    assert executors.inline_runs == 1  # the build did run inline
    assert lookups, "the image's host was looked up"
    assert threading.get_ident() not in lookups, "a blocking DNS lookup ran on the loop"
    assert not isinstance(result, Exception), repr(result)
    assert result.content == "a chart" and route.call_count == 1
    assert base64.b64encode(PNG).decode() in route.calls[0].request.content.decode()
    assert [r["status"] for r in await _rows(app_pool, tenant.tenant_id)] == ["succeeded"]


# -- 2. the build runs inline on any loop kind (uvloop, a thread's own loop, a fresh one) ------


def _bare_call_on(new_loop: Any, seen: Executors) -> tuple[str, int, int, list[int]]:
    """A gateway-shaped litellm call (quiet, building_inline) on a loop of its own in a thread
    of its own; answers (content, inline runs, the loop's thread, getaddrinfo's threads)."""
    from llm_service.llm.litellm_quiet import quiet_call

    litellm = load_litellm()

    async def call() -> tuple[str, int, int, list[int]]:
        loop = asyncio.get_running_loop()
        before = seen.inline_runs
        inline_build.install(loop)
        resolved: list[int] = []
        real = socket.getaddrinfo

        def lookup(*args: Any, **kwargs: Any) -> Any:
            resolved.append(threading.get_ident())
            return real(*args, **kwargs)

        with quiet_call(), inline_build.building_inline("openai"):
            response = await litellm.acompletion(
                model="openai/gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=5,
                max_retries=0,
                num_retries=0,
            )
            socket.getaddrinfo = lookup  # type: ignore[assignment]
            try:
                await loop.getaddrinfo("127.0.0.1", 80)
            finally:
                socket.getaddrinfo = real  # type: ignore[assignment]
        return (
            response.choices[0].message.content,
            seen.inline_runs - before,
            threading.get_ident(),
            resolved,
        )

    loop = new_loop()
    try:
        result: tuple[str, int, int, list[int]] = loop.run_until_complete(call())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
    return result


@pytest.mark.parametrize("kind", ["asyncio", "uvloop", "asyncio-with-executor"])
def test_the_build_runs_inline_on_a_threads_own_loop_of_any_kind(
    kind: str, executors: Executors, test_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack: a thread with its own loop (uvloop's, asyncio's, one whose default executor
    already exists), two loops at once in one process: each builds inline, and the DNS
    lookups it hands to its executor stay on worker threads."""
    import uvloop

    def fresh() -> asyncio.AbstractEventLoop:
        if kind == "uvloop":
            return uvloop.new_event_loop()
        loop = asyncio.new_event_loop()
        if kind == "asyncio-with-executor":
            loop.run_until_complete(loop.run_in_executor(None, int))
        return loop

    monkeypatch.setenv("OPENAI_API_KEY", "sk-inline-test")
    use_transport("httpx")
    results: list[Any] = []
    try:
        with respx.mock(assert_all_called=True) as router:
            router.post(OPENAI_URL).mock(return_value=httpx.Response(200, json=_openai_reply()))

            def run() -> None:
                try:
                    results.append(_bare_call_on(fresh, executors))
                except BaseException as exc:
                    results.append(exc)

            threads = [threading.Thread(target=run) for _ in range(2)]  # two loops at once
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        use_transport(test_settings.llm_http_transport)
    for result in results:
        assert not isinstance(result, BaseException), repr(result)
        content, inline_runs, loop_thread, resolved = result
        assert content == "ok"
        assert inline_runs >= 1
        assert loop_thread not in resolved
        # uvloop resolves in libuv's own thread pool, never through socket.getaddrinfo here.
        assert resolved or kind == "uvloop"
    assert len(executors.made) == 2  # one per loop


def _openai_reply(prompt_tokens: int = 12, completion_tokens: int = 3) -> dict[str, Any]:
    return {
        "id": "chatcmpl-inline",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok"},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


# -- 3. nothing is sent before the reservation commits, the build inline, on both transports --

TRANSPORTS = ["httpx", "aiohttp"]


@pytest.fixture
async def loopback(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LoopbackProvider]:
    """The red-team send-gate tests' OpenAI-compatible server, counting what reaches it."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-redteam-loopback")
    server = LoopbackProvider()
    await server.start()
    yield server
    await server.stop()


def _nothing_reached(provider: LoopbackProvider) -> bool:
    return (provider.connections, provider.bytes_received, provider.requests) == (0, 0, [])


async def _pending(pool: asyncpg.Pool, tenant_id: Any) -> list[str]:
    return [r["status"] for r in await _rows(pool, tenant_id) if r["status"] == "pending"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_inline_build_refused_by_the_monthly_cap_sends_nothing(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    loopback: LoopbackProvider,
    executors: Executors,
    transport: str,
) -> None:
    from budgets.ledger import MonthlyCapExceeded

    poor = await create_tenant(owner_pool, "inline-rt-poor", monthly_cap_cents=Decimal("0.0001"))
    gateway = loopback_gateway(test_settings, app_pool, loopback, transport)
    try:
        with pytest.raises(MonthlyCapExceeded):
            await gateway.complete(loopback_request(poor.tenant_id, "refused"))
    finally:
        use_transport(test_settings.llm_http_transport)
    assert executors.inline_runs == 1  # built inline, then held at the gate and dropped
    assert _nothing_reached(loopback)
    assert await _rows(app_pool, poor.tenant_id) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_inline_build_behind_a_locked_reserve_sends_once_after_commit(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    loopback: LoopbackProvider,
    executors: Executors,
    transport: str,
) -> None:
    gateway = loopback_gateway(test_settings, app_pool, loopback, transport)
    try:
        async with TenantLock(owner_pool, tenant.tenant_id) as lock:
            call = asyncio.create_task(gateway.complete(loopback_request(tenant.tenant_id, "held")))
            await wait_until(lock.waiters, "the reserve waits on the tenant's row")
            for _ in range(50):
                await asyncio.sleep(0)  # every chance to send while the reserve waits
            assert executors.inline_runs == 1, "the build ran (inline) while the reserve waited"
            assert _nothing_reached(loopback)
        result = await call
    finally:
        use_transport(test_settings.llm_http_transport)
    assert loopback.tags() == ["held"]
    rows = await _rows(app_pool, tenant.tenant_id)
    assert [r["status"] for r in rows] == ["succeeded"]
    assert rows[0]["id"] == result.call_id


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_inline_build_cancelled_while_reserving_sends_nothing_leaves_nothing_pending(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    loopback: LoopbackProvider,
    executors: Executors,
    transport: str,
) -> None:
    gateway = loopback_gateway(test_settings, app_pool, loopback, transport)
    try:
        async with TenantLock(owner_pool, tenant.tenant_id) as lock:
            call = asyncio.create_task(gateway.complete(loopback_request(tenant.tenant_id, "cut")))
            await wait_until(lock.waiters, "the reserve waits on the tenant's row")
            assert executors.inline_runs == 1
            call.cancel()
            await lock.release()
            with pytest.raises(asyncio.CancelledError):
                await call
    finally:
        use_transport(test_settings.llm_http_transport)
    assert _nothing_reached(loopback)
    assert await _pending(app_pool, tenant.tenant_id) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_inline_build_deadline_passed_while_reserving_sends_nothing(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    loopback: LoopbackProvider,
    executors: Executors,
    transport: str,
) -> None:
    gateway = loopback_gateway(test_settings, app_pool, loopback, transport)
    deadline = time.monotonic() + 1.0
    try:
        async with TenantLock(owner_pool, tenant.tenant_id) as lock:
            call = asyncio.create_task(
                gateway.complete(loopback_request(tenant.tenant_id, "late"), deadline=deadline)
            )
            await wait_until(lock.waiters, "the reserve waits on the tenant's row")

            async def past() -> bool:
                return time.monotonic() > deadline  # the deadline itself is under test

            await wait_until(past, "the caller's deadline passed")
        with pytest.raises(TimeoutError):
            await call
    finally:
        use_transport(test_settings.llm_http_transport)
    assert executors.inline_runs == 1
    assert _nothing_reached(loopback)
    rows = await _rows(app_pool, tenant.tenant_id)
    assert [(r["status"], r["cost_cents"]) for r in rows] == [("timed_out", 0)]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_inline_build_cancelled_during_the_send_leaves_nothing_pending(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    loopback: LoopbackProvider,
    executors: Executors,
    transport: str,
) -> None:
    never = asyncio.Event()

    async def stall(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        await never.wait()  # the provider never answers: the cut is under test
        return 200, _openai_reply()

    loopback.answer = stall
    gateway = loopback_gateway(test_settings, app_pool, loopback, transport)
    try:
        call = asyncio.create_task(gateway.complete(loopback_request(tenant.tenant_id, "cut")))
        await loopback.arrived.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    finally:
        use_transport(test_settings.llm_http_transport)
    assert executors.inline_runs == 1
    rows = await _rows(app_pool, tenant.tenant_id)
    assert [r["status"] for r in rows] == ["cancelled"]
    assert rows[0]["cost_cents"] == rows[0]["reserved_cents"] > 0


# -- 4. errors in the build: the same exception as the executor path, the row settled --------

BAD_BUILDS: dict[str, dict[str, Any]] = {
    # litellm rejects the message role (BadRequestError, not transient)
    "bad-role": {"messages": [{"role": "bogus", "content": "hi"}]},
    # litellm's Anthropic transform fails on the schema (APIConnectionError: transient)
    "bad-response-format": {"response_format": {"type": "json_schema", "json_schema": "no"}},
    # a tool without its function (APIConnectionError: transient)
    "bad-tool": {"tools": [{"type": "function"}]},
}


async def _bad_build(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> tuple[BaseException, int]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-inline")
    gateway = _gateway(
        test_settings,
        app_pool,
        llm_model="anthropic/claude-haiku-4-5",
        llm_http_transport="httpx",
        llm_max_attempts=2,
    )
    fields: dict[str, Any] = {
        "tenant_id": tenant.tenant_id,
        "endpoint": "explanations",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 50,
    }
    fields.update(BAD_BUILDS[case])
    try:
        with respx.mock(assert_all_called=False) as router:
            route = router.post(url__regex=r"^https://api\.anthropic\.com/").mock(
                return_value=httpx.Response(200, json=anthropic_message())
            )
            with pytest.raises(Exception) as raised:
                await gateway.complete(LlmRequest(**fields))
    finally:
        use_transport(test_settings.llm_http_transport)
    return raised.value, route.call_count


@pytest.mark.parametrize("case", sorted(BAD_BUILDS))
async def test_a_build_that_raises_inline_reaches_the_caller_as_on_the_executor_path(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
    executors: Executors,
    case: str,
) -> None:
    """Attack: litellm raising in completion() (bad parameters) inline, on the loop's thread,
    while the reserve is in flight: same exception type (and cause) as the executor path, each
    retry built inline again, every row settled, nothing sent."""
    inline_tenant = await create_tenant(owner_pool, f"inline-rt-{case}-a")
    thread_tenant = await create_tenant(owner_pool, f"inline-rt-{case}-b")
    inline_exc, inline_sent = await _bad_build(
        test_settings, app_pool, inline_tenant, monkeypatch, case
    )
    inline_runs = executors.inline_runs
    with monkeypatch.context() as patch:
        executor_path(patch)
        thread_exc, thread_sent = await _bad_build(
            test_settings, app_pool, thread_tenant, monkeypatch, case
        )
    assert executors.inline_runs == inline_runs  # the executor path built on a thread
    assert type(inline_exc) is type(thread_exc)
    assert type(inline_exc.__cause__) is type(thread_exc.__cause__)
    assert inline_sent == thread_sent == 0
    inline_rows = await _rows(app_pool, inline_tenant.tenant_id)
    thread_rows = await _rows(app_pool, thread_tenant.tenant_id)
    assert inline_runs == len(inline_rows) >= 1  # one inline build per attempt
    assert [r["status"] for r in inline_rows] == [r["status"] for r in thread_rows]
    assert "pending" not in [r["status"] for r in inline_rows]
    assert [r["cost_cents"] for r in inline_rows] == [r["cost_cents"] for r in thread_rows]


# -- 5. retries each build inline; money exact on both paths ---------------------------------


PROMPT = [{"role": "user", "content": "Why did ROAS drop?"}]


async def _flaky_call(gateway: LlmGateway, tenant: CreatedTenant) -> tuple[Any, int]:
    prompt_tokens = gateway.count_tokens(PROMPT, None)  # what the provider would report
    with respx.mock(assert_all_called=True) as router:
        route = router.post(OPENAI_URL).mock(
            side_effect=[
                httpx.Response(500, json={"error": {"message": "boom", "type": "server_error"}}),
                httpx.Response(503, json={"error": {"message": "busy", "type": "server_error"}}),
                httpx.Response(
                    200, json=_openai_reply(prompt_tokens=prompt_tokens, completion_tokens=77)
                ),
            ]
        )
        result = await gateway.complete(
            LlmRequest(
                tenant_id=tenant.tenant_id,
                endpoint="explanations",
                messages=PROMPT,
                max_tokens=100,
            )
        )
    return result, route.call_count


async def test_retries_each_build_inline_and_money_matches_the_executor_path(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
    executors: Executors,
) -> None:
    from llm_service.llm import retry

    monkeypatch.setattr(retry, "ProviderBackoff", _no_backoff(retry.ProviderBackoff))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-inline-test")
    gateway = _gateway(
        test_settings,
        app_pool,
        llm_model="openai/gpt-4o-mini",
        llm_http_transport="httpx",
        llm_max_attempts=3,
    )
    inline_tenant = await create_tenant(owner_pool, "inline-rt-money-a")
    thread_tenant = await create_tenant(owner_pool, "inline-rt-money-b")
    try:
        inline_result, inline_sent = await _flaky_call(gateway, inline_tenant)
        inline_runs = executors.inline_runs
        with monkeypatch.context() as patch:
            executor_path(patch)
            thread_result, thread_sent = await _flaky_call(gateway, thread_tenant)
    finally:
        use_transport(test_settings.llm_http_transport)
    assert inline_runs == 3 and executors.inline_runs == 3  # one inline build per attempt
    assert inline_sent == thread_sent == 3
    assert inline_result.attempts == thread_result.attempts == 3
    prompt = gateway.count_tokens(PROMPT, None)
    expected = Decimal(prompt) * Decimal("0.15E-6") + Decimal(77) * Decimal("0.6E-6")
    assert inline_result.cost_usd == thread_result.cost_usd == expected
    assert (inline_result.input_tokens, inline_result.output_tokens) == (prompt, 77)
    inline_rows = await _rows(app_pool, inline_tenant.tenant_id)
    thread_rows = await _rows(app_pool, thread_tenant.tenant_id)

    def money(rows: list[asyncpg.Record]) -> list[tuple[Any, ...]]:
        return [(r["status"], r["input_tokens"], r["output_tokens"], r["cost_cents"]) for r in rows]

    assert money(inline_rows) == money(thread_rows)
    assert money(inline_rows)[-1] == ("succeeded", prompt, 77, expected * 100)
    assert "pending" not in [r["status"] for r in inline_rows]


def _no_backoff(make: Any) -> Any:
    from functools import partial

    return partial(make, initial=0.001)


# -- 6. the provider the gateway names vs the provider litellm routes to ---------------------

CODESTRAL_FIM = "https://codestral.mistral.ai/v1/fim/completions"


async def _routed_elsewhere(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Any, list[bool], int]:
    """A bare OpenAI model name with an api_base litellm recognises: litellm routes the call to
    `text-completion-codestral` (whose completion() sends synchronously), while the gateway,
    naming the provider from the model alone, calls it "openai"."""
    monkeypatch.setenv("CODESTRAL_API_KEY", "sk-codestral-inline")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-inline-test")
    gateway = _gateway(
        test_settings,
        app_pool,
        llm_model="gpt-4o-mini",
        llm_api_base=CODESTRAL_FIM,
        llm_http_transport="httpx",
    )
    loop_thread = threading.get_ident()
    on_loop: list[bool] = []
    real = httpx.Client.send  # behind the send gate (load_litellm installed it)

    def spy(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        on_loop.append(threading.get_ident() == loop_thread)
        return real(self, request, *args, **kwargs)

    monkeypatch.setattr(httpx.Client, "send", spy)
    try:
        with respx.mock(assert_all_called=False) as router:
            route = router.route(url__startswith="https://codestral.mistral.ai/").mock(
                return_value=httpx.Response(200, json=_openai_reply())
            )
            try:
                result: Any = await gateway.complete(
                    LlmRequest(
                        tenant_id=tenant.tenant_id,
                        endpoint="explanations",
                        messages=[{"role": "user", "content": "def add(a, b):"}],
                        max_tokens=20,
                    )
                )
            except Exception as exc:
                result = exc
    finally:
        use_transport(test_settings.llm_http_transport)
    return result, on_loop, route.call_count


async def test_executor_path_a_call_litellm_routes_to_a_synchronous_provider_is_answered(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The baseline: the synchronous send waits in its worker thread for the reservation."""
    executor_path(monkeypatch)
    result, on_loop, sent = await _routed_elsewhere(test_settings, app_pool, tenant, monkeypatch)
    assert not isinstance(result, Exception), repr(result)
    assert on_loop and not any(on_loop) and sent >= 1
    assert [r["status"] for r in await _rows(app_pool, tenant.tenant_id)] == ["succeeded"]


async def test_a_call_litellm_routes_to_a_synchronous_provider_keeps_its_thread(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
    executors: Executors,
) -> None:
    """Attack: the gateway names the provider from the model only ("gpt-4o-mini" is "openai",
    in ASYNC_PROVIDERS) but litellm routes with the api_base (text-completion-codestral, a
    synchronous send inside completion()). Built inline, that send would run on the loop's
    thread, where the send gate refuses it before the reserve commits: the call fails."""
    result, on_loop, sent = await _routed_elsewhere(test_settings, app_pool, tenant, monkeypatch)
    assert not isinstance(result, Exception), repr(result)
    assert on_loop and not any(on_loop), "a synchronous HTTP send ran on the loop's thread"
    assert executors.inline_runs == 0
    assert sent >= 1
    assert [r["status"] for r in await _rows(app_pool, tenant.tenant_id)] == ["succeeded"]


# -- 7. an executor the application set itself ------------------------------------------------


def test_work_queued_on_an_executor_the_application_set_still_finishes(
    executors: Executors,
) -> None:
    """Attack: the application set its own default executor and has work queued on it when
    the gateway's first call installs InlineBuildExecutor (which shuts the old one down):
    the queued work still runs to its end, on the old executor's thread; later work goes to
    worker threads of the new one (the application's sizing of its executor is not kept)."""
    from concurrent.futures import ThreadPoolExecutor

    async def scenario() -> tuple[str, str, bool]:
        loop = asyncio.get_running_loop()
        own = ThreadPoolExecutor(max_workers=1, thread_name_prefix="app-own")
        loop.set_default_executor(own)
        release = threading.Event()
        first = loop.run_in_executor(None, release.wait)
        queued = loop.run_in_executor(None, lambda: threading.current_thread().name)
        inline_build.install(loop)  # as the gateway's first call does
        release.set()
        await first
        queued_on = await queued
        later_on = await loop.run_in_executor(None, lambda: threading.current_thread().name)
        try:
            own.submit(int)
            refused = False
        except RuntimeError:
            refused = True
        return queued_on, later_on, refused

    with asyncio.Runner() as runner:
        queued_on, later_on, refused = runner.run(scenario())
    assert queued_on.startswith("app-own")
    assert later_on.startswith("asyncio") and later_on != threading.current_thread().name
    assert refused  # the replaced executor is shut down, as install() documents
    assert len(executors.made) == 1
