"""Tense: what the auxiliaries of EVERY clause say, in order.

"Why did revenue drop and why is spend rising?" asks about a past drop and a present rise; "...
and why did spend rise?" about two past changes. `tense` reads each auxiliary that opens the
question or follows a question word ("why did", "and what is", a second sentence's "Why is"),
and the "@past" / "@present" marks phrase rewrites leave ("what caused" -> "why @past"), and
returns them all ("past,present"), with the tokens without the auxiliaries. A question with no
auxiliary is past if a past form shows ("revenue dropped, why?").
"""

from __future__ import annotations

from cache import question_lexicon as lex
from cache.question_negation import negation_to_slot

TENSE_MARKS = {"@past": "past", "@present": "present"}
OPENERS = lex.WH_WORDS | {"amount", "count", "share", "@past", "@present", "not"}
_PAST_IRREGULAR = frozenset(lex.PAST_FORMS) - {"paid"}


def is_participle(word: str) -> bool:
    """A past participle after has/have/had ("dropped", "fallen", "been")."""
    return (len(word) >= 5 and word.endswith(("ed", "en"))) or word in lex.PARTICIPLE_IRREGULAR


def tense(tokens: list[str]) -> tuple[str | None, list[str]]:
    """The tenses the auxiliaries of every clause give (see the module doc), and the tokens
    without them."""
    tenses: list[str] = []
    out: list[str] = []
    slot: int | None = None  # where the opening auxiliary was (a "not" of it belongs there)
    for i, word in enumerate(tokens):
        if word in TENSE_MARKS:
            tenses.append(TENSE_MARKS[word])
            continue
        # Only an auxiliary that opens the question (or follows a question word) is one;
        # "what does it do" keeps its verb "do", "why resources are important" its "are".
        opening = i == 0 or tokens[i - 1] in OPENERS
        if word in lex.TENSE_OF_AUX and opening:
            tenses.append(lex.TENSE_OF_AUX[word])
            slot = len(out) if slot is None else slot
            continue
        if word in lex.MODALS and opening and slot is None:
            slot = len(out) + 1
        if word in lex.PERFECT_AUX and opening:
            nxt = [w for w in tokens[i + 1 : i + 4] if w not in lex.NEGATIONS]
            if any(is_participle(w) for w in nxt[:2]):
                tenses.append("past")
                slot = len(out) if slot is None else slot
                continue
        out.append(word)
    out = negation_to_slot(out, slot)
    if not tenses and any(
        w in _PAST_IRREGULAR or (w.endswith("ed") and len(w) >= 5 and w not in lex.NOT_INFLECTED)
        for w in out
    ):
        tenses.append("past")
    return (",".join(tenses) or None), out
