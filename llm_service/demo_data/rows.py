"""The tables written, their columns, the fixed vocabularies the rows draw from, and the
anomalies as the summary reports them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from llm_service.demo_data.planner import (
    BURST_CHARGEBACK_RATE,
    BURST_REFUND_RATE,
    BURST_VOLUME_FACTOR,
    SPIKE_SOURCE,
    Row,
    _Context,
)
from llm_service.demo_data.queries import bulk_insert_sql
from llm_service.demo_data.summary import InjectedAnomaly

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
        return bulk_insert_sql(self.name, self.columns)


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
