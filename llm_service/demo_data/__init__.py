"""Realistic, deterministic synthetic attribution data for one tenant, with known anomalies.

A package: `planner` (the scenario and the numpy plan), `builder` (rows, chunk by chunk),
`writer` (the inserts and `generate_demo_data`), with `channels`, `rows` and `summary`.

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

from llm_service.demo_data.planner import MAX_EVENTS, MIN_EVENTS, _apportion, _split_cents
from llm_service.demo_data.rows import _model_weights
from llm_service.demo_data.summary import DemoDataExists, DemoDataSummary, InjectedAnomaly
from llm_service.demo_data.writer import generate_demo_data

__all__ = [
    "MAX_EVENTS",
    "MIN_EVENTS",
    "DemoDataExists",
    "DemoDataSummary",
    "InjectedAnomaly",
    "_apportion",
    "_model_weights",
    "_split_cents",
    "generate_demo_data",
]
