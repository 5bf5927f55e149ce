"""The exact path: when two question texts are the same question without reading them.

`exact_text` is the lookup key (trimmed, one-spaced, lower-case, no trailing punctuation): it
only narrows the stored rows. For a text in a language the analyser does not read, the decision
compares the text as typed after Unicode normalisation (`same_cased`): capitals carry meaning
there ("Sie" is "you", "sie" is "they"; "IT" is not "it"), so does punctuation (Italian
"Perché ...?" asks why, "Perché ..." says because; the Greek question mark is ";"). Only the
text's first letter may differ in case ("¿Por qué" / "¿por qué"), and a final mark may be left
out on one side (typed without punctuation), never replaced by another.
"""

from __future__ import annotations

import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s?!.,;:]+$")
# Every mark that may end a sentence in some language (the Greek ";", Arabic "؟", CJK "？。").
_FINAL_MARKS = re.compile(r"[\s?!.,;:;؟？。！]+$")
# The text's first letter, after any opening marks ("¿", "¡", a quote or a bracket).
_FIRST_LETTER = re.compile(r"^([\W\d_]*?)([^\W\d_])")


def exact_text(question: str | None) -> str:
    """The exact-match key: trimmed, one-spaced, lower-case, no trailing punctuation."""
    if question is None:
        return ""
    return _TRAILING.sub("", _WHITESPACE.sub(" ", question).strip().lower())


def typed_text(question: str) -> str:
    """The text as typed, but in Unicode NFC, trimmed and one-spaced."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", question)).strip()


def cased_text(question: str) -> tuple[str, str]:
    """The text as typed (`typed_text`) with only its first letter lower-cased, and its final
    marks apart."""
    text = typed_text(question)
    text = _FIRST_LETTER.sub(lambda m: m.group(1) + m.group(2).lower(), text, count=1)
    final = _FINAL_MARKS.search(text)
    if final is None:
        return text, ""
    return text[: final.start()], final.group(0).replace(" ", "")


def same_cased(a: str, b: str) -> bool:
    """True if two texts are the same as typed, up to spacing, the case of the first letter and
    a final mark left out on one side."""
    (body_a, end_a), (body_b, end_b) = cased_text(a), cased_text(b)
    return body_a == body_b and (end_a == end_b or not end_a or not end_b)
