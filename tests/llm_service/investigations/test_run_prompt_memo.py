"""A run's prompt memo end to end: PII that enters the conversation late is still redacted in
every later prompt, and no earlier message is redacted again (scripted OpenAI over respx)."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import asyncpg
import httpx
import pytest
import respx
from test_investigation_runs import (
    data_tenant,  # noqa: F401  (the module's data fixture, shared)
    load,
    queue_run,
    run,
)

import llm_service.llm.prompt_memo as memo_module
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant
from tests.helpers.scripted_provider import (
    OPENAI_URL,
    final_answer,
    reply,
    scripted,
    tool_call_message,
)

EMAIL = "jane.doe@example.com"
PHONE = "+44 20 7946 0958"


@respx.mock
async def test_pii_in_a_step_3_tool_result_is_redacted_in_step_4s_prompt(
    model_settings: Settings,
    app_pool: asyncpg.Pool,
    data_tenant: CreatedTenant,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    redactions: Counter[str] = Counter()
    real = memo_module.redact_message

    def counted(message: dict[str, Any], index: int) -> Any:
        redactions[json.dumps([index, message], sort_keys=True)] += 1
        return real(message, index)

    monkeypatch.setattr(memo_module, "redact_message", counted)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    start = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 14 * 86400))
    bodies: list[dict[str, Any]] = []

    def recorded(
        step: Any,
    ) -> Any:
        def respond(request: httpx.Request) -> httpx.Response:
            bodies.append(json.loads(request.content))
            response: httpx.Response = step(request)
            return response

        return respond

    # Step 3: a hostile model names a "tool" after a customer and puts a phone number in its
    # arguments; the tool's error (echoing the name) and the echoed call carry them into step 4.
    respx.post(OPENAI_URL).mock(
        side_effect=scripted(
            recorded(
                reply(tool_call_message(("channel_performance", {"start": start, "end": today})))
            ),
            recorded(
                reply(
                    tool_call_message(
                        ("compare_periods", {"current_start": start, "current_end": today})
                    )
                )
            ),
            recorded(reply(tool_call_message((EMAIL, {"note": f"call {PHONE}"})))),
            recorded(reply(final_answer)),
        )
    )
    run_id = await queue_run(app_pool, data_tenant.tenant_id)
    status = await run(model_settings, app_pool, data_tenant.tenant_id, run_id)
    assert status == "succeeded"
    assert len(bodies) == 4
    step3, step4 = json.dumps(bodies[2]), json.dumps(bodies[3])
    assert EMAIL not in step3
    assert EMAIL not in step4 and "7946" not in step4
    assert "[REDACTED:email]" in step4 and "[REDACTED:phone]" in step4
    # Every earlier message went out again, unchanged, in step 4's prompt.
    assert len(bodies[3]["messages"]) > len(bodies[2]["messages"])
    assert max(redactions.values()) == 1, "a message of the run was redacted twice"
    # Each message redacted once: the conversation's messages plus one limits note per step.
    assert sum(redactions.values()) < sum(len(b["messages"]) for b in bodies)
    record = await load(app_pool, data_tenant.tenant_id, run_id)
    assert len(record["llm_calls"]) == 4
    # What was sent is what was recorded (redacted) in the ledger.
    stored = json.dumps([c["request_metadata"]["prompt"] for c in record["llm_calls"]])
    assert EMAIL not in stored and "7946" not in stored
    # Nor in what the run keeps: its tool calls (the error quoting the name) and its events.
    kept = json.dumps([[tc["tool_name"], tc["error"]] for tc in record["tool_calls"]])
    kept += json.dumps([e["data"] for e in record["events"]], default=str)
    where = kept.find(EMAIL)
    assert EMAIL not in kept and "7946" not in kept, kept[max(0, where - 300) : where + 50]
