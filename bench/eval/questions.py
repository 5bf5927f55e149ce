"""The evaluation's questions: planted anomalies in several wordings, and ordinary facts.

Dates are derived from `today` and the anomalies `demo-data` planted (they move with the day
the data was generated), and every expected figure comes from `Facts` (independent SQL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from bench.eval.expected import Facts


@dataclass(frozen=True)
class EvalQuestion:
    """One question and what a correct answer contains: an entity and a figure."""

    kind: str  # the planted anomaly it is about, or "fact"
    text: str
    entities: tuple[str, ...]  # any of these (case-insensitive); empty: none required
    figure: float
    tolerance: float
    what: str  # what the figure is, for the results table
    must_say: tuple[str, ...] = field(default_factory=tuple)  # any of these words too


def _usd(cents: int) -> float:
    return round(cents / 100, 2)


def _pct(current: int, previous: int) -> float:
    return round(abs(current - previous) * 100 / previous, 1) if previous else 0.0


def _words(day: date) -> str:
    return f"{day.day} {day:%B}"


def _money_tol(value: float) -> float:
    return max(0.01, abs(value) * 0.001)


async def build(
    facts: Facts, today: date, anomalies: dict[str, dict[str, Any]]
) -> list[EvalQuestion]:
    """Every question with its expected entity and figure."""
    tomorrow = today + timedelta(days=1)
    monday = today - timedelta(days=today.weekday())
    lw = monday - timedelta(days=7)
    qs: list[EvalQuestion] = []

    def last(days: int) -> tuple[date, date]:
        return tomorrow - timedelta(days=days), tomorrow

    # -- the revenue drop: facebook_paid, last full week ------------------------------------------
    drop = anomalies["revenue_drop"]
    ch = drop["channel"]
    d0 = date.fromisoformat(drop["start"])
    cur = await facts.events([ch], d0, d0 + timedelta(days=7), "revenue")
    prev = await facts.events([ch], d0 - timedelta(days=7), d0, "revenue")
    fig, ents = _pct(cur, prev), (ch, "facebook ads")
    for text in (
        f"Why did {ch} revenue drop last week?",
        "What happened to Facebook Ads sales last week compared with the week before?",
        f"Did paid social revenue fall in the week of {_words(d0)}?",
        f"How did facebook revenue change between {d0} and {d0 + timedelta(days=7)}?",
        "Which channel lost the most revenue last week?",
        "Was there a revenue drop for meta ads one week ago?",
    ):
        qs.append(EvalQuestion("revenue_drop", text, ents, fig, 0.15, "revenue change % w/w"))

    # -- the dead-event spike: shopify_webhook on two days ---------------------------------------
    spike = anomalies["dead_event_spike"]
    src, s0 = spike["source"], date.fromisoformat(spike["start"])
    s_monday = s0 - timedelta(days=s0.weekday())
    weeks_ago = (monday - s_monday).days // 7
    cases = [
        (f"Why were so many events failing ingestion {weeks_ago} weeks ago?",
         (s_monday, s_monday + timedelta(days=7))),
        ("Which source flooded the dead-letter queue in the last 30 days?", last(30)),
        (f"How many dead events did we get on {s0}?", (s0, s0 + timedelta(days=1))),
        (f"Any webhook errors piling up in the week of {s_monday}?",
         (s_monday, s_monday + timedelta(days=7))),
        (f"Were events lost in the pipeline on {s0:%B} {s0.day}?", (s0, s0 + timedelta(days=1))),
    ]  # fmt: skip
    for text, (a, b) in cases:
        n = (await facts.dead(a, b)).get(src, 0)
        qs.append(EvalQuestion("dead_event_spike", text, (src,), n, 0.5, f"{src} dead events"))

    # -- the refund burst: affiliate, one week ----------------------------------------------------
    burst = anomalies["refund_burst"]
    rc, r0 = burst["channel"], date.fromisoformat(burst["start"])
    r_ago = (monday - r0).days // 7
    cases = [
        (f"Why were so many affiliate orders refunded in the week of {_words(r0)}?",
         (r0, r0 + timedelta(days=7))),
        ("Which channel had the most refunds and chargebacks in the last 60 days?", last(60)),
        (f"Were there unusual chargebacks for Affiliate Partners {r_ago} weeks ago?",
         (r0, r0 + timedelta(days=7))),
        (f"Refunds for affiliates between {r0} and {r0 + timedelta(days=7)}?",
         (r0, r0 + timedelta(days=7))),
        (f"How many affiliate purchases were reversed in the week starting {r0}?",
         (r0, r0 + timedelta(days=7))),
    ]  # fmt: skip
    for text, (a, b) in cases:
        n = (await facts.reversals(a, b)).get(rc, 0)
        qs.append(EvalQuestion("refund_burst", text, (rc,), n, 0.5, f"{rc} refunds+chargebacks"))

    # -- the mis-tagging: instagram_paid recorded as organic_social ------------------------------
    fix = anomalies["channel_corrections"]
    dst, m0 = fix["channel"], date.fromisoformat(fix["start"])
    m_ago = (monday - m0).days // 7
    cases = [
        (f"Were any instagram_paid events mis-tagged as organic social in the week of "
         f"{_words(m0)}?", (m0, m0 + timedelta(days=7))),
        (f"Which channel corrections were made for events between {m0} and "
         f"{m0 + timedelta(days=7)}?", (m0, m0 + timedelta(days=7))),
        (f"Why did organic social look inflated {m_ago} weeks ago?", (m0, m0 + timedelta(days=7))),
        (f"Show relabelled channel assignments for Instagram Ads in the week starting {m0}.",
         (m0, m0 + timedelta(days=7))),
        ("Did the UTM audit bot reassign any traffic in the last 90 days?", last(90)),
    ]  # fmt: skip
    for text, (a, b) in cases:
        n = await facts.corrected_events("organic_social", dst, a, b)
        qs.append(EvalQuestion("channel_corrections", text, (dst,), n, 0.5, "events corrected"))

    # -- ordinary facts -------------------------------------------------------------------------
    a30, b30 = last(30)
    attributed = await facts.attributed(a30, b30)
    top = max(attributed, key=lambda c: attributed[c])
    qs.append(EvalQuestion("fact", "Which channel brought the most attributed revenue in the "
                           "last 30 days?", (top,), _usd(attributed[top]),
                           _money_tol(_usd(attributed[top])), "attributed USD"))  # fmt: skip
    share = round(attributed.get("facebook_paid", 0) * 100 / sum(attributed.values()), 1)
    text = "What share of attributed revenue did facebook_paid have in the last 30 days?"
    qs.append(EvalQuestion("fact", text, ("facebook_paid",), share, 0.15, "share %"))
    first_of_month = today.replace(day=1)
    lm0 = (first_of_month - timedelta(days=1)).replace(day=1)

    async def fact(text: str, chans: list[str] | None, window: tuple[date, date], what: str,
                   ents: tuple[str, ...]) -> None:  # fmt: skip
        value = await facts.events(chans, window[0], window[1], what)
        if what == "revenue":
            v = _usd(value)
            qs.append(EvalQuestion("fact", text, ents, v, _money_tol(v), f"{what} USD"))
        else:
            qs.append(EvalQuestion("fact", text, ents, value, 0.5, what))

    week = (lw, lw + timedelta(days=7))
    yesterday = (today - timedelta(days=1), today)
    await fact(
        "How much revenue did google_search_paid generate last month?",
        ["google_search_paid"],
        (lm0, first_of_month),
        "revenue",
        ("google_search_paid",),
    )
    await fact(
        "How many conversions did Email have in the last 14 days?",
        ["email"],
        last(14),
        "conversions",
        ("email",),
    )
    await fact("What was total revenue across all channels last week?", None, week, "revenue", ())
    await fact(
        "How much did paid search bring in over the last 28 days?",
        await facts.channels(family="paid_search"),
        last(28),
        "revenue",
        ("paid search",),
    )
    await fact(
        "How much revenue came from organic channels in the last 30 days?",
        await facts.channels(paid=False),
        last(30),
        "revenue",
        ("organic",),
    )
    await fact(
        "How did tiktok_paid conversions change last week?",
        ["tiktok_paid"],
        week,
        "conversions",
        ("tiktok_paid",),
    )
    await fact(
        "How many events did direct traffic record last week?",
        ["direct"],
        week,
        "events",
        ("direct",),
    )
    await fact(
        "Instagram Ads revenue yesterday vs the same day last week",
        ["instagram_paid"],
        yesterday,
        "revenue",
        ("instagram_paid",),
    )
    await fact(
        "How much revenue did Google Shopping make in the last 7 days?",
        ["google_shopping"],
        last(7),
        "revenue",
        ("google_shopping",),
    )
    await fact(
        "Total conversions for paid social in the last 30 days?",
        await facts.channels(family="paid_social"),
        last(30),
        "conversions",
        ("paid social",),
    )
    await fact(
        "How much revenue did bing bring last week?",
        ["bing_search_paid"],
        week,
        "revenue",
        ("bing_search_paid",),
    )
    await fact(
        "What did linkedin_paid earn in the last 60 days?",
        ["linkedin_paid"],
        last(60),
        "revenue",
        ("linkedin_paid",),
    )
    await fact(
        "How many purchases and conversions did affiliate have in the last 30 days?",
        ["affiliate"],
        last(30),
        "conversions",
        ("affiliate",),
    )
    await fact(
        "Compare YouTube revenue in the last 14 days with the 14 days before",
        ["youtube_video"],
        last(14),
        "revenue",
        ("youtube_video",),
    )
    await fact(
        "How much revenue did SMS generate in the last 30 days?",
        ["sms"],
        last(30),
        "revenue",
        ("sms",),
    )
    await fact("How much revenue did we make yesterday?", None, yesterday, "revenue", ())

    total_cur = await facts.events(None, lw, lw + timedelta(days=7), "revenue")
    total_prev = await facts.events(None, lw - timedelta(days=7), lw, "revenue")
    qs.append(EvalQuestion("fact", "How did total revenue change week over week last week?", (),
                           _pct(total_cur, total_prev), 0.15, "revenue change % w/w"))  # fmt: skip
    dp_cur = await facts.events(["display_programmatic"], lw, lw + timedelta(days=7), "revenue")
    dp_prev = await facts.events(["display_programmatic"], lw - timedelta(days=7), lw, "revenue")
    qs.append(EvalQuestion("fact", "Did display_programmatic revenue rise or fall last week?",
                           ("display_programmatic",), _pct(dp_cur, dp_prev), 0.15,
                           "revenue change % w/w"))  # fmt: skip
    paid = await facts.channels(paid=True)
    lm = (lm0, first_of_month)
    conv = {c: await facts.events([c], *lm, "conversions") for c in paid}
    best = max(conv, key=lambda c: conv[c])
    qs.append(EvalQuestion("fact", "Which paid channel had the most conversions last month?",
                           (best,), conv[best], 0.5, "conversions"))  # fmt: skip
    ev7 = await facts.by_channel(*last(7), "events")
    busiest = max(ev7, key=lambda c: ev7[c])
    qs.append(EvalQuestion("fact", "Which channel had the most events in the last 7 days?",
                           (busiest,), ev7[busiest], 0.5, "events"))  # fmt: skip
    first_touch = await facts.attributed(a30, b30, "first_touch")
    v = _usd(first_touch.get("organic_search", 0))
    qs.append(EvalQuestion("fact", "What was the attributed revenue of organic search under first "
                           "touch in the last 30 days?", ("organic_search",), v, _money_tol(v),
                           "attributed USD (first_touch)"))  # fmt: skip
    spread_channel, spread = await facts.model_spread(a30, b30)
    qs.append(EvalQuestion("fact", "Which attribution models disagree most in the last 30 days?",
                           (spread_channel,), _usd(spread), _money_tol(_usd(spread)),
                           "model spread USD"))  # fmt: skip
    v = _usd(await facts.largest_order(*last(7)))
    qs.append(EvalQuestion("fact", "What was the largest order in the last 7 days?", (), v,
                           _money_tol(v), "order USD"))  # fmt: skip
    # A window that starts before the data: the answer must say so, never compare with zeros.
    v = _usd(await facts.events(None, *last(60), "revenue"))
    qs.append(EvalQuestion("coverage", "How did revenue change in the last 60 days?", (), v,
                           _money_tol(v), "revenue USD (no comparison)",
                           must_say=("not covered", "unknown")))  # fmt: skip
    return qs
