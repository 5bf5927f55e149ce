"""bench_investigations' figures and instrumentation: quantiles, process and machine CPU, probes."""

from __future__ import annotations

import contextvars
import os
import resource
import statistics
import subprocess
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

MAX_COST_CENTS = Decimal(30)  # the default (and highest) ceiling: $0.30
TIMEOUT_MS = 60_000  # the default (and longest) limit: 60 s
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out", "budget_exhausted")

# The run a coroutine belongs to: set when the worker starts processing a claim; every task the
# run creates (the agent loop, its tool calls) copies it, so the mocked provider sees it too.
_RUN: contextvars.ContextVar[str | None] = contextvars.ContextVar("bench_run", default=None)
# Per provider call: a list the mocked handler appends its own duration to.
_CALL: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "bench_call", default=None
)


def _q(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _ms(values: Sequence[float]) -> str:
    if not values:
        return "n=0"
    return (
        f"p50 {_q(values, 0.5) * 1000:8.2f} ms  p95 {_q(values, 0.95) * 1000:8.2f} ms  "
        f"max {max(values) * 1000:8.2f} ms  mean {statistics.fmean(values) * 1000:8.2f} ms  "
        f"(n={len(values)})"
    )


def _s(values: Sequence[float]) -> str:
    if not values:
        return "n=0"
    return (
        f"p50 {_q(values, 0.5):6.2f} s  p95 {_q(values, 0.95):6.2f} s  max {max(values):6.2f} s  "
        f"(n={len(values)})"
    )


def _rss_now_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _postgres_cpu_s(postmaster_pid: int | None) -> float | None:
    """CPU seconds of the postmaster and its children (live ones plus those it has reaped)."""
    if postmaster_pid is None or not Path("/proc").is_dir():
        return None
    ticks = os.sysconf("SC_CLK_TCK")

    def stat(pid: str) -> list[str] | None:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on

    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = stat(entry)
        if fields is None:
            continue
        if int(entry) == postmaster_pid or int(fields[1]) == postmaster_pid:
            # utime, stime, cutime, cstime are fields 14-17 (index 11-14 from field 3)
            total += sum(int(x) for x in fields[11:15])
    return total / ticks


def _uptime() -> str:
    """`uptime`'s line (the machine's load), or why it is missing."""
    try:
        done = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(uptime unavailable: {type(exc).__name__})"
    return done.stdout.strip() or done.stderr.strip()


def _machine_busy_s() -> float | None:
    """CPU seconds all processes of the machine have used since boot (from /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# -- instrumentation -----------------------------------------------------------------------------


@dataclass
class RunTrace:
    """What one run did, as seen from this process."""

    claimed: float = 0.0
    finished: float = 0.0
    status: str = ""
    provider_in: list[float] = field(default_factory=list)
    provider_out: list[float] = field(default_factory=list)


class Probe:
    """Timings collected from wrappers around the service's own functions (no service change)."""

    def __init__(self) -> None:
        self.runs: dict[str, RunTrace] = defaultdict(RunTrace)
        self.phases: dict[str, list[float]] = defaultdict(list)
        self.mock_cpu: list[float] = []
        self.sleep_overshoot: list[float] = []
        self.unattributed_calls = 0
        self.prompt_ratio: list[float] = []  # mocked usage / the gateway's own estimate
        self.pool_waits: list[float] = []
        self.pool_in_use_max = 0
        self.finished_ids: set[str] = set()
        self.takeovers: list[tuple[str, bool, str]] = []  # run, still running here, outcome

    def wrap_async(
        self, name: str, func: Callable[..., Awaitable[T]]
    ) -> Callable[..., Awaitable[T]]:
        phases = self.phases[name]

        async def wrapper(*args: Any, **kwargs: Any) -> T:
            started = time.perf_counter()
            try:
                return await func(*args, **kwargs)
            finally:
                phases.append(time.perf_counter() - started)

        return wrapper

    def wrap_sync(self, name: str, func: Callable[..., T]) -> Callable[..., T]:
        phases = self.phases[name]

        def wrapper(*args: Any, **kwargs: Any) -> T:
            started = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                phases.append(time.perf_counter() - started)

        return wrapper


class Patches:
    """Attribute replacements, undone in reverse order."""

    def __init__(self) -> None:
        self._undo: list[tuple[Any, str, Any]] = []

    def set(self, owner: Any, name: str, value: Any) -> Any:
        original = getattr(owner, name)
        self._undo.append((owner, name, original))
        setattr(owner, name, value)
        return original

    def undo(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


# -- the mocked provider -------------------------------------------------------------------------
