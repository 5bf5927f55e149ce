"""The data-change journal behind data_fingerprint: what moves a fingerprint and what does not.

Data is written as the owner (the definer triggers journal it, whoever writes); fingerprints are
read as the application role under RLS. The statement the journal replaced is kept as the
oracle (bench/bench_fingerprint.py): every change that moved the old fingerprint must move the
new one, and changes outside the period or of another tenant must not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from bench.bench_fingerprint import legacy_fingerprint
from llm_service.analytics.fingerprint_queries import data_fingerprint
from llm_service.db.pool import tenant_transaction
from llm_service.tenants.service import CreatedTenant

W0 = (date(2025, 2, 22), date(2025, 3, 1))
W1 = (date(2025, 3, 1), date(2025, 3, 8))
W2 = (date(2025, 3, 8), date(2025, 3, 15))
PERIODS = {"W0": W0, "W1": W1, "W2": W2}
SUBJECTS = (  # one per distinct set of parts, and an unknown subject (every part)
    "channel_performance",
    "revenue_state_changes",
    "dead_event_summary",
    "channel_corrections",
    "top_orders",
    "reconciliation_status",
    "everything",
)
CHANNELS = (None, "email", "facebook_paid", "referral", "instagram_paid")

Write = Callable[[asyncpg.Connection], Awaitable[Any]]
Key = tuple[str, str, str | None]


def at(month: int, day: int, hour: int = 12) -> datetime:
    """A UTC instant in 2025."""
    return datetime(2025, month, day, hour, tzinfo=UTC)


async def as_owner(pool: asyncpg.Pool, tenant_id: UUID, write: Write) -> Any:
    """Write as the owner in the tenant's transaction."""
    async with tenant_transaction(pool, tenant_id) as conn:
        return await write(conn)


async def fingerprint(
    pool: asyncpg.Pool,
    tenant_id: UUID,
    subject: str,
    period: tuple[date, date],
    channel: str | None = None,
) -> str:
    """The fingerprint as the application role."""
    async with tenant_transaction(pool, tenant_id, readonly=True) as conn:
        return await data_fingerprint(conn, subject, *period, channel=channel)


async def event(
    conn: asyncpg.Connection, tenant_id: UUID, when: datetime, channel: str, revenue: int = 0
) -> UUID:
    """One event: a purchase with revenue, else a click."""
    event_id: UUID = await conn.fetchval(
        """
        INSERT INTO attribution_events (tenant_id, occurred_at, event_timestamp, event_type,
                                        channel, revenue_cents, idempotency_key)
        VALUES ($1, $2, $2, $3, $4, $5, $6) RETURNING id
        """,
        tenant_id,
        when,
        "purchase" if revenue else "click",
        channel,
        revenue,
        uuid4().hex,
    )
    return event_id


async def allocate(
    conn: asyncpg.Connection, tenant_id: UUID, event_id: UUID, model: str, split: dict[str, int]
) -> dict[str, UUID]:
    """One model's split of an event's revenue, in one statement."""
    total = sum(split.values())
    rows = await conn.fetch(
        """
        INSERT INTO attribution_allocations (tenant_id, event_id, channel_code,
            allocated_revenue_cents, allocation_ratio, model_type)
        SELECT $1, $2, u.channel, u.cents, u.cents::numeric / $5, $3
        FROM unnest($4::text[], $6::bigint[]) AS u(channel, cents)
        RETURNING id, channel_code
        """,
        tenant_id,
        event_id,
        model,
        list(split),
        total,
        list(split.values()),
    )
    return {r["channel_code"]: r["id"] for r in rows}


async def ledger(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    posted: datetime,
    allocation_id: UUID | None,
    state: str = "captured",
    amount: int = 1_000,
) -> UUID:
    """One ledger row."""
    ledger_id: UUID = await conn.fetchval(
        """
        INSERT INTO revenue_ledger (tenant_id, transaction_id, allocation_id, state,
                                    amount_cents, revenue_cents, posted_at)
        VALUES ($1, $2, $3, $4, $5, $5, $6) RETURNING id
        """,
        tenant_id,
        uuid4().hex,
        allocation_id,
        state,
        amount,
        posted,
    )
    return ledger_id


async def change_state(
    conn: asyncpg.Connection, ledger_id: UUID, state: str, when: datetime
) -> None:
    """Move a ledger row to a state (the trigger audits it) and date the transition."""
    await conn.execute("UPDATE revenue_ledger SET state = $2 WHERE id = $1", ledger_id, state)
    await conn.execute(
        "UPDATE revenue_state_transitions SET transitioned_at = $3 "
        "WHERE ledger_id = $1 AND to_state = $2",
        ledger_id,
        state,
        when,
    )


async def correct(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    entity_type: str,
    entity_id: UUID,
    from_channel: str,
    to_channel: str,
    when: datetime | None = None,
) -> UUID:
    """One channel correction, made at `when` (or now)."""
    correction_id: UUID = await conn.fetchval(
        """
        INSERT INTO channel_assignment_corrections (tenant_id, entity_type, entity_id,
            from_channel, to_channel, corrected_by, corrected_at)
        VALUES ($1, $2, $3, $4, $5, 'test', coalesce($6, now())) RETURNING id
        """,
        tenant_id,
        entity_type,
        entity_id,
        from_channel,
        to_channel,
        when,
    )
    return correction_id


async def dead_event(conn: asyncpg.Connection, tenant_id: UUID, when: datetime) -> UUID:
    """One dead event, ingested at `when`."""
    dead_id: UUID = await conn.fetchval(
        """
        INSERT INTO dead_events (tenant_id, source, error_type, error_message, ingested_at)
        VALUES ($1, 'web_sdk', 'schema_validation', 'bad', $2) RETURNING id
        """,
        tenant_id,
        when,
    )
    return dead_id


async def run(conn: asyncpg.Connection, tenant_id: UUID, created: datetime) -> UUID:
    """One reconciliation run, created at `created`."""
    run_id: UUID = await conn.fetchval(
        "INSERT INTO reconciliation_runs (tenant_id, created_at) VALUES ($1, $2) RETURNING id",
        tenant_id,
        created,
    )
    return run_id


async def journal(pool: asyncpg.Pool, tenant_id: UUID) -> dict[tuple[str, str, date], int]:
    """The tenant's journal as the owner sees it: version by (part, channel, day)."""
    async with tenant_transaction(pool, tenant_id, readonly=True) as conn:
        rows = await conn.fetch(
            "SELECT part, channel, day, version FROM data_change_journal WHERE tenant_id = $1",
            tenant_id,
        )
    return {(r["part"], r["channel"], r["day"]): r["version"] for r in rows}


# --------------------------------------------------------------------------------------------
# A small data set
# --------------------------------------------------------------------------------------------


@dataclass
class Data:
    """Ids of the data set's rows."""

    tenant_id: UUID
    other_id: UUID
    ids: dict[str, UUID]


async def seed(conn: asyncpg.Connection, tenant_id: UUID) -> dict[str, UUID]:
    """Events, allocations, ledger rows, a transition, a correction, a dead event, a run."""
    ids: dict[str, UUID] = {}
    ids["e_fb"] = await event(conn, tenant_id, at(3, 2), "facebook_paid", 10_000)
    ids["e_email"] = await event(conn, tenant_id, at(3, 3), "email", 5_000)
    ids["e_w0"] = await event(conn, tenant_id, at(2, 25), "facebook_paid", 8_000)
    ids["a_fb_last"] = (
        await allocate(conn, tenant_id, ids["e_fb"], "last_touch", {"facebook_paid": 10_000})
    )["facebook_paid"]
    linear = await allocate(
        conn, tenant_id, ids["e_fb"], "linear", {"facebook_paid": 5_000, "email": 5_000}
    )
    ids["a_fb_linear_email"] = linear["email"]
    ids["a_email_last"] = (
        await allocate(conn, tenant_id, ids["e_email"], "last_touch", {"email": 5_000})
    )["email"]
    ids["a_w0_last"] = (
        await allocate(conn, tenant_id, ids["e_w0"], "last_touch", {"facebook_paid": 8_000})
    )["facebook_paid"]
    ids["l_fb"] = await ledger(conn, tenant_id, at(3, 2, 13), ids["a_fb_last"])
    ids["l_email"] = await ledger(conn, tenant_id, at(3, 3, 13), ids["a_email_last"])
    ids["l_none"] = await ledger(conn, tenant_id, at(3, 4), None, state="authorized")
    ids["l_w0"] = await ledger(conn, tenant_id, at(2, 25, 13), ids["a_w0_last"])
    await change_state(conn, ids["l_email"], "refunded", at(3, 5))
    ids["c_fb"] = await correct(
        conn, tenant_id, "event", ids["e_fb"], "facebook_paid", "instagram_paid", at(3, 5)
    )
    ids["d_w1"] = await dead_event(conn, tenant_id, at(3, 2))
    ids["r_w1"] = await run(conn, tenant_id, at(3, 3))
    return ids


@pytest.fixture
async def data(
    owner_pool: asyncpg.Pool, tenant: CreatedTenant, other_tenant: CreatedTenant
) -> Data:
    """The data set for a fresh tenant, and the same for another tenant beside it."""
    other = await as_owner(
        owner_pool, other_tenant.tenant_id, lambda c: seed(c, other_tenant.tenant_id)
    )
    assert other
    ids = await as_owner(owner_pool, tenant.tenant_id, lambda c: seed(c, tenant.tenant_id))
    return Data(tenant.tenant_id, other_tenant.tenant_id, ids)


# --------------------------------------------------------------------------------------------
# Bulk writes, corrections, other tenants, permissions
# --------------------------------------------------------------------------------------------


async def test_a_bulk_insert_changes_only_the_affected_days_and_channels(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, data: Data
) -> None:
    tid = data.tenant_id
    watched = {
        "W1": ("channel_performance", W1, None),
        "W1 email": ("channel_performance", W1, "email"),
        "W1 direct": ("channel_performance", W1, "direct"),
        "Mar 3": ("channel_performance", (date(2025, 3, 3), date(2025, 3, 4)), None),
        "Mar 5": ("channel_performance", (date(2025, 3, 5), date(2025, 3, 6)), None),
        "W0": ("channel_performance", W0, None),
        "W2": ("channel_performance", W2, None),
        "W1 ledger": ("top_orders", W1, None),
    }
    before = {k: await fingerprint(app_pool, tid, *v) for k, v in watched.items()}
    journal_before = await journal(owner_pool, tid)

    # 3,000 clicks on 03-03 and 03-04, all email, in ONE statement.
    moments = [at(3, 3 + i % 2, i % 24) for i in range(3_000)]
    status = await as_owner(
        owner_pool,
        tid,
        lambda c: c.execute(
            """
            INSERT INTO attribution_events (tenant_id, occurred_at, event_timestamp, event_type,
                                            channel, idempotency_key)
            SELECT $1, t, t, 'click', 'email', gen_random_uuid()::text
            FROM unnest($2::timestamptz[]) AS u(t)
            """,
            tid,
            moments,
        ),
    )
    assert status == "INSERT 0 3000"

    after = {k: await fingerprint(app_pool, tid, *v) for k, v in watched.items()}
    changed = {k for k in watched if after[k] != before[k]}
    assert changed == {"W1", "W1 email", "Mar 3"}

    # One statement bumped each touched key exactly once: its channel's row and the roll-up.
    journal_after = await journal(owner_pool, tid)
    bumped = {
        key: version - journal_before.get(key, 0)
        for key, version in journal_after.items()
        if version != journal_before.get(key)
    }
    assert bumped == {
        ("events", "email", date(2025, 3, 3)): 1,
        ("events", "", date(2025, 3, 3)): 1,
        ("events", "email", date(2025, 3, 4)): 1,
        ("events", "", date(2025, 3, 4)): 1,
    }


async def test_a_correction_made_later_changes_the_corrected_events_period(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, data: Data
) -> None:
    tid, ids = data.tenant_id, data.ids
    watched = {
        "W1 corrections": ("channel_corrections", W1, None),
        "W1 performance": ("channel_performance", W1, None),
        "W1 email": ("channel_corrections", W1, "email"),
        "W1 sms": ("channel_corrections", W1, "sms"),
        "W1 referral": ("channel_corrections", W1, "referral"),
        "W0 corrections": ("channel_corrections", W0, None),
        "W2 corrections": ("channel_corrections", W2, None),
        "W1 dead events": ("dead_event_summary", W1, None),
    }

    async def changes(write: Write) -> set[str]:
        before = {k: await fingerprint(app_pool, tid, *v) for k, v in watched.items()}
        await as_owner(owner_pool, tid, write)
        return {k for k, v in watched.items() if await fingerprint(app_pool, tid, *v) != before[k]}

    # Made now (long after) about the 03-03 event: its period changes, for its channels only.
    assert await changes(
        lambda c: correct(c, tid, "event", ids["e_email"], "email", "referral")
    ) == {"W1 corrections", "W1 performance", "W1 email", "W1 referral"}
    # About an allocation of the 03-02 event: that event's period.
    assert await changes(
        lambda c: correct(c, tid, "allocation", ids["a_fb_linear_email"], "email", "sms")
    ) == {"W1 corrections", "W1 performance", "W1 email", "W1 sms"}
    # About the previous period's event: that period's, not this one's.
    assert await changes(
        lambda c: correct(c, tid, "event", ids["e_w0"], "facebook_paid", "instagram_paid")
    ) == {"W0 corrections"}


async def test_other_tenants_changes_leave_my_fingerprints_unchanged(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, data: Data
) -> None:
    tid, other = data.tenant_id, data.other_id
    keys = [(s, p, ch) for s in SUBJECTS for p in (W0, W1, W2) for ch in (None, "email")]
    mine = [await fingerprint(app_pool, tid, *k) for k in keys]
    theirs = [await fingerprint(app_pool, other, *k) for k in keys]

    async def everything(conn: asyncpg.Connection) -> None:
        e = await event(conn, other, at(3, 4), "email", 2_000)
        alloc = (await allocate(conn, other, e, "last_touch", {"email": 2_000}))["email"]
        row = await ledger(conn, other, at(3, 4), alloc)
        await change_state(conn, row, "chargeback", at(3, 6))
        await correct(conn, other, "event", e, "email", "sms")
        await dead_event(conn, other, at(3, 4))
        await run(conn, other, at(3, 4))
        # The owner bypasses RLS: name the tenant.
        await conn.execute(
            "UPDATE attribution_allocations SET verified = true WHERE tenant_id = $1", other
        )
        await conn.execute("DELETE FROM dead_events WHERE tenant_id = $1", other)

    await as_owner(owner_pool, other, everything)
    assert [await fingerprint(app_pool, tid, *k) for k in keys] == mine
    assert [await fingerprint(app_pool, other, *k) for k in keys] != theirs


async def test_the_application_role_cannot_write_the_journal(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, data: Data
) -> None:
    tid = data.tenant_id
    for statement in (
        "INSERT INTO data_change_journal (tenant_id, part, channel, day) "
        "VALUES ($1, 'events', '', '2025-03-03')",
        "UPDATE data_change_journal SET version = version + 1 WHERE tenant_id = $1",
        "DELETE FROM data_change_journal WHERE tenant_id = $1",
    ):
        with pytest.raises(
            asyncpg.exceptions.InsufficientPrivilegeError,
            match="permission denied for table data_change_journal",
        ):
            async with tenant_transaction(app_pool, tid) as conn:
                await conn.execute(statement, tid)
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="permission denied"):
        async with tenant_transaction(app_pool, tid) as conn:
            await conn.execute("SELECT fn_journal_dead_events()")

    # It reads its own rows, and its writes are journaled by the definer triggers all the same.
    async with tenant_transaction(app_pool, tid, readonly=True) as conn:
        owners = await conn.fetch("SELECT DISTINCT tenant_id FROM data_change_journal")
    assert [r["tenant_id"] for r in owners] == [tid]
    before = await fingerprint(app_pool, tid, "dead_event_summary", W1)
    async with tenant_transaction(app_pool, tid) as conn:
        await dead_event(conn, tid, at(3, 6))
    assert await fingerprint(app_pool, tid, "dead_event_summary", W1) != before


async def test_ledger_fingerprints_follow_the_channel_of_the_allocation(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, data: Data
) -> None:
    tid, ids = data.tenant_id, data.ids
    watched: dict[str, tuple[str, tuple[date, date], str | None]] = {
        ch: ("top_orders", W1, ch) for ch in ("email", "referral", "facebook_paid")
    }
    watched["all"] = ("top_orders", W1, None)
    watched["transitions email"] = ("revenue_state_changes", W1, "email")
    watched["transitions referral"] = ("revenue_state_changes", W1, "referral")

    async def changes(write: Write) -> set[str]:
        before = {k: await fingerprint(app_pool, tid, *v) for k, v in watched.items()}
        await as_owner(owner_pool, tid, write)
        return {k for k, v in watched.items() if await fingerprint(app_pool, tid, *v) != before[k]}

    # The email ledger row is verified: its channel's fingerprints, not the others'.
    assert await changes(
        lambda c: c.execute(
            "UPDATE revenue_ledger SET is_verified = true WHERE id = $1", ids["l_email"]
        )
    ) == {"email", "all", "transitions email"}
    # A ledger row without an allocation: only the fingerprint over all channels.
    assert await changes(
        lambda c: c.execute(
            "UPDATE revenue_ledger SET state = 'captured' WHERE id = $1", ids["l_none"]
        )
    ) == {"all"}
    # Its allocation moves to referral: its ledger row (and transition) moves with it, from
    # one channel's fingerprints to the other's; over all channels the ledger is unchanged.
    assert await changes(
        lambda c: c.execute(
            "UPDATE attribution_allocations SET channel_code = 'referral' WHERE id = $1",
            ids["a_email_last"],
        )
    ) == {"email", "referral", "transitions email", "transitions referral"}


async def test_deleting_a_tenant_deletes_its_journal(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, data: Data
) -> None:
    assert await journal(owner_pool, data.tenant_id)
    other_before = await journal(owner_pool, data.other_id)
    async with tenant_transaction(owner_pool, data.tenant_id) as conn:
        await conn.execute("DELETE FROM tenants WHERE id = $1", data.tenant_id)
    async with owner_pool.acquire() as conn:
        left = await conn.fetchval(
            "SELECT count(*) FROM data_change_journal WHERE tenant_id = $1", data.tenant_id
        )
    assert left == 0
    assert await journal(owner_pool, data.other_id) == other_before


# --------------------------------------------------------------------------------------------
# The legacy fingerprint as the oracle
# --------------------------------------------------------------------------------------------


async def both(app_pool: asyncpg.Pool, tenant_id: UUID) -> dict[Key, tuple[str, str]]:
    """Per subject, period and channel: the legacy and the journal fingerprint."""
    out: dict[Key, tuple[str, str]] = {}
    async with tenant_transaction(app_pool, tenant_id, readonly=True) as conn:
        for subject in SUBJECTS:
            for name, (start, end) in PERIODS.items():
                for channel in CHANNELS:
                    out[subject, name, channel] = (
                        await legacy_fingerprint(conn, subject, start, end, channel=channel),
                        await data_fingerprint(conn, subject, start, end, channel=channel),
                    )
    return out


async def test_every_change_the_legacy_fingerprint_saw_moves_the_journal_one(
    owner_pool: asyncpg.Pool, app_pool: asyncpg.Pool, data: Data
) -> None:
    tid, other, ids = data.tenant_id, data.other_id, data.ids

    def sql(statement: str, *args: Any) -> Write:
        return lambda c: c.execute(statement, *args)

    # (what, write, tenant written, whether the write is outside every period)
    steps: list[tuple[str, Write, UUID, bool]] = [
        ("other tenant's event", lambda c: event(c, other, at(3, 3), "email", 0), other, True),
        ("event after every period", lambda c: event(c, tid, at(3, 20), "email"), tid, True),
        ("dead event before every period", lambda c: dead_event(c, tid, at(2, 1)), tid, True),
        ("click in W1", lambda c: event(c, tid, at(3, 6), "referral"), tid, False),
        (
            "allocation added",
            lambda c: allocate(c, tid, ids["e_email"], "time_decay", {"email": 5_000}),
            tid,
            False,
        ),
        (
            "allocation verified",
            sql(
                "UPDATE attribution_allocations SET verified = true WHERE id = $1",
                ids["a_fb_linear_email"],
            ),
            tid,
            False,
        ),
        (
            "allocation moved to another channel",
            sql(
                "UPDATE attribution_allocations SET channel_code = 'referral' WHERE id = $1",
                ids["a_email_last"],
            ),
            tid,
            False,
        ),
        (
            "ledger row charged back",
            lambda c: change_state(c, ids["l_fb"], "chargeback", at(3, 6)),
            tid,
            False,
        ),
        (
            "transition moved to the next period",
            sql(
                "UPDATE revenue_state_transitions SET transitioned_at = $2 WHERE ledger_id = $1",
                ids["l_fb"],
                at(3, 9),
            ),
            tid,
            False,
        ),
        (
            "ledger row without allocation captured",
            sql("UPDATE revenue_ledger SET state = 'captured' WHERE id = $1", ids["l_none"]),
            tid,
            False,
        ),
        ("ledger row added", lambda c: ledger(c, tid, at(3, 7), ids["a_fb_last"]), tid, False),
        (
            "dead event resolved",
            sql(
                "UPDATE dead_events SET remediation_status = 'resolved' WHERE id = $1", ids["d_w1"]
            ),
            tid,
            False,
        ),
        ("dead event in W2", lambda c: dead_event(c, tid, at(3, 9)), tid, False),
        (
            "correction about a W1 event",
            lambda c: correct(c, tid, "event", ids["e_email"], "email", "sms"),
            tid,
            False,
        ),
        (
            "correction about a W0 allocation",
            lambda c: correct(c, tid, "allocation", ids["a_w0_last"], "facebook_paid", "email"),
            tid,
            False,
        ),
        ("run in W1's grace", lambda c: run(c, tid, at(3, 10)), tid, False),
        (
            "run completed",
            sql("UPDATE reconciliation_runs SET state = 'completed' WHERE id = $1", ids["r_w1"]),
            tid,
            False,
        ),
        (
            "allocation deleted (its ledger row loses it)",
            sql("DELETE FROM attribution_allocations WHERE id = $1", ids["a_fb_last"]),
            tid,
            False,
        ),
        (
            "correction deleted",
            sql("DELETE FROM channel_assignment_corrections WHERE id = $1", ids["c_fb"]),
            tid,
            False,
        ),
        (
            "dead event deleted",
            sql("DELETE FROM dead_events WHERE id = $1", ids["d_w1"]),
            tid,
            False,
        ),
        (
            "run deleted",
            sql("DELETE FROM reconciliation_runs WHERE id = $1", ids["r_w1"]),
            tid,
            False,
        ),
        (
            "ledger row deleted",
            sql("DELETE FROM revenue_ledger WHERE id = $1", ids["l_email"]),
            tid,
            False,
        ),
        (
            "event deleted (with its allocations)",
            sql("DELETE FROM attribution_events WHERE id = $1", ids["e_email"]),
            tid,
            False,
        ),
    ]
    current = await both(app_pool, tid)
    legacy_moves = 0
    for what, write, writer, outside in steps:
        await as_owner(owner_pool, writer, write)
        after = await both(app_pool, tid)
        missed = [k for k in after if after[k][0] != current[k][0] and after[k][1] == current[k][1]]
        assert not missed, f"{what}: the legacy fingerprint moved, the journal's did not: {missed}"
        moved = [k for k in after if after[k][1] != current[k][1]]
        if outside:
            assert not moved, f"{what}: moved {moved}"
        else:
            assert moved, f"{what}: nothing moved"
        legacy_moves += sum(after[k][0] != current[k][0] for k in after)
        current = after
    assert legacy_moves > 100  # the oracle did see the steps
