"""The structured scope key and question normalisation (no database)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from cache.scope import CacheScope, normalise_question

TENANT = uuid.UUID("00000000-0000-4000-8000-000000000001")
OTHER_TENANT = uuid.UUID("00000000-0000-4000-8000-000000000002")
PARAMS: dict[str, Any] = {
    "channel": "paid_social",
    "metric": "revenue",
    "start": date(2026, 11, 9),
    "end": date(2026, 11, 15),
    "comparison": {"kind": "previous_period"},
}


def scope(tenant_id: uuid.UUID = TENANT, **changes: Any) -> CacheScope:
    fields: dict[str, Any] = {
        "tenant_id": tenant_id,
        "subject": "channel_performance",
        "params": dict(PARAMS),
        "model": "openai/gpt-4o-mini",
        "prompt_version": "explain-v3",
    }
    params = changes.pop("params", {})
    fields["params"].update(params)
    fields.update(changes)
    return CacheScope(**fields)


def test_key_is_sha256_hex_and_deterministic() -> None:
    key = scope().scope_key()
    assert len(key) == 64 and all(c in "0123456789abcdef" for c in key)
    assert scope().scope_key() == key
    reordered = dict(reversed(list(PARAMS.items())))
    assert scope(params=reordered).scope_key() == key


def test_tenant_is_not_part_of_the_key() -> None:
    # Isolation is RLS plus an explicit tenant predicate; the key describes the request only.
    assert scope(TENANT).scope_key() == scope(OTHER_TENANT).scope_key()
    assert "tenant" not in scope().canonical_json()


def test_canonical_json_is_sorted_compact_and_iso() -> None:
    text = scope().canonical_json()
    assert " " not in text and "\n" not in text
    decoded = json.loads(text)
    assert list(decoded) == sorted(decoded)
    assert decoded["params"]["start"] == "2026-11-09"
    assert json.dumps(decoded, sort_keys=True, separators=(",", ":")) == text


@pytest.mark.parametrize(
    "changes",
    [
        {"params": {"channel": "email"}},
        {"params": {"metric": "conversions"}},
        {"params": {"start": date(2026, 11, 2)}},
        {"params": {"end": date(2026, 11, 16)}},
        {"params": {"comparison": {"kind": "same_period_last_year"}}},
        {"params": {"device": "mobile"}},
        {"subject": "campaign_performance"},
        {"model": "anthropic/claude-haiku"},
        {"prompt_version": "explain-v4"},
    ],
)
def test_every_structured_difference_changes_the_key(changes: dict[str, Any]) -> None:
    assert scope(**changes).scope_key() != scope().scope_key()


def test_equal_values_have_one_spelling() -> None:
    base = scope(params={"min_share": Decimal("0.50")}).scope_key()
    assert scope(params={"min_share": Decimal("0.5")}).scope_key() == base
    at = datetime(2026, 11, 9, 12, 0, tzinfo=UTC)
    cet = at.astimezone(timezone(timedelta(hours=1)))
    assert scope(params={"as_of": at}).scope_key() == scope(params={"as_of": cet}).scope_key()
    assert scope(params={"start": "2026-11-09"}).scope_key() == scope().scope_key()


@pytest.mark.parametrize(
    "bad",
    [
        {"as_of": datetime(2026, 11, 9, 12, 0)},  # naive: which day is it?
        {"weights": {1, 2}},
        {"share": float("nan")},
        {"share": Decimal("Infinity")},
        {"nested": {1: "non-string key"}},
    ],
)
def test_values_without_one_canonical_form_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        scope(params=bad)


def test_blank_identifiers_and_extra_fields_are_rejected() -> None:
    with pytest.raises(ValidationError):
        scope(subject=" ")
    with pytest.raises(ValidationError):
        scope(prompt_version="")
    with pytest.raises(ValidationError):
        scope(question="free text belongs to the lookup, not the scope")


def test_scope_is_frozen() -> None:
    with pytest.raises(ValidationError):
        scope().subject = "other"  # type: ignore[misc]


def test_flight_key_is_scope_and_fingerprint_only() -> None:
    assert scope().flight_key("fp-1") == scope().flight_key("fp-1")
    assert scope().flight_key("fp-1") != scope().flight_key("fp-2")
    assert scope().flight_key("fp-1") != scope(params={"channel": "email"}).flight_key("fp-1")
    assert scope().flight_key("fp-1").startswith(scope().scope_key())


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("  Why did   revenue\n drop?  ", "why did revenue drop"),
        ("Why did revenue drop", "why did revenue drop"),
        ("WHY DID REVENUE DROP?!", "why did revenue drop"),
        ("Why is ROAS so low?", "why is return on ad spend so low"),
        (
            "Which campaign had the lowest CPA?",
            "which campaign had the lowest cost per acquisition",
        ),
        ("Is the CTR/AOV ok?", "is the click-through rate/average order value ok"),
        ("roasting numbers", "roasting numbers"),  # whole words only
        ("", ""),
        ("   ", ""),
        (None, ""),
        ("?", ""),
    ],
)
def test_normalise_question(raw: str | None, normalised: str) -> None:
    assert normalise_question(raw) == normalised
    assert normalise_question(normalised) == normalised  # idempotent
