"""The closed vocabularies of `cache.question_signature`: what the English analyser understands.

Every table maps surface text to ONE canonical form. A pair of questions is a paraphrase only if
their canonical sequences are equal, so an entry here is a claim that two spellings never change
the answer (synonyms, inflections, number words, lead-ins). When in doubt a word is left out: a
missing synonym costs a model call, a wrong one serves a wrong answer.
"""

from __future__ import annotations


def words(text: str) -> frozenset[str]:
    """A vocabulary from a whitespace-separated word list."""
    return frozenset(text.split())


def _pairs(text: str) -> dict[str, str]:
    """A mapping from whitespace-separated `word=canonical` items ('+' stands for a space)."""
    return {k: v.replace("+", " ") for k, v in (item.split("=", 1) for item in text.split())}


# Openings that ask nothing themselves ("can you tell me why ..." asks "why ...").
LEAD_INS: tuple[tuple[str, ...], ...] = tuple(
    tuple(p.split())
    for p in (
        "can you please tell me",
        "could you please tell me",
        "can you tell me",
        "could you tell me",
        "can you please explain",
        "could you please explain",
        "can you explain",
        "could you explain",
        "please explain",
        "please tell me",
        "explain to me",
        "tell me",
        "i want to know",
        "i would like to know",
        "i'd like to know",
        "help me understand",
        "do you know",
        "please",
        "so",
        "hey",
        "hi",
    )
)
# "explain" is a lead-in only before a question word ("explain why revenue dropped").
LEAD_IN_BEFORE_WH = frozenset({"explain"})
WH_WORDS = frozenset({"why", "how", "what", "which", "when", "where", "who", "whose", "whom"})

# Multi-word phrases rewritten to canonical tokens, longest first (applied left to right).
PHRASES: dict[tuple[str, ...], tuple[str, ...]] = {
    tuple(k.split()): tuple(v.split())
    for k, v in {
        # why
        "what is the reason": "why",
        "what was the reason": "why @past",
        "what are the reasons": "why",
        "what were the reasons": "why @past",
        "for what reason": "why",
        "how come": "why",
        "what caused": "why @past",
        "what is causing": "why @present",
        "what causes": "why @present",
        "what explains": "why @present",
        "what explained": "why @past",
        "what is the reason for": "why",
        "what was the reason for": "why @past",
        "what are the reasons for": "why",
        "what were the reasons for": "why @past",
        "give me a summary of": "summarise",
        "give me an overview of": "summarise",
        "give me a summary": "summarise",
        # amounts and shares
        "how much": "amount",
        "how many": "count",
        "what amount of": "amount",
        "what number of": "count",
        "what share of": "share of",
        "what percentage of": "share of",
        "what percent of": "share of",
        "what proportion of": "share of",
        "what fraction of": "share of",
        "which share of": "share of",
        "what portion of": "share of",
        # comparators and bounds
        "lower than": "below",
        "less than": "below",
        "fewer than": "below",
        "smaller than": "below",
        "higher than": "above",
        "greater than": "above",
        "more than": "above",
        "bigger than": "above",
        "larger than": "above",
        "in excess of": "above",
        "at least": "at_least",
        "no less than": "at_least",
        "not less than": "at_least",
        "at most": "at_most",
        "no more than": "at_most",
        "not more than": "at_most",
        # not "up to": "revenue is up to $5,000" (it rose to) is no cap
        "compared to": "vs",
        "compared with": "vs",
        "as compared to": "vs",
        "in comparison to": "vs",
        "in comparison with": "vs",
        "versus": "vs",
        "compare with": "compare to",
        "compares with": "compare to",
        # inclusion
        "net of": "excluding",
        "leaving out": "excluding",
        "not including": "excluding",
        "not counting": "excluding",
        "apart from": "excluding",
        "other than": "excluding",
        "together with": "including",
        # verbs and nouns with one meaning here
        "go down": "decrease",
        "went down": "decrease @past",
        "gone down": "decreased",
        "going down": "decrease",
        "goes down": "decrease",
        "go up": "increase",
        "went up": "increase @past",
        "gone up": "increased",
        "going up": "increase",
        "goes up": "increase",
        "break down": "breakdown",
        "broken down": "breakdown @past",
        "split by": "breakdown by",
        "bring in": "drive",
        "brought in": "drive @past",
        "brings in": "drive",
        "bringing in": "drive",
        "come from": "come_from",
        "came from": "come_from @past",
        "comes from": "come_from",
        "coming from": "come_from",
        # metric phrases (normalise_question spells the abbreviations out)
        "return on ad spend": "roas",
        "return on advertising spend": "roas",
        "return on investment": "roi",
        "cost per acquisition": "cpa",
        "cost per conversion": "cpa",
        "cost per click": "cpc",
        "cost per thousand impressions": "cpm",
        "click through rate": "ctr",
        "clickthrough rate": "ctr",
        "conversion rate": "cvr",
        "average order value": "aov",
        "customer lifetime value": "ltv",
        "lifetime value": "ltv",
        "year over year": "yoy",
        "month over month": "mom",
        "week over week": "wow",
        "sign ups": "signup",
        "sign up": "signup",
        "signed up": "signup",
        "paid search": "paid_search",
        "paid social": "paid_social",
        "organic search": "organic_search",
        "google ads": "google_ads",
        "facebook ads": "facebook_ads",
        "per cent": "percent",
        "last week's": "last week",
        "e mail": "email",
        # "key" is "main" only of a cause ("a key account" is a strategic client, not the main one)
        "key cause": "main cause",
        "key causes": "main causes",
        "key driver": "main driver",
        "key drivers": "main drivers",
        "key factor": "main factor",
        "key factors": "main factors",
        "key reason": "main cause",
        "key reasons": "main causes",
    }.items()
}
# "the change in revenue" is "the revenue change": a change noun of one measure word, either way.
PHRASES.update(
    {
        (change, "in", measure): (measure, change)
        for change in ("change", "drop", "decline", "decrease", "increase", "rise", "fall", "dip")
        for measure in ("revenue", "spend", "roas", "cpa", "cpc", "ctr", "aov", "traffic")
    }
)
MAX_PHRASE = max(len(k) for k in PHRASES)

# Single words to one canonical word (after contractions; before inflections are stripped).
SYNONYMS: dict[str, str] = {
    # direction (change verbs and nouns)
    "drop": "decrease",
    "drops": "decrease",
    "dropped": "decrease",
    "dropping": "decrease",
    "decline": "decrease",
    "declines": "decrease",
    "declined": "decrease",
    "declining": "decrease",
    "decrease": "decrease",
    "decreases": "decrease",
    "decreased": "decrease",
    "decreasing": "decrease",
    "fall": "decrease",
    "falls": "decrease",
    "fell": "decrease",
    "fallen": "decrease",
    "falling": "decrease",
    "increase": "increase",
    "increases": "increase",
    "increased": "increase",
    "increasing": "increase",
    "rise": "increase",
    "rises": "increase",
    "rose": "increase",
    "risen": "increase",
    "rising": "increase",
    "grow": "increase",
    "grows": "increase",
    "grew": "increase",
    "grown": "increase",
    "growing": "increase",
    "growth": "increase",
    "climb": "increase",
    "climbed": "increase",
    "climbing": "increase",
    # the one most important thing
    "main": "main",
    "primary": "main",
    # by size, not by importance: a superlative of its own
    "biggest": "largest",
    "largest": "largest",
    "principal": "main",
    "chief": "main",
    "jump": "spike",
    "jumps": "spike",
    "jumped": "spike",
    "summarize": "summarise",
    "summary": "summarise",
    # causes and drivers
    "cause": "cause",
    "causes": "cause",
    "reason": "cause",
    "reasons": "cause",
    "driver": "driver",
    "drivers": "driver",
    "drove": "drive",
    "driving": "drive",
    "drives": "drive",
    "driven": "drive",
    "generate": "drive",
    "generated": "drive",
    "generates": "drive",
    "generating": "drive",
    # words with one spelling here
    "channels": "channel",
    "campaigns": "campaign",
    "revenues": "revenue",
    "conversions": "conversion",
    "versus": "vs",
    "v": "vs",
    "normal": "usual",
    "usual": "usual",
    "typical": "usual",
    "normally": "usually",
    "typically": "usually",
    "fb": "facebook",
    "adwords": "google_ads",
    "seo": "organic_search",
    "nonbrand": "non brand",
    "unbranded": "non brand",
    "non-brand": "non brand",
    "signups": "signup",
    "registrations": "signup",
    "pct": "percent",
    "percentage": "percent",
    "%": "percent",
    "excluding": "excluding",
    "exclude": "excluding",
    "excludes": "excluding",
    "excluded": "excluding",
    "minus": "excluding",
    "including": "including",
    "include": "including",
    "includes": "including",
    "included": "including",
    "inclusive": "including",
    "dollars": "usd",
    "dollar": "usd",
    "bucks": "usd",
    "$": "usd",
    "€": "eur",
    "euros": "eur",
    "euro": "eur",
    "£": "gbp",
    # not "pounds": without "£" it may be a weight ("10 pounds of stock")
    "&": "and",
    "+": "plus_sign",
    "<": "below",
    ">": "above",
    "<=": "at_most",
    ">=": "at_least",
    "under": "under",
    "over": "over",
    "exceeding": "above",
    "exceeds": "above",
    "exceed": "above",
    "ads": "ad",
    "adverts": "ad",
    "advert": "ad",
    "advertisement": "ad",
    "advertisements": "ad",
    "advertising": "ad",
    "1st": "first",
    "2nd": "second",
    "3rd": "third",
    "4th": "fourth",
    "5th": "fifth",
}

# "what caused the decline in revenue" asks "why did revenue decline": cause openings ...
CAUSE_OPENINGS: dict[tuple[str, ...], str] = {
    tuple(k.split()): v
    for k, v in {
        "what caused": "@past",
        "what drove": "@past",
        "what led to": "@past",
        "what explains": "@present",
        "what explained": "@past",
        "what is driving": "@present",
        "what is causing": "@present",
        "what is behind": "@present",
        "what was behind": "@past",
    }.items()
}
# ... before one of these changes (as nouns), then "in"/"of" and what changed.
CHANGE_NOUNS = frozenset(
    {"drop", "decline", "decrease", "fall", "dip", "increase", "rise", "growth", "spike", "jump"}
)
# Where the changed thing ends ("the drop in revenue on mobile").
PHRASE_BOUNDARIES = words(
    """
    on in for from during last this since between by vs at over under among across after
    before compared versus
    """
)
# Determiners that never change what is asked ("why did the revenue drop").
STOP_WORDS = frozenset({"the", "a", "an", "our", "please"})

# Auxiliaries: they carry tense, not content. has/have/had are auxiliaries only before a
# participle; otherwise they are the verb "have".
TENSE_OF_AUX: dict[str, str] = _pairs(
    """
    do=present does=present is=present are=present am=present did=past was=past were=past
    """
)
# Irregular past forms: their base form, and they mark the past tense.
PAST_FORMS: dict[str, str] = _pairs(
    """
    spent=spend made=make got=get took=take saw=see went=go came=come brought=bring
    drove=drive fell=decrease rose=increase grew=increase lost=lose won=win sold=sell
    paid=paid
    """
)
PERFECT_AUX = frozenset({"has", "have", "had"})
PARTICIPLE_IRREGULAR = frozenset(
    {"been", "gone", "done", "seen", "made", "become", "come", "taken", "got", "gotten", "had"}
)
# Modal verbs: what is asked (a forecast, a hypothesis, an obligation) differs with each.
MODALS = frozenset({"will", "would", "could", "should", "might", "may", "can", "must", "shall"})
NEGATIONS = frozenset({"not", "no", "never", "none", "nothing", "neither", "nor", "nobody"})
TIME_WORDS = words(
    """
    today yesterday tomorrow tonight now currently recently lately week weekend weekday month
    year quarter day days hour morning afternoon evening night last this next previous prior
    past current coming recent before after since until during ago earlier later monday
    tuesday wednesday thursday friday saturday sunday january february march april june july
    august september october november december q1 q2 q3 q4 ytd mtd qtd daily weekly monthly
    yearly quarterly annual annually hourly season seasonal holiday christmas
    """
)
DIRECTION_WORDS: dict[str, str] = _pairs(
    """
    increase=up up=up higher=up more=up spike=up jump=up surge=up gain=up improve=up
    decrease=down down=down lower=down less=down fewer=down dip=down loss=down lose=down
    worse=down plunge=down slump=down change=any shift=any stable=flat flat=flat
    """
)
COMPARATORS = frozenset({"above", "below", "at_least", "at_most", "under", "over", "between"})
EXTREMES = frozenset(
    {
        "most",
        "least",
        "highest",
        "lowest",
        "best",
        "worst",
        "top",
        "bottom",
        "main",
        "fewest",
        "largest",
    }
)
INCLUSION = frozenset({"including", "excluding"})
PREFIXES = frozenset({"non", "un", "anti", "pre", "post", "multi", "cross", "sub", "re"})
MEASURES = words(
    """
    revenue sales conversion cvr roas roi cpa cpc cpm ctr aov ltv spend cost budget click
    impression order purchase customer signup session traffic visit margin profit refund
    return churn retention engagement bounce rate value yoy mom wow share percent
    """
)
ENTITIES = words(
    """
    facebook google instagram tiktok linkedin twitter youtube bing pinterest snapchat email
    affiliate referral display organic paid paid_search paid_social organic_search google_ads
    facebook_ads brand campaign channel mobile desktop tablet ios android app web new
    returning existing direct social search video
    """
)
# Words an English question is made of; a question must use some to be read as English.
ENGLISH_MARKERS = words(
    """
    the a an is are was were do does did why how what which when where who whose of to in on
    for by with from and or not no than this that these those it its our we my you your i be
    been has have had will would could should can may might must there their they
    """
)
# Function words of other languages that are not English words: one is enough to call a text
# not English (it then hits only on an exact match).
FOREIGN_MARKERS = (
    words(
        """
    por que qué porque cual cuál cuales como cómo el los las del una unos unas ventas ingresos
    bajaron subieron canal canales semana pasada mes año cuanto cuánto cuanta ha han fue es
    menos mas más mayor menor sin con sobre entre desde hasta pero tambien también muy warum
    wieso weshalb der die das den dem des und ist sind nicht kein keine wie welche welcher
    welches hat haben wurde wurden umsatz einnahmen letzte letzten woche monat jahr mehr
    weniger am meisten wenigsten ohne mit fur für von zum zur auf ein eine einen gegenüber
    gestiegen gesunken pourquoi le les est sont quel quelle quels quelles ventes ont été ne
    pas sans avec semaine dernière dernier mois chiffre d'affaires baisse hausse combien plus
    moins perché il della delle sono è stato stati calo aumento settimana scorsa ricavi quanto
    por quê o os não foi receita semana passada queda aumento waarom het zijn niet hoe welke
    omzet vorige week maand gedaald gestegen
    """
    )
    - ENGLISH_MARKERS
    - {
        "am",
        "die",
        "war",
        "hat",
        "also",
        "son",
        "sin",
        "con",
        "fur",
        "mit",
        "plus",
        "mayor",
        "canal",
        "den",
        "week",
        "hoe",
        "los",
        "las",
        "von",
    }
)
NUMBER_WORDS: dict[str, int] = {
    k: int(v)
    for k, v in _pairs(
        """
    zero=0 one=1 two=2 three=3 four=4 five=5 six=6 seven=7 eight=8 nine=9 ten=10 eleven=11
    twelve=12 thirteen=13 fourteen=14 fifteen=15 sixteen=16 seventeen=17 eighteen=18
    nineteen=19 twenty=20 thirty=30 forty=40 fifty=50 sixty=60 seventy=70 eighty=80 ninety=90
    """
    ).items()
}
NUMBER_SCALES: dict[str, int] = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
CURRENCY_WORDS = frozenset({"usd", "eur", "gbp"})
# Words the inflection rules must leave alone (they are not plurals or verb forms of another).
NOT_INFLECTED = words(
    """
    news series species always perhaps sometimes windows means analytics physics economics
    mathematics statistics marketing advertising morning evening nothing something anything
    everything during thing things bring spring string ceiling building meaning wedding less
    unless across process business status bonus campus basis analysis thesis this his its has
    was is does yes us bus gas plus minus various previous serious famous obvious christmas
    texas paris sms ios aws kpis roas kpi securities customs goods arms glasses manners
    savings earnings damages spirits quarters remains grounds premises letters headquarters
    returns targeting sales leading
    """
)
# Verbs whose -ed / -ing forms are inflections here; other -ed / -ing words are left alone
# ("bearing" is not "bear", "forced" is not "force", "processing" is not "process").
VERBS = words(
    """
    convert perform underperform outperform drop decline decrease increase spend grow
    attribute click improve change shift spike jump fall rise climb dip drive generate cost
    sell buy order visit engage bounce churn retain acquire lose gain earn launch pause run
    track match deduplicate count refund cancel return recover show look happen trend compare
    contribute rank move cut stop start target optimise optimize subscribe register open bring
    come go make take get see work cause explain lead fluctuate spike slump plunge recover
    waste allocate split break credit reach exceed miss hit double triple halve tank surge
    soar stall
    """
)
# Domain words a one-letter typo is corrected to (only words of six letters or more).
TYPO_TARGETS = words(
    """
    revenue conversion campaign channel attribution acquisition impression performance
    performing facebook google instagram linkedin youtube pinterest snapchat organic session
    customer average referral affiliate display desktop mobile newsletter decrease increase
    decline dropped budget tiktok traffic returning yesterday weekend
    """
)
# Real English words one edit away from a typo target: never "corrected" (a deferral is not a
# referral, an overage is not an average, Chanel is not a channel).
NOT_TYPOS = words(
    """
    deferral deferrals overage overages goggle goggles googly chanel champaign champaigns
    youtuber youtubers revenge revenges recline reclined dripped drooped cropped propped
    costumer costumers
    """
)

# Closed-class words: never an open-class noun (a "what" before one still asks "what").
CLOSED = (
    ENGLISH_MARKERS
    | frozenset(TENSE_OF_AUX)
    | PERFECT_AUX
    | MODALS
    | WH_WORDS
    | STOP_WORDS
    | NEGATIONS
    | frozenset({"kind", "type", "sort", "percentage", "percent"})
)
# Hyphenated compounds that mean what their words mean; any other compound ("drop-in") is one
# word of its own, and a prefix compound ("non-brand") is the prefix and the word.
COMPOUNDS: dict[str, tuple[str, ...]] = {
    "click-through": ("click", "through"),
    "sign-up": ("sign", "up"),
    "sign-ups": ("sign", "ups"),
    "e-mail": ("e", "mail"),
    "e-mails": ("emails",),
    "year-over-year": ("year", "over", "year"),
    "month-over-month": ("month", "over", "month"),
    "week-over-week": ("week", "over", "week"),
}
