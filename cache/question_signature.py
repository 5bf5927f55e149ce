"""A deterministic reading of one free-text question into what it asks (its signature).

`analyse` turns a question into a canonical sequence of content words, in order, and the
structured features read from it: intent, tense, modality, negation, direction, comparators and
bounds with their numbers, inclusion/exclusion, extremes, time words, prefixes, measures and
entities, and the language. The canonical form removes only differences that never change the
answer, each a known relation recorded in `relations`: contractions, lead-ins ("can you tell me"),
stop words (the, a, our: where "our" and "the" stand is compared apart), synonyms and phrase
rewrites (cache/question_lexicon.py), inflections (plural -s, -ed, -ing), numbers in words,
currency spellings and one-letter typos of domain words. Nothing else is thrown away: a
possessive "'s" is a token ("Google's partner" is not "Google partner"), digits stay as written
("1.10", "007", "4k" but for "$5k"), every mark between tokens is compared as typed
(cache/question_marks.py), a capital that names something stays a name (cache/question_names.py)
and every clause's tense counts (cache/question_tense.py).
Everything else stays as written, in order, so word order and roles survive ("Facebook
outperforming Google" is not "Google outperforming Facebook"): time words are never stemmed
("the last weeks"), brackets stay, an unknown hyphenated compound ("drop-in") is one word,
"fall" before a noun is the season. Helpers with one job each: numbers
(cache/question_numbers.py), where a "not" belongs (cache/question_negation.py), one thing or
several (cache/question_plurality.py), indefinite articles (cache/question_determiners.py) and
the exact path (cache/question_exact.py).

Only English is analysed. A text with letters outside ASCII, with a function word of another
language, without an English function word that other languages do not share ("i", "a", "in"
are not enough) or with most of its words outside the vocabulary is `understood=False`: it can
hit only on an exact match (`exact_text`, with case where it carries meaning). So is any form
read two ways ("'d", "1.000", a "!" that is not "!=", a symbol NFKC would change).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

from cache import question_lexicon as lex
from cache.question_determiners import determiners, indefinites
from cache.question_edit import distance_one as _distance_one
from cache.question_exact import exact_text
from cache.question_marks import marks
from cache.question_names import names_kept
from cache.question_numbers import number_token, number_words
from cache.question_plurality import plurality
from cache.question_tense import TENSE_MARKS as _TENSE_MARKS
from cache.question_tense import tense as _tense

__all__ = ["WORD", "Signature", "analyse", "exact_text", "foreign", "same_names"]

# Words in any script's letters ("Éclair", "Öko"), with inner apostrophes and hyphens.
WORD = re.compile(r"[^\W\d_](?:[^\W\d_]|['’-])*")

_CONTRACTIONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), repl)
    for pattern, repl in (
        (r"\bwon't\b", "will not"),
        (r"\bcan't\b", "can not"),
        (r"\bcannot\b", "can not"),
        (r"\bshan't\b", "shall not"),
        (r"\b(\w+)n't\b", r"\1 not"),
        (r"'s(?= (?:been|gone|done|had|seen|got|\w{3,}ed|\w{3,}en)\b)", " has"),
        (r"\b(what|that|it|there|here|who|where|how|why|when|which)'s\b", r"\1 is"),
        (r"'re\b", " are"),
        (r"'ve\b", " have"),
        (r"'ll\b", " will"),
        (r"\bi'm\b", "i am"),
        (r"'s\b", " 's"),  # a possessive: a token of its own ("Google's partner")
    )
)
_TOKEN = re.compile(
    r"<=|>=|!=|\b(?:nz|us|a|c|r)\$|[$€£%<>&+/=#]"
    r"|(?<![\w.])-(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:k\b)?"
    r"|\d+(?:st|nd|rd|th)\b"
    r"|\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:k\b)?|(?<!\d)\.\d+(?:k\b)?"
    r"|'s\b|[a-z]+(?:-[a-z]+)+|[a-z]+(?:'[a-z]+)?|,|[()\[\]{}]"
)
# Forms read as not understood: "'d" (did, would or had), a plural possessive ("campaigns'"),
# a European-looking thousands separator ("1.000", "$2.500": a thousand or 1, 2.5?), a "!" or a
# sign that is not part of "!=" or a number.
_UNREAD = re.compile(r"'d\b|s'(?=\s|$|[?!.,;:])|(?<![\d.])\d{1,3}\.\d{3}(?![\d.])|!(?!=)")
# NFKC may turn a symbol or a superscript into another character ("10²" -> "102"): any
# non-letter it changes (besides spaces and an ellipsis) makes the question not understood.
_NFKC_HARMLESS = frozenset("…")
# The punctuation a question may hold besides its tokens: never dropped, each mark is compared
# as typed (cache/question_marks.py); any other character makes the question not understood.
_IGNORED = re.compile(r"[\s?.,;:\"'`*_\-–—…]+")
# Brackets stay as tokens: "revenue (not spend)" is not "revenue not spend".
_BRACKETS = {"[": "(", "{": "(", "]": ")", "}": ")"}
_AUX_OPENERS = frozenset(lex.TENSE_OF_AUX) | lex.PERFECT_AUX | lex.MODALS
_UNSTEMMED = (
    lex.NOT_INFLECTED
    | lex.MEASURES
    | lex.ENTITIES
    | lex.TIME_WORDS
    | lex.EXTREMES
    | lex.MODALS
    | lex.ENGLISH_MARKERS
    | lex.NEGATIONS
    | lex.COMPARATORS
    | lex.INCLUSION
    | lex.WH_WORDS
    | frozenset(lex.DIRECTION_WORDS)
    | frozenset(w for v in lex.PHRASES.values() for w in v)
    | frozenset(w for v in lex.SYNONYMS.values() for w in v.split())
)
_SHARED_MARKERS = frozenset({"i", "a", "in", "on", "to", "do", "be", "no", "is"})
# Words an English question is read from (most of a question's words must be among them).
_VOCABULARY = (
    _UNSTEMMED
    | lex.VERBS
    | lex.STOP_WORDS
    | lex.TYPO_TARGETS
    | frozenset(lex.SYNONYMS)
    | frozenset(lex.NUMBER_WORDS)
    | frozenset(lex.NUMBER_SCALES)
    | frozenset(lex.TENSE_OF_AUX)
    | frozenset(lex.PAST_FORMS)
    | lex.PERFECT_AUX
)
# Abbreviations read before phrases, so "FB ads" is "facebook ads" (one entity).
_ABBREVIATIONS = {"fb": "facebook"}
# Currency read before or after a number: its "k" is a thousand ("$5k"), elsewhere "4k" is 4k.
_MONEY_BEFORE = frozenset({"$", "€", "£", "nz$", "us$", "a$", "c$", "r$"})
_MONEY_AFTER = frozenset({"dollars", "dollar", "usd", "euros", "euro", "eur", "gbp", "bucks"})


def same_names(a: str, b: str) -> bool:
    """True if two questions write their names alike ("Did IT approve" is not "Did it approve",
    "Apple" is not "apple"): what an exact match needs beyond `exact_text`."""
    return exact_text(_names_kept(a)) == exact_text(_names_kept(b))


@dataclass(frozen=True)
class Signature:
    """What one question asks, as read by `analyse` (see the module doc)."""

    language: str
    understood: bool
    content: tuple[str, ...]
    intent: str
    tense: str | None
    modality: tuple[str, ...] = ()
    negation: tuple[str, ...] = ()
    direction: tuple[str, ...] = ()
    comparators: tuple[str, ...] = ()
    inclusion: tuple[str, ...] = ()
    extremes: tuple[str, ...] = ()
    time_words: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()
    measures: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()
    plurality: tuple[str, ...] = ()
    marks: tuple[str, ...] = ()
    grammar: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()
    relations: frozenset[str] = field(default=frozenset(), compare=False)

    def features(self) -> dict[str, object]:
        """The compared features as plain JSON values (what the cache reports as agreement)."""
        return {
            "language": self.language,
            "intent": self.intent,
            "tense": self.tense,
            "modality": list(self.modality),
            "negation": list(self.negation),
            "direction": list(self.direction),
            "comparators": list(self.comparators),
            "inclusion": list(self.inclusion),
            "extremes": list(self.extremes),
            "time_words": list(self.time_words),
            "prefixes": list(self.prefixes),
            "numbers": list(self.numbers),
            "measures": list(self.measures),
            "entities": list(self.entities),
            "plurality": list(self.plurality),
            "marks": list(self.marks),
            "grammar": list(self.grammar),
            "owners": list(self.owners),
            "content": list(self.content),
        }


@lru_cache(maxsize=8192)
def foreign(question: str) -> bool:
    """True if a text is surely not English: a letter outside ASCII or another language's
    function word (its capitals then carry that language's meaning, see cache.question_exact),
    unless its words in any script read as English: English function words and no other
    language's ("Was the café promo worth it?", "Éclair revenue fell, why?")."""
    text = question.lower()
    if not any(ch.isalpha() and ord(ch) > 127 for ch in text) and not any(
        w in lex.FOREIGN_MARKERS for w in _TOKEN.findall(text)
    ):
        return False
    words = WORD.findall(text)
    english = any(w in lex.ENGLISH_MARKERS for w in words)
    return not english or any(w in lex.FOREIGN_MARKERS for w in words)


def _not_english(text: str, words: list[str]) -> bool:
    """True unless the text reads as English (see the module doc)."""
    if any(ch.isalpha() and ord(ch) > 127 for ch in text):
        return True
    if any(w in lex.FOREIGN_MARKERS for w in words):
        return True
    # One short function word is not enough: "i", "a", "in" are Danish, Romanian, Italian too.
    alpha = [w for w in words if w.isalpha()]
    known = [w for w in alpha if w in _VOCABULARY or _stem(w) in _VOCABULARY]
    strong = any(w in lex.ENGLISH_MARKERS and w not in _SHARED_MARKERS for w in alpha)
    return not strong or 2 * len(known) < len(alpha)


def _rewrite_phrases(tokens: list[str], relations: set[str]) -> list[str]:
    """Multi-word phrases to their canonical tokens, longest match first."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        for size in range(min(lex.MAX_PHRASE, len(tokens) - i), 1, -1):
            replacement = lex.PHRASES.get(tuple(tokens[i : i + size]))
            if replacement is not None:
                out.extend(replacement)
                relations.add("synonym")
                i += size
                break
        else:
            out.append(tokens[i])
            i += 1
    return out


def _strip_lead_ins(tokens: list[str], relations: set[str]) -> list[str]:
    """Remove openings that ask nothing ("can you tell me ...", "explain why ...")."""
    changed = True
    while changed and tokens:
        changed = False
        for lead in lex.LEAD_INS:
            if tuple(tokens[: len(lead)]) == lead and len(tokens) > len(lead):
                tokens, changed = tokens[len(lead) :], True
                relations.add("lead_in")
                break
        explain = tokens[0] in lex.LEAD_IN_BEFORE_WH if tokens else False
        if explain and len(tokens) > 1 and tokens[1] in lex.WH_WORDS:
            tokens, changed = tokens[1:], True
            relations.add("lead_in")
    return tokens


def _stem(word: str) -> str:
    """The inflection-free form of an open-class word: plural -s, -es, -ies, verb -ed, -ing."""
    if word in _UNSTEMMED or not word.isalpha() or len(word) < 4:
        return word
    if word.endswith("s") and word[:-1] in lex.TIME_WORDS:
        return word  # never a time word's plural: "the last weeks" is not "the last week"
    base = word
    if word.endswith("ies") and len(word) > 4:
        base = word[:-3] + "y"
    elif word.endswith(("sses", "xes", "zes", "ches", "shes")):
        base = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is", "ous")):
        base = word[:-1]
    elif word.endswith(("ed", "ing")):
        cut = word[:-2] if word.endswith("ed") else word[:-3]
        for candidate in (cut, _undouble(cut), cut + "e"):
            if candidate in lex.VERBS:
                return candidate
        return word
    return base


def _undouble(stem: str) -> str:
    """'dropp' -> 'drop', 'plann' -> 'plan' (a doubled final consonant of -ed / -ing)."""
    if len(stem) >= 3 and stem[-1] == stem[-2] and stem[-1] in "bgmnprt":
        return stem[:-1]
    return stem


def _known(word: str) -> bool:
    """A word the lexicon names (never corrected as a typo)."""
    return (
        word in lex.SYNONYMS
        or word in lex.TYPO_TARGETS
        or _stem(word) in lex.TYPO_TARGETS
        or word in lex.NOT_INFLECTED
        or word in lex.ENGLISH_MARKERS
        or word in lex.TIME_WORDS
        or (word.endswith("s") and word[:-1] in lex.TIME_WORDS | lex.TYPO_TARGETS)
    )


@lru_cache(maxsize=8192)
def _typo_target(word: str) -> str | None:
    """The one domain word `word` is a one-letter typo of, if exactly one."""
    if len(word) < 6 or not word.isalpha() or _known(word) or word in lex.NOT_TYPOS:
        return None
    found = {t for t in lex.TYPO_TARGETS if _distance_one(word, t)}
    found |= {t + "s" for t in lex.TYPO_TARGETS if _distance_one(word, t + "s")}
    return found.pop() if len(found) == 1 else None


def _infinitive_after_cause(tokens: list[str]) -> list[str]:
    """ "why @past revenue to fall" (from "what caused revenue to fall") -> "why @past revenue
    fall": the "to" before a change verb says nothing once "what caused" reads as "why"."""
    if len(tokens) < 2 or tokens[0] != "why" or tokens[1] not in _TENSE_MARKS:
        return tokens
    for i in range(2, len(tokens) - 1):
        if tokens[i] == "to" and lex.SYNONYMS.get(tokens[i + 1]) in {"decrease", "increase"}:
            return tokens[:i] + tokens[i + 1 :]
    return tokens


def _cause_of_change(tokens: list[str], relations: set[str]) -> list[str]:
    """ "what caused the drop in revenue (on mobile)" -> "why @past revenue drop (on mobile)"."""
    for opening, tense in lex.CAUSE_OPENINGS.items():
        n = len(opening)
        if tuple(tokens[:n]) != opening:
            continue
        rest = tokens[n:]
        if rest[:1] == ["the"]:
            rest = rest[1:]
        if len(rest) >= 3 and rest[0] in lex.CHANGE_NOUNS and rest[1] in {"in", "of"}:
            end = 2
            while end < len(rest) and rest[end] not in lex.PHRASE_BOUNDARIES:
                end += 1
            if end > 2:
                relations.add("word_order")
                return ["why", tense, *rest[2:end], rest[0], *rest[end:]]
        return tokens
    return tokens


def _what_noun(tokens: list[str]) -> list[str]:
    """ "what campaign ..." asks "which campaign ...": "what" before an open-class word."""
    out = list(tokens)
    for i in range(len(out) - 1):
        if out[i] == "what" and out[i + 1] not in lex.CLOSED and not out[i + 1][:1].isdigit():
            out[i] = "which"
    return out


def _intent(tokens: list[str]) -> str:
    """What the question asks for, from its first words."""
    for word in tokens[:3]:
        if word in lex.WH_WORDS or word in {"amount", "count", "share"}:
            return word
    if tokens and tokens[0] in _AUX_OPENERS:
        return "yes_no"
    return "statement"


def _comparators(content: tuple[str, ...]) -> tuple[str, ...]:
    """Each comparator with the number and unit it bounds ("above 50 usd")."""
    found = []
    for i, word in enumerate(content):
        if word in lex.COMPARATORS:
            bound = [w for w in content[i + 1 : i + 3] if w[:1].isdigit() or w in _UNITS]
            found.append(" ".join([word, *bound]))
    return tuple(found)


_UNITS = lex.CURRENCY_WORDS | {"percent"}


# Words a synonym turns into an extreme or a direction ("primary" -> "main", "fall" ->
# "decrease"): capitalised inside a question, they are part of a name.
_MEANING_SYNONYMS = frozenset(
    w
    for w, canonical in lex.SYNONYMS.items()
    if w.isalpha()
    and w != canonical
    and (canonical in lex.EXTREMES or canonical in lex.DIRECTION_WORDS)
) | {"fall", "main"}
# Words usually written with a capital (channels, measures, time words): a capital names nothing.
_USUAL_CAPITALS = lex.ENTITIES | lex.MEASURES | lex.TIME_WORDS | {"ad"}


def _names_kept(text: str) -> str:
    """`text` with capitalised words that name something kept apart (cache.question_names)."""
    return names_kept(
        text,
        lambda w: w in _VOCABULARY or _stem(w) in _VOCABULARY,
        lambda w: w in _USUAL_CAPITALS or _canon(w) in _USUAL_CAPITALS,
        _MEANING_SYNONYMS,
    )


@lru_cache(maxsize=16384)
def analyse(question: str) -> Signature:
    """The signature of a question (see the module doc); pure and deterministic."""
    relations: set[str] = set()
    changed = any(
        unicodedata.normalize("NFKC", ch) != ch
        for ch in unicodedata.normalize("NFC", question)
        if not ch.isalpha() and not ch.isspace() and ch not in _NFKC_HARMLESS
    )
    text = _names_kept(unicodedata.normalize("NFKC", question))
    text = text.lower().replace("’", "'").replace("‘", "'")
    if changed or _UNREAD.search(text):
        language = "other" if _not_english(text, _TOKEN.findall(text)) else "en"
        return Signature(language=language, understood=False, content=(), intent="", tense=None)
    contracted = text
    for pattern, repl in _CONTRACTIONS:
        contracted = pattern.sub(repl, contracted)
    if contracted != text:
        relations.add("contraction")
    raw = _TOKEN.findall(contracted)
    words_only = [w for w in raw if w != ","]
    leftover = _IGNORED.sub("", _TOKEN.sub("", contracted))
    language = "other" if _not_english(text, words_only) else "en"
    if language != "en" or leftover or not words_only:
        return Signature(language=language, understood=False, content=(), intent="", tense=None)

    punctuation = marks(contracted, _TOKEN, lambda t: _canon(_typo_target(t) or t))
    if punctuation[:1] == (f"{raw[0]} ,",) and (raw[0],) in lex.LEAD_INS:
        punctuation = punctuation[1:]  # "Hi, why did ROAS fall?": the comma of a greeting
    tokens = []
    split = _compounds(raw)
    for i, token in enumerate(split):
        if token in _BRACKETS or token in "()":
            tokens.append(_BRACKETS.get(token, token))
        elif token[:1].isdigit() or token[:1] in "-.":
            money = (i > 0 and split[i - 1] in _MONEY_BEFORE) or (
                i + 1 < len(split) and split[i + 1] in _MONEY_AFTER
            )
            number = number_token(token, money)
            tokens.append(number if number is not None else token)
        elif token == "'s" and tokens and _time_word(tokens[-1]):
            relations.add("possessive_time")  # "last week's revenue" is last week's
        else:
            token = _ABBREVIATIONS.get(token, token)
            target = _typo_target(token)
            if target is not None:
                relations.add("typo")
            tokens.append(target or token)
    # Number words first, while the commas that separate them are still there ("ten, five").
    tokens = [t for t in number_words(tokens, relations) if t != ","]
    tokens = _strip_lead_ins(tokens, relations)
    passive = ("passive",) if _passive(tokens) else ()
    tokens = _cause_of_change(_season_fall(tokens), relations)
    tokens = _what_noun(_rewrite_phrases(tokens, relations))
    intent = _intent(tokens)
    counted = plurality(tokens, intent, _canon)
    grammar = indefinites(tokens, _canon) + passive
    owners = determiners(tokens, _canon)
    tokens = _infinitive_after_cause(tokens)
    tense, tokens = _tense(tokens)
    words: list[str] = []
    for token in tokens:
        if token in lex.STOP_WORDS and not (token == "a" and token is tokens[-1]):
            relations.add("stop_word")
            continue
        synonym = lex.SYNONYMS.get(token)
        if synonym is not None:
            if synonym != token:
                relations.add("synonym")
            words.extend(synonym.split())
            continue
        if token in lex.PAST_FORMS:
            relations.add("inflection")
            words.append(lex.PAST_FORMS[token])
            continue
        stem = _stem(token)
        if stem != token:
            relations.add("inflection")
        words.extend(lex.SYNONYMS.get(stem, stem).split())
    content = tuple(_units_after_numbers(words))
    return Signature(
        language="en",
        understood=bool(content),
        content=content,
        intent=intent,
        tense=tense,
        modality=tuple(w for w in content if w in lex.MODALS),
        negation=tuple(w for w in content if w in lex.NEGATIONS),
        direction=tuple(lex.DIRECTION_WORDS[w] for w in content if w in lex.DIRECTION_WORDS),
        comparators=_comparators(content),
        inclusion=tuple(w for w in content if w in lex.INCLUSION),
        extremes=tuple(w for w in content if w in lex.EXTREMES),
        time_words=tuple(w for w in content if _time_word(w)),
        prefixes=tuple(w for w in content if w in lex.PREFIXES),
        numbers=tuple(w for w in content if w[:1].isdigit()),
        measures=tuple(w for w in content if w in lex.MEASURES),
        entities=tuple(w for w in content if w in lex.ENTITIES),
        plurality=counted,
        marks=punctuation,
        grammar=grammar,
        owners=owners,
        relations=frozenset(relations),
    )


def _time_word(word: str) -> bool:
    """A time word or its plural ("week", "weeks", "Mondays")."""
    return word in lex.TIME_WORDS or (word.endswith("s") and word[:-1] in lex.TIME_WORDS)


def _canon(word: str) -> str:
    """The canonical form of one word alone (synonym, irregular past, inflection)."""
    if word in lex.SYNONYMS:
        return lex.SYNONYMS[word]
    if word in lex.PAST_FORMS:
        return lex.PAST_FORMS[word]
    stem = _stem(word)
    return lex.SYNONYMS.get(stem, stem)


def _compounds(raw: list[str]) -> list[str]:
    """Hyphenated words: a known compound or a prefix compound ("non-brand") as its words, number
    words ("thirty-one") as numbers; any other ("drop-in") stays one word of its own."""
    out: list[str] = []
    for token in raw:
        parts = token.split("-")
        if len(parts) == 1 or not token[:1].isalpha():
            out.append(token)
        elif token in lex.COMPOUNDS:
            out.extend(lex.COMPOUNDS[token])
        elif (len(parts) == 2 and parts[0] in lex.PREFIXES) or all(
            p in lex.NUMBER_WORDS for p in parts
        ):
            out.extend(parts)
        else:
            out.append(token)
    return out


# After "fall" these say it is the verb or the change ("revenue fell"): "why did revenue fall
# last week / by 5% / sharply?"; before any other word it may be the season ("the fall sale").
_AFTER_FALL_VERB = lex.CLOSED | lex.PHRASE_BOUNDARIES | lex.TIME_WORDS


def _season_fall(tokens: list[str]) -> list[str]:
    """ "fall" before a noun-like word ("the fall campaign") is not a decrease: it stays itself."""
    out = list(tokens)
    for i, word in enumerate(tokens):
        if word != "fall" or i + 1 >= len(tokens):
            continue
        nxt = tokens[i + 1]
        if not (nxt in _AFTER_FALL_VERB or not nxt.isalpha() or nxt.endswith("ly")):
            out[i] = "fall_season"
    return out


_BE = frozenset({"is", "are", "was", "were", "been", "being"})


def _passive(tokens: list[str]) -> bool:
    """A passive question: an opening "was"/"is" and a verb's participle after it ("why was the
    campaign paused" is not "why did the campaign pause")."""
    start = 1 if tokens[:1] and tokens[0] in lex.WH_WORDS else 0
    if len(tokens) <= start or tokens[start] not in _BE:
        return False
    return any(
        w.endswith("ed") and _stem(w) != w and _stem(w) in lex.VERBS
        for w in tokens[start + 1 : start + 4]  # near it: "what is the reason revenue dropped"
    )


def _units_after_numbers(words: list[str]) -> list[str]:
    """Currency before its number moves after it ("$ 50" -> "50 usd"); over/under a number are
    above/below."""
    out = list(words)
    for i in range(len(out) - 1):
        if out[i] in lex.CURRENCY_WORDS and out[i + 1][:1].isdigit():
            out[i], out[i + 1] = out[i + 1], out[i]
    for i in range(len(out) - 1):
        nxt = out[i + 1]
        if out[i] in {"over", "under"} and (nxt[:1].isdigit() or nxt in lex.CURRENCY_WORDS):
            out[i] = "above" if out[i] == "over" else "below"
    return out
