"""Tool specs: argument validation and the OpenAI/litellm function-tool schemas."""

from __future__ import annotations

from datetime import date
from typing import Any

import jsonschema
import pytest
from openai.types.chat import ChatCompletionToolParam
from pydantic import TypeAdapter, ValidationError

from llm_service.llm.litellm_setup import load_litellm
from llm_service.tools.specs import (
    MAX_ORDERS,
    MAX_ROWS,
    TOOLS,
    ChannelPerformanceArgs,
    ComparePeriodsArgs,
    TopOrdersArgs,
    openai_tool_schemas,
)

NAMES = {
    "channel_performance",
    "compare_periods",
    "revenue_state_changes",
    "dead_event_summary",
    "channel_corrections",
    "compare_attribution_models",
    "top_orders",
    "reconciliation_status",
}
PERIOD = {"start": "2025-03-01", "end": "2025-03-08"}


def _walk(node: Any) -> list[Any]:
    """Every dict and list inside a JSON-like value, the value included."""
    found: list[Any] = [node]
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        found.extend(_walk(child))
    return found


def _valid_arguments(name: str) -> dict[str, Any]:
    if name == "compare_periods":
        return {"current_start": "2025-03-01", "current_end": "2025-03-08"}
    return dict(PERIOD)


def test_every_tool_is_named_and_registered() -> None:
    assert set(TOOLS) == NAMES
    for name, spec in TOOLS.items():
        assert spec.name == name
        assert len(spec.description) > 80
        assert "cents" in spec.description


def test_openai_schemas_are_clean_function_tools() -> None:
    schemas = openai_tool_schemas()
    assert [s["function"]["name"] for s in schemas] == list(TOOLS)
    adapter: TypeAdapter[Any] = TypeAdapter(ChatCompletionToolParam)
    for schema in schemas:
        adapter.validate_python(schema)  # the OpenAI SDK's own type for a function tool
        assert schema["type"] == "function"
        function = schema["function"]
        assert set(function) == {"name", "description", "parameters"}
        params = function["parameters"]
        assert params["type"] == "object"
        assert params["additionalProperties"] is False
        assert set(params["required"]) <= set(params["properties"])
        jsonschema.Draft202012Validator.check_schema(params)
        for node in _walk(params):
            if isinstance(node, dict):
                assert not {"$defs", "$ref", "anyOf", "allOf", "title"} & set(node), node
        for prop in params["properties"].values():
            assert prop.get("description"), prop
            assert prop["type"] in ("string", "integer")


def test_schemas_agree_with_validation() -> None:
    for name, spec in TOOLS.items():
        params = spec.parameters()
        good = _valid_arguments(name)
        jsonschema.validate(good, params)
        spec.args_model.model_validate(good)
        bad = {**good, "tenant_id": "x"}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, params)
        with pytest.raises(ValidationError):
            spec.args_model.model_validate(bad)
        if "channel" in params["properties"]:
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate({**good, "channel": "Facebook Paid"}, params)
        assert params["properties"]["limit"]["maximum"] in (MAX_ROWS, MAX_ORDERS)


def test_litellm_accepts_the_tools() -> None:
    litellm = load_litellm()
    messages = [{"role": "user", "content": "why did paid social drop last week?"}]
    without = litellm.token_counter(model="gpt-4o-mini", messages=messages)
    with_tools = litellm.token_counter(
        model="gpt-4o-mini", messages=messages, tools=openai_tool_schemas()
    )
    assert with_tools > without + 500


def test_period_validation() -> None:
    args = ChannelPerformanceArgs.model_validate(PERIOD)
    assert (args.start, args.end, args.channel, args.model_type, args.limit) == (
        date(2025, 3, 1), date(2025, 3, 8), None, "last_touch", 20,
    )  # fmt: skip
    ChannelPerformanceArgs.model_validate({"start": "2025-01-01", "end": "2026-01-02"})  # 366 d
    with pytest.raises(ValidationError, match="at most 366"):
        ChannelPerformanceArgs.model_validate({"start": "2025-01-01", "end": "2026-01-03"})
    with pytest.raises(ValidationError, match="must start before it ends"):
        ChannelPerformanceArgs.model_validate({"start": "2025-03-08", "end": "2025-03-01"})
    with pytest.raises(ValidationError, match="must start before it ends"):
        ChannelPerformanceArgs.model_validate({"start": "2025-03-08", "end": "2025-03-08"})
    with pytest.raises(ValidationError, match="date"):
        ChannelPerformanceArgs.model_validate({"start": "last week", "end": "2025-03-08"})
    with pytest.raises(ValidationError, match="Field required"):
        ChannelPerformanceArgs.model_validate({"start": "2025-03-01"})


@pytest.mark.parametrize(
    "channel", ["Facebook", "facebook paid", "x", "1abc", "a;drop table", "é_paid", "a" * 64]
)
def test_channel_must_be_a_code(channel: str) -> None:
    with pytest.raises(ValidationError, match="channel"):
        TopOrdersArgs.model_validate({**PERIOD, "channel": channel})


def test_limits_are_bounded() -> None:
    assert TopOrdersArgs.model_validate({**PERIOD, "limit": MAX_ORDERS}).limit == MAX_ORDERS
    for limit in (0, -1, MAX_ORDERS + 1):
        with pytest.raises(ValidationError, match="limit"):
            TopOrdersArgs.model_validate({**PERIOD, "limit": limit})
    with pytest.raises(ValidationError, match="limit"):
        ChannelPerformanceArgs.model_validate({**PERIOD, "limit": MAX_ROWS + 1})
    with pytest.raises(ValidationError, match="model_type"):
        ChannelPerformanceArgs.model_validate({**PERIOD, "model_type": "magic"})


def test_compare_periods_defaults_to_the_period_before() -> None:
    args = ComparePeriodsArgs.model_validate(
        {"current_start": "2025-03-01", "current_end": "2025-03-08"}
    )
    assert args.previous() == (date(2025, 2, 22), date(2025, 3, 1))
    given = ComparePeriodsArgs.model_validate(
        {
            "current_start": "2025-03-01",
            "current_end": "2025-04-01",
            "previous_start": "2024-03-01",
            "previous_end": "2024-04-01",
        }
    )
    assert given.previous() == (date(2024, 3, 1), date(2024, 4, 1))
    with pytest.raises(ValidationError, match="both previous_start and previous_end"):
        ComparePeriodsArgs.model_validate(
            {"current_start": "2025-03-01", "current_end": "2025-03-08",
             "previous_start": "2025-02-01"}
        )  # fmt: skip
    with pytest.raises(ValidationError, match="previous period must start before"):
        ComparePeriodsArgs.model_validate(
            {"current_start": "2025-03-01", "current_end": "2025-03-08",
             "previous_start": "2025-02-08", "previous_end": "2025-02-01"}
        )  # fmt: skip
