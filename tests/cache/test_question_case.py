"""Case an English question's names cannot be read from, and final marks (cache.question_case)."""

from __future__ import annotations

import pytest

from cache.question_case import case_conflict


@pytest.mark.parametrize(
    ("asked", "stored", "reason"),
    [
        ("Target revenue fell, why?", "target revenue fell, why?", "case_differs"),
        (
            "Spend rose. Apple orders fell, why?",
            "Spend rose. apple orders fell, why?",
            "case_differs",
        ),
        ('"Next" traffic dropped, why?', '"next" traffic dropped, why?', "case_differs"),
        (
            "Spend rose.\nApple orders fell, why?",
            "Spend rose.\n\napple orders fell, why?",
            "case_differs",
        ),
        ("US revenue fell, why?", "Us revenue fell, why?", "case_differs"),
        ("IT spend rose, why?", "It spend rose, why?", "case_differs"),
        ("DID IT APPROVE THE BUDGET?", "Did it approve the budget?", "case_differs"),
        ("Spend exceeded budget?", "Spend exceeded budget.", "final_mark_differs"),
    ],
)
def test_case_nobody_can_read_and_a_replaced_final_mark_are_reasons_to_miss(
    asked: str, stored: str, reason: str
) -> None:
    assert case_conflict(asked, stored) == reason
    assert case_conflict(stored, asked) == reason


@pytest.mark.parametrize(
    ("asked", "stored"),
    [
        ("Why did revenue fall?", "why did revenue fall?"),
        ("ROAS by channel", "roas by channel"),
        ("Paid social revenue fell, why?", "paid social revenue fell, why?"),
        ("Please explain why revenue fell.", "Why did revenue fall?"),
        ("Why did revenue fall", "Why did revenue fall?"),
        ("DID IT APPROVE THE BUDGET?", "DID IT APPROVE THE BUDGET"),
        ("Why did Target revenue fall?", "Why did Target revenue drop?"),
    ],
)
def test_case_and_marks_that_carry_nothing_leave_the_decision_to_the_matcher(
    asked: str, stored: str
) -> None:
    assert case_conflict(asked, stored) is None
    assert case_conflict(stored, asked) is None
