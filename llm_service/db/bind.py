"""Rules written over a store interface, bound to an asyncpg connection's store for callers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, TypeVar

import asyncpg

S = TypeVar("S")
P = ParamSpec("P")
R = TypeVar("R")


def on_connection(
    store: Callable[[asyncpg.Connection], S],
    rule: Callable[Concatenate[S, P], Awaitable[R]],
) -> Callable[Concatenate[asyncpg.Connection, P], Awaitable[R]]:
    """`rule` run against `store(conn)`, for a caller holding a connection in a transaction."""

    async def bound(conn: asyncpg.Connection, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await rule(store(conn), *args, **kwargs)

    bound.__name__ = rule.__name__
    bound.__doc__ = f"`{rule.__module__}.{rule.__name__}` on this connection."
    return bound
