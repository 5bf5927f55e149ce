"""The exact path: when two question texts are the same question without reading them.

`exact_text` is the lookup key (trimmed, one-spaced, lower-case, no trailing punctuation): it
only narrows the stored rows. For a text in a language the analyser does not read, the decision
compares the original case after Unicode normalisation (`same_cased`), because capitals carry
meaning there ("Sie" is "you", "sie" is "they"; "IT" is not "it"); only the letter that opens a
sentence may differ in case ("¿Por qué" / "¿por qué"), and a text typed without case at all
("warum ist der umsatz gesunken", "POURQUOI ...") carries none to compare.
"""

from __future__ import annotations

import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s?!.,;:]+$")
# The first letter of the text or of a sentence (after ". ", "? ", "! ", an opening "¿" or "¡").
_SENTENCE_START = re.compile(r"(^|[.?!¿¡]\s*)([\"'«“(]?\s*)([^\W\d_])")


def exact_text(question: str | None) -> str:
    """The exact-match key: trimmed, one-spaced, lower-case, no trailing punctuation."""
    if question is None:
        return ""
    return _TRAILING.sub("", _WHITESPACE.sub(" ", question).strip().lower())


def cased_text(question: str) -> str:
    """The text as written (NFC, trimmed, one-spaced, no trailing punctuation), with only each
    sentence's opening letter lower-cased."""
    text = _TRAILING.sub("", _WHITESPACE.sub(" ", unicodedata.normalize("NFC", question)).strip())
    return _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2) + m.group(3).lower(), text)


def uncased(text: str) -> bool:
    """True if a text does not use case at all (all lower-case or all capitals): its letters say
    nothing about names or "Sie" / "sie", so only its words are compared."""
    letters = [ch for ch in text if ch.isalpha() and ch.lower() != ch.upper()]
    return all(ch.islower() for ch in letters) or all(ch.isupper() for ch in letters)


def same_cased(a: str, b: str) -> bool:
    """True if two texts are the same as written, up to spacing, trailing punctuation and the
    case of a sentence's first letter; a text that does not use case (`uncased`) is compared
    by its words alone."""
    if uncased(a) or uncased(b):
        return exact_text(unicodedata.normalize("NFC", a)) == exact_text(
            unicodedata.normalize("NFC", b)
        )
    return cased_text(a) == cased_text(b)
