"""The start-up heap kept out of the garbage collector's sight, once the process is set up.

A worker process holds a large, long-lived heap from its start: litellm's modules, price map and
HTTP clients, the tokenizer encodings, pydantic's schemas. Each full collection of the cyclic
garbage collector walks all of it again, and stops the event loop meanwhile: 1.5 s per full
collection was measured with 100 runs in flight (bench_investigations, "GC generation 2").
`gc.freeze()` moves what is alive at that point to a permanent generation that collections skip;
what the runs create later is collected as before.
"""

from __future__ import annotations

import gc
import logging

_log = logging.getLogger(__name__)
_frozen = False


def freeze_startup_heap() -> bool:
    """Collect once, then freeze every object alive now (first call per process only: objects
    frozen later could never be collected). Returns whether this call froze the heap."""
    global _frozen
    if _frozen:
        return False
    _frozen = True
    gc.collect()
    gc.freeze()
    _log.info("start-up heap frozen", extra={"objects": gc.get_freeze_count()})
    return True
