"""Attacks on the tool runner's input: every malformed call is an error for the model.

Nested, over-size, non-JSON (NaN), absurdly numeric or calendar-edge arguments, and names that
are empty, huge or hold NUL: each comes back as `ToolOutcome.error` with a message the model can
act on, never an exception, never "failed unexpectedly", and what is recorded stays bounded.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg
import pytest

from llm_service.input_rules import storable
from llm_service.tenants.service import CreatedTenant
from llm_service.tools.parse import MAX_ARGUMENT_CHARS, MAX_ARGUMENT_DEPTH, parse_arguments
from llm_service.tools.runner import MAX_RECORDED_CHARS, run_tool

P = {"start": "2025-03-01", "end": "2025-03-08"}
DEEP = "[" * 100_000 + "]" * 100_000


def _with(**fields: Any) -> str:
    return json.dumps({**P, **fields})


_WEEK = {"current_start": "2025-03-01", "current_end": "2025-03-08"}
ARGUMENT_ATTACKS = [
    ("top_orders", DEEP, "too large"),
    ("top_orders", '{"a":' * 100_000 + "1" + "}" * 100_000, "too large"),
    ("top_orders", "[" * 3000 + "]" * 3000, "nested"),
    (
        "top_orders",
        '{"a":' * (MAX_ARGUMENT_DEPTH + 1) + "1" + "}" * (MAX_ARGUMENT_DEPTH + 1),
        "nested",
    ),
    # Brackets inside a string are not nesting: the call is merely invalid.
    ("top_orders", '{"x": "' + "[" * 50 + '\\"' + '"}', "start: Field required"),
    ("top_orders", _with(channel="x" * (MAX_ARGUMENT_CHARS + 1)), "too large"),
    ("top_orders", " " * (MAX_ARGUMENT_CHARS + 1) + json.dumps(P), "too large"),
    ("top_orders", _with()[:-1] + ', "limit": NaN}', "not valid JSON"),
    ("top_orders", _with()[:-1] + ', "limit": Infinity}', "not valid JSON"),
    ("top_orders", _with()[:-1] + ', "limit": -Infinity}', "not valid JSON"),
    ("top_orders", _with()[:-1] + ', "limit": ' + "9" * 5000 + "}", "too many digits"),
    ("top_orders", _with()[:-1] + ', "limit": ' + "9" * 40 + "}", "too many digits"),
    ("top_orders", _with()[:-1] + ', "limit": 1e999}', "limit:"),
    ("top_orders", _with()[:-1] + ', "limit": 10.5}', "limit:"),
    ("top_orders", "null", "JSON object"),
    ("top_orders", "5", "JSON object"),
    ("top_orders", '"text"', "JSON object"),
    ("top_orders", '{"start": "2025-03-01"} trailing', "not valid JSON"),
    ("top_orders", '{"start": "2025-03-01", "end"', "not valid JSON"),
    (
        "top_orders",
        '{"start": "2025-03-01", "end": "2025-03-08", "channel": {"$ne": 1}}',
        "channel",
    ),
    ("top_orders", {"start": "0001-01-01", "end": "0001-01-08"}, "between 1970-01-01 and 2100"),
    ("top_orders", {"start": "9999-12-24", "end": "9999-12-31"}, "between 1970-01-01 and 2100"),
    ("top_orders", {"start": "2025-03-01", "end": "9999-12-31"}, "between 1970-01-01 and 2100"),
    ("top_orders", {"start": "0000-01-01", "end": "0001-01-08"}, "start:"),
    ("top_orders", {"start": -62135596800, "end": "0001-01-08"}, "start:"),  # unix time, year 1
    ("top_orders", {"start": 10**18, "end": "2025-03-08"}, "start:"),
    ("top_orders", {"start": "10000-01-01", "end": "10000-01-08"}, "start:"),
    ("compare_periods", {"current_start": "0001-01-01", "current_end": "0001-01-08"}, "between"),
    ("compare_periods", {"current_start": "1970-01-01", "current_end": "1970-01-08"}, "before"),
    (
        "compare_periods",
        {
            "current_start": "2025-03-01",
            "current_end": "2025-03-08",
            "previous_start": "0001-01-01",
            "previous_end": "0001-01-08",
        },
        "between",
    ),
    ("channel_performance", {"start": "0001-01-01", "end": "0001-01-02"}, "between"),
    *(
        ("compare_periods", {**_WEEK, "channels": channels}, expected)
        for channels, expected in (
            ("Facebook Ads", "channel codes separated by commas (not 'Facebook Ads')"),
            ("email,x'; DROP TABLE attribution_events; --", "channel codes"),
            (",,, ,", "channel codes"),
            ("", "channel codes"),
            (",".join(f"c{i:03d}" for i in range(101)), "1 to 100 channel codes"),
            ("a" * 2001, "at most 2000 characters"),
            (["email", "organic_search"], "channels:"),
        )
    ),
    ("compare_periods", {**_WEEK, "channel": "email", "channels": "email"}, "not both"),
    ("", P, "unknown tool ''"),
    ("x" * 10_000, P, "unknown tool"),
    ("top_orders\x00", P, "unknown tool"),
    (" top_orders ", P, "unknown tool"),
]


@pytest.mark.parametrize(("name", "arguments", "expected"), ARGUMENT_ATTACKS)
async def test_a_malformed_call_is_an_error_for_the_model(
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    caplog: pytest.LogCaptureFixture,
    name: str,
    arguments: Any,
    expected: str,
) -> None:
    with caplog.at_level(logging.WARNING):
        outcome = await run_tool(app_pool, tenant.tenant_id, name, arguments)
    assert outcome.error is not None, outcome
    assert expected in outcome.error, outcome.error
    assert "unexpectedly" not in outcome.error
    assert outcome.output is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # What is recorded (and shown back to the model) stays small whatever was sent.
    recorded = outcome.arguments
    assert len(recorded if isinstance(recorded, str) else json.dumps(recorded)) <= (
        MAX_RECORDED_CHARS + 100
    )
    assert len(outcome.name) <= 100
    assert len(outcome.error) <= 2000


@pytest.mark.parametrize(
    "text",
    [json.dumps(P), " " + json.dumps(P) + "\n", '{"a": [[[[1]]]], "b": "[[[[[[[[[[[[[[[["}'],
)
def test_bounded_arguments_within_the_limits_parse(text: str) -> None:
    assert parse_arguments(text) == json.loads(text)


def test_the_depth_of_parsed_arguments_is_bounded_too() -> None:
    nested: dict[str, Any] = {}
    for _ in range(MAX_ARGUMENT_DEPTH + 5):
        nested = {"a": nested}
    with pytest.raises(ValueError, match="nested"):
        parse_arguments(nested)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, ""), (5, "5"), ([1, 2], "[1, 2]"), ({"a": "\x00"}, '{"a": "\\ufffd"}'), (1.5, "1.5")],
)
def test_storable_takes_whatever_a_provider_sends(value: object, expected: str) -> None:
    """A provider may send a null or non-string tool name, id or arguments."""
    assert storable(value) == expected


def test_storable_of_a_deeply_nested_non_string_is_bounded_text() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    text = storable(deep)
    assert isinstance(text, str) and len(text) <= 100
