"""Realistic, deterministic synthetic attribution data for one tenant, with known anomalies.

The generator first plans the whole data set with numpy (per day, channel and event type
counts, sessions, timestamps, revenue), then writes it in chunks of events, one set-based
`INSERT ... SELECT FROM unnest($1::text[], ...)` per table and chunk. Not COPY: PostgreSQL
refuses COPY FROM into a table whose row-level security applies to the caller (the application
role, or a table owner that is not a superuser, as on Neon). Rows of the next chunk are built in
a worker thread while the server ingests the current one.

Every value derives from `seed` and `today`; only row ids depend on the tenant, so two tenants
generated with the same seed hold equal data under different ids. Injected anomalies (all
returned in the summary):
- facebook_paid (the paid social channel) loses ~40% of its revenue in the last full week;
- the shopify_webhook source floods dead_events on two days;
- affiliate purchases of one week (at ~3x the usual volume) are mostly refunded or charged back;
- for one week a third of instagram_paid sessions were recorded as organic_social; a batch of
  channel corrections (for the events and their allocations) moves them back.
"""

from __future__ import annotations

import asyncio
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
Row = tuple[Any, ...]

DAYS = 90
DAY_US = 86_400_000_000
CHUNK_EVENTS = 25_000
MIN_EVENTS = 1_000  # the plants' floors (below) keep every anomaly visible from here up
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
WEEKDAY_VOLUME = (1.0, 1.03, 1.02, 0.98, 0.92, 0.78, 0.82)  # Monday .. Sunday
# Relative traffic per UTC hour, 00 .. 23: evenings peak on weekdays, weekends are flatter.
# fmt: off
WEEKDAY_HOURS = (3, 2, 1.5, 1.2, 1.2, 2, 4, 7, 10, 11, 11.5, 12,
                 12.5, 12, 11.5, 11, 11, 11.5, 13, 14.5, 15, 13, 9, 5.5)
WEEKEND_HOURS = (4, 3, 2, 1.5, 1.2, 1.2, 2, 3.5, 6, 9, 11, 12.5,
                 13, 13, 12.5, 12, 12, 12.5, 13, 13.5, 13, 11.5, 8.5, 6)
# fmt: on
SESSION_CONTINUE = 1 - 1 / 2.8  # sessions average 2.8 events
JOURNEY_LENGTHS, JOURNEY_WEIGHTS = (1, 2, 3, 4), (35, 30, 20, 15)

DROP_CONVERSION_FACTOR = 0.72
DROP_ORDER_VALUE_FACTOR = 0.83  # 0.72 * 0.83 ~ 0.60: revenue down ~40%
MISTAG_SHARE = 0.35
REFUND_RATE, CHARGEBACK_RATE = 0.03, 0.004
BURST_REFUND_RATE, BURST_CHARGEBACK_RATE = 0.50, 0.25
# Floors that keep each plant clearly visible at any size (they bind only on small data sets):
# page views of other channels that day become the plant's events.
DROP_PURCHASE_FLOOR, DROP_WEEK_PURCHASE_FLOOR = 2, 1  # drop channel purchases per day
BURST_PURCHASE_FLOOR, BURST_VOLUME_FACTOR = 2, 3  # refund channel purchases per burst-week day
MISTAG_EVENT_FLOOR = 6  # mis-tag channel events per day of the mis-tag week
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
    ctx = _context(tenant_id, seed, today or datetime.now(UTC).date(), await _load_channels(conn))
    builder = _Builder(ctx, _plan(ctx, events))
    await _insert(conn, _batch(_RUNS, builder.run_rows()))
    await _write_chunks(conn, builder, events)
    await _insert(conn, _batch(_DEAD_EVENTS, builder.dead_event_rows()))
    transitions = await _apply_state_changes(conn, ctx, builder.state_changes)
    await _settle_runs(conn, ctx)
    return builder.summary(transitions, clock.perf_counter() - started)


# --------------------------------------------------------------------------------------------
# Channels
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


_Numbers = tuple[float, float, float, float, float, int, int]
# share, weekend volume factor, purchase / conversion / signup rate per event, median order value
# and median lead value (cents). By family, for codes the generator does not know by name.
_FAMILY_PROFILES: dict[str, _Numbers] = {
    "paid_social": (0.05, 1.2, 0.040, 0.010, 0.020, 5500, 2000),
    "paid_search": (0.06, 0.85, 0.065, 0.020, 0.020, 7500, 3000),
    "shopping": (0.05, 1.1, 0.080, 0.002, 0.010, 5000, 1500),
    "display": (0.04, 1.0, 0.010, 0.004, 0.006, 6000, 1500),
    "video": (0.03, 1.2, 0.012, 0.003, 0.008, 6000, 1500),
    "affiliate": (0.04, 1.1, 0.090, 0.002, 0.010, 7000, 1500),
    "organic_search": (0.10, 0.85, 0.050, 0.015, 0.025, 6500, 2500),
    "organic_social": (0.04, 1.3, 0.020, 0.005, 0.015, 5000, 2000),
    "email": (0.05, 0.8, 0.080, 0.020, 0.005, 6000, 2500),
    "messaging": (0.02, 1.0, 0.070, 0.010, 0.003, 4500, 2000),
    "referral": (0.03, 1.0, 0.050, 0.010, 0.020, 6500, 2500),
    "direct": (0.05, 1.1, 0.080, 0.020, 0.030, 7000, 3000),
}
_DEFAULT_PROFILE: _Numbers = (0.02, 1.0, 0.030, 0.010, 0.010, 6000, 2000)
_CODE_PROFILES: dict[str, _Numbers] = {
    "facebook_paid": (0.16, 1.15, 0.060, 0.015, 0.020, 6500, 2500),
    "instagram_paid": (0.08, 1.25, 0.045, 0.010, 0.020, 5500, 2000),
    "tiktok_paid": (0.05, 1.3, 0.030, 0.005, 0.015, 3500, 1500),
    "linkedin_paid": (0.02, 0.35, 0.005, 0.040, 0.030, 9000, 12000),
    "google_search_paid": (0.14, 0.9, 0.070, 0.020, 0.020, 7500, 3000),
    "bing_search_paid": (0.03, 0.7, 0.065, 0.020, 0.020, 8000, 3000),
    "google_shopping": (0.07, 1.1, 0.080, 0.002, 0.010, 5000, 1500),
    "display_programmatic": (0.05, 1.0, 0.010, 0.004, 0.006, 6000, 1500),
    "youtube_video": (0.03, 1.2, 0.012, 0.003, 0.008, 6000, 1500),
    "affiliate": (0.04, 1.1, 0.090, 0.002, 0.010, 7000, 1500),
    "organic_search": (0.12, 0.85, 0.050, 0.015, 0.025, 6500, 2500),
    "organic_social": (0.04, 1.3, 0.020, 0.005, 0.015, 5000, 2000),
    "email": (0.06, 0.8, 0.080, 0.020, 0.005, 6000, 2500),
    "sms": (0.02, 1.0, 0.070, 0.010, 0.003, 4500, 2000),
    "referral": (0.03, 1.0, 0.050, 0.010, 0.020, 6500, 2500),
    "direct": (0.05, 1.1, 0.080, 0.020, 0.030, 7000, 3000),
}
_CAMPAIGNS: dict[str, tuple[str, ...]] = {
    "facebook_paid": ("fb_prospecting_lookalike", "fb_retargeting_dpa", "fb_advantage_plus"),
    "instagram_paid": ("ig_reels_spring", "ig_stories_retargeting"),
    "tiktok_paid": ("tt_spark_ugc", "tt_topview_launch"),
    "linkedin_paid": ("li_abm_enterprise", "li_lead_gen_webinar"),
    "google_search_paid": ("gs_brand_exact", "gs_nonbrand_generic", "gs_competitor"),
    "bing_search_paid": ("bing_brand", "bing_nonbrand"),
    "google_shopping": ("pmax_all_products", "shopping_bestsellers"),
    "display_programmatic": ("dv360_prospecting", "ttd_retargeting"),
    "youtube_video": ("yt_instream_brand", "yt_shorts_demand_gen"),
    "affiliate": ("aff_couponfollow", "aff_rakuten", "aff_creator_network"),
    "email": ("em_weekly_newsletter", "em_abandoned_cart", "em_winback"),
    "sms": ("sms_flash_sale", "sms_back_in_stock"),
}
_UTM: dict[str, tuple[str, str]] = {
    "facebook_paid": ("facebook", "paid_social"),
    "instagram_paid": ("instagram", "paid_social"),
    "tiktok_paid": ("tiktok", "paid_social"),
    "linkedin_paid": ("linkedin", "paid_social"),
    "google_search_paid": ("google", "cpc"),
    "bing_search_paid": ("bing", "cpc"),
    "google_shopping": ("google", "shopping"),
    "display_programmatic": ("dv360", "display"),
    "youtube_video": ("youtube", "video"),
    "affiliate": ("partner", "affiliate"),
    "email": ("newsletter", "email"),
    "sms": ("attentive", "sms"),
}
_PAID_FAMILIES = {"paid_social", "paid_search", "shopping", "display", "video", "affiliate"}
_REFERRERS = {
    "organic_search": ("https://www.google.com/", "https://www.bing.com/"),
    "organic_social": ("https://www.instagram.com/", "https://t.co/", "https://www.reddit.com/"),
    "referral": ("https://www.outdoorgearlab.com/", "https://news.ycombinator.com/"),
}
# Occasional manual fixes: recorded channel -> (corrected channel, reason).
_SCATTERED_FIXES: dict[str, tuple[str, str]] = {
    "direct": ("organic_search", "in-app browser stripped the referrer; landing page is SEO"),
    "referral": ("affiliate", "referring domain is an affiliate partner"),
    "organic_search": ("google_search_paid", "gclid on landing URL: paid search click"),
    "display_programmatic": ("youtube_video", "line item is YouTube video inventory"),
    "email": ("sms", "SMS campaign reused the email UTM template"),
}


@dataclass(frozen=True)
class _Channel:
    code: str
    family: str
    is_paid: bool
    profile: _Profile


def _profile_for(code: str, family: str) -> _Profile:
    numbers = _CODE_PROFILES.get(code) or _FAMILY_PROFILES.get(family, _DEFAULT_PROFILE)
    campaigns = _CAMPAIGNS.get(code)
    if campaigns is None:
        campaigns = (f"{code}_always_on",) if family in _PAID_FAMILIES else ()
    utm = _UTM.get(code) or ((code.split("_")[0], family) if campaigns else None)
    return _Profile(*numbers, campaigns=campaigns, utm=utm)


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


# --------------------------------------------------------------------------------------------
# The scenario: where the anomalies go, and the reconciliation runs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    start: date
    days: int

    @property
    def end(self) -> date:
        return self.start + timedelta(days=self.days - 1)

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.start <= day <= self.end


@dataclass(frozen=True)
class _Scenario:
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

    def day_of(self, t_us: int) -> date:
        return self.start + timedelta(days=t_us // DAY_US)

    def at(self, t_us: int) -> datetime:
        return self.base + timedelta(microseconds=t_us)

    @property
    def end(self) -> datetime:
        return self.base + timedelta(days=DAYS)


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
    return next((k for k, c in enumerate(channels) if k not in skip and fallback(c)), None)


def _scenario(channels: tuple[_Channel, ...], today: date) -> _Scenario:
    last_monday = today - timedelta(days=today.weekday() + 7)
    drop = _pick(channels, "facebook_paid", lambda c: c.family == "paid_social")
    drop = drop if drop is not None else (_pick(channels, "", lambda c: c.is_paid) or 0)
    refund = _pick(channels, "affiliate", lambda c: c.is_paid, exclude=[drop])
    mistag_from = _pick(channels, "organic_social", lambda c: not c.is_paid)
    mistag_to = _pick(channels, "instagram_paid", lambda c: c.family == "paid_social", [drop])
    return _Scenario(
        drop_channel=drop,
        drop_week=_Window(last_monday, 7),
        refund_channel=refund if refund is not None else (drop + 1) % len(channels),
        refund_week=_Window(last_monday - timedelta(days=28), 7),
        dead_spike=_Window(last_monday - timedelta(days=12), 2),
        mistag_from=mistag_from if mistag_from != mistag_to else None,
        mistag_to=mistag_to,
        mistag_week=_Window(last_monday - timedelta(days=49), 7),
    )


def _context(tenant_id: UUID, seed: int, today: date, channels: tuple[_Channel, ...]) -> _Context:
    start = today - timedelta(days=DAYS)
    base = datetime(start.year, start.month, start.day, tzinfo=UTC)
    runs = _runs(start, _IdSource(seed, tenant_id, 0))
    scenario = _scenario(channels, today)
    return _Context(str(tenant_id), tenant_id, seed, start, today, base, channels, scenario, runs)


def _runs(start: date, ids: _IdSource) -> tuple[_Run, ...]:
    """Weekly Stripe reconciliations (Mondays 02:07 UTC); one failed and was retried next day."""
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
    upcoming = _Window(weeks[-1] + timedelta(days=7) if weeks else first_monday, 7)
    runs.append(_Run(ids.uuid(), "idle", upcoming, None, 1, None))
    return tuple(runs)


# --------------------------------------------------------------------------------------------
# Small helpers
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
        return _uuid_strings(raw.tobytes().hex())

    def uuid(self) -> str:
        if not self._spare:
            self._spare = self.uuids(4096)[::-1]
        return self._spare.pop()


def _uuid_strings(text: str) -> list[str]:
    """Format concatenated 32-hex-digit values as UUID strings."""
    return [
        f"{text[k : k + 8]}-{text[k + 8 : k + 12]}-{text[k + 12 : k + 16]}-"
        f"{text[k + 16 : k + 20]}-{text[k + 20 : k + 32]}"
        for k in range(0, len(text), 32)
    ]


def _session_uuids(sessions: npt.NDArray[np.uint64], seed: int) -> list[str]:
    """A stable version-4 UUID per session number (the events' correlation id)."""
    high = _mix64(sessions, seed + 1) & np.uint64(0xFFFFFFFFFFFF0FFF) | np.uint64(0x4000)
    low = _mix64(sessions, seed + 2) >> np.uint64(2) | np.uint64(1 << 63)  # RFC 4122 variant
    return _uuid_strings(np.stack([high, low], axis=1).astype(">u8").tobytes().hex())


def _apportion(rng: np.random.Generator, total: int, weights: FloatArray) -> IntArray:
    """Split `total` into integer parts proportional to `weights`, unbiased and low-variance.

    Each part is the floor of its exact share plus one with probability equal to the dropped
    fraction (systematic sampling), so expected parts are exact and the sum is `total`.
    """
    exact = total * weights / weights.sum()
    parts: IntArray = np.floor(exact).astype(np.int64)
    crossings = np.floor(np.cumsum(exact - parts) - rng.random() + 1.0)
    parts += np.diff(np.r_[0.0, crossings]).astype(np.int64)
    shortfall = int(total - parts.sum())  # float rounding only
    if shortfall:
        parts[int(np.argmax(exact - np.floor(exact)))] += shortfall
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


def _moments(base: datetime, offsets_us: IntArray) -> npt.NDArray[np.datetime64]:
    """UTC instants `offsets_us` microseconds after `base` (naive numpy datetimes)."""
    origin = np.datetime64(base.replace(tzinfo=None), "us")
    moments: npt.NDArray[np.datetime64] = origin + offsets_us.astype("timedelta64[us]")
    return moments


def _datetimes(moments: npt.NDArray[np.datetime64]) -> list[datetime]:
    """Aware UTC datetimes (asyncpg sends them to timestamptz in binary: nothing to parse)."""
    return [moment.replace(tzinfo=UTC) for moment in moments.astype(object).tolist()]


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _order_id(seed: int, number: int) -> str:
    return f"ORD-{seed}-{number:07d}"


# --------------------------------------------------------------------------------------------
# The plan: every event's time, channel, type, session and revenue, in time order
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    t_us: IntArray  # microseconds since the first day's midnight
    channel: IntArray  # channel as recorded
    true_channel: IntArray  # channel the traffic really came from (differs when mis-tagged)
    etype: IntArray
    revenue: IntArray
    session: IntArray
    campaign: IntArray
    mistagged: BoolArray
    status: IntArray  # 0 processed, 1 pending, 2 failed
    order_no: IntArray  # running purchase number (order and transaction ids)
    day_totals: IntArray


def _plan(ctx: _Context, events: int) -> _Plan:
    rng = np.random.default_rng([ctx.seed, 0x9A1])
    days = _day_totals(rng, ctx, events)
    counts = _type_cells(rng, ctx, _channel_cells(rng, ctx, days)).reshape(-1)
    ntypes, nchan = len(EVENT_TYPES), len(ctx.channels)
    flat = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
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
    """Events per day: weekly seasonality, a slight upward trend and some day-to-day noise."""
    weekday = (np.arange(DAYS) + ctx.start.weekday()) % 7
    trend = 1 + 0.08 * np.arange(DAYS) / (DAYS - 1)
    weights = np.array(WEEKDAY_VOLUME)[weekday] * trend * rng.lognormal(0, 0.05, DAYS)
    return _apportion(rng, events, weights)


def _channel_cells(rng: np.random.Generator, ctx: _Context, days: IntArray) -> IntArray:
    """Events per day and channel; weekends shift the mix (more social, less B2B)."""
    share = np.array([c.profile.share for c in ctx.channels])
    weekend = np.array([c.profile.weekend for c in ctx.channels])
    cells = np.zeros((DAYS, len(ctx.channels)), dtype=np.int64)
    for d in range(DAYS):
        factor = weekend if (ctx.start + timedelta(days=d)).weekday() >= 5 else 1.0
        weights = share * factor * rng.lognormal(0, 0.04, share.size)
        cells[d] = _apportion(rng, int(days[d]), weights)
    return cells


def _type_mix(profile: _Profile, paid: bool, conversion_factor: float) -> FloatArray:
    purchase = profile.purchase * conversion_factor
    conversion = profile.conversion * conversion_factor
    cart = 1.6 * profile.purchase + 0.02
    click = 0.22 if paid else 0.12
    page_view = 1 - (purchase + conversion + profile.signup + cart + click)
    return np.array([page_view, click, cart, profile.signup, conversion, purchase])


def _type_cells(rng: np.random.Generator, ctx: _Context, cells: IntArray) -> IntArray:
    """Events per day, channel and type; the drop channel converts less in the drop week."""
    out = np.zeros((*cells.shape, len(EVENT_TYPES)), dtype=np.int64)
    sc = ctx.scenario
    for d in range(DAYS):
        day = ctx.start + timedelta(days=d)
        for c, channel in enumerate(ctx.channels):
            factor = 1.08 if day.weekday() >= 5 else 1.0
            if c == sc.drop_channel and day in sc.drop_week:
                factor *= DROP_CONVERSION_FACTOR
            mix = _type_mix(channel.profile, channel.is_paid, factor)
            out[d, c] = _apportion(rng, int(cells[d, c]), mix)
    _apply_floors(ctx, out)
    return out


def _steal(out: IntArray, d: int, to: tuple[int, int], wanted: int, keep: set[int]) -> None:
    """Turn up to `wanted` page views of day d (busiest other channels first) into `to` events."""
    while wanted > 0:
        views = out[d, :, PAGE_VIEW].copy()
        views[list(keep)] = -1
        source = int(np.argmax(views))
        take = min(wanted, int(views[source]))
        if take <= 0:
            return
        out[d, source, PAGE_VIEW] -= take
        out[d, to[0], to[1]] += take
        wanted -= take


def _apply_floors(ctx: _Context, out: IntArray) -> None:
    """Give each plant enough events to stand out at any size (a no-op on large data sets)."""
    sc = ctx.scenario
    plants = (sc.drop_channel, sc.refund_channel, sc.mistag_to, sc.mistag_from)
    keep = {c for c in plants if c is not None}
    for d in range(DAYS):
        day = ctx.start + timedelta(days=d)
        floor = DROP_WEEK_PURCHASE_FLOOR if day in sc.drop_week else DROP_PURCHASE_FLOOR
        short = floor - int(out[d, sc.drop_channel, PURCHASE])
        _steal(out, d, (sc.drop_channel, PURCHASE), short, keep)
        if day in sc.refund_week:
            natural = int(out[d, sc.refund_channel, PURCHASE])
            target = max(BURST_PURCHASE_FLOOR, BURST_VOLUME_FACTOR * natural)
            _steal(out, d, (sc.refund_channel, PURCHASE), target - natural, keep)
        if sc.mistag_to is not None and day in sc.mistag_week:
            short = MISTAG_EVENT_FLOOR - int(out[d, sc.mistag_to].sum())
            _steal(out, d, (sc.mistag_to, PAGE_VIEW), short, keep)


def _sessions(
    rng: np.random.Generator, ctx: _Context, day: IntArray, chan: IntArray, etype: IntArray
) -> tuple[IntArray, IntArray, IntArray]:
    """Group each day-channel's events into sessions (funnel order) and time them.

    Returns the event times, session numbers and the permutation of the input, in time order.
    """
    n = day.size
    cell = day * len(ctx.channels) + chan
    perm = np.lexsort((rng.random(n), cell))
    cell, day, etype = cell[perm], day[perm], etype[perm]
    starts = rng.random(n) >= SESSION_CONTINUE
    starts[np.r_[True, cell[1:] != cell[:-1]]] = True
    session = np.cumsum(starts) - 1
    inner = np.lexsort((rng.random(n), etype, session))
    perm, session, day = perm[inner], session[inner], day[inner]
    first = np.flatnonzero(np.r_[True, session[1:] != session[:-1]])
    gaps = rng.exponential(70.0, n)
    gaps[first] = 0.0
    elapsed = np.cumsum(gaps)
    offset = elapsed - elapsed[first][session]
    seconds = np.minimum(_session_starts(rng, ctx, day[first])[session] + offset, 86_399.999)
    t_us = day * DAY_US + (seconds * 1e6).astype(np.int64)
    by_time = np.argsort(t_us, kind="stable")
    return t_us[by_time], session[by_time], perm[by_time]


def _session_starts(rng: np.random.Generator, ctx: _Context, day: IntArray) -> FloatArray:
    weekend_day = (day + ctx.start.weekday()) % 7 >= 5
    hours = np.empty(day.size, dtype=np.int64)
    for weekend, profile in ((False, WEEKDAY_HOURS), (True, WEEKEND_HOURS)):
        mask = weekend_day == weekend
        weights = np.array(profile, dtype=np.float64)
        hours[mask] = rng.choice(24, size=int(mask.sum()), p=weights / weights.sum())
    seconds: FloatArray = hours * 3600.0 + rng.random(day.size) * 3600.0
    return seconds


def _revenue(
    rng: np.random.Generator, ctx: _Context, day: IntArray, chan: IntArray, etype: IntArray
) -> IntArray:
    """Order and lead values (log-logistic), stratified per channel-week for steady totals."""
    revenue = np.zeros(day.size, dtype=np.int64)
    paying = np.flatnonzero((etype == PURCHASE) | (etype == CONVERSION))
    week = (day[paying] + ctx.start.weekday()) // 7
    u = _stratified_uniforms(rng, (chan[paying] * 64 + week) * 8 + etype[paying])
    median = _medians(ctx, day[paying], chan[paying], etype[paying])
    spread = np.where(etype[paying] == PURCHASE, 0.28, 0.2)
    values = median * np.exp(spread * np.log(u / (1 - u)))
    revenue[paying] = np.clip(np.round(values), 199, 500_000).astype(np.int64)
    return revenue


def _stratified_uniforms(rng: np.random.Generator, group: IntArray) -> FloatArray:
    """One uniform per item; within each group they cover [0, 1) evenly (one per stratum)."""
    order = np.lexsort((rng.random(group.size), group))
    ordered = group[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[starts, ordered.size])
    rank = np.arange(ordered.size) - np.repeat(starts, sizes)
    u = np.empty(group.size)
    u[order] = (rank + rng.random(group.size)) / np.repeat(sizes, sizes)
    clipped: FloatArray = np.clip(u, 0.01, 0.99)  # no absurd orders: at most ~3.6x the median
    return clipped


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
    """A campaign pick per session, and which events are paid traffic recorded as organic."""
    sessions = int(session.max()) + 1
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
    """Mostly processed; half of the last six hours still pending; a few failed."""
    status = np.zeros(t_us.size, dtype=np.int64)
    recent = t_us >= DAYS * DAY_US - 6 * 3_600_000_000
    status[recent & (rng.random(t_us.size) < 0.5)] = 1
    status[rng.random(t_us.size) < 0.002] = 2
    return status


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    """A target table and its columns with their SQL types."""

    name: str
    columns: tuple[tuple[str, str], ...]

    @property
    def insert_sql(self) -> str:
        """One INSERT of many rows, passed column-wise as arrays (native or text, then cast)."""
        names = ", ".join(name for name, _ in self.columns)
        params = ", ".join(
            f"${k}::{kind if kind in _BINARY_TYPES else 'text'}[]"
            for k, (_, kind) in enumerate(self.columns, 1)
        )
        values = ", ".join(
            f"u.{name}" if kind in _BINARY_TYPES or kind == "text" else f"u.{name}::{kind}"
            for name, kind in self.columns
        )
        return f"INSERT INTO {self.name} ({names}) SELECT {values} FROM unnest({params}) u({names})"


# Passed as typed arrays, in binary; every other column goes as text[] and is cast (jsonb as
# text also keeps the insert independent of the connection's JSON codec).
_BINARY_TYPES = frozenset(("bigint", "integer", "boolean", "uuid", "timestamptz"))


def _table(name: str, spec: str) -> _Table:
    """A table from "column:type column:type ..."."""
    pairs = [item.partition(":") for item in spec.split()]
    return _Table(name, tuple((column, kind) for column, _, kind in pairs))


@dataclass(frozen=True)
class _Batch:
    """Rows for one table, column by column."""

    table: _Table
    values: list[list[Any]]
    rows: int


def _batch(table: _Table, rows: Sequence[Row]) -> _Batch:
    columns = [list(column) for column in zip(*rows, strict=True)] if rows else []
    return _Batch(table, columns, len(rows))


_EVENTS = _table(
    "attribution_events",
    "id:uuid tenant_id:uuid occurred_at:timestamptz event_timestamp:timestamptz"
    " ingested_at:timestamptz session_id:text correlation_id:uuid external_event_id:text"
    " event_type:text channel:text campaign_id:text revenue_cents:bigint"
    " conversion_value_cents:bigint currency:text raw_payload:jsonb idempotency_key:text"
    " processing_status:text processed_at:timestamptz retry_count:integer",
)
_ALLOCATIONS = _table(
    "attribution_allocations",
    "id:uuid tenant_id:uuid event_id:uuid channel_code:text allocated_revenue_cents:bigint"
    " allocation_ratio:numeric model_type:text model_version:text confidence_score:numeric"
    " credible_interval_lower_cents:bigint credible_interval_upper_cents:bigint"
    " convergence_r_hat:numeric effective_sample_size:numeric verified:boolean"
    " verification_source:text verified_at:timestamptz created_at:timestamptz"
    " updated_at:timestamptz",
)
_LEDGER = _table(
    "revenue_ledger",
    "id:uuid tenant_id:uuid transaction_id:text order_id:text allocation_id:uuid state:text"
    " amount_cents:bigint revenue_cents:bigint currency:text is_verified:boolean"
    " verified_at:timestamptz verification_source:text reconciliation_run_id:uuid"
    " posted_at:timestamptz metadata:jsonb created_at:timestamptz updated_at:timestamptz",
)
_CORRECTIONS = _table(
    "channel_assignment_corrections",
    "id:uuid tenant_id:uuid entity_type:text entity_id:uuid from_channel:text to_channel:text"
    " corrected_by:text corrected_at:timestamptz reason:text",
)
_RUNS = _table(
    "reconciliation_runs",
    "id:uuid tenant_id:uuid state:text last_run_at:timestamptz error_message:text"
    " run_metadata:jsonb created_at:timestamptz updated_at:timestamptz",
)
_DEAD_EVENTS = _table(
    "dead_events",
    "id:uuid tenant_id:uuid source:text event_type:text error_type:text error_code:text"
    " error_message:text error_detail:jsonb error_traceback:text raw_payload:jsonb"
    " retry_count:integer last_retry_at:timestamptz remediation_status:text"
    " remediation_notes:text resolved_at:timestamptz ingested_at:timestamptz"
    " updated_at:timestamptz",
)

_PATHS = ("/", "/collections/new", "/products/trail-runner", "/products/merino-hoodie", "/sale")
_DEVICES = (
    {"type": "mobile", "os": "iOS", "browser": "Safari"},
    {"type": "mobile", "os": "Android", "browser": "Chrome"},
    {"type": "desktop", "os": "macOS", "browser": "Chrome"},
    {"type": "desktop", "os": "Windows", "browser": "Edge"},
    {"type": "tablet", "os": "iPadOS", "browser": "Safari"},
)
_SKUS = ("SKU-TR-204", "SKU-MH-118", "SKU-SK-031", "SKU-CP-990", "SKU-BT-455", "SKU-GL-072")
_FIRST = ("jane", "omar", "li", "maria", "tom", "aisha", "sven", "ana")
_LAST = ("doe", "haddad", "wei", "garcia", "baker", "khan", "nilsson", "silva")
_LIBRARY = {"name": "attr-js", "version": "3.4.1"}


@dataclass(frozen=True)
class _Journey:
    """A revenue event's touchpoints (first to last) and their ages in days."""

    event_id: str
    index: int
    revenue: int
    channels: list[int]
    ages: list[float]
    created: datetime


@dataclass(frozen=True)
class _Chunk:
    """One chunk's rows, column-wise, ready to insert."""

    events: _Batch
    allocations: _Batch
    ledger: _Batch
    corrections: _Batch


@dataclass
class _Counts:
    events: int = 0
    revenue_events: int = 0
    allocations: int = 0
    ledger: int = 0
    corrections: int = 0
    dead_events: int = 0
    pii: int = 0
    event_revenue: int = 0
    ledger_revenue: int = 0


def _model_weights(model: str, ages: Sequence[float]) -> list[float]:
    """Credit per touchpoint (first to last) under one attribution model."""
    n = len(ages)
    if model == "last_touch":
        return [0.0] * (n - 1) + [1.0]
    if model == "first_touch":
        return [1.0] + [0.0] * (n - 1)
    if model == "time_decay":
        return [0.5 ** (age / 7.0) for age in ages]  # seven-day half-life
    if model == "linear" or n <= 2:
        return [1.0] * n
    return [0.4] + [0.2 / (n - 2)] * (n - 2) + [0.4]  # position based: 40/20/40


class _Builder:
    """Turns the plan into rows, chunk by chunk, and keeps the counts for the summary.

    `chunk` runs in a worker thread, one chunk at a time and in order, so it may keep state.
    """

    def __init__(self, ctx: _Context, plan: _Plan) -> None:
        self.ctx = ctx
        self.plan = plan
        self.counts = _Counts()
        self.state_changes: list[tuple[str, str, str, str]] = []
        shares = np.array([c.profile.share for c in ctx.channels])
        self.cum_shares: list[float] = (np.cumsum(shares) / shares.sum()).tolist()

    # -- chunks -------------------------------------------------------------------------------

    def chunk(self, number: int, part: slice) -> _Chunk:
        """All rows of events `part`: events, allocations, ledger and corrections."""
        r = random.Random(self.ctx.seed * 1_000_003 + number)
        ids = _IdSource(self.ctx.seed, self.ctx.tenant_id, 10 + number)
        event_ids = ids.uuids(part.stop - part.start)
        events, journeys = self._event_rows(part, event_ids, number, r)
        allocations, last_touch = self._allocation_rows(journeys, ids, r)
        ledger = self._ledger_rows(part, last_touch, ids, r)
        corrections = self._mistag_corrections(part, event_ids, allocations, ids)
        corrections += self._scattered_corrections(part, event_ids, ids, r)
        self.counts.corrections += len(corrections)
        return _Chunk(
            _batch(_EVENTS, events),
            _batch(_ALLOCATIONS, allocations),
            _batch(_LEDGER, ledger),
            _batch(_CORRECTIONS, corrections),
        )

    def _event_rows(
        self, part: slice, event_ids: list[str], number: int, r: random.Random
    ) -> tuple[list[Row], list[_Journey]]:
        columns = self._event_columns(part, number)
        rows: list[Row] = []
        journeys: list[_Journey] = []
        for k, i in enumerate(range(part.start, part.stop)):
            etype = int(self.plan.etype[i])
            payload, campaign = self._payload(i, columns["occurred_text"][k], r)
            if etype in (PURCHASE, CONVERSION):
                journey = self._journey(i, event_ids[k], columns["occurred"][k], r)
                payload["attribution"] = self._touchpoints(journey)
                if self.plan.status[i] == 0:
                    journeys.append(journey)
            rows.append(self._event_row(i, k, event_ids[k], columns, payload, campaign, r))
        self.counts.events += len(rows)
        return rows, journeys

    def _event_columns(self, part: slice, number: int) -> dict[str, list[Any]]:
        """Vectorised per-event values: timestamps and session-derived identifiers."""
        rng = np.random.default_rng([self.ctx.seed, 0xC4, number])
        n = part.stop - part.start
        t_us = self.plan.t_us[part]
        skew = np.round(rng.normal(0, 1.5e6, n)).astype(np.int64)
        ingest = t_us + np.round(np.exp(rng.normal(14.5, 0.8, n))).astype(np.int64)  # ~2 s
        processed = ingest + np.round(rng.exponential(5e6, n)).astype(np.int64)
        moments = _moments(self.ctx.base, np.concatenate([t_us, t_us + skew, ingest, processed]))
        times = _datetimes(moments)
        sessions = self.plan.session[part].astype(np.uint64)
        return {
            "occurred": times[:n],
            "occurred_text": np.datetime_as_string(moments[:n], unit="us", timezone="UTC").tolist(),
            "client": times[n : 2 * n],
            "ingested": times[2 * n : 3 * n],
            "processed": times[3 * n :],
            "session": [f"sess_{v:016x}" for v in _mix64(sessions, self.ctx.seed).tolist()],
            "correlation": _session_uuids(sessions, self.ctx.seed),
            "external": [
                f"evt_{v:016x}"
                for v in _mix64(
                    np.arange(part.start, part.stop, dtype=np.uint64), self.ctx.seed + 3
                ).tolist()
            ],
        }

    def _event_row(
        self,
        i: int,
        k: int,
        event_id: str,
        columns: dict[str, list[Any]],
        payload: dict[str, Any],
        campaign: str | None,
        r: random.Random,
    ) -> Row:
        etype, revenue, status = (
            int(a[i]) for a in (self.plan.etype, self.plan.revenue, self.plan.status)
        )
        if etype in (PURCHASE, CONVERSION):
            self.counts.revenue_events += 1
            self.counts.event_revenue += revenue
        retries = (0, 4, 0)[status] if status else int(r.random() < 0.015)
        return (
            event_id,
            self.ctx.tenant,
            columns["occurred"][k],
            columns["client"][k],
            columns["ingested"][k],
            columns["session"][k],
            columns["correlation"][k],
            columns["external"][k],
            EVENT_TYPES[etype],
            self.ctx.channels[int(self.plan.channel[i])].code,
            campaign,
            revenue,
            revenue if etype in (PURCHASE, CONVERSION) else None,
            "USD",
            _dumps(payload),
            f"demo-{self.ctx.seed}-{i}",
            ("processed", "pending", "failed")[status],
            columns["processed"][k] if status == 0 else None,
            retries,
        )

    def _payload(
        self, i: int, occurred: str, r: random.Random
    ) -> tuple[dict[str, Any], str | None]:
        """The raw webhook/SDK body: page, device, UTM, order or lead; rarely personal data."""
        channel = self.ctx.channels[int(self.plan.true_channel[i])]
        etype = int(self.plan.etype[i])
        campaigns = channel.profile.campaigns
        campaign = campaigns[int(self.plan.campaign[i]) % len(campaigns)] if campaigns else None
        referrers = _REFERRERS.get(channel.family)
        payload: dict[str, Any] = {
            "schema_version": 3,
            "source": "server" if etype in (PURCHASE, CONVERSION) else "web_sdk",
            "event": {"name": EVENT_TYPES[etype], "ts": occurred},
            "page": {
                "path": r.choice(_PATHS),
                "referrer": r.choice(referrers) if referrers else None,
            },
            "device": dict(r.choice(_DEVICES)),
            "context": {"locale": "en-US", "library": _LIBRARY},
        }
        if campaign is not None:
            source, medium = channel.profile.utm or (channel.code, channel.family)
            payload["utm"] = {"source": source, "medium": medium, "campaign": campaign}
        if etype == PURCHASE:
            payload["order"] = self._order(i, r)
        elif etype == CONVERSION:
            payload["lead"] = {"form": "demo_request", "value_cents": int(self.plan.revenue[i])}
        if r.random() < PII_EVENT_RATE:
            self._add_pii(payload, r)
        return payload, campaign

    def _order(self, i: int, r: random.Random) -> dict[str, Any]:
        revenue = int(self.plan.revenue[i])
        prices = _split_cents(revenue, [r.uniform(0.5, 1.5) for _ in range(r.choice((1, 1, 2, 3)))])
        return {
            "id": _order_id(self.ctx.seed, int(self.plan.order_no[i])),
            "currency": "USD",
            "subtotal_cents": revenue,
            "items": [{"sku": r.choice(_SKUS), "qty": 1, "price_cents": p} for p in prices],
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
        self.counts.pii += 1

    def _journey(self, i: int, event_id: str, occurred: datetime, r: random.Random) -> _Journey:
        """1-4 distinct channels ending with the event's own, with ages in days."""
        count = r.choices(JOURNEY_LENGTHS, weights=JOURNEY_WEIGHTS)[0]
        picks = [int(self.plan.channel[i])]
        while len(picks) < count:
            candidate = r.choices(range(len(self.cum_shares)), cum_weights=self.cum_shares)[0]
            if candidate not in picks:
                picks.append(candidate)
        ages = [0.0] * count
        for k in range(count - 2, -1, -1):
            ages[k] = round(ages[k + 1] + r.expovariate(1 / 2.5), 2)
        created = occurred + timedelta(seconds=30 + r.expovariate(1 / 240))
        return _Journey(event_id, i, int(self.plan.revenue[i]), picks[::-1], ages, created)

    def _touchpoints(self, journey: _Journey) -> dict[str, Any]:
        codes = [self.ctx.channels[c].code for c in journey.channels]
        return {
            "model_input": "touchpoints",
            "touchpoints": [
                {"channel": code, "days_before": age}
                for code, age in zip(codes, journey.ages, strict=True)
            ],
        }

    # -- allocations --------------------------------------------------------------------------

    def _allocation_rows(
        self, journeys: list[_Journey], ids: _IdSource, r: random.Random
    ) -> tuple[list[Row], dict[int, str]]:
        """Every model's split of every processed revenue event; parts sum to its revenue."""
        rows: list[Row] = []
        last_touch: dict[int, str] = {}
        for journey in journeys:
            run = (
                self._run_for(journey.index) if self.plan.etype[journey.index] == PURCHASE else None
            )
            for model in MODEL_TYPES:
                weights = _model_weights(model, journey.ages)
                parts = _split_cents(journey.revenue, weights)
                for channel, weight, cents in zip(journey.channels, weights, parts, strict=True):
                    if weight > 0:
                        rows.append(
                            self._allocation_row(journey, model, channel, cents, run, ids, r)
                        )
                if model == "last_touch":
                    last_touch[journey.index] = rows[-1][0]
        self.counts.allocations += len(rows)
        return rows, last_touch

    def _allocation_row(
        self,
        journey: _Journey,
        model: str,
        channel: int,
        cents: int,
        run: _Run | None,
        ids: _IdSource,
        r: random.Random,
    ) -> Row:
        touches = len(journey.channels)
        base = 0.93 if touches == 1 else MODEL_CONFIDENCE[model] - 0.03 * (touches - 2)
        confidence = min(0.99, max(0.3, base + r.gauss(0, 0.04)))
        width = cents * (1 - confidence) * 0.9
        created = journey.created
        verified_at = run.ran_at if run else None
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
            verified_at,
            created,
            created,
        )

    # -- ledger -------------------------------------------------------------------------------

    def _run_for(self, i: int) -> _Run | None:
        """The completed reconciliation whose window holds event i's day, if any."""
        day = self.ctx.day_of(int(self.plan.t_us[i]))
        runs = self.ctx.runs
        return next((x for x in runs if x.state == "completed" and day in x.window), None)

    def _ledger_rows(
        self, part: slice, last_touch: dict[int, str], ids: _IdSource, r: random.Random
    ) -> list[Row]:
        purchases = (np.flatnonzero(self.plan.etype[part] == PURCHASE) + part.start).tolist()
        rows = [self._ledger_row(i, last_touch.get(i), ids, r) for i in purchases]
        self.counts.ledger += len(rows)
        return rows

    def _ledger_row(
        self, i: int, allocation_id: str | None, ids: _IdSource, r: random.Random
    ) -> Row:
        revenue = int(self.plan.revenue[i])
        posted = self.ctx.at(int(self.plan.t_us[i]) + r.randint(2, 30) * 1_000_000)
        recent = self.ctx.end - posted < timedelta(hours=20)
        state = "authorized" if recent and r.random() < 0.4 else "captured"
        order_id = _order_id(self.ctx.seed, int(self.plan.order_no[i]))
        meta = {
            "processor": "stripe",
            "order_id": order_id,
            "payment_method": {"type": "card", "brand": r.choice(("visa", "mastercard", "amex"))},
            "channel_hint": self.ctx.channels[int(self.plan.channel[i])].code,
        }
        ledger_id = ids.uuid()
        if state == "captured":
            self._maybe_reverse(ledger_id, int(self.plan.channel[i]), posted, r)
        self.counts.ledger_revenue += revenue
        run = self._run_for(i)
        return (
            ledger_id,
            self.ctx.tenant,
            f"ch_demo{self.ctx.seed}_{int(self.plan.order_no[i]):07d}",
            order_id,
            allocation_id,
            state,
            revenue + round(revenue * TAX_RATE),
            revenue,
            "USD",
            run is not None,
            run.ran_at if run else None,
            "stripe_reconciliation" if run else None,
            run.id if run else None,
            posted,
            _dumps(meta),
            posted,
            posted,
        )

    def _maybe_reverse(
        self, ledger_id: str, channel: int, posted: datetime, r: random.Random
    ) -> None:
        """Decide whether this capture is later refunded or charged back (applied at the end)."""
        sc = self.ctx.scenario
        burst = channel == sc.refund_channel and posted.date() in sc.refund_week
        chargeback_p = BURST_CHARGEBACK_RATE if burst else CHARGEBACK_RATE
        refund_p = BURST_REFUND_RATE if burst else REFUND_RATE
        roll = r.random()
        if roll < chargeback_p:
            state, reason = "chargeback", r.choice(_CHARGEBACK_REASONS)
            delay = r.uniform(1, 6) if burst else r.uniform(5, 30)
        elif roll < chargeback_p + refund_p:
            state, reason = "refunded", r.choice(_REFUND_REASONS)
            delay = r.uniform(1, 5) if burst else r.uniform(1, 14)
        else:
            return
        if burst:
            reason = _BURST_REASONS[state]
        at = posted + timedelta(days=delay)
        if at < self.ctx.end:
            self.state_changes.append((ledger_id, state, reason, at.isoformat()))

    # -- corrections --------------------------------------------------------------------------

    def _mistag_corrections(
        self, part: slice, event_ids: list[str], allocations: list[Row], ids: _IdSource
    ) -> list[Row]:
        """The bulk fix: mis-tagged events, and their allocations to the wrong channel."""
        sc = self.ctx.scenario
        if sc.mistag_from is None or sc.mistag_to is None:
            return []
        src, dst = self.ctx.channels[sc.mistag_from].code, self.ctx.channels[sc.mistag_to].code
        fixed_day = sc.mistag_week.end + timedelta(days=3)
        when = datetime(fixed_day.year, fixed_day.month, fixed_day.day, 10, 12, tzinfo=UTC)
        reason = f"utm_medium=paid_social on a {src} event: paid {dst} traffic (bulk fix)"
        tagged = [event_ids[k] for k in np.flatnonzero(self.plan.mistagged[part]).tolist()]
        fix = [("event", event_id, reason) for event_id in tagged]
        tagged_set = set(tagged)
        fix += [
            ("allocation", a[0], f"allocation of corrected event {a[2]}")
            for a in allocations
            if a[2] in tagged_set and a[3] == src
        ]
        return [
            self._correction(kind, entity, src, dst, "utm-audit-bot", when, why, ids)
            for kind, entity, why in fix
        ]

    def _scattered_corrections(
        self, part: slice, event_ids: list[str], ids: _IdSource, r: random.Random
    ) -> list[Row]:
        """A few one-off fixes by analysts, days after the event."""
        codes = [c.code for c in self.ctx.channels]
        rows: list[Row] = []
        for k, i in enumerate(range(part.start, part.stop)):
            if r.random() >= 0.0008 or self.plan.mistagged[i]:
                continue
            src = codes[int(self.plan.channel[i])]
            target, reason = _SCATTERED_FIXES.get(src, (src, ""))
            when = self.ctx.at(int(self.plan.t_us[i])) + timedelta(days=r.uniform(1, 10))
            if target in codes and target != src and when < self.ctx.end:
                who = r.choice(("analyst:mchen", "analyst:apatel", "ops:jlee"))
                rows.append(
                    self._correction("event", event_ids[k], src, target, who, when, reason, ids)
                )
        return rows

    def _correction(
        self,
        kind: str,
        entity_id: str,
        src: str,
        dst: str,
        who: str,
        when: datetime,
        reason: str,
        ids: _IdSource,
    ) -> Row:
        return (ids.uuid(), self.ctx.tenant, kind, entity_id, src, dst, who, when, reason)

    # -- reconciliation runs and dead events --------------------------------------------------

    def run_rows(self) -> list[Row]:
        """The weekly reconciliation runs (their totals are filled in at the end)."""
        rows: list[Row] = []
        for run in self.ctx.runs:
            meta = {
                "kind": "revenue",
                "processor": "stripe",
                "window_start": run.window.start.isoformat(),
                "window_end": run.window.end.isoformat(),
                "attempt": run.attempt,
            }
            created = run.ran_at or self.ctx.end
            updated = created + timedelta(minutes=4) if run.ran_at else created
            row = (run.id, self.ctx.tenant, run.state, run.ran_at, run.error, _dumps(meta))
            rows.append((*row, created, updated))
        return rows

    def dead_event_rows(self) -> list[Row]:
        """Failed ingestions: a steady trickle from every source plus the spike."""
        rng = np.random.default_rng([self.ctx.seed, 0xDEAD])
        r = random.Random(self.ctx.seed * 7_919 + 0xDEAD)
        ids = _IdSource(self.ctx.seed, self.ctx.tenant_id, 1)
        days = self.plan.day_totals
        total = max(8, round(int(days.sum()) * DEAD_EVENT_RATE))
        per_day = _apportion(rng, total, days.astype(np.float64) + 1.0)
        rows: list[Row] = []
        for d in range(DAYS):
            for _ in range(int(per_day[d])):
                source = r.choices(_DEAD_SOURCES, weights=_DEAD_WEIGHTS)[0]
                rows.append(self._dead_row(d, source, r.choice(_DEAD_ERRORS[source]), ids, r))
        spike = self.ctx.scenario.dead_spike
        share = _DEAD_WEIGHTS[_DEAD_SOURCES.index(SPIKE_SOURCE)] / sum(_DEAD_WEIGHTS)
        for offset in range(spike.days):
            d = self.ctx.day_index(spike.start) + offset
            for _ in range(max(25, round(12 * total * share / DAYS))):
                rows.append(self._dead_row(d, SPIKE_SOURCE, _SPIKE_ERROR, ids, r))
        self.counts.dead_events = len(rows)
        return rows

    def _dead_row(
        self, d: int, source: str, error: tuple[str, str, str], ids: _IdSource, r: random.Random
    ) -> Row:
        error_type, code, message = error
        ingested = self.ctx.base + timedelta(days=d, seconds=r.uniform(0, 86_399))
        age = self.ctx.end - ingested
        weights = (15, 10, 55, 20) if age > timedelta(days=14) else (60, 25, 15, 0)
        status = r.choices(_REMEDIATION, weights=weights)[0]
        retries = r.randint(0, 5) if status != "pending" else r.randint(0, 2)
        last_retry = ingested + min(age * r.uniform(0.05, 0.5), timedelta(hours=10))
        resolved = ingested + min(age * r.uniform(0.1, 0.9), timedelta(days=6))
        event_type = r.choice((*EVENT_TYPES, None))
        payload = self._dead_payload(source, event_type, ingested, r)
        done = status == "resolved"
        return (
            ids.uuid(),
            self.ctx.tenant,
            source,
            event_type,
            error_type,
            code,
            message,
            _dumps({"stage": "ingest", "validator": "v3"}),
            _TRACEBACK if error_type == "upstream_timeout" else None,
            _dumps(payload),
            retries,
            last_retry if retries else None,
            status,
            "replayed after the fix was deployed" if done else None,
            resolved if done else None,
            ingested,
            resolved if done else (last_retry if retries else ingested),
        )

    def _dead_payload(
        self, source: str, event_type: str | None, ingested: datetime, r: random.Random
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": event_type or "unknown",
            "id": f"wh_{r.getrandbits(48):012x}",
        }
        if r.random() < PII_DEAD_EVENT_RATE:
            body["customer"] = {"email": f"{r.choice(_FIRST)}.{r.choice(_LAST)}@example.com"}
            self.counts.pii += 1
        return {
            "source": source,
            "received_at": _iso(ingested),
            "headers": {"content-type": "application/json", "user-agent": f"{source}/2.1"},
            "body": body,
        }

    # -- summary ------------------------------------------------------------------------------

    def summary(self, transitions: int, elapsed: float) -> DemoDataSummary:
        """The counts, totals and anomalies of everything written."""
        c, ctx = self.counts, self.ctx
        states = [change[1] for change in self.state_changes]
        return DemoDataSummary(
            tenant_id=ctx.tenant_id,
            seed=ctx.seed,
            start_date=ctx.start,
            end_date=ctx.today - timedelta(days=1),
            channels=tuple(ch.code for ch in ctx.channels),
            attribution_events=c.events,
            revenue_events=c.revenue_events,
            attribution_allocations=c.allocations,
            revenue_ledger=c.ledger,
            revenue_state_transitions=transitions,
            refunds=states.count("refunded"),
            chargebacks=states.count("chargeback"),
            dead_events=c.dead_events,
            reconciliation_runs=len(ctx.runs),
            channel_assignment_corrections=c.corrections,
            pii_payloads=c.pii,
            event_revenue_cents=c.event_revenue,
            ledger_revenue_cents=c.ledger_revenue,
            anomalies=_anomalies(ctx, int(self.plan.mistagged.sum())),
            elapsed_seconds=elapsed,
        )


_REFUND_REASONS = ("refund: customer_request", "refund: damaged_item", "refund: wrong_size")
_CHARGEBACK_REASONS = (
    "chargeback: fraudulent",
    "chargeback: product_not_received",
    "chargeback: unrecognized",
)
_BURST_REASONS = {
    "refunded": "refund: coupon stacking via affiliate link",
    "chargeback": "chargeback: fraudulent (affiliate coupon abuse)",
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


def _anomalies(ctx: _Context, mistagged: int) -> tuple[InjectedAnomaly, ...]:
    sc = ctx.scenario
    code = [c.code for c in ctx.channels]
    drop, refund = code[sc.drop_channel], code[sc.refund_channel]
    burst = BURST_REFUND_RATE + BURST_CHARGEBACK_RATE
    found = [
        InjectedAnomaly(
            "revenue_drop",
            drop,
            sc.drop_week.start,
            sc.drop_week.end,
            f"{drop} revenue ~40% below the previous weeks (fewer purchases, smaller orders)",
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
            refund,
            sc.refund_week.start,
            sc.refund_week.end,
            f"{refund} purchases this week at ~{BURST_VOLUME_FACTOR}x the usual volume (a coupon "
            f"push), ~{burst:.0%} of them refunded or charged back within days",
        ),
    ]
    if sc.mistag_from is not None and sc.mistag_to is not None:
        src, dst = code[sc.mistag_from], code[sc.mistag_to]
        found.append(
            InjectedAnomaly(
                "channel_corrections",
                dst,
                sc.mistag_week.start,
                sc.mistag_week.end,
                f"{mistagged} {dst} events recorded as {src}; a batch of channel corrections "
                "moves them and their allocations back",
            )
        )
    return tuple(found)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


async def _insert(conn: asyncpg.Connection, batch: _Batch) -> None:
    if batch.rows:
        await conn.execute(batch.table.insert_sql, *batch.values)


async def _insert_chunk(conn: asyncpg.Connection, chunk: _Chunk) -> None:
    """One chunk, parents first; all of a chunk's allocations in one statement (sum trigger)."""
    for batch in (chunk.events, chunk.allocations, chunk.ledger, chunk.corrections):
        # Foreign-key checks run from plans cached per connection; one made while the tables
        # were nearly empty would scan them whole for every row of a bulk load. Replan.
        await conn.execute("DISCARD PLANS")
        await _insert(conn, batch)


async def _write_chunks(conn: asyncpg.Connection, builder: _Builder, events: int) -> None:
    """Build chunk k+1 in a thread while the server ingests chunk k."""
    parts = [slice(s, min(s + CHUNK_EVENTS, events)) for s in range(0, events, CHUNK_EVENTS)]
    pending = asyncio.ensure_future(asyncio.to_thread(builder.chunk, 0, parts[0]))
    try:
        for number in range(len(parts)):
            chunk = await pending
            if number + 1 < len(parts):
                following = asyncio.to_thread(builder.chunk, number + 1, parts[number + 1])
                pending = asyncio.ensure_future(following)
            await _insert_chunk(conn, chunk)
    finally:
        if not pending.done():
            pending.cancel()


async def _apply_state_changes(
    conn: asyncpg.Connection, ctx: _Context, changes: list[tuple[str, str, str, str]]
) -> int:
    """Refund and charge back in one UPDATE; the ledger's trigger audits each change."""
    if not changes:
        return 0
    ids, states, reasons, times = (list(column) for column in zip(*changes, strict=True))
    status = await conn.execute(
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
        ctx.tenant_id,
    )
    # The trigger stamps transitions with now(); move them to the simulated moment of change.
    await conn.execute(
        """
        UPDATE revenue_state_transitions t
           SET transitioned_at = v.at::timestamptz
          FROM unnest($1::uuid[], $2::text[]) AS v(id, at)
         WHERE t.tenant_id = $3 AND t.ledger_id = v.id AND t.transitioned_at = now()
        """,
        ids,
        times,
        ctx.tenant_id,
    )
    return int(status.split()[-1])


async def _settle_runs(conn: asyncpg.Connection, ctx: _Context) -> None:
    """Record what each completed reconciliation checked."""
    await conn.execute(
        """
        UPDATE reconciliation_runs r
           SET run_metadata = r.run_metadata || jsonb_build_object(
                   'transactions_checked', c.checked, 'amount_cents', c.amount, 'mismatches', 0)
          FROM (SELECT reconciliation_run_id AS id, count(*) AS checked,
                       sum(amount_cents) AS amount
                  FROM revenue_ledger
                 WHERE tenant_id = $1 AND reconciliation_run_id = ANY($2::uuid[])
                 GROUP BY reconciliation_run_id) c
         WHERE r.tenant_id = $1 AND r.id = c.id
        """,
        ctx.tenant_id,
        [run.id for run in ctx.runs],
    )
