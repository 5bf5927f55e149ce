"""Red team, issue 15: the hit path (key + tenant in one statement) and sampled request logging.

Attacks: a rotated (revoked) key, keys with odd bytes, case and whitespace, two Authorization
headers naming two tenants, a body naming a tenant, a header of megabytes on the real HTTP
server; and the log: errors and slow requests with sampling off, no key, header or question
text in any line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
import respx
import uvicorn

from llm_service.api.app import create_app
from llm_service.db.pool import create_pool, tenant_transaction
from llm_service.db.urls import DatabaseUrls
from llm_service.logging_setup import JsonFormatter
from llm_service.settings import Settings
from llm_service.tenants.keys import hash_api_key, new_api_key
from llm_service.tenants.service import CreatedTenant
from tests.helpers.served_app import asgi_client, free_port

PERIOD = {"start": "2026-10-05", "end": "2026-10-12"}
PII_QUESTION = "why did it drop? mail jane.doe@example.com or call +1 415 555 0199"


def _explanation(**extra: Any) -> dict[str, Any]:
    return {"subject": "revenue_reconciliation", "period": PERIOD, **extra}


def _wrong(key: str) -> str:
    """A well-formed key differing from `key` in its last character."""
    return key[:-1] + ("Q" if key[-1] != "Q" else "R")


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _is_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body["error"]) >= {"code", "message"}, body
    assert "Traceback" not in response.text


# -- keys ------------------------------------------------------------------------------------


async def test_a_rotated_key_is_refused_at_once(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
) -> None:
    async with asgi_client(test_settings, app_pool) as http:
        assert (
            await http.get("/v1/tenants/me", headers=_bearer(tenant.api_key))
        ).status_code == 200
        first = await http.post(
            "/v1/explanations", json=_explanation(), headers=_bearer(tenant.api_key)
        )
        assert first.status_code == 200, first.text
        async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
            await conn.execute(
                "UPDATE tenants SET api_key_hash = $2 WHERE id = $1",
                tenant.tenant_id,
                hash_api_key(new_api_key()),
            )
        _is_error(await http.get("/v1/tenants/me", headers=_bearer(tenant.api_key)), 401)
        _is_error(
            await http.post(
                "/v1/explanations", json=_explanation(), headers=_bearer(tenant.api_key)
            ),
            401,
        )


def _odd_headers(key: str) -> list[tuple[str, bytes]]:
    return [
        ("upper-cased key", f"Bearer {key.upper()}".encode()),
        ("one character short", f"Bearer {key[:-1]}".encode()),
        ("zero-width space appended", f"Bearer {key}\u200b".encode()),
        ("latin-1 byte appended", f"Bearer {key}".encode() + b"\xff"),
        ("other scheme", f"Basic {key}".encode()),
        ("scheme twice", f"Bearer Bearer {key}".encode()),
        ("no scheme", key.encode()),
        ("tab for space", f"Bearer\t{key}".encode()),
        ("key twice", f"Bearer {key} {key}".encode()),
        ("empty", b""),
    ]


async def test_odd_keys_are_refused_with_a_json_401(
    test_settings: Settings, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    async with asgi_client(test_settings, app_pool) as http:
        for what, value in _odd_headers(tenant.api_key):
            for method, path, body in (
                ("GET", "/v1/tenants/me", None),
                ("POST", "/v1/explanations", _explanation()),
            ):
                response = await http.request(
                    method, path, json=body, headers=[(b"authorization", value)]
                )
                assert response.status_code == 401, (what, path, response.text)
                _is_error(response, 401)


async def test_two_authorization_headers_are_refused(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
) -> None:
    async with asgi_client(test_settings, app_pool) as http:
        for first, second in ((tenant, other_tenant), (other_tenant, tenant)):
            headers = [
                ("authorization", f"Bearer {first.api_key}"),
                ("authorization", f"Bearer {second.api_key}"),
            ]
            for method, path, body in (
                ("GET", "/v1/tenants/me", None),
                ("POST", "/v1/explanations", _explanation()),
            ):
                response = await http.request(method, path, json=body, headers=headers)
                assert response.status_code in (400, 401), (path, response.text)


async def test_a_body_naming_another_tenant_is_refused(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
) -> None:
    async with asgi_client(test_settings, app_pool) as http:
        for field in ("tenant_id", "tenant", "scope"):
            response = await http.post(
                "/v1/explanations",
                json=_explanation(**{field: str(other_tenant.tenant_id)}),
                headers=_bearer(tenant.api_key),
            )
            _is_error(response, 422)
            assert str(other_tenant.tenant_id) not in response.text


@asynccontextmanager
async def _real_server(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[int]:
    """The application behind uvicorn on loopback, with serve's HTTP implementation ("auto":
    httptools when installed, as with uvicorn[standard])."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, pool=pool),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)  # a polling interval: uvicorn has no started event
        yield port
    finally:
        server.should_exit = True
        await task


async def _raw_request(port: int, head: bytes) -> bytes:
    """Send one request head; the server's whole answer (until it closes or answers)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        with contextlib.suppress(ConnectionError):
            await writer.drain()  # refused mid-upload: the answer (if any) is what counts
        try:
            return await reader.read(65536)
        except ConnectionError:
            return b""
    finally:
        writer.close()


async def test_a_huge_header_is_refused_before_it_is_processed(
    test_settings: Settings, app_pool: asyncpg.Pool
) -> None:
    async with _real_server(test_settings, app_pool) as port:
        small = await _raw_request(
            port, b"GET /v1/tenants/me HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        assert small.startswith(b"HTTP/1.1 401"), small[:200]
        huge = (
            b"GET /v1/tenants/me HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            b"Authorization: Bearer lsk_" + b"A" * (4 * 1024 * 1024) + b"\r\n\r\n"
        )
        answer = await _raw_request(port, huge)
    status = answer.split(b"\r\n", 1)[0]
    assert not status.startswith(b"HTTP/1.1 401"), "a 4 MiB header was processed like a request"


# -- the request log -------------------------------------------------------------------------


def _lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records]


def _request_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        line
        for line in _lines(caplog)
        if line["logger"] == "llm_service.http" and line["message"] == "request"
    ]


async def test_errors_are_logged_with_sampling_off_and_no_secret_is(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    settings = test_settings.model_copy(update={"http_log_every": 0, "http_log_slow_ms": 1e9})
    key = tenant.api_key
    async with asgi_client(settings, app_pool) as http:
        ok = await http.post(
            "/v1/explanations",
            json=_explanation(question=PII_QUESTION),
            headers={**_bearer(key), "X-Note": key},
        )
        assert ok.status_code == 200, ok.text
        statuses = [
            (await http.get("/v1/tenants/me", headers=_bearer(_wrong(key)))).status_code,
            (await http.get("/v1/tenants/me/nothing", headers=_bearer(key))).status_code,
            (
                await http.post(
                    "/v1/explanations",
                    json=_explanation(question=PII_QUESTION, channel="NOT A CHANNEL"),
                    headers=_bearer(key),
                )
            ).status_code,
            (
                await http.post("/v1/explanations", content=b"x" * 70_000, headers=_bearer(key))
            ).status_code,
        ]
    assert statuses == [401, 404, 422, 413]
    logged = [line["status"] for line in _request_lines(caplog)]
    assert logged == statuses, "every error is logged, the sampled-out success is not"
    text = "\n".join(json.dumps(line) for line in _lines(caplog))
    for secret in (key, key[4:20], "Bearer", "jane.doe", "555 0199", hash_api_key(key)):
        assert secret not in text, f"{secret!r} was written to the log"


async def test_a_slow_request_is_logged_with_sampling_off(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    # Every request takes longer than a microsecond: each one is "slow".
    settings = test_settings.model_copy(update={"http_log_every": 0, "http_log_slow_ms": 0.001})
    async with asgi_client(settings, app_pool) as http:
        for _ in range(3):
            response = await http.get("/v1/tenants/me", headers=_bearer(tenant.api_key))
            assert response.status_code == 200
    lines = _request_lines(caplog)
    assert [line["status"] for line in lines] == [200, 200, 200]
    assert all(line["route"] == "/v1/tenants/me" for line in lines)


async def test_a_failed_request_is_logged_with_sampling_off(
    test_settings: Settings,
    database_urls: DatabaseUrls,
    tenant: CreatedTenant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    settings = test_settings.model_copy(update={"http_log_every": 0, "http_log_slow_ms": 1e9})
    pool = await create_pool(database_urls.app, application_name="rt15-doomed", max_size=2)
    async with asgi_client(settings, pool) as http:
        ok = await http.get("/v1/tenants/me", headers=_bearer(tenant.api_key))
        assert ok.status_code == 200
        await pool.close()  # the database is gone for this process
        failed = [
            await http.get("/v1/tenants/me", headers=_bearer(tenant.api_key)),
            await http.post(
                "/v1/explanations", json=_explanation(), headers=_bearer(tenant.api_key)
            ),
        ]
    statuses = [r.status_code for r in failed]
    assert all(status >= 500 for status in statuses), [r.text for r in failed]
    for response in failed:
        assert "Traceback" not in response.text and set(response.json()["error"]) >= {
            "code",
            "message",
        }
    assert [line["status"] for line in _request_lines(caplog)] == statuses


# -- the cache across tenants ----------------------------------------------------------------

OPENAI_URL = "https://api.openai.com/v1/chat/completions"


def _chat_completion(request: httpx.Request) -> httpx.Response:
    """An OpenAI chat completion in the provider's wire format."""
    answer = {"summary": "Revenue and attribution agree for the week.", "confidence": "medium"}
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-rt15",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": json.dumps(answer)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 120, "completion_tokens": 20, "total_tokens": 140},
        },
    )


async def test_a_cached_answer_is_never_served_to_another_tenant(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two tenants without data: the same request has the same data fingerprint for both.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = test_settings.model_copy(update={"llm_model": "openai/gpt-4o-mini"})
    body = _explanation()
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(OPENAI_URL).mock(side_effect=_chat_completion)
        async with asgi_client(settings, app_pool) as http:
            a1 = await http.post("/v1/explanations", json=body, headers=_bearer(tenant.api_key))
            a2 = await http.post("/v1/explanations", json=body, headers=_bearer(tenant.api_key))
            b1 = await http.post(
                "/v1/explanations", json=body, headers=_bearer(other_tenant.api_key)
            )
            b2 = await http.post(
                "/v1/explanations", json=body, headers=_bearer(other_tenant.api_key)
            )
    answers = [r.json() for r in (a1, a2, b1, b2)]
    assert all(r.status_code == 200 for r in (a1, a2, b1, b2)), [r.text for r in (a1, b1)]
    assert [a["cache"] for a in answers] == ["miss", "hit", "miss", "hit"], answers
    assert not any(a["degraded"] for a in answers), answers
    assert route.call_count == 2  # one model call per tenant


async def test_no_tenant_outlives_its_request_on_a_pooled_connection(
    test_settings: Settings,
    database_urls: DatabaseUrls,
    tenant: CreatedTenant,
) -> None:
    # One connection: every request and the check below reuse it (no reset query on release).
    pool = await create_pool(database_urls.app, application_name="rt15-one", max_size=1)
    try:
        async with asgi_client(test_settings, pool) as http:
            for method, path, body in (
                ("POST", "/v1/explanations", _explanation()),
                ("GET", "/v1/tenants/me", None),
            ):
                ok = await http.request(method, path, json=body, headers=_bearer(tenant.api_key))
                assert ok.status_code == 200, ok.text
                async with pool.acquire() as conn:
                    setting = await conn.fetchval(
                        "SELECT current_setting('app.current_tenant_id', true)"
                    )
                    visible = await conn.fetchval("SELECT count(*) FROM tenants")
                assert setting in (None, ""), f"{path} left tenant {setting} on the connection"
                assert visible == 0
                refused = await http.request(
                    method, path, json=body, headers=_bearer(_wrong(tenant.api_key))
                )
                _is_error(refused, 401)
    finally:
        await pool.close()
