"""Keeping a run's lease: renew it on a timer, through outages, and stop once it is lost."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from llm_service.db.retry import log_failure

_log = logging.getLogger(__name__)


async def keep_lease(
    renew: Callable[[], Awaitable[bool | None]],
    *,
    lease_s: float,
    interval_s: float,
    context: dict[str, str],
) -> Literal["lost", "cancel"]:
    """Call `renew` every `interval_s` until it reports a lost lease (None) or a cancel (True).

    A failed renewal is tried again, but once `lease_s` has passed without one the lease counts
    as lost: another worker may be taking the run over, and the run must not go on beside it.
    """
    renewed = time.monotonic()
    while True:
        await asyncio.sleep(interval_s)
        try:
            cancel = await renew()
        except Exception as exc:
            log_failure(_log, "heartbeat failed", exc, context)
            if time.monotonic() - renewed < lease_s:
                continue
            cancel = None
        else:
            renewed = time.monotonic()
        if cancel is None:
            return "lost"
        if cancel:
            return "cancel"
