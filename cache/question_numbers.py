"""Numbers in a question: numeric tokens to canonical decimals, runs of number words to one number.

"twenty five" is 25 and "one hundred and five" is 105, but "ten five" is two numbers (10, 5): a
unit word joins only a tens word from twenty up ("twenty", "ninety") or a whole hundred.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from cache import question_lexicon as lex


def number_token(token: str) -> str | None:
    """A canonical decimal for a numeric token ("50,000" -> "50000", "5k" -> "5000")."""
    scale = 1
    if token.endswith("k"):
        token, scale = token[:-1], 1000
    try:
        value = Decimal(token.replace(",", "")) * scale
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
            ):
                pass  # "one hundred and five"; never "thirty and one" or "ten and five hundred"
            else:
                break
            i += 1
        out.append(str(total + current))
        relations.add("number_words")
    return out
