"""The exact structured scope of a cached explanation, its key, and question normalisation.

A cache entry is reusable only for the very same structured request: the same subject, the same
ABSOLUTE parameters (channel, metric, start/end dates, comparison, …), the same answering model
and the same prompt version. `scope_key()` hashes all of that into a 64-hex sha256. Only the
optional free-text question is matched by embedding similarity, and only among entries whose
scope key is identical (see `cache.store`).

Why the tenant is NOT part of the scope key: tenant isolation is enforced by PostgreSQL row-level
security and by an explicit `tenant_id = $1` predicate on every query (the scope index leads with
`tenant_id`), never by a hash. A key that depends only on the request's structure means the same
question about the same widget has the same key for every tenant, so operators can count, inspect
and invalidate scopes (e.g. after a prompt-version rollout) without the key itself identifying
anyone, and a tenant-blind key can never be mistaken for an isolation mechanism.

`normalise_question` prepares the free text for embedding and matching only (the stored and
displayed question keeps the user's wording): "Why did revenue drop?" and "why did revenue  drop"
become one text, known marketing abbreviations (ROAS, CPA, CTR, AOV, …) are spelt out because the
embedding model does not know them, and '' means "no free text".
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, field_validator

_WHITESPACE = re.compile(r"\s+")
_TRAILING_PUNCTUATION = re.compile(r"[\s?!.,;:]+$")
# Marketing abbreviations the embedding model does not know; expanded (as whole words) before
# embedding, so "Why is AOV lower?" and "why is average order value down?" land close together.
_ABBREVIATIONS: dict[str, str] = {
    "roas": "return on ad spend",
    "roi": "return on investment",
    "cpa": "cost per acquisition",
    "cpc": "cost per click",
    "cpm": "cost per thousand impressions",
    "ctr": "click-through rate",
    "cvr": "conversion rate",
    "aov": "average order value",
    "ltv": "customer lifetime value",
    "clv": "customer lifetime value",
    "yoy": "year over year",
}
_ABBREVIATION_RE = re.compile(r"\b(" + "|".join(_ABBREVIATIONS) + r")\b")


def normalise_question(question: str | None) -> str:
    """Embedding input: trimmed, one-spaced, lower-case, abbreviations spelt out (see above)."""
    if question is None:
        return ""
    text = _WHITESPACE.sub(" ", question).strip().lower()
    text = _TRAILING_PUNCTUATION.sub("", text)
    return _ABBREVIATION_RE.sub(lambda m: _ABBREVIATIONS[m.group(1)], text)


def _canonical(value: Any, path: str) -> Any:
    """A JSON-ready, deterministic form of a parameter value (or TypeError naming its path)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise TypeError(f"scope parameter {path} is not a finite number")
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError(f"scope parameter {path} is not a finite number")
        # 1.50 and 1.5 are the same amount: one canonical spelling, never through float.
        return format(value.normalize(), "f")
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise TypeError(f"scope parameter {path} is a naive datetime; give a timezone")
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return _canonical(value.value, path)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"scope parameter {path} has a non-string key {key!r}")
            out[key] = _canonical(item, f"{path}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_canonical(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"scope parameter {path} has unsupported type {type(value).__name__}")


class CacheScope(BaseModel):
    """The exact structured context of an explanation; entries serve only an equal scope."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: UUID
    subject: str
    params: dict[str, Any]
    model: str
    prompt_version: str

    @field_validator("subject", "model", "prompt_version")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        """Reject blank identifiers (they would silently merge unrelated scopes)."""
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("params")
    @classmethod
    def _canonicalisable(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Accept only parameters with one deterministic JSON form (dates, Decimals, …)."""
        try:
            _canonical(value, "params")
        except TypeError as exc:
            raise ValueError(str(exc)) from exc
        return value

    def canonical(self) -> dict[str, Any]:
        """The scope without the tenant, as plain JSON values (what is hashed and stored)."""
        return {
            "subject": self.subject,
            "params": _canonical(self.params, "params"),
            "model": self.model,
            "prompt_version": self.prompt_version,
        }

    def canonical_json(self) -> str:
        """Canonical JSON of `canonical()`: sorted keys, no whitespace, dates in ISO 8601."""
        return json.dumps(
            self.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )

    def scope_key(self) -> str:
        """sha256 hex of the canonical JSON of everything but the tenant (see the module doc)."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    def flight_key(self, fingerprint: str) -> str:
        """The single-flight key of a miss: scope and data, not the question."""
        return f"{self.scope_key()}:{hashlib.sha256(fingerprint.encode('utf-8')).hexdigest()}"
