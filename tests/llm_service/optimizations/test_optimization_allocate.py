"""The allocation rule's properties, checked by hypothesis, plus worked examples."""

from __future__ import annotations

import random
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_service.optimizations.allocate import ChannelInput, allocate

CODES = [f"ch_{i:02d}" for i in range(12)]
weights = st.one_of(
    st.just(Fraction(0)),
    st.integers(min_value=0, max_value=10**9).map(Fraction),
    st.fractions(min_value=0, max_value=10**6, max_denominator=10**6),
)


@st.composite
def problems(draw: st.DrawFn, *, bounded: bool = True) -> tuple[int, list[ChannelInput]]:
    """A total and channels with random weights and (optionally) random bounds that fit."""
    n = draw(st.integers(min_value=0, max_value=len(CODES)))
    total = draw(st.integers(min_value=0, max_value=10**11))
    channels: list[ChannelInput] = []
    room = total
    for code in CODES[:n]:
        weight = draw(weights)
        low, high = 0, None
        if bounded and draw(st.booleans()):
            low = draw(st.integers(min_value=0, max_value=room))
            room -= low
            if draw(st.booleans()):
                high = low + draw(st.integers(min_value=0, max_value=max(total, 1)))
        channels.append(ChannelInput(code, weight, low, high))
    return total, channels


def _check_bounds(channels: list[ChannelInput], amounts: dict[str, int]) -> None:
    for c in channels:
        assert amounts[c.code] >= c.min_cents
        if c.max_cents is not None:
            assert amounts[c.code] <= c.max_cents


@settings(max_examples=400, deadline=None)
@given(problems())
def test_sums_exactly_and_respects_bounds(problem: tuple[int, list[ChannelInput]]) -> None:
    total, channels = problem
    result = allocate(total, channels)
    assert set(result.amounts) == {c.code for c in channels}
    assert all(isinstance(v, int) for v in result.amounts.values())
    _check_bounds(channels, result.amounts)
    maxima = [c.max_cents for c in channels]
    if all(m is not None for m in maxima) and sum(m or 0 for m in maxima) < total:
        # Infeasible: every channel at its maximum, the rest reported.
        assert result.amounts == {c.code: c.max_cents for c in channels}
        assert result.unallocated_cents == total - sum(m or 0 for m in maxima)
        assert not result.feasible
    else:
        assert result.allocated_cents == total
        assert result.unallocated_cents == 0
    assert result.allocated_cents + result.unallocated_cents == total


@settings(max_examples=300, deadline=None)
@given(problems(bounded=False))
def test_monotone_when_no_bound_binds(problem: tuple[int, list[ChannelInput]]) -> None:
    total, channels = problem
    amounts = allocate(total, channels).amounts
    for a in channels:
        for b in channels:
            if Fraction(a.weight) > Fraction(b.weight):
                assert amounts[a.code] >= amounts[b.code]
            if Fraction(a.weight) == Fraction(b.weight):
                assert abs(amounts[a.code] - amounts[b.code]) <= 1


@settings(max_examples=300, deadline=None)
@given(problems(bounded=False))
def test_proportional_to_the_cent(problem: tuple[int, list[ChannelInput]]) -> None:
    total, channels = problem
    weight_sum = sum((Fraction(c.weight) for c in channels), Fraction(0))
    amounts = allocate(total, channels).amounts
    for c in channels:
        exact = (
            total * Fraction(c.weight) / weight_sum
            if weight_sum
            else Fraction(total, len(channels))
        )
        assert abs(amounts[c.code] - exact) < 1


@settings(max_examples=200, deadline=None)
@given(problems(), st.randoms(use_true_random=False))
def test_deterministic_whatever_the_order(
    problem: tuple[int, list[ChannelInput]], rnd: random.Random
) -> None:
    total, channels = problem
    first = allocate(total, channels)
    shuffled = list(channels)
    rnd.shuffle(shuffled)
    second = allocate(total, shuffled)
    assert first == second
    assert list(second.amounts) == sorted(second.amounts)


@settings(max_examples=200, deadline=None)
@given(problems())
def test_same_weight_and_bounds_never_gets_less_by_weight(
    problem: tuple[int, list[ChannelInput]],
) -> None:
    # Raising one channel's weight never lowers its amount.
    total, channels = problem
    if not channels:
        return
    before = allocate(total, channels).amounts
    target = channels[0]
    raised = [
        ChannelInput(
            target.code, Fraction(target.weight) * 2 + 1, target.min_cents, target.max_cents
        ),
        *channels[1:],
    ]
    after = allocate(total, raised).amounts
    assert after[target.code] >= before[target.code] - 1  # one cent of rounding at most


def test_worked_example_with_bounds() -> None:
    channels = [
        ChannelInput("a", Decimal("600"), 0, 400_000),
        ChannelInput("b", Decimal("300")),
        ChannelInput("c", Decimal("100"), 50_000),
        ChannelInput("d", 0, 10_000),
        ChannelInput("e", 0),
    ]
    result = allocate(1_000_000, channels)
    # a wants 600k, capped at 400k; d holds its 10k minimum; b and c split 590k 3:1.
    assert result.amounts == {"a": 400_000, "b": 442_500, "c": 147_500, "d": 10_000, "e": 0}
    assert result.binding == {"a": "max", "d": "min"}
    assert result.feasible


def test_rounding_goes_to_largest_fraction_then_code() -> None:
    result = allocate(100, [ChannelInput("b", 1), ChannelInput("a", 1), ChannelInput("c", 1)])
    assert result.amounts == {"a": 34, "b": 33, "c": 33}
    result = allocate(10, [ChannelInput("x", 2), ChannelInput("y", 1)])
    assert result.amounts == {"x": 7, "y": 3}


def test_infeasible_bounds_report_the_remainder() -> None:
    result = allocate(10_000, [ChannelInput("a", 5, 0, 3_000), ChannelInput("b", 1, 1_000, 2_000)])
    assert result.amounts == {"a": 3_000, "b": 2_000}
    assert result.unallocated_cents == 5_000
    assert not result.feasible


def test_unweighted_channels_take_what_weighted_ones_cannot() -> None:
    result = allocate(
        10_000, [ChannelInput("a", 5, 0, 3_000), ChannelInput("z", 0), ChannelInput("y", 0, 1_000)]
    )
    assert result.amounts == {"a": 3_000, "y": 3_500, "z": 3_500}


def test_no_channels() -> None:
    result = allocate(500, [])
    assert result.amounts == {}
    assert result.unallocated_cents == 500


@pytest.mark.parametrize(
    ("total", "channels", "message"),
    [
        (-1, [], "total_cents"),
        (100, [ChannelInput("a", 1, 101)], "minimum bounds"),
        (100, [ChannelInput("a", 1, 10, 5)], "max_cents"),
        (100, [ChannelInput("a", 1), ChannelInput("a", 2)], "unique"),
        (100, [ChannelInput("a", -1)], "negative"),
    ],
)
def test_invalid_input(total: int, channels: list[ChannelInput], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        allocate(total, channels)


def test_float_weights_are_refused() -> None:
    with pytest.raises(TypeError):
        allocate(100, [ChannelInput("a", 0.5)])  # type: ignore[arg-type]
