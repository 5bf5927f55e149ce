"""Where a question's "not" belongs: to the opening auxiliary, or to the word it stands before.

"Why did revenue not grow?" reads as "Why didn't revenue grow?": the "not" is moved to the
auxiliary's slot, but only when nothing but a plain subject stands between the two and one verb
follows it, with no second verb after that. These keep their "not" where it is, so they never
read as the contracted form: "Why did channels not in the test drop?" (a "not" of the modifier
"in the test"), "Why did only email not drop?" (past a focus word), "Why did revenue (not spend)
drop?" (inside brackets), "Why did campaigns not paused in March drop?" (of a participle).
"""

from __future__ import annotations

from cache import question_lexicon as lex

_QUANTIFIERS = frozenset({"all", "every", "any", "some", "both", "each", "most", "many", "few"})
# Focus words change what a "not" negates ("only email did not drop" / "not only email dropped").
FOCUS_WORDS = lex.words(
    """
    only even just also especially particularly mainly mostly solely merely exclusively alone
    too either still specifically largely chiefly purely simply
    """
)
_CHANGES = frozenset({"decrease", "increase"})


def _verb_form(word: str) -> bool:
    """A known verb or one of its -s / -ed / -ing forms ("grow", "dropped", "converting")."""
    if word in lex.VERBS or lex.SYNONYMS.get(word) in _CHANGES or word in lex.PAST_FORMS:
        return True
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            cut = word[: -len(suffix)]
            undoubled = cut[:-1] if len(cut) >= 3 and cut[-1] == cut[-2] else cut
            if {cut, undoubled, cut + "e"} & lex.VERBS:
                return True
    return False


def _subject_word(word: str) -> bool:
    """A word that can stand between an auxiliary and its "not": a noun-like open-class word or
    a determiner, never a quantifier, a focus word, a bracket, a verb or a direction."""
    if word in lex.STOP_WORDS:
        return True
    if not word.isalnum() or word in lex.CLOSED or word in _QUANTIFIERS | FOCUS_WORDS:
        return False
    if word in lex.DIRECTION_WORDS:
        return False
    verb = lex.SYNONYMS.get(word, word)
    return verb not in lex.VERBS and verb not in _CHANGES and not word.endswith(("ed", "ing"))


def negation_to_slot(words: list[str], slot: int | None) -> list[str]:
    """ "why did revenue not grow" -> "why not revenue grow", as "why didn't revenue grow" reads:
    a "not" up to three subject words after the opening auxiliary, before a verb, belongs to it
    (see the module doc for what keeps it in place)."""
    if slot is None:
        return words
    for j in range(slot, min(slot + 4, len(words))):
        if words[j] == "not":
            between = words[slot:j]
            after = words[j + 1 :]
            # The verb must follow, and be the only one: in "why did campaigns not paused in
            # March drop" the "not" belongs to "paused", a modifier of the subject.
            if between and not (after and _verb_form(after[0])):
                return words
            if between and any(_verb_form(w) for w in after[1:]):
                return words
            if all(_subject_word(w) for w in between):
                return [*words[:slot], "not", *between, *words[j + 1 :]]
            return words
    return words
