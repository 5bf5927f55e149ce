"""Cost rules: which month, and a tenant's monthly report with every amount as an exact string."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any, Final
from uuid import UUID

import asyncpg
from pydantic import BaseModel, Field

from budgets.money import CENTS_SCALE, exact_arithmetic
from budgets.prices import INPUT_KINDS, OUTPUT_KINDS
from llm_service.costs import ledger_repository, repository
from llm_service.db.pool import decode_json
from llm_service.db.queries import set_tenant
from llm_service.errors import InvalidRequest
from llm_service.periods import EARLIEST_DATE, LATEST_DATE

_MONTH_RE: Final = re.compile(r"([0-9]{4})-([0-9]{2})")
_MONTH_HINT: Final = "month must be a calendar month written YYYY-MM, e.g. 2025-01"
_FRACTION_SCALE: Final = Decimal("1e-20")
ZERO: Final = Decimal(0)


class CostLine(BaseModel):
    """Calls, tokens and exact cost of one slice of a month."""

    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: str = Field(description="exact decimal USD, e.g. '0.00000015'")
    cost_cents: str = Field(description="exact decimal cents at the ledger's scale (10 places)")


class ModelCost(CostLine):
    """A month's cost of one model."""

    model: str


class EndpointCost(CostLine):
    """A month's cost of one endpoint."""

    endpoint: str


class KindCost(BaseModel):
    """A month's tokens of one kind as billed (input, cache_read, cache_write, output, ...)."""

    kind: str
    direction: str = Field(description="input or output")
    tokens: int
    cost_usd: str = Field(description="exact decimal USD, as billed")
    cost_cents: str
    uncached_usd: str = Field(description="what these tokens would have cost at the base rate")
    uncached_cents: str


class DailyCost(CostLine):
    """One UTC day's settled cost of one model."""

    day: date
    model: str


class MonthlyCostReport(BaseModel):
    """What a tenant spent on LLM calls in a UTC month; amounts are exact decimal strings."""

    month: str = Field(description="YYYY-MM (UTC)")
    tenant_id: UUID
    currency: str = "USD"
    total_cost_usd: str
    total_cost_cents: str
    estimated_cost_usd: str = Field(description="the part of the total that is estimated")
    estimated_cost_cents: str
    calls: int
    input_tokens: int
    output_tokens: int
    by_model: list[ModelCost]
    by_endpoint: list[EndpointCost]
    by_kind: list[KindCost] = Field(
        default_factory=list, description="the calls billed from their usage, per kind of token"
    )
    cached_cost_usd: str = Field(default="0", description="spent on cache reads and cache writes")
    cached_cost_cents: str = Field(default="0.0000000000")
    uncached_cost_usd: str = Field(default="0", description="spent on every other kind of token")
    uncached_cost_cents: str = Field(default="0.0000000000")
    caching_saved_usd: str = Field(
        default="0", description="what the cached tokens would have cost more at the base rate"
    )
    caching_saved_cents: str = Field(default="0.0000000000")
    unitemised_cost_usd: str = Field(
        default="0",
        description="the part of the total not billed from usage (estimates, at reservation)",
    )
    unitemised_cost_cents: str = Field(default="0.0000000000")
    cap_usd: str
    cap_cents: str
    cap_used_fraction: str | None = Field(
        description="total / cap (exact, or rounded to 20 places); null when the cap is 0"
    )
    reserved_usd: str = Field(description="worst cases of this month's calls still in flight")
    reserved_cents: str
    daily: list[DailyCost]


def cents_text(cents: Decimal) -> str:
    """Cents as a fixed-point string at the ledger's 10 places ("0.0000150000"), never rounded."""
    with exact_arithmetic():
        return format(cents.quantize(CENTS_SCALE), "f")


def exact_cents_text(cents: Decimal) -> str:
    """Cents at the ledger's 10 places when they fit, else every digit (a per-kind cost is exact,
    not rounded up like a call's total)."""
    with localcontext() as ctx:
        ctx.prec = 60
        if cents == cents.quantize(CENTS_SCALE):
            return cents_text(cents)
    return format(cents.normalize(), "f")


def usd_text(cents: Decimal) -> str:
    """Cents as USD in the shortest exact fixed-point form ("0.00000015", "20", "0")."""
    with exact_arithmetic():
        usd = cents.scaleb(-2).normalize()
    return format(usd, "f") if usd != 0 else "0"


def fraction_text(part: Decimal, whole: Decimal) -> str | None:
    """part / whole as a fixed-point string (exact, or rounded to 20 places); None if whole is 0."""
    if whole == 0:
        return None
    with localcontext() as ctx:
        ctx.prec = 60
        value = (part / whole).quantize(_FRACTION_SCALE, rounding=ROUND_HALF_EVEN).normalize()
    return format(value, "f") if value != 0 else "0"


def parse_month(text: str | None, *, today: date | None = None) -> date:
    """The first day of a 'YYYY-MM' month; None means the current UTC month (422 if malformed)."""
    if text is None:
        now = today or datetime.now(UTC).date()
        return now.replace(day=1)
    match = _MONTH_RE.fullmatch(text)
    if match is None:
        raise InvalidRequest(_MONTH_HINT)
    year, month = int(match[1]), int(match[2])
    if year < 1 or not 1 <= month <= 12:
        raise InvalidRequest(f"{_MONTH_HINT}; the month number must be 01 to 12")
    first = date(year, month, 1)
    # As for every period the service reads: within 1970-01-01 to 2100-01-01.
    if not EARLIEST_DATE <= first < LATEST_DATE:
        raise InvalidRequest(
            f"the month {text} is outside {month_label(EARLIEST_DATE)} to "
            f"{month_label(LATEST_DATE - timedelta(days=1))}"
        )
    return first


def month_label(month: date) -> str:
    """'YYYY-MM' of a month's first day."""
    return f"{month.year:04d}-{month.month:02d}"


def _decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int | str):
        return Decimal(value)
    raise TypeError(f"not an exact amount: {type(value).__name__}")


def _breakdown(raw: Any) -> list[tuple[str, CostLine]]:
    """(key, line) pairs of a jsonb breakdown, most expensive first, then by name."""
    data: Mapping[str, Mapping[str, Any]] = decode_json(raw) if isinstance(raw, str) else raw or {}
    lines = [
        (
            key,
            _line(
                int(entry.get("calls", 0)),
                int(entry.get("input_tokens", 0)),
                int(entry.get("output_tokens", 0)),
                _decimal(entry.get("cost_cents", 0)),
            ),
        )
        for key, entry in data.items()
    ]
    return sorted(lines, key=lambda kv: (-_decimal(kv[1].cost_cents), kv[0]))


def _kinds(raw: Any) -> list[KindCost]:
    """The month's kind breakdown in the pricing order (input kinds, then output kinds)."""
    data: Mapping[str, Mapping[str, Any]] = decode_json(raw) if isinstance(raw, str) else raw or {}
    order = {kind: i for i, kind in enumerate((*INPUT_KINDS, *OUTPUT_KINDS))}
    lines = []
    for kind in sorted(data, key=lambda k: (order.get(k, len(order)), k)):
        entry = data[kind]
        cost, uncached = (
            _decimal(entry.get("cost_cents", 0)),
            _decimal(entry.get("uncached_cents", 0)),
        )
        lines.append(
            KindCost(
                kind=kind,
                direction="output" if kind in OUTPUT_KINDS else "input",
                tokens=int(entry.get("tokens", 0)),
                cost_usd=usd_text(cost),
                cost_cents=exact_cents_text(cost),
                uncached_usd=usd_text(uncached),
                uncached_cents=exact_cents_text(uncached),
            )
        )
    return lines


def _kind_totals(kinds: list[KindCost], total: Decimal) -> dict[str, str]:
    """Cached beside uncached spend, what caching saved, and what is not itemised, exactly."""
    with exact_arithmetic():
        cached = sum((Decimal(k.cost_cents) for k in kinds if k.kind.startswith("cache_")), ZERO)
        itemised = sum((Decimal(k.cost_cents) for k in kinds), ZERO)
        saved = sum((Decimal(k.uncached_cents) - Decimal(k.cost_cents) for k in kinds), ZERO)
        uncached = itemised - cached
        unitemised = total - itemised
    return {
        "cached_cost_usd": usd_text(cached),
        "cached_cost_cents": exact_cents_text(cached),
        "uncached_cost_usd": usd_text(uncached),
        "uncached_cost_cents": exact_cents_text(uncached),
        "caching_saved_usd": signed_usd_text(saved),
        "caching_saved_cents": exact_cents_text(saved),
        "unitemised_cost_usd": signed_usd_text(unitemised),
        "unitemised_cost_cents": exact_cents_text(unitemised),
    }


def signed_usd_text(cents: Decimal) -> str:
    """Like usd_text, for an amount that may be negative (a cache write costs more than base)."""
    return ("-" + usd_text(-cents)) if cents < 0 else usd_text(cents)


def _line(calls: int, input_tokens: int, output_tokens: int, cents: Decimal) -> CostLine:
    return CostLine(
        calls=calls,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=usd_text(cents),
        cost_cents=cents_text(cents),
    )


def build_report(
    tenant_id: UUID,
    month: date,
    monthly: Mapping[str, Any] | None,
    daily: Sequence[Mapping[str, Any]],
    cap_cents: Decimal,
    reserved_cents: Decimal,
) -> MonthlyCostReport:
    """Shape the report from the monthly row (None: no calls, so zeros), daily rows and the cap."""
    row: Mapping[str, Any] = monthly or {}
    total = _decimal(row.get("total_cost_cents", ZERO))
    estimated = _decimal(row.get("estimated_cost_cents", ZERO))
    kinds = _kinds(row.get("kind_breakdown"))
    return MonthlyCostReport(
        month=month_label(month),
        tenant_id=tenant_id,
        total_cost_usd=usd_text(total),
        total_cost_cents=cents_text(total),
        estimated_cost_usd=usd_text(estimated),
        estimated_cost_cents=cents_text(estimated),
        calls=int(row.get("total_calls", 0)),
        input_tokens=int(row.get("total_input_tokens", 0)),
        output_tokens=int(row.get("total_output_tokens", 0)),
        by_model=[
            ModelCost(model=key, **line.model_dump())
            for key, line in _breakdown(row.get("model_breakdown"))
        ],
        by_endpoint=[
            EndpointCost(endpoint=key, **line.model_dump())
            for key, line in _breakdown(row.get("endpoint_breakdown"))
        ],
        by_kind=kinds,
        **_kind_totals(kinds, total),
        cap_usd=usd_text(cap_cents),
        cap_cents=cents_text(cap_cents),
        cap_used_fraction=fraction_text(total, cap_cents),
        reserved_usd=usd_text(reserved_cents),
        reserved_cents=cents_text(reserved_cents),
        daily=[
            DailyCost(
                day=d["day"],
                model=d["model"],
                **_line(
                    int(d["calls"]),
                    int(d["input_tokens"]),
                    int(d["output_tokens"]),
                    _decimal(d["cost_cents"]),
                ).model_dump(),
            )
            for d in daily
        ],
    )


async def monthly_report(pool: asyncpg.Pool, tenant_id: UUID, month: date) -> MonthlyCostReport:
    """The tenant's report for a month, read from one consistent snapshot under RLS."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        # The monthly row, the daily rows and the reservations must agree with each other even
        # while calls are being settled, hence one REPEATABLE READ snapshot for all three reads.
        await set_tenant(conn, tenant_id)
        monthly = await repository.monthly_row(conn, tenant_id, month)
        daily = await repository.daily_spend(conn, tenant_id, month)
        cap_cents, reserved_cents = await ledger_repository.cap_and_reserved(conn, tenant_id, month)
    return build_report(tenant_id, month, monthly, daily, cap_cents, reserved_cents)
