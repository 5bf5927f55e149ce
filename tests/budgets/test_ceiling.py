"""The per-run hard ceiling: reservations, settlement, the wrap-up reserve, learning."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from budgets.ceiling import DEFAULT_RUN_LIMIT, CeilingReached, Reservation, RunCeiling
from budgets.estimate import actual_cost, worst_case_cost
from budgets.prices import ModelPrice

MINI = ModelPrice("openai/gpt-4o-mini", Decimal("1.5E-7"), Decimal("6E-7"), "openai", 16384, True)
GPT4O = ModelPrice("openai/gpt-4o", Decimal("2.5E-6"), Decimal("0.00001"), "openai", 16384, True)
HAIKU = ModelPrice(
    "anthropic/claude-haiku-4-5", Decimal("1E-6"), Decimal("5E-6"), "anthropic", 64000, False
)
SONNET = ModelPrice(
    "anthropic/claude-sonnet-4-5", Decimal("3E-6"), Decimal("0.000015"), "anthropic", 64000, False
)
FLASH = ModelPrice(
    "gemini/gemini-2.5-flash", Decimal("3E-7"), Decimal("2.5E-6"), "gemini", 65536, False
)
PRICES = [MINI, GPT4O, HAIKU, SONNET, FLASH]

# The documented worst input under-count per tokenizer kind (the ceiling's assumptions).
UNDERCOUNT = {True: Decimal("0.02"), False: Decimal("0.30")}


def test_a_call_that_fits_gets_what_it_asked_for() -> None:
    ceiling = RunCeiling(DEFAULT_RUN_LIMIT)
    res = ceiling.reserve(SONNET, 2000, 1000)
    assert res.max_tokens == 1000
    assert res.input_tokens_reserved == 2600  # approximate tokenizer: +30% from the first call
    assert res.amount_usd == worst_case_cost(SONNET, 2000, 1000, Decimal("0.30"))
    assert ceiling.reserved == res.amount_usd
    assert ceiling.remaining == DEFAULT_RUN_LIMIT - res.amount_usd
    assert ceiling.spent == 0


def test_exact_tokenizers_get_a_small_margin() -> None:
    res = RunCeiling(DEFAULT_RUN_LIMIT).reserve(MINI, 1000, 100)
    assert res.input_tokens_reserved == 1020


def test_max_tokens_shrinks_to_fit() -> None:
    ceiling = RunCeiling(Decimal("0.05"))
    res = ceiling.reserve(SONNET, 2000, 8000)
    # 0.05 - 2600 * 3e-6 = 0.0422 -> 2813 output tokens at 1.5e-5.
    assert res.max_tokens == 2813
    assert res.amount_usd <= Decimal("0.05")
    assert worst_case_cost(SONNET, 2000, 2814, Decimal("0.30")) > Decimal("0.05")


def test_max_tokens_is_capped_at_the_model_maximum() -> None:
    res = RunCeiling(Decimal(100)).reserve(MINI, 10, 100_000)
    assert res.max_tokens == 16384


def test_refuses_with_a_reason_when_too_few_tokens_fit() -> None:
    ceiling = RunCeiling(Decimal("0.01"))
    with pytest.raises(CeilingReached) as info:
        ceiling.reserve(SONNET, 3000, 1000)  # input alone: 3900 * 3e-6 = 0.0117
    reason = info.value.reason
    assert reason.startswith("next call to anthropic/claude-sonnet-4-5 needs at least $0.0127")
    assert "$0.0100 left of the $0.01 ceiling" in reason
    assert str(info.value) == reason
    assert info.value.needed_usd > info.value.available_usd
    assert ceiling.reserved == 0  # a refusal holds nothing


def test_refuses_when_fewer_than_min_output_tokens_fit() -> None:
    ceiling = RunCeiling(Decimal("0.001"))
    # 1000 input tokens at +2%: 0.000153; 0.000847 / 6e-7 = 1411 output tokens fit.
    assert ceiling.reserve(MINI, 1000, 5000, min_output_tokens=1400).max_tokens == 1411
    with pytest.raises(CeilingReached):
        ceiling.reserve(MINI, 1000, 5000, min_output_tokens=64)


def test_wanted_below_minimum_is_granted_when_it_fits() -> None:
    res = RunCeiling(DEFAULT_RUN_LIMIT).reserve(MINI, 100, 10, min_output_tokens=64)
    assert res.max_tokens == 10


def test_wrapup_reserve_is_kept_back_from_ordinary_calls() -> None:
    ceiling = RunCeiling(Decimal("0.10"), wrapup_reserve=Decimal("0.04"))
    assert ceiling.available() == Decimal("0.06")
    assert ceiling.available(for_wrapup=True) == Decimal("0.10")
    first = ceiling.reserve(SONNET, 1000, 10_000)
    assert first.amount_usd <= Decimal("0.06")
    ceiling.settle(first, 1000, first.max_tokens)
    with pytest.raises(CeilingReached, match=r"\$0\.0400 kept back for the wrap-up answer"):
        ceiling.reserve(SONNET, 1000, 1000)
    wrap = ceiling.reserve(SONNET, 1000, 1000, for_wrapup=True)
    assert wrap.for_wrapup and wrap.max_tokens == 1000
    ceiling.settle(wrap, 1100, 1000)
    assert ceiling.spent <= ceiling.limit


def test_wrapup_reserve_can_grow_with_the_conversation() -> None:
    ceiling = RunCeiling(DEFAULT_RUN_LIMIT)
    ceiling.set_wrapup_reserve(ceiling.worst_case(HAIKU, 20_000, 1500))
    assert ceiling.wrapup_reserve == Decimal("0.0335")
    with pytest.raises(ValueError):
        ceiling.set_wrapup_reserve(Decimal("0.31"))


def test_settle_replaces_the_reservation_with_the_actual_cost() -> None:
    ceiling = RunCeiling(DEFAULT_RUN_LIMIT)
    res = ceiling.reserve(MINI, 1000, 1000)
    cost = ceiling.settle(res, 990, 250)
    assert cost == Decimal("0.0002985")
    assert cost == actual_cost(MINI, 990, 250)
    assert ceiling.spent == cost
    assert ceiling.reserved == 0
    assert ceiling.remaining == DEFAULT_RUN_LIMIT - cost
    assert ceiling.overrun == 0
    with pytest.raises(ValueError, match="not outstanding"):
        ceiling.settle(res, 990, 250)


def test_release_returns_a_reservation() -> None:
    ceiling = RunCeiling(DEFAULT_RUN_LIMIT)
    res = ceiling.reserve(SONNET, 1000, 1000)
    ceiling.release(res)
    assert ceiling.spent == 0
    assert ceiling.reserved == 0
    assert ceiling.remaining == DEFAULT_RUN_LIMIT
    with pytest.raises(ValueError):
        ceiling.release(res)


def test_settle_unknown_counts_the_worst_case() -> None:
    ceiling = RunCeiling(DEFAULT_RUN_LIMIT)
    res = ceiling.reserve(SONNET, 1000, 1000)
    assert ceiling.settle_unknown(res) == res.amount_usd
    assert ceiling.spent == res.amount_usd
    assert ceiling.reserved == 0


def test_concurrent_reservations_share_what_is_left() -> None:
    ceiling = RunCeiling(Decimal("0.02"))
    first = ceiling.reserve(SONNET, 1000, 1000)  # 0.0039 + 0.015 = 0.0189
    second = ceiling.reserve(MINI, 100, 5000)  # squeezed into 0.0011
    assert second.max_tokens < 5000
    assert ceiling.reserved == first.amount_usd + second.amount_usd <= Decimal("0.02")
    with pytest.raises(CeilingReached):
        ceiling.reserve(MINI, 100, 100)


def test_learning_raises_the_margin_after_an_under_estimate() -> None:
    ceiling = RunCeiling(DEFAULT_RUN_LIMIT, max_input_undercount=Decimal("0.10"))
    assert ceiling.margin_for(HAIKU) == Decimal("0.10")
    res = ceiling.reserve(HAIKU, 1000, 100)
    assert res.input_tokens_reserved == 1100
    billed = ceiling.settle_reported(res, 1250, 100)  # the provider counted 25% more
    # Beyond the margin: billed at the reservation (never past it), and learned from.
    assert actual_cost(HAIKU, 1250, 100) > res.amount_usd
    assert billed.cost_usd == res.amount_usd and billed.anomaly is not None
    assert ceiling.spent == res.amount_usd and ceiling.overrun == 0
    assert ceiling.margin_for(HAIKU) == Decimal("0.30")  # 0.25 observed + 0.05
    assert ceiling.margin_for(SONNET) == Decimal("0.10")  # learned per model
    assert ceiling.reserve(HAIKU, 1000, 100).input_tokens_reserved == 1300


def test_no_learning_when_the_estimate_held() -> None:
    ceiling = RunCeiling(DEFAULT_RUN_LIMIT)
    res = ceiling.reserve(MINI, 1000, 100)
    ceiling.settle(res, 1020, 100)
    assert ceiling.margin_for(MINI) == Decimal("0.02")


def test_output_beyond_max_tokens_is_billed_at_the_reservation() -> None:
    ceiling = RunCeiling(DEFAULT_RUN_LIMIT)
    res = ceiling.reserve(MINI, 100, 100)
    billed = ceiling.settle_reported(res, 100, 5000)
    assert billed.cost_usd == res.amount_usd < actual_cost(MINI, 100, 5000)
    assert billed.anomaly is not None and "above the 100 granted" in billed.anomaly
    assert ceiling.overrun == 0
    assert ceiling.margin_for(MINI) == Decimal("0.02")  # a lie about output teaches nothing


def test_an_absurd_input_count_is_not_learned() -> None:
    ceiling = RunCeiling(DEFAULT_RUN_LIMIT)
    res = ceiling.reserve(MINI, 100, 100)
    billed = ceiling.settle_reported(res, 10**15, 10)
    assert billed.cost_usd == res.amount_usd and billed.anomaly is not None
    assert ceiling.margin_for(MINI) == Decimal("0.02")
    assert ceiling.reserve(MINI, 100, 100).amount_usd == res.amount_usd


def test_remaining_for_prompt() -> None:
    ceiling = RunCeiling(DEFAULT_RUN_LIMIT)
    res = ceiling.reserve(MINI, 1000, 1000)
    ceiling.settle(res, 1000, 1000)  # 0.00075
    assert ceiling.remaining_for_prompt() == "$0.2992 of $0.30 left"  # rounded down
    assert RunCeiling(Decimal("0.125")).remaining_for_prompt() == "$0.1250 of $0.1250 left"


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        RunCeiling(Decimal(0))
    with pytest.raises(TypeError):
        RunCeiling(0.3)  # type: ignore[arg-type]
    ceiling = RunCeiling(DEFAULT_RUN_LIMIT)
    with pytest.raises(ValueError):
        ceiling.reserve(MINI, 10, 0)
    with pytest.raises(ValueError):
        ceiling.reserve(MINI, -1, 10)


# -- the hard-ceiling property ---------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    price: ModelPrice
    input_estimate: int
    wanted_max_tokens: int
    input_fraction: int  # 0..1000: where in [1, 1 + under-count] the real input count lands
    output_fraction: int  # 0..1000: share of the granted max_tokens actually produced
    for_wrapup: bool


calls = st.builds(
    Call,
    price=st.sampled_from(PRICES),
    input_estimate=st.integers(10, 50_000),
    wanted_max_tokens=st.integers(1, 8000),
    # Biased to the worst case (full under-count, output up to max_tokens), where overruns live.
    input_fraction=st.just(1000) | st.integers(0, 1000),
    output_fraction=st.just(1000) | st.integers(0, 1000),
    for_wrapup=st.integers(0, 9).map(lambda n: n == 0),  # about one call in ten
)


def provider_usage(call: Call, granted: int) -> tuple[int, int]:
    """What the provider bills: input up to the documented under-count, output <= max_tokens."""
    ratio = 1 + UNDERCOUNT[call.price.tokenizer_exact] * call.input_fraction / 1000
    actual_in = math.ceil(call.input_estimate * ratio)
    actual_out = granted * call.output_fraction // 1000
    return actual_in, actual_out


def run(ceiling: RunCeiling, call: Call) -> Reservation:
    res = ceiling.reserve(
        call.price, call.input_estimate, call.wanted_max_tokens, for_wrapup=call.for_wrapup
    )
    assert ceiling.spent + ceiling.reserved <= ceiling.limit
    ceiling.settle(res, *provider_usage(call, res.max_tokens))
    return res


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(calls, min_size=1, max_size=40),
    limit=st.sampled_from([DEFAULT_RUN_LIMIT, Decimal("0.10"), Decimal("0.03")]),
    wrapup_share=st.sampled_from([0, 5, 10, 20]),
    wrapup=calls,
)
def test_settled_spend_never_exceeds_ceiling(
    steps: list[Call], limit: Decimal, wrapup_share: int, wrapup: Call
) -> None:
    ceiling = RunCeiling(limit, wrapup_reserve=limit * wrapup_share / 100)
    for call in steps:
        floor_tokens = min(64, call.wanted_max_tokens)  # reserve()'s default min_output_tokens
        try:
            res = run(ceiling, call)
        except CeilingReached as exc:
            # Refused only when even the smallest call it could shrink to does not fit.
            available = ceiling.available(for_wrapup=call.for_wrapup)
            smallest = ceiling.worst_case(call.price, call.input_estimate, floor_tokens)
            assert exc.reason.startswith("next call to ")
            assert exc.available_usd == available
            assert exc.needed_usd == smallest
            assert smallest > available
            event("stopped by the ceiling")
            break
        assert res.max_tokens >= floor_tokens  # a call that fits is never shrunk below the floor
        assert ceiling.spent <= ceiling.limit
    # The final wrap-up answer may use the reserve.
    try:
        run(ceiling, Call(**{**wrapup.__dict__, "for_wrapup": True}))
    except CeilingReached as exc:
        assert exc.reason
    assert ceiling.spent <= ceiling.limit
    assert ceiling.overrun == 0
    assert ceiling.reserved == 0


@settings(max_examples=300, deadline=None)
@given(batches=st.lists(st.lists(calls, min_size=1, max_size=4), max_size=12))
def test_concurrent_calls_never_exceed_ceiling(batches: list[list[Call]]) -> None:
    """Several calls reserved before any settles (tool calls of one step run concurrently)."""
    ceiling = RunCeiling(DEFAULT_RUN_LIMIT, wrapup_reserve=Decimal("0.02"))
    for batch in batches:
        held: list[tuple[Call, Reservation]] = []
        for call in batch:
            try:
                held.append((call, ceiling.reserve(call.price, call.input_estimate, 4000)))
            except CeilingReached as exc:
                assert exc.reason
                event("a concurrent call was refused")
            assert ceiling.spent + ceiling.reserved <= ceiling.limit
        for index, (call, res) in enumerate(held):
            if index % 3 == 2:
                ceiling.settle_unknown(res)  # cancelled in flight
            else:
                ceiling.settle(res, *provider_usage(call, res.max_tokens))
            assert ceiling.spent + ceiling.reserved <= ceiling.limit
    assert ceiling.spent <= ceiling.limit
