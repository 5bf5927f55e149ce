"""One thing or several: the grammatical number of what a question names and asks for.

"Which channel drove the most revenue?" asks for one channel, "Which channels ..." for a list,
so the cached answer to one does not answer the other. `plurality` reads, in order, the number
of every countable entity noun ("campaign" / "campaigns") and of the opening "is"/"are" ("was"/
"were") of a question asking what or which. Measures ("revenue", "orders", "clicks") are left
out: "Why did orders drop?" and "Why did order drop?" ask the same.
"""

from __future__ import annotations

from collections.abc import Sequence

# Nouns that name things one counts and a question can ask for one of or several of.
COUNTED = frozenset(
    [
        "campaign",
        "channel",
        "ad",
        "keyword",
        "driver",
        "cause",
        "factor",
        "market",
        "segment",
        "audience",
        "creative",
        "device",
        "source",
        "platform",
        "country",
        "region",
        "product",
        "page",
        "group",
        "partner",
        "publisher",
        "touchpoint",
        "network",
        "account",
        "adset",
        "placement",
        "format",
        "city",
        "store",
        "category",
    ]
)
# Mass nouns that stand for the plural of a counted one ("spend on advertising" = "on ads").
_MASS = frozenset({"advertising"})
_SINGULAR_BE = frozenset({"is", "was"})
_PLURAL_BE = frozenset({"are", "were"})
_PLURALS: dict[str, str] = {
    plural: noun
    for noun in COUNTED
    for plural in (noun + "s", noun + "es", noun[:-1] + "ies" if noun.endswith("y") else "")
    if plural
}


def plurality(tokens: Sequence[str], intent: str) -> tuple[str, ...]:
    """ "one"/"many" for each counted noun and (asking what or which) each opening be-verb."""
    found: list[str] = []
    for i, word in enumerate(tokens):
        if tokens[i + 1 : i + 2] and (tokens[i + 1] in COUNTED or tokens[i + 1] in _PLURALS):
            continue  # a modifier of the next noun ("ad creative", "campaign groups")
        if word in _MASS:
            found.append("many")
        elif word in COUNTED:
            found.append("one")
        elif word in _PLURALS:
            found.append("many")
        elif intent in {"what", "which", "who"} and i <= 2 and word in _SINGULAR_BE | _PLURAL_BE:
            found.append("one" if word in _SINGULAR_BE else "many")
    return tuple(found)
