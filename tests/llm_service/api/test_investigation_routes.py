"""The investigations API: queueing, limits, idempotency, tenancy, cancel and the event stream."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from llm_service.api.app import create_app
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant


def _auth(tenant: CreatedTenant, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}", **extra}


async def _create(client: httpx.AsyncClient, tenant: CreatedTenant, **body: Any) -> httpx.Response:
    payload = {"question": "Why did paid social revenue fall last week?", **body}
    return await client.post("/v1/investigations", json=payload, headers=_auth(tenant))


async def test_create_answers_202_with_a_queued_run(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    response = await _create(client, tenant)
    assert response.status_code == 202
    run = response.json()
    assert run["status"] == "queued"
    assert run["max_cost_usd"] == "0.3"
    assert run["timeout_s"] == 60
    assert response.headers["location"] == f"/v1/investigations/{run['id']}"


async def test_tighter_limits_are_kept(client: httpx.AsyncClient, tenant: CreatedTenant) -> None:
    run = (await _create(client, tenant, max_cost_usd=0.05, timeout_s=10)).json()
    assert run["max_cost_usd"] == "0.05"
    assert run["timeout_s"] == 10


@pytest.mark.parametrize(
    "body",
    [
        {"max_cost_usd": 0.31},
        {"max_cost_usd": 5},
        {"max_cost_usd": 0},
        {"timeout_s": 61},
        {"timeout_s": -1},
        {"timeout_s": 0.001},  # one tool call outlasts it: a run under its limit is impossible
        {"timeout_s": 0.999},
        {"question": ""},
        {"question": "x" * 4001},
        {"unexpected": True},
    ],
)
async def test_limits_above_the_ceiling_and_bad_input_are_422(
    client: httpx.AsyncClient, tenant: CreatedTenant, body: dict[str, Any]
) -> None:
    response = await _create(client, tenant, **body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


async def test_same_idempotency_key_returns_the_same_run(
    client: httpx.AsyncClient, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    key = f"retry-{uuid.uuid4()}"
    body = {"question": "Which channel's allocations changed most after the corrections?"}
    first = await client.post(
        "/v1/investigations", json=body, headers=_auth(tenant, **{"Idempotency-Key": key})
    )
    again = await client.post(
        "/v1/investigations", json=body, headers=_auth(tenant, **{"Idempotency-Key": key})
    )
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    # The same key in another tenant is a different run, and reveals nothing.
    other = await client.post(
        "/v1/investigations", json=body, headers=_auth(other_tenant, **{"Idempotency-Key": key})
    )
    assert other.status_code == 202
    assert other.json()["id"] != first.json()["id"]


async def test_another_tenants_run_is_not_found(
    client: httpx.AsyncClient, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> None:
    run = (await _create(client, tenant)).json()
    for path in (f"/v1/investigations/{run['id']}", f"/v1/investigations/{run['id']}/events"):
        response = await client.get(path, headers=_auth(other_tenant))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    cancel = await client.post(
        f"/v1/investigations/{run['id']}/cancel", headers=_auth(other_tenant)
    )
    assert cancel.status_code == 404
    mine = await client.get(f"/v1/investigations/{run['id']}", headers=_auth(tenant))
    assert mine.json()["status"] == "queued"


async def test_list_pages_and_filters_by_status(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    ids = [
        (await _create(client, tenant, question=f"question number {i}")).json()["id"]
        for i in range(3)
    ]
    await client.post(f"/v1/investigations/{ids[0]}/cancel", headers=_auth(tenant))
    page = (await client.get("/v1/investigations?limit=2", headers=_auth(tenant))).json()
    assert [item["id"] for item in page["items"]] == [ids[2], ids[1]]
    assert page["next_before"] is not None
    rest = (
        await client.get(
            "/v1/investigations",
            params={"limit": 2, "before": page["next_before"]},
            headers=_auth(tenant),
        )
    ).json()
    assert [item["id"] for item in rest["items"]] == [ids[0]]
    cancelled = (
        await client.get("/v1/investigations?status=cancelled", headers=_auth(tenant))
    ).json()
    assert [item["id"] for item in cancelled["items"]] == [ids[0]]
    bad = await client.get("/v1/investigations?status=paused", headers=_auth(tenant))
    assert bad.status_code == 422


async def test_cancelling_a_queued_run_ends_it_at_once(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    run = (await _create(client, tenant)).json()
    response = await client.post(f"/v1/investigations/{run['id']}/cancel", headers=_auth(tenant))
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["reason"]


async def test_cancelling_a_running_run_answers_that_the_cancel_was_accepted(
    client: httpx.AsyncClient, tenant: CreatedTenant, owner_pool: asyncpg.Pool
) -> None:
    """A running run stops at its next heartbeat: until then the API says the cancel is in."""
    run = (await _create(client, tenant)).json()
    other = (await _create(client, tenant)).json()
    assert run["cancel_requested"] is False
    for run_id in (run["id"], other["id"]):
        await owner_pool.execute(
            "UPDATE investigations SET status = 'running', started_at = now() WHERE id = $1",
            uuid.UUID(run_id),
        )
    response = await client.post(f"/v1/investigations/{run['id']}/cancel", headers=_auth(tenant))
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["cancel_requested"]) == ("running", True)
    read = await client.get(f"/v1/investigations/{run['id']}", headers=_auth(tenant))
    assert (read.json()["status"], read.json()["cancel_requested"]) == ("running", True)
    untouched = await client.get(f"/v1/investigations/{other['id']}", headers=_auth(tenant))
    assert untouched.json()["cancel_requested"] is False
    listed = await client.get("/v1/investigations?status=running", headers=_auth(tenant))
    flags = {item["id"]: item["cancel_requested"] for item in listed.json()["items"]}
    assert flags == {run["id"]: True, other["id"]: False}


async def test_events_stream_history_and_end_with_the_final_state(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    run = (await _create(client, tenant)).json()
    await client.post(f"/v1/investigations/{run['id']}/cancel", headers=_auth(tenant))
    response = await client.get(f"/v1/investigations/{run['id']}/events", headers=_auth(tenant))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert [e["event"] for e in events] == ["queued", "final"]
    assert events[-1]["data"]["status"] == "cancelled"
    seqs = [int(e["id"]) for e in events]
    assert seqs == sorted(seqs)
    # A client resuming after the first event gets only the rest.
    resumed = await client.get(
        f"/v1/investigations/{run['id']}/events",
        headers=_auth(tenant, **{"Last-Event-ID": str(seqs[0])}),
    )
    assert [e["event"] for e in parse_sse(resumed.text)] == ["final"]


def parse_sse(text: str) -> list[dict[str, Any]]:
    """Server-sent events as dicts: id, event and the JSON data."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name] = value.strip()
        if "event" in fields:
            fields["data"] = json.loads(fields.get("data", "{}"))
            events.append(fields)
    return events


async def test_limits_are_the_ceilings_a_request_may_ask_up_to(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    response = await client.get("/v1/investigations/limits", headers=_auth(tenant))
    assert response.status_code == 200
    assert response.json() == {
        "max_cost_usd": "0.3",
        "timeout_s": 60.0,
        "max_steps": 20,
        "default_max_steps": 12,
    }
    assert (await client.get("/v1/investigations/limits")).status_code == 401


async def test_limits_follow_a_tighter_configuration(
    test_settings: Settings, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    settings = test_settings.model_copy(
        update={"investigation_max_cost_usd": Decimal("0.125"), "investigation_timeout_s": 20.0}
    )
    transport = httpx.ASGITransport(app=create_app(settings, pool=app_pool))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        limits = (await http.get("/v1/investigations/limits", headers=_auth(tenant))).json()
        assert (limits["max_cost_usd"], limits["timeout_s"]) == ("0.125", 20.0)
        # A request at the advertised ceiling is accepted as it is.
        run = await http.post(
            "/v1/investigations",
            json={"question": "What changed?", "max_cost_usd": "0.125", "timeout_s": 20},
            headers=_auth(tenant),
        )
        assert run.status_code == 202
        assert (run.json()["max_cost_usd"], run.json()["timeout_s"]) == ("0.125", 20)
        await http.post(f"/v1/investigations/{run.json()['id']}/cancel", headers=_auth(tenant))


async def test_the_workbench_page_and_its_files_are_served_with_a_strict_policy(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/investigations")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for path, media in (
        ("/investigations/workbench.js", "text/javascript"),
        ("/investigations/workbench-evidence.js", "text/javascript"),
        ("/investigations/workbench.css", "text/css"),
    ):
        asset = await client.get(path)
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith(media)
        assert asset.headers["content-security-policy"] == page.headers["content-security-policy"]
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "require-trusted-types-for 'script'" in policy
    assert page.headers["referrer-policy"] == "no-referrer"
    # Everything the page loads is the service's own (no CDN, nothing inline).
    assert "<style" not in page.text and "style=" not in page.text
    assert "http://" not in page.text and "https://" not in page.text
    for name in ("workbench.js", "workbench-evidence.js"):
        script = (await client.get(f"/investigations/{name}")).text
        assert "innerHTML" not in script and "insertAdjacentHTML" not in script
