"""Fixed, parameterised analytics over the attribution schema (explanations and agent tools)."""

from llm_service.analytics.channel_queries import attribution_model_comparison, channel_performance
from llm_service.analytics.data_quality_queries import channel_corrections, dead_event_summary
from llm_service.analytics.fingerprint_queries import FINGERPRINT_SUBJECTS, data_fingerprint
from llm_service.analytics.ledger_queries import (
    reconciliation_status,
    revenue_state_changes,
    top_orders,
)
from llm_service.analytics.shared_queries import MAX_LIMIT
from llm_service.analytics.trend_queries import period_comparison

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
