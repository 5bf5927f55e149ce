"""The canonical request the Idempotency-Key rule compares, and the rule itself."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from uuid import UUID

import pytest

from llm_service.errors import Conflict
from llm_service.idempotency import REUSED_KEY_MESSAGE, canonical, fingerprint, replay


def test_key_order_and_number_spelling_do_not_change_the_canonical_form() -> None:
    a = {"b": {"y": Decimal("10.00"), "x": [1, "two"]}, "a": date(2025, 1, 1)}
    b = {"a": date(2025, 1, 1), "b": {"x": [1, "two"], "y": Decimal("1E+1")}}
    assert canonical(a) == canonical(b) == '{"a":"2025-01-01","b":{"x":[1,"two"],"y":"10"}}'
    assert fingerprint(a) == fingerprint(b) and len(fingerprint(a)) == 64


@pytest.mark.parametrize(
    "other",
    [
        {"q": "why?", "cents": Decimal("10.01")},
        {"q": "why?", "cents": Decimal("10"), "extra": None},
        {"q": "Why?", "cents": Decimal("10")},
    ],
)
def test_any_real_difference_is_another_request(other: dict[str, object]) -> None:
    stored = {"q": "why?", "cents": Decimal("10.00")}
    replay(True, stored, other)  # a new resource: nothing to compare
    with pytest.raises(Conflict, match="different request") as refused:
        replay(False, stored, other)
    assert refused.value.status == 409 and refused.value.message == REUSED_KEY_MESSAGE


def test_a_true_retry_is_accepted() -> None:
    replay(
        False,
        {"id": UUID(int=1), "cents": Decimal("0.5")},
        {"cents": Decimal("0.50"), "id": UUID(int=1)},
    )


def test_a_value_without_a_canonical_form_is_refused_loudly() -> None:
    with pytest.raises(TypeError, match="no canonical form"):
        canonical({"x": object()})
