"""Database outages: what counts as one, and the bounded retry of idempotent writes."""

from __future__ import annotations

import asyncpg
import pytest

from llm_service.db.retry import is_database_outage, retry_through_outage


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.InternalClientError("cannot switch to state 15; another operation is in progress"),
        asyncpg.InterfaceError("cannot call Connection.fetch(): connection is closed"),
        ConnectionRefusedError(111, "Connect call failed"),
        FileNotFoundError(2, "No such file or directory"),  # the server's socket is gone
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    ],
)
def test_lost_connections_and_a_restarting_server_are_outages(exc: BaseException) -> None:
    assert is_database_outage(exc)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.UniqueViolationError("duplicate key value"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        TimeoutError(),
        ValueError("a defect"),
        FileNotFoundError(2, "No such file or directory", "/srv/model.onnx"),  # a file of ours
        asyncpg.InternalClientError("got result for unknown protocol state 3"),
    ],
)
def test_timeouts_constraint_errors_and_defects_are_not_outages(exc: BaseException) -> None:
    assert not is_database_outage(exc)


async def test_work_is_retried_through_an_outage_until_it_succeeds() -> None:
    attempts = []

    async def work() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise asyncpg.ConnectionDoesNotExistError("connection was closed")
        return "done"

    assert await retry_through_outage(work, within_s=10, what="test") == "done"
    assert len(attempts) == 3


async def test_other_errors_are_raised_at_once() -> None:
    attempts = []

    async def work() -> None:
        attempts.append(1)
        raise asyncpg.QueryCanceledError("canceling statement due to statement timeout")

    with pytest.raises(asyncpg.QueryCanceledError):
        await retry_through_outage(work, within_s=10, what="test")
    assert len(attempts) == 1


async def test_the_retry_gives_up_after_its_time() -> None:
    attempts = []

    async def work() -> None:
        attempts.append(1)
        raise ConnectionRefusedError(111, "Connect call failed")

    with pytest.raises(ConnectionRefusedError):
        await retry_through_outage(work, within_s=0.3, what="test")
    assert 1 < len(attempts) < 10


async def test_a_connect_timeout_is_retried_like_an_outage() -> None:
    attempts = []

    async def work() -> str:
        attempts.append(1)
        if len(attempts) < 2:
            raise TimeoutError
        return "done"

    assert await retry_through_outage(work, within_s=10, what="test") == "done"
    assert len(attempts) == 2
