"""Every finance query: two narrow definer functions that read across tenants."""

from __future__ import annotations

from datetime import date
from typing import Any

import asyncpg


async def monthly_rows(conn: asyncpg.Connection, month: date) -> list[dict[str, Any]]:
    """Each tenant's recorded month (totals, breakdowns) and cap, most spent first."""
    return [dict(r) for r in await conn.fetch("SELECT * FROM fn_finance_monthly_costs($1)", month)]


async def daily_rows(conn: asyncpg.Connection, month: date) -> list[dict[str, Any]]:
    """Settled spend per UTC day, tenant and model in a month."""
    return [dict(r) for r in await conn.fetch("SELECT * FROM fn_finance_daily_costs($1)", month)]
