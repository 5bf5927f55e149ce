"""The rationale of a proposal: the model's prompt, and the template used when there is no model."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from llm_service.optimizations.schemas import RationaleOutput

MAX_TOKENS = 900
MIN_OUTPUT_TOKENS = 128
HIGH_REVERSAL_SHARE = Decimal("0.10")
SMALL_SAMPLE_EVENTS = 30

SYSTEM_PROMPT = (
    "You explain a marketing budget reallocation that has ALREADY been computed by a fixed, "
    "deterministic procedure from the tenant's attribution data. Do NOT change, recompute, "
    "re-round or invent any number: quote figures exactly as they are given, and only figures "
    "that are given. The proposal will be stored as given whatever you write. Explain why it "
    "follows from the figures and the method (which channels gain, which hold their bounds, what "
    "refunds and chargebacks did to each channel's efficiency), and name the main risks of acting "
    "on it. Write for a marketing manager, in plain text, at most about 250 words.\n"
    "Reply with ONLY a JSON object, no prose around it and no code fence: "
    '{"rationale": "<the explanation>", "risks": ["<one risk per item>", ...]}'
)


def messages(recommendations: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat messages asking the model to explain `recommendations`."""
    figures = {k: v for k, v in recommendations.items() if k not in ("risks", "version")}
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {
            "role": "user",
            "content": "The computed proposal and its figures (USD amounts are exact; shares and "
            "ratios are fractions of 1):\n" + json.dumps(figures, separators=(", ", ": ")),
        },
    ]


def _pct(share: str) -> str:
    return f"{(Decimal(share) * 100).quantize(Decimal('0.1'))}%"


def _usd(amount: str) -> str:
    return f"${Decimal(amount):,.2f}"


def templated(recommendations: dict[str, Any]) -> RationaleOutput:
    """A rationale and risks written from the figures alone (degraded mode: no model)."""
    period = recommendations["period"]
    channels: list[dict[str, Any]] = recommendations["channels"]
    head = (
        f"For {period['start']} to {period['end']} (end date excluded), under "
        f"{recommendations['model_type']} attribution, the proposal places "
        f"{_usd(recommendations['allocated_usd'])} of the "
        f"{_usd(recommendations['total_budget_usd'])} "
        f"budget across {len(channels)} channel(s) in proportion to each channel's net attributed "
        "revenue (attributed revenue times the share of its ledger revenue that was not refunded "
        "or charged back)."
    )
    lines = [head]
    for c in channels:
        line = (
            f"{c['display_name']} ({c['channel']}): {_usd(c['proposed_usd'])} "
            f"({_pct(c['proposed_share'])} of the budget); attributed revenue "
            f"{_usd(c['attributed_revenue_usd'])} ({_pct(c['current_share'])} of the total), "
            f"net ratio {c['net_ratio']}, efficiency {_usd(c['efficiency_usd'])}"
        )
        if c["bound_binding"] == "min":
            line += f", held at its minimum of {_usd(c['bounds']['min_usd'])}"
        elif c["bound_binding"] == "max":
            line += f", capped at its maximum of {_usd(c['bounds']['max_usd'])}"
        lines.append(line + ".")
    lines.extend(recommendations.get("notes", []))
    return RationaleOutput(rationale="\n".join(lines), risks=template_risks(recommendations))


def template_risks(recommendations: dict[str, Any]) -> list[str]:
    """The risks the figures themselves show."""
    channels: list[dict[str, Any]] = recommendations["channels"]
    risks = [
        "There is no spend data: efficiency is net attributed revenue, not return on spend, so "
        "a channel's marginal return on extra budget may be lower than its average."
    ]
    reversed_heavy = []
    for c in channels:
        gross = Decimal(c["ledger_gross_usd"])
        if gross > 0:
            share = (
                Decimal(c["ledger_refunded_usd"]) + Decimal(c["ledger_chargeback_usd"])
            ) / gross
            if share >= HIGH_REVERSAL_SHARE:
                reversed_heavy.append(f"{c['channel']} ({_pct(str(share))})")
    if reversed_heavy:
        risks.append(
            "High refund and chargeback shares of ledger revenue: "
            + ", ".join(reversed_heavy)
            + "."
        )
    unverified = [
        c["channel"]
        for c in channels
        if c["ledger_rows"] == 0 and Decimal(c["attributed_revenue_usd"]) > 0
    ]
    if unverified:
        risks.append(
            "No ledger rows back the attributed revenue of "
            + ", ".join(unverified)
            + "; it is counted in full, unverified."
        )
    small = [c["channel"] for c in channels if 0 < c["attributed_events"] < SMALL_SAMPLE_EVENTS]
    if small:
        risks.append(
            f"Fewer than {SMALL_SAMPLE_EVENTS} attributed events for "
            + ", ".join(small)
            + ": their efficiency rests on a small sample."
        )
    if recommendations["model_type"] in ("last_touch", "first_touch"):
        risks.append(
            f"{recommendations['model_type']} attribution credits one touch per "
            "conversion; compare with a multi-touch model before moving budget."
        )
    if Decimal(recommendations["unallocated_usd"]) > 0:
        risks.append(
            f"The maximum bounds leave {_usd(recommendations['unallocated_usd'])} unallocated."
        )
    return risks
