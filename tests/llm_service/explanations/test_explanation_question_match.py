"""POST /v1/explanations: a near miss of every class misses, each supported paraphrase hits.

Each pair gets a scope of its own (its own absolute period), so the only thing that can make the
second request a hit is the question: the first question is answered by the (mocked) model and
stored, the second is asked, and the response says whether and why the cached answer applies.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
import respx

from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant
from tests.llm_service.explanations.explanation_helpers import (
    OPENAI_URL,
    FakeModel,
    auth,
    days,
    model_settings,
    serve,
)

pytestmark = pytest.mark.usefixtures("openai_key")

NEAR_MISSES: list[tuple[str, str, str]] = [
    ("word_order", "Why is Facebook outperforming Google on ROAS?",
     "Why is Google outperforming Facebook on ROAS?"),
    ("comparator", "Which campaigns have a CPA above $50?",
     "Which campaigns have a CPA below $50?"),
    ("bound", "Which campaigns have a CPA above $50?",
     "Which campaigns have a CPA of at least $50?"),
    ("inclusion", "What was revenue excluding refunds?", "What was revenue including refunds?"),
    ("intent", "What share of revenue came from paid social?",
     "How much revenue came from paid social?"),
    ("prefix", "How are brand campaigns doing?", "How are non-brand campaigns doing?"),
    ("direction", "Why did revenue drop?", "Why did revenue rise?"),
    ("negation", "Why did revenue drop?", "Why didn't revenue drop?"),
    ("extreme", "Which channel contributed most to the decline?",
     "Which channel contributed least to the decline?"),
    ("period", "Why did signups fall yesterday?", "Why did signups fall today?"),
    ("number", "What are the top 3 campaigns?", "What are the top five campaigns?"),
    ("unit", "Did revenue drop by 10%?", "Did revenue drop by $10?"),
    ("modal", "Why did revenue drop?", "Why would revenue drop?"),
    ("entity", "Why did Facebook revenue drop?", "Why did Google revenue drop?"),
    ("versus", "How does Facebook compare to Google?", "How does Facebook compare to TikTok?"),
    ("spanish_reversal", "¿Por qué bajaron las ventas?", "¿Por qué subieron las ventas?"),
    ("spanish_negation", "¿Por qué bajaron los ingresos?", "¿Por qué no bajaron los ingresos?"),
    ("german_reversal", "Warum ist der Umsatz gesunken?", "Warum ist der Umsatz gestiegen?"),
    ("german_extreme", "Welcher Kanal hat am meisten zum Rückgang beigetragen?",
     "Welcher Kanal hat am wenigsten zum Rückgang beigetragen?"),
    ("spanish_paraphrase", "¿Por qué bajaron las ventas?", "¿Por qué cayeron las ventas?"),
    ("translation", "¿Por qué bajaron las ventas?", "Why did sales drop?"),
    ("plurality", "Which campaign performed best?", "Which campaigns performed best?"),
    # Typed without case, "sie" may be "Sie": no evidence it is the cased question, so a miss
    # (round five: "wie können sie ..." was served "Wie können Sie ...").
    ("uncased_language", "Warum ist der Umsatz gesunken?", "warum ist der umsatz gesunken?"),
    ("italian_mark", "Perché le vendite sono calate?", "Perché le vendite sono calate."),
]  # fmt: skip
PARAPHRASES: list[tuple[str, str, str]] = [
    ("synonym", "Why were conversions lower than usual?", "Why were conversions below normal?"),
    ("synonym", "What is the main cause of the drop?", "What is the primary cause of the drop?"),
    ("inflection", "Why did sessions drop?", "Why did session drop?"),
    ("stop_word", "Break down the revenue change by channel",
     "Break down the revenue change by channel please"),
    ("number_words", "What are 3 habits of top campaigns?",
     "What are three habits of top campaigns?"),
    ("contraction", "What is the ROAS of email?", "What's the ROAS of email?"),
    ("lead_in", "Why did revenue drop?", "Can you tell me why revenue dropped?"),
    ("typo", "Why did revenue drop?", "Why did revnue drop?"),
    ("word_order", "Why did revenue drop?", "What caused the decline in revenue?"),
    ("exact", "¿Por qué bajaron las ventas?", "  ¿por qué bajaron las ventas "),
    ("exact", "Warum ist der Umsatz gesunken?", "warum ist der Umsatz gesunken"),
]  # fmt: skip


def _body(question: str, n: int, start_days_ago: int = 85) -> dict[str, Any]:
    """A request whose scope is its own: a period of n + 1 days (no other pair has it)."""
    period = days(start_days_ago, n + 1)
    return {"subject": "channel_performance", "period": period, "question": question}


@pytest.mark.parametrize("path", ["transaction", "one statement"])
async def test_each_near_miss_misses_and_each_paraphrase_hits(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant, path: str
) -> None:
    # "one statement": the asked question was asked before in another scope, so its vector is
    # held in-process and the paraphrase's nearest rows are read by the one-statement hit.
    start = 85 if path == "transaction" else 130  # each run's scopes its own (one database)
    fake = FakeModel()
    pairs = [(c, a, b, "miss") for c, a, b in NEAR_MISSES]
    pairs += [(c, a, b, "hit") for c, a, b in PARAPHRASES]
    outcomes: dict[str, tuple[str, dict[str, Any] | None]] = {}
    one_statement: dict[str, bool] = {}
    with respx.mock(assert_all_called=False) as mock:
        mock.post(OPENAI_URL).mock(side_effect=fake)
        async with serve(model_settings(test_settings), app_pool) as (_, client):
            for n, (cls, stored, asked, _) in enumerate(pairs):
                first = await client.post(
                    "/v1/explanations", json=_body(stored, n, start), headers=auth(demo_tenant)
                )
                assert first.status_code == 200 and first.json()["cache"] == "miss", first.text
                if path == "one statement":
                    elsewhere = _body(asked, n, 175)
                    warm = await client.post(
                        "/v1/explanations", json=elsewhere, headers=auth(demo_tenant)
                    )
                    assert warm.status_code == 200 and warm.json()["cache"] == "miss", warm.text
                second = await client.post(
                    "/v1/explanations", json=_body(asked, n, start), headers=auth(demo_tenant)
                )
                assert second.status_code == 200, second.text
                body = second.json()
                outcomes[f"{n}:{cls}"] = (body["cache"], body["cache_match"])
                one_statement[f"{n}:{cls}"] = "auth;dur=" not in second.headers["server-timing"]
    expected = {f"{n}:{p[0]}": p[3] for n, p in enumerate(pairs)}
    assert {k: v[0] for k, v in outcomes.items()} == expected
    # A hit says which stored question it served and why.
    for n, (cls, stored, _, want) in enumerate(pairs):
        _, matched = outcomes[f"{n}:{cls}"]
        if want == "hit":
            assert matched is not None and matched["question"] == stored
            relation = "exact" if cls == "exact" else "paraphrase"
            assert matched["relation"] == relation
            if relation == "paraphrase":
                assert cls in matched["agreement"]["relations"]
            # Which path served it: every hit is one statement once the vector is held.
            assert one_statement[f"{n}:{cls}"] == (path == "one statement" or cls == "exact")
        else:
            assert matched is None
    # Every miss cost a model call, every hit none (and each warm-up request missed).
    warm_ups = len(pairs) if path == "one statement" else 0
    assert fake.calls == len(pairs) + len(NEAR_MISSES) + warm_ups


async def test_another_language_hits_only_itself(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    stored = "¿Qué canal contribuyó más a la caída?"
    asks = {
        "¿qué canal contribuyó más a la caída": "hit",
        "¿Qué canal contribuyó menos a la caída?": "miss",
        "¿Cuál canal contribuyó más a la caída?": "miss",
        "Which channel contributed most to the decline?": "miss",
    }
    fake = FakeModel()
    with respx.mock(assert_all_called=False) as mock:
        mock.post(OPENAI_URL).mock(side_effect=fake)
        async with serve(model_settings(test_settings), app_pool) as (_, client):
            period = days(60, 3)
            body = {"subject": "channel_performance", "period": period, "question": stored}
            first = await client.post("/v1/explanations", json=body, headers=auth(demo_tenant))
            assert first.json()["cache"] == "miss"
            got = {}
            for asked in asks:
                response = await client.post(
                    "/v1/explanations",
                    json={**body, "question": asked},
                    headers=auth(demo_tenant),
                )
                got[asked] = response.json()["cache"]
                if got[asked] == "miss":
                    # Each miss was answered and stored under its own text: ask again, it hits.
                    again = await client.post(
                        "/v1/explanations",
                        json={**body, "question": asked},
                        headers=auth(demo_tenant),
                    )
                    assert again.json()["cache_match"]["relation"] == "exact"
    assert got == asks
