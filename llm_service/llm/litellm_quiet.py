"""Our calls through litellm without litellm's own pricing and success/failure logging.

Our ledger prices every call from the usage the provider reports; litellm 1.110 also prices each
response (`Logging.response_cost_calculator`, run inside the call while it stamps the response's
hidden params) and then builds a standard logging payload in a background task, with no
callbacks configured: measured 7% and 10% of a gateway call. Neither has a public switch here
(`litellm.success_callback = []` is already the default; the payload is built regardless).

- Logging: litellm's own marker for a call another layer bills, `internal_sub_call()` (the
  `is_internal_call` context variable: its wrapper then dispatches no success logging and runs
  no failure handler).
- Pricing: `response_cost_calculator` answers None (an unknown cost, as for a stream) for calls
  made inside `quiet_call()`; every other caller of litellm in the process is left as it was.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

logger = logging.getLogger(__name__)

_QUIET: ContextVar[bool] = ContextVar("llm_service_quiet_litellm_call", default=False)
_MARK = "_llm_service_unpriced"


@contextlib.contextmanager
def quiet_call() -> Iterator[None]:
    """Inside: litellm neither prices the response nor logs the call (our ledger does both)."""
    from litellm._internal_context import internal_sub_call

    token = _QUIET.set(True)
    try:
        with internal_sub_call():
            yield
    finally:
        _QUIET.reset(token)


def _unpriced(calculate: Callable[..., Any]) -> Callable[..., Any]:
    def calculator(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _QUIET.get():
            return None
        return calculate(self, *args, **kwargs)

    setattr(calculator, _MARK, True)
    return calculator


def install_quiet_calls() -> None:
    """Wrap litellm's response pricing once so that `quiet_call()` can skip it."""
    try:
        from litellm._internal_context import internal_sub_call  # noqa: F401
        from litellm.litellm_core_utils.litellm_logging import Logging
    except ImportError:  # pragma: no cover - another litellm layout
        logger.warning("litellm's logging object has moved; its own pricing stays on")
        return
    calculate = getattr(Logging, "response_cost_calculator", None)
    if calculate is None or getattr(calculate, _MARK, False):
        return
    wrapped = _unpriced(calculate)
    Logging.response_cost_calculator = wrapped  # type: ignore[method-assign]
    if getattr(Logging, "_response_cost_calculator", None) is calculate:
        Logging._response_cost_calculator = wrapped
