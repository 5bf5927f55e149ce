"""Per-token prices: litellm's price map plus operator overrides, frozen, failing closed.

Name resolution (`PriceBook.price_for`). litellm's map keys are sometimes bare ("gpt-4o-mini",
"claude-haiku-4-5") and sometimes prefixed ("gemini/gemini-2.5-flash", "azure/gpt-4o-mini"),
while the service names models the litellm way ("openai/gpt-4o-mini"). Candidates, in order:

1. the exact name as given ("gemini/gemini-2.5-flash", "gpt-4o-mini");
2. for "provider/name", the name without the prefix ("openai/gpt-4o-mini" -> "gpt-4o-mini"),
   accepted only if the entry's `litellm_provider` is that provider (or its family: "vertex_ai"
   covers "vertex_ai-anthropic_models", "bedrock" covers "bedrock_converse"), so that
   "anthropic/gpt-4o-mini" is refused rather than priced as OpenAI's model, as litellm does;
3. for a bare name with an explicit `provider=` hint, "provider/name".

The first candidate that exists decides: if its entry has no usable price the model is unpriced,
even if a later candidate has one (never borrow another model's price). Overrides are looked up
under the same candidates first, without the provider check (the operator said so explicitly).

Fail closed: an entry lacking either per-token price, holding None, a negative or non-numeric
value, or listing BOTH prices as zero (litellm's map uses 0/0 for prices it does not know, e.g.
Cohere's command-a-plus) is unpriced. An explicit zero in an override is a real price.

Kinds of token. Providers bill cached reads, cache writes, audio and reasoning tokens at their own
rates (KIND_FIELDS names litellm's fields). A kind the map has no rate for is not free: it is
billed at the dearest known rate of its direction (`dearest_rate`) and flagged (budgets.usage).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final

PRICE_OVERRIDES_ENV: Final = "LLM_PRICE_OVERRIDES"
"""The environment variable operators use to price a model: {"model": [input, output]} USD/token."""

EXACT_TOKENIZER_PROVIDERS: Final = frozenset({"openai"})
"""Providers whose token counts litellm computes exactly (tiktoken); all others are approximate."""

_TIER_KEY: Final = re.compile(r"^(input|output)_cost_per_token_above_(\d+)(k?)_tokens$")
_KIND_TIER_KEY: Final = re.compile(
    r"^(cache_read_input_token_cost|cache_creation_input_token_cost)_above_(\d+)(k?)_tokens$"
)

INPUT_KINDS: Final = ("input", "cache_read", "cache_write", "input_audio")
"""Kinds of input token a provider bills separately ("input" is uncached text)."""
OUTPUT_KINDS: Final = ("output", "reasoning", "output_audio")
"""Kinds of output token ("output" is text; reasoning and audio are parts of the output count)."""

# litellm's field for each kind beyond plain input and output (the pinned map's names).
KIND_FIELDS: Final = MappingProxyType(
    {
        "cache_read": "cache_read_input_token_cost",
        "cache_write": "cache_creation_input_token_cost",
        "input_audio": "input_cost_per_audio_token",
        "reasoning": "output_cost_per_reasoning_token",
        "output_audio": "output_cost_per_audio_token",
    }
)
_FIELD_KINDS: Final = {
    "cache_read_input_token_cost": "cache_read",
    "cache_creation_input_token_cost": "cache_write",
}
_IGNORED_KEYS: Final = frozenset({"sample_spec"})  # litellm's documentation entry, not a model


@dataclass(frozen=True, slots=True)
class PriceTier:
    """Prices that apply to the whole call once the prompt reaches `above_input_tokens` tokens."""

    above_input_tokens: int
    input_per_token: Decimal
    output_per_token: Decimal
    kind_rates: tuple[tuple[str, Decimal], ...] = ()


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """What one model costs, in USD per token, and how far its token counts can be trusted."""

    model: str
    input_per_token: Decimal
    output_per_token: Decimal
    provider: str
    max_output_tokens: int | None
    tokenizer_exact: bool
    tiers: tuple[PriceTier, ...] = ()
    source: str = ""
    kind_rates: tuple[tuple[str, Decimal], ...] = ()
    """Rates of the other billed kinds of token (see KIND_FIELDS) that the map lists."""

    def __post_init__(self) -> None:
        """Refuse prices that are not finite, non-negative Decimals."""
        _check_price(self.input_per_token, f"{self.model} input price")
        _check_price(self.output_per_token, f"{self.model} output price")
        for tier in self.tiers:
            _check_price(tier.input_per_token, f"{self.model} tier input price")
            _check_price(tier.output_per_token, f"{self.model} tier output price")
            for kind, rate in tier.kind_rates:
                _check_price(rate, f"{self.model} tier {kind} price")
        for kind, rate in self.kind_rates:
            if kind not in KIND_FIELDS:
                raise ValueError(f"{self.model}: unknown kind of token {kind!r}")
            _check_price(rate, f"{self.model} {kind} price")

    def rates_for(self, input_tokens: int, *, billed: bool = False) -> tuple[Decimal, Decimal]:
        """(input, output) USD per token for a prompt of this size: never below the base rates.

        A tier applies above its threshold when billing (as the providers bill: a prompt of
        exactly 200,000 tokens is at the base rate), and from it inclusive for a worst case.
        """
        rate_in, rate_out = self.input_per_token, self.output_per_token
        for tier in self.tiers:
            if _in_tier(input_tokens, tier.above_input_tokens, billed):
                rate_in = max(rate_in, tier.input_per_token)
                rate_out = max(rate_out, tier.output_per_token)
        return rate_in, rate_out

    def kind_rate(self, kind: str, input_tokens: int, *, billed: bool = False) -> Decimal | None:
        """USD per token of one kind for a prompt of this size, or None if the map has none.

        "input" and "output" are the base (tiered) rates; a tier's rate for a kind applies from
        its threshold like the base tiers, never below the kind's base rate.
        """
        rate_in, rate_out = self.rates_for(input_tokens, billed=billed)
        if kind == "input":
            return rate_in
        if kind == "output":
            return rate_out
        rate = dict(self.kind_rates).get(kind)
        if rate is None:
            return None
        for tier in self.tiers:
            tiered = dict(tier.kind_rates).get(kind)
            if tiered is not None and _in_tier(input_tokens, tier.above_input_tokens, billed):
                rate = max(rate, tiered)
        return rate

    def dearest_rate(self, direction: str, input_tokens: int, *, billed: bool = False) -> Decimal:
        """The dearest known rate of a direction ("input" or "output"): an unpriced kind's rate."""
        kinds = INPUT_KINDS if direction == "input" else OUTPUT_KINDS
        rates = [self.kind_rate(kind, input_tokens, billed=billed) for kind in kinds]
        return max(rate for rate in rates if rate is not None)

    def reservation_rates(
        self, input_tokens: int, *, cache_writes: bool
    ) -> tuple[Decimal, Decimal]:
        """(input, output) rates a worst case is priced at: no cache hit, and where the request
        can write the cache, every input token at the dearer of base and cache-write rate; every
        output token at the dearest output rate (reasoning and audio tokens are output too)."""
        rate_in, _ = self.rates_for(input_tokens)
        if cache_writes:
            write = self.kind_rate("cache_write", input_tokens)
            rate_in = max(
                rate_in, write if write is not None else self.dearest_rate("input", input_tokens)
            )
        return rate_in, self.dearest_rate("output", input_tokens)


def _in_tier(input_tokens: int, threshold: int, billed: bool) -> bool:
    return input_tokens > threshold if billed else input_tokens >= threshold


class UnpricedModelError(ValueError):
    """A model has no trustworthy price, so no call to it may be made under a cost ceiling."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        """Build the message from {model: why it is unpriced}."""
        self.problems: dict[str, str] = dict(problems)
        example = next(iter(self.problems), "my-model")
        lines = [f"  {name}: {why}" for name, why in self.problems.items()]
        head = (
            f"no price for model {example!r}"
            if len(self.problems) == 1
            else f"no price for {len(self.problems)} models"
        )
        super().__init__(
            f"{head} (calls to an unpriced model are refused, never treated as free):\n"
            + "\n".join(lines)
            + f"\nConfigure a price in USD per token (input, output), e.g. {PRICE_OVERRIDES_ENV}="
            + f"'{{\"{example}\": [0.00000015, 0.0000006]}}'. "
            + "An explicit 0 is accepted (e.g. a local model)."
        )

    @property
    def model(self) -> str:
        """The first unpriced model."""
        return next(iter(self.problems))


@dataclass(frozen=True, slots=True)
class _Meta:
    provider: str | None
    max_output_tokens: int | None


class PriceBook:
    """Prices frozen at construction: later changes to the source map cannot move a ceiling."""

    def __init__(
        self,
        model_cost: Mapping[str, Any] | None = None,
        overrides: Mapping[str, tuple[Decimal, Decimal]] | None = None,
    ) -> None:
        """Copy and validate a litellm-style price map and operator overrides (which win)."""
        meta: dict[str, _Meta] = {}
        priced: dict[str, ModelPrice] = {}
        unpriced: dict[str, str] = {}
        for key, entry in dict(model_cost or {}).items():
            if not isinstance(key, str) or key in _IGNORED_KEYS or not isinstance(entry, Mapping):
                continue
            entry = dict(entry)
            meta[key] = _Meta(_provider_of(entry), _positive_int(entry.get("max_output_tokens")))
            price = _price_from_entry(key, entry, meta[key])
            if isinstance(price, str):
                unpriced[key] = price
            else:
                priced[key] = price
        checked: dict[str, tuple[Decimal, Decimal]] = {}
        for name, pair in dict(overrides or {}).items():
            checked[str(name)] = _check_override(str(name), pair)
        self._meta: Mapping[str, _Meta] = MappingProxyType(meta)
        self._priced: Mapping[str, ModelPrice] = MappingProxyType(priced)
        self._unpriced: Mapping[str, str] = MappingProxyType(unpriced)
        self._overrides: Mapping[str, tuple[Decimal, Decimal]] = MappingProxyType(checked)

    def price_for(self, model: str, *, provider: str | None = None) -> ModelPrice:
        """The price of `model` (see the module docstring for name resolution); fail closed."""
        candidates = _candidates(model, provider)
        for key, _ in candidates:
            if key in self._overrides:
                return self._override_price(model, key, candidates)
        mismatches: list[str] = []
        for key, required in candidates:
            if key not in self._meta:
                continue
            found = self._meta[key].provider
            if required is not None and not _provider_matches(found, required):
                mismatches.append(
                    f"litellm lists {key!r} under provider {found!r}, not {required!r}"
                )
                continue
            if key in self._unpriced:
                raise UnpricedModelError({model: f"litellm's entry {key!r} {self._unpriced[key]}"})
            return replace(self._priced[key], model=model)
        tried = ", ".join(repr(k) for k, _ in candidates)
        detail = (
            "; ".join(mismatches) if mismatches else f"not in litellm's price map (tried {tried})"
        )
        raise UnpricedModelError({model: detail})

    def is_priced(self, model: str, *, provider: str | None = None) -> bool:
        """Whether `price_for(model)` would succeed."""
        try:
            self.price_for(model, provider=provider)
        except UnpricedModelError:
            return False
        return True

    def require(self, models: Iterable[str]) -> dict[str, ModelPrice]:
        """Price every model at start-up; raise one UnpricedModelError naming all that fail."""
        prices: dict[str, ModelPrice] = {}
        problems: dict[str, str] = {}
        for model in models:
            try:
                prices[model] = self.price_for(model)
            except UnpricedModelError as exc:
                problems.update(exc.problems)
        if problems:
            raise UnpricedModelError(problems)
        return prices

    def _override_price(
        self, model: str, key: str, candidates: list[tuple[str, str | None]]
    ) -> ModelPrice:
        rate_in, rate_out = self._overrides[key]
        provider: str | None = None
        max_output: int | None = None
        known = False
        for name, required in candidates:
            meta = self._meta.get(name)
            if meta is not None and (
                required is None or _provider_matches(meta.provider, required)
            ):
                provider, max_output, known = meta.provider, meta.max_output_tokens, True
                break
        if provider is None:
            provider = candidates[-1][1] or "unknown"
        return ModelPrice(
            model=model,
            input_per_token=rate_in,
            output_per_token=rate_out,
            provider=provider,
            max_output_tokens=max_output,
            # Only a model litellm knows as an OpenAI model is counted exactly.
            tokenizer_exact=known and provider in EXACT_TOKENIZER_PROVIDERS,
            source=f"override:{key}",
        )


def parse_price_overrides(text: str) -> dict[str, tuple[Decimal, Decimal]]:
    """Parse LLM_PRICE_OVERRIDES JSON ({"model": [input, output]}) exactly, without floats."""
    if not text.strip():
        return {}
    try:
        raw = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{PRICE_OVERRIDES_ENV} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f'{PRICE_OVERRIDES_ENV} must be a JSON object {{"model": [in, out]}}')
    out: dict[str, tuple[Decimal, Decimal]] = {}
    for name, pair in raw.items():
        if isinstance(pair, list) and len(pair) == 2:
            pair = tuple(Decimal(p) if isinstance(p, str) else p for p in pair)
        out[name] = _check_override(name, pair)
    return out


def _candidates(model: str, provider: str | None) -> list[tuple[str, str | None]]:
    """(map key, provider it must belong to or None) in lookup order."""
    out: list[tuple[str, str | None]] = [(model, provider)]
    if "/" in model:
        prefix, bare = model.split("/", 1)
        if prefix and bare:
            out.append((bare, prefix))
    elif provider:
        out.append((f"{provider}/{model}", provider))
    return out


def _provider_matches(found: str | None, required: str) -> bool:
    if found is None or found == required:
        return True  # litellm treats an entry without a provider as provider-neutral
    if found.startswith(required + "-"):  # vertex_ai -> vertex_ai-anthropic_models
        return True
    return required.startswith("bedrock") and found.startswith("bedrock")


def _provider_of(entry: Mapping[str, Any]) -> str | None:
    value = entry.get("litellm_provider")
    return value if isinstance(value, str) and value else None


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def _to_price(value: Any) -> Decimal | None:
    """A map value as an exact Decimal (floats via their shortest repr), or None if unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        price = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            return None
        price = Decimal(str(value))
    elif isinstance(value, Decimal):
        price = value
    else:
        return None
    if not price.is_finite() or price < 0:
        return None
    return price


def _price_from_entry(key: str, entry: Mapping[str, Any], meta: _Meta) -> ModelPrice | str:
    """A ModelPrice, or the reason the entry is unpriced."""
    rate_in = _to_price(entry.get("input_cost_per_token"))
    rate_out = _to_price(entry.get("output_cost_per_token"))
    if rate_in is None or rate_out is None:
        missing = [
            field
            for field, rate in (
                ("input_cost_per_token", rate_in),
                ("output_cost_per_token", rate_out),
            )
            if rate is None
        ]
        return f"has no usable {' or '.join(missing)}"
    if rate_in == 0 and rate_out == 0:
        return "lists both prices as 0 (litellm's placeholder for an unknown price)"
    return ModelPrice(
        model=key,
        input_per_token=rate_in,
        output_per_token=rate_out,
        provider=meta.provider or "unknown",
        max_output_tokens=meta.max_output_tokens,
        tokenizer_exact=meta.provider in EXACT_TOKENIZER_PROVIDERS,
        tiers=_tiers_from_entry(entry),
        source=f"litellm:{key}",
        kind_rates=_kind_rates_from_entry(entry),
    )


def _kind_rates_from_entry(entry: Mapping[str, Any]) -> tuple[tuple[str, Decimal], ...]:
    """The usable rates of the other billed kinds of token (an unusable one stays unpriced)."""
    found = ((kind, _to_price(entry.get(field))) for kind, field in KIND_FIELDS.items())
    return tuple((kind, rate) for kind, rate in found if rate is not None)


def _tiers_from_entry(entry: Mapping[str, Any]) -> tuple[PriceTier, ...]:
    """Standard-service-tier prices above a prompt size ("..._above_200k_tokens")."""
    found: dict[int, dict[str, Decimal]] = {}
    kinds: dict[int, dict[str, Decimal]] = {}
    for field, value in entry.items():
        match = _TIER_KEY.match(field) if isinstance(field, str) else None
        kind_match = _KIND_TIER_KEY.match(field) if isinstance(field, str) else None
        rate = _to_price(value) if match or kind_match else None
        if rate is None:
            continue
        if kind_match is not None:
            threshold = int(kind_match.group(2)) * (1000 if kind_match.group(3) else 1)
            kinds.setdefault(threshold, {})[_FIELD_KINDS[kind_match.group(1)]] = rate
            found.setdefault(threshold, {})
            continue
        assert match is not None
        threshold = int(match.group(2)) * (1000 if match.group(3) else 1)
        found.setdefault(threshold, {})[match.group(1)] = rate
    base_in = _to_price(entry.get("input_cost_per_token")) or Decimal(0)
    base_out = _to_price(entry.get("output_cost_per_token")) or Decimal(0)
    return tuple(
        PriceTier(
            above_input_tokens=threshold,
            input_per_token=rates.get("input", base_in),
            output_per_token=rates.get("output", base_out),
            kind_rates=tuple(sorted(kinds.get(threshold, {}).items())),
        )
        for threshold, rates in sorted(found.items())
    )


def _check_price(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, Decimal):
        raise TypeError(f"{what} must be a Decimal, not {type(value).__name__}")
    if not value.is_finite() or value < 0:
        raise ValueError(f"{what} must be a finite, non-negative amount, got {value}")


def _check_override(name: str, pair: Any) -> tuple[Decimal, Decimal]:
    if not isinstance(pair, tuple | list) or len(pair) != 2:
        raise ValueError(
            f"price override for {name!r} must be [input_usd_per_token, output_usd_per_token]"
        )
    rates: list[Decimal] = []
    for value in pair:
        if isinstance(value, int) and not isinstance(value, bool):
            value = Decimal(value)
        _check_price(value, f"price override for {name!r}")
        rates.append(value)
    return rates[0], rates[1]
