"""The application's shape: health, readiness, OpenAPI, JSON errors, body size limit."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from llm_service.tenants.service import CreatedTenant


async def test_healthz_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_the_head_revision(client: httpx.AsyncClient) -> None:
    from llm_service.db.migrate import heads

    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "revision": heads()}


async def test_openapi_document_lists_routes(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/healthz" in paths and "/v1/tenants/me" in paths
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_unknown_route_is_a_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_wrong_method_is_a_json_405(client: httpx.AsyncClient) -> None:
    response = await client.delete("/healthz")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


async def test_invalid_path_parameter_is_a_json_422(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    response = await client.get(
        "/v1/tenants/not-a-uuid", headers={"Authorization": f"Bearer {tenant.api_key}"}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["details"][0]["field"].endswith("tenant_id")
    assert "Traceback" not in response.text


async def test_oversized_declared_body_is_413(client: httpx.AsyncClient, test_settings) -> None:  # type: ignore[no-untyped-def]
    body = b"{" + b" " * (test_settings.max_body_bytes + 10) + b"}"
    response = await client.post(
        "/v1/tenants/me", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


_REVERSED = "start (2026-03-09) must be before end (2026-03-02)"
_CHANNEL = "must be a channel code in lower case, e.g. facebook_paid or email"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"subject": "period_change", "period": {"start": "2026-03-09", "end": "2026-03-02"}},
            [{"field": "body.period", "message": _REVERSED}],
        ),
        (
            {"subject": "period_change", "period": ""},
            [{"field": "body.period", "message": "String should have at least 1 character"}],
        ),
        (
            {"subject": "period_change", "period": "last week", "channel": "Facebook Ads"},
            [{"field": "body.channel", "message": _CHANNEL}],
        ),
    ],
)  # fmt: skip
async def test_a_422_names_the_field_and_what_is_wrong_in_the_users_terms(
    client: httpx.AsyncClient, tenant: CreatedTenant, body: dict[str, Any], expected: Any
) -> None:
    """No pydantic internals ("function-after[_valid(), DateRange]", "constrained-str"), no
    second error from the union member that does not take this kind of value."""
    response = await client.post(
        "/v1/explanations", json=body, headers={"Authorization": f"Bearer {tenant.api_key}"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"] == expected
