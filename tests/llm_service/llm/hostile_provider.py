"""A hostile OpenAI-compatible provider: a catalogue of lies, each a reply to a real request.

Every entry takes the request the gateway sent (httpx, as respx hands it over) and answers in
the OpenAI chat-completions wire format, or breaks it on purpose. Usage lies cover every field;
bodies come malformed, truncated, streaming-shaped or with ten choices; tool calls come in
floods, nested, null or nameless; errors come as 429/500 with Retry-After 0 (no real wait).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
Reply = Callable[[httpx.Request], httpx.Response]


def sent(request: httpx.Request) -> dict[str, Any]:
    """The JSON body the gateway sent."""
    body: dict[str, Any] = json.loads(request.content)
    return body


def completion(
    message: dict[str, Any], usage: dict[str, Any] | None, *, choices: int = 1
) -> dict[str, Any]:
    """An OpenAI chat completion body; `usage` None leaves the field out."""
    body: dict[str, Any] = {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", **message},
                "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
            }
            for i in range(choices)
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def honest_usage(request: httpx.Request, output: int = 5) -> dict[str, int]:
    """Usage a real provider could report: a small prompt, output within max_tokens."""
    out = min(output, int(sent(request)["max_tokens"]))
    return {"prompt_tokens": 8, "completion_tokens": out, "total_tokens": 8 + out}


def tool_calls(*calls: tuple[Any, Any]) -> dict[str, Any]:
    """An assistant message asking for tools; names and raw argument strings as given."""
    return {
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{i}_{time.monotonic_ns()}",
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            for i, (name, arguments) in enumerate(calls)
        ],
    }


FINAL = {"content": json.dumps({"summary": "Nothing stood out.", "findings": []})}
TOOL = "channel_performance"
ARGS = json.dumps({"start": "2026-11-01", "end": "2026-11-15"})


def _with_usage(make_usage: Callable[[httpx.Request], dict[str, Any] | None]) -> Reply:
    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=completion(FINAL, make_usage(request)))

    return reply


def _message(message: dict[str, Any]) -> Reply:
    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=completion(message, honest_usage(request)))

    return reply


def _raw(text: str, content_type: str = "application/json") -> Reply:
    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=text.encode(), headers={"content-type": content_type})

    return reply


def _error(status: int) -> Reply:
    def reply(request: httpx.Request) -> httpx.Response:
        body = {"error": {"message": "hostile", "type": "server_error", "code": None}}
        return httpx.Response(status, json=body, headers={"retry-after": "0"})

    return reply


def _ten_choices(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=completion(FINAL, honest_usage(request), choices=10))


def _truncated(request: httpx.Request) -> httpx.Response:
    text = json.dumps(completion(FINAL, honest_usage(request)))
    return httpx.Response(
        200, content=text[: len(text) // 2].encode(), headers={"content-type": "application/json"}
    )


def _streaming_shaped(request: httpx.Request) -> httpx.Response:
    chunk = json.dumps(completion(FINAL, honest_usage(request)))
    text = f"data: {chunk}\n\ndata: [DONE]\n\n"
    return httpx.Response(200, content=text.encode(), headers={"content-type": "text/event-stream"})


def _nested(depth: int) -> str:
    return '{"start": ' * depth + '"2026-11-01"' + "}" * depth


def _max_tokens(request: httpx.Request) -> int:
    return int(sent(request)["max_tokens"])


USAGE_LIES: dict[str, Callable[[httpx.Request], dict[str, Any] | None]] = {
    "output_100x_max_tokens": lambda r: {
        "prompt_tokens": 8, "completion_tokens": 100 * _max_tokens(r)
    },
    "output_a_billion": lambda r: {"prompt_tokens": 8, "completion_tokens": 1_000_000_000},
    "input_10e15": lambda r: {"prompt_tokens": 10**15, "completion_tokens": 1},
    "both_10e15": lambda r: {"prompt_tokens": 10**15, "completion_tokens": 10**15},
    "negative": lambda r: {"prompt_tokens": -5, "completion_tokens": -1},
    "negative_output": lambda r: {"prompt_tokens": 8, "completion_tokens": -100},
    "fractional": lambda r: {"prompt_tokens": 8.5, "completion_tokens": 2.25},
    "strings": lambda r: {"prompt_tokens": "8", "completion_tokens": "999999"},
    "nulls": lambda r: {"prompt_tokens": None, "completion_tokens": None},
    "missing_output": lambda r: {"prompt_tokens": 8},
    "booleans": lambda r: {"prompt_tokens": True, "completion_tokens": True},
    "total_only": lambda r: {"total_tokens": 10**12},
    "no_usage": lambda r: None,
    "empty_usage": lambda r: {},
    "zeros": lambda r: {"prompt_tokens": 0, "completion_tokens": 0},
}  # fmt: skip

BODY_LIES: dict[str, Reply] = {
    "ten_choices": _ten_choices,
    "malformed_json": _raw("{not json at all"),
    "truncated_json": _truncated,
    "streaming_shaped": _streaming_shaped,
    "empty_body": _raw(""),
    "html": _raw("<html>gateway timeout</html>", "text/html"),
    "http_429": _error(429),
    "http_500": _error(500),
}

TOOL_LIES: dict[str, Reply] = {
    "tool_call_flood": _message(tool_calls(*[(TOOL, ARGS)] * 60)),
    "null_arguments": _message(tool_calls((TOOL, None))),
    "null_name": _message(tool_calls((None, ARGS))),
    "unknown_tool": _message(tool_calls(("drop_tables", ARGS))),
    "bad_json_arguments": _message(tool_calls((TOOL, "{start: tomorrow"))),
    "nested_arguments": _message(tool_calls((TOOL, _nested(500)))),
    "array_arguments": _message(tool_calls((TOOL, "[1, 2, 3]"))),
    "honest_tool_call": _message(tool_calls((TOOL, ARGS))),
}

CATALOGUE: dict[str, Reply] = {
    **{f"usage:{name}": _with_usage(lie) for name, lie in USAGE_LIES.items()},
    **{f"body:{name}": reply for name, reply in BODY_LIES.items()},
    **{f"tools:{name}": reply for name, reply in TOOL_LIES.items()},
    "honest_final": _with_usage(honest_usage),
}


def scripted(names: list[str]) -> Reply:
    """A provider answering each request with the next lie of `names` (then honest finals)."""
    position = {"n": 0}

    def reply(request: httpx.Request) -> httpx.Response:
        n = position["n"]
        position["n"] += 1
        return CATALOGUE[names[n] if n < len(names) else "honest_final"](request)

    return reply
