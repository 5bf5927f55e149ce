"""The cache's decision: does a stored question ask what the new one asks? Positive evidence only.

A hit needs one of two proofs:
- `exact`: the two texts are equal once trimmed, one-spaced and stripped of trailing punctuation,
  with case compared where it carries meaning: names in English (`same_names`); in any other
  text the text as typed, but for its first letter and a final mark left out on one side
  (`cache.question_exact`); the only way a question the analyser does not read can hit;
- `paraphrase`: both are English questions the analyser reads (`cache.question_signature`), every
  structured feature agrees (intent, tense, modality, negation, direction, comparators with their
  bounds, inclusion, extremes, time words, prefixes, numbers, measures, entities, one thing or
  several: `cache.question_plurality`, the marks it does not read: `cache.question_marks`, whose
  things "our" and "the" name) and the canonical word sequences are equal: the words differ
  only by the known relations listed.
Before either, two English texts whose case or final marks tell them apart miss
(`cache.question_case`: a sentence-initial capital spelt otherwise that may be a name, text
all in capitals, "?" against ".").
Embedding similarity only chooses which stored questions to look at (`cache.store`); it never
decides. Everything else is a miss, with the first feature that disagreed as its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from cache.question_case import case_conflict
from cache.question_determiners import same_owners
from cache.question_exact import same_cased
from cache.question_signature import Signature, analyse, exact_text, foreign, same_names

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
    "marks",
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
    if not (foreign(asked) or foreign(stored)):
        conflict = case_conflict(asked, stored)  # capitals nobody can read, "?" vs "."
        if conflict is not None:
            return MatchDecision(False, None, conflict)
    if exact_text(asked) == exact_text(stored) and _same_as_written(asked, stored):
        return MatchDecision(True, "exact", "same text", {"relation": "exact"})
    a, b = analyse(asked), analyse(stored)
    if a.language != "en" or b.language != "en":
        return MatchDecision(False, None, "language_not_analysed")
    if not a.understood or not b.understood:
        return MatchDecision(False, None, "not_understood")
    for name in _COMPARED:
        if getattr(a, name) != getattr(b, name):
            return MatchDecision(False, None, f"{name}_differs")
    if not same_owners(a.owners, b.owners):
        return MatchDecision(False, None, "owners_differ")
    if ("passive" in a.grammar) != ("passive" in b.grammar):
        return MatchDecision(False, None, "voice_differs")
    # Indefinite articles on the same words: "a campaign" (any) is not "the"/"our campaign".
    if a.grammar != b.grammar:
        return MatchDecision(False, None, "grammar_differs")
    return MatchDecision(True, "paraphrase", "signatures agree", _agreement(a, b))


def _same_as_written(asked: str, stored: str) -> bool:
    """Case that carries meaning agrees. A text that may be English: its capitals can name things
    ("IT", "Apple": `same_names`). A text in another language (`foreign`: a letter outside ASCII
    or another language's function word, in a text that does not read as English): the original
    case after Unicode normalisation, but for a sentence's first letter."""
    if foreign(asked) or foreign(stored):
        return same_cased(asked, stored)
    return same_names(asked, stored)


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
