"""What an analyst's question asks, in the user's own words: channels, period, metric, topics.

Channels are recognised by code (`facebook_paid`), by code with spaces, by display name
("Facebook Ads"), by a distinctive first word ("facebook", "tiktok"), by family ("paid social")
and by "paid" / "organic". Periods in words and dates resolve to ABSOLUTE half-open ranges
(`llm_service.periods.resolve_named`, which explanations read too), including the phrases an
analyst uses ("the week of 2026-10-12", "three weeks ago", "on 12 October", "in October").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from llm_service.periods import Period, resolve_named

# Topics: what the question is about, each answered by one tool (or a change comparison).
TOPIC_PATTERNS: dict[str, re.Pattern[str]] = {
    "refunds": re.compile(r"refund|chargeback|charge-back|dispute|revers|returned|money back"),
    "dead_events": re.compile(
        r"dead|ingest|dead.letter|dlq|fail(ed|ing|ure)s? (to )?(load|ingest|process)|webhook|"
        r"rejected|dropped events|lost events|missing events|schema (validation|error)|"
        r"pipeline|events? fail|integration|data quality|broke|broken|tracking (issue|problem|gap)"
    ),
    "corrections": re.compile(
        r"correct|reassign|re-?assign|overrid|re-?label|mis-?tag|mislabel|wrong channel|"
        r"misattribut|re-?tag|mis-?classif|misrecord|recorded as|moved back"
    ),
    # A model named alone ("under first touch") sets the model of the figures, not the topic.
    "models": re.compile(
        r"attribution models|models? (disagree|differ)|disagree|compare (the )?(attribution )?"
        r"models|which model|between models|across models"
    ),
    "orders": re.compile(r"(largest|biggest|top|highest|largest single) (order|purchase|sale)"),
    "reconciliation": re.compile(r"reconcil|ledger|verif|captur|missing from the ledger"),
    "change": re.compile(
        r"drop|fall|fell|declin|decreas|\bdown\b|\bdip|rise|rose|increas|\bup\b|jump|spike|"
        r"surge|chang|compar|\bvs\b|versus|week over week|anomal|unusual|wrong|happen|lost|"
        r"gain|grew|grow|shrank|worse|better|inflat|\bwhy\b|underperform|look(s|ing)? off|"
        r"how is .* doing|going on"
    ),
    "performance": re.compile(
        r"which channel|top channel|best|most|how much|how many|what was|what is|share|total|"
        r"bring|brought|generate|earn|perform|made|make"
    ),
}
_METRICS: list[tuple[str, re.Pattern[str]]] = [
    ("attributed_revenue", re.compile(r"attribut\w* revenue|credited|credit|share")),
    ("conversions", re.compile(r"conversion|purchases|converted|convert\b")),
    ("events", re.compile(r"\bevents\b|traffic|visits|sessions|clicks")),
    ("revenue", re.compile(r"revenue|sales|money|income|earn|turnover|\bgmv\b|bring|brought")),
]
_PAID = re.compile(r"\bpaid (channels?|media|traffic|marketing|ads)\b|\bpaid\b(?! social| search)")
_UNPAID = re.compile(r"\b(organic|unpaid|non-?paid|free) (channels?|traffic|sources?)\b|\bunpaid\b")
_BARE_ORGANIC = re.compile(r"\borganic\b(?! search| social)")
_ALIASES = {
    "facebook_paid": ("fb", "meta ads", "meta"),
    "instagram_paid": ("ig", "insta"),
    "google_search_paid": ("google ads", "adwords", "google search"),
    "bing_search_paid": ("bing", "microsoft ads"),
    "display_programmatic": ("programmatic",),
    "youtube_video": ("youtube",),
    "affiliate": ("affiliates", "affiliate partners", "partners"),
    "organic_search": ("seo",),
    "email": ("emails", "newsletter"),
    "sms": ("text messages",),
    "direct": ("direct traffic",),
}


@dataclass(frozen=True)
class ChannelInfo:
    """One taxonomy channel as the analyst knows it."""

    code: str
    name: str
    family: str
    is_paid: bool


@dataclass(frozen=True)
class Scope:
    """The channels a question is about: none (every channel), one, or a group with a label."""

    channels: tuple[str, ...] = ()
    label: str | None = None

    @property
    def single(self) -> str | None:
        """The one channel in scope, if exactly one."""
        return self.channels[0] if len(self.channels) == 1 else None

    @property
    def group(self) -> bool:
        """Several named channels (a family, paid, organic)."""
        return len(self.channels) > 1


@dataclass(frozen=True)
class Question:
    """A question understood: period, scope, metric and topics."""

    text: str
    period: Period
    period_named: bool
    scope: Scope
    metric: str
    topics: tuple[str, ...]
    source: str | None = None
    notes: list[str] = field(default_factory=list)


def resolve(text: str, today: date) -> tuple[Period, bool]:
    """The period the question names, and whether it named one (else the default window)."""
    return resolve_named(text, today)


def _alias_pattern(alias: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![a-z0-9_]){re.escape(alias)}(?![a-z0-9_])")


def _aliases(channels: list[ChannelInfo]) -> list[tuple[str, str]]:
    """(alias, code) pairs, longest alias first."""
    firsts: dict[str, list[str]] = {}
    for c in channels:
        firsts.setdefault(c.code.split("_")[0], []).append(c.code)
    pairs: list[tuple[str, str]] = []
    for c in channels:
        names = {c.code, c.code.replace("_", " "), c.name.lower(),
                 re.sub(r"\s+ads$", "", c.name.lower()), *_ALIASES.get(c.code, ())}  # fmt: skip
        first = c.code.split("_")[0]
        if len(firsts[first]) == 1 and len(first) > 3:
            names.add(first)
        pairs += [(n, c.code) for n in names if len(n) >= 2]
    return sorted(pairs, key=lambda p: len(p[0]), reverse=True)


# A mention right after one of these is excluded, not asked about ("every channel except paid
# social", "channels that are not paid").
_NEGATION = re.compile(
    r"\b(?:except(?: for)?|excluding|other than|besides|apart from|aside from|but not|not|"
    r"outside(?: of)?)\s+(?:the\s+|any\s+|our\s+)?"
)


def scope_of(text: str, channels: list[ChannelInfo]) -> Scope:
    """The channels the question names: by code, name, family, or paid / organic; a mention
    right after a negation ("except", "other than", "not") means every other channel."""
    lowered = text.lower()
    for cue in _NEGATION.finditer(lowered):
        excluded = _mention_at(lowered[cue.end() :], channels)
        if excluded.channels:
            kept = tuple(c.code for c in channels if c.code not in excluded.channels)
            what = excluded.label or ", ".join(excluded.channels)
            return Scope(kept, f"channels other than {what}")
    return _named_scope(lowered, channels)


def _mention_at(rest: str, channels: list[ChannelInfo]) -> Scope:
    """The widest scope named by the first one to three words of `rest`, starting with its
    first word (so "not drop for facebook" negates nothing)."""
    words = rest.split()
    best = Scope()
    for k in range(1, min(3, len(words)) + 1):
        found = _named_scope(" ".join(words[:k]), channels)
        if found.channels and not _named_scope(" ".join(words[1:k]), channels).channels:
            best = found
    return best


def unknown_channels(text: str, channels: list[ChannelInfo]) -> list[str]:
    """Channel-like codes in the question (`myspace_paid`) that name no channel."""
    known = {c.code for c in channels}
    return [
        m.group(0)
        for m in re.finditer(r"\b[a-z][a-z0-9]*_(?:paid|organic|search|social|ads)\b", text.lower())
        if m.group(0) not in known
    ]


def _named_scope(lowered: str, channels: list[ChannelInfo]) -> Scope:
    found: list[str] = []
    for alias, code in _aliases(channels):
        pattern = _alias_pattern(alias)
        if pattern.search(lowered):
            if code not in found:
                found.append(code)
            lowered = pattern.sub(" ", lowered)
    families: dict[str, list[str]] = {}
    for c in channels:
        families.setdefault(c.family, []).append(c.code)
    for family, codes in sorted(families.items(), key=lambda f: -len(f[0])):
        label = family.replace("_", " ")
        if len(codes) > 1 and _alias_pattern(label).search(lowered):
            return Scope(tuple(codes), label)
    if found:
        return Scope(tuple(found[:1]), found[0]) if len(found) == 1 else Scope(tuple(found))
    if _UNPAID.search(lowered) or _BARE_ORGANIC.search(lowered):
        return Scope(tuple(c.code for c in channels if not c.is_paid), "organic channels")
    if _PAID.search(lowered):
        return Scope(tuple(c.code for c in channels if c.is_paid), "paid channels")
    return Scope()


def metric_of(text: str) -> str:
    """The metric asked about (revenue unless the words say otherwise)."""
    lowered = text.lower()
    for metric, pattern in _METRICS:
        if pattern.search(lowered):
            return metric
    return "revenue"


def understand(text: str, today: date, channels: list[ChannelInfo]) -> Question:
    """Everything the analyst needs from the question's words."""
    lowered = text.lower()
    period, named = resolve(lowered, today)
    topics = tuple(t for t, pattern in TOPIC_PATTERNS.items() if pattern.search(lowered))
    source = next((s for s in _SOURCES if any(name in lowered for name in _SOURCES[s])), None)
    if source and "dead_events" not in topics:
        topics = ("dead_events", *topics)
    return Question(text, period, named, scope_of(text, channels), metric_of(text), topics, source)


# Ingestion sources of dead events, and how people name them.
_SOURCES = {
    "shopify_webhook": ("shopify_webhook", "shopify webhook", "shopify"),
    "web_sdk": ("web_sdk", "web sdk", "sdk", "pixel"),
    "meta_capi": ("meta_capi", "meta capi", "conversions api", "capi"),
    "stripe_webhook": ("stripe_webhook", "stripe webhook", "stripe"),
    "google_ads_api": ("google_ads_api", "google ads api"),
}
