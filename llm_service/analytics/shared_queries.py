"""What every analytics query shares: its conventions, SQL fragments and argument checks.

Conventions: ``$1``/``$2`` are the period's UTC bounds, ``occurred_at >= $1 AND occurred_at <
$2`` (half-open). No statement names the tenant: the row-level security policy adds
``tenant_id = <current tenant>``, a stable expression the planner uses as the leading index key
(every index used here starts with ``tenant_id``). Every statement ends in ``LIMIT $n``, a row cap
one above the caller's limit (per list), so the caller can tell that a list was cut.

Allocations count under their latest ``model_version`` per event and model type (compared by
length, then text, so "10" follows "9"): the allocation-sum trigger checks each version on its
own, so summing versions would count an event's revenue twice.

Every query function runs on a connection already inside a tenant transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Final

import asyncpg

from llm_service.analytics.models import MODEL_TYPES, ModelType, Period
from llm_service.errors import InvalidRequest

#: The largest `limit` any query accepts (the tools allow less).
MAX_LIMIT: Final = 1000

CONVERSION_TYPES: Final = "('purchase', 'conversion')"
REMEDIATION_STATUSES: Final = "('pending', 'in_progress', 'resolved', 'abandoned')"
#: Reconciliation runs about a period are created during it or up to this long after it.
RUN_GRACE: Final = "interval '7 days'"
#: Free text (reasons, error messages) is cut to this many characters.
TEXT_CHARS: Final = 200

# Allocations of the period's revenue events under their latest model version. Driven from the
# events: idx_events_tenant_occurred (tenant_id, occurred_at) for the period, then one probe per
# revenue event into idx_allocations_event (tenant_id, event_id, model_type, model_version); the
# window function keeps the LATERAL subquery from being flattened into a join the planner might
# run as a scan of the tenant's every allocation. Events without revenue are skipped: they have
# nothing to attribute (the sum rule keeps their allocations within a cent of zero) and they are
# most events. {model} filters the model type; {extra} carries the events' period flags.
ALLOCATED: Final = """
    SELECT v.channel_code AS channel, v.model_type, v.allocated_revenue_cents{extra}
    FROM period_revenue_events e
    CROSS JOIN LATERAL (
        SELECT a.channel_code, a.model_type, a.allocated_revenue_cents,
               rank() OVER (PARTITION BY a.model_type
                            ORDER BY length(a.model_version) DESC, a.model_version DESC)
                   AS version_rank
        FROM attribution_allocations a
        WHERE a.tenant_id = e.tenant_id AND a.event_id = e.id{model}
    ) v
    WHERE v.version_rank = 1
"""

Records = Sequence[asyncpg.Record]


def check_period(start: date, end: date) -> Period:
    """The period from `start` to `end`; an error unless it starts before it ends."""
    if start >= end:
        raise InvalidRequest(f"the period must start before it ends: {start} is not before {end}")
    return Period(start=start, end=end)


def row_cap(limit: int) -> int:
    """The row cap for a list: one more than `limit`, to tell whether the list was cut."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    return limit + 1


def check_model_type(model_type: str) -> ModelType:
    """`model_type` as a known attribution model; an error for any other."""
    if model_type not in MODEL_TYPES:
        raise InvalidRequest(f"unknown attribution model {model_type!r}; one of {MODEL_TYPES}")
    return model_type


def split_sections(rows: Records, limit: int) -> tuple[dict[str, list[asyncpg.Record]], bool]:
    """Rows of a sectioned statement by section, each cut to `limit`; and whether any was cut."""
    sections: dict[str, list[asyncpg.Record]] = {}
    more = False
    for row in rows:
        if row["rn"] > limit:
            more = True
        else:
            sections.setdefault(row["section"], []).append(row)
    return sections, more
