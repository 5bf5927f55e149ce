"""Names in an English question: a capital that makes a common word a name of its own.

"Why did Target revenue drop?" asks about the retailer, "target revenue" about a goal; "the
"Primary" campaign" is a campaign called Primary, not the main one. `names_kept` rewrites such
a capitalised word to "name<word>" before the text is lower-cased, so it never equals the
common word. A capital names nothing where the text has no case (all lower-case or all
capitals), at a sentence's start, or on a word whose capital is its usual spelling (a channel,
a measure, a time word: "Facebook", "ROAS", "Monday"); in title case ("Why Did Revenue Drop?")
only the words a synonym would change into an extreme or a direction ("Principal", "Fall") and
words the analyser does not know stay names. Inside a URL or a domain ("Next.com",
"example.com/Sale") a capital is always kept as a name: the case is part of what is typed.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from cache import question_lexicon as lex

_CAPITAL = re.compile(r"(?<![A-Za-z0-9])(?<![A-Za-z]')[A-Z][A-Za-z]*(?![A-Za-z0-9])")
# What may stand between a sentence's end and its first word (quotes, brackets, markdown).
_OPENING = re.compile(r"[\s\"'«“‘(\[*_`]+$")
_URL_BEFORE = re.compile(r"[A-Za-z0-9][./]$")
_URL_AFTER = re.compile(r"^[./][A-Za-z0-9]")
_FUNCTION_WORDS = lex.ENGLISH_MARKERS | lex.STOP_WORDS | {"us"}


def names_kept(
    text: str,
    known: Callable[[str], bool],
    usual_capital: Callable[[str], bool],
    meaning_synonyms: frozenset[str],
) -> str:
    """`text` with each capitalised word that names something rewritten to "name<word>" (see
    the module doc). `known`: the analyser reads the word; `usual_capital`: a word usually
    written with a capital; `meaning_synonyms`: words a synonym turns into an extreme or a
    direction."""
    if not any(ch.islower() for ch in text):
        return text
    title_case = all(not w[:1].isalpha() or w[:1].isupper() for w in text.split())

    def name(m: re.Match[str]) -> str:
        word, lower = m.group(0), m.group(0).lower()
        before, after = text[: m.start()], text[m.end() :]
        if _URL_BEFORE.search(before) or _URL_AFTER.match(after):
            return "name" + lower
        opened = _OPENING.sub("", before)
        if not opened or opened[-1] in ".?!":
            return word  # a sentence's first word
        if lower in _FUNCTION_WORDS:
            return "name" + lower if word.isupper() else word
        if lower in meaning_synonyms and not word.isupper():
            return "name" + lower  # "Primary Street" is not "Main Street", "the Fall sale"
        if word.isupper() or usual_capital(lower) or (title_case and known(lower)):
            return word
        return "name" + lower  # "Target", "Apple", "Next": a name, not the common word

    return _CAPITAL.sub(name, text)
