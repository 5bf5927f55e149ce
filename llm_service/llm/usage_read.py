"""Usage read as the provider bills it: litellm's usage object, kind of token by kind.

litellm normalises every provider's reply into one usage object: `prompt_tokens` is ALL the input
(for Anthropic it adds `cache_read_input_tokens` and `cache_creation_input_tokens` to
`input_tokens`; OpenAI and Gemini count cached tokens inside the prompt already), the cached
part is `prompt_tokens_details.cached_tokens` (OpenAI's `cached_tokens`, Anthropic's
`cache_read_input_tokens`, Gemini's `cachedContentTokenCount`), cache writes are
`prompt_tokens_details.cache_creation_tokens` / `cache_creation_input_tokens` (Anthropic only),
and `completion_tokens` includes reasoning and audio tokens. Nothing here is believed yet: the
counts are evidence, judged against the call's bounds by budgets.usage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from budgets.usage import KindCost, UsageDetails
from llm_service.input_rules import storable

_RAW_USAGE_LIMIT: Final = 2_000


@dataclass(frozen=True)
class ProviderUsage:
    """The usage a provider reported, as it came: evidence, judged before it is billed."""

    input_tokens: object
    output_tokens: object
    details: UsageDetails = field(default_factory=UsageDetails)
    raw: dict[str, Any] | None = None


def completion_usage(response: Any) -> ProviderUsage | None:
    """The reply's usage with every separately billed kind, or None if it reported none."""
    usage = getattr(response, "usage", None)
    if usage is None:
        return None
    prompt = getattr(usage, "prompt_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    if prompt is None and completion is None:
        return None
    if prompt == 0 and completion == 0 and type(prompt) is int and type(completion) is int:
        return None  # litellm fills zeros when the provider sent no usage at all
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    details = UsageDetails(
        cache_read=_first(
            _field(prompt_details, "cached_tokens"), _field(usage, "cache_read_input_tokens")
        ),
        cache_write=_first(
            _field(prompt_details, "cache_creation_tokens"),
            _field(usage, "cache_creation_input_tokens"),
        ),
        input_audio=_first(_field(prompt_details, "audio_tokens")),
        reasoning=_first(_field(completion_details, "reasoning_tokens")),
        output_audio=_first(_field(completion_details, "audio_tokens")),
    )
    return ProviderUsage(prompt, completion, details, raw_usage(usage))


def breakdown_json(kinds: tuple[KindCost, ...]) -> dict[str, Any] | None:
    """The ledger row's per-kind breakdown: tokens, rate, exact cost and uncached cost in cents."""
    if not kinds:
        return None
    return {
        k.kind: {
            "tokens": k.tokens,
            "rate_usd": _fixed(k.rate_usd),
            "cost_cents": _fixed(k.cost_usd.scaleb(2)),
            "uncached_cents": _fixed(k.uncached_usd.scaleb(2)),
            "rate_known": k.rate_known,
        }
        for k in kinds
    }


def raw_usage(usage: Any) -> dict[str, Any]:
    """The provider's usage object as storable JSON evidence (no NaN, NUL or lone surrogate),
    capped in size."""
    try:
        raw = usage.model_dump() if hasattr(usage, "model_dump") else dict(usage)
        text = storable(json.dumps(raw, default=str, allow_nan=False))
    except (TypeError, ValueError, RecursionError):
        return {"unreadable": storable(repr(usage))[:_RAW_USAGE_LIMIT]}
    if len(text) > _RAW_USAGE_LIMIT:
        return {"truncated": True, "head": text[:_RAW_USAGE_LIMIT]}
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def _field(obj: Any, name: str) -> object:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _first(*values: object) -> object:
    """The first reported value (0 when none is): a malformed one is kept, to be judged."""
    for value in values:
        if value is not None:
            return value
    return 0


def _fixed(value: Decimal) -> str:
    return format(value.normalize(), "f") if value != 0 else "0"
