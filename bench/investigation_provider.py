"""bench_investigations' mocked OpenAI: tool-call plans, final reports, growing usage."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any

import httpx

from bench.investigation_figures import _CALL, _RUN, Probe
from llm_service.llm.litellm_setup import load_litellm


def honest_prompt_tokens(body: dict[str, Any]) -> int:
    """A little under what the gateway counted, as an honest provider reports: its usage is
    believed. (The body's length / 4.5 over-reported a step after a tool call by ~12%, its
    JSON escaped twice, and a fixed 900 over-reported short explanations: those calls were
    billed at their reservation, as a lying provider's are.)"""
    counted = load_litellm().token_counter(
        model=body["model"], messages=body["messages"], tools=body.get("tools")
    )
    return int(0.98 * counted)


OPENAI_URL = "https://api.openai.com/v1/chat/completions"
# The analysts' questions the runs are queued with (round robin).
QUESTIONS = (
    "Why did paid social revenue fall in the last 14 days compared with the two weeks before?",
    "Facebook paid revenue dropped last week. Is it fewer conversions or smaller orders?",
    "Affiliate refunds and chargebacks look high this month: which week, and how much revenue?",
    "Are we missing Shopify events? Some days look low; check the dead-letter queue.",
    "Instagram paid looks weak while organic social looks strong. Were sessions mislabelled?",
    "How different is facebook_paid's revenue under first-touch, last-touch and linear models?",
    "Which channels drove the largest orders in the last 30 days?",
    "Did anything change in email performance week over week?",
)


def _completion(message: dict[str, Any], prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "finish_reason": "tool_calls" if "tool_calls" in message else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _tool_calls(*calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{i}_{time.monotonic_ns()}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for i, (name, args) in enumerate(calls)
        ],
    }


#: The scripts a mocked model follows: "default" (two or three steps of tool calls, 4.5 tools,
#: then the answer: 3.5 LLM calls per run) and "two-step" (one tool call, then the answer).
SCRIPTS = ("default", "two-step")


def _plan(
    rng: random.Random, today: date, script: str = "default"
) -> list[list[tuple[str, dict[str, Any]]]]:
    """Two or three steps of tool calls, with arguments a model would plausibly send (one step
    of one call for the two-step script)."""
    end = today + timedelta(days=1)
    days = rng.choice((7, 14, 28))
    start = end - timedelta(days=days)
    iso = date.isoformat
    if script == "two-step":
        return [[("channel_performance", {"start": iso(start), "end": iso(end)})]]
    channel = rng.choice(("facebook_paid", "instagram_paid", "google_ads", "email", "affiliate"))
    steps: list[list[tuple[str, dict[str, Any]]]] = [
        [
            ("channel_performance", {"start": iso(start), "end": iso(end)}),
            ("compare_periods", {"current_start": iso(start), "current_end": iso(end)}),
        ],
        [
            ("top_orders", {"start": iso(start), "end": iso(end), "channel": channel, "limit": 10}),
            ("revenue_state_changes", {"start": iso(start), "end": iso(end), "channel": channel}),
        ],
    ]
    if rng.random() < 0.5:
        wide = iso(end - timedelta(days=30))
        steps.append(
            [
                rng.choice(
                    (
                        ("dead_event_summary", {"start": wide, "end": iso(end)}),
                        ("channel_corrections", {"start": wide, "end": iso(end)}),
                        ("reconciliation_status", {"start": wide, "end": iso(end)}),
                        (
                            "compare_attribution_models",
                            {"start": iso(start), "end": iso(end), "channel": channel},
                        ),
                    )
                )
            ]
        )
    return steps


def _final_answer(ids: list[str], rng: random.Random) -> dict[str, Any]:
    findings = [
        {
            "claim": f"Finding {i + 1}: the channel's attributed revenue moved by "
            f"{rng.randint(5, 45)}% against the previous period, driven by conversions.",
            "evidence": ids[i : i + 2] or ids[:1],
        }
        for i in range(min(3, max(1, len(ids))))
    ]
    report = {
        "summary": "Paid social revenue fell in the period mainly because facebook_paid "
        "conversions dropped while order values stayed close to their usual level; refunds and "
        "ingestion gaps explain only a small part of the change.",
        "findings": findings,
    }
    return {"content": json.dumps(report)}


def make_provider(
    probe: Probe, latency_s: float, today: date, script: str = "default"
) -> Callable[[httpx.Request], Awaitable[httpx.Response]]:
    """An async respx side effect: sleep the latency, then answer from the conversation by
    `script` (see SCRIPTS)."""
    if script not in SCRIPTS:
        raise ValueError(f"unknown script {script!r}: one of {', '.join(SCRIPTS)}")

    async def provider(request: httpx.Request) -> httpx.Response:
        entered = time.perf_counter()
        run = _RUN.get()
        if run is None:
            probe.unattributed_calls += 1
        else:
            probe.runs[run].provider_in.append(entered)
        rng = random.Random(f"{run}:{entered}")
        body = json.loads(request.content)
        messages = body["messages"]
        ids = [json.loads(m["content"])["evidence_id"] for m in messages if m.get("role") == "tool"]
        done_steps = sum(
            1 for m in messages if m.get("role") == "assistant" and m.get("tool_calls")
        )
        plan = _plan(random.Random(run), today, script)
        if body.get("tools") and done_steps < len(plan):
            message = _tool_calls(*plan[done_steps])
            completion = rng.randint(50, 120)
        else:
            message = _final_answer(ids, rng)
            completion = rng.randint(200, 300)
        # litellm sends OpenAI's newer max_completion_tokens for some models, max_tokens for others.
        granted = body.get("max_tokens") or body.get("max_completion_tokens") or completion
        completion = min(completion, int(granted))
        prompt = honest_prompt_tokens(body)
        response = httpx.Response(200, json=_completion(message, prompt, completion))
        own = time.perf_counter() - entered
        probe.mock_cpu.append(own)
        await asyncio.sleep(latency_s)
        left = time.perf_counter()
        probe.sleep_overshoot.append(left - entered - own - latency_s)
        if run is not None:
            probe.runs[run].provider_out.append(left)
        slot = _CALL.get()
        if slot is not None:
            slot.append(left - entered)
        return response

    return provider
