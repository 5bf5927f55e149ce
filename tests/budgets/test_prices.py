"""The price book, built from litellm's real bundled price map."""

from __future__ import annotations

import copy
import os
from decimal import Decimal
from typing import Any

import pytest

from budgets.estimate import actual_cost
from budgets.money import usd_to_cents
from budgets.prices import (
    ModelPrice,
    PriceBook,
    UnpricedModelError,
    parse_price_overrides,
)

PER_MILLION = Decimal(1_000_000)


@pytest.fixture(scope="module")
def model_cost() -> dict[str, Any]:
    """litellm's bundled map: the env var must be set before litellm is first imported."""
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm

    return copy.deepcopy(dict(litellm.model_cost))


@pytest.fixture(scope="module")
def book(model_cost: dict[str, Any]) -> PriceBook:
    return PriceBook(model_cost)


def test_gpt_4o_mini_costs_015_and_060_per_million(book: PriceBook) -> None:
    price = book.price_for("gpt-4o-mini")
    assert price.input_per_token * PER_MILLION == Decimal("0.15")
    assert price.output_per_token * PER_MILLION == Decimal("0.60")
    assert price.input_per_token == Decimal("1.5E-7")  # exact, not a binary float
    assert price.provider == "openai"
    assert price.tokenizer_exact is True
    assert price.max_output_tokens == 16384


def test_provider_prefixed_names_resolve(book: PriceBook) -> None:
    mini = book.price_for("openai/gpt-4o-mini")
    assert mini.model == "openai/gpt-4o-mini"
    assert mini.source == "litellm:gpt-4o-mini"
    assert mini.input_per_token == Decimal("1.5E-7")

    haiku = book.price_for("anthropic/claude-haiku-4-5")
    assert haiku.source == "litellm:claude-haiku-4-5"
    assert (haiku.input_per_token, haiku.output_per_token) == (Decimal("1E-6"), Decimal("5E-6"))
    assert haiku.provider == "anthropic"
    assert haiku.tokenizer_exact is False

    flash = book.price_for("gemini/gemini-2.5-flash")  # the map's key is itself prefixed
    assert flash.source == "litellm:gemini/gemini-2.5-flash"
    assert flash.output_per_token * PER_MILLION == Decimal("2.50")
    assert flash.tokenizer_exact is False


def test_provider_hint_tries_provider_slash_name(book: PriceBook) -> None:
    # "gemini-2.5-pro" bare is Vertex AI's entry; with the hint the Gemini API entry is found.
    assert book.price_for("gemini-2.5-pro").provider == "vertex_ai-language-models"
    price = book.price_for("gemini-2.5-pro", provider="gemini")
    assert price.source == "litellm:gemini/gemini-2.5-pro"
    assert price.tiers and price.tiers[0].above_input_tokens == 200_000


def test_a_prefix_naming_another_provider_is_refused(book: PriceBook) -> None:
    with pytest.raises(UnpricedModelError, match="under provider 'openai', not 'anthropic'"):
        book.price_for("anthropic/gpt-4o-mini")


def test_unknown_model_is_refused_with_instructions(book: PriceBook) -> None:
    with pytest.raises(UnpricedModelError) as info:
        book.price_for("acme/brand-new-model")
    message = str(info.value)
    assert "LLM_PRICE_OVERRIDES" in message
    assert '"acme/brand-new-model"' in message
    assert info.value.model == "acme/brand-new-model"
    assert isinstance(info.value, ValueError)


def test_zero_priced_and_price_less_entries_are_unpriced(book: PriceBook) -> None:
    # litellm lists Cohere's command-a-plus at 0/0: a missing price, not a free model.
    with pytest.raises(UnpricedModelError, match="both prices as 0"):
        book.price_for("command-a-plus-05-2026")
    # Range-tiered entries carry no flat per-token price.
    with pytest.raises(UnpricedModelError, match="no usable input_cost_per_token"):
        book.price_for("dashscope/qwen3-max")
    assert not book.is_priced("sample_spec")


def test_explicit_zero_override_is_a_price(model_cost: dict[str, Any]) -> None:
    zero = (Decimal(0), Decimal(0))
    book = PriceBook(model_cost, {"ollama/llama3.1": zero, "command-a-plus-05-2026": zero})
    local = book.price_for("ollama/llama3.1")
    assert (local.input_per_token, local.output_per_token) == zero
    assert local.source == "override:ollama/llama3.1"
    assert local.tokenizer_exact is False
    assert actual_cost(local, 1000, 1000) == 0
    assert book.price_for("command-a-plus-05-2026").input_per_token == 0


def test_overrides_take_precedence(model_cost: dict[str, Any]) -> None:
    book = PriceBook(model_cost, {"gpt-4o-mini": (Decimal("1E-6"), Decimal("2E-6"))})
    for name in ("gpt-4o-mini", "openai/gpt-4o-mini"):
        price = book.price_for(name)
        assert price.input_per_token == Decimal("1E-6")
        assert price.tokenizer_exact is True  # litellm knows it as an OpenAI model
        assert price.max_output_tokens == 16384


def test_mutating_the_source_map_later_changes_nothing(model_cost: dict[str, Any]) -> None:
    source = copy.deepcopy(model_cost)
    overrides = {"x/y": (Decimal("1E-6"), Decimal("1E-6"))}
    book = PriceBook(source, overrides)
    before = book.price_for("gpt-4o-mini")
    source["gpt-4o-mini"]["input_cost_per_token"] = 0.0
    source["gpt-4o-mini"]["output_cost_per_token"] = 0.0
    del source["claude-haiku-4-5"]
    source["acme/new"] = {"input_cost_per_token": 1.0, "output_cost_per_token": 1.0}
    overrides["x/y"] = (Decimal(0), Decimal(0))
    assert book.price_for("gpt-4o-mini") == before
    assert book.price_for("anthropic/claude-haiku-4-5").input_per_token == Decimal("1E-6")
    assert not book.is_priced("acme/new")
    assert book.price_for("x/y").input_per_token == Decimal("1E-6")


def test_one_token_costs_exactly_and_not_zero(book: PriceBook) -> None:
    price = book.price_for("openai/gpt-4o-mini")
    cost = actual_cost(price, 1, 0)
    assert cost == Decimal("1.5E-7")
    assert cost > 0
    assert usd_to_cents(cost) == Decimal("0.000015")


def test_require_names_every_unpriced_model(book: PriceBook) -> None:
    prices = book.require(["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"])
    assert set(prices) == {"openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"}
    with pytest.raises(UnpricedModelError) as info:
        book.require(["openai/gpt-4o-mini", "acme/a", "acme/b"])
    assert set(info.value.problems) == {"acme/a", "acme/b"}


def test_entries_missing_a_price_or_holding_none_are_unpriced() -> None:
    book = PriceBook(
        {
            "a": {"input_cost_per_token": 1e-6, "litellm_provider": "x"},
            "b": {"input_cost_per_token": None, "output_cost_per_token": 1e-6},
            "c": {"input_cost_per_token": -1e-6, "output_cost_per_token": 1e-6},
            "d": {"input_cost_per_token": float("nan"), "output_cost_per_token": 1e-6},
            "e": {"input_cost_per_token": "1e-6", "output_cost_per_token": 1e-6},
            "ok": {"input_cost_per_token": 1e-6, "output_cost_per_token": 0},
        }
    )
    for name in "abcde":
        assert not book.is_priced(name), name
    assert book.price_for("ok").output_per_token == 0


def test_bad_overrides_are_refused() -> None:
    with pytest.raises(TypeError):
        PriceBook({}, {"m": (0.1, 0.2)})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        PriceBook({}, {"m": (Decimal("-1"), Decimal(0))})
    with pytest.raises(ValueError):
        PriceBook({}, {"m": (Decimal("NaN"), Decimal(0))})


def test_parse_price_overrides_is_exact() -> None:
    parsed = parse_price_overrides('{"m": [0.00000015, 6e-7], "free": [0, 0], "s": ["1E-6", 0]}')
    assert parsed == {
        "m": (Decimal("1.5E-7"), Decimal("6E-7")),
        "free": (Decimal(0), Decimal(0)),
        "s": (Decimal("1E-6"), Decimal(0)),
    }
    assert parse_price_overrides("") == {}
    for bad in ("[1, 2]", '{"m": [1]}', '{"m": [-1, 0]}', "{not json"):
        with pytest.raises(ValueError):
            parse_price_overrides(bad)


def test_model_price_validates_itself() -> None:
    with pytest.raises(ValueError):
        ModelPrice("m", Decimal("-1"), Decimal(0), "p", None, False)
