"""Structured logs: JSON lines with request and tenant ids, never a key or a personal value."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from llm_service.logging_setup import JsonFormatter
from llm_service.tenants.service import CreatedTenant


async def test_request_log_lines_carry_ids_but_no_key_or_personal_value(
    client: httpx.AsyncClient, tenant: CreatedTenant, caplog: pytest.LogCaptureFixture
) -> None:
    email = "private.person@example.com"
    caplog.set_level(logging.DEBUG)
    response = await client.post(
        "/v1/investigations?note=" + email,
        json={"question": f"Why did revenue from {email} drop? Call +1 415 555 2671"},
        headers={"Authorization": f"Bearer {tenant.api_key}", "X-Request-ID": "req-123"},
    )
    assert response.status_code == 202
    assert response.headers["x-request-id"] == "req-123"
    formatter = JsonFormatter()
    # The "httpx" records are the test's own client logging the URL it sent.
    lines = [formatter.format(r) for r in caplog.records if r.name != "httpx"]
    request_lines = [json.loads(line) for line in lines if '"message": "request"' in line]
    assert request_lines, "the request was logged"
    entry = request_lines[-1]
    assert entry["request_id"] == "req-123"
    assert entry["tenant_id"] == str(tenant.tenant_id)
    assert entry["route"] == "/v1/investigations" and entry["status"] == 202
    for line in lines:
        assert tenant.api_key not in line
        assert email not in line
        assert "555 2671" not in line


def test_exceptions_are_logged_by_type_without_their_message() -> None:
    try:
        raise ValueError("secret@example.com is invalid")
    except ValueError:
        record = logging.getLogger("t").makeRecord(
            "t", logging.ERROR, __file__, 1, "failed", (), exc_info=__import__("sys").exc_info()
        )
    line = JsonFormatter().format(record)
    assert json.loads(line)["error_type"] == "ValueError"
    assert "secret@example.com" not in line
