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
import unicodedata

from cache import question_lexicon as lex

# Words in any script's letters ("Éclair", "Öko"), with inner apostrophes and hyphens.
_WORD = re.compile(r"[^\W\d_](?:[^\W\d_]|['’-])*")
# A sentence starts at the text's start, after ". ", "? ", "! ", "…", ";", ":", a dash or a new
# line, past opening marks, quotes and bullets.
_SENTENCE_START = re.compile(
    r"(?:^|[.?!…;:—–]\s+|\n)([\s\"'«“‘(\[*_`¿¡•-]*)([^\W\d_](?:[^\W\d_]|['’-])*)"
)
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


def _text(question: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", question)).strip()


def _final_mark(text: str) -> str:
    """The mark a text ends with: "?" if any of its closing marks is one ("?." is a question)."""
    found = _FINAL_MARKS.search(text)
    marks = [ch for ch in (found.group(1) if found else "") if ch in "?.!;:…"]
    if not marks:
        return ""
    return "?" if "?" in marks else marks[-1]


def _asks(text: str) -> bool:
    """True if the words say what is asked ("why", "explain"), whatever mark ends the text."""
    return any(w.lower() in _ASKING for w in _WORD.findall(text))


def _all_capitals(text: str) -> bool:
    letters = [ch for ch in text if ch.isalpha()]
    return len(letters) > 1 and not any(ch.islower() for ch in letters)


def _starts_read_as_written(text: str, other: str) -> bool:
    """True if no capitalised sentence-start word of `text` is spelt otherwise in `other`."""
    spellings = {w for w in _WORD.findall(other)}
    lowered = {w.lower() for w in spellings}
    for start in _SENTENCE_START.finditer(text):
        word, quoted = start.group(2), bool(_QUOTES & set(start.group(1)))
        if word == word.lower() or word.lower() not in lowered:
            continue
        only_first = word[1:] == word[1:].lower()
        never_a_name = word.lower() in NEVER_NAMES and not quoted  # quotes or markdown: a name
        if never_a_name and (only_first or word.lower() in _ACRONYMS):
            continue
        if word not in spellings:
            return False  # "Target" here, "target" there: a name or not, nobody can tell
    return True


def reads_as_english(text: str) -> bool:
    """True if the text uses English function words and no other language's, whatever its
    letters ("Éclair revenue fell, why?" is English with an accented name)."""
    words = [w.lower() for w in _WORD.findall(text)]
    english = any(w in lex.ENGLISH_MARKERS for w in words)
    return english and not any(w in lex.FOREIGN_MARKERS for w in words)


def case_conflict(asked: str, stored: str) -> str | None:
    """Why two English texts cannot be the same question from their case or final marks, or
    None when nothing here tells them apart."""
    a, b = _text(asked), _text(stored)
    end_a, end_b = _final_mark(a), _final_mark(b)
    if end_a and end_b and end_a != end_b and not (_asks(a) or _asks(b)):
        return "final_mark_differs"
    if (_all_capitals(a) or _all_capitals(b)) and a.rstrip("?.!;:… ") != b.rstrip("?.!;:… "):
        return "case_differs"
    if not (_starts_read_as_written(a, b) and _starts_read_as_written(b, a)):
        return "case_differs"
    return None
