"""Prometheus metrics: one registry, the series operators and finance watch."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_LATENCY = Histogram(
    "llm_service_http_request_duration_seconds",
    "HTTP request latency by route template",
    ["method", "route", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
LLM_CALLS = Counter(
    "llm_service_llm_calls_total",
    "Provider attempts by model, endpoint and outcome",
    ["model", "endpoint", "status"],
    registry=REGISTRY,
)
LLM_SPEND = Counter(
    "llm_service_llm_spend_usd_total",
    "Settled spend in USD by model and endpoint (the ledger holds the exact figures)",
    ["model", "endpoint"],
    registry=REGISTRY,
)
RESERVATIONS_IN_FLIGHT = Gauge(
    "llm_service_llm_reservations_in_flight",
    "Provider calls reserved and not yet settled, in this process",
    registry=REGISTRY,
)
USAGE_ANOMALIES = Counter(
    "llm_service_llm_usage_anomalies_total",
    "Provider replies whose reported usage was impossible (billed at the reservation instead)",
    ["model", "endpoint"],
    registry=REGISTRY,
)
RESERVATIONS_SWEPT = Counter(
    "llm_service_llm_reservations_swept_total",
    "Expired reservations settled at their worst case by the sweeper",
    registry=REGISTRY,
)
CACHE_LOOKUPS = Counter(
    "llm_service_explanation_cache_total",
    "Explanation requests by cache result",
    ["result"],
    registry=REGISTRY,
)
RUN_OUTCOMES = Counter(
    "llm_service_run_outcomes_total",
    "Investigations and jobs by terminal state",
    ["kind", "status"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "llm_service_queue_depth",
    "Queued and running investigations and jobs (all tenants)",
    ["kind", "status"],
    registry=REGISTRY,
)


def render() -> bytes:
    """The current metrics in Prometheus' text format."""
    return generate_latest(REGISTRY)
