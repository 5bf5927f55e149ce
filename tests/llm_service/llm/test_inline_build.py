"""litellm builds our requests on the loop's thread; nothing else given to the executor does.

The attacks: a build that raises, a refused reservation (the inline build must still send
nothing), other work handed to the default executor inside a call (a DNS lookup, `to_thread`),
a provider without an async path, a function that merely looks like litellm's build, and a loop
whose executor is installed twice.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator
from decimal import Decimal
from functools import partial
from typing import Any

import asyncpg
import httpx
import pytest
import respx

from llm_service.costs.ledger_repository import MonthlyCapExceeded
from llm_service.db.pool import tenant_transaction
from llm_service.llm import inline_build
from llm_service.llm.gateway import LlmGateway, LlmRequest
from llm_service.llm.inline_build import InlineBuildExecutor, building_inline
from llm_service.llm.litellm_setup import load_litellm, use_transport
from llm_service.llm.pricing import build_price_book
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant, create_tenant
from tests.llm_service.llm.test_gateway import OPENAI_URL, openai_completion


def _completion(*_: Any, **__: Any) -> str:
    return threading.current_thread().name


def _build() -> partial[Any]:
    """The shape acompletion submits: partial(context.run, partial(completion, **kwargs))."""
    return partial(contextvars.copy_context().run, partial(_completion, model="m"))


@pytest.fixture
def executor() -> Iterator[InlineBuildExecutor]:
    pool = InlineBuildExecutor(_completion)
    yield pool
    pool.shutdown(wait=True)


async def _submit(executor: InlineBuildExecutor, fn: Any) -> Any:
    return await asyncio.wrap_future(executor.submit(fn))


async def test_the_build_runs_in_the_callers_thread_inside_building_inline(
    executor: InlineBuildExecutor,
) -> None:
    with building_inline("openai"):
        name = await _submit(executor, _build())
    assert name == threading.current_thread().name
    assert executor.inline_runs == 1


async def test_outside_building_inline_the_build_goes_to_a_thread(
    executor: InlineBuildExecutor,
) -> None:
    name = await _submit(executor, _build())
    assert name != threading.current_thread().name
    assert executor.inline_runs == 0


async def test_a_provider_without_an_async_path_keeps_the_thread(
    executor: InlineBuildExecutor,
) -> None:
    with building_inline("cohere"):
        name = await _submit(executor, _build())
    assert name != threading.current_thread().name
    assert executor.inline_runs == 0


@pytest.mark.parametrize(
    "lookalike",
    [
        partial(_completion),  # litellm's function, not inside context.run
        partial(str, partial(_completion)),  # its partial, given to another function
        partial(contextvars.copy_context().run, partial(str, "x")),  # another function
        partial(partial(_completion).__call__),  # wrapped once more
        lambda: _completion(),
    ],
    ids=["bare-partial", "not-context-run", "other-function", "wrapped", "lambda"],
)
async def test_work_that_only_looks_like_the_build_goes_to_a_thread(
    executor: InlineBuildExecutor, lookalike: Any
) -> None:
    with building_inline("openai"):
        future = executor.submit(lookalike)
        await asyncio.wrap_future(future)
    assert executor.inline_runs == 0


async def test_a_build_that_raises_hands_its_exception_to_the_awaiting_caller() -> None:
    class Refused(Exception):
        pass

    def refuse(*_: Any, **__: Any) -> None:
        raise Refused("litellm refused the parameters")

    raising = InlineBuildExecutor(refuse)
    try:
        fn = partial(contextvars.copy_context().run, partial(refuse, model="m"))
        with building_inline("openai"), pytest.raises(Refused, match="refused the parameters"):
            await asyncio.wrap_future(raising.submit(fn))
        assert raising.inline_runs == 1
    finally:
        raising.shutdown(wait=True)


async def test_other_work_given_to_the_loops_executor_during_a_call_stays_on_threads() -> None:
    loop = asyncio.get_running_loop()
    inline_build.install(loop)
    here = threading.get_ident()
    with building_inline("openai"):
        elsewhere = await asyncio.to_thread(threading.get_ident)
        looked_up = await loop.getaddrinfo("127.0.0.1", 80)
        in_executor = await loop.run_in_executor(None, threading.get_ident)
    assert elsewhere != here and in_executor != here
    assert looked_up  # a DNS lookup still answers (from a worker thread)


def test_installing_twice_keeps_one_executor_and_shuts_the_replaced_one() -> None:
    async def install_twice() -> tuple[Any, Any, Any]:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, int)  # the loop's own default executor now exists
        previous = getattr(loop, "_default_executor", None)
        inline_build.install(loop)
        installed = getattr(loop, "_default_executor", None)
        inline_build.install(loop)
        return previous, installed, getattr(loop, "_default_executor", None)

    with asyncio.Runner() as runner:  # a loop of its own, as a process starts with
        previous, installed, after = runner.run(install_twice())
    assert isinstance(installed, InlineBuildExecutor) and after is installed
    assert previous is not None and previous is not installed
    with pytest.raises(RuntimeError):  # shut down: it takes no more work
        previous.submit(int)


# ---------------------------------------------------------------------------------------------
# Through the gateway
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def openai_gateway(
    test_settings: Settings, app_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LlmGateway]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-inline-test")
    settings = test_settings.model_copy(
        update={"llm_model": "openai/gpt-4o-mini", "llm_max_attempts": 1}
    )
    try:
        yield LlmGateway(settings, app_pool, build_price_book(settings))
    finally:
        use_transport(test_settings.llm_http_transport)


def _request(tenant_id: Any) -> LlmRequest:
    return LlmRequest(
        tenant_id=tenant_id,
        endpoint="explanations",
        messages=[{"role": "user", "content": "Why did ROAS drop?"}],
        max_tokens=50,
    )


def _executor() -> InlineBuildExecutor:
    executor = getattr(asyncio.get_running_loop(), "_default_executor", None)
    assert isinstance(executor, InlineBuildExecutor)
    return executor


async def test_a_gateway_call_builds_litellms_request_without_a_thread_hop(
    openai_gateway: LlmGateway, tenant: CreatedTenant
) -> None:
    with respx.mock(assert_all_called=True) as router:
        route = router.post(OPENAI_URL).mock(
            return_value=httpx.Response(200, json=openai_completion())
        )
        first = await openai_gateway.complete(_request(tenant.tenant_id))
        runs = _executor().inline_runs
        second = await openai_gateway.complete(_request(tenant.tenant_id))
    assert route.call_count == 2
    assert first.content == second.content == "ok"
    assert runs >= 1 and _executor().inline_runs == runs + 1


async def test_bare_litellm_beside_the_gateway_keeps_its_thread(
    openai_gateway: LlmGateway, tenant: CreatedTenant
) -> None:
    """Only the gateway's own calls run inline; another caller of litellm is left as it was."""
    litellm = load_litellm()
    with respx.mock(assert_all_called=True) as router:
        router.post(OPENAI_URL).mock(return_value=httpx.Response(200, json=openai_completion()))
        await openai_gateway.complete(_request(tenant.tenant_id))
        runs = _executor().inline_runs
        await litellm.acompletion(
            model="openai/gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=5,
            max_retries=0,
        )
    assert _executor().inline_runs == runs


async def test_a_refused_reservation_sends_nothing_though_the_build_ran_inline(
    openai_gateway: LlmGateway, owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool
) -> None:
    poor = await create_tenant(owner_pool, "inline-poor", monthly_cap_cents=Decimal("0.0001"))
    inline_build.install(asyncio.get_running_loop())
    before = _executor().inline_runs
    with respx.mock(assert_all_called=False) as router:
        route = router.post(OPENAI_URL).mock(
            return_value=httpx.Response(200, json=openai_completion())
        )
        with pytest.raises(MonthlyCapExceeded):
            await openai_gateway.complete(_request(poor.tenant_id))
    assert route.call_count == 0
    assert _executor().inline_runs == before + 1
    async with tenant_transaction(app_pool, poor.tenant_id) as conn:
        rows = await conn.fetchval(
            "SELECT count(*) FROM llm_api_calls WHERE tenant_id = $1", poor.tenant_id
        )
    assert rows == 0
