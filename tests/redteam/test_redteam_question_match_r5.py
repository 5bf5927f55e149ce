"""Red team (issue 11, round five): new near-miss classes against the precision-first matcher.

The promise: a cached explanation is served for another question only with positive evidence
that both ask the same thing; what is not understood is a miss; a language the matcher does not
analyse hits only on an exact normalised match. Each near miss below is two questions that need
different answers, so `cache.question_match.match` must say miss; each paraphrase is one the
promise says is supported, so it must hit. A pair that broke the promise when written is marked
`xfail(strict=True)` with what broke; the others stay as regression guards. A sample of each goes
through POST /v1/explanations too (real PostgreSQL, the model mocked with respx at OpenAI's wire
format, local embeddings), each pair in a scope (period) of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import respx

from cache.question_match import match
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant
from tests.helpers.served_app import demo_tenant
from tests.llm_service.explanations.explanation_helpers import (
    OPENAI_URL,
    FakeModel,
    auth,
    days,
    model_settings,
    serve,
)


def _broke(reason: str) -> pytest.MarkDecorator:
    """A pair that broke the promise when written: the test fails until the matcher is fixed."""
    return pytest.mark.xfail(strict=True, reason=reason)


# (class, stored question, asked question, what broke): two questions, two answers. All 44
# broke when written and were fixed by design (matcher round six: unread marks compared as
# typed, numbers as written, every clause's tense, names in quotes and URLs, possessives and
# owners, the exact path as typed): regression guards now, the reason kept as the record.
_FIXED: list[tuple[str, str, str, str]] = [
    ("weight_vs_currency", "What is the shipping cost for packages over 10 pounds?",
     "What is the shipping cost for packages over £10?",
     "lexicon SYNONYMS pounds=gbp: a weight is read as money (above 10 gbp both)"),
    ("weight_vs_currency_loss", "Why did we lose 10 pounds of inventory?",
     "Why did we lose £10 of inventory?",
     "lexicon SYNONYMS pounds=gbp: 10 pounds of stock is read as £10"),
    ("rose_to_vs_capped", "Why is revenue up to $5,000 this week?",
     "Why is revenue no more than $5,000 this week?",
     "PHRASES 'up to' -> at_most: 'revenue is up to $5,000' (it rose to) reads as a cap"),
    ("version_number", "Why did revenue drop after release 1.10?",
     "Why did revenue drop after release 1.1?",
     "question_numbers.number_token makes 1.10 the number 1.1: version 1.10 is not 1.1"),
    ("version_number_2", "What happened after version 2.10 launched?",
     "What happened after version 2.1 launched?",
     "question_numbers.number_token makes 2.10 the number 2.1"),
    ("id_leading_zeros", "Why did campaign 007 drop?", "Why did campaign 7 drop?",
     "number_token strips leading zeros: id 007 is read as 7"),
    ("order_id_leading_zeros", "Why did order 00123 get refunded?",
     "Why did order 123 get refunded?",
     "number_token strips leading zeros: order 00123 is read as order 123"),
    ("range_vs_list", "What was revenue in weeks 5-10?", "What was revenue in weeks 5, 10?",
     "the '-' between digits is dropped (_IGNORED) and commas are dropped: a range of six weeks "
     "reads as the list of two"),
    ("range_vs_list_en_dash", "What was revenue in weeks 5–10?",
     "What was revenue in weeks 5 10?", "the en dash is in _IGNORED: 5–10 reads as 5 10"),
    ("range_vs_list_spaced", "Why did revenue drop in week 10 - 12?",
     "Why did revenue drop in week 10, 12?", "a spaced '-' is ignored: a range reads as a list"),
    ("range_vs_list_ids", "What was the CPA of campaigns 3-5?",
     "What was the CPA of campaigns 3, 5?",
     "campaigns 3-5 (three campaigns) reads as campaigns 3 and 5"),
    ("en_dash_minus", "Why did ROAS change by –5%?", "Why did ROAS change by 5%?",
     "an en dash typed as a minus sign is ignored (_IGNORED): -5% reads as +5%"),
    ("em_dash_minus", "Why did ROAS change by —5%?", "Why did ROAS change by 5%?",
     "an em dash before a number is ignored: the sign is lost"),
    ("en_dash_negative_target", "Why did ROAS fall to –2?", "Why did ROAS fall to 2?",
     "an en dash minus is ignored: falling to -2 reads as falling to 2"),
    ("minus_sign_word", "What is revenue - refunds?", "What is revenue refunds?",
     "a spaced '-' (minus) is ignored: revenue minus refunds reads as revenue refunds"),
    ("minus_in_brackets", "Why did revenue (net - refunds) drop?",
     "Why did revenue (net refunds) drop?", "a spaced '-' is ignored inside brackets too"),
    ("second_clause_tense", "Why did revenue drop and why did spend rise?",
     "Why did revenue drop and why is spend rising?",
     "_tense drops every auxiliary after a question word and keeps the first tense: the second "
     "question's tense (past vs present) is never compared"),
    ("second_clause_tense_2", "What did we spend and what is our ROAS?",
     "What did we spend and what was our ROAS?",
     "_tense: the tense of the second question ('what is' / 'what was') is dropped"),
    ("second_clause_tense_3", "Why did revenue drop and where is spend going?",
     "Why did revenue drop and where was spend going?",
     "_tense: 'where is' / 'where was' after a first question lose their tense"),
    ("second_question_tense", "Why did revenue drop? Why did spend not rise?",
     "Why did revenue drop? Why is spend not rising?",
     "_tense: a second sentence's auxiliary after 'why' is dropped, its tense ignored"),
    ("quoted_name_synonym", 'Why did the "Primary" campaign drop?',
     "Why did the main campaign drop?",
     "_MID_CAPITALS needs a letter before the space: a quoted name \"Primary\" becomes 'main'"),
    ("quoted_name_synonym_2", "Why did the 'Chief' campaign drop?",
     "Why did the main campaign drop?",
     "_MID_CAPITALS misses a name in quotes: 'Chief' becomes 'main'"),
    ("markdown_name_synonym", "Why did **Primary** campaign revenue drop?",
     "Why did main campaign revenue drop?",
     "_MID_CAPITALS misses a name in markdown bold: **Primary** becomes 'main'"),
    ("brand_is_vocabulary", "Why did Target revenue drop?", "Why did target revenue drop?",
     "_names_kept keeps a capitalised vocabulary word: the retailer Target equals the goal "
     "'target' on the exact path"),
    ("brand_is_vocabulary_2", "Why are revenues above target?",
     "Why are revenues above Target?",
     "same_names: above (our) target vs above (the competitor) Target, exact hit"),
    ("brand_is_time_word", "Why did traffic on Next.com drop?",
     "Why did traffic on next.com drop?",
     "_names_kept keeps 'Next' (a time word) as a common word: the retailer next.com vs next"),
    ("title_case_real_name", "Why Did Principal Campaign Revenue Drop?",
     "Why Did Main Campaign Revenue Drop?",
     "title case switches the name rule off: the client Principal becomes 'main'"),
    ("comma_list_vs_compound", "Why did brand, search revenue drop?",
     "Why did brand search revenue drop?",
     "commas are dropped after number words: brand and search revenue reads as brand-search"),
    ("ratio_vs_decimal_comma", "Why did ROAS drop to 1:3?", "Why did ROAS drop to 1,3?",
     "':' is ignored and ',' dropped: a 1:3 ratio reads as 1,3 (1.3 with a decimal comma)"),
    ("ratio_pairs", "Why did CPA move from 1:2 to 2:1?", "Why did CPA move from 1,2 to 2,1?",
     "':' and ',' both vanish: ratios read as decimal-comma numbers"),
    ("time_vs_list", "Why did signups spike at 10:30?", "Why did signups spike at 10, 30?",
     "':' ignored: 10:30 (one time) reads as 10 and 30"),
    ("italian_why_vs_because", "Perché le vendite sono calate?",
     "Perché le vendite sono calate.",
     "exact_text strips the final '?': Italian 'Perché' is 'why' with it, 'because' without"),
    ("italian_why_vs_because_cased", "Perché le vendite sono calate?",
     "perché le vendite sono calate.",
     "exact_text strips the final '?' (and the case of the first letter is free)"),
    ("greek_question_mark", "Γιατί μειώθηκαν τα έσοδα;", "Γιατί μειώθηκαν τα έσοδα.",
     "exact_text strips ';' (the Greek question mark): 'why ...?' equals 'because ...'"),
    ("abbreviation_sentence_start", "Warum kaufen Kunden wie z. B. Sie weniger?",
     "Warum kaufen Kunden wie z. B. sie weniger?",
     "_SENTENCE_START takes the '.' of 'z. B.' as a sentence end: Sie (you) equals sie (they)"),
    ("url_path_case", "Why did traffic drop on example.com/Sale?",
     "Why did traffic drop on example.com/sale?",
     "same_names lower-cases a URL path: /Sale and /sale are different pages"),
    ("possessive_dropped", "Who is Google's partner?", "Who is Google partner?",
     "_CONTRACTIONS drops \"'s\": Google's partner equals a Google Partner (the programme)"),
    ("owner_moved", "Why is our CPA above the benchmark?",
     "Why is the CPA above our benchmark?",
     "'our' and 'the' are stop words: whose CPA and whose benchmark is lost"),
    ("measure_plural_shares", "Why did shares drop?", "Why did share drop?",
     "plurality skips measures: shares (social shares) equals share (market share)"),
    ("what_made_which", "What made the most revenue?", "What caused the most revenue?",
     "PHRASES 'what made' -> why: 'what made the most revenue' asks which item earned most"),
    ("k_suffix_product", "Why did 4K TV sales drop?", "Why did 4000 TV sales drop?",
     "number_token reads the '4K' resolution as 4000"),
    ("possessive_owner", "Why did the CEO's campaign drop?", "Why did the CEO campaign drop?",
     "_CONTRACTIONS drops \"'s\": the campaign the CEO runs equals a campaign aimed at CEOs"),
    ("possessive_owner_2", "Why did the agency's campaign drop?",
     "Why did the agency campaign drop?",
     "_CONTRACTIONS drops \"'s\": the agency's own campaign equals a campaign about agencies"),
    ("uncased_foreign_pronoun", "wie können sie den umsatz steigern",
     "Wie können Sie den Umsatz steigern",
     "by the stated rule (uncased text compared by words) but no evidence: 'sie' (they) is "
     "served the answer for 'Sie' (you)"),
]  # fmt: skip

# Near misses that held when written: regression guards.
_HELD: list[tuple[str, str, str]] = [
    ("quantifier_all_some", "Why did all campaigns drop?", "Why did some campaigns drop?"),
    ("quantifier_every_any", "Why did every campaign drop?", "Why did any campaign drop?"),
    ("quantifier_any_a", "Did any campaign exceed budget?", "Did a campaign exceed budget?"),
    ("quantifier_each_the", "Did each campaign exceed budget?",
     "Did the campaign exceed budget?"),
    ("quantifier_none_one", "Why did none of the campaigns convert?",
     "Why did one of the campaigns convert?"),
    ("than_average_vs_last_year", "Why is CPA higher than average?",
     "Why is CPA higher than last year?"),
    ("than_google_vs_average", "Why is CPA higher than Google?",
     "Why is CPA higher than average?"),
    ("group_order", "Why is CPA higher for mobile than desktop?",
     "Why is CPA higher for desktop than mobile?"),
    ("possessive_roles", "Why is Google's CPA higher than ours?",
     "Why is our CPA higher than Google's?"),
    ("if_vs_when", "What happens to revenue if we cut spend?",
     "What happens to revenue when we cut spend?"),
    ("counterfactual", "What happens to revenue if we cut spend by 10%?",
     "What happens to revenue if we had cut spend by 10%?"),
    ("unless_vs_if", "What happens unless we cut spend?", "What happens if we cut spend?"),
    ("would_vs_will", "What would revenue be if we cut spend?",
     "What will revenue be if we cut spend?"),
    ("date_order", "Why did revenue drop on 03/04?", "Why did revenue drop on 04/03?"),
    ("date_digit", "Why did revenue drop on Dec 3?", "Why did revenue drop on Dec 30?"),
    ("time_digits", "Why did revenue drop at 9:05?", "Why did revenue drop at 9:50?"),
    ("between_vs_to_percent", "Which campaigns had between 5 and 10 conversions?",
     "Which campaigns had 5 to 10% conversions?"),
    ("more_vs_most", "Which campaigns got more conversions?",
     "Which campaigns got the most conversions?"),
    ("more_vs_much_more", "Which campaigns got more conversions?",
     "Which campaigns got much more conversions?"),
    ("contraction_negation", "Why isn't ROAS improving?", "Why is ROAS improving?"),
    ("passive_roles", "Which campaign was outperformed by email?",
     "Which campaign outperformed email?"),
    ("passive_irregular", "Which customers were lost last month?",
     "Which customers lost last month?"),
    ("passive_paid", "Which affiliates were paid?", "Which affiliates paid?"),
    ("sale_vs_sales", "Why did sale revenue drop?", "Why did sales revenue drop?"),
    ("sale_vs_sales_start", "Sale revenue dropped, why?", "Sales revenue dropped, why?"),
    ("sale_in_url", "Why did traffic to example.com/sale drop?",
     "Why did traffic to example.com/sales drop?"),
    ("measure_customer_count", "Which customer spent the most?",
     "Which customers spent the most?"),
    ("measure_conversion_count", "Which conversion came from email?",
     "Which conversions came from email?"),
    ("not_two_verbs", "Why did revenue not drop when spend rose?",
     "Why did revenue drop when spend did not rise?"),
    ("not_only", "Why did revenue not drop only on mobile?",
     "Why did revenue drop only not on mobile?"),
    ("only_moved", "Why did email grow only in May?", "Why did only email grow in May?"),
    ("and_did_vs_does", "Why did revenue drop, and did spend rise?",
     "Why did revenue drop, and does spend rise?"),
    ("second_clause_modal", "Why did revenue drop by 10% and why did spend rise?",
     "Why did revenue drop by 10% and why will spend rise?"),
    ("embedded_negation", "Why did revenue drop? Was it spend?",
     "Why did revenue drop? Was it not spend?"),
    ("time_zone", "Why did signups spike at 9 PM ET?", "Why did signups spike at 9 PM PT?"),
    ("utc_offset_sign", "Why did signups spike at 9am UTC-5?",
     "Why did signups spike at 9am UTC+5?"),
    ("currency_canadian", "How much revenue did we make in Canadian dollars?",
     "How much revenue did we make in dollars?"),
    ("currency_hk", "Why did CPA rise above HK$50?", "Why did CPA rise above $50?"),
    ("currency_cents", "Why did CPA rise above 50c?", "Why did CPA rise above $50?"),
    ("currency_usd_eur", "Why did CPA exceed $50?", "Why did CPA exceed 50 euros?"),
    ("currency_dollars_pounds", "Why did revenue drop by 10 dollars?",
     "Why did revenue drop by 10 pounds?"),
    ("decimal_comma_vs_integer", "Why did ROAS drop by 1,5?", "Why did ROAS drop by 15?"),
    ("number_words_and", "Which campaigns had one hundred and five clicks?",
     "Which campaigns had 100 and 5 clicks?"),
    ("hundreds", "Why did hundreds of users churn?", "Why did 100 users churn?"),
    ("double_triple", "Why did spend double?", "Why did spend triple?"),
    ("percentage_points", "Why did CTR drop 2 percentage points?",
     "Why did CTR drop 2 percent?"),
    ("times_higher", "Why is CPA 2x higher?", "Why is CPA 2 higher?"),
    ("month_vs_modal", "Why did revenue drop in May?", "Why may revenue drop?"),
    ("time_word_plural", "Why did revenue drop on Mondays?", "Why did revenue drop on Monday?"),
    ("article_indefinite", "Which is a top campaign?", "Which is the top campaign?"),
    ("identifier_letter", "Why did campaign_a drop?", "Why did campaign drop?"),
    ("html_markup", "Why did revenue <b>drop</b>?", "Why did revenue drop?"),
    ("code_operator", "Why is `cpa > 50` true?", "Why is `cpa >= 50` true?"),
    ("emoji_direction", "Why did revenue drop 📉?", "Why did revenue drop 📈?"),
    ("rtl_mark", "Why did revenue drop?\u200f", "Why did revenue drop?"),
    ("rtl_override", "Why did revenue \u202epord\u202c?", "Why did revenue drop?"),
    ("cjk_fullwidth", "为什么收入下降了？", "为什么收入下降了。"),
    ("arabic_question_mark", "لماذا انخفضت الإيرادات؟", "لماذا انخفضت الإيرادات"),
    ("transliteration", "Why did revenue from Köln drop?", "Why did revenue from Koln drop?"),
    ("brand_not_vocabulary", "Why did Apple revenue drop?", "Why did apple revenue drop?"),
    ("name_synonym_mid", "Why did Chief revenue drop?", "Why did main revenue drop?"),
    ("statement_vs_question", "Was revenue down?", "Revenue was down."),
    ("hypothetical_tense", "What if revenue drops?", "What if revenue dropped?"),
    ("iso_date_order", "Why did revenue drop on 2024-03-04?",
     "Why did revenue drop on 2024-04-03?"),
    ("rate_unit", "Why did spend rise by $10 per day?", "Why did spend rise by $10 per week?"),
    ("since_vs_until", "Why did revenue drop since Monday?",
     "Why did revenue drop until Monday?"),
    ("hedge_barely", "Why did revenue barely drop?", "Why did revenue drop?"),
    ("hedge_almost", "Why did revenue almost drop?", "Why did revenue drop?"),
    ("range_dash_vs_digits", "Why did revenue drop by 5-10%?", "Why did revenue drop by 510%?"),
    ("range_to_vs_or", "Why did revenue drop by 5 to 10%?",
     "Why did revenue drop by 5 or 10%?"),
    ("times_direction", "Why is ROAS 2 times higher?", "Why is ROAS 2 times lower?"),
    ("amount_attached", "Why is CPA $5 above target?", "Why is CPA above $5 target?"),
    ("percent_of_vs_to", "Why did revenue drop 10% to $50?",
     "Why did revenue drop to 10% of $50?"),
    ("exclusion_swapped", "Why did revenue drop in EMEA excluding UK?",
     "Why did revenue drop in UK excluding EMEA?"),
    ("acquire_roles", "Which campaign did Google acquire?", "Which campaign acquired Google?"),
    ("quantifier_all_any_plural", "Why did revenues drop in all regions?",
     "Why did revenue drop in any region?"),
]  # fmt: skip

# True paraphrases of kinds the promise supports: each must hit.
_PARAPHRASES: list[tuple[str, str, str]] = [
    ("synonym", "Why did revenue drop last week?", "Why did revenue decline last week?"),
    ("inflection_perfect", "Why did revenue fall last week?", "Why has revenue dropped last week?"),
    ("word_order", "What caused the drop in revenue on mobile?", "Why did revenue drop on mobile?"),
    ("number_words", "Why did we get 3 signups?", "Why did we get three signups?"),
    ("hyphen_number_words", "Which campaigns had twenty-five conversions?",
     "Which campaigns had 25 conversions?"),
    ("scale_words", "Which campaigns had one hundred clicks?", "Which campaigns had 100 clicks?"),
    ("currency_spelling", "Why did CPA rise above $50?", "Why did CPA rise above 50 dollars?"),
    ("thousands", "Why did CPA rise above $5,000?", "Why did CPA rise above $5k?"),
    ("lead_in", "Can you tell me why ROAS dropped?", "Why did ROAS drop?"),
    ("comparator_synonym", "Why is our CPA lower than usual?", "Why is our CPA below normal?"),
    ("phrase_verb", "Why did revenue go down in Q3?", "Why did revenue decrease in Q3?"),
    ("how_come", "How come traffic dropped yesterday?", "Why did traffic drop yesterday?"),
    ("exclusion_phrase", "Why did spend increase, excluding brand campaigns?",
     "Why did spend increase, not including brand campaigns?"),
    ("extreme_synonym", "What is the main cause of the revenue drop?",
     "What is the primary cause of the revenue drop?"),
    ("versus_phrase", "Why did revenue drop vs last week?",
     "Why did revenue drop compared to last week?"),
    ("metric_phrase", "Why did the click through rate drop?", "Why did CTR drop?"),
    ("contraction", "Why didn't conversions rise?", "Why did conversions not rise?"),
    ("key_driver", "Why is the key driver of growth email?",
     "Why is the main driver of growth email?"),
    ("case_only", "Why did revenue drop?", "why did revenue drop"),
    ("measure_plural", "Why did revenues drop?", "Why did revenue drop?"),
    ("measure_plural_costs", "Why did costs rise last month?", "Why did cost rise last month?"),
    ("number_words_days", "Why did revenue drop in the last 7 days?",
     "Why did revenue drop in the last seven days?"),
    ("percent_words", "Why did spend increase by ten percent?",
     "Why did spend increase by 10%?"),
    ("phrase_verb_metric", "Why did the conversion rate decrease?",
     "Why did conversion rate go down?"),
    ("cpc_phrase", "Why did CPC increase after we paused Google?",
     "Why did cost per click rise after we paused Google?"),
    # Missed when written, fixed in matcher round six: "2nd" was split into 2 and "nd"; "fb"
    # became "facebook" only after the phrase "facebook ads" was read; "one hundred and five
    # hundred" was read as 10500.
    ("ordinal_digits", "Why did signups drop in the second week?",
     "Why did signups drop in the 2nd week?"),
    ("abbreviation", "Why did Facebook ads revenue drop?", "Why did FB ads revenue drop?"),
    ("number_words_range", "Which campaigns had between one hundred and five hundred clicks?",
     "Which campaigns had between 100 and 500 clicks?"),
]  # fmt: skip

# Supported kinds (numbers in words, the lexicon's own ordinals and abbreviations) that missed.
_PARAPHRASES_MISSED: list[tuple[str, str, str, str]] = [
    ("modifier_order", "Why did mobile paid search revenue drop?",
     "Why did paid search mobile revenue drop?",
     "entities are compared in order: two segment modifiers swapped read as different entities"),
    ("modifier_order_prepositions", "Why did revenue on mobile from email drop?",
     "Why did revenue from email on mobile drop?",
     "entities are compared in order: 'on mobile from email' / 'from email on mobile' differ"),
]  # fmt: skip

NEAR_MISSES = [pytest.param(a, b, id=c) for c, a, b, _ in _FIXED] + [
    pytest.param(a, b, id=c) for c, a, b in _HELD
]
PARAPHRASES = [pytest.param(a, b, id=c) for c, a, b in _PARAPHRASES] + [
    pytest.param(a, b, id=c, marks=_broke(r)) for c, a, b, r in _PARAPHRASES_MISSED
]


@pytest.mark.parametrize(("stored", "asked"), NEAR_MISSES)
def test_near_miss_misses(stored: str, asked: str) -> None:
    """Two questions that need different answers: no hit either way."""
    forward, backward = match(asked, stored), match(stored, asked)
    assert not forward.hit, forward
    assert not backward.hit, backward


@pytest.mark.parametrize(("stored", "asked"), PARAPHRASES)
def test_supported_paraphrase_hits(stored: str, asked: str) -> None:
    """A paraphrase of a supported kind hits, and says it is one."""
    decision = match(asked, stored)
    assert decision.hit, decision
    assert decision.agreement["relation"] in {"exact", "paraphrase"}


# ------------------------------------------------------------------------------------------
# Through the HTTP API: the first question answered and stored, the second asked.

_HTTP_FIXED = {
    "weight_vs_currency", "rose_to_vs_capped", "version_number", "range_vs_list", "en_dash_minus",
    "second_clause_tense", "quoted_name_synonym", "brand_is_vocabulary",
    "italian_why_vs_because", "abbreviation_sentence_start", "measure_plural_shares",
}  # fmt: skip
_HTTP_HELD = {"sale_vs_sales", "quantifier_all_some", "than_average_vs_last_year"}
_HTTP_PARAPHRASES = {"number_words", "currency_spelling", "word_order"}


@pytest.fixture(scope="module")
async def rt_tenant(owner_pool: asyncpg.Pool) -> AsyncIterator[CreatedTenant]:
    """A tenant of its own with a little demo data (deleted afterwards)."""
    async with demo_tenant(owner_pool, "rt11", events=2_000, seed=11) as tenant:
        yield tenant


@pytest.fixture
def openai_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """An OpenAI key for litellm (every call is mocked with respx)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


def _http_cases() -> list[Any]:
    """The HTTP sample: (n, stored, asked, expected cache outcome), with the break marks."""
    cases: list[Any] = []
    for c, a, b, _ in _FIXED:
        if c in _HTTP_FIXED:
            cases.append(pytest.param(a, b, "miss", id=f"miss-{c}"))
    cases += [pytest.param(a, b, "miss", id=f"miss-{c}") for c, a, b in _HELD if c in _HTTP_HELD]
    cases += [
        pytest.param(a, b, "hit", id=f"hit-{c}")
        for c, a, b in _PARAPHRASES
        if c in _HTTP_PARAPHRASES
    ]
    return cases


_HTTP_CASES = _http_cases()


@pytest.mark.usefixtures("openai_key")
@pytest.mark.parametrize(("stored", "asked", "want"), _HTTP_CASES)
async def test_http_pair(
    stored: str,
    asked: str,
    want: str,
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    rt_tenant: CreatedTenant,
) -> None:
    """POST the stored question (answered by the model), then the asked one in the same scope."""
    n = [p.values[:2] for p in _HTTP_CASES].index((stored, asked))
    body = {"subject": "channel_performance", "period": days(80, n + 1), "question": stored}
    fake = FakeModel()
    with respx.mock(assert_all_called=False) as mock:
        mock.post(OPENAI_URL).mock(side_effect=fake)
        async with serve(model_settings(test_settings), app_pool) as (_, client):
            first = await client.post("/v1/explanations", json=body, headers=auth(rt_tenant))
            assert first.status_code == 200 and first.json()["cache"] == "miss", first.text
            second = await client.post(
                "/v1/explanations", json={**body, "question": asked}, headers=auth(rt_tenant)
            )
    assert second.status_code == 200, second.text
    got = second.json()
    assert got["cache"] == want, got.get("cache_match")
    if want == "hit":
        assert got["cache_match"]["question"] == stored
        assert got["cache_match"]["relation"] == "paraphrase"
        assert fake.calls == 1
    else:
        assert got["cache_match"] is None
        assert fake.calls == 2
