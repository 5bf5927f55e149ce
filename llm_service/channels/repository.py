"""Every read of channel_taxonomy, the global list of marketing channel codes."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

_ACTIVE = """
SELECT code, display_name, family, is_paid FROM channel_taxonomy WHERE is_active ORDER BY code
"""
_KNOWN = "SELECT code FROM channel_taxonomy WHERE code = ANY($1::text[])"
_PAID = "SELECT code FROM channel_taxonomy WHERE code = ANY($1::text[]) AND is_paid"
_DISPLAY_NAMES = "SELECT code, display_name FROM channel_taxonomy WHERE code = ANY($1::text[])"
_FAMILY = "SELECT family FROM channel_taxonomy WHERE code = $1"
_COUNT = "SELECT count(*) FROM channel_taxonomy"


@dataclass(frozen=True)
class Channel:
    """One taxonomy row."""

    code: str
    display_name: str
    family: str
    is_paid: bool


async def active_channels(conn: asyncpg.Connection) -> list[Channel]:
    """The active channels, by code."""
    rows = await conn.fetch(_ACTIVE)
    return [Channel(r["code"], r["display_name"], r["family"], r["is_paid"]) for r in rows]


async def known_channels(conn: asyncpg.Connection, codes: list[str]) -> set[str]:
    """Which of `codes` exist in the channel taxonomy."""
    rows = await conn.fetch(_KNOWN, codes)
    return {r["code"] for r in rows}


async def paid_channels(conn: asyncpg.Connection, codes: list[str]) -> set[str]:
    """The codes among `codes` that the taxonomy marks as paid media (is_paid)."""
    rows = await conn.fetch(_PAID, codes)
    return {r["code"] for r in rows}


async def display_names(conn: asyncpg.Connection, codes: list[str]) -> dict[str, str]:
    """Display names of taxonomy codes (unknown codes are absent)."""
    rows = await conn.fetch(_DISPLAY_NAMES, codes)
    return {r["code"]: r["display_name"] for r in rows}


async def family_of(conn: asyncpg.Connection, code: str) -> str | None:
    """The family of one code (None when the code is unknown)."""
    family: str | None = await conn.fetchval(_FAMILY, code)
    return family


async def channel_count(conn: asyncpg.Connection) -> int:
    """How many codes the taxonomy holds (active or not)."""
    count: int = await conn.fetchval(_COUNT)
    return count
