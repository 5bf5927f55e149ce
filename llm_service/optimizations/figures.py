"""Channel efficiency from exact sums, and the proposal the job stores (every figure a string).

There is no spend data in the schema, so a channel's efficiency cannot be revenue per dollar.
It is the channel's NET ATTRIBUTED REVENUE over the period:

    net_ratio  = ledger net / ledger gross      (1 when the channel has no settled ledger revenue)
    efficiency = attributed revenue x net_ratio

where attributed revenue is the sum of the channel's allocations under the requested model for
events that occurred in the period, and the ledger figures come from ledger rows whose
allocation (ledger.allocation_id -> allocations.channel_code) is on the channel, for the same
events: gross = captured + refunded + chargeback revenue, net = gross - refunded - chargeback.
The budget is then allocated in proportion to efficiency (see `allocate`). All arithmetic is on
integer cents and exact rationals; shares and ratios are shown rounded to 6 places.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction
from typing import Any

from llm_service.optimizations.allocate import Allocation, ChannelInput, allocate
from llm_service.optimizations.repository import ChannelSums

RATIO_PLACES = 6
EFFICIENCY_PLACES = 4
METHOD = (
    "Efficiency is net attributed revenue: the channel's attributed revenue under the chosen "
    "model for events in the period, times the share of its ledger revenue (captured, refunded "
    "or charged back) that was not refunded or charged back (1 when it has no such ledger rows). "
    "There is no spend data, so this is not a return on spend. The budget is split in whole cents "
    "in proportion to efficiency, within each channel's bounds; leftover cents go to the largest "
    "fractional shares (ties by channel code). current_share is the channel's share of attributed "
    "revenue."
)


@dataclass(frozen=True)
class ChannelEfficiency:
    """A channel's exact sums with its net ratio and efficiency as exact rationals (cents)."""

    sums: ChannelSums
    net_ratio: Fraction
    efficiency_cents: Fraction


def efficiency(sums: ChannelSums) -> ChannelEfficiency:
    """Net ratio and efficiency of one channel, exactly."""
    ratio = Fraction(sums.net_cents, sums.gross_cents) if sums.gross_cents > 0 else Fraction(1)
    return ChannelEfficiency(sums, ratio, sums.attributed_cents * ratio)


def usd_to_whole_cents(text: str) -> int:
    """A 2-decimal USD string as integer cents, exactly."""
    cents = Decimal(text).scaleb(2)
    if cents != cents.to_integral_value():
        raise ValueError(f"{text} USD is not a whole number of cents")
    return int(cents)


def cents_usd(cents: int) -> str:
    """Integer cents as a USD string with 2 decimals."""
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def rational_str(value: Fraction, places: int) -> str:
    """A rational rounded half-even to `places` decimals (exact when it terminates there)."""
    with localcontext() as ctx:
        ctx.prec = 80
        quotient = Decimal(value.numerator) / Decimal(value.denominator)
        return str(quotient.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN))


def _empty(channel: str) -> ChannelSums:
    return ChannelSums(channel, 0, 0, 0, 0, 0, 0, 0, 0)


def build_proposal(
    params: dict[str, Any],
    sums: list[ChannelSums],
    names: dict[str, str],
    *,
    paid: set[str] | None = None,
) -> tuple[dict[str, Any], Allocation]:
    """The stored recommendations for a job's parameters and figures, and the allocation.

    With `paid` (the paid channels' codes), channels that are not paid get no budget unless
    the job asks for them (`include_unpaid`, or bounds naming them); they are listed as left
    out, with their attributed revenue and why.
    """
    total_cents = usd_to_whole_cents(params["total_budget_usd"])
    bounds: dict[str, dict[str, str | None]] = params.get("bounds") or {}
    by_channel = {s.channel: s for s in sums}
    excluded: list[dict[str, str]] = []
    if paid is not None and not params.get("include_unpaid"):
        for code in sorted(by_channel):
            if code not in paid and code not in bounds:
                s = by_channel.pop(code)
                excluded.append(
                    {
                        "channel": code,
                        "display_name": names.get(code, code),
                        "attributed_revenue_usd": cents_usd(s.attributed_cents),
                        "reason": "not a paid channel (is_paid = false): a budget cannot buy it",
                    }
                )
    for code in bounds:
        by_channel.setdefault(code, _empty(code))
    figures = {code: efficiency(s) for code, s in sorted(by_channel.items())}
    inputs = []
    for code, fig in figures.items():
        bound = bounds.get(code) or {}
        low, high = bound.get("min_usd"), bound.get("max_usd")
        inputs.append(
            ChannelInput(
                code,
                fig.efficiency_cents,
                usd_to_whole_cents(low) if low else 0,
                usd_to_whole_cents(high) if high is not None else None,
            )
        )
    result = allocate(total_cents, inputs)
    attributed_total = sum(f.sums.attributed_cents for f in figures.values())
    efficiency_total = sum((f.efficiency_cents for f in figures.values()), Fraction(0))
    channels: list[dict[str, Any]] = []
    for item in inputs:
        fig, s = figures[item.code], figures[item.code].sums
        proposed = result.amounts[item.code]
        current = (
            Fraction(s.attributed_cents, attributed_total) if attributed_total else Fraction(0)
        )
        channels.append(
            {
                "channel": item.code,
                "display_name": names.get(item.code, item.code),
                "attributed_revenue_usd": cents_usd(s.attributed_cents),
                "attributed_events": s.events,
                "ledger_rows": s.ledger_rows,
                "ledger_gross_usd": cents_usd(s.gross_cents),
                "ledger_refunded_usd": cents_usd(s.refunded_cents),
                "ledger_chargeback_usd": cents_usd(s.chargeback_cents),
                "ledger_net_usd": cents_usd(s.net_cents),
                "ledger_authorized_usd": cents_usd(s.authorized_cents),
                "net_ratio": rational_str(fig.net_ratio, RATIO_PLACES),
                "efficiency_usd": rational_str(fig.efficiency_cents / 100, EFFICIENCY_PLACES),
                "efficiency_share": rational_str(
                    fig.efficiency_cents / efficiency_total if efficiency_total else Fraction(0),
                    RATIO_PLACES,
                ),
                "current_share": rational_str(current, RATIO_PLACES),
                "proposed_usd": cents_usd(proposed),
                "proposed_share": rational_str(
                    Fraction(proposed, total_cents) if total_cents else Fraction(0), RATIO_PLACES
                ),
                "bounds": {
                    "min_usd": cents_usd(item.min_cents),
                    "max_usd": cents_usd(item.max_cents) if item.max_cents is not None else None,
                },
                "bound_binding": result.binding.get(item.code),
            }
        )
    channels.sort(key=lambda c: (-figures[c["channel"]].efficiency_cents, c["channel"]))
    notes = _notes(result, figures, attributed_total)
    if excluded:
        notes.append(
            f"Left out {len(excluded)} unpaid channel(s) ("
            + ", ".join(f"{e['channel']} {e['attributed_revenue_usd']} USD" for e in excluded)
            + " attributed revenue): they are not bought media, so a budget cannot buy more of "
            "them; set include_unpaid (or give them bounds) to include them."
        )
    recommendations = {
        "version": 1,
        "period": params["period"],
        "model_type": params["model_type"],
        "total_budget_usd": cents_usd(total_cents),
        "allocated_usd": cents_usd(result.allocated_cents),
        "unallocated_usd": cents_usd(result.unallocated_cents),
        "feasible": result.feasible,
        "attributed_revenue_usd": cents_usd(attributed_total),
        "channels": channels,
        "excluded_channels": excluded,
        "notes": notes,
        "method": METHOD,
    }
    return recommendations, result


def _notes(
    result: Allocation, figures: dict[str, ChannelEfficiency], attributed_total: int
) -> list[str]:
    notes = []
    if not figures:
        notes.append(
            "No channel had attributed revenue or ledger rows in the period and no "
            "bounds named one, so nothing could be allocated."
        )
    elif attributed_total == 0:
        notes.append(
            "No channel had attributed revenue in the period under this model; the "
            "budget is split equally within the bounds."
        )
    if result.unallocated_cents:
        notes.append(
            f"The channels' maximum bounds add up to {cents_usd(result.allocated_cents)} USD, "
            f"less than the total: {cents_usd(result.unallocated_cents)} USD is left unallocated."
        )
    return notes
