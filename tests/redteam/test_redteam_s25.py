"""Red team s25: the last stop's unattacked promises.

1. A family's figures in a finding are the sum over ALL its channels (compare_periods'
   `channels`), and a cut-off tool answer is never summed.
2. 422 bodies name the field in the user's terms.
3. Sign-out leaves nothing of the tenant in the workbench; "Forget token" nothing of the finance
   figures (real chromium; a held fetch stands for a slow response).
4. Cost months outside 1970-01..2099-12 are a 422; a run's time limit is at least 1 s.

Held attacks are plain tests; a break is `xfail(strict=True)` with what broke.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from llm_service.db.pool import tenant_transaction
from llm_service.db.urls import DatabaseUrls
from llm_service.demo_data import generate_demo_data
from llm_service.investigations.runner import InvestigationRunner
from llm_service.llm.pricing import gateway_from_settings
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant
from llm_service.tools.runner import run_tool
from tests.browser import Browser, LiveServer, Page, chromium_path, serve_app
from tests.llm_service.investigations import claimed_runs

FINANCE_TOKEN = "finance-rt-s25-token-0123456789abcdef"
PAID_SOCIAL = ("facebook_paid", "instagram_paid", "tiktok_paid", "linkedin_paid")
PAID_SEARCH = ("google_search_paid", "bing_search_paid")
PAID = (
    *PAID_SOCIAL,
    *PAID_SEARCH,
    "google_shopping",
    "display_programmatic",
    "youtube_video",
    "affiliate",
)
ORGANIC = ("organic_search", "organic_social", "email", "sms", "referral", "direct")
NOT_PAID_SOCIAL = tuple(c for c in (*PAID, *ORGANIC) if c not in PAID_SOCIAL)


# ---------------------------------------------------------------------------------------------
# 1. A family's figures are the sum over all its channels
# ---------------------------------------------------------------------------------------------


async def _demo(owner_pool: asyncpg.Pool, tenant_id: UUID) -> None:
    async with tenant_transaction(owner_pool, tenant_id) as conn:
        await generate_demo_data(conn, tenant_id, events=10_000, seed=3)


async def _run(
    settings: Settings, app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant_id: UUID, q: str
) -> dict[str, Any]:
    """The deterministic analyst's answer to `q` (queued and claimed by the shared helper)."""
    claimed_runs.owner = owner_pool
    try:
        run_id = await claimed_runs.queue_claimed_run(app_pool, tenant_id, q, worker="rt-s25")
    finally:
        claimed_runs.owner = None
    runner = InvestigationRunner(app_pool, gateway_from_settings(settings, app_pool), "rt-s25")
    status = await runner.run(claimed_runs.claim_of(run_id))
    assert status == "succeeded"
    async with tenant_transaction(app_pool, tenant_id) as conn:
        result = await conn.fetchval("SELECT result FROM investigations WHERE id = $1", run_id)
    return json.loads(result) if isinstance(result, str) else dict(result)


async def _db_revenue(
    app_pool: asyncpg.Pool, tenant_id: UUID, channels: tuple[str, ...], start: str, end: str
) -> int:
    async with tenant_transaction(app_pool, tenant_id, readonly=True) as conn:
        return int(
            await conn.fetchval(
                "SELECT coalesce(sum(revenue_cents), 0) FROM attribution_events "
                "WHERE channel = ANY($1::text[]) AND occurred_at >= $2::date "
                "AND occurred_at < $3::date",
                list(channels),
                date.fromisoformat(start),
                date.fromisoformat(end),
            )
        )


def _cents(usd: str) -> int:
    return int(Decimal(usd.replace(",", "")) * 100)


_CHANGE = re.compile(
    r"\((\d{4}-\d\d-\d\d) to (\d{4}-\d\d-\d\d) vs (\d{4}-\d\d-\d\d) to (\d{4}-\d\d-\d\d), ends "
    r"exclusive\), from ([\d,.]+) USD to ([\d,.]+) USD"
)


async def _check_change(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant_id: UUID,
    question: str,
    channels: tuple[str, ...],
) -> str:
    """The first finding states the group's change; its two figures equal the database's sums
    over every one of the group's channels."""
    await _demo(owner_pool, tenant_id)
    result = await _run(test_settings, app_pool, owner_pool, tenant_id, question)
    claim = result["findings"][0]["claim"]
    assert "cannot be stated" not in claim, claim
    for code in channels:
        assert code in claim.split(" revenue ")[0], claim
    m = _CHANGE.search(claim)
    assert m, claim
    cur_start, cur_end, prev_start, prev_end, prev_usd, cur_usd = m.groups()
    assert _cents(cur_usd) == await _db_revenue(app_pool, tenant_id, channels, cur_start, cur_end)
    assert _cents(prev_usd) == await _db_revenue(
        app_pool, tenant_id, channels, prev_start, prev_end
    )
    return claim


@pytest.mark.parametrize(
    ("question", "channels"),
    [
        pytest.param(
            "How did paid social revenue change last week?",
            PAID_SOCIAL,
            id="paid-social",
        ),
        pytest.param(
            "Why did paid search revenue drop last week?",
            PAID_SEARCH,
            id="paid-search",
        ),
        pytest.param(
            "How did organic channels revenue change last week?",
            ORGANIC,
            id="organic",
        ),
        pytest.param(
            "How did facebook and email revenue change yesterday?",
            ("facebook_paid", "email"),
            id="two-named",
        ),
        pytest.param(
            "How did paid channels revenue change last week?",
            PAID,
            id="paid-10",
        ),
        pytest.param(
            "How did revenue change for every channel except paid social last week?",
            NOT_PAID_SOCIAL,
            id="all-but-paid-social-12",
        ),
    ],
)
async def test_a_groups_change_is_the_sum_over_all_its_channels(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    question: str,
    channels: tuple[str, ...],
) -> None:
    """Held for the families and two named channels; broke for 'paid channels' (10) and every
    channel but paid social (12): their rows overflowed the tool's size cap and the finding
    said the figure cannot be stated (fixed in session 25: `channels_total`)."""
    await _check_change(test_settings, app_pool, owner_pool, tenant.tenant_id, question, channels)


async def test_a_cut_off_paid_channels_answer_is_never_summed(
    test_settings: Settings, app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    """What the analyst does with the overflowing answer: no figure, the reason, no sum of what
    was left."""
    await _demo(owner_pool, tenant.tenant_id)
    result = await _run(
        test_settings,
        app_pool,
        owner_pool,
        tenant.tenant_id,
        "How did paid channels revenue change last week?",
    )
    claim = result["findings"][0]["claim"]
    if "cannot be stated" in claim:
        assert "size limit" in claim and "USD" not in claim, claim
    else:  # stated: then it must be the full sum (the test above)
        assert _CHANGE.search(claim), claim


_PERFORMANCE = re.compile(
    r"in (\d{4}-\d\d-\d\d) to (\d{4}-\d\d-\d\d) \(end exclusive\): revenue ([\d,.]+) USD from "
    r"[\d,]+ conversions \(([\d,]+) events\)"
)


@pytest.mark.parametrize(
    ("question", "channels"),
    [
        ("How much revenue did paid social make last week?", PAID_SOCIAL),
        ("How much revenue did paid channels make last month?", PAID),
        ("How much revenue did organic channels bring in the last 90 days?", ORGANIC),
    ],
    ids=["paid-social-week", "paid-month", "organic-90-days"],
)
async def test_group_performance_figures_are_the_sum_over_all_its_channels(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    question: str,
    channels: tuple[str, ...],
) -> None:
    """channel_performance takes no `channels` and its finding does not look at `truncated`:
    the group's revenue and events must still be the database's over every channel."""
    tid = tenant.tenant_id
    await _demo(owner_pool, tid)
    result = await _run(test_settings, app_pool, owner_pool, tid, question)
    claim = result["findings"][0]["claim"]
    m = _PERFORMANCE.search(claim)
    assert m, claim
    start, end, usd, events = m.groups()
    assert _cents(usd) == await _db_revenue(app_pool, tid, channels, start, end), claim
    async with tenant_transaction(app_pool, tid, readonly=True) as conn:
        n = await conn.fetchval(
            "SELECT count(*) FROM attribution_events WHERE channel = ANY($1::text[]) "
            "AND occurred_at >= $2::date AND occurred_at < $3::date",
            list(channels),
            date.fromisoformat(start),
            date.fromisoformat(end),
        )
    assert int(events.replace(",", "")) == n, claim


# -- the `channels` argument as a model could send it -------------------------------------------


def _week() -> dict[str, str]:
    today = datetime.now(UTC).date()
    return {
        "current_start": (today - timedelta(days=14)).isoformat(),
        "current_end": (today - timedelta(days=7)).isoformat(),
    }


async def _compare(app_pool: asyncpg.Pool, tenant_id: UUID, **extra: Any) -> Any:
    return await run_tool(app_pool, tenant_id, "compare_periods", {**_week(), **extra})


async def test_channels_with_duplicates_spaces_and_empty_items_are_each_channel_once(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    await _demo(owner_pool, tenant.tenant_id)
    out = await _compare(
        app_pool, tenant.tenant_id, channels=" facebook_paid , facebook_paid,,email,\u00a0sms, "
    )
    assert out.error is None
    rows = [r["channel"] for r in out.output["rows"]]
    assert sorted(rows) == ["email", "facebook_paid", "sms"]
    assert out.output["channels"] == ["facebook_paid", "email", "sms"]


@pytest.mark.parametrize(
    "channels",
    [
        "Facebook_paid",
        "facebook_paid;email",
        "facebook_paid\nemail",
        "facebook paid",
        "",
        " , ,",
        "x" * 10_000,
        ",".join(f"c{i}_paid" for i in range(101)),
        "facebook_paid,' OR 1=1 --",
        "ｆacebook_paid",
        "facebook_paid\x00",
    ],
    ids=[
        "upper-case",
        "semicolon",
        "newline",
        "space-inside",
        "empty",
        "only-commas",
        "10000-chars",
        "101-codes",
        "sql",
        "fullwidth-letter",
        "nul",
    ],
)
async def test_malformed_channels_are_a_plain_tool_error_that_echoes_little(
    app_pool: asyncpg.Pool, tenant: CreatedTenant, channels: str
) -> None:
    out = await _compare(app_pool, tenant.tenant_id, channels=channels)
    assert out.output is None and out.error, out
    assert "channels" in out.error
    assert len(out.error) < 300, out.error


async def test_channels_with_channel_too_or_a_list_is_refused(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    both = await _compare(app_pool, tenant.tenant_id, channels="facebook_paid", channel="email")
    assert both.error and "not both" in both.error
    listed = await _compare(app_pool, tenant.tenant_id, channels=["facebook_paid"])
    assert listed.error and "channels" in listed.error


async def test_unknown_and_a_hundred_codes_answer_no_rows_and_all_channel_totals(
    app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    await _demo(owner_pool, tenant.tenant_id)
    every = await _compare(app_pool, tenant.tenant_id)
    unknown = await _compare(
        app_pool, tenant.tenant_id, channels=",".join(f"c{i}_paid" for i in range(100))
    )
    assert unknown.error is None and unknown.output["rows"] == []
    assert unknown.output["totals"] == every.output["totals"]
    assert not unknown.truncated


# ---------------------------------------------------------------------------------------------
# 2. 422 bodies in the user's terms
# ---------------------------------------------------------------------------------------------


@pytest.fixture
async def api(test_settings: Settings, app_pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    from llm_service.api.app import create_app

    app = create_app(
        test_settings.model_copy(update={"finance_api_token": FINANCE_TOKEN}), pool=app_pool
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


def _auth(tenant: CreatedTenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}"}


FIN = {"Authorization": f"Bearer {FINANCE_TOKEN}"}
_INTERNALS = re.compile(
    r"function-(after|before|wrap|plain)|union\[|constrained-|str-enum|tagged-union|"
    r"DateRange|PeriodPhrase|ChannelBounds|BudgetOptimizationCreate|ExplanationRequest|"
    r"InvestigationCreate|Value error, |pydantic|\[type="
)


async def _details(http: httpx.AsyncClient, path: str, body: Any, headers: dict[str, str]) -> Any:
    response = await http.post(path, json=body, headers=headers)
    assert response.status_code == 422, response.text
    text = response.text
    assert not _INTERNALS.search(text), text
    return response.json()["error"]["details"]


async def test_explanation_period_of_the_wrong_kind_is_one_error(
    api: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    for period in (123, None, [], True):
        details = await _details(
            api,
            "/v1/explanations",
            {"subject": "period_change", "period": period},
            _auth(tenant),
        )
        assert [d["field"] for d in details] == ["body.period"], details
        assert "string" in details[0]["message"] and "object" in details[0]["message"]


async def test_explanation_period_object_missing_end_says_only_that(
    api: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    details = await _details(
        api,
        "/v1/explanations",
        {"subject": "period_change", "period": {"start": "2026-01-10"}},
        _auth(tenant),
    )
    assert details == [{"field": "body.period.end", "message": "Field required"}], details


async def test_explanation_period_object_with_a_bad_date_says_only_that(
    api: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    details = await _details(
        api,
        "/v1/explanations",
        {"subject": "period_change", "period": {"start": "2026-02-30", "end": "2026-03-02"}},
        _auth(tenant),
    )
    assert [d["field"] for d in details] == ["body.period.start"], details


async def test_explanation_reversed_period_and_bad_comparison_are_named(
    api: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    details = await _details(
        api,
        "/v1/explanations",
        {
            "subject": "period_change",
            "period": {"start": "2026-01-10", "end": "2026-01-01"},
            "comparison": "last month",
        },
        _auth(tenant),
    )
    fields = sorted(d["field"] for d in details)
    assert fields == ["body.comparison", "body.period"], details
    assert any("before" in d["message"] for d in details if d["field"] == "body.period")


async def test_an_unknown_field_named_like_a_class_keeps_its_name(
    api: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    """A capitalised key ("Period", "Channel") looks like a pydantic member name to the
    stripping rule."""
    details = await _details(
        api,
        "/v1/explanations",
        {"subject": "period_change", "period": "last week", "Period": "last month"},
        _auth(tenant),
    )
    assert details == [{"field": "body.Period", "message": "Extra inputs are not permitted"}]


async def test_a_bounds_key_named_like_a_class_keeps_its_name(
    api: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    details = await _details(
        api,
        "/v1/budget-optimizations",
        {
            "total_budget_usd": 100,
            "period": {"start": "2026-01-01", "end": "2026-01-08"},
            "bounds": {"Facebook": {"min_usd": -1}},
        },
        _auth(tenant),
    )
    assert any(d["field"] == "body.bounds.Facebook.min_usd" for d in details), details


async def test_a_long_unknown_field_name_is_not_echoed_back(
    api: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    key = "k" * 5000
    response = await api.post(
        "/v1/explanations",
        json={"subject": "period_change", "period": "last week", key: 1},
        headers=_auth(tenant),
    )
    assert response.status_code == 422
    assert key not in response.text and len(response.text) < 1000, len(response.text)


async def test_a_long_bounds_code_is_not_echoed_back(
    api: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    code = "X" * 5000
    response = await api.post(
        "/v1/budget-optimizations",
        json={
            "total_budget_usd": 100,
            "period": {"start": "2026-01-01", "end": "2026-01-08"},
            "bounds": {code: {}},
        },
        headers=_auth(tenant),
    )
    assert response.status_code == 422
    assert code not in response.text and len(response.text) < 1000, len(response.text)


async def test_budget_bounds_and_period_errors_name_the_channel_and_field(
    api: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    details = await _details(
        api,
        "/v1/budget-optimizations",
        {
            "total_budget_usd": "1e999",
            "period": {"start": "2026-01-01T00:00", "end": "2026-01-08"},
            "bounds": {"facebook_paid": {"min_usd": "abc"}, "email": 5},
        },
        _auth(tenant),
    )
    fields = sorted(d["field"] for d in details)
    assert fields == [
        "body.bounds.email",
        "body.bounds.facebook_paid.min_usd",
        "body.period.start",
        "body.total_budget_usd",
    ], details


async def test_investigation_errors_name_each_field_once(
    api: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    details = await _details(
        api,
        "/v1/investigations",
        {"question": "  ", "timeout_s": 0.5, "max_steps": 0, "max_cost_usd": "0.5"},
        _auth(tenant),
    )
    assert sorted(d["field"] for d in details) == [
        "body.max_cost_usd",
        "body.max_steps",
        "body.question",
        "body.timeout_s",
    ], details


async def test_a_long_idempotency_key_is_named_not_echoed(
    api: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    key = "i" * 300
    response = await api.post(
        "/v1/investigations",
        json={"question": "why did revenue drop"},
        headers={**_auth(tenant), "Idempotency-Key": key},
    )
    assert response.status_code == 422
    assert "Idempotency-Key" in response.text and key not in response.text


async def test_query_params_are_named_in_the_users_terms(
    api: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    for path, headers, field in [
        ("/v1/investigations?limit=abc", _auth(tenant), "query.limit"),
        ("/v1/investigations?before=" + "x" * 3000, _auth(tenant), "query.before"),
        ("/v1/finance/daily-costs?format=csv", FIN, "query.format"),
        ("/v1/finance/monthly-costs?format=xml", FIN, "query.format"),
    ]:
        response = await api.get(path, headers=headers)
        assert response.status_code == 422, (path, response.text)
        assert not _INTERNALS.search(response.text), response.text
        details = response.json()["error"]["details"]
        assert [d["field"] for d in details] == [field], details
        assert "x" * 100 not in response.text


async def test_malformed_json_body_is_a_422_without_the_body(
    api: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    response = await api.post(
        "/v1/investigations",
        content=b'{"question": "<script>alert(1)</script>',
        headers={**_auth(tenant), "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert "<script>" not in response.text


# ---------------------------------------------------------------------------------------------
# 4. Months 1970-01..2099-12 only; a run's time limit at least 1 s
# ---------------------------------------------------------------------------------------------

BAD_MONTHS = [
    "2099-13",
    "0000-01",
    "+2026-01",
    " 2026-01",
    "2026-01 ",
    "2026-1",
    "2026-00",
    "1969-12",
    "2100-01",
    "٢٠٢٦-٠١",  # Arabic-Indic digits
    "２０２６-０１",  # fullwidth digits
    "2026-01\n",
    "2026/01",
    "2026-01-01",
    "-001-01",
    "",
]


@pytest.mark.parametrize("month", BAD_MONTHS)
async def test_a_month_outside_the_calendar_is_a_422_everywhere(
    api: httpx.AsyncClient, tenant: CreatedTenant, month: str
) -> None:
    for path, headers in [
        ("/v1/finance/monthly-costs", FIN),
        ("/v1/finance/daily-costs", FIN),
        ("/v1/costs/monthly", _auth(tenant)),
    ]:
        response = await api.get(path, params={"month": month}, headers=headers)
        assert response.status_code == 422, (path, month, response.text)
        assert response.json()["error"]["code"] == "validation_error"


@pytest.mark.parametrize("month", ["1970-01", "2099-12"])
async def test_the_calendar_edges_are_answered(api: httpx.AsyncClient, month: str) -> None:
    for path in ("/v1/finance/monthly-costs", "/v1/finance/daily-costs"):
        response = await api.get(path, params={"month": month}, headers=FIN)
        assert response.status_code == 200, (path, month, response.text)


async def test_months_given_twice_are_not_a_silent_pick(api: httpx.AsyncClient) -> None:
    """There is no month range; a second `month` (a 'range' as a client might send it) must
    not be read as a reversed range either way: the answer is the one month FastAPI keeps."""
    response = await api.get("/v1/finance/monthly-costs?month=2026-05&month=2026-01", headers=FIN)
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert response.json()["month"] in ("2026-05", "2026-01")


@pytest.mark.parametrize(
    "timeout_s",
    [0, 0.999, 0.9999999, 1e-9, -1, 60.0000001, 61, 1e308, "NaN", "Infinity", "-Infinity", "abc"],
)
async def test_a_time_limit_below_1_s_or_above_60_s_is_a_422(
    api: httpx.AsyncClient, tenant: CreatedTenant, timeout_s: Any
) -> None:
    details = await _details(
        api, "/v1/investigations", {"question": "why", "timeout_s": timeout_s}, _auth(tenant)
    )
    assert [d["field"] for d in details] == ["body.timeout_s"], details


async def test_raw_nan_and_infinity_time_limits_are_a_422(
    api: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    for raw in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
        response = await api.post(
            "/v1/investigations",
            content=b'{"question": "why now", "timeout_s": ' + raw + b"}",
            headers={**_auth(tenant), "content-type": "application/json"},
        )
        assert response.status_code == 422, (raw, response.text)


async def test_nan_time_limit_message_is_not_about_60_s(
    api: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    """NaN is not 'above 60': it said "less than or equal to 60" (fixed in session 25)."""
    details = await _details(
        api, "/v1/investigations", {"question": "why", "timeout_s": "NaN"}, _auth(tenant)
    )
    assert details[0]["field"] == "body.timeout_s"
    assert "finite number" in details[0]["message"] and "60" not in details[0]["message"]


@pytest.mark.parametrize("timeout_s", [1, 1.0, "1", 60, 1.5])
async def test_a_time_limit_from_1_to_60_s_is_kept(
    api: httpx.AsyncClient, tenant: CreatedTenant, timeout_s: Any
) -> None:
    response = await api.post(
        "/v1/investigations",
        json={"question": "why did revenue drop", "timeout_s": timeout_s},
        headers=_auth(tenant),
    )
    assert response.status_code == 202, response.text
    assert response.json()["timeout_s"] == float(timeout_s)


@pytest.mark.parametrize("field", ["timeout_s", "max_steps", "max_cost_usd"])
@pytest.mark.parametrize("value", [True, False])
async def test_a_boolean_limit_is_a_422(
    api: httpx.AsyncClient, tenant: CreatedTenant, field: str, value: bool
) -> None:
    """`true` is not one second (nor one step): total_budget_usd refuses booleans posing as
    numbers, and so must a run's limits."""
    details = await _details(
        api, "/v1/investigations", {"question": "why", field: value}, _auth(tenant)
    )
    assert [d["field"] for d in details] == [f"body.{field}"], details


@pytest.mark.parametrize("value", [0.5, 0.999, 0.0])
def test_the_configured_time_limit_is_at_least_1_s(test_settings: Settings, value: float) -> None:
    with pytest.raises(ValueError):
        Settings.model_validate({**test_settings.model_dump(), "investigation_timeout_s": value})


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_configured_nan_or_infinite_time_limit_never_loosens_the_60_s_ceiling(
    test_settings: Settings, value: str
) -> None:
    from llm_service.investigations.service import limits

    try:
        settings = Settings.model_validate(
            {**test_settings.model_dump(), "investigation_timeout_s": float(value)}
        )
    except ValueError:
        return
    assert 1.0 <= limits(settings).timeout_s <= 60.0


# ---------------------------------------------------------------------------------------------
# 3. Sign-out and "Forget token" leave nothing behind (real chromium)
# ---------------------------------------------------------------------------------------------

# Installed before the page's own script: `window.__hold = "METHOD path-part"` holds the
# matching responses (the server has answered; the page has not seen it: a slow response)
# until `__release()`. Once the page has read a released response's body, and the task that
# read it is over, <html data-read> counts it: whatever the page does with a late answer, it
# has done by then.
HOLD_JS = r"""
(() => {
  const real = window.fetch.bind(window);
  window.__hold = null;
  window.__held = [];
  let read = 0;
  const root = () => document.documentElement;
  window.__release = () => {
    const held = window.__held;
    window.__held = [];
    held.forEach((go) => go());
    return held.length;
  };
  window.fetch = (input, init) => {
    const url = typeof input === "string" ? input : input.url;
    const method = (init && init.method) || "GET";
    const answer = real(input, init);
    if (!window.__hold || !(method + " " + url).includes(window.__hold)) return answer;
    return answer.then((response) => new Promise((resolve) => {
      const json = response.json.bind(response);
      response.json = () => {
        const body = json();
        body.finally(() => setTimeout(() => { read += 1; root().dataset.read = String(read); }));
        return body;
      };
      window.__held.push(() => resolve(response));
      root().dataset.held = String(window.__held.length);
    }));
  };
})();
"""


@pytest.fixture
def live(test_settings: Settings, database_urls: DatabaseUrls) -> Iterator[LiveServer]:
    settings = test_settings.model_copy(update={"finance_api_token": FINANCE_TOKEN})
    with serve_app(settings, database_urls, run_workers=True, name="tests-rt-s25") as server:
        yield server


@pytest.fixture
async def page(live: LiveServer) -> AsyncIterator[Page]:
    chromium = chromium_path()
    async with Browser.launch(chromium) as browser:
        tab = await browser.new_page()
        await tab.send("Page.addScriptToEvaluateOnNewDocument", {"source": HOLD_JS})
        yield tab


async def _signed_in(page: Page, live: LiveServer, tenant: CreatedTenant) -> None:
    await page.goto(f"{live.base_url}/investigations#key={tenant.api_key}")
    await page.wait_for(
        "() => document.body.dataset.state === 'ready' && document.body.dataset.historyIdle === "
        "'true'"
    )


_LEFT_OVER_JS = """(() => ({
  hash: location.hash,
  session: Object.keys(sessionStorage),
  local: Object.keys(localStorage),
  runHidden: document.getElementById("run").hidden,
  contentHidden: document.getElementById("content").hidden,
  text: document.getElementById("content").innerText + " " +
        document.getElementById("tenant").textContent,
  html: document.getElementById("content").innerHTML,
  state: document.body.dataset.state,
}))()"""


def _assert_nothing_left(
    left: dict[str, Any], tenant: CreatedTenant, *words: str, run_in_address: bool = False
) -> None:
    assert left["state"] == "auth", left
    assert "key" not in left["hash"], left["hash"]
    if not run_in_address:
        assert "run" not in left["hash"], left["hash"]
    assert left["session"] == [] and left["local"] == [], left
    assert left["runHidden"] and left["contentHidden"], left
    for word in (tenant.api_key, *words):
        assert word not in left["html"] and word not in left["text"], word


async def test_sign_out_after_opening_a_findings_evidence_leaves_nothing(
    page: Page, live: LiveServer, tenant: CreatedTenant, owner_pool: asyncpg.Pool
) -> None:
    await _demo(owner_pool, tenant.tenant_id)
    await _signed_in(page, live, tenant)
    question = "How did paid social revenue change last week? rt-s25-evidence"
    await page.type("#question", question)
    await page.click("#submit")
    await page.wait_for("() => document.body.dataset.run === 'succeeded'")
    await page.click("[data-testid=finding-toggle]")
    await page.wait_for("() => document.querySelector('[data-testid=evidence]:not([hidden]) h4')")
    claim = await page.evaluate("document.querySelector('[data-testid=claim]').textContent")
    assert "paid social" in claim
    await page.click("#sign-out")
    await page.wait_for("() => document.body.dataset.state === 'auth'")
    left = await page.evaluate(_LEFT_OVER_JS)
    _assert_nothing_left(left, tenant, question, claim[:60], "compare_periods", "facebook_paid")


async def test_sign_out_clears_the_meters_attributes(
    page: Page, live: LiveServer, tenant: CreatedTenant
) -> None:
    await _signed_in(page, live, tenant)
    await page.evaluate(
        "(() => { const c = document.getElementById('max-cost'); c.value = '0.07'; "
        "c.dispatchEvent(new Event('input')); const t = document.getElementById('timeout'); "
        "t.value = '17'; t.dispatchEvent(new Event('input')); })()"
    )
    await page.type("#question", "Which channel brought the most revenue? rt-s25-meters")
    await page.click("#submit")
    await page.wait_for("() => document.body.dataset.run")
    await page.click("#sign-out")
    await page.wait_for("() => document.body.dataset.state === 'auth'")
    attrs = await page.evaluate(
        """(() => {
          const out = {};
          const ids = ["money", "money-text", "clock", "clock-text", "run-status", "outcome"];
          for (const id of ids) {
            const e = document.getElementById(id);
            const data = Object.assign({}, e.dataset);
            delete data.testid;
            out[id] = Object.assign(data, e.max !== undefined && e.max !== 1
              ? { max: String(e.max) } : {}, e.value ? { value: String(e.value) } : {});
          }
          return out;
        })()"""
    )
    assert all(not v for v in attrs.values()), attrs


async def test_a_start_answered_after_sign_out_does_not_repaint_the_run(
    page: Page, live: LiveServer, tenant: CreatedTenant
) -> None:
    """The POST's answer arrives after sign-out: it must not open the old tenant's run, put its
    id in the address bar, or show its question."""
    await _signed_in(page, live, tenant)
    question = "Why did revenue drop last week? rt-s25-late-start"
    await page.evaluate("window.__hold = 'POST v1/investigations'")
    await page.type("#question", question)
    await page.click("#submit")
    await page.wait_for("() => document.documentElement.dataset.held === '1'")
    await page.click("#sign-out")
    await page.wait_for("() => document.body.dataset.state === 'auth'")
    assert await page.evaluate("window.__release()") == 1
    await page.wait_for("() => document.documentElement.dataset.read === '1'")
    left = await page.evaluate(_LEFT_OVER_JS)
    _assert_nothing_left(left, tenant, question)


async def test_history_answered_after_sign_out_does_not_repaint(
    page: Page, live: LiveServer, tenant: CreatedTenant, owner_pool: asyncpg.Pool
) -> None:
    await _signed_in(page, live, tenant)
    question = "What was total revenue last week? rt-s25-late-history"
    await page.type("#question", question)
    await page.click("#submit")
    await page.wait_for(
        "() => document.body.dataset.run && document.body.dataset.historyIdle === 'true' && "
        "document.querySelector('#history-list li[data-run-id]')"
    )
    await page.evaluate("window.__hold = 'GET v1/investigations?'")
    await page.evaluate(
        "(() => { const f = document.getElementById('history-filter'); f.value = 'succeeded'; "
        "f.dispatchEvent(new Event('change')); })()"
    )
    await page.wait_for("() => document.documentElement.dataset.held === '1'")
    await page.click("#sign-out")
    await page.wait_for("() => document.body.dataset.state === 'auth'")
    assert await page.evaluate("window.__release()") == 1
    await page.wait_for("() => document.documentElement.dataset.read === '1'")
    _assert_nothing_left(await page.evaluate(_LEFT_OVER_JS), tenant, question)


async def test_a_401_mid_session_leaves_nothing(
    page: Page, live: LiveServer, tenant: CreatedTenant, owner_pool: asyncpg.Pool
) -> None:
    await _signed_in(page, live, tenant)
    question = "How many conversions last week? rt-s25-revoked"
    await page.type("#question", question)
    await page.click("#submit")
    await page.wait_for("() => document.body.dataset.run")
    # The key is revoked server-side; the next call the page makes is a 401.
    await owner_pool.execute(
        "UPDATE tenants SET api_key_hash = encode(sha256(gen_random_uuid()::text::bytea), 'hex') "
        "WHERE id = $1",
        tenant.tenant_id,
    )
    await page.evaluate(
        "(() => { const f = document.getElementById('history-filter'); f.value = 'failed'; "
        "f.dispatchEvent(new Event('change')); })()"
    )
    await page.wait_for("() => document.body.dataset.state === 'auth'")
    left = await page.evaluate(_LEFT_OVER_JS)
    # Not a sign-out: the run a link or the session opened stays in the address (askForKey
    # keeps it, by design, for the same user signing in again); nothing else stays.
    _assert_nothing_left(left, tenant, question, run_in_address=True)


# -- the finance page ---------------------------------------------------------------------------


_FIGURES_JS = """(() => ({
  contentHidden: document.getElementById("content").hidden,
  figures: [...document.querySelectorAll("#content b[id], #content td[id]")]
    .map((e) => e.textContent).filter(Boolean),
  rows: document.querySelectorAll("#tenants tbody tr").length,
  values: document.querySelectorAll("#content [data-value]").length,
  chart: document.getElementById("chart").childElementCount,
  session: Object.keys(sessionStorage),
  hash: location.hash,
  state: document.body.dataset.state,
}))()"""


async def test_forget_token_leaves_no_figures(page: Page, live: LiveServer) -> None:
    await page.goto(f"{live.base_url}/finance?month=2026-01#token={FINANCE_TOKEN}")
    await page.wait_for("() => document.body.dataset.state === 'ready'")
    await page.click("#forget")
    await page.wait_for("() => document.body.dataset.state === 'auth'")
    left = await page.evaluate(_FIGURES_JS)
    assert left["contentHidden"] and not left["figures"] and not left["rows"], left
    assert not left["values"] and not left["chart"] and not left["session"], left
    assert FINANCE_TOKEN not in left["hash"]


async def test_figures_answered_after_forget_token_are_not_shown(
    page: Page, live: LiveServer
) -> None:
    """Another month is asked for; its answer arrives after "Forget token"."""
    await page.goto(f"{live.base_url}/finance?month=2026-01#token={FINANCE_TOKEN}")
    await page.wait_for("() => document.body.dataset.state === 'ready'")
    await page.evaluate("window.__hold = 'v1/finance/'")
    await page.evaluate(
        "(() => { const m = document.getElementById('month'); m.value = '2026-02'; "
        "m.dispatchEvent(new Event('change')); })()"
    )
    await page.wait_for("() => document.documentElement.dataset.held === '2'")
    await page.click("#forget")
    await page.wait_for("() => document.body.dataset.state === 'auth'")
    assert await page.evaluate("window.__release()") == 2
    await page.wait_for("() => document.documentElement.dataset.read === '2'")
    left = await page.evaluate(_FIGURES_JS)
    assert left["state"] == "auth", left
    assert left["contentHidden"] and not left["figures"] and not left["rows"], left
    assert not left["values"] and not left["chart"], left
