"""The explanations API's request and response models (strict: unknown fields are refused).

Subjects and the parameters each accepts:

| subject                          | analytics query              | metric (default first)                       | channel | attribution_model | comparison |
|----------------------------------|------------------------------|----------------------------------------------|---------|-------------------|------------|
| `channel_performance`            | channel_performance          | attributed_revenue, revenue, conversions     | yes     | yes               | no         |
| `period_change`                  | period_comparison            | revenue, conversions, attributed_revenue     | yes     | yes               | optional   |
| `attribution_model_disagreement` | attribution_model_comparison | attributed_revenue                           | yes     | no (all models)   | no         |
| `revenue_reconciliation`         | reconciliation_status        | revenue                                      | no      | no                | no         |

`period` is either an absolute half-open UTC range `{"start": "YYYY-MM-DD", "end": "YYYY-MM-DD"}`
(end excluded) or a phrase such as "last week", resolved to dates before anything else. The
comparison of `period_change` defaults to the calendar month before for a calendar month ("last
month": November against October), the year before for a calendar year, else to the period of
equal length just before.
"""  # noqa: E501

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from llm_service.analytics.models import ModelType
from llm_service.input_rules import NO_NUL, visible
from llm_service.periods import check_calendar
from llm_service.tools.args import CHANNEL_PATTERN, MAX_PERIOD_DAYS

Subject = Literal[
    "channel_performance",
    "period_change",
    "attribution_model_disagreement",
    "revenue_reconciliation",
]
Metric = Literal["revenue", "conversions", "attributed_revenue"]
Confidence = Literal["low", "medium", "high"]

#: The metrics each subject explains; the first is the default.
SUBJECT_METRICS: dict[str, tuple[Metric, ...]] = {
    "channel_performance": ("attributed_revenue", "revenue", "conversions"),
    "period_change": ("revenue", "conversions", "attributed_revenue"),
    "attribution_model_disagreement": ("attributed_revenue",),
    "revenue_reconciliation": ("revenue",),
}
#: Subjects that can be narrowed to one channel.
CHANNEL_SUBJECTS = frozenset(
    {"channel_performance", "period_change", "attribution_model_disagreement"}
)
#: Subjects whose attributed revenue depends on one attribution model.
MODEL_SUBJECTS = frozenset({"channel_performance", "period_change"})
DEFAULT_ATTRIBUTION_MODEL: ModelType = "last_touch"
MAX_QUESTION_CHARS = 500

Channel = Annotated[str, StringConstraints(pattern=CHANNEL_PATTERN)]
PeriodPhrase = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)
]


class DateRange(BaseModel):
    """An absolute half-open UTC date range [start, end) of at most 366 days."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: date = Field(description="First day included, YYYY-MM-DD (UTC).")
    end: date = Field(description="Day after the last day (exclusive), YYYY-MM-DD.")

    @model_validator(mode="after")
    def _valid(self) -> Self:
        """Refuse empty, reversed and over-long ranges, and any outside 1970-2100."""
        check_calendar(self.start, self.end, "range")
        if self.start >= self.end:
            raise ValueError(f"start ({self.start}) must be before end ({self.end})")
        if (self.end - self.start).days > MAX_PERIOD_DAYS:
            raise ValueError(
                f"the range spans {(self.end - self.start).days} days; "
                f"at most {MAX_PERIOD_DAYS} are allowed"
            )
        return self


class ExplanationRequest(BaseModel):
    """What a dashboard asks to have explained (see the module doc for the subjects)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "subject": "period_change",
                    "channel": "facebook_paid",
                    "metric": "revenue",
                    "period": "last week",
                    "question": "Why did paid social revenue drop?",
                },
                {
                    "subject": "channel_performance",
                    "period": {"start": "2026-02-23", "end": "2026-03-02"},
                },
            ]
        },
    )

    subject: Subject
    period: DateRange | PeriodPhrase = Field(
        description='{"start", "end"} (end excluded) or a phrase such as "last week".'
    )
    comparison: DateRange | None = Field(
        default=None,
        description="period_change only: the range to compare with (default: the calendar "
        "month before for a calendar month, the year before for a calendar year, else the "
        "period of equal length just before).",
    )
    channel: Channel | None = Field(default=None, description="A channel taxonomy code.")
    metric: Metric | None = Field(default=None, description="Default: the subject's first.")
    attribution_model: ModelType | None = Field(
        default=None, description="channel_performance and period_change (default last_touch)."
    )
    question: (
        Annotated[
            str,
            StringConstraints(max_length=MAX_QUESTION_CHARS, pattern=NO_NUL),
            AfterValidator(visible),
        ]
        | None
    ) = Field(
        default=None,
        description="Optional free text, at most 500 characters; omit it or send "
        "null for none (blank text is refused).",
    )

    @model_validator(mode="after")
    def _fits_subject(self) -> Self:
        """Refuse parameters the subject does not take."""
        if self.metric is not None and self.metric not in SUBJECT_METRICS[self.subject]:
            allowed = ", ".join(SUBJECT_METRICS[self.subject])
            raise ValueError(f"metric {self.metric!r} does not apply to {self.subject}: {allowed}")
        if self.channel is not None and self.subject not in CHANNEL_SUBJECTS:
            raise ValueError(f"{self.subject} does not take a channel")
        if self.attribution_model is not None and self.subject not in MODEL_SUBJECTS:
            raise ValueError(f"{self.subject} does not take an attribution_model")
        if self.comparison is not None and self.subject != "period_change":
            raise ValueError("only period_change takes a comparison range")
        return self


class Driver(BaseModel):
    """One thing behind the numbers, with its figure from the data."""

    label: str
    figure: str
    detail: str


class Citation(BaseModel):
    """The data an explanation rests on: which query, its parameters and the key figures."""

    query: str
    parameters: dict[str, Any]
    figures: dict[str, Any]


class Explanation(BaseModel):
    """The explanation proper; citations are added by the service from the data, never the model."""

    summary: str
    drivers: list[Driver]
    confidence: Confidence
    citations: list[Citation]


class PeriodOut(BaseModel):
    """An absolute half-open UTC date range."""

    start: date
    end: date


class CacheMatch(BaseModel):
    """Why a cached explanation answers this request."""

    question: str | None = Field(
        description="The stored question whose answer is served (null: no free text)."
    )
    relation: Literal["none", "exact", "paraphrase"] = Field(
        description="none: neither has free text; exact: the same text once trimmed, one-spaced "
        "and lower-cased; paraphrase: both read as asking the same thing."
    )
    agreement: dict[str, Any] = Field(
        default_factory=dict,
        description="For a paraphrase: the features both questions agree on (intent, tense, "
        "measures, entities, direction, comparators, negation, ...) and the known relations "
        "that reconcile their wording (synonym, inflection, stop_word, number_words, ...).",
    )


class ExplanationResponse(BaseModel):
    """An explanation and how it was produced (which data, whether cached, at what cost)."""

    subject: Subject
    explanation: Explanation
    cache: Literal["hit", "miss"]
    degraded: bool
    degraded_reason: str | None = Field(
        default=None,
        description="no_model | monthly_cap_spent | provider_unavailable | "
        "invalid_model_output | call_ceiling | busy",
    )
    cost_usd: str = Field(
        description='What this request spent, exact USD. A cache hit costs "0": no model '
        "call (with a provider embedding model, a question not embedded recently adds that "
        "embedding's cost)."
    )
    model: str | None = Field(description="The model that wrote it; null when degraded.")
    latency_ms: float = Field(description="Time spent in the service, milliseconds.")
    period: PeriodOut = Field(description="The absolute dates explained (end excluded).")
    comparison: PeriodOut | None = Field(
        default=None, description="period_change: the absolute dates compared with."
    )
    fingerprint: str = Field(description="sha256 of the data the explanation rests on.")
    cache_match: CacheMatch | None = Field(
        default=None, description="On a cache hit: which stored question it matched, and why."
    )
