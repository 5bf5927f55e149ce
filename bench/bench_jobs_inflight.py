"""1,000 investigations in flight on ONE worker process against a 300 ms stub (issue 15).

`python -m bench.bench_jobs_inflight` (and `make bench`) runs `bench_investigations` with
`--runs 1000 --concurrency 1000`: every run claimed at once, their leases kept by the worker's
one batched heartbeat on its own connection. Reported: in flight, runs over budget or time,
leases lost, the machine's load (`uptime`) before and after.

`--loop worker` (the default) runs on the event loop `llm-service worker` runs on
(`llm_service.workers.event_loop`: uvloop where installed); `--loop asyncio` on asyncio's
default loop, to compare.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from bench import bench_investigations
from llm_service.workers import event_loop

ARGS = ["--runs", "1000", "--concurrency", "1000", "--latency-ms", "300"]


class _LoopPolicy(asyncio.DefaultEventLoopPolicy):
    """asyncio's policy, with the worker's loop for `asyncio.run`."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return event_loop.loop_factory()()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the 1,000-in-flight case (extra options are passed on, e.g. --tenants)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--loop", choices=("worker", "asyncio"), default="worker")
    known, rest = parser.parse_known_args(list(argv or []))
    if known.loop == "worker":
        asyncio.set_event_loop_policy(_LoopPolicy())
    loop_name = event_loop.loop_factory().__module__ if known.loop == "worker" else "asyncio"
    print(f"event loop: {loop_name} (--loop {known.loop})")
    bench_investigations.main([*ARGS, *rest])


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
