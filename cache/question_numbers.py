"""Numbers in a question: numeric tokens as written (`number_token`), runs of number words as one.

"twenty five" is 25 and "one hundred and five" is 105, but "ten five" is two numbers (10, 5): a
unit word joins only a tens word from twenty up ("twenty", "ninety") or a whole hundred.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from cache import question_lexicon as lex

# A number with thousands separators ("5,000", "-1,250.50"): the commas say nothing else.
_GROUPED = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def number_token(token: str, money: bool = False) -> str | None:
    """A numeric token as written, but for the forms read as the same value: thousands
    separators ("50,000" -> "50000") and, of an amount of money only, "k" ("$5k" -> "5000").
    Anything else stays as typed: "1.10" (a version) is not "1.1", "007" (an id) is not "7",
    "4k" (a resolution) is not "4000"."""
    digits = token[:-1] if token.endswith("k") else token
    if not digits or not (digits.lstrip("-")[:1].isdigit() or digits.lstrip("-")[:1] == "."):
        return None
    plain = digits.replace(",", "") if _GROUPED.fullmatch(digits) else digits
    if not token.endswith("k"):
        return plain
    if not money:
        return token
    try:
        value = Decimal(plain) * 1000
    except InvalidOperation:
        return None
    return format(value.normalize(), "f")


def _takes_unit(total: int, current: int) -> bool:
    """True if a unit word (one..nine) may follow: "twenty" five, "one hundred" five, "two
    thousand" five; never "ten" five or "fifteen" five."""
    if current == 0:
        return total > 0
    if current % 10:
        return False
    return current % 100 >= 20 or (current >= 100 and current % 100 == 0)


def number_words(tokens: list[str], relations: set[str]) -> list[str]:
    """Runs of number words as one number ("twenty five" -> "25", "one hundred" -> "100")."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        if tokens[i] not in lex.NUMBER_WORDS:
            out.append(tokens[i])
            i += 1
            continue
        total, current = 0, lex.NUMBER_WORDS[tokens[i]]
        i += 1
        while i < len(tokens):
            word = tokens[i]
            if (
                word in lex.NUMBER_WORDS
                and lex.NUMBER_WORDS[word] < 10
                and _takes_unit(total, current)
            ):
                current += lex.NUMBER_WORDS[word]
            elif word in lex.NUMBER_SCALES:
                current *= lex.NUMBER_SCALES[word]
                if lex.NUMBER_SCALES[word] >= 1000:
                    total, current = total + current, 0
            elif (
                word == "and"
                and tokens[i - 1] in lex.NUMBER_SCALES
                and i + 1 < len(tokens)
                and tokens[i + 1] in lex.NUMBER_WORDS
                and (i + 2 >= len(tokens) or tokens[i + 2] not in lex.NUMBER_SCALES)
            ):
                # "one hundred and five"; never "thirty and one", "ten and five hundred" or
                # "between one hundred and five hundred" (100 and 500)
                pass
            else:
                break
            i += 1
        out.append(str(total + current))
        relations.add("number_words")
    return out
