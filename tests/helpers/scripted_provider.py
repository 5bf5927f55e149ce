"""A scripted model for investigation tests: OpenAI chat completions, one scripted step a request.

Used with respx at the HTTP layer (`respx.post(OPENAI_URL).mock(side_effect=scripted(...))`), so
the gateway, litellm and the ledger run for real; only the provider's answers are written here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

OPENAI_URL = "https://api.openai.com/v1/chat/completions"

Step = Callable[[httpx.Request], httpx.Response]


def completion_body(
    message: dict[str, Any], prompt_tokens: int = 900, completion_tokens: int = 60
) -> dict[str, Any]:
    """A chat completion body as OpenAI sends it, with this assistant message and usage."""
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "finish_reason": "tool_calls" if "tool_calls" in message else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def reply(
    message: dict[str, Any] | Callable[[httpx.Request], dict[str, Any]],
    prompt: int = 900,
    completion: int = 60,
) -> Step:
    """A step answering with `message` (or `message(request)`) and this usage."""

    def respond(request: httpx.Request) -> httpx.Response:
        body = message(request) if callable(message) else message
        return httpx.Response(200, json=completion_body(body, prompt, completion))

    return respond


def tool_call_message(*calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """An assistant message asking for tools (name, arguments), as OpenAI sends it."""
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


def evidence_ids(request: httpx.Request) -> list[str]:
    """The evidence ids the model has been shown so far (from tool messages)."""
    body = json.loads(request.content)
    return [
        json.loads(m["content"])["evidence_id"] for m in body["messages"] if m.get("role") == "tool"
    ]


def final_answer(request: httpx.Request) -> dict[str, Any]:
    """A valid final report citing the first two evidence ids the model saw."""
    report = {
        "summary": "Paid social revenue fell.",
        "findings": [
            {"claim": "facebook_paid revenue dropped", "evidence": evidence_ids(request)[:2]}
        ],
    }
    return {"content": json.dumps(report)}


class Script:
    """A provider answering each request with the next step (the last one repeats)."""

    def __init__(self, *steps: Step) -> None:
        """The steps, in order; `seen` records every request answered."""
        if not steps:
            raise ValueError("a script needs at least one step")
        self.steps = steps
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        """The next step's answer to `request`."""
        self.seen.append(request)
        return self.steps[min(len(self.seen), len(self.steps)) - 1](request)


def scripted(*steps: Step) -> Script:
    """A `Script` of these steps (a respx side effect)."""
    return Script(*steps)
