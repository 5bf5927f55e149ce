"""Hostile input at the HTTP API: every answer is a JSON 4xx, nothing is half-done, nothing leaks.

The real application over ASGI, as the application role. Covered here: oversized bodies on the
real routes (declared and streamed), deep JSON, invalid UTF-8, questions at and past their limits,
NUL characters and lone surrogates, SQL injection in every kind of input (body, header, query,
path), and the edges of the calendar in query parameters and period phrases.

Covered elsewhere, not repeated: the body-limit middleware on its own (`test_body_limit.py`), a
4001-character question and limits above the ceiling (`test_investigation_routes.py`), every
malformed credential (`test_auth.py`); and, generated from the OpenAPI document, a little of all of
this on every operation (`test_openapi_fuzz.py`).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest

from llm_service.db.pool import tenant_transaction
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant

SQL_INJECTIONS = [
    "'; DROP TABLE investigations; --",
    "' OR '1'='1",
    "x' UNION SELECT id::text FROM tenants --",
    "1; SELECT set_config('app.current_tenant_id', '00000000-0000-0000-0000-000000000000', false)",
]
BODY_ROUTES = ["/v1/investigations", "/v1/explanations", "/v1/budget-optimizations"]


def _auth(tenant: CreatedTenant, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}", **extra}


def _raw(tenant: CreatedTenant, **extra: str) -> dict[str, str]:
    return _auth(tenant, **{"content-type": "application/json", **extra})


def assert_json_error(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """A 4xx in the one error shape, without a stack trace; returns the error."""
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    error: dict[str, Any] = body["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    for trace in ("Traceback", 'File "/', "Error:", "asyncpg"):
        assert trace not in response.text
    return error


async def run_count(owner_pool: asyncpg.Pool, tenant: CreatedTenant) -> int:
    """How many investigations the tenant has (read as the owner, filtered by tenant)."""
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM investigations WHERE tenant_id = $1", tenant.tenant_id
        )
    return count


# --------------------------------------------------------------------------------------------
# Size: bodies past the limit, questions at and past theirs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", BODY_ROUTES)
async def test_a_declared_oversized_body_is_413_json_on_every_route_that_reads_one(
    client: httpx.AsyncClient, tenant: CreatedTenant, test_settings: Settings, route: str
) -> None:
    body = json.dumps({"question": "x" * test_settings.max_body_bytes}).encode()
    response = await client.post(route, content=body, headers=_raw(tenant))
    assert assert_json_error(response, 413)["code"] == "payload_too_large"


@pytest.mark.parametrize("route", BODY_ROUTES)
async def test_a_streamed_oversized_body_without_length_is_413_json(
    client: httpx.AsyncClient, tenant: CreatedTenant, test_settings: Settings, route: str
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"question": "'
        for _ in range(test_settings.max_body_bytes // 4096 + 2):
            yield b"y" * 4096
        yield b'"}'

    response = await client.post(route, content=chunks(), headers=_raw(tenant))
    assert "content-length" not in response.request.headers
    assert assert_json_error(response, 413)["code"] == "payload_too_large"


async def test_a_question_at_its_length_limit_is_stored_verbatim(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    question = "€" * 4000  # 4000 characters, 12,000 bytes: the limit counts characters
    response = await client.post(
        "/v1/investigations", json={"question": question}, headers=_auth(tenant)
    )
    assert response.status_code == 202, response.text[:300]
    run = await client.get(f"/v1/investigations/{response.json()['id']}", headers=_auth(tenant))
    assert run.json()["question"] == question


async def test_a_huge_question_just_under_the_body_limit_is_a_422_not_a_413(
    client: httpx.AsyncClient,
    tenant: CreatedTenant,
    test_settings: Settings,
    owner_pool: asyncpg.Pool,
) -> None:
    before = await run_count(owner_pool, tenant)
    envelope = len(json.dumps({"question": ""}).encode())
    body = json.dumps({"question": "q" * (test_settings.max_body_bytes - envelope)}).encode()
    assert len(body) == test_settings.max_body_bytes
    response = await client.post("/v1/investigations", content=body, headers=_raw(tenant))
    error = assert_json_error(response, 422)
    assert error["details"] == [
        {"field": "body.question", "message": "String should have at most 4000 characters"}
    ]
    assert "qqqq" not in response.text, "the offending input is never echoed back"
    over = await client.post("/v1/investigations", content=body + b" ", headers=_raw(tenant))
    assert assert_json_error(over, 413)["code"] == "payload_too_large"
    assert await run_count(owner_pool, tenant) == before


# --------------------------------------------------------------------------------------------
# Shape: deep nesting, broken encodings, characters PostgreSQL cannot store
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 10_000,
        b"[" * 10_000 + b"]" * 10_000,
        b'{"question": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    ],
    ids=["open-brackets", "balanced-brackets", "deep-value", "deep-objects"],
)
@pytest.mark.parametrize("route", BODY_ROUTES)
async def test_deeply_nested_json_is_a_4xx_not_a_recursion_error(
    client: httpx.AsyncClient, tenant: CreatedTenant, route: str, body: bytes
) -> None:
    response = await client.post(route, content=body, headers=_raw(tenant))
    assert_json_error(response, 400, 422)


@pytest.mark.parametrize(
    "body",
    [
        b'{"question": "why did \xff\xfe revenue fall?"}',
        b'{"question": "why did \xc3\x28 revenue fall?"}',
        b'{"question": "why did \xed\xa0\x80 revenue fall?"}',  # a UTF-8-encoded surrogate
        b"\xff\xfe{\x00}\x00",
    ],
    ids=["ff-fe", "bad-continuation", "encoded-surrogate", "utf16-bom"],
)
@pytest.mark.parametrize("route", BODY_ROUTES)
async def test_invalid_utf8_in_a_body_is_a_4xx_json(
    client: httpx.AsyncClient, tenant: CreatedTenant, route: str, body: bytes
) -> None:
    response = await client.post(route, content=body, headers=_raw(tenant))
    assert_json_error(response, 400, 422)


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/v1/investigations", b'{"question": "why did revenue \\u0000 fall?"}'),
        ("/v1/investigations", b'{"question": "why did revenue fall?\\u0000"}'),
        (
            "/v1/explanations",
            b'{"subject": "channel_performance", "period": "last week", "question": "why\\u0000"}',
        ),
        (
            "/v1/budget-optimizations",
            b'{"total_budget_usd": 100, "period": {"start": "2026-01-01", "end": "2026-02-01"},'
            b' "bounds": {"email\\u0000": {"max_usd": 10}}}',
        ),
    ],
    ids=["question", "question-end", "explanation-question", "bounds-key"],
)
async def test_nul_characters_in_strings_are_a_422_and_nothing_is_stored(
    client: httpx.AsyncClient,
    tenant: CreatedTenant,
    owner_pool: asyncpg.Pool,
    route: str,
    body: bytes,
) -> None:
    # PostgreSQL text and jsonb cannot hold U+0000: without a check this was a 500 from the DB.
    before = await run_count(owner_pool, tenant)
    response = await client.post(route, content=body, headers=_raw(tenant))
    assert assert_json_error(response, 422)["code"] == "validation_error"
    assert await run_count(owner_pool, tenant) == before


@pytest.mark.parametrize("route", ["/v1/investigations", "/v1/budget-optimizations"])
async def test_a_nul_in_the_idempotency_key_is_a_422(
    client: httpx.AsyncClient, tenant: CreatedTenant, owner_pool: asyncpg.Pool, route: str
) -> None:
    body = {
        "/v1/investigations": {"question": "Why did revenue fall last week?"},
        "/v1/budget-optimizations": {
            "total_budget_usd": 100,
            "period": {"start": "2026-01-01", "end": "2026-02-01"},
        },
    }[route]
    before = await run_count(owner_pool, tenant)
    # A raw header (httpx would refuse it): what reaches the application from a lenient proxy.
    headers = [
        (b"authorization", f"Bearer {tenant.api_key}".encode()),
        (b"content-type", b"application/json"),
        (b"idempotency-key", b"retry\x00-1"),
    ]
    response = await client.post(route, content=json.dumps(body).encode(), headers=headers)
    assert "Idempotency-Key" in assert_json_error(response, 422)["message"]
    assert await run_count(owner_pool, tenant) == before


async def test_lone_surrogates_are_a_422(client: httpx.AsyncClient, tenant: CreatedTenant) -> None:
    response = await client.post(
        "/v1/investigations",
        content=b'{"question": "why did \\ud800 revenue fall?"}',
        headers=_raw(tenant),
    )
    assert_json_error(response, 422)


async def test_non_ascii_bytes_in_headers_and_query_are_4xx_json(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    headers = [(b"authorization", b"Bearer lsk_\xff\xfe\x00")]
    assert_json_error(await client.get("/v1/tenants/me", headers=headers), 401)
    for query in ("status=%FF%FE", "before=%ED%A0%80", "limit=%00"):
        response = await client.get(f"/v1/investigations?{query}", headers=_auth(tenant))
        assert_json_error(response, 422)
    response = await client.get("/v1/costs/monthly?month=%FF%00", headers=_auth(tenant))
    assert_json_error(response, 422)


# --------------------------------------------------------------------------------------------
# SQL injection: stored verbatim or refused; nothing else happens
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("injection", SQL_INJECTIONS)
async def test_sql_in_a_question_and_an_idempotency_key_is_stored_verbatim(
    client: httpx.AsyncClient,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
    owner_pool: asyncpg.Pool,
    injection: str,
) -> None:
    other_before = await run_count(owner_pool, other_tenant)
    question = f"Why did revenue fall? {injection}"
    headers = _auth(tenant, **{"Idempotency-Key": injection})
    first = await client.post("/v1/investigations", json={"question": question}, headers=headers)
    assert first.status_code == 202, first.text[:300]
    # The key is data: the same key finds the same run, and only that one.
    again = await client.post("/v1/investigations", json={"question": question}, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    run = await client.get(f"/v1/investigations/{first.json()['id']}", headers=_auth(tenant))
    assert run.json()["question"] == question
    assert await run_count(owner_pool, tenant) == 1
    assert await run_count(owner_pool, other_tenant) == other_before
    listed = await client.get("/v1/investigations", headers=_auth(tenant))
    assert [item["id"] for item in listed.json()["items"]] == [first.json()["id"]]


@pytest.mark.parametrize("injection", SQL_INJECTIONS)
async def test_sql_in_query_parameters_and_path_ids_is_refused_with_422(
    client: httpx.AsyncClient, tenant: CreatedTenant, injection: str
) -> None:
    for path, params in (
        ("/v1/investigations", {"status": injection}),
        ("/v1/investigations", {"before": injection}),
        ("/v1/investigations", {"limit": injection}),
        ("/v1/costs/monthly", {"month": injection}),
        ("/v1/costs/monthly", {"month": "2026-01", "format": injection}),
    ):
        response = await client.get(path, params=params, headers=_auth(tenant))
        assert_json_error(response, 422)
        assert injection not in response.text
    quoted = quote(injection, safe="")
    for url in (
        f"/v1/investigations/{quoted}",
        f"/v1/investigations/{quoted}/events",
        f"/v1/budget-optimizations/{uuid.uuid4()}{quoted}",
        f"/v1/tenants/{quoted}",
    ):
        response = await client.get(url, headers=_auth(tenant))
        assert_json_error(response, 404, 422)


# --------------------------------------------------------------------------------------------
# The edges of the calendar and of integer columns
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "before",
    [
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-14:00",  # after year 9999 in UTC
    ],
)
async def test_a_list_cursor_outside_the_utc_calendar_is_a_422(
    client: httpx.AsyncClient, tenant: CreatedTenant, before: str
) -> None:
    response = await client.get(
        "/v1/investigations", params={"before": before}, headers=_auth(tenant)
    )
    assert "before" in assert_json_error(response, 422)["message"]


async def test_a_list_cursor_at_the_calendars_ends_still_pages(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    created = await client.post(
        "/v1/investigations", json={"question": "Why did revenue fall?"}, headers=_auth(tenant)
    )
    for before, expected in (
        ("0001-01-01T00:00:00.000001", []),  # naive: UTC
        ("9999-12-31T23:59:59", [created.json()["id"]]),
    ):
        response = await client.get(
            "/v1/investigations", params={"before": before}, headers=_auth(tenant)
        )
        assert response.status_code == 200, response.text
        assert [item["id"] for item in response.json()["items"]] == expected


@pytest.mark.parametrize("last_event_id", [str(2**63), str(-(2**63) - 1), "-1", "1e3"])
async def test_a_last_event_id_beyond_a_bigint_or_negative_is_a_422(
    client: httpx.AsyncClient, tenant: CreatedTenant, last_event_id: str
) -> None:
    run = await client.post(
        "/v1/investigations", json={"question": "Why did revenue fall?"}, headers=_auth(tenant)
    )
    response = await client.get(
        f"/v1/investigations/{run.json()['id']}/events",
        headers=_auth(tenant, **{"Last-Event-ID": last_event_id}),
    )
    assert_json_error(response, 422)


@pytest.mark.parametrize("last_event_id", ["final", str(2**31), str(2**63 - 1)])
async def test_resuming_an_ended_runs_stream_past_its_end_closes_it_at_once(
    client: httpx.AsyncClient, tenant: CreatedTenant, last_event_id: str
) -> None:
    # An EventSource reconnects by itself after the final event, sending its id; the stream
    # used to poll for three minutes before answering an ended run with nothing.
    run = await client.post(
        "/v1/investigations", json={"question": "Why did revenue fall?"}, headers=_auth(tenant)
    )
    run_id = run.json()["id"]
    await client.post(f"/v1/investigations/{run_id}/cancel", headers=_auth(tenant))
    history = await client.get(f"/v1/investigations/{run_id}/events", headers=_auth(tenant))
    final_id = [line for line in history.text.splitlines() if line.startswith("id:")][-1]
    resume_from = final_id.split(":", 1)[1].strip() if last_event_id == "final" else last_event_id
    response = await asyncio.wait_for(
        client.get(
            f"/v1/investigations/{run_id}/events",
            headers=_auth(tenant, **{"Last-Event-ID": resume_from}),
        ),
        5,
    )
    assert response.status_code == 200
    assert "event:" not in response.text


@pytest.mark.parametrize(
    "body",
    [
        {"subject": "channel_performance", "period": "2026-13-01 to 2026-14-01"},
        {"subject": "channel_performance", "period": "0000-01-01 to 0001-01-01"},
        {"subject": "period_change", "period": "0001-01-01 to 0001-01-08"},
        {"subject": "period_change", "period": {"start": "0001-01-01", "end": "0001-01-08"}},
    ],
    ids=["month-13", "year-0", "phrase-at-year-1", "range-at-year-1"],
)
async def test_periods_the_calendar_cannot_hold_are_a_422(
    client: httpx.AsyncClient, tenant: CreatedTenant, body: dict[str, Any]
) -> None:
    response = await client.post("/v1/explanations", json=body, headers=_auth(tenant))
    assert assert_json_error(response, 422)["code"] == "validation_error"


async def test_a_period_change_at_year_1_even_with_its_own_comparison_is_a_422(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    # One calendar window for every period (llm_service.periods.check_calendar): year 1 is no
    # longer answered, so no date arithmetic anywhere can overflow at the calendar's edge.
    body = {
        "subject": "period_change",
        "period": {"start": "0001-01-08", "end": "0001-01-15"},
        "comparison": {"start": "0001-01-01", "end": "0001-01-08"},
    }
    response = await client.post("/v1/explanations", json=body, headers=_auth(tenant))
    assert_json_error(response, 422)
    assert "between 1970-01-01 and 2100-01-01" in response.text
