"""A provider that answers too late: a respx side effect that says when requests arrive.

The stall itself is the behaviour under test (a timeout, a deadline, a cancellation must cut
it off); the test synchronises on `arrived` and asserts `cut_off` / `answered`, never on time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx


class Stalled:
    """Answers with `answer()` only after `seconds`, unless the caller cuts it off first.

    respx counts a call only once its side effect returns, so this one records when each
    request arrived (and sets `arrived`), and how many were cut off or answered.
    """

    def __init__(self, seconds: float, answer: Callable[[], httpx.Response]) -> None:
        self.seconds = seconds
        self.answer = answer
        self.arrivals: list[float] = []
        self.arrived = asyncio.Event()
        self.cut_off = 0
        self.answered = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.arrivals.append(time.monotonic())
        self.arrived.set()
        try:
            await asyncio.sleep(self.seconds)  # the slow provider is the behaviour under test
        except asyncio.CancelledError:
            self.cut_off += 1
            raise
        self.answered += 1
        return self.answer()
