"""The question matcher on the labelled pairs, and attacks on each class of near miss."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cache.question_match import analysable, match
from cache.question_signature import analyse, exact_text, foreign

PAIRS: list[dict[str, Any]] = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "question_pairs.jsonl").read_text().splitlines()
    if line.strip()
]
# Measured at this commit (see bench/RESULTS.md): 173 of 266 paraphrases hit.
MEASURED_RECALL = 173 / 266


def test_the_set_is_big_labelled_and_unique() -> None:
    assert len(PAIRS) >= 400
    assert len({p["id"] for p in PAIRS}) == len(PAIRS)
    assert {p["split"] for p in PAIRS} >= {"dev", "holdout"}
    assert all(isinstance(p["same"], bool) and p["class"] for p in PAIRS)
    assert sum(not p["same"] for p in PAIRS) >= 200


def test_no_wrong_hit_on_the_labelled_pairs() -> None:
    wrong = [p["id"] for p in PAIRS if not p["same"] and match(p["b"], p["a"]).hit]
    wrong += [p["id"] for p in PAIRS if not p["same"] and match(p["a"], p["b"]).hit]
    assert wrong == []


def test_paraphrase_recall_holds() -> None:
    same = [p for p in PAIRS if p["same"]]
    recall = sum(match(p["b"], p["a"]).hit for p in same) / len(same)
    assert recall >= MEASURED_RECALL - 0.02, recall


@pytest.mark.parametrize(
    ("stored", "asked", "reason"),
    [
        ("Why is Facebook outperforming Google on ROAS?",
         "Why is Google outperforming Facebook on ROAS?", "entities_differs"),
        ("Which campaigns have a CPA above $50?", "Which campaigns have a CPA below $50?",
         "comparators_differs"),
        ("What was revenue excluding refunds?", "What was revenue including refunds?",
         "inclusion_differs"),
        ("What share of revenue came from paid social?",
         "How much revenue came from paid social?", "intent_differs"),
        ("How are brand campaigns doing?", "How are non-brand campaigns doing?",
         "prefixes_differs"),
        ("Why did revenue drop?", "Why didn't revenue drop?", "negation_differs"),
        ("Which channel contributed most to the decline?",
         "Which channel contributed least to the decline?", "extremes_differs"),
        ("Why did revenue drop last week?", "Why did revenue drop last month?",
         "time_words_differs"),
        ("What are the top 3 campaigns?", "What are the top five campaigns?", "numbers_differs"),
        ("Why could revenue drop?", "Why would revenue drop?", "modality_differs"),
        ("Why did revenue drop?", "Why did revenue rise?", "direction_differs"),
        ("¿Por qué bajaron las ventas?", "¿Por qué subieron las ventas?",
         "language_not_analysed"),
        ("Warum ist der Umsatz gesunken?", "Warum ist der Umsatz nicht gesunken?",
         "language_not_analysed"),
        ("warum ist der umsatz gesunken", "warum ist der umsatz gestiegen",
         "language_not_analysed"),
        ("What does nitrogen do?", "What is nitrogen?", "content_differs"),
        ("What is a force?", "What is forced?", "content_differs"),
        ("Which channel drove the most revenue?", "Which channels drove the most revenue?",
         "plurality_differs"),
        ("What is the top campaign by ROAS?", "What are the top campaigns by ROAS?",
         "plurality_differs"),
        ("What is the revenue per customer?", "What is the total revenue?", "measures_differs"),
        ("What was the spend per day on Facebook?", "What was the total spend on Facebook?",
         "time_words_differs"),
        ("Which campaign launched first?", "Which campaign launched last?",
         "time_words_differs"),
        ("What was revenue in the first week of the campaign?",
         "What was revenue in the last week of the campaign?", "time_words_differs"),
    ],
)  # fmt: skip
def test_near_misses_miss_with_the_feature_that_differs(
    stored: str, asked: str, reason: str
) -> None:
    decision = match(asked, stored)
    assert not decision.hit and decision.reason == reason
    assert not match(stored, asked).hit


@pytest.mark.parametrize(
    ("stored", "asked", "relation"),
    [
        ("Why were conversions lower than usual?", "Why were conversions below normal?",
         "synonym"),
        ("Break down the revenue change by channel", "Please break down the revenue change by "
         "channel", "stop_word"),
        ("What are 3 habits of top campaigns?", "What are three habits of top campaigns?",
         "number_words"),
        ("What is the main cause of the drop?", "What is the primary cause of the drop?",
         "synonym"),
        ("Which campaigns spent over $10,000?", "Which campaigns spent over 10k dollars?",
         "synonym"),
        ("Why did sessions drop?", "Why did session drop?", "inflection"),
        ("Why did revenue drop?", "Can you tell me why revenue dropped?", "lead_in"),
        ("Why did revenue drop?", "Why did revnue drop?", "typo"),
        ("What is the ROAS of email?", "What's the ROAS of email?", "contraction"),
        ("Why did revenue drop?", "What caused the decline in revenue?", "word_order"),
        ("Break down the revenue change by channel",
         "Break down the change in revenue by channel", "synonym"),
        ("What caused the drop?", "What was the reason for the drop?", "synonym"),
        ("How much did we spend on ads?", "How much did we spend on advertising?", "synonym"),
        ("How does Facebook compare to Google?", "How does Facebook compare with Google?",
         "synonym"),
    ],
)  # fmt: skip
def test_paraphrases_hit_with_the_relation_that_reconciles_them(
    stored: str, asked: str, relation: str
) -> None:
    decision = match(asked, stored)
    assert decision.hit and decision.relation == "paraphrase", decision
    assert relation in decision.agreement["relations"]
    assert match(stored, asked).hit


def test_another_language_hits_only_its_exact_text() -> None:
    stored = "¿Por qué bajaron las ventas la semana pasada?"
    assert match("  ¿por qué bajaron las ventas la semana pasada ", stored).relation == "exact"
    assert not match("¿Por qué cayeron las ventas la semana pasada?", stored).hit
    assert not analysable(stored)
    assert not match("Why did sales drop last week?", stored).hit


def test_unreadable_questions_hit_only_exactly() -> None:
    # No English function word, a symbol it does not read, a zero-width space, a Cyrillic "о".
    for text in (
        "ROAS Facebook",
        "revenue!!! ???",
        "why did revenue ~ spend",
        "why did revenue\u200b drop",
        "why did revenue drоp",
    ):
        assert not analyse(text).understood, text
        assert not match(text, "Why did revenue drop?").hit
    assert not match("ROAS Facebook", "ROAS for Facebook").hit
    assert match("ROAS Facebook", "roas facebook").hit
    assert not match("", "").hit


def test_analysis_is_deterministic_and_pure() -> None:
    question = "Which 25 campaigns didn't spend over $1.5k on FB last week?"
    first = analyse(question)
    analyse.cache_clear()
    again = analyse(question)
    assert first == again and first.relations == again.relations
    assert first.numbers == ("25", "1500") and first.negation == ("not",)
    assert first.comparators == ("above 1500 usd",) and first.entities == ("campaign", "facebook")
    assert first.plurality == ("many campaign",)
    assert exact_text("  Why  did it DROP?! ") == "why did it drop"


# Round four, as an attacker: near misses of classes nobody had listed (periods named in the
# text, currency and scale units, per user vs total, new vs returning, mobile vs desktop, iOS vs
# Android, would/should vs did, first vs last touch, typos that make another word, a plural of a
# measure one counts, a "not" of a participle, a synonym inside a name). The last three broke
# and were fixed.
ATTACK3 = [
    ("What was revenue in Q3?", "What was revenue in Q4?"),
    ("Why did revenue drop in Q3 2025?", "Why did revenue drop in Q3 2026?"),
    ("Why did signups drop yesterday?", "Why did signups drop today?"),
    ("Why did revenue drop in H1?", "Why did revenue drop in H2?"),
    ("Why did revenue drop this morning?", "Why did revenue drop this evening?"),
    ("How much did we spend on Facebook in $?", "How much did we spend on Facebook in €?"),
    ("Which campaigns spent over $5k?", "Which campaigns spent over $5m?"),
    ("Which campaigns spent over $5 million?", "Which campaigns spent over $5 thousand?"),
    ("What is revenue per user?", "What is total revenue?"),
    ("What is spend per user on TikTok?", "What is spend on TikTok?"),
    ("Why did new users convert less?", "Why did returning users convert less?"),
    ("Why is CTR lower on mobile?", "Why is CTR lower on desktop?"),
    ("Why did iOS revenue drop?", "Why did Android revenue drop?"),
    ("Why would revenue drop if we paused email?", "Why did revenue drop when we paused email?"),
    ("What would ROAS be if we doubled spend?", "What was ROAS when we doubled spend?"),
    ("Should we pause the TikTok campaign?", "Did we pause the TikTok campaign?"),
    ("How much revenue does email get under first touch?",
     "How much revenue does email get under last touch?"),
    ("Which channel gets the most first-touch credit?",
     "Which channel gets the most last-touch credit?"),
    ("Why did conversions from Bing drop?", "Why did conversions from Ping drop?"),
    ("Why did revenue from email drop?", "Why did revenue form email drop?"),
    ("Why did the first campaign fail?", "Why did the fist campaign fail?"),
    ("Why did clicks drop in the morning?", "Why did clicks drop in the mourning?"),
    ("Why did the campaign budget drop?", "Why did the campaign budgets drop?"),
    ("Why didn't campaigns paused in March drop?", "Why did campaigns not paused in March drop?"),
    ("How did the Main Street campaign perform?", "How did the Primary Street campaign perform?"),
]  # fmt: skip


@pytest.mark.parametrize(("stored", "asked"), ATTACK3)
def test_attack3_near_misses_miss(stored: str, asked: str) -> None:
    assert not match(asked, stored).hit
    assert not match(stored, asked).hit


def test_attack3_pairs_are_in_the_labelled_set() -> None:
    labelled = {(p["a"], p["b"]) for p in PAIRS if p["split"] == "attack3" and not p["same"]}
    assert set(ATTACK3) <= labelled


@pytest.mark.parametrize(
    ("stored", "asked", "exact"),
    [
        ("Wie viel Umsatz haben Sie gemacht?", "Wie viel Umsatz haben sie gemacht?", False),
        ("¿Por qué bajó el ROAS de IT?", "¿Por qué bajó el ROAS de it?", False),
        ("¿Por qué bajó el ROAS de IT?", "¿por qué bajó el ROAS de IT", True),
        # Typed without case, "sie" may be "Sie": no evidence, so a miss (was a hit before the
        # red team's round five showed "wie können sie ..." served "Wie können Sie ...").
        ("Warum ist der Umsatz gesunken?", "warum ist der umsatz gesunken", False),
        ("wie können sie den umsatz steigern", "Wie können Sie den Umsatz steigern", False),
        ("Perché le vendite sono calate?", "Perché le vendite sono calate.", False),
        ("Perché le vendite sono calate?", "perché le vendite sono calate", True),
        ("Why did revenue from Nestlé drop after IT paused?",
         "Why did revenue from Nestlé drop after it paused?", False),
    ],
)  # fmt: skip
def test_other_languages_keep_their_case(stored: str, asked: str, exact: bool) -> None:
    """Another language's capitals and marks carry meaning ("Sie" is you, "sie" they; Italian
    "Perché ...?" asks why, "Perché ... ." says because): the exact path compares the text as
    typed, but for its first letter and a final mark left out on one side."""
    assert match(asked, stored).hit is exact
    assert match(stored, asked).hit is exact


@pytest.mark.parametrize(
    ("text", "is_foreign"),
    [
        ("Was the café promo worth it?", False),
        ("Éclair revenue fell, why?", False),
        ("Is the naïve résumé campaign working?", False),
        ("¿Por qué bajaron las ventas?", True),
        ("Warum ist der Umsatz gesunken?", True),
        ("Why did las ventas drop?", True),  # English words beside another language's
        ("Éclair Umsatz", True),  # no English function word
    ],
)
def test_an_accented_word_does_not_make_english_foreign(text: str, is_foreign: bool) -> None:
    assert foreign(text) is is_foreign


@pytest.mark.parametrize(
    ("stored", "asked", "exact"),
    [
        ("Was the café promo worth it?", "Was the Café promo worth it?", False),
        ("Was the café promo worth it?", "was the café promo worth it", True),
        ("Café revenue fell, why?", "café revenue fell, why?", False),
    ],
)
def test_english_with_an_accented_word_keeps_its_names(
    stored: str, asked: str, exact: bool
) -> None:
    """Read as English, its capitals name things ("Café" the brand is not a café)."""
    assert match(asked, stored).hit is exact
    assert match(stored, asked).hit is exact


# Round six, as an attacker against the round-six design itself: marks typed differently
# (curly quotes, markdown, a colon for a comma, a doubled "?"), a quoted name on both sides,
# a money "k" against a bare one, tenses swapped between clauses, a time against a decimal,
# a possessive against none, an id sign, owners moved, "US" / "us". All miss.
ATTACK6 = [
    ("Why did the “Primary” campaign drop?", "Why did the main campaign drop?"),
    ("Why did the 'Target' campaign drop?", "Why did the 'target' campaign drop?"),
    ('Why did the "Target" campaign drop?', 'Why did the "target" campaign drop?'),
    ("Why did spend rise to $5k?", "Why did spend rise to 5k?"),
    ("Why did revenue drop and why is spend rising?",
     "Why is revenue dropping and why did spend rise?"),
    ("Why did revenue drop at 10:30?", "Why did revenue drop at 10.30?"),
    ("Why did Google's CPA rise?", "Why did Google CPA rise?"),
    ("Why did revenue drop on 5/10?", "Why did revenue drop on 5-10?"),
    ("Why did revenue drop: email?", "Why did revenue drop, email?"),
    ("Why did spend rise by 1.50?", "Why did spend rise by 1.5?"),
    ("Why did campaign #7 drop?", "Why did campaign 7 drop?"),
    ("Why did *all* campaigns drop?", "Why did all campaigns drop?"),
    ("Why did our CPA rise above the target?", "Why did the CPA rise above our target?"),
    ("Why did sales drop in the US?", "Why did sales drop in the us?"),
]  # fmt: skip


@pytest.mark.parametrize(("stored", "asked"), ATTACK6)
def test_attack6_near_misses_miss(stored: str, asked: str) -> None:
    assert not match(asked, stored).hit
    assert not match(stored, asked).hit


def test_nothing_unread_is_thrown_away() -> None:
    """Marks, possessives, owners, digits as written and every clause's tense are features."""
    s = analyse("Why did Google's revenue drop in weeks 5-10, and why is our spend rising?")
    assert s.marks == ("5 -", "10 ,")
    assert s.tense == "past,present"
    assert s.content[1:3] == ("google", "'s") and s.owners == ("our spend",)
    for typed, other in (("1.10", "1.1"), ("007", "7"), ("4K", "4000")):
        assert analyse(f"Why did item {typed} drop?").numbers == (typed.lower(),)
        assert not match(f"Why did item {typed} drop?", f"Why did item {other} drop?").hit
    assert analyse("Why did CPA rise above $1.5k?").numbers == ("1500",)
    assert analyse("Why did CPA rise above $1,500?").numbers == ("1500",)
