"""The budget optimisation API: validation, authentication, tenancy and idempotency."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from llm_service.db.pool import tenant_transaction
from llm_service.tenants.service import CreatedTenant

URL = "/v1/budget-optimizations"
PERIOD = {"start": "2025-01-01", "end": "2025-02-01"}


def _auth(tenant: CreatedTenant, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}", **extra}


def _body(**overrides: Any) -> dict[str, Any]:
    return {"total_budget_usd": "10000.00", "period": PERIOD, **overrides}


@pytest.fixture(autouse=True)
async def _no_queued_leftovers(
    owner_pool: asyncpg.Pool, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> AsyncIterator[None]:
    """Jobs queued here are never run: end them so other tests' workers do not pick them up."""
    yield
    for t in (tenant, other_tenant):
        async with tenant_transaction(owner_pool, t.tenant_id) as conn:
            await conn.execute(
                """UPDATE budget_optimization_jobs
                      SET status = 'cancelled', reason = 'test cleanup', finished_at = now()
                    WHERE status = 'queued'"""
            )


async def test_create_answers_202_and_get_returns_the_job(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    body = _body(
        total_budget_usd=2500.5,
        bounds={"facebook_paid": {"min_usd": "500", "max_usd": 4000}, "email": {"max_usd": "0"}},
        model_type="linear",
    )
    response = await client.post(URL, json=body, headers=_auth(tenant))
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"{URL}/{job['id']}"
    assert job["status"] == "queued"
    assert job["total_budget_usd"] == "2500.50"
    assert job["period"] == PERIOD
    assert job["model_type"] == "linear"
    assert job["bounds"] == {
        "email": {"min_usd": None, "max_usd": "0.00"},
        "facebook_paid": {"min_usd": "500.00", "max_usd": "4000.00"},
    }
    assert job["cost_usd"] == "0"
    assert job["max_cost_usd"] == "0.3"
    assert job["recommendations"] is None
    got = await client.get(f"{URL}/{job['id']}", headers=_auth(tenant))
    assert got.status_code == 200
    assert got.json()["id"] == job["id"]
    assert got.json()["llm_calls"] == []


async def test_defaults(client: httpx.AsyncClient, tenant: CreatedTenant) -> None:
    job = (await client.post(URL, json=_body(total_budget_usd=1), headers=_auth(tenant))).json()
    assert job["model_type"] == "last_touch"
    assert job["bounds"] == {}
    assert job["total_budget_usd"] == "1.00"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (_body(total_budget_usd="0"), "total_budget_usd", "greater than 0"),
        (_body(total_budget_usd="-5"), "total_budget_usd", "greater than 0"),
        (_body(total_budget_usd="10.001"), "total_budget_usd", "2 decimal places"),
        (_body(total_budget_usd="1000000000.01"), "total_budget_usd", "less than or equal"),
        (_body(total_budget_usd="NaN"), "total_budget_usd", "finite"),
        (_body(total_budget_usd="ten"), "total_budget_usd", "decimal"),
        (_body(total_budget_usd=True), "total_budget_usd", "USD amount"),
        ({"period": PERIOD}, "total_budget_usd", "required"),
        (_body(period={"start": "2025-02-01", "end": "2025-01-01"}), "period", "before"),
        (_body(period={"start": "2025-01-01", "end": "2025-01-01"}), "period", "before"),
        (_body(period={"start": "2024-01-01", "end": "2025-01-02"}), "period", "366 days"),
        (_body(period={"start": "last week", "end": "2025-01-02"}), "period.start", "YYYY-MM-DD"),
        (_body(period={"start": 1735689600, "end": "2025-01-02"}), "period.start", "YYYY-MM-DD"),
        (_body(period={"start": "2025-02-30", "end": "2025-03-02"}), "period.start", "date"),
        (_body(period={"start": "2025-01-01"}), "period.end", "required"),
        (_body(bounds={"Facebook": {"min_usd": "1"}}), "bounds", "not a channel code"),
        (_body(bounds={"email": {"min_usd": "-1"}}), "bounds.email.min_usd", "greater than"),
        (_body(bounds={"email": {"max_usd": "1.005"}}), "bounds.email.max_usd", "2 decimal"),
        (_body(bounds={"email": {"min_usd": "9", "max_usd": "5"}}), "bounds.email", "exceed"),
        (_body(bounds={"email": {"floor": "9"}}), "bounds.email.floor", "not permitted"),
        (
            _body(bounds={"email": {"min_usd": "6000"}, "sms": {"min_usd": "4000.01"}}),
            "body",
            "more than the total budget",
        ),
        (_body(model_type="u_shaped"), "model_type", "last_touch"),
        (_body(extra=1), "extra", "not permitted"),
    ],
)
async def test_bad_input_is_422_with_a_clear_message(
    client: httpx.AsyncClient, tenant: CreatedTenant, body: dict[str, Any], field: str, message: str
) -> None:
    response = await client.post(URL, json=body, headers=_auth(tenant))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    matching = [d for d in error["details"] if d["field"] == f"body.{field}" or d["field"] == field]
    assert matching, error
    assert any(message.lower() in d["message"].lower() for d in matching), error


async def test_unknown_channel_in_bounds_is_422(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    body = _body(bounds={"facebook_paid": {"max_usd": "10"}, "myspace_paid": {"max_usd": "10"}})
    response = await client.post(URL, json=body, headers=_auth(tenant))
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "unknown channel code(s) in bounds: myspace_paid"


async def test_not_json_is_422(client: httpx.AsyncClient, tenant: CreatedTenant) -> None:
    response = await client.post(
        URL, content=b"{not json", headers=_auth(tenant, **{"Content-Type": "application/json"})
    )
    assert response.status_code == 422


@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Basic abc"])
async def test_without_a_valid_key_is_401(
    client: httpx.AsyncClient, tenant: CreatedTenant, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    created = await client.post(URL, json=_body(), headers=_auth(tenant))
    for response in (
        await client.post(URL, json=_body(), headers=headers),
        await client.post(URL, json={"bad": True}, headers=headers),
        await client.get(f"{URL}/{created.json()['id']}", headers=headers),
    ):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert "total_budget_usd" not in response.text


async def test_another_tenants_job_is_404(
    client: httpx.AsyncClient, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    job = (await client.post(URL, json=_body(), headers=_auth(tenant))).json()
    theirs = await client.get(f"{URL}/{job['id']}", headers=_auth(other_tenant))
    missing = await client.get(f"{URL}/{uuid.uuid4()}", headers=_auth(other_tenant))
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()
    assert (await client.get(f"{URL}/not-a-uuid", headers=_auth(tenant))).status_code == 422


async def test_same_idempotency_key_returns_the_same_job(
    client: httpx.AsyncClient, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    key = f"retry-{uuid.uuid4()}"
    body = _body(bounds={"email": {"min_usd": "100"}})
    first = await client.post(URL, json=body, headers=_auth(tenant, **{"Idempotency-Key": key}))
    # The same request written differently (a number, no trailing zeros) is the same request.
    same = _body(total_budget_usd=10000, bounds={"email": {"min_usd": 100}})
    again = await client.post(URL, json=same, headers=_auth(tenant, **{"Idempotency-Key": key}))
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = await client.post(
        URL, json=body, headers=_auth(other_tenant, **{"Idempotency-Key": key})
    )
    assert other.status_code == 202
    assert other.json()["id"] != first.json()["id"]
    unkeyed = await client.post(URL, json=body, headers=_auth(tenant))
    assert unkeyed.json()["id"] != first.json()["id"]


async def test_reused_idempotency_key_with_another_request_is_409(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    key = f"retry-{uuid.uuid4()}"
    headers = _auth(tenant, **{"Idempotency-Key": key})
    assert (await client.post(URL, json=_body(), headers=headers)).status_code == 202
    response = await client.post(URL, json=_body(total_budget_usd="9999.99"), headers=headers)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


async def test_idempotency_key_too_long_is_422(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    headers = _auth(tenant, **{"Idempotency-Key": "k" * 201})
    assert (await client.post(URL, json=_body(), headers=headers)).status_code == 422
