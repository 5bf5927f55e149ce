"""Indefinite articles: "a campaign" asks about any one campaign, "the"/"our campaign" about that
one. `indefinites` says which word each "a"/"an" stands before, so two questions agree only if
they put their indefinite articles on the same words ("the" and no article are alike: "why did
the revenue drop" is "why did revenue drop")."""

from __future__ import annotations

from collections.abc import Callable, Sequence

_INDEFINITE = frozenset({"a", "an"})


def indefinites(tokens: Sequence[str], canon: Callable[[str], str]) -> tuple[str, ...]:
    """ "any <word>" for each indefinite article, naming the canonical word that follows it."""
    found: list[str] = []
    for i, token in enumerate(tokens):
        if token in _INDEFINITE:
            following = tokens[i + 1] if i + 1 < len(tokens) else ""
            found.append(f"any {canon(following)}" if following else "any")
    return tuple(found)
