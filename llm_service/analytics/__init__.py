"""Fixed, parameterised analytics over the attribution schema (explanations and agent tools)."""

from llm_service.analytics.queries import (
    FINGERPRINT_SUBJECTS,
    MAX_LIMIT,
    attribution_model_comparison,
    channel_corrections,
    channel_performance,
    data_fingerprint,
    dead_event_summary,
    period_comparison,
    reconciliation_status,
    revenue_state_changes,
    top_orders,
)

__all__ = [
    "FINGERPRINT_SUBJECTS",
    "MAX_LIMIT",
    "attribution_model_comparison",
    "channel_corrections",
    "channel_performance",
    "data_fingerprint",
    "dead_event_summary",
    "period_comparison",
    "reconciliation_status",
    "revenue_state_changes",
    "top_orders",
]
