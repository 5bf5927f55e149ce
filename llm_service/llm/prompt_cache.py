"""Prompt caching on purpose: mark the stable prefix where a provider caches only when asked.

Every prompt keeps its stable part first and byte-identical between steps (tool schemas, the
system prompt; the per-step limits note comes last), so OpenAI and Gemini, which cache prefixes
by themselves, reuse it. Anthropic caches only up to a `cache_control` breakpoint: one is put at
the end of the leading system prompt, which caches the tool schemas and the system prompt (its
prefix order is tools, system, messages). A request so marked may write the cache, which is
billed above the base input rate, so its reservation is priced at the cache-write rate.
"""

from __future__ import annotations

from typing import Any, Final

CACHE_CONTROL: Final = {"type": "ephemeral"}
BREAKPOINT_PROVIDERS: Final = frozenset({"anthropic"})
"""Providers (litellm's names) that cache a prompt only up to a `cache_control` breakpoint."""


def mark_stable_prefix(
    messages: list[dict[str, Any]], provider: str
) -> tuple[list[dict[str, Any]], bool]:
    """(messages to send, whether a breakpoint was placed): the input list is never mutated."""
    if provider not in BREAKPOINT_PROVIDERS:
        return messages, False
    last_system: int | None = None
    for index, message in enumerate(messages):
        if message.get("role") != "system":
            break
        last_system = index
    if last_system is None:
        return messages, False
    message = messages[last_system]
    content = message.get("content")
    if isinstance(content, str) and content:
        blocks: list[Any] = [{"type": "text", "text": content, "cache_control": CACHE_CONTROL}]
    elif isinstance(content, list) and content and isinstance(content[-1], dict):
        blocks = [*content[:-1], {**content[-1], "cache_control": CACHE_CONTROL}]
    else:
        return messages, False
    marked = list(messages)
    marked[last_system] = {**message, "content": blocks}
    return marked, True
