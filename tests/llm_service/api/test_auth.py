"""Authentication: every failure is a 401 JSON error that reveals nothing (several
Authorization headers: a 400, the request is malformed)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from llm_service.tenants.keys import new_api_key
from llm_service.tenants.service import CreatedTenant

UNAUTHORIZED = {"code": "unauthorized"}


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_valid_key_resolves_its_tenant(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    response = await client.get("/v1/tenants/me", headers=_bearer(tenant.api_key))
    assert response.status_code == 200
    assert response.json()["tenant_id"] == str(tenant.tenant_id)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Bearer lsk_" + "x" * 10},
        {"Authorization": "Bearer " + new_api_key()},  # well-formed, unknown
    ],
    ids=["missing", "empty", "no-key", "basic", "malformed", "short", "unknown"],
)
async def test_bad_credentials_get_401_json(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/v1/tenants/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == "unauthorized"
    assert "Traceback" not in response.text


async def test_unknown_and_malformed_keys_get_identical_answers(client: httpx.AsyncClient) -> None:
    unknown = await client.get("/v1/tenants/me", headers=_bearer(new_api_key()))
    malformed = await client.get("/v1/tenants/me", headers=_bearer("garbage"))
    assert unknown.json() == malformed.json()


async def test_scheme_is_case_insensitive(client: httpx.AsyncClient, tenant: CreatedTenant) -> None:
    response = await client.get(
        "/v1/tenants/me", headers={"Authorization": f"bearer {tenant.api_key}"}
    )
    assert response.status_code == 200


async def test_another_tenants_id_in_path_is_not_found(
    client: httpx.AsyncClient, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    other = await client.get(
        f"/v1/tenants/{other_tenant.tenant_id}", headers=_bearer(tenant.api_key)
    )
    missing = await client.get(f"/v1/tenants/{uuid.uuid4()}", headers=_bearer(tenant.api_key))
    assert other.status_code == missing.status_code == 404
    # The same answer for an existing foreign tenant and a non-existent one: nothing leaks.
    assert other.json() == missing.json()
    assert str(other_tenant.tenant_id) not in other.text
    own = await client.get(f"/v1/tenants/{tenant.tenant_id}", headers=_bearer(tenant.api_key))
    assert own.status_code == 200


async def test_only_the_key_hash_is_stored(owner_pool, tenant: CreatedTenant) -> None:  # type: ignore[no-untyped-def]
    from llm_service.db.pool import tenant_transaction
    from llm_service.tenants.keys import hash_api_key

    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        row = await conn.fetchrow("SELECT * FROM tenants WHERE id = $1", tenant.tenant_id)
    assert row is not None
    assert tenant.api_key not in {str(v) for v in row.values()}
    assert row["api_key_hash"] == hash_api_key(tenant.api_key)


async def test_the_same_key_twice_is_refused_with_400_json_too(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    # Refused whatever the values: one Authorization field per request (RFC 9110), no guessing.
    headers = [("authorization", f"Bearer {tenant.api_key}")] * 2
    for method, path in (("GET", "/v1/tenants/me"), ("POST", "/v1/explanations")):
        response = await client.request(method, path, headers=headers, json={})
        assert response.status_code == 400, (path, response.text)
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"]["code"] == "ambiguous_credentials"
