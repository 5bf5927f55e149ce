"""Rows from the plan, chunk by chunk: events, allocations, ledger, corrections, dead events."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from llm_service.demo_data.channels import (
    _REFERRERS,
    _SCATTERED_FIXES,
)
from llm_service.demo_data.planner import (
    BURST_CHARGEBACK_RATE,
    BURST_REFUND_RATE,
    CHARGEBACK_RATE,
    CONVERSION,
    DAYS,
    DEAD_EVENT_RATE,
    EVENT_TYPES,
    JOURNEY_LENGTHS,
    JOURNEY_WEIGHTS,
    MODEL_CONFIDENCE,
    MODEL_TYPES,
    MODEL_VERSION,
    PII_DEAD_EVENT_RATE,
    PII_EVENT_RATE,
    PURCHASE,
    REFUND_RATE,
    SPIKE_SOURCE,
    TAX_RATE,
    Row,
    _apportion,
    _Context,
    _datetimes,
    _dumps,
    _IdSource,
    _iso,
    _mix64,
    _moments,
    _order_id,
    _Plan,
    _Run,
    _session_uuids,
    _split_cents,
)
from llm_service.demo_data.rows import (
    _ALLOCATIONS,
    _BURST_REASONS,
    _CHARGEBACK_REASONS,
    _CORRECTIONS,
    _DEAD_ERRORS,
    _DEAD_SOURCES,
    _DEAD_WEIGHTS,
    _DEVICES,
    _EVENTS,
    _FIRST,
    _LAST,
    _LEDGER,
    _LIBRARY,
    _PATHS,
    _REFUND_REASONS,
    _REMEDIATION,
    _SKUS,
    _SPIKE_ERROR,
    _TRACEBACK,
    _anomalies,
    _batch,
    _Chunk,
    _Counts,
    _Journey,
    _model_weights,
)
from llm_service.demo_data.summary import (
    DemoDataSummary,
)


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
