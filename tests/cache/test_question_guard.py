"""The lexical veto on embedding matches (no database, no model)."""

from __future__ import annotations

import pytest

from cache.question_guard import questions_compatible, signature


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Why did revenue drop?", "What caused the decline in revenue?"),
        ("Which campaign performed best?", "What was the top performing campaign?"),
        ("Why is AOV lower?", "Why is average order value down?"),
        ("Did the new campaign affect revenue?", "Did launching the new campaign hit revenue?"),
        ("Explain this chart", "What does this chart show?"),
        (
            "Why did conversions spike on Tuesday?",
            "What caused the jump in conversions on Tuesday?",
        ),
    ],
)
def test_paraphrases_pass(a: str, b: str) -> None:
    assert questions_compatible(a, b)
    assert questions_compatible(b, a)


@pytest.mark.parametrize(
    ("a", "b", "feature"),
    [
        ("Why did revenue drop?", "Why did revenue increase?", "direction"),
        ("Which channel contributed most?", "Which channel contributed least?", "extreme"),
        ("Why did revenue drop?", "Why did revenue not drop?", "negation"),
        ("Why didn't conversions fall?", "Why did conversions fall?", "negation"),
        ("Why did revenue drop on Saturday?", "Why did revenue drop on Sunday?", "specifics"),
        ("What were the top 3 campaigns?", "What were the top 5 campaigns?", "specifics"),
        ("Why did revenue drop after the launch?", "Why did revenue drop before it?", "specifics"),
        ("How did we do versus last week?", "How did we do versus last year?", "specifics"),
        (
            "Which campaign drove the most revenue?",
            "Which campaign drove the most clicks?",
            "metric",
        ),
        ("Why is CPC rising?", "Why is CPM rising?", "metric"),
        ("Why did revenue drop?", "How much did revenue drop?", "intent"),
        ("Why did revenue drop?", "Did revenue drop?", "intent"),
        ("Why did ROAS improve?", "Will ROAS keep improving?", "intent"),
        ("What caused revenue to drop?", "What would cause revenue to drop?", "intent"),
    ],
)
def test_meaning_flips_are_vetoed(a: str, b: str, feature: str) -> None:
    assert not questions_compatible(a, b), feature
    assert not questions_compatible(b, a), feature


def test_a_question_without_a_metric_is_about_the_scope_metric() -> None:
    assert questions_compatible("Why did it drop?", "Why did revenue drop?")


def test_phrases_match_whole_words_only() -> None:
    # "show total" must not read as the intent phrase "how to".
    assert "action" not in signature("show total revenue").intents
    assert "ctr" in signature("what is the click-through rate").metrics
    assert signature("Why is ROAS low?").metrics == frozenset({"roas"})
