"""Case where an English question's names cannot be read, and final marks: reasons to miss.

`cache.question_names` reads a capital inside a sentence; at a sentence's start it cannot tell
"Target revenue fell" (the retailer) from "Target" the goal, and text typed all in capitals has
no case to read at all. Precision first (`case_conflict`):
- a capitalised word at a sentence's start may be spelt in another case by the other question
  only if it is a word that is never a name here (function, question and time words, measures,
  channels, the lead-in verbs) and only in its first letter ("Why" / "why"; "IT" / "It" differ
  beyond it, so do "US" / "Us"), or in capitals for a measure or channel ("ROAS" / "roas");
- a text typed all in capitals matches only its own spelling;
- a question mark is not a full stop: where no word says what is asked ("why", "explain"), two
  final marks that are both typed and differ ("?" / ".") make different questions ("Spend
  exceeded budget?" asks whether; "Spend exceeded budget." states it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from cache import question_lexicon as lex
from cache.question_exact import typed_text
from cache.question_signature import WORD as _WORD

# A sentence starts at the text's start, after ". ", "? ", "! ", "…", ";", ":" or a dash, past
# opening marks, quotes and bullets (the text is one-spaced first: a new line is a space).
_SENTENCE_START = re.compile(r"(?:^|[.?!…;:—–]\s+)([\s\"'«“‘(\[*_`¿¡•-]*)(" + _WORD.pattern + ")")
_QUOTES = frozenset("\"'«“‘*_`")
_FINAL_MARKS = re.compile(r"([?.!;:…\s\"'»”’)\]*_`]*)$")
_LEAD_VERBS = frozenset(
    [
        "show",
        "explain",
        "tell",
        "give",
        "list",
        "compare",
        "break",
        "help",
        "describe",
        "summarise",
        "summarize",
        "find",
        "identify",
        "analyse",
        "analyze",
        "check",
        "walk",
    ]
)
# Words whose capital at a sentence's start is only the sentence's: never a name here.
NEVER_NAMES = (
    lex.ENGLISH_MARKERS
    | lex.STOP_WORDS
    | lex.WH_WORDS
    | lex.MODALS
    | lex.TIME_WORDS
    | lex.MEASURES
    | lex.ENTITIES
    | _LEAD_VERBS
    | {"revenues", "costs", "conversions", "orders", "sessions", "clicks", "impressions"}
) - {"us"}


# Known words also written in capitals ("ROAS" / "roas"): the measures and channels.
_ACRONYMS = lex.MEASURES | lex.ENTITIES
_ASKING = lex.WH_WORDS | _LEAD_VERBS


@dataclass(frozen=True)
class _Start:
    """A capitalised word at a sentence's start, read once."""

    word: str
    lowered: str
    # Its capital is only the sentence's where the other text spells it so.
    sentence_capital: bool


@dataclass(frozen=True)
class _Reading:
    """What the case rule reads of one text, once per text (`_read`)."""

    text: str
    final_mark: str
    asks: bool
    all_capitals: bool
    unmarked: str  # the text without its final marks
    spellings: frozenset[str]
    lowered: frozenset[str]
    starts: tuple[_Start, ...]


def _final_mark(text: str) -> str:
    """The mark a text ends with: "?" if any of its closing marks is one ("?." is a question)."""
    found = _FINAL_MARKS.search(text)
    marks = [ch for ch in (found.group(1) if found else "") if ch in "?.!;:…"]
    if not marks:
        return ""
    return "?" if "?" in marks else marks[-1]


def _all_capitals(text: str) -> bool:
    letters = [ch for ch in text if ch.isalpha()]
    return len(letters) > 1 and not any(ch.islower() for ch in letters)


def _starts(text: str) -> tuple[_Start, ...]:
    """The capitalised sentence-start words of `text`."""
    found = []
    for start in _SENTENCE_START.finditer(text):
        word, quoted = start.group(2), bool(_QUOTES & set(start.group(1)))
        lowered = word.lower()
        if word == lowered:
            continue
        only_first = word[1:] == word[1:].lower()
        never_a_name = lowered in NEVER_NAMES and not quoted  # quotes or markdown: a name
        sentence_capital = never_a_name and (only_first or lowered in _ACRONYMS)
        found.append(_Start(word, lowered, sentence_capital))
    return tuple(found)


@lru_cache(maxsize=8192)
def _read(question: str) -> _Reading:
    """The case rule's reading of one question (cached: a question meets many candidates)."""
    text = typed_text(question)
    words = _WORD.findall(text)
    return _Reading(
        text=text,
        final_mark=_final_mark(text),
        asks=any(w.lower() in _ASKING for w in words),  # "why", "explain": whatever the mark
        all_capitals=_all_capitals(text),
        unmarked=text.rstrip("?.!;:… "),
        spellings=frozenset(words),
        lowered=frozenset(w.lower() for w in words),
        starts=_starts(text),
    )


def _starts_read_as_written(text: _Reading, other: _Reading) -> bool:
    """True if no capitalised sentence-start word of `text` is spelt otherwise in `other`."""
    for start in text.starts:
        if start.lowered not in other.lowered or start.sentence_capital:
            continue
        if start.word not in other.spellings:
            return False  # "Target" here, "target" there: a name or not, nobody can tell
    return True


def case_conflict(asked: str, stored: str) -> str | None:
    """Why two English texts cannot be the same question from their case or final marks, or
    None when nothing here tells them apart."""
    a, b = _read(asked), _read(stored)
    end_a, end_b = a.final_mark, b.final_mark
    if end_a and end_b and end_a != end_b and not (a.asks or b.asks):
        return "final_mark_differs"
    if (a.all_capitals or b.all_capitals) and a.unmarked != b.unmarked:
        return "case_differs"
    if not (_starts_read_as_written(a, b) and _starts_read_as_written(b, a)):
        return "case_differs"
    return None
