"""Punctuation and symbols the analysis does not read: they must be typed alike, in order.

The tokens of a question are what the analyser reads; what lies between them (quotes, markdown,
a colon, a dash, a comma, a bracket's neighbours) is not understood, so it is never thrown
away: `marks` lists each such mark with the canonical word before it, and two questions agree
only if their lists are equal. "weeks 5-10" is not "weeks 5, 10" nor "weeks 5 10", "1:3" is not
"1,3", "revenue - refunds" is not "revenue refunds", "–5%" is not "5%", "brand, search" is not
"brand search" and "the "Primary" campaign" is not "the main campaign". Only the marks that end
the question ("?", ".") are consumed; an apostrophe of a contraction, a hyphen inside a
hyphenated word or a number's sign, and the symbols the analyser reads ($, €, £, %, <, >, /, ...)
are parts of tokens already.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_FINAL = re.compile(r"[?.\s]+$")


def marks(text: str, token: re.Pattern[str], canon: Callable[[str], str]) -> tuple[str, ...]:
    """Each mark `token` leaves unread in `text` (a gap's non-space characters, or a comma),
    as "<canonical word before it> <mark>", in order."""
    body = _FINAL.sub("", text)
    found: list[str] = []
    previous, position = "", 0
    for m in token.finditer(body):
        _gap(found, previous, body[position : m.start()])
        position = m.end()
        if m.group(0) == ",":
            found.append(f"{previous} ,")
        else:
            previous = canon(m.group(0))
    _gap(found, previous, body[position:])
    return tuple(found)


def _gap(found: list[str], previous: str, gap: str) -> None:
    """The marks of one gap between tokens (spaces alone are none)."""
    mark = "".join(gap.split())
    if mark:
        found.append(f"{previous} {mark}")
