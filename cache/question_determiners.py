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


# Determiners that say whose thing it is ("our CPA", "the benchmark"): "our" is a stop word in
# the content, so where it stands is compared here (cache.question_match.same_owners).
_OWNER_WORDS = frozenset({"our", "the"})


def determiners(tokens: Sequence[str], canon: Callable[[str], str]) -> tuple[str, ...]:
    """ "<determiner> <canonical word>" for each "our" / "the" and the word it stands on."""
    return tuple(
        f"{token} {canon(tokens[i + 1])}"
        for i, token in enumerate(tokens[:-1])
        if token in _OWNER_WORDS
    )


def same_owners(a: Sequence[str], b: Sequence[str]) -> bool:
    """True unless a word has "our" in one question and "the" in the other ("our CPA ... the
    benchmark" is not "the CPA ... our benchmark"); "our ROAS" and a bare "ROAS" are alike."""
    first: dict[str, set[str]] = {}
    for item in a:
        det, word = item.split(" ", 1)
        first.setdefault(word, set()).add(det)
    second: dict[str, set[str]] = {}
    for item in b:
        det, word = item.split(" ", 1)
        second.setdefault(word, set()).add(det)
    return all(first[w] == second[w] for w in first.keys() & second.keys())
