"""One thing or several: the grammatical number of what a question names and asks for.

"Which channel drove the most revenue?" asks for one channel, "Which channels ..." for a list,
so the cached answer to one does not answer the other. Every word is read, not a list of nouns:
`plurality` records "many <word>" for each plural form (a word ending in -s / -es / -ies whose
singular has the same canonical form: "emails", "videos", "adverts", "ad sets"), for a mass noun
that stands for a plural ("advertising" = ads), and "one"/"many" for the opening "is"/"are"
("was"/"were") of a question asking what or which. Two questions whose words are otherwise the
same then differ wherever one says one thing and the other several. Only the plurals of measures
are left out ("Why did orders drop?" and "Why did order drop?" ask the same), unless the measure
is what "which" asks for ("Which order was largest?").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cache import question_lexicon as lex

# Mass nouns that stand for the plural of a counted one ("spend on advertising" = "on ads").
_MASS = frozenset({"advertising"})
_SINGULAR_BE = frozenset({"is", "was"})
_PLURAL_BE = frozenset({"are", "were"})
# Measures one counts as things ("which customers", "the campaign budgets"): their number
# always matters.
# "shares" (of a post, of stock) are not "share" (of revenue).
_COUNTED_MEASURES = frozenset({"customer", "budget", "share"})
# Plural-looking words that are not plurals of anything here (units follow their numbers).
_NOT_PLURAL = (
    lex.NOT_INFLECTED
    | lex.CURRENCY_WORDS
    | frozenset(
        {"dollars", "euros", "pounds", "bucks", "vs", "has", "was", "does", "is", "its", "this"}
    )
)


def _singular_of(word: str, canon: Callable[[str], str]) -> str | None:
    """The canonical singular if `word` is a plural form ("emails" -> "email"), else None."""
    if len(word) < 3 or not word.isalpha() or not word.endswith("s") or word in _NOT_PLURAL:
        return None
    target = canon(word)
    candidates = [word[:-1]]
    if word.endswith("es"):
        candidates.append(word[:-2])
    if word.endswith("ies"):
        candidates.append(word[:-3] + "y")
    if any(c and c != word and canon(c) == target for c in candidates):
        return target
    return None


def plurality(tokens: Sequence[str], intent: str, canon: Callable[[str], str]) -> tuple[str, ...]:
    """ "many <word>" for each plural (see the module doc) and "one"/"many" for an opening
    be-verb of a what/which question."""
    found: list[str] = []
    for i, word in enumerate(tokens):
        singular = _singular_of(word, canon)
        if singular is not None:
            asked_for = i > 0 and tokens[i - 1] == "which"
            if singular not in lex.MEASURES or singular in _COUNTED_MEASURES or asked_for:
                found.append(f"many {singular}")
        elif word in _MASS:
            found.append(f"many {canon(word)}")
        elif intent in {"what", "which", "who"} and i <= 2 and word in _SINGULAR_BE | _PLURAL_BE:
            found.append("one" if word in _SINGULAR_BE else "many")
    return tuple(found)
