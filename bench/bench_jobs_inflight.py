"""1,000 investigations in flight on ONE worker process against a 300 ms stub (issue 15).

`python -m bench.bench_jobs_inflight` (and `make bench`) runs `bench_investigations` with
`--runs 1000 --concurrency 1000`: every run claimed at once, their leases kept by the worker's
one batched heartbeat on its own connection. Reported: in flight, runs over budget or time,
leases lost, the machine's load (`uptime`) before and after.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench import bench_investigations

ARGS = ["--runs", "1000", "--concurrency", "1000", "--latency-ms", "300"]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the 1,000-in-flight case (extra options are passed on, e.g. --tenants)."""
    bench_investigations.main([*ARGS, *(argv or [])])


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
