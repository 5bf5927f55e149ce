"""The prompt of an explanation and the schema of the model's answer.

PROMPT_VERSION is part of every cache scope: change it whenever the prompt, the schema or the
data shown to the model changes, and old entries stop being served.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llm_service.explanations.data import ExplanationQuery, SubjectData
from llm_service.explanations.schemas import Confidence

PROMPT_VERSION = "explain-v1"
MAX_DRIVERS = 6


class ModelDriver(BaseModel):
    """One driver as the model writes it."""

    model_config = ConfigDict(extra="ignore")

    label: str = Field(min_length=1, max_length=120)
    figure: str = Field(min_length=1, max_length=120)
    detail: str = Field(default="", max_length=600)


class ModelExplanation(BaseModel):
    """The model's answer: anything else it adds (citations above all) is ignored."""

    model_config = ConfigDict(extra="ignore")

    summary: str = Field(min_length=1, max_length=1500)
    drivers: list[ModelDriver] = Field(default_factory=list, max_length=MAX_DRIVERS)
    confidence: Confidence


_SCHEMA = json.dumps(
    {
        "summary": "string: 1-3 sentences answering the question with the key figures",
        "drivers": [
            {
                "label": "string: what moved (a channel, a model, a ledger state)",
                "figure": "string: its figure, copied from the data",
                "detail": "string: one sentence of context from the data",
            }
        ],
        "confidence": "low | medium | high",
    }
)

SYSTEM_PROMPT = (
    "You explain the numbers on a marketing-attribution dashboard to its users. "
    "Use ONLY the figures in the provided data: never invent, extrapolate or estimate a number, "
    "and copy figures as they appear (amounts are in the account's currency, major units; "
    "pairs are [current, previous]). If the data cannot answer the question, say so and set "
    "confidence to low. Name at most "
    f"{MAX_DRIVERS} drivers, largest first. Answer with ONE JSON object and nothing else, "
    f"matching this shape: {_SCHEMA}"
)


def messages(query: ExplanationQuery, data: SubjectData) -> list[dict[str, Any]]:
    """The chat messages of one explanation: the system prompt, then the request and its data."""
    request: dict[str, Any] = {
        "subject": query.subject,
        "metric": query.metric,
        "period": query.period.as_dict(),
    }
    if query.comparison is not None:
        request["comparison_period"] = query.comparison.as_dict()
    if query.channel is not None:
        request["channel"] = query.channel
    if query.question:
        request["question"] = query.question
    payload = {"request": request, "data": {"query": data.query, **data.prompt_data}}
    content = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": content},
    ]
