"""A lexical veto on embedding matches: questions that differ in a word that flips their meaning.

Sentence embeddings score a question and its reversal as near-identical: with the local model
"which channel contributed most to the decline" / "... least ..." is 0.980 and "why did revenue
drop" / "why did revenue not drop" 0.974, above most genuine paraphrases (see
tests/cache/data/question_pairs.json). No similarity threshold separates them, so a cache hit also
requires that the two questions agree on small closed vocabularies where one word changes the
question: direction (up / down), extreme (most / least), negation, specifics (weekdays, months,
segments such as mobile / desktop or new / returning, ordinals, numbers), the metrics they name
and what they ask for (why / how much / when / which / forecast / significance / action / …).
The veto only ever turns a hit into a miss: a miss costs one model call, a wrong hit a wrong answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from cache.scope import normalise_question

_TOKEN = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
_POSSESSIVE = re.compile(r"['’]s\b")


def _words(*groups: str) -> frozenset[str]:
    """A vocabulary from whitespace-separated word lists."""
    return frozenset(word for group in groups for word in group.split())


def _labelled(label: str, *groups: str) -> dict[str, str]:
    """Every word of `groups` mapped to `label`."""
    return dict.fromkeys(sorted(_words(*groups)), label)


def _themselves(*groups: str) -> dict[str, str]:
    """Every word of `groups` mapped to itself."""
    return {word: word for word in sorted(_words(*groups))}


_UP = _words(
    "up increase increased increases increasing rise rises rising rose risen grow grows growing",
    "grew grown growth spike spiked spikes spiking jump jumped jumps jumping surge surged surging",
    "climb climbed climbing gain gained gains higher high boost boosted improve improved improves",
    "improving improvement more outperform outperformed outperforming better",
)
_DOWN = _words(
    "down decrease decreased decreases decreasing decline declined declines declining drop dropped",
    "drops dropping fall falls falling fell fallen dip dipped dips dipping lower low lose loses",
    "losing lost loss losses shrink shrank shrinking shrunk plunge plunged slump slumped less",
    "fewer poor poorly weak weaker worse worsen worsened reduce reduced reduction underperform",
    "underperformed underperforming",
)
_MAX = _words(
    "most highest best top largest biggest greatest maximum strongest main primary key peak peaks",
    "peaked",
)
_MIN = _words("least lowest worst bottom bottomed smallest fewest minimum weakest trough")
_NEGATION = _words("not no never without none nothing cannot")

_WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday"
# Words naming one part of the scope's data: two questions must name exactly the same ones.
_SPECIFICS: dict[str, str] = {
    **_themselves(_WEEKDAYS),
    **{day + "s": day for day in _words(_WEEKDAYS)},
    **_labelled("weekend", "weekend weekends"),
    **_labelled("weekday", "weekday weekdays"),
    **_themselves("january february march april may june july august september october november"),
    **_themselves("december first second third fourth final morning afternoon evening night"),
    **_themselves("overnight mobile desktop tablet ios android app web new returning existing"),
    **_themselves("organic paid brand branded nonbrand today yesterday tomorrow"),
    **_themselves("before after since until during"),
    # Period units: "last week" and "last year" are different questions about the same widget.
    **_labelled("hour", "hour hours hourly"),
    **_labelled("day", "day days daily"),
    **_labelled("week", "week weeks weekly"),
    **_labelled("month", "month months monthly"),
    **_labelled("quarter", "quarter quarters quarterly"),
    **_labelled("year", "year years yearly annual annually"),
}
_NUMBER = re.compile(r"^\d+(?:[.,]\d+)?$")
# What a question asks for. Soft intents clash only when both questions have some and share none
# ("why did it drop" / "how much did it drop"); strict ones must be present in both or neither
# (a forecast, a hypothetical or a "when" is never the same question as one without it).
_STRICT_INTENTS = frozenset({"future", "hypothetical", "when"})
_INTENT_PHRASES: tuple[tuple[str, str], ...] = (
    ("how much", "amount"),
    ("how many", "amount"),
    ("how big", "amount"),
    ("how large", "amount"),
    ("what day", "when"),
    ("which day", "when"),
    ("what date", "when"),
    ("which date", "when"),
    ("what time", "when"),
    ("since when", "when"),
    ("how long", "when"),
    ("going to", "future"),
    ("how can we", "action"),
    ("how do we", "action"),
    ("how to", "action"),
    ("what can we do", "action"),
    ("what if", "hypothetical"),
)
_INTENT_WORDS: dict[str, str] = {
    **_labelled(
        "why",
        "why cause caused causes causing reason reasons explain explains explained explanation",
        "behind driving drove driver drivers led",
    ),
    "when": "when",
    "which": "which",
    **_labelled(
        "future",
        "will forecast forecasts forecasted predict predicted prediction projected projection",
        "expect expected continue likely next upcoming further",
    ),
    **_labelled("hypothetical", "would could might if hypothetically"),
    **_labelled(
        "significance",
        "significant significance significantly meaningful noise noisy random chance",
    ),
    **_labelled(
        "action", "should recommend recommendation recommendations advice suggest suggestions worth"
    ),
    **_labelled("summary", "summary summarise summarize overview recap takeaways highlights"),
    **_labelled(
        "data_quality", "missing complete incomplete duplicate duplicated duplicates double"
    ),
}
# A question opening with an auxiliary verb asks yes or no ("did revenue drop?"), not why.
_YES_NO_OPENERS = _words("did does do is are was were has have had can will should may shall")

# Metric phrases, longest first; a phrase is consumed so "return on ad spend" is not also "spend".
_METRIC_PHRASES: tuple[tuple[str, str], ...] = (
    ("return on ad spend", "roas"),
    ("return on investment", "roi"),
    ("cost per acquisition", "cpa"),
    ("cost per conversion", "cpa"),
    ("cost per click", "cpc"),
    ("cost per thousand impressions", "cpm"),
    ("click-through rate", "ctr"),
    ("click through rate", "ctr"),
    ("clickthrough rate", "ctr"),
    ("conversion rate", "conversion_rate"),
    ("average order value", "aov"),
    ("customer lifetime value", "ltv"),
    ("sign ups", "signups"),
    ("sign-ups", "signups"),
)
_METRIC_WORDS: dict[str, str] = {
    **dict.fromkeys(
        ("revenue", "revenues", "sales", "income", "earn", "earned", "earning", "earnings"),
        "revenue",
    ),
    **dict.fromkeys(
        ("spend", "spent", "spending", "cost", "costs", "costing", "budget", "budgets"), "spend"
    ),
    **dict.fromkeys(("conversion", "conversions", "converted", "converting"), "conversions"),
    **dict.fromkeys(("click", "clicks"), "clicks"),
    **dict.fromkeys(("impression", "impressions"), "impressions"),
    **dict.fromkeys(("order", "orders", "purchase", "purchases"), "orders"),
    **dict.fromkeys(("customer", "customers"), "customers"),
    **dict.fromkeys(("signup", "signups", "registrations"), "signups"),
    **dict.fromkeys(("session", "sessions", "visit", "visits", "traffic"), "traffic"),
    **dict.fromkeys(("return", "returns"), "return"),
    **dict.fromkeys(("margin", "margins", "profit", "profits"), "profit"),
}


def _classes(tokens: Iterable[str], vocabularies: dict[str, frozenset[str]]) -> frozenset[str]:
    """The names of the vocabularies that any token falls into."""
    found = set(tokens)
    return frozenset(name for name, words in vocabularies.items() if found & words)


def _phrase_res(phrases: Iterable[tuple[str, str]]) -> tuple[tuple[re.Pattern[str], str], ...]:
    """Whole-word patterns for (phrase, label) pairs, in order."""
    return tuple((re.compile(r"\b" + re.escape(p) + r"\b"), label) for p, label in phrases)


def _consume_phrases(
    text: str, patterns: tuple[tuple[re.Pattern[str], str], ...]
) -> tuple[set[str], str]:
    """The labels of the phrases found in `text`, and `text` with those phrases blanked out."""
    found: set[str] = set()
    for pattern, label in patterns:
        text, count = pattern.subn(" ", text)
        if count:
            found.add(label)
    return found, text


_METRIC_PHRASE_RES = _phrase_res(_METRIC_PHRASES)
_INTENT_PHRASE_RES = _phrase_res(_INTENT_PHRASES)


def _metrics(text: str) -> frozenset[str]:
    """The metrics a normalised question names."""
    found, rest = _consume_phrases(text, _METRIC_PHRASE_RES)
    found.update(_METRIC_WORDS[t] for t in _TOKEN.findall(rest) if t in _METRIC_WORDS)
    return frozenset(found)


def _intents(text: str) -> frozenset[str]:
    """What a normalised question asks for (why, amount, when, which, future, …)."""
    opener = _TOKEN.match(text)
    found, rest = _consume_phrases(text, _INTENT_PHRASE_RES)
    found.update(_INTENT_WORDS[t] for t in _TOKEN.findall(rest) if t in _INTENT_WORDS)
    if opener is not None and opener.group() in _YES_NO_OPENERS:
        found.add("yes_no")
    return frozenset(found)


@dataclass(frozen=True)
class QuestionSignature:
    """The meaning-flipping features of one question."""

    direction: frozenset[str]
    extreme: frozenset[str]
    negated: bool
    specifics: frozenset[str]
    metrics: frozenset[str]
    intents: frozenset[str]


def signature(question: str) -> QuestionSignature:
    """The direction, extreme, negation, specifics, metrics and intents of a question."""
    text = _POSSESSIVE.sub("", normalise_question(question))
    tokens = _TOKEN.findall(text)
    return QuestionSignature(
        direction=_classes(tokens, {"up": _UP, "down": _DOWN}),
        extreme=_classes(tokens, {"max": _MAX, "min": _MIN}),
        negated=any(t in _NEGATION or t.endswith(("n't", "n’t")) for t in tokens),
        specifics=frozenset(
            [_SPECIFICS[t] for t in tokens if t in _SPECIFICS]
            + [t for t in tokens if _NUMBER.match(t)]
        ),
        metrics=_metrics(text),
        intents=_intents(text),
    )


def questions_compatible(a: str, b: str) -> bool:
    """False when two questions differ in a meaning-flipping feature (see the module doc)."""
    sa, sb = signature(a), signature(b)
    if (sa.direction, sa.extreme, sa.negated, sa.specifics) != (
        sb.direction,
        sb.extreme,
        sb.negated,
        sb.specifics,
    ):
        return False
    # A question naming no metric is about the scope's metric: only two named sets can clash.
    if sa.metrics and sb.metrics and sa.metrics != sb.metrics:
        return False
    if sa.intents & _STRICT_INTENTS != sb.intents & _STRICT_INTENTS:
        return False
    # "why did it drop" / "how much did it drop": both ask for something, and not the same thing.
    soft_a, soft_b = sa.intents - _STRICT_INTENTS, sb.intents - _STRICT_INTENTS
    return not (soft_a and soft_b and not soft_a & soft_b)
