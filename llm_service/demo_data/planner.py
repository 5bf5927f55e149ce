"""The scenario (where the anomalies go) and the plan: every event's time, channel, type,
session and revenue, in time order, computed with numpy before any row is written."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import numpy as np
import numpy.typing as npt

from llm_service.demo_data.channels import (
    _Channel,
    _Profile,
)

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
