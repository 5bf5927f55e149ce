"""The start-up heap kept out of the garbage collector's sight, once the process is set up.

A worker process holds a large, long-lived heap from its start: litellm's modules, price map and
HTTP clients, the tokenizer encodings, pydantic's schemas. Each full collection of the cyclic
garbage collector walks all of it again, and stops the event loop meanwhile: 1.5 s per full
collection was measured with 100 runs in flight (bench_investigations, "GC generation 2").
`gc.freeze()` moves what is alive at that point to a permanent generation that collections skip;
what the runs create later is collected as before.

The young generation's threshold is raised too (`YOUNG_THRESHOLD` allocations, not 700): with
1,000 runs in flight the default triggered 1,760 young, 159 middle and 15 full collections per
1,000 runs, 9.2 s of the 53 s the process spent (bench/RESULTS.md "## Jobs"). Reference counting
still frees everything that is not in a cycle at once; only cyclic garbage waits longer.
"""

from __future__ import annotations

import gc
import logging
import time

_log = logging.getLogger(__name__)
_frozen = False
#: Net container allocations between two young collections, from the freeze on (default 700).
YOUNG_THRESHOLD = 20_000


def freeze_startup_heap() -> bool:
    """Collect once, then freeze every object alive now (first call per process only: objects
    frozen later could never be collected) and raise the young generation's threshold. Returns
    whether this call froze the heap."""
    global _frozen
    if _frozen:
        return False
    _frozen = True
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    if young:  # 0: the collector is off, and stays so
        gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)
    _log.info("start-up heap frozen", extra={"objects": gc.get_freeze_count()})
    return True


_gc_paused_s = 0.0
_gc_started: float | None = None


def _on_gc(phase: str, _info: dict[str, int]) -> None:
    """gc.callbacks hook: add each collection's duration to the process's total."""
    global _gc_paused_s, _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
    elif _gc_started is not None:
        _gc_paused_s += time.perf_counter() - _gc_started
        _gc_started = None


def track_gc_pauses() -> None:
    """Time every garbage collection from now on (once per process; a few µs a collection).

    Every collection stops the event loop, so the pause between two readings of
    `gc_paused_ms` is time each request in flight meanwhile waited (Server-Timing's `gc`).
    """
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)


def gc_paused_ms() -> float:
    """Milliseconds this process has spent in garbage collections since `track_gc_pauses`."""
    return _gc_paused_s * 1000.0
