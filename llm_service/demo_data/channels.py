"""The channels of the taxonomy and how each behaves in the synthetic data (profiles)."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from llm_service.channels.repository import active_channels
from llm_service.db.queries import current_tenant
from llm_service.demo_data import queries
from llm_service.demo_data.summary import (
    DemoDataExists,
)
from llm_service.errors import InvalidRequest

# --------------------------------------------------------------------------------------------
# Channels
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Profile:
    """How a channel behaves: traffic share, weekend factor, rates, values, campaigns, UTM."""

    share: float
    weekend: float
    purchase: float
    conversion: float
    signup: float
    order_value: int
    lead_value: int
    campaigns: tuple[str, ...] = ()
    utm: tuple[str, str] | None = None


_Numbers = tuple[float, float, float, float, float, int, int]
# share, weekend volume factor, purchase / conversion / signup rate per event, median order value
# and median lead value (cents). By family, for codes the generator does not know by name.
_FAMILY_PROFILES: dict[str, _Numbers] = {
    "paid_social": (0.05, 1.2, 0.040, 0.010, 0.020, 5500, 2000),
    "paid_search": (0.06, 0.85, 0.065, 0.020, 0.020, 7500, 3000),
    "shopping": (0.05, 1.1, 0.080, 0.002, 0.010, 5000, 1500),
    "display": (0.04, 1.0, 0.010, 0.004, 0.006, 6000, 1500),
    "video": (0.03, 1.2, 0.012, 0.003, 0.008, 6000, 1500),
    "affiliate": (0.04, 1.1, 0.090, 0.002, 0.010, 7000, 1500),
    "organic_search": (0.10, 0.85, 0.050, 0.015, 0.025, 6500, 2500),
    "organic_social": (0.04, 1.3, 0.020, 0.005, 0.015, 5000, 2000),
    "email": (0.05, 0.8, 0.080, 0.020, 0.005, 6000, 2500),
    "messaging": (0.02, 1.0, 0.070, 0.010, 0.003, 4500, 2000),
    "referral": (0.03, 1.0, 0.050, 0.010, 0.020, 6500, 2500),
    "direct": (0.05, 1.1, 0.080, 0.020, 0.030, 7000, 3000),
}
_DEFAULT_PROFILE: _Numbers = (0.02, 1.0, 0.030, 0.010, 0.010, 6000, 2000)
_CODE_PROFILES: dict[str, _Numbers] = {
    "facebook_paid": (0.16, 1.15, 0.060, 0.015, 0.020, 6500, 2500),
    "instagram_paid": (0.08, 1.25, 0.045, 0.010, 0.020, 5500, 2000),
    "tiktok_paid": (0.05, 1.3, 0.030, 0.005, 0.015, 3500, 1500),
    "linkedin_paid": (0.02, 0.35, 0.005, 0.040, 0.030, 9000, 12000),
    "google_search_paid": (0.14, 0.9, 0.070, 0.020, 0.020, 7500, 3000),
    "bing_search_paid": (0.03, 0.7, 0.065, 0.020, 0.020, 8000, 3000),
    "google_shopping": (0.07, 1.1, 0.080, 0.002, 0.010, 5000, 1500),
    "display_programmatic": (0.05, 1.0, 0.010, 0.004, 0.006, 6000, 1500),
    "youtube_video": (0.03, 1.2, 0.012, 0.003, 0.008, 6000, 1500),
    "affiliate": (0.04, 1.1, 0.090, 0.002, 0.010, 7000, 1500),
    "organic_search": (0.12, 0.85, 0.050, 0.015, 0.025, 6500, 2500),
    "organic_social": (0.04, 1.3, 0.020, 0.005, 0.015, 5000, 2000),
    "email": (0.06, 0.8, 0.080, 0.020, 0.005, 6000, 2500),
    "sms": (0.02, 1.0, 0.070, 0.010, 0.003, 4500, 2000),
    "referral": (0.03, 1.0, 0.050, 0.010, 0.020, 6500, 2500),
    "direct": (0.05, 1.1, 0.080, 0.020, 0.030, 7000, 3000),
}
_CAMPAIGNS: dict[str, tuple[str, ...]] = {
    "facebook_paid": ("fb_prospecting_lookalike", "fb_retargeting_dpa", "fb_advantage_plus"),
    "instagram_paid": ("ig_reels_spring", "ig_stories_retargeting"),
    "tiktok_paid": ("tt_spark_ugc", "tt_topview_launch"),
    "linkedin_paid": ("li_abm_enterprise", "li_lead_gen_webinar"),
    "google_search_paid": ("gs_brand_exact", "gs_nonbrand_generic", "gs_competitor"),
    "bing_search_paid": ("bing_brand", "bing_nonbrand"),
    "google_shopping": ("pmax_all_products", "shopping_bestsellers"),
    "display_programmatic": ("dv360_prospecting", "ttd_retargeting"),
    "youtube_video": ("yt_instream_brand", "yt_shorts_demand_gen"),
    "affiliate": ("aff_couponfollow", "aff_rakuten", "aff_creator_network"),
    "email": ("em_weekly_newsletter", "em_abandoned_cart", "em_winback"),
    "sms": ("sms_flash_sale", "sms_back_in_stock"),
}
_UTM: dict[str, tuple[str, str]] = {
    "facebook_paid": ("facebook", "paid_social"),
    "instagram_paid": ("instagram", "paid_social"),
    "tiktok_paid": ("tiktok", "paid_social"),
    "linkedin_paid": ("linkedin", "paid_social"),
    "google_search_paid": ("google", "cpc"),
    "bing_search_paid": ("bing", "cpc"),
    "google_shopping": ("google", "shopping"),
    "display_programmatic": ("dv360", "display"),
    "youtube_video": ("youtube", "video"),
    "affiliate": ("partner", "affiliate"),
    "email": ("newsletter", "email"),
    "sms": ("attentive", "sms"),
}
_PAID_FAMILIES = {"paid_social", "paid_search", "shopping", "display", "video", "affiliate"}
_REFERRERS = {
    "organic_search": ("https://www.google.com/", "https://www.bing.com/"),
    "organic_social": ("https://www.instagram.com/", "https://t.co/", "https://www.reddit.com/"),
    "referral": ("https://www.outdoorgearlab.com/", "https://news.ycombinator.com/"),
}
# Occasional manual fixes: recorded channel -> (corrected channel, reason).
_SCATTERED_FIXES: dict[str, tuple[str, str]] = {
    "direct": ("organic_search", "in-app browser stripped the referrer; landing page is SEO"),
    "referral": ("affiliate", "referring domain is an affiliate partner"),
    "organic_search": ("google_search_paid", "gclid on landing URL: paid search click"),
    "display_programmatic": ("youtube_video", "line item is YouTube video inventory"),
    "email": ("sms", "SMS campaign reused the email UTM template"),
}


@dataclass(frozen=True)
class _Channel:
    code: str
    family: str
    is_paid: bool
    profile: _Profile


def _profile_for(code: str, family: str) -> _Profile:
    numbers = _CODE_PROFILES.get(code) or _FAMILY_PROFILES.get(family, _DEFAULT_PROFILE)
    campaigns = _CAMPAIGNS.get(code)
    if campaigns is None:
        campaigns = (f"{code}_always_on",) if family in _PAID_FAMILIES else ()
    utm = _UTM.get(code) or ((code.split("_")[0], family) if campaigns else None)
    return _Profile(*numbers, campaigns=campaigns, utm=utm)


async def _load_channels(conn: asyncpg.Connection) -> tuple[_Channel, ...]:
    rows = await active_channels(conn)
    if len(rows) < 2:
        raise InvalidRequest("channel_taxonomy needs at least two active channels")
    return tuple(
        _Channel(r.code, r.family, r.is_paid, _profile_for(r.code, r.family)) for r in rows
    )


async def _check_target(conn: asyncpg.Connection, tenant_id: UUID, seed: int) -> None:
    current = await current_tenant(conn)
    if str(current or "").strip().lower() != str(tenant_id):
        raise InvalidRequest("the transaction's tenant (app.current_tenant_id) is not tenant_id")
    exists = await queries.event_exists(conn, tenant_id, f"demo-{seed}-0")
    if exists:
        raise DemoDataExists(f"tenant already holds demo data for seed {seed}")
