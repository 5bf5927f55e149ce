"""The cache's decision: does a stored question ask what the new one asks? Positive evidence only.

A hit needs one of two proofs:
- `exact`: the two texts are equal once trimmed, one-spaced, lower-cased and stripped of trailing
  punctuation (any language; the only way a question the analyser does not read can hit);
- `paraphrase`: both are English questions the analyser reads (`cache.question_signature`), every
  structured feature agrees (intent, tense, modality, negation, direction, comparators with their
  bounds, inclusion, extremes, time words, prefixes, numbers, measures, entities, one thing or
  several: `cache.question_plurality`) and the canonical word sequences are equal: the words
  differ only by the known relations listed.
Embedding similarity only chooses which stored questions to look at (`cache.store`); it never
decides. Everything else is a miss, with the first feature that disagreed as its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from cache.question_signature import Signature, analyse, exact_text, same_names

_COMPARED: tuple[str, ...] = (
    "intent",
    "tense",
    "modality",
    "negation",
    "direction",
    "comparators",
    "inclusion",
    "extremes",
    "time_words",
    "prefixes",
    "numbers",
    "measures",
    "entities",
    "content",
    "plurality",
)


@dataclass(frozen=True)
class MatchDecision:
    """Whether a stored question may serve a new one, and the evidence (or the reason not)."""

    hit: bool
    relation: Literal["exact", "paraphrase"] | None
    reason: str
    agreement: dict[str, Any] = field(default_factory=dict)


def match(asked: str, stored: str) -> MatchDecision:
    """The decision for serving the answer to `stored` for the question `asked`."""
    if not exact_text(asked) or not exact_text(stored):
        return MatchDecision(False, None, "no_question")
    # English capitals can name things ("IT", "Apple"); other languages' are left alone.
    if exact_text(asked) == exact_text(stored) and (
        same_names(asked, stored) or analyse(asked).language != "en"
    ):
        return MatchDecision(True, "exact", "same text", {"relation": "exact"})
    a, b = analyse(asked), analyse(stored)
    if a.language != "en" or b.language != "en":
        return MatchDecision(False, None, "language_not_analysed")
    if not a.understood or not b.understood:
        return MatchDecision(False, None, "not_understood")
    for name in _COMPARED:
        if getattr(a, name) != getattr(b, name):
            return MatchDecision(False, None, f"{name}_differs")
    if ("passive" in a.grammar) != ("passive" in b.grammar):
        return MatchDecision(False, None, "voice_differs")
    # Articles where both have them in the same places: "a campaign" (any) is not "the campaign".
    if len(a.grammar) == len(b.grammar) and a.grammar != b.grammar:
        return MatchDecision(False, None, "grammar_differs")
    return MatchDecision(True, "paraphrase", "signatures agree", _agreement(a, b))


def analysable(question: str) -> bool:
    """True if a paraphrase of `question` could ever hit (so finding candidates is worth it)."""
    return analyse(question).understood


def _agreement(a: Signature, b: Signature) -> dict[str, Any]:
    """The features both questions share and the relations that reconcile their words."""
    features = a.features()
    return {
        "relation": "paraphrase",
        **{k: v for k, v in features.items() if v not in ([], None, "")},
        "relations": sorted(a.relations | b.relations),
    }
