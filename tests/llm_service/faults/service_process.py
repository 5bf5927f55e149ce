"""The fault tests' parts: a scripted OpenAI-compatible provider on 127.0.0.1, the real service
(`llm-service serve`) in its own OS process, a steady HTTP workload, and the promise checks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx

from llm_service.costs.reconcile import reconcile
from llm_service.db.urls import DatabaseUrls

TERMINAL = ("succeeded", "budget_exhausted", "timed_out", "failed", "cancelled")
FINANCE_TOKEN = "finance-token-for-fault-tests"
QUESTION = "Why did paid social revenue fall in the last 14 days?"


# -- the provider -------------------------------------------------------------------------------


def _scripted_reply(body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The assistant message for a request: one step of tools, then a report citing evidence;
    without tools, an explanation."""
    messages = body["messages"]
    if not body.get("tools"):
        content = {
            "summary": "Revenue moved mostly on facebook_paid.",
            "drivers": [{"label": "facebook_paid", "figure": "-1,234.56", "detail": "drop"}],
            "confidence": "medium",
        }
        return {"content": json.dumps(content)}, "stop"
    if not any(m.get("role") == "assistant" and m.get("tool_calls") for m in messages):
        end = datetime.now(UTC).date() + timedelta(days=1)
        start = end - timedelta(days=14)
        calls = [
            ("channel_performance", {"start": start.isoformat(), "end": end.isoformat()}),
            ("dead_event_summary", {"start": start.isoformat(), "end": end.isoformat()}),
        ]
        return {
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{i}_{uuid.uuid4().hex[:8]}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
                for i, (name, args) in enumerate(calls)
            ],
        }, "tool_calls"
    ids = [json.loads(m["content"])["evidence_id"] for m in messages if m.get("role") == "tool"]
    report = {
        "summary": "Paid social revenue fell with its conversions.",
        "findings": [{"claim": "facebook_paid revenue dropped", "evidence": ids[:2]}],
    }
    return {"content": json.dumps(report)}, "stop"


class ScriptedProvider:
    """An OpenAI chat endpoint in a thread: answers after `latency_s`, counts every request."""

    def __init__(self, latency_s: float = 0.2) -> None:
        self.latency_s = latency_s
        self.requests = 0
        self.by_kind: Counter[str] = Counter()
        # The service's worker also runs runs queued by earlier tests (other tenants): the
        # ledger is compared with what the provider saw over this time, across all tenants.
        self.opened_at = datetime.now(UTC) - timedelta(seconds=1)
        self._lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                with provider._lock:
                    provider.requests += 1
                    provider.by_kind["tools" if body.get("tools") else "plain"] += 1
                time.sleep(provider.latency_s)  # the provider's latency is the behaviour
                message, finish = _scripted_reply(body)
                prompt = len(json.dumps(body)) // 4
                completion = min(80, int(body.get("max_tokens") or 80))
                payload = json.dumps(
                    {
                        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": "gpt-4o-mini-2024-07-18",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", **message},
                                "finish_reason": finish,
                            }
                        ],
                        "usage": {
                            "prompt_tokens": prompt,
                            "completion_tokens": completion,
                            "total_tokens": prompt + completion,
                        },
                    }
                ).encode()
                try:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the caller went away (a killed service)
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()


# -- the service --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServiceProcess:
    """`llm-service serve` (API and in-process worker) as a real OS process."""

    def __init__(self, urls: DatabaseUrls, provider_url: str, log: Path, **env: str) -> None:
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("LLM_MODEL", "LLM_API_BASE")},
            "DATABASE_URL": urls.owner,
            "APP_DATABASE_URL": urls.app,
            "LLM_MODEL": "openai/gpt-4o-mini",
            "LLM_API_BASE": provider_url,
            "OPENAI_API_KEY": "sk-test",
            "LLM_REQUEST_TIMEOUT_S": "5",
            "LLM_MAX_ATTEMPTS": "2",
            "WORKER_LEASE_S": "2",
            "FINANCE_API_TOKEN": FINANCE_TOKEN,
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> None:
        args = ["serve", "--no-migrate", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "llm_service.cli", *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def start(self) -> None:
        """Start serving and wait until /readyz answers 200."""
        self._spawn()
        await wait_for(lambda: self._ready(), timeout=90, what=f"readiness\n{self.tail()}")

    async def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the service exited\n{self.tail()}")
        try:
            async with httpx.AsyncClient() as http:
                return (await http.get(f"{self.base_url}/readyz", timeout=2)).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown at all."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self) -> str:
        """The end of the service's log."""
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@contextmanager
def running_provider(latency_s: float = 0.2) -> Iterator[ScriptedProvider]:
    """A scripted provider for the duration of the block."""
    provider = ScriptedProvider(latency_s)
    try:
        yield provider
    finally:
        provider.close()


async def wait_for(predicate: Any, *, timeout: float, what: str, every: float = 0.25) -> None:
    """Await `predicate()` until it is true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(every)  # a polling interval
    raise AssertionError(f"timed out waiting for {what}")


# -- the workload -------------------------------------------------------------------------------


@dataclass
class Workload:
    """Explanations, investigations and cost reads from a few clients until stopped."""

    base_url: str
    api_keys: list[str]
    statuses: Counter[int] = field(default_factory=Counter)
    bad_bodies: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, clients: int = 4) -> None:
        """Send requests until `stop()`; a refused connection (service down) is counted as 0."""
        await asyncio.gather(*(self._client(i) for i in range(clients)))

    def stop(self) -> None:
        """End the workload after the requests in flight."""
        self._stop.set()

    async def _client(self, i: int) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            n = i
            while not self._stop.is_set():
                key = self.api_keys[n % len(self.api_keys)]
                try:
                    response = await self._request(http, n, key)
                except httpx.HTTPError:
                    self.statuses[0] += 1
                    await asyncio.sleep(0.2)  # a client's back-off while the service is down
                else:
                    self._check(response)
                n += 1

    async def _request(self, http: httpx.AsyncClient, n: int, key: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"}
        if n % 4 == 0:
            response = await http.post(
                "/v1/investigations", json={"question": QUESTION}, headers=headers
            )
            if response.status_code == 202:
                self.run_ids.append(response.json()["id"])
            return response
        if n % 4 == 3:
            month = datetime.now(UTC).strftime("%Y-%m")
            return await http.get(f"/v1/costs/monthly?month={month}", headers=headers)
        end = datetime.now(UTC).date() - timedelta(days=n % 3)
        body = {
            "subject": "channel_performance",
            "period": {"start": (end - timedelta(days=7)).isoformat(), "end": end.isoformat()},
        }
        return await http.post("/v1/explanations", json=body, headers=headers)

    def _check(self, response: httpx.Response) -> None:
        self.statuses[response.status_code] += 1
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                assert isinstance(error["code"], str) and isinstance(error["message"], str)
            except (ValueError, KeyError, TypeError, AssertionError):
                self.bad_bodies.append(response.text[:300])
        if "Traceback" in response.text:
            self.bad_bodies.append(response.text[:300])


# -- the promise ----------------------------------------------------------------------------------


async def wait_until_all_runs_end(owner: asyncpg.Pool, run_ids: list[str], timeout: float) -> None:
    """Every run reaches a terminal state (without anyone's help) within `timeout`."""
    ids = [UUID(r) for r in run_ids]

    async def ended() -> bool:
        open_runs: int = await owner.fetchval(
            "SELECT count(*) FROM investigations WHERE id = ANY($1) AND status <> ALL($2)",
            ids,
            list(TERMINAL),
        )
        return open_runs == 0

    try:
        await wait_for(ended, timeout=timeout, what="every run to reach a terminal state")
    except AssertionError:
        open_runs = await owner.fetch(
            "SELECT id, status, lease_owner, lease_expires_at, heartbeat_at, attempts, now() AS at "
            "FROM investigations WHERE id = ANY($1) AND status <> ALL($2)",
            ids,
            list(TERMINAL),
        )
        raise AssertionError(f"runs that never ended: {[dict(r) for r in open_runs]}") from None


async def assert_promise_kept(
    owner: asyncpg.Pool,
    app: asyncpg.Pool,
    tenant_ids: list[UUID],
    run_ids: list[str],
    provider: ScriptedProvider,
) -> None:
    """No money record missing, every total reconciled, no ceiling or cap exceeded."""
    ids = [UUID(r) for r in run_ids]

    async def all_settled() -> bool:
        # Settles cut off by the fault are retried in the background once the database is back.
        pending: int = await owner.fetchval(
            "SELECT count(*) FROM llm_api_calls WHERE tenant_id = ANY($1) AND status = 'pending'",
            tenant_ids,
        )
        return pending == 0

    await wait_for(all_settled, timeout=20, what="every provider call to be settled")
    # Every request the provider saw has its ledger row (written before the call).
    rows = await owner.fetchval(
        "SELECT count(*) FROM llm_api_calls WHERE created_at >= $1", provider.opened_at
    )
    if provider.requests > rows:
        by_endpoint = await owner.fetch(
            "SELECT endpoint, status, count(*) FROM llm_api_calls WHERE created_at >= $1 "
            "GROUP BY 1, 2",
            provider.opened_at,
        )
        raise AssertionError(
            f"the provider saw {provider.requests} requests ({dict(provider.by_kind)}) but the "
            f"ledger has {rows} rows: {[tuple(r) for r in by_endpoint]}"
        )
    over = await owner.fetch(
        """
        SELECT i.id, i.cost_cents, i.max_cost_cents, i.elapsed_ms, i.timeout_ms,
               coalesce((SELECT sum(c.cost_cents) FROM llm_api_calls c
                          WHERE c.investigation_id = i.id), 0) AS ledger_cents
          FROM investigations i WHERE i.id = ANY($1)
        """,
        ids,
    )
    for run in over:
        assert run["ledger_cents"] <= run["max_cost_cents"], dict(run)
        assert run["cost_cents"] <= run["max_cost_cents"], dict(run)
        if run["elapsed_ms"] is not None:
            assert run["elapsed_ms"] <= run["timeout_ms"] + 5_000, dict(run)
    async with app.acquire() as conn:
        report = await reconcile(conn, None)
    differences = [row for row in report.differences if row.tenant_id in tenant_ids]
    assert not differences, differences
    caps = await owner.fetch(
        """
        SELECT t.id, t.monthly_cap_cents, coalesce(sum(c.cost_cents), 0) AS spent
          FROM tenants t LEFT JOIN llm_api_calls c ON c.tenant_id = t.id
         WHERE t.id = ANY($1) GROUP BY 1, 2
        """,
        tenant_ids,
    )
    for cap in caps:
        assert cap["spent"] <= cap["monthly_cap_cents"], dict(cap)
    assert sum(Decimal(c["spent"]) for c in caps) > 0, "the workload spent nothing"
