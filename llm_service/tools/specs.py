"""The investigation agent's tools: names, descriptions for the model, arguments, and what runs.

Every tool is read-only and tenant-scoped by construction: it calls one analytics query on a
connection the runner has put in a READ ONLY tenant transaction. No tool takes an id, so no
argument can name another tenant's row.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from llm_service.analytics import (
    channel_queries,
    data_quality_queries,
    ledger_queries,
    trend_queries,
)
from llm_service.analytics.models import Result
from llm_service.tools.args import (
    CHANNEL_PATTERN,
    MAX_ORDERS,
    MAX_PERIOD_DAYS,
    MAX_ROWS,
    ChannelCorrectionsArgs,
    ChannelPerformanceArgs,
    CompareAttributionModelsArgs,
    ComparePeriodsArgs,
    DeadEventSummaryArgs,
    ReconciliationStatusArgs,
    RevenueStateChangesArgs,
    ToolArgs,
    TopOrdersArgs,
)

__all__ = [
    "CHANNEL_PATTERN",
    "MAX_ORDERS",
    "MAX_PERIOD_DAYS",
    "MAX_ROWS",
    "TOOLS",
    "ChannelCorrectionsArgs",
    "ChannelPerformanceArgs",
    "CompareAttributionModelsArgs",
    "ComparePeriodsArgs",
    "DeadEventSummaryArgs",
    "ReconciliationStatusArgs",
    "RevenueStateChangesArgs",
    "ToolArgs",
    "ToolSpec",
    "TopOrdersArgs",
    "openai_tool_schemas",
]

Execute = Callable[[asyncpg.Connection, Any], Awaitable[Result]]

_COMMON = (
    " Money in integer cents. Periods [start, end) up to 366 days. more_rows: limit hit."
    " `headline` states the key figures first (money there in USD)."
)


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its name, what the model is told about it, its arguments and its query."""

    name: str
    description: str
    args_model: type[ToolArgs]
    execute: Execute

    def parameters(self) -> dict[str, Any]:
        """The arguments as a clean JSON schema (no titles, no $defs, no nullable unions)."""
        return _clean_schema(self.args_model.model_json_schema())

    def openai_schema(self) -> dict[str, Any]:
        """The tool in the OpenAI function-tool format."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters(),
            },
        }


def _clean_property(prop: dict[str, Any]) -> dict[str, Any]:
    prop = {k: v for k, v in prop.items() if k != "title"}
    variants = prop.pop("anyOf", None)
    if variants is not None:  # `X | None`: the model omits the field instead of sending null
        concrete = [v for v in variants if v.get("type") != "null"]
        if len(concrete) != 1:
            raise ValueError(f"cannot simplify a union of {len(concrete)} types: {variants}")
        prop = {**{k: v for k, v in concrete[0].items() if k != "title"}, **prop}
    if prop.get("default", 0) is None:
        del prop["default"]
    return prop


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    if "$defs" in schema:
        raise ValueError("tool arguments must not need $defs")
    out: dict[str, Any] = {
        "type": "object",
        "properties": {
            name: _clean_property(copy.deepcopy(prop))
            for name, prop in schema["properties"].items()
        },
        "additionalProperties": False,
    }
    if schema.get("required"):
        out["required"] = list(schema["required"])
    return out


# -- the adapters: validated arguments -> one analytics query -----------------------------------


async def _channel_performance(conn: asyncpg.Connection, a: ChannelPerformanceArgs) -> Result:
    return await channel_queries.channel_performance(
        conn, a.start, a.end, channel=a.channel, model_type=a.model_type, limit=a.limit
    )


async def _compare_periods(conn: asyncpg.Connection, a: ComparePeriodsArgs) -> Result:
    return await trend_queries.period_comparison(
        conn,
        (a.current_start, a.current_end),
        a.previous(),
        channel=a.channel,
        channels=a.channel_list(),
        model_type=a.model_type,
        limit=a.limit,
    )


async def _revenue_state_changes(conn: asyncpg.Connection, a: RevenueStateChangesArgs) -> Result:
    return await ledger_queries.revenue_state_changes(
        conn, a.start, a.end, channel=a.channel, limit=a.limit
    )


async def _dead_event_summary(conn: asyncpg.Connection, a: DeadEventSummaryArgs) -> Result:
    return await data_quality_queries.dead_event_summary(conn, a.start, a.end, limit=a.limit)


async def _channel_corrections(conn: asyncpg.Connection, a: ChannelCorrectionsArgs) -> Result:
    return await data_quality_queries.channel_corrections(conn, a.start, a.end, limit=a.limit)


async def _compare_models(conn: asyncpg.Connection, a: CompareAttributionModelsArgs) -> Result:
    return await channel_queries.attribution_model_comparison(
        conn, a.start, a.end, channel=a.channel, limit=a.limit
    )


async def _top_orders(conn: asyncpg.Connection, a: TopOrdersArgs) -> Result:
    return await ledger_queries.top_orders(conn, a.start, a.end, channel=a.channel, limit=a.limit)


async def _reconciliation_status(conn: asyncpg.Connection, a: ReconciliationStatusArgs) -> Result:
    return await ledger_queries.reconciliation_status(conn, a.start, a.end, limit=a.limit)


_SPECS = (
    ToolSpec(
        "channel_performance",
        "Per marketing channel over a period: events, conversions (purchases and conversion "
        "events), the events' own revenue, the revenue an attribution model attributes to the "
        "channel, and its share of all attributed revenue. Sorted by attributed revenue. Start "
        "here to see which channels matter." + _COMMON,
        ChannelPerformanceArgs,
        _channel_performance,
    ),
    ToolSpec(
        "compare_periods",
        "Compares each channel between a current and a previous period: events, conversions, "
        "revenue and attributed revenue in both, with absolute and percentage changes (null "
        "when the previous value is 0), biggest revenue movement first, plus totals over all "
        "channels (with `channels`: `channels_total`, those channels summed), and `warnings` "
        "when a period lies outside the days with data (unknown, not zero). Use it for 'why "
        "did X drop/rise'." + _COMMON,
        ComparePeriodsArgs,
        _compare_periods,
    ),
    ToolSpec(
        "revenue_state_changes",
        "Refunds and chargebacks recorded in a period (by when they happened): totals per state, "
        "the busiest days, per channel of the order's attribution (null channel: order without "
        "attribution) and the most common reasons, with the ledger amounts reversed." + _COMMON,
        RevenueStateChangesArgs,
        _revenue_state_changes,
    ),
    ToolSpec(
        "dead_event_summary",
        "Events that failed ingestion (dead-letter queue) in a period: counts by source, error "
        "type and remediation status with first/last seen and the latest error message, and the "
        "peak days with their main source. Use it when data may be missing." + _COMMON,
        DeadEventSummaryArgs,
        _dead_event_summary,
    ),
    ToolSpec(
        "channel_corrections",
        "Manual channel re-assignments made in a period OR correcting events that occurred in "
        "it (a fix is often made days later): per (from_channel, to_channel) the number of "
        "corrected events and allocations, how many concern the period's events, who made "
        "them and recent reasons, and a count per person. Corrections move revenue between "
        "channels." + _COMMON,
        ChannelCorrectionsArgs,
        _channel_corrections,
    ),
    ToolSpec(
        "compare_attribution_models",
        "Per channel, the revenue each attribution model (last_touch, first_touch, linear, ...) "
        "attributes to it over a period, the highest and lowest model and their spread (in cents "
        "and as a percentage of the highest). Largest disagreement first." + _COMMON,
        CompareAttributionModelsArgs,
        _compare_models,
    ),
    ToolSpec(
        "top_orders",
        "The largest orders in the revenue ledger posted in a period: amount and revenue, "
        "current state (authorized, captured, refunded, chargeback) and previous state, whether "
        "verified, the attributed channel and model. No customer data." + _COMMON,
        TopOrdersArgs,
        _top_orders,
    ),
    ToolSpec(
        "reconciliation_status",
        "Checks a period's purchase revenue in the event stream against the revenue ledger: "
        "purchases and their revenue, ledger rows and revenue by current state, unverified rows, "
        "the difference (events minus ledger), and the reconciliation runs created during the "
        "period or within 7 days after it, newest first." + _COMMON,
        ReconciliationStatusArgs,
        _reconciliation_status,
    ),
)

#: Every tool by name.
TOOLS: dict[str, ToolSpec] = {spec.name: spec for spec in _SPECS}


@functools.cache
def _schemas_json() -> str:
    return json.dumps([spec.openai_schema() for spec in TOOLS.values()])


def openai_tool_schemas() -> list[dict[str, Any]]:
    """Every tool in the OpenAI function-tool format (what litellm passes as `tools`).

    Built once (pydantic schema generation is costly on every agent step); each caller gets
    its own copy, so nothing downstream can alter the next call's tools.
    """
    return list(json.loads(_schemas_json()))
