"""Realistic, deterministic synthetic attribution data for one tenant, with known anomalies.

The generator plans the whole data set first with numpy (small arrays: per day, channel and
event type counts, sessions, timestamps, revenue), then writes it in chunks of events with
COPY in CSV form, so it does not depend on the connection's type codecs and a million events
load in minutes. Every value derives from `seed` and `today`; only row ids (and the order and
transaction references, which embed the seed) depend on the tenant, so two tenants generated
with the same seed hold equal data under different ids.

Injected anomalies (all recorded in the summary):
- the paid social channel (facebook_paid) loses ~40% of its revenue in the last full week;
- one ingestion source (shopify_webhook) floods the dead-letter table on two days;
- one channel (affiliate) has a burst of refunds and chargebacks on a week's purchases;
- for a week, some instagram_paid sessions were recorded as organic_social; a batch of channel
  corrections (events and their allocations) moves them back.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import time as clock
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import numpy as np
import numpy.typing as npt

from llm_service.errors import Conflict, InvalidRequest

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

DAYS = 90
CHUNK_EVENTS = 50_000
MIN_EVENTS = 1_000
MAX_EVENTS = 5_000_000
EVENT_TYPES = ("page_view", "click", "add_to_cart", "signup", "conversion", "purchase")
PAGE_VIEW, CLICK, ADD_TO_CART, SIGNUP, CONVERSION, PURCHASE = range(6)
MODEL_TYPES = ("last_touch", "first_touch", "linear", "time_decay", "position_based")
MODEL_VERSION = "1"
MODEL_CONFIDENCE = {
    "last_touch": 0.62,
    "first_touch": 0.55,
    "linear": 0.71,
    "time_decay": 0.78,
    "position_based": 0.74,
}
DAY_US = 86_400_000_000
WEEKDAY_VOLUME = (1.0, 1.03, 1.02, 0.98, 0.92, 0.78, 0.82)  # Monday .. Sunday
# Relative traffic per UTC hour, 00 .. 23: evenings peak on weekdays, weekends are flatter.
WEEKDAY_HOURS = (3, 2, 1.5, 1.2, 1.2, 2, 4, 7, 10, 11, 11.5, 12)
WEEKDAY_HOURS += (12.5, 12, 11.5, 11, 11, 11.5, 13, 14.5, 15, 13, 9, 5.5)
WEEKEND_HOURS = (4, 3, 2, 1.5, 1.2, 1.2, 2, 3.5, 6, 9, 11, 12.5)
WEEKEND_HOURS += (13, 13, 12.5, 12, 12, 12.5, 13, 13.5, 13, 11.5, 8.5, 6)
SESSION_CONTINUE = 1 - 1 / 2.8  # mean session length 2.8 events

# Anomaly strengths.
DROP_CONVERSION_FACTOR = 0.72
DROP_ORDER_VALUE_FACTOR = 0.83  # 0.72 * 0.83 ~ 0.60: revenue down ~40%
MISTAG_SHARE = 0.35
REFUND_RATE, CHARGEBACK_RATE = 0.03, 0.004
BURST_REFUND_RATE, BURST_CHARGEBACK_RATE = 0.22, 0.12
DEAD_EVENT_RATE = 0.004
SPIKE_SOURCE = "shopify_webhook"
PII_EVENT_RATE = 0.004
PII_DEAD_EVENT_RATE = 0.08
TAX_RATE = 0.0825


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InjectedAnomaly:
    """One anomaly deliberately planted in the data, with where and when to find it."""

    kind: str
    channel: str | None
    start: date
    end: date
    description: str
    source: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "kind": self.kind,
            "channel": self.channel,
            "source": self.source,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "description": self.description,
        }


@dataclass(frozen=True)
class DemoDataSummary:
    """What `generate_demo_data` wrote: rows per table, totals and the anomalies injected."""

    tenant_id: UUID
    seed: int
    start_date: date
    end_date: date
    channels: tuple[str, ...]
    attribution_events: int
    revenue_events: int
    attribution_allocations: int
    revenue_ledger: int
    revenue_state_transitions: int
    refunds: int
    chargebacks: int
    dead_events: int
    reconciliation_runs: int
    channel_assignment_corrections: int
    pii_payloads: int
    event_revenue_cents: int
    ledger_revenue_cents: int
    anomalies: tuple[InjectedAnomaly, ...]
    elapsed_seconds: float = field(default=0.0, compare=False)

    def table_counts(self) -> dict[str, int]:
        """Rows written per table."""
        return {
            "attribution_events": self.attribution_events,
            "attribution_allocations": self.attribution_allocations,
            "revenue_ledger": self.revenue_ledger,
            "revenue_state_transitions": self.revenue_state_transitions,
            "dead_events": self.dead_events,
            "reconciliation_runs": self.reconciliation_runs,
            "channel_assignment_corrections": self.channel_assignment_corrections,
        }

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (for the command line)."""
        return {
            "tenant_id": str(self.tenant_id),
            "seed": self.seed,
            "start_date": self.start_date.isoformat(),
            "end_date": self.end_date.isoformat(),
            "channels": list(self.channels),
            "counts": self.table_counts(),
            "revenue_events": self.revenue_events,
            "refunds": self.refunds,
            "chargebacks": self.chargebacks,
            "pii_payloads": self.pii_payloads,
            "event_revenue_cents": self.event_revenue_cents,
            "ledger_revenue_cents": self.ledger_revenue_cents,
            "anomalies": [a.as_dict() for a in self.anomalies],
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


class DemoDataExists(Conflict):
    """The tenant already holds demo data generated with this seed."""


async def generate_demo_data(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    *,
    events: int = 20_000,
    seed: int = 7,
    today: date | None = None,
) -> DemoDataSummary:
    """Write 90 days of synthetic attribution data for the tenant set on `conn`'s transaction."""
    started = clock.perf_counter()
    if not MIN_EVENTS <= events <= MAX_EVENTS:
        raise InvalidRequest(f"events must be between {MIN_EVENTS} and {MAX_EVENTS}")
    if seed < 0:
        raise InvalidRequest("seed must be >= 0")
    await _check_target(conn, tenant_id, seed)
    channels = await _load_channels(conn)
    ctx = _context(tenant_id, seed, today or datetime.now(UTC).date(), channels)
    plan = _plan(ctx, events)
    writer = _Writer(conn, ctx)
    await writer.write_runs()
    for number, start in enumerate(range(0, events, CHUNK_EVENTS)):
        await writer.write_chunk(plan, number, slice(start, min(start + CHUNK_EVENTS, events)))
    await writer.write_dead_events(plan)
    await writer.finish()
    return writer.summary(plan, clock.perf_counter() - started)


# --------------------------------------------------------------------------------------------
# Channels and the scenario
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Profile:
    """How a channel behaves: traffic share, weekend factor, rates, values, campaigns, UTM."""

    share: float
    weekend: float
    purchase: float
    conversion: float
    signup: float
    order_value: int
    lead_value: int
    campaigns: tuple[str, ...] = ()
    utm: tuple[str, str] | None = None


_FAMILY_PROFILES: dict[str, _Profile] = {
    "paid_social": _Profile(0.05, 1.2, 0.040, 0.010, 0.020, 5500, 2000),
    "paid_search": _Profile(0.06, 0.85, 0.065, 0.020, 0.020, 7500, 3000),
    "shopping": _Profile(0.05, 1.1, 0.080, 0.002, 0.010, 5000, 1500),
    "display": _Profile(0.04, 1.0, 0.010, 0.004, 0.006, 6000, 1500),
    "video": _Profile(0.03, 1.2, 0.012, 0.003, 0.008, 6000, 1500),
    "affiliate": _Profile(0.04, 1.1, 0.090, 0.002, 0.010, 7000, 1500),
    "organic_search": _Profile(0.10, 0.85, 0.050, 0.015, 0.025, 6500, 2500),
    "organic_social": _Profile(0.04, 1.3, 0.020, 0.005, 0.015, 5000, 2000),
    "email": _Profile(0.05, 0.8, 0.080, 0.020, 0.005, 6000, 2500),
    "messaging": _Profile(0.02, 1.0, 0.070, 0.010, 0.003, 4500, 2000),
    "referral": _Profile(0.03, 1.0, 0.050, 0.010, 0.020, 6500, 2500),
    "direct": _Profile(0.05, 1.1, 0.080, 0.020, 0.030, 7000, 3000),
}
_DEFAULT_PROFILE = _Profile(0.02, 1.0, 0.030, 0.010, 0.010, 6000, 2000)

_CODE_PROFILES: dict[str, _Profile] = {
    "facebook_paid": _Profile(
        0.16,
        1.15,
        0.060,
        0.015,
        0.020,
        6500,
        2500,
        ("fb_prospecting_lookalike", "fb_retargeting_dpa", "fb_advantage_plus"),
        ("facebook", "paid_social"),
    ),
    "instagram_paid": _Profile(
        0.08,
        1.25,
        0.045,
        0.010,
        0.020,
        5500,
        2000,
        ("ig_reels_spring", "ig_stories_retargeting"),
        ("instagram", "paid_social"),
    ),
    "tiktok_paid": _Profile(
        0.05,
        1.3,
        0.030,
        0.005,
        0.015,
        3500,
        1500,
        ("tt_spark_ugc", "tt_topview_launch"),
        ("tiktok", "paid_social"),
    ),
    "linkedin_paid": _Profile(
        0.02,
        0.35,
        0.005,
        0.040,
        0.030,
        9000,
        12000,
        ("li_abm_enterprise", "li_lead_gen_webinar"),
        ("linkedin", "paid_social"),
    ),
    "google_search_paid": _Profile(
        0.14,
        0.9,
        0.070,
        0.020,
        0.020,
        7500,
        3000,
        ("gs_brand_exact", "gs_nonbrand_generic", "gs_competitor"),
        ("google", "cpc"),
    ),
    "bing_search_paid": _Profile(
        0.03, 0.7, 0.065, 0.020, 0.020, 8000, 3000, ("bing_brand", "bing_nonbrand"), ("bing", "cpc")
    ),
    "google_shopping": _Profile(
        0.07,
        1.1,
        0.080,
        0.002,
        0.010,
        5000,
        1500,
        ("pmax_all_products", "shopping_bestsellers"),
        ("google", "shopping"),
    ),
    "display_programmatic": _Profile(
        0.05,
        1.0,
        0.010,
        0.004,
        0.006,
        6000,
        1500,
        ("dv360_prospecting", "ttd_retargeting"),
        ("dv360", "display"),
    ),
    "youtube_video": _Profile(
        0.03,
        1.2,
        0.012,
        0.003,
        0.008,
        6000,
        1500,
        ("yt_instream_brand", "yt_shorts_demand_gen"),
        ("youtube", "video"),
    ),
    "affiliate": _Profile(
        0.04,
        1.1,
        0.090,
        0.002,
        0.010,
        7000,
        1500,
        ("aff_couponfollow", "aff_rakuten", "aff_creator_network"),
        ("partner", "affiliate"),
    ),
    "organic_search": _Profile(0.12, 0.85, 0.050, 0.015, 0.025, 6500, 2500),
    "organic_social": _Profile(0.04, 1.3, 0.020, 0.005, 0.015, 5000, 2000),
    "email": _Profile(
        0.06,
        0.8,
        0.080,
        0.020,
        0.005,
        6000,
        2500,
        ("em_weekly_newsletter", "em_abandoned_cart", "em_winback"),
        ("newsletter", "email"),
    ),
    "sms": _Profile(
        0.02, 1.0, 0.070, 0.010, 0.003, 4500, 2000, ("sms_flash_sale", "sms_back_in_stock"), None
    ),
    "referral": _Profile(0.03, 1.0, 0.050, 0.010, 0.020, 6500, 2500),
    "direct": _Profile(0.05, 1.1, 0.080, 0.020, 0.030, 7000, 3000),
}


@dataclass(frozen=True)
class _Channel:
    code: str
    family: str
    is_paid: bool
    profile: _Profile


@dataclass(frozen=True)
class _Window:
    start: date
    days: int

    @property
    def end(self) -> date:
        return self.start + timedelta(days=self.days - 1)


@dataclass(frozen=True)
class _Scenario:
    """Where the anomalies go: channel indexes and date windows."""

    drop_channel: int
    drop_week: _Window
    refund_channel: int
    refund_week: _Window
    dead_spike: _Window
    mistag_from: int | None
    mistag_to: int | None
    mistag_week: _Window


@dataclass(frozen=True)
class _Run:
    id: str
    state: str
    window: _Window
    ran_at: datetime | None
    attempt: int
    error: str | None


@dataclass(frozen=True)
class _Context:
    tenant: str
    tenant_id: UUID
    seed: int
    start: date
    today: date
    base: datetime
    channels: tuple[_Channel, ...]
    scenario: _Scenario
    runs: tuple[_Run, ...]

    def day_index(self, day: date) -> int:
        return (day - self.start).days


async def _check_target(conn: asyncpg.Connection, tenant_id: UUID, seed: int) -> None:
    current = await conn.fetchval("SELECT current_setting('app.current_tenant_id', true)")
    if str(current or "").strip().lower() != str(tenant_id):
        raise InvalidRequest("the transaction's tenant (app.current_tenant_id) is not tenant_id")
    exists = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM attribution_events"
        " WHERE tenant_id = $1 AND idempotency_key = $2)",
        tenant_id,
        f"demo-{seed}-0",
    )
    if exists:
        raise DemoDataExists(f"tenant already holds demo data for seed {seed}")


async def _load_channels(conn: asyncpg.Connection) -> tuple[_Channel, ...]:
    rows = await conn.fetch(
        "SELECT code, family, is_paid FROM channel_taxonomy WHERE is_active ORDER BY code"
    )
    if len(rows) < 2:
        raise InvalidRequest("channel_taxonomy needs at least two active channels")
    return tuple(
        _Channel(r["code"], r["family"], r["is_paid"], _profile_for(r["code"], r["family"]))
        for r in rows
    )


def _profile_for(code: str, family: str) -> _Profile:
    if code in _CODE_PROFILES:
        return _CODE_PROFILES[code]
    base = _FAMILY_PROFILES.get(family, _DEFAULT_PROFILE)
    campaigns = (f"{code}_always_on",) if family in _PAID_FAMILIES else ()
    utm = (code.split("_")[0], family) if campaigns else None
    return _Profile(
        base.share,
        base.weekend,
        base.purchase,
        base.conversion,
        base.signup,
        base.order_value,
        base.lead_value,
        campaigns,
        utm,
    )


_PAID_FAMILIES = {"paid_social", "paid_search", "shopping", "display", "video", "affiliate"}


def _pick(
    channels: Sequence[_Channel],
    preferred: str,
    fallback: Callable[[_Channel], bool],
    exclude: Iterable[int] = (),
) -> int | None:
    codes = [c.code for c in channels]
    if preferred in codes:
        return codes.index(preferred)
    skip = set(exclude)
    for index, channel in enumerate(channels):
        if index not in skip and fallback(channel):
            return index
    return None


def _context(tenant_id: UUID, seed: int, today: date, channels: tuple[_Channel, ...]) -> _Context:
    start = today - timedelta(days=DAYS)
    last_monday = today - timedelta(days=today.weekday() + 7)
    drop = _pick(channels, "facebook_paid", lambda c: c.family == "paid_social")
    drop = drop if drop is not None else _pick(channels, "", lambda c: c.is_paid) or 0
    refund = _pick(channels, "affiliate", lambda c: c.is_paid, exclude=[drop])
    refund = refund if refund is not None else (drop + 1) % len(channels)
    mistag_from = _pick(channels, "organic_social", lambda c: not c.is_paid)
    mistag_to = _pick(
        channels, "instagram_paid", lambda c: c.family == "paid_social", exclude=[drop]
    )
    if mistag_from == mistag_to:
        mistag_to = None
    scenario = _Scenario(
        drop_channel=drop,
        drop_week=_Window(last_monday, 7),
        refund_channel=refund,
        refund_week=_Window(last_monday - timedelta(days=28), 7),
        dead_spike=_Window(last_monday - timedelta(days=12), 2),
        mistag_from=mistag_from,
        mistag_to=mistag_to,
        mistag_week=_Window(last_monday - timedelta(days=49), 7),
    )
    base = datetime(start.year, start.month, start.day, tzinfo=UTC)
    ids = _IdSource(seed, tenant_id, 0)
    return _Context(
        str(tenant_id), tenant_id, seed, start, today, base, channels, scenario, _runs(start, ids)
    )


def _runs(start: date, ids: _IdSource) -> tuple[_Run, ...]:
    """Weekly Stripe reconciliations (Mondays 02:00 UTC); one failed and was retried next day."""
    first_monday = start + timedelta(days=(7 - start.weekday()) % 7)
    weeks = [first_monday + timedelta(days=7 * k) for k in range(DAYS // 7)]
    weeks = [w for w in weeks if w + timedelta(days=7) <= start + timedelta(days=DAYS)]
    runs: list[_Run] = []
    for number, week in enumerate(weeks):
        run_day = week + timedelta(days=7)
        ran_at = datetime(run_day.year, run_day.month, run_day.day, 2, 7, tzinfo=UTC)
        if number == len(weeks) - 4:
            error = "stripe balance_transactions: HTTP 429 rate limited after 5 retries"
            runs.append(_Run(ids.uuid(), "failed", _Window(week, 7), ran_at, 1, error))
            ran_at += timedelta(days=1, hours=7)
            runs.append(_Run(ids.uuid(), "completed", _Window(week, 7), ran_at, 2, None))
        else:
            runs.append(_Run(ids.uuid(), "completed", _Window(week, 7), ran_at, 1, None))
    next_window = _Window(weeks[-1] + timedelta(days=7) if weeks else first_monday, 7)
    runs.append(_Run(ids.uuid(), "idle", next_window, None, 1, None))
    return tuple(runs)


# --------------------------------------------------------------------------------------------
# Ids and helpers
# --------------------------------------------------------------------------------------------


class _IdSource:
    """Deterministic version-4 UUID strings drawn from (seed, tenant, stream)."""

    def __init__(self, seed: int, tenant_id: UUID, stream: int) -> None:
        self._rng = np.random.default_rng([seed, tenant_id.int, stream, 0x1D5])
        self._spare: list[str] = []

    def uuids(self, count: int) -> list[str]:
        raw = self._rng.integers(0, 256, size=(count, 16), dtype=np.uint8)
        raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
        raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
        text = raw.tobytes().hex()
        return [
            f"{text[k : k + 8]}-{text[k + 8 : k + 12]}-{text[k + 12 : k + 16]}-"
            f"{text[k + 16 : k + 20]}-{text[k + 20 : k + 32]}"
            for k in range(0, 32 * count, 32)
        ]

    def uuid(self) -> str:
        if not self._spare:
            self._spare = self.uuids(4096)[::-1]
        return self._spare.pop()


def _apportion(rng: np.random.Generator, total: int, weights: FloatArray) -> IntArray:
    """Split `total` into integer parts proportional to `weights` (random remainder)."""
    exact = total * weights / weights.sum()
    parts = np.floor(exact).astype(np.int64)
    remainder = int(total - parts.sum())
    if remainder > 0:
        frac = exact - parts
        if np.count_nonzero(frac > 1e-12) >= remainder:
            chosen = rng.choice(len(weights), size=remainder, replace=False, p=frac / frac.sum())
        else:
            chosen = np.argsort(-frac, kind="stable")[:remainder]
        parts[chosen] += 1
    return parts


def _split_cents(total: int, weights: Sequence[float]) -> list[int]:
    """Largest-remainder split of `total` cents: the parts sum exactly to `total`."""
    norm = sum(weights)
    exact = [total * w / norm for w in weights]
    parts = [math.floor(x) for x in exact]
    order = sorted(range(len(parts)), key=lambda k: (parts[k] - exact[k], k))
    for k in order[: total - sum(parts)]:
        parts[k] += 1
    return parts


def _mix64(values: npt.NDArray[np.uint64], salt: int) -> npt.NDArray[np.uint64]:
    """splitmix64: a stable pseudo-random 64-bit value per input."""
    with np.errstate(over="ignore"):
        z = values + np.uint64((0x9E3779B97F4A7C15 * (salt + 1)) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _timestamps(base: datetime, offsets_us: IntArray) -> list[str]:
    """ISO-8601 UTC strings for microsecond offsets from `base`."""
    origin = np.datetime64(base.replace(tzinfo=None), "us")
    moments = origin + offsets_us.astype("timedelta64[us]")
    text: list[str] = np.datetime_as_string(moments, unit="us", timezone="UTC").tolist()
    return text


def _order_id(seed: int, number: int) -> str:
    return f"ORD-{seed}-{number:07d}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# --------------------------------------------------------------------------------------------
# The plan: every event's day, channel, type, time, session and revenue
# --------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """Per-event arrays in time order (index = event number) plus per-session arrays."""

    t_us: IntArray
    channel: IntArray
    true_channel: IntArray
    etype: IntArray
    revenue: IntArray
    session: IntArray
    campaign: IntArray
    mistagged: BoolArray
    status: IntArray
    order_no: IntArray
    day_totals: IntArray


def _plan(ctx: _Context, events: int) -> _Plan:
    rng = np.random.default_rng([ctx.seed, 0x9A1])
    days = _day_totals(rng, ctx, events)
    cells = _channel_cells(rng, ctx, days)
    types = _type_cells(rng, ctx, cells)
    counts = types.reshape(-1)
    grid = np.arange(counts.size, dtype=np.int64)
    ntypes, nchan = len(EVENT_TYPES), len(ctx.channels)
    flat = np.repeat(grid, counts)
    day, chan, etype = flat // (nchan * ntypes), (flat // ntypes) % nchan, flat % ntypes
    t_us, session, order = _sessions(rng, ctx, day, chan, etype)
    day, chan, etype = day[order], chan[order], etype[order]
    revenue = _revenue(rng, ctx, day, chan, etype)
    campaign, mistagged = _campaigns(rng, ctx, day, chan, session)
    recorded = chan.copy()
    if ctx.scenario.mistag_from is not None:
        recorded[mistagged] = ctx.scenario.mistag_from
    status = _statuses(rng, t_us)
    order_no = np.cumsum(etype == PURCHASE)
    return _Plan(
        t_us, recorded, chan, etype, revenue, session, campaign, mistagged, status, order_no, days
    )


def _day_totals(rng: np.random.Generator, ctx: _Context, events: int) -> IntArray:
    weekday = np.array([(ctx.start + timedelta(days=d)).weekday() for d in range(DAYS)])
    trend = 1 + 0.08 * np.arange(DAYS) / (DAYS - 1)
    weights = np.array(WEEKDAY_VOLUME)[weekday] * trend * rng.lognormal(0, 0.05, DAYS)
    return _apportion(rng, events, weights)


def _is_weekend(day: date) -> bool:
    return day.weekday() >= 5


def _channel_cells(rng: np.random.Generator, ctx: _Context, days: IntArray) -> IntArray:
    share = np.array([c.profile.share for c in ctx.channels])
    weekend = np.array([c.profile.weekend for c in ctx.channels])
    cells = np.zeros((DAYS, len(ctx.channels)), dtype=np.int64)
    for d in range(DAYS):
        factor = weekend if _is_weekend(ctx.start + timedelta(days=d)) else 1.0
        weights = share * factor * rng.lognormal(0, 0.04, share.size)
        cells[d] = _apportion(rng, int(days[d]), weights)
    return cells


def _type_mix(profile: _Profile, paid: bool, conversion_factor: float) -> FloatArray:
    purchase = profile.purchase * conversion_factor
    conversion = profile.conversion * conversion_factor
    cart = 1.6 * profile.purchase + 0.02
    click = 0.22 if paid else 0.12
    rest = 1 - (purchase + conversion + profile.signup + cart + click)
    return np.array([rest, click, cart, profile.signup, conversion, purchase])


def _type_cells(rng: np.random.Generator, ctx: _Context, cells: IntArray) -> IntArray:
    out = np.zeros((*cells.shape, len(EVENT_TYPES)), dtype=np.int64)
    drop = ctx.scenario.drop_week
    for d in range(DAYS):
        day = ctx.start + timedelta(days=d)
        weekend_cr = 1.08 if _is_weekend(day) else 1.0
        for c, channel in enumerate(ctx.channels):
            factor = weekend_cr
            if c == ctx.scenario.drop_channel and drop.start <= day <= drop.end:
                factor *= DROP_CONVERSION_FACTOR
            mix = _type_mix(channel.profile, channel.is_paid, factor)
            out[d, c] = _apportion(rng, int(cells[d, c]), mix)
    return out


def _hour_weights(weekend: bool) -> FloatArray:
    weights = np.array(WEEKEND_HOURS if weekend else WEEKDAY_HOURS, dtype=np.float64)
    return weights / weights.sum()


def _sessions(
    rng: np.random.Generator, ctx: _Context, day: IntArray, chan: IntArray, etype: IntArray
) -> tuple[IntArray, IntArray, IntArray]:
    """Group each day-channel's events into sessions; time them; return times in time order."""
    n = day.size
    cell = day * len(ctx.channels) + chan
    shuffle = np.lexsort((rng.random(n), cell))
    cell, day, etype = cell[shuffle], day[shuffle], etype[shuffle]
    starts = rng.random(n) >= SESSION_CONTINUE
    starts[np.r_[True, cell[1:] != cell[:-1]]] = True
    session = np.cumsum(starts) - 1
    inner = np.lexsort((rng.random(n), etype, session))
    shuffle, session, day = shuffle[inner], session[inner], day[inner]
    first = np.flatnonzero(np.r_[True, session[1:] != session[:-1]])
    start_sec = _session_starts(rng, ctx, day[first])
    gaps = rng.exponential(70.0, n)
    gaps[first] = 0.0
    elapsed = np.cumsum(gaps)
    offset = elapsed - elapsed[first][session]
    seconds = np.minimum(start_sec[session] + offset, 86_399.999)
    t_us = day * DAY_US + (seconds * 1e6).astype(np.int64)
    by_time = np.argsort(t_us, kind="stable")
    return t_us[by_time], session[by_time], shuffle[by_time]


def _session_starts(rng: np.random.Generator, ctx: _Context, day: IntArray) -> FloatArray:
    weekday = (day + ctx.start.weekday()) % 7
    hours = np.empty(day.size, dtype=np.int64)
    for weekend in (False, True):
        mask = (weekday >= 5) == weekend
        hours[mask] = rng.choice(24, size=int(mask.sum()), p=_hour_weights(weekend))
    seconds: FloatArray = hours * 3600.0 + rng.random(day.size) * 3600.0
    return seconds


def _revenue(
    rng: np.random.Generator, ctx: _Context, day: IntArray, chan: IntArray, etype: IntArray
) -> IntArray:
    """Order and lead values, stratified per channel-week so weekly totals are steady."""
    revenue = np.zeros(day.size, dtype=np.int64)
    paying = np.flatnonzero((etype == PURCHASE) | (etype == CONVERSION))
    week = (day[paying] + ctx.start.weekday()) // 7
    group = (chan[paying] * 64 + week) * 8 + etype[paying]
    order = np.lexsort((rng.random(paying.size), group))
    sorted_group = group[order]
    group_start = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    sizes = np.diff(np.r_[group_start, sorted_group.size])
    rank = np.arange(sorted_group.size) - np.repeat(group_start, sizes)
    u = np.empty(paying.size)
    u[order] = (rank + rng.random(paying.size)) / np.repeat(sizes, sizes)
    u = np.clip(u, 1e-4, 1 - 1e-4)
    median = _medians(ctx, day[paying], chan[paying], etype[paying])
    spread = np.where(etype[paying] == PURCHASE, 0.33, 0.22)
    values = median * np.exp(spread * np.log(u / (1 - u)))
    revenue[paying] = np.clip(np.round(values), 199, 500_000).astype(np.int64)
    return revenue


def _medians(ctx: _Context, day: IntArray, chan: IntArray, etype: IntArray) -> FloatArray:
    order_value = np.array([c.profile.order_value for c in ctx.channels], dtype=np.float64)
    lead_value = np.array([c.profile.lead_value for c in ctx.channels], dtype=np.float64)
    median = np.where(etype == PURCHASE, order_value[chan], lead_value[chan])
    drop = ctx.scenario.drop_week
    lo, hi = ctx.day_index(drop.start), ctx.day_index(drop.end)
    hit = (chan == ctx.scenario.drop_channel) & (day >= lo) & (day <= hi)
    result: FloatArray = np.where(hit, median * DROP_ORDER_VALUE_FACTOR, median)
    return result


def _campaigns(
    rng: np.random.Generator, ctx: _Context, day: IntArray, chan: IntArray, session: IntArray
) -> tuple[IntArray, BoolArray]:
    """A campaign pick per session, and which sessions are mis-tagged paid traffic."""
    sessions = int(session.max()) + 1 if session.size else 0
    pick = rng.integers(0, 1 << 30, size=sessions)
    mistag_session = rng.random(sessions) < MISTAG_SHARE
    sc = ctx.scenario
    mistagged = np.zeros(day.size, dtype=np.bool_)
    if sc.mistag_from is not None and sc.mistag_to is not None:
        lo, hi = ctx.day_index(sc.mistag_week.start), ctx.day_index(sc.mistag_week.end)
        in_week = (chan == sc.mistag_to) & (day >= lo) & (day <= hi)
        mistagged = in_week & mistag_session[session]
    return pick[session].astype(np.int64), mistagged


def _statuses(rng: np.random.Generator, t_us: IntArray) -> IntArray:
    """0 processed, 1 pending (recent events), 2 failed (rare)."""
    status = np.zeros(t_us.size, dtype=np.int64)
    recent = t_us >= DAYS * DAY_US - 6 * 3_600_000_000
    status[recent & (rng.random(t_us.size) < 0.5)] = 1
    status[rng.random(t_us.size) < 0.002] = 2
    return status


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------

EVENT_COLUMNS = (
    "id",
    "tenant_id",
    "occurred_at",
    "event_timestamp",
    "ingested_at",
    "session_id",
    "correlation_id",
    "external_event_id",
    "event_type",
    "channel",
    "campaign_id",
    "revenue_cents",
    "conversion_value_cents",
    "currency",
    "raw_payload",
    "idempotency_key",
    "processing_status",
    "processed_at",
    "retry_count",
)
ALLOCATION_COLUMNS = (
    "id",
    "tenant_id",
    "event_id",
    "channel_code",
    "allocated_revenue_cents",
    "allocation_ratio",
    "model_type",
    "model_version",
    "confidence_score",
    "credible_interval_lower_cents",
    "credible_interval_upper_cents",
    "convergence_r_hat",
    "effective_sample_size",
    "verified",
    "verification_source",
    "verified_at",
    "created_at",
    "updated_at",
)
LEDGER_COLUMNS = (
    "id",
    "tenant_id",
    "transaction_id",
    "order_id",
    "allocation_id",
    "state",
    "amount_cents",
    "revenue_cents",
    "currency",
    "is_verified",
    "verified_at",
    "verification_source",
    "reconciliation_run_id",
    "posted_at",
    "metadata",
    "created_at",
    "updated_at",
)
CORRECTION_COLUMNS = (
    "id",
    "tenant_id",
    "entity_type",
    "entity_id",
    "from_channel",
    "to_channel",
    "corrected_by",
    "corrected_at",
    "reason",
)
RUN_COLUMNS = (
    "id",
    "tenant_id",
    "state",
    "last_run_at",
    "error_message",
    "run_metadata",
    "created_at",
    "updated_at",
)
DEAD_EVENT_COLUMNS = (
    "id",
    "tenant_id",
    "source",
    "event_type",
    "error_type",
    "error_code",
    "error_message",
    "error_detail",
    "error_traceback",
    "raw_payload",
    "retry_count",
    "last_retry_at",
    "remediation_status",
    "remediation_notes",
    "resolved_at",
    "ingested_at",
    "updated_at",
)

Row = tuple[Any, ...]

_PATHS = ("/", "/collections/new", "/products/trail-runner", "/products/merino-hoodie", "/sale")
_DEVICES = (
    {"type": "mobile", "os": "iOS", "browser": "Safari"},
    {"type": "mobile", "os": "Android", "browser": "Chrome"},
    {"type": "desktop", "os": "macOS", "browser": "Chrome"},
    {"type": "desktop", "os": "Windows", "browser": "Edge"},
    {"type": "tablet", "os": "iPadOS", "browser": "Safari"},
)
_REFERRERS = {
    "organic_search": (
        "https://www.google.com/",
        "https://www.bing.com/",
        "https://duckduckgo.com/",
    ),
    "organic_social": ("https://www.instagram.com/", "https://t.co/", "https://www.reddit.com/"),
    "referral": ("https://www.outdoorgearlab.com/", "https://news.ycombinator.com/"),
}
_SKUS = ("SKU-TR-204", "SKU-MH-118", "SKU-SK-031", "SKU-CP-990", "SKU-BT-455", "SKU-GL-072")
_FIRST = ("jane", "omar", "li", "maria", "tom", "aisha", "sven", "ana")
_LAST = ("doe", "haddad", "wei", "garcia", "baker", "khan", "nilsson", "silva")


@dataclass
class _Journey:
    """A revenue event's touchpoints (first to last) and their ages in days."""

    event_id: str
    event_index: int
    revenue: int
    channels: list[int]
    ages: list[float]
    created: datetime


def _journey(r: random.Random, cum: list[float], last: int, count: int) -> list[int]:
    picks = [last]
    while len(picks) < count:
        candidate = r.choices(range(len(cum)), cum_weights=cum)[0]
        if candidate not in picks:
            picks.append(candidate)
    return picks[::-1]


def _model_weights(model: str, ages: Sequence[float]) -> list[float]:
    n = len(ages)
    if model == "last_touch":
        return [0.0] * (n - 1) + [1.0]
    if model == "first_touch":
        return [1.0] + [0.0] * (n - 1)
    if model == "linear":
        return [1.0] * n
    if model == "time_decay":
        return [0.5 ** (age / 7.0) for age in ages]
    if n <= 2:
        return [1.0] * n
    middle = 0.2 / (n - 2)
    return [0.4] + [middle] * (n - 2) + [0.4]


class _Writer:
    """Writes the plan chunk by chunk and keeps the counts for the summary."""

    def __init__(self, conn: asyncpg.Connection, ctx: _Context) -> None:
        self.conn = conn
        self.ctx = ctx
        self.counts: dict[str, int] = dict.fromkeys(
            (
                "events",
                "revenue_events",
                "allocations",
                "ledger",
                "transitions",
                "refunds",
                "chargebacks",
                "dead_events",
                "corrections",
                "pii",
                "event_revenue",
                "ledger_revenue",
            ),
            0,
        )
        self.state_changes: list[tuple[str, str, str, str]] = []
        shares = [c.profile.share for c in ctx.channels]
        total = sum(shares)
        self.cum_shares = [sum(shares[: k + 1]) / total for k in range(len(shares))]

    # -- copy ---------------------------------------------------------------------------------

    async def _copy(self, table: str, columns: Sequence[str], rows: Iterable[Row]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        data = io.BytesIO(buffer.getvalue().encode())
        if data.getbuffer().nbytes:
            await self.conn.copy_to_table(table, source=data, columns=list(columns), format="csv")

    # -- reconciliation runs ------------------------------------------------------------------

    async def write_runs(self) -> None:
        rows = [self._run_row(run) for run in self.ctx.runs]
        await self._copy("reconciliation_runs", RUN_COLUMNS, rows)

    def _run_row(self, run: _Run) -> Row:
        meta = {
            "kind": "revenue",
            "processor": "stripe",
            "window_start": run.window.start.isoformat(),
            "window_end": run.window.end.isoformat(),
            "attempt": run.attempt,
        }
        created = run.ran_at or datetime.combine(self.ctx.today, datetime.min.time(), UTC)
        finished = run.ran_at + timedelta(minutes=4) if run.ran_at else created
        return (
            run.id,
            self.ctx.tenant,
            run.state,
            _iso(run.ran_at) if run.ran_at else None,
            run.error,
            _dumps(meta),
            _iso(created),
            _iso(finished),
        )

    def _run_for(self, plan: _Plan, i: int) -> _Run | None:
        """The completed reconciliation that verified event i's purchase (by its day)."""
        day = self.ctx.start + timedelta(days=int(plan.t_us[i]) // DAY_US)
        for run in self.ctx.runs:
            if run.state == "completed" and run.window.start <= day <= run.window.end:
                return run
        return None

    # -- events -------------------------------------------------------------------------------

    async def write_chunk(self, plan: _Plan, number: int, part: slice) -> None:
        rng = np.random.default_rng([self.ctx.seed, 0xC4, number])
        r = random.Random(self.ctx.seed * 1_000_003 + number)
        ids = _IdSource(self.ctx.seed, self.ctx.tenant_id, 10 + number)
        event_ids = ids.uuids(part.stop - part.start)
        rows, journeys = self._event_rows(plan, part, event_ids, rng, r)
        await self._copy("attribution_events", EVENT_COLUMNS, rows)
        allocations, last_touch = self._allocation_rows(plan, journeys, ids, r)
        await self._copy("attribution_allocations", ALLOCATION_COLUMNS, allocations)
        ledger = self._ledger_rows(plan, part, event_ids, last_touch, ids, r)
        await self._copy("revenue_ledger", LEDGER_COLUMNS, ledger)
        corrections = self._correction_rows(plan, part, event_ids, allocations, ids, r)
        await self._copy("channel_assignment_corrections", CORRECTION_COLUMNS, corrections)

    def _event_rows(
        self,
        plan: _Plan,
        part: slice,
        event_ids: list[str],
        rng: np.random.Generator,
        r: random.Random,
    ) -> tuple[list[Row], list[_Journey]]:
        n = part.stop - part.start
        t_us = plan.t_us[part]
        skew = np.round(rng.normal(0, 1.5e6, n)).astype(np.int64)
        ingest = t_us + np.round(np.exp(rng.normal(14.5, 0.8, n))).astype(np.int64)
        processed = ingest + np.round(rng.exponential(5e6, n)).astype(np.int64)
        times = _timestamps(self.ctx.base, np.concatenate([t_us, t_us + skew, ingest, processed]))
        sessions = plan.session[part].astype(np.uint64)
        session_hex = _mix64(sessions, self.ctx.seed).tolist()
        corr_hi = _mix64(sessions, self.ctx.seed + 1).tolist()
        corr_lo = _mix64(sessions, self.ctx.seed + 2).tolist()
        external = _mix64(np.arange(part.start, part.stop, dtype=np.uint64), self.ctx.seed + 3)
        external_list = external.tolist()
        rows: list[Row] = []
        journeys: list[_Journey] = []
        for k in range(n):
            i = part.start + k
            etype = int(plan.etype[i])
            revenue = int(plan.revenue[i])
            status = int(plan.status[i])
            chan = int(plan.channel[i])
            payload, campaign = self._payload(plan, i, times[k], r)
            if etype in (PURCHASE, CONVERSION):
                journey = self._journey(plan, i, event_ids[k], times[k], r)
                payload["attribution"] = {
                    "model_input": "touchpoints",
                    "touchpoints": [
                        {"channel": self.ctx.channels[c].code, "days_before": age}
                        for c, age in zip(journey.channels, journey.ages, strict=True)
                    ],
                }
                if status == 0:
                    journeys.append(journey)
                self.counts["revenue_events"] += 1
                self.counts["event_revenue"] += revenue
            rows.append(
                (
                    event_ids[k],
                    self.ctx.tenant,
                    times[k],
                    times[n + k],
                    times[2 * n + k],
                    f"sess_{session_hex[k]:016x}",
                    f"{corr_hi[k]:016x}{corr_lo[k]:016x}",
                    f"evt_{external_list[k]:016x}",
                    EVENT_TYPES[etype],
                    self.ctx.channels[chan].code,
                    campaign,
                    revenue,
                    revenue if etype in (PURCHASE, CONVERSION) else None,
                    "USD",
                    _dumps(payload),
                    f"demo-{self.ctx.seed}-{i}",
                    ("processed", "pending", "failed")[status],
                    times[3 * n + k] if status == 0 else None,
                    (4 if status == 2 else int(r.random() < 0.015)) if status != 1 else 0,
                )
            )
        self.counts["events"] += n
        return rows, journeys

    def _journey(
        self, plan: _Plan, i: int, event_id: str, occurred: str, r: random.Random
    ) -> _Journey:
        count = r.choices((1, 2, 3, 4), weights=(35, 30, 20, 15))[0]
        touch = _journey(r, self.cum_shares, int(plan.channel[i]), count)
        ages = [0.0] * count
        for k in range(count - 2, -1, -1):
            ages[k] = round(ages[k + 1] + r.expovariate(1 / 2.5), 2)
        created = datetime.fromisoformat(occurred.replace("Z", "+00:00"))
        created += timedelta(seconds=30 + r.expovariate(1 / 240))
        return _Journey(event_id, i, int(plan.revenue[i]), touch, ages, created)

    def _payload(
        self, plan: _Plan, i: int, occurred: str, r: random.Random
    ) -> tuple[dict[str, Any], str | None]:
        true_channel = self.ctx.channels[int(plan.true_channel[i])]
        profile = true_channel.profile
        etype = int(plan.etype[i])
        campaigns = profile.campaigns
        campaign = campaigns[int(plan.campaign[i]) % len(campaigns)] if campaigns else None
        payload: dict[str, Any] = {
            "schema_version": 3,
            "source": "server" if etype in (PURCHASE, CONVERSION) else "web_sdk",
            "event": {"name": EVENT_TYPES[etype], "ts": occurred},
            "page": {"path": r.choice(_PATHS), "referrer": self._referrer(true_channel, r)},
            "device": dict(r.choice(_DEVICES)),
            "context": {"locale": "en-US", "library": {"name": "attr-js", "version": "3.4.1"}},
        }
        if campaign is not None and profile.utm is not None:
            utm_source, utm_medium = profile.utm
            payload["utm"] = {"source": utm_source, "medium": utm_medium, "campaign": campaign}
        elif campaign is not None:
            payload["utm"] = {"source": true_channel.code, "campaign": campaign}
        if etype == PURCHASE:
            payload["order"] = self._order(int(plan.revenue[i]), int(plan.order_no[i]), r)
        elif etype == CONVERSION:
            payload["lead"] = {"form": "demo_request", "value_cents": int(plan.revenue[i])}
        if r.random() < PII_EVENT_RATE:
            self._add_pii(payload, r)
        return payload, campaign

    def _referrer(self, channel: _Channel, r: random.Random) -> str | None:
        options = _REFERRERS.get(channel.family)
        return r.choice(options) if options else None

    def _order(self, revenue: int, number: int, r: random.Random) -> dict[str, Any]:
        count = r.choice((1, 1, 1, 2, 2, 3))
        prices = _split_cents(revenue, [r.uniform(0.5, 1.5) for _ in range(count)])
        return {
            "id": _order_id(self.ctx.seed, number),
            "currency": "USD",
            "subtotal_cents": revenue,
            "items": [{"sku": r.choice(_SKUS), "qty": 1, "price_cents": price} for price in prices],
        }

    def _add_pii(self, payload: dict[str, Any], r: random.Random) -> None:
        first, last = r.choice(_FIRST), r.choice(_LAST)
        kind = r.randrange(3)
        if kind == 0:
            email = f"{first}.{last}{r.randrange(100)}@example.com"
            payload["context"]["customer"] = {"email": email, "tier": "gold"}
        elif kind == 1:
            payload["context"]["traits"] = {"phone": f"+1-555-{r.randrange(10_000):04d}"}
        else:
            payload["device"]["ip_address"] = f"203.0.113.{r.randrange(1, 255)}"
        self.counts["pii"] += 1

    # -- allocations --------------------------------------------------------------------------

    def _allocation_rows(
        self, plan: _Plan, journeys: list[_Journey], ids: _IdSource, r: random.Random
    ) -> tuple[list[Row], dict[int, str]]:
        rows: list[Row] = []
        last_touch: dict[int, str] = {}
        for journey in journeys:
            verified_at = self._verified_at(plan, journey)
            for model in MODEL_TYPES:
                weights = _model_weights(model, journey.ages)
                parts = _split_cents(journey.revenue, weights)
                for channel, weight, cents in zip(journey.channels, weights, parts, strict=True):
                    if weight == 0:
                        continue
                    row = self._allocation_row(journey, model, channel, cents, verified_at, ids, r)
                    rows.append(row)
                    if model == "last_touch":
                        last_touch[journey.event_index] = row[0]
        self.counts["allocations"] += len(rows)
        return rows, last_touch

    def _verified_at(self, plan: _Plan, journey: _Journey) -> datetime | None:
        if int(plan.etype[journey.event_index]) != PURCHASE:
            return None
        run = self._run_for(plan, journey.event_index)
        return run.ran_at if run else None

    def _allocation_row(
        self,
        journey: _Journey,
        model: str,
        channel: int,
        cents: int,
        verified_at: datetime | None,
        ids: _IdSource,
        r: random.Random,
    ) -> Row:
        touches = len(journey.channels)
        base = 0.93 if touches == 1 else MODEL_CONFIDENCE[model] - 0.03 * (touches - 2)
        confidence = min(0.99, max(0.3, base + r.gauss(0, 0.04)))
        width = cents * (1 - confidence) * 0.9
        created = _iso(journey.created)
        return (
            ids.uuid(),
            self.ctx.tenant,
            journey.event_id,
            self.ctx.channels[channel].code,
            cents,
            f"{cents / journey.revenue:.8f}",
            model,
            MODEL_VERSION,
            f"{confidence:.4f}",
            max(0, math.floor(cents - width)),
            math.ceil(cents + width),
            f"{1 + abs(r.gauss(0, 0.006)):.5f}",
            f"{r.uniform(400, 4000) * confidence:.2f}",
            verified_at is not None,
            "revenue_ledger" if verified_at else None,
            _iso(verified_at) if verified_at else None,
            created,
            created,
        )

    # -- ledger -------------------------------------------------------------------------------

    def _ledger_rows(
        self,
        plan: _Plan,
        part: slice,
        event_ids: list[str],
        last_touch: dict[int, str],
        ids: _IdSource,
        r: random.Random,
    ) -> list[Row]:
        rows: list[Row] = []
        purchases = np.flatnonzero(plan.etype[part] == PURCHASE) + part.start
        for i in purchases.tolist():
            rows.append(self._ledger_row(plan, i, last_touch.get(i), ids, r))
        self.counts["ledger"] += len(rows)
        return rows

    def _ledger_row(
        self,
        plan: _Plan,
        i: int,
        allocation_id: str | None,
        ids: _IdSource,
        r: random.Random,
    ) -> Row:
        revenue = int(plan.revenue[i])
        posted = self.ctx.base + timedelta(
            microseconds=int(plan.t_us[i]) + r.randint(2, 30) * 10**6
        )
        run = self._run_for(plan, i)
        end = self.ctx.base + timedelta(days=DAYS)
        state = (
            "authorized" if end - posted < timedelta(hours=20) and r.random() < 0.4 else "captured"
        )
        channel = self.ctx.channels[int(plan.channel[i])]
        ledger_id = ids.uuid()
        meta: dict[str, Any] = {
            "processor": "stripe",
            "order_id": _order_id(self.ctx.seed, int(plan.order_no[i])),
            "payment_method": {"type": "card", "brand": r.choice(("visa", "mastercard", "amex"))},
            "channel_hint": channel.code,
        }
        if state == "captured":
            self._maybe_reverse(ledger_id, int(plan.channel[i]), posted, r)
        self.counts["ledger_revenue"] += revenue
        return (
            ledger_id,
            self.ctx.tenant,
            f"ch_demo{self.ctx.seed}_{int(plan.order_no[i]):07d}",
            meta["order_id"],
            allocation_id,
            state,
            revenue + round(revenue * TAX_RATE),
            revenue,
            "USD",
            run is not None,
            _iso(run.ran_at) if run and run.ran_at else None,
            "stripe_reconciliation" if run else None,
            run.id if run else None,
            _iso(posted),
            _dumps(meta),
            _iso(posted),
            _iso(posted),
        )

    def _maybe_reverse(
        self, ledger_id: str, channel: int, posted: datetime, r: random.Random
    ) -> None:
        sc = self.ctx.scenario
        burst = (
            channel == sc.refund_channel
            and sc.refund_week.start <= posted.date() <= sc.refund_week.end
        )
        refund_p, chargeback_p = (
            (BURST_REFUND_RATE, BURST_CHARGEBACK_RATE) if burst else (REFUND_RATE, CHARGEBACK_RATE)
        )
        roll = r.random()
        if roll < chargeback_p:
            state = "chargeback"
            reason = (
                "chargeback: fraudulent (affiliate coupon abuse)"
                if burst
                else r.choice(
                    (
                        "chargeback: fraudulent",
                        "chargeback: product_not_received",
                        "chargeback: unrecognized",
                    )
                )
            )
            delay = r.uniform(1, 6) if burst else r.uniform(5, 30)
        elif roll < chargeback_p + refund_p:
            state = "refunded"
            reason = (
                "refund: coupon stacking via affiliate link"
                if burst
                else r.choice(
                    ("refund: customer_request", "refund: damaged_item", "refund: wrong_size")
                )
            )
            delay = r.uniform(1, 5) if burst else r.uniform(1, 14)
        else:
            return
        at = posted + timedelta(days=delay)
        if at >= self.ctx.base + timedelta(days=DAYS):
            return
        self.state_changes.append((ledger_id, state, reason, _iso(at)))

    # -- corrections --------------------------------------------------------------------------

    def _correction_rows(
        self,
        plan: _Plan,
        part: slice,
        event_ids: list[str],
        allocations: list[Row],
        ids: _IdSource,
        r: random.Random,
    ) -> list[Row]:
        rows = self._mistag_corrections(plan, part, event_ids, allocations, ids)
        rows += self._scattered_corrections(plan, part, event_ids, ids, r)
        self.counts["corrections"] += len(rows)
        return rows

    def _mistag_corrections(
        self,
        plan: _Plan,
        part: slice,
        event_ids: list[str],
        allocations: list[Row],
        ids: _IdSource,
    ) -> list[Row]:
        sc = self.ctx.scenario
        if sc.mistag_from is None or sc.mistag_to is None:
            return []
        src, dst = self.ctx.channels[sc.mistag_from].code, self.ctx.channels[sc.mistag_to].code
        when = datetime.combine(sc.mistag_week.end + timedelta(days=3), datetime.min.time(), UTC)
        when += timedelta(hours=10, minutes=12)
        rows: list[Row] = []
        tagged = np.flatnonzero(plan.mistagged[part])
        tagged_ids = {event_ids[k] for k in tagged.tolist()}
        for k in tagged.tolist():
            reason = f"utm_medium=paid_social on {src} event: paid {dst} traffic (bulk fix)"
            rows.append(
                self._correction(
                    "event", event_ids[k], src, dst, "utm-audit-bot", when, reason, ids
                )
            )
        for alloc in allocations:
            if alloc[2] in tagged_ids and alloc[3] == src:
                reason = f"allocation follows corrected event {alloc[2]}"
                rows.append(
                    self._correction(
                        "allocation", alloc[0], src, dst, "utm-audit-bot", when, reason, ids
                    )
                )
        return rows

    def _scattered_corrections(
        self, plan: _Plan, part: slice, event_ids: list[str], ids: _IdSource, r: random.Random
    ) -> list[Row]:
        codes = [c.code for c in self.ctx.channels]
        rows: list[Row] = []
        limit = self.ctx.base + timedelta(days=DAYS)
        for k in range(part.stop - part.start):
            if r.random() >= 0.0008 or plan.mistagged[part.start + k]:
                continue
            src = codes[int(plan.channel[part.start + k])]
            target = _SCATTERED.get(src)
            if target is None or target[0] not in codes:
                continue
            when = self.ctx.base + timedelta(
                microseconds=int(plan.t_us[part.start + k]), days=r.uniform(1, 10)
            )
            if when < limit:
                who = r.choice(("analyst:mchen", "analyst:apatel", "ops:jlee"))
                rows.append(
                    self._correction(
                        "event", event_ids[k], src, target[0], who, when, target[1], ids
                    )
                )
        return rows

    def _correction(
        self,
        entity: str,
        entity_id: str,
        src: str,
        dst: str,
        who: str,
        when: datetime,
        reason: str,
        ids: _IdSource,
    ) -> Row:
        return (ids.uuid(), self.ctx.tenant, entity, entity_id, src, dst, who, _iso(when), reason)

    # -- dead events --------------------------------------------------------------------------

    async def write_dead_events(self, plan: _Plan) -> None:
        rng = np.random.default_rng([self.ctx.seed, 0xDEAD])
        r = random.Random(self.ctx.seed * 7_919 + 0xDEAD)
        ids = _IdSource(self.ctx.seed, self.ctx.tenant_id, 1)
        total = max(8, round(int(plan.day_totals.sum()) * DEAD_EVENT_RATE))
        per_day = _apportion(rng, total, plan.day_totals.astype(np.float64) + 1.0)
        rows: list[Row] = []
        for d in range(DAYS):
            for _ in range(int(per_day[d])):
                source = r.choices(_DEAD_SOURCES, weights=_DEAD_WEIGHTS)[0]
                rows.append(self._dead_row(d, source, r.choice(_DEAD_ERRORS[source]), ids, r))
        spike = self.ctx.scenario.dead_spike
        per_source_day = total * _DEAD_WEIGHTS[_DEAD_SOURCES.index(SPIKE_SOURCE)] / 100 / DAYS
        spike_count = max(25, round(12 * per_source_day))
        for offset in range(spike.days):
            d = self.ctx.day_index(spike.start) + offset
            for _ in range(spike_count):
                rows.append(self._dead_row(d, SPIKE_SOURCE, _SPIKE_ERROR, ids, r))
        await self._copy("dead_events", DEAD_EVENT_COLUMNS, rows)
        self.counts["dead_events"] = len(rows)

    def _dead_row(
        self, d: int, source: str, error: tuple[str, str, str], ids: _IdSource, r: random.Random
    ) -> Row:
        error_type, code, message = error
        ingested = self.ctx.base + timedelta(days=d, seconds=r.uniform(0, 86_399))
        age = self.ctx.base + timedelta(days=DAYS) - ingested
        status = self._remediation(age, r)
        retries = r.randint(0, 5) if status != "pending" else r.randint(0, 2)
        soon = min(age * r.uniform(0.05, 0.5), timedelta(hours=10))
        last_retry = ingested + soon if retries else None
        resolved = ingested + min(age * r.uniform(0.1, 0.9), timedelta(days=6))
        event_type = r.choice((*EVENT_TYPES, None))
        payload: dict[str, Any] = {
            "source": source,
            "received_at": _iso(ingested),
            "body": {"type": event_type or "unknown", "id": f"wh_{r.getrandbits(48):012x}"},
            "headers": {"content-type": "application/json", "user-agent": f"{source}/2.1"},
        }
        if r.random() < PII_DEAD_EVENT_RATE:
            first, last = r.choice(_FIRST), r.choice(_LAST)
            payload["body"]["customer"] = {"email": f"{first}.{last}@example.com", "id": "c_1"}
            self.counts["pii"] += 1
        updated = resolved if status == "resolved" else (last_retry or ingested)
        return (
            ids.uuid(),
            self.ctx.tenant,
            source,
            event_type,
            error_type,
            code,
            message,
            _dumps({"stage": "ingest", "validator": "v3"}),
            _TRACEBACK if error_type in ("upstream_timeout", "internal_error") else None,
            _dumps(payload),
            retries,
            _iso(last_retry) if last_retry else None,
            status,
            "replayed after fix" if status == "resolved" else None,
            _iso(resolved) if status == "resolved" else None,
            _iso(ingested),
            _iso(updated),
        )

    def _remediation(self, age: timedelta, r: random.Random) -> str:
        if age > timedelta(days=14):
            options, weights = _REMEDIATION, (15, 10, 55, 20)
        else:
            options, weights = _REMEDIATION, (60, 25, 15, 0)
        return r.choices(options, weights=weights)[0]

    # -- final set-based updates --------------------------------------------------------------

    async def finish(self) -> None:
        await self._apply_state_changes()
        await self._settle_runs()

    async def _apply_state_changes(self) -> None:
        if not self.state_changes:
            return
        ids, states, reasons, times = (list(col) for col in zip(*self.state_changes, strict=True))
        # One UPDATE: the ledger's trigger writes one revenue_state_transitions row per change.
        status = await self.conn.execute(
            """
            UPDATE revenue_ledger l
               SET state = v.state,
                   metadata = l.metadata || jsonb_build_object(
                       'state_change_reason', v.reason, 'state_changed_at', v.at)
              FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS v(id, state, reason, at)
             WHERE l.tenant_id = $5 AND l.id = v.id
            """,
            ids,
            states,
            reasons,
            times,
            self.ctx.tenant_id,
        )
        changed = int(status.split()[-1])
        # The trigger stamps transitions with now(); move them to the simulated time of change.
        await self.conn.execute(
            """
            UPDATE revenue_state_transitions t
               SET transitioned_at = v.at::timestamptz
              FROM unnest($1::uuid[], $2::text[]) AS v(id, at)
             WHERE t.tenant_id = $3 AND t.ledger_id = v.id AND t.transitioned_at = now()
            """,
            ids,
            times,
            self.ctx.tenant_id,
        )
        self.counts["transitions"] = changed
        self.counts["refunds"] = states.count("refunded")
        self.counts["chargebacks"] = states.count("chargeback")

    async def _settle_runs(self) -> None:
        await self.conn.execute(
            """
            UPDATE reconciliation_runs r
               SET run_metadata = r.run_metadata || jsonb_build_object(
                       'transactions_checked', c.checked, 'amount_cents', c.amount,
                       'mismatches', 0)
              FROM (SELECT reconciliation_run_id AS id, count(*) AS checked,
                           sum(amount_cents) AS amount
                      FROM revenue_ledger
                     WHERE tenant_id = $1 AND reconciliation_run_id = ANY($2::uuid[])
                     GROUP BY reconciliation_run_id) c
             WHERE r.tenant_id = $1 AND r.id = c.id
            """,
            self.ctx.tenant_id,
            [run.id for run in self.ctx.runs],
        )

    # -- summary ------------------------------------------------------------------------------

    def summary(self, plan: _Plan, elapsed: float) -> DemoDataSummary:
        c = self.counts
        return DemoDataSummary(
            tenant_id=self.ctx.tenant_id,
            seed=self.ctx.seed,
            start_date=self.ctx.start,
            end_date=self.ctx.today - timedelta(days=1),
            channels=tuple(ch.code for ch in self.ctx.channels),
            attribution_events=c["events"],
            revenue_events=c["revenue_events"],
            attribution_allocations=c["allocations"],
            revenue_ledger=c["ledger"],
            revenue_state_transitions=c["transitions"],
            refunds=c["refunds"],
            chargebacks=c["chargebacks"],
            dead_events=c["dead_events"],
            reconciliation_runs=len(self.ctx.runs),
            channel_assignment_corrections=c["corrections"],
            pii_payloads=c["pii"],
            event_revenue_cents=c["event_revenue"],
            ledger_revenue_cents=c["ledger_revenue"],
            anomalies=_anomalies(self.ctx, plan),
            elapsed_seconds=elapsed,
        )


_SCATTERED: dict[str, tuple[str, str]] = {
    "direct": ("organic_search", "in-app browser stripped the referrer; landing page is SEO"),
    "referral": ("affiliate", "referring domain is an affiliate partner"),
    "organic_search": ("google_search_paid", "gclid on landing URL: paid search click"),
    "display_programmatic": ("youtube_video", "line item is YouTube video inventory"),
    "email": ("sms", "SMS campaign reused the email UTM template"),
}
_DEAD_SOURCES = ("web_sdk", "shopify_webhook", "meta_capi", "stripe_webhook", "google_ads_api")
_DEAD_WEIGHTS = (35, 20, 15, 15, 15)
_DEAD_ERRORS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "web_sdk": (
        ("schema_validation", "E_SCHEMA", "missing required field 'event.name'"),
        ("unknown_channel", "E_CHANNEL", "utm_medium 'cpc-new' does not map to a channel"),
        ("payload_too_large", "E_SIZE", "payload of 1.2 MB exceeds the 512 KB limit"),
    ),
    "shopify_webhook": (
        ("signature_mismatch", "E_HMAC", "X-Shopify-Hmac-Sha256 verification failed"),
        ("schema_validation", "E_SCHEMA", "orders/create: 'total_price' is not a number"),
    ),
    "meta_capi": (
        ("upstream_timeout", "E_TIMEOUT", "Meta Conversions API timed out after 30s"),
        ("rate_limited", "E_429", "Meta Conversions API rate limit reached"),
    ),
    "stripe_webhook": (
        ("duplicate_idempotency_key", "E_DUP", "idempotency key reused with a different body"),
        ("signature_mismatch", "E_SIG", "Stripe-Signature timestamp outside tolerance"),
    ),
    "google_ads_api": (
        ("auth_error", "E_AUTH", "OAuth refresh token expired or revoked"),
        ("rate_limited", "E_429", "RESOURCE_EXHAUSTED: too many requests"),
    ),
}
_SPIKE_ERROR = (
    "schema_validation",
    "SHOPIFY_MISSING_FIELD",
    "orders/create: required field 'line_items[0].price' missing (API version 2024-10 payload)",
)
_REMEDIATION = ("pending", "in_progress", "resolved", "abandoned")
_TRACEBACK = (
    'Traceback (most recent call last):\n  File "ingest/worker.py", line 212, in deliver\n'
    "    resp = await client.post(url, json=body, timeout=30)\n"
    "httpx.ReadTimeout: timed out"
)


def _anomalies(ctx: _Context, plan: _Plan) -> tuple[InjectedAnomaly, ...]:
    sc = ctx.scenario
    code = [c.code for c in ctx.channels]
    found = [
        InjectedAnomaly(
            "revenue_drop",
            code[sc.drop_channel],
            sc.drop_week.start,
            sc.drop_week.end,
            f"{code[sc.drop_channel]} revenue ~40% below the previous weeks "
            "(fewer purchases and smaller orders)",
        ),
        InjectedAnomaly(
            "dead_event_spike",
            None,
            sc.dead_spike.start,
            sc.dead_spike.end,
            f"{SPIKE_SOURCE} dead events spike: {_SPIKE_ERROR[1]} schema validation failures",
            source=SPIKE_SOURCE,
        ),
        InjectedAnomaly(
            "refund_burst",
            code[sc.refund_channel],
            sc.refund_week.start,
            sc.refund_week.end,
            f"refunds and chargebacks on ~{BURST_REFUND_RATE + BURST_CHARGEBACK_RATE:.0%} of "
            f"{code[sc.refund_channel]} purchases made in this week",
        ),
    ]
    if sc.mistag_from is not None and sc.mistag_to is not None:
        found.append(
            InjectedAnomaly(
                "channel_corrections",
                code[sc.mistag_to],
                sc.mistag_week.start,
                sc.mistag_week.end,
                f"{int(plan.mistagged.sum())} {code[sc.mistag_to]} events recorded as "
                f"{code[sc.mistag_from]}; corrections move them (and their allocations) back",
            )
        )
    return tuple(found)
