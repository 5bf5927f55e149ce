"""The analyst's workbench (/investigations) in a real headless browser (Debian's chromium).

The real application serves the page and runs investigations with its in-process worker; the
model is a scripted OpenAI-compatible server on 127.0.0.1 that holds each answer until the test
releases it, so the test sees the run mid-flight. Screenshots of the running and finished states
(and the finished state at phone width) are kept in test-artifacts/.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import httpx
import pytest

from llm_service.db.pool import tenant_transaction
from llm_service.db.urls import DatabaseUrls
from llm_service.demo_data import generate_demo_data
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant, create_tenant, set_monthly_cap
from tests.browser import ARTIFACTS, Browser, LiveServer, Page, chromium_path, serve_app

#: Questions carrying this marker are held by the provider until the test releases each answer.
HELD = "[held]"
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


# -- the scripted provider --------------------------------------------------------------------


def _question(body: dict[str, Any]) -> str:
    users = [m for m in body["messages"] if m.get("role") == "user"]
    return str(users[0]["content"]) if users else ""


def _reply(body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Step 1: compare_periods and dead_event_summary; then a report whose second finding
    carries markup; for any other question (runs queued by other tests) an empty report."""
    messages = body["messages"]
    if HELD not in _question(body):
        return {"content": json.dumps({"summary": "Nothing to see.", "findings": []})}, "stop"
    if body.get("tools") and not any(m.get("tool_calls") for m in messages):
        end = datetime.now(UTC).date() + timedelta(days=1)
        start = end - timedelta(days=28)
        calls = [
            (
                "compare_periods",
                {"current_start": start.isoformat(), "current_end": end.isoformat()},
            ),
            ("dead_event_summary", {"start": (end - timedelta(days=90)).isoformat(),
                                    "end": end.isoformat()}),
        ]  # fmt: skip
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
        "summary": "Revenue moved with its conversions; ingestion failures are " + HOSTILE,
        "findings": [
            {"claim": "Channel revenue changed against the previous 28 days.", "evidence": ids[:1]},
            {"claim": "Dead events peaked on a few days " + HOSTILE, "evidence": ids[1:2]},
        ],
    }
    return {"content": json.dumps(report)}, "stop"


class HeldProvider:
    """An OpenAI chat endpoint in a thread; answers to held questions wait for `release()`."""

    def __init__(self) -> None:
        self.arrived = 0
        self._released = 0
        self._closed = False
        self._cond = threading.Condition()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                if HELD in _question(body):
                    with provider._cond:
                        provider.arrived += 1
                        ticket = provider.arrived
                        provider._cond.notify_all()
                        provider._cond.wait_for(
                            lambda: provider._released >= ticket or provider._closed
                        )
                message, finish = _reply(body)
                prompt = len(json.dumps(body)) // 4
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
                            "completion_tokens": 120,
                            "total_tokens": prompt + 120,
                        },
                    }
                ).encode()
                try:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the caller gave up (a cancelled run)
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def wait_arrivals(self, count: int) -> None:
        """Block until `count` held requests have arrived."""
        with self._cond:
            assert self._cond.wait_for(lambda: self.arrived >= count, timeout=90), (
                f"only {self.arrived} held requests arrived"
            )

    def release(self) -> None:
        """Let the next held answer go."""
        with self._cond:
            self._released += 1
            self._cond.notify_all()

    def close(self) -> None:
        """Answer everything still held, and stop serving."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._server.shutdown()


# -- fixtures ---------------------------------------------------------------------------------


@dataclass
class Workbench:
    """The served application, its provider and a tenant with data."""

    server: LiveServer
    provider: HeldProvider
    tenant: CreatedTenant

    def url(self, fragment: str = "") -> str:
        """The page, with the key in the fragment (never sent to the server)."""
        return f"{self.server.base_url}/investigations#key={self.tenant.api_key}{fragment}"

    def api(self) -> httpx.AsyncClient:
        """A client of the same server, as the tenant."""
        return httpx.AsyncClient(
            base_url=self.server.base_url,
            headers={"Authorization": f"Bearer {self.tenant.api_key}"},
            timeout=30,
        )


@pytest.fixture(scope="module")
async def analyst(owner_pool: asyncpg.Pool) -> AsyncIterator[CreatedTenant]:
    """A tenant with realistic data (its runs are told apart by id); its events are removed
    afterwards, so the session's later whole-database scans (PII) do not carry them."""
    created = await create_tenant(owner_pool, "workbench-analyst")
    async with tenant_transaction(owner_pool, created.tenant_id) as conn:
        await generate_demo_data(conn, created.tenant_id, events=10_000, seed=13)
    yield created
    async with tenant_transaction(owner_pool, created.tenant_id) as conn:
        for table in ("dead_events", "attribution_events"):
            await conn.execute(f"DELETE FROM {table} WHERE tenant_id = $1", created.tenant_id)
    # and their dead rows with them, or later sequential scans would still read them
    await owner_pool.execute(
        "VACUUM (ANALYZE) dead_events, attribution_events, attribution_allocations"
    )


@pytest.fixture
def workbench(
    test_settings: Settings,
    database_urls: DatabaseUrls,
    analyst: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Workbench]:
    """The real application with its worker, talking to the held provider."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    provider = HeldProvider()
    settings = test_settings.model_copy(
        update={
            "llm_model": "openai/gpt-4o-mini",
            "llm_api_base": provider.url,
            "llm_max_attempts": 1,
            "worker_lease_s": 2.0,
            "worker_shutdown_grace_s": 2.0,
        }
    )
    try:
        with serve_app(settings, database_urls, run_workers=True, name="tests-workbench") as s:
            yield Workbench(s, provider, analyst)
    finally:
        provider.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless chromium, driven over the DevTools protocol."""
    async with Browser.launch(chromium_path()) as b:
        yield b


async def _signed_in(browser: Browser, url: str, width: int = 1280) -> Page:
    page = await browser.new_page(width=width)
    await page.goto(url)
    await page.wait_for("() => document.body.dataset.state === 'ready'")
    return page


async def _runs(bench: Workbench) -> list[dict[str, Any]]:
    async with bench.api() as http:
        response = await http.get("/v1/investigations", params={"limit": 100})
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def _ask(page: Page, question: str, *, clicks: int = 1) -> None:
    await page.type("#question", question)
    await page.click("#submit", clicks=clicks)


def _shown_findings_js() -> str:
    return """() => [...document.querySelectorAll('[data-testid=finding]')].map((li) => ({
        claim: li.querySelector('[data-testid=claim]').textContent,
        evidence: li.dataset.evidence.split(' ').filter(Boolean)}))"""


# -- the tests --------------------------------------------------------------------------------


async def test_a_question_runs_live_and_every_claim_can_be_checked(
    browser: Browser, workbench: Workbench
) -> None:
    before = {r["id"] for r in await _runs(workbench)}
    page = await _signed_in(browser, workbench.url())
    # The key came in the fragment and was moved out of the address at once.
    assert workbench.tenant.api_key not in await page.evaluate("location.href")
    # The sliders are capped at the service's ceilings; the keyboard moves them.
    assert await page.evaluate(
        "[document.querySelector('#max-cost').max, document.querySelector('#timeout').max]"
    ) == ["0.3", "60"]
    await page.evaluate("document.querySelector('#max-cost').focus()")
    for _ in range(10):
        await page.press("ArrowLeft")
    assert await page.evaluate("document.querySelector('#max-cost').value") == "0.2"
    assert await page.evaluate("document.querySelector('#max-cost-value').textContent") == "$0.20"

    question = f"{HELD} Why did revenue move in the last 28 days? {uuid.uuid4().hex[:6]}"
    await page.evaluate(
        "window.__submits = 0; document.querySelector('#ask-form')"
        ".addEventListener('submit', () => { window.__submits += 1; })"
    )
    await _ask(page, question, clicks=2)  # a double click
    await asyncio.to_thread(workbench.provider.wait_arrivals, 1)
    # Running, before the model has answered: step 1 shown, nothing spent yet.
    await page.wait_for(
        "() => document.querySelector('#run').dataset.status === 'running' && "
        "document.querySelector('#timeline [data-type=step]')"
    )
    started_clock = float(
        await page.wait_for(
            "() => Number(document.querySelector('#clock').dataset.value) > 0 "
            "&& document.querySelector('#clock').dataset.value"
        )
    )
    assert await page.evaluate("document.querySelector('#money').dataset.value") == "0"
    assert await page.evaluate("document.querySelector('#money-text').textContent") == (
        "$0.00 of $0.20"
    )
    ours = [r for r in await _runs(workbench) if r["id"] not in before]
    assert [r["question"] for r in ours] == [question], "a double click must start exactly one run"
    assert await page.evaluate("window.__submits") == 2, "both clicks reached the button"
    run_id = ours[0]["id"]
    assert ours[0]["max_cost_usd"] == "0.2"

    # The model answers step 1: its cost and the two tool calls appear, the meters move.
    workbench.provider.release()
    await asyncio.to_thread(workbench.provider.wait_arrivals, 2)
    spent = await page.wait_for(
        "() => document.querySelectorAll('#timeline [data-type=tool_call]').length === 2 && "
        "document.querySelector('#money').dataset.value !== '0' && "
        "document.querySelector('#money').dataset.value"
    )
    async with workbench.api() as http:
        mid = (await http.get(f"/v1/investigations/{run_id}")).json()
    assert mid["status"] == "running"
    # The second call is in flight (held): reserved, not yet settled.
    (first_call,) = [c for c in mid["llm_calls"] if c["status"] != "pending"]
    assert Decimal(spent) == Decimal(first_call["cost_usd"]) > 0
    tools_shown = await page.evaluate(
        "[...document.querySelectorAll('#timeline [data-type=tool_call]')].map((li) => "
        "[li.dataset.evidenceId, li.dataset.tool, li.textContent])"
    )
    assert {(t["id"], t["tool_name"]) for t in mid["tool_calls"]} == {
        (i, n) for i, n, _ in tools_shown
    }
    for call in mid["tool_calls"]:
        text = next(t for i, _, t in tools_shown if i == call["id"])
        assert f"{call['duration_ms']} ms" in text
        for name, value in call["arguments"].items():
            if isinstance(value, str | int) and not isinstance(value, bool):
                assert f"{name}={value}" in text
    await page.wait_for(
        f"() => Number(document.querySelector('#clock').dataset.value) > {started_clock}"
    )
    await page.screenshot(ARTIFACTS / "workbench-running.png")

    # The final answer: the result equals the API's, markup in it is only text.
    workbench.provider.release()
    await page.wait_for("() => document.body.dataset.run === 'succeeded'")
    async with workbench.api() as http:
        final = (await http.get(f"/v1/investigations/{run_id}")).json()
    assert final["status"] == "succeeded" and not final["degraded"]
    shown = await page.evaluate(f"({_shown_findings_js()})()")
    assert shown == [{"claim": f["claim"], "evidence": f["evidence"]} for f in final["findings"]]
    assert HOSTILE in shown[1]["claim"]
    assert (
        await page.evaluate("document.querySelector('#summary').textContent") == (final["summary"])
    )
    assert await page.evaluate("window.__pwned === undefined")
    assert await page.evaluate("document.querySelectorAll('#run script, #run img').length") == 0
    assert (
        await page.evaluate("document.querySelector('#money').dataset.value") == (final["cost_usd"])
    )
    assert await page.evaluate("document.querySelector('#cancel').hidden")

    # Clicking the first finding opens its cited tool call: a table and a comparison chart.
    await page.click("[data-testid=finding-toggle]")
    cited = final["findings"][0]["evidence"][0]
    call = next(t for t in final["tool_calls"] if t["id"] == cited)
    card = await page.wait_for(
        "() => { const c = document.querySelector('[data-testid=cited-tool-call]');"
        " return c && !c.closest('[hidden]') && [c.dataset.evidenceId, c.dataset.tool,"
        " c.querySelectorAll('[data-testid=result-row]').length]; }"
    )
    rows = call["result"]["rows"]
    assert card == [cited, "compare_periods", min(12, len(rows))]
    assert rows, "the demo data should give the comparison some channels"
    bars = await page.evaluate(
        "[...document.querySelectorAll('[data-testid=evidence]:not([hidden]) "
        "[data-kind=comparison] [data-testid=chart-bar]')].map((b) => "
        "[b.dataset.label, b.dataset.series, b.dataset.value])"
    )
    expected = [
        [r["channel"], series, str(r[f"{series}_revenue_cents"])]
        for r in rows[:10]
        for series in ("previous", "current")
    ]
    assert bars == expected
    # The second finding opens with the keyboard.
    await page.evaluate("document.querySelectorAll('[data-testid=finding-toggle]')[1].focus()")
    await page.press("Enter")
    second = await page.wait_for(
        "() => { const b = document.querySelectorAll('[data-testid=finding-toggle]')[1];"
        " return b.getAttribute('aria-expanded') === 'true' && "
        "b.parentElement.querySelector('[data-testid=cited-tool-call]').dataset.tool; }"
    )
    assert second == "dead_event_summary"
    dead = next(t for t in final["tool_calls"] if t["id"] == final["findings"][1]["evidence"][0])
    peaks = sorted(dead["result"]["peak_days"], key=lambda d: d["day"])
    assert peaks, "the demo data plants dead events"
    series = await page.evaluate(
        "[...document.querySelectorAll('[data-testid=finding]')[1].querySelectorAll("
        "'[data-kind=series] [data-testid=chart-bar]')].map((b) => [b.dataset.label, "
        "b.dataset.value])"
    )
    assert series == [[d["day"][5:], str(d["events"])] for d in peaks[:40]]
    await page.screenshot(ARTIFACTS / "workbench-finished.png")
    # Every control is labelled, and the page fits 1280 px.
    assert await page.evaluate(
        "[...document.querySelectorAll('input, select, textarea')]"
        ".every((e) => e.labels.length > 0 || e.getAttribute('aria-label'))"
    )
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    # History: newest first, this run on top; filtering by status hides it.
    top = await page.wait_for(
        "() => { const li = document.querySelector('[data-testid=history-item]');"
        " return li && li.dataset.status === 'succeeded' && li.dataset.runId; }"
    )
    assert top == run_id
    await page.evaluate(
        "(() => { const s = document.querySelector('#history-filter'); s.value = 'cancelled';"
        " s.dispatchEvent(new Event('change')); })()"
    )
    await page.wait_for("() => document.body.dataset.history === 'cancelled'")
    assert run_id not in await page.evaluate(
        "[...document.querySelectorAll('[data-testid=history-item]')].map((li) => li.dataset.runId)"
    )
    assert page.problems() == []

    # A late joiner (another tab, phone width) replays the events and shows the same result.
    late = await _signed_in(browser, workbench.url(f"&run={run_id}"), width=390)
    await late.wait_for("() => document.body.dataset.run === 'succeeded'")
    assert await late.evaluate(f"({_shown_findings_js()})()") == shown
    assert await late.evaluate("document.querySelectorAll('#timeline li').length") == (
        await page.evaluate("document.querySelectorAll('#timeline li').length")
    )
    await late.click("[data-testid=finding-toggle]")
    await late.wait_for("() => document.querySelector('[data-kind=comparison]')")
    assert await late.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
        "the page must fit a phone's width"
    )
    await late.screenshot(ARTIFACTS / "workbench-phone.png")
    assert late.problems() == []


async def test_cancel_stops_a_running_run_and_says_so(
    browser: Browser, workbench: Workbench
) -> None:
    page = await _signed_in(browser, workbench.url())
    question = f"{HELD} Which channels lost revenue? {uuid.uuid4().hex[:6]}"
    await _ask(page, question)
    await asyncio.to_thread(workbench.provider.wait_arrivals, 1)
    await page.wait_for(
        "() => document.querySelector('#run').dataset.status === 'running' && "
        "!document.querySelector('#cancel').hidden"
    )
    await page.click("#cancel")
    await page.wait_for("() => document.body.dataset.run === 'cancelled'")
    run_id = await page.evaluate("document.querySelector('#run').dataset.runId")
    async with workbench.api() as http:
        run = (await http.get(f"/v1/investigations/{run_id}")).json()
    assert run["status"] == "cancelled"
    assert run["question"] == question
    outcome = await page.evaluate("document.querySelector('#outcome').textContent")
    assert "cancelled" in outcome and run["reason"] in outcome
    assert await page.evaluate("document.querySelector('#cancel').hidden")
    await page.wait_for(
        f"() => document.querySelector('[data-testid=history-item][data-run-id=\"{run_id}\"]')"
        "?.dataset.status === 'cancelled'"
    )
    assert page.problems() == []


async def test_a_degraded_run_says_so_and_why(
    browser: Browser, workbench: Workbench, owner_pool: asyncpg.Pool
) -> None:
    spent = await create_tenant(owner_pool, f"workbench-capped-{uuid.uuid4().hex[:6]}")
    await set_monthly_cap(owner_pool, spent.tenant_id, Decimal(0))
    bench = Workbench(workbench.server, workbench.provider, spent)
    page = await _signed_in(browser, bench.url())
    await _ask(page, "Why did paid social revenue fall last week?")
    await page.wait_for("() => document.body.dataset.run === 'succeeded'")
    outcome = await page.evaluate("document.querySelector('#outcome').textContent")
    assert outcome.startswith("Degraded: the tenant's monthly LLM cap is spent")
    (run,) = await _runs(bench)
    assert run["degraded"] and run["status"] == "succeeded"
    shown = await page.evaluate(f"({_shown_findings_js()})()")
    assert shown == [{"claim": f["claim"], "evidence": f["evidence"]} for f in run["findings"]]
    # The same unchanged draft submitted again is the same run (its Idempotency-Key); an
    # edited draft is a new one.
    await page.click("#submit")
    message = await page.wait_for(
        "() => /already started/.test(document.querySelector('#status').textContent) && "
        "document.querySelector('#status').textContent"
    )
    assert "Edit the question" in message
    assert [r["id"] for r in await _runs(bench)] == [run["id"]]
    await _ask(page, " Or the week before?")
    await page.wait_for(
        f"() => document.querySelector('#run').dataset.runId !== '{run['id']}' && "
        "document.body.dataset.run === 'succeeded' && "
        "document.querySelectorAll('[data-testid=history-item]').length === 2"
    )
    assert len(await _runs(bench)) == 2
    # Opening the older run from the history shows its result again. The page says when no
    # history reload is in flight; the click must land even if one starts (the list keeps its
    # elements), but the test does not rely on that.
    await page.wait_for("() => document.body.dataset.historyIdle === 'true'")
    await page.click(f"[data-testid=history-item][data-run-id='{run['id']}'] button")
    await page.wait_for(
        f"() => document.querySelector('#run').dataset.runId === '{run['id']}' && "
        "document.body.dataset.run === 'succeeded'"
    )
    assert await page.evaluate(f"({_shown_findings_js()})()") == shown
    assert page.problems() == []


async def test_without_a_key_or_with_a_wrong_one_the_page_asks_for_one(
    browser: Browser, workbench: Workbench
) -> None:
    page = await browser.new_page()
    await page.goto(f"{workbench.server.base_url}/investigations")
    await page.wait_for("() => document.body.dataset.state === 'auth'")
    assert await page.evaluate("document.querySelector('#content').hidden")
    await page.type("#api-key", "lsk_not-a-key")
    await page.press("Enter")
    message = await page.wait_for(
        "() => document.body.dataset.state === 'auth' && "
        "document.querySelector('#status').textContent"
    )
    assert "key" in message.lower()
    assert await page.evaluate("sessionStorage.length") == 0
    assert page.problems() == []
