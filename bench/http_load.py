"""A lean HTTP/1.1 load generator and CPU accounting, for benchmarks that share the machine.

Not a benchmark itself. Each client is one keep-alive asyncio stream connection sending request
bytes built once up front, and reading back only what the figures need (status, two headers,
whether the body says it was a cache hit): httpx costs more CPU per request than the hit path
it measures, and the load generator runs on the same cores as the service.

CPU accounting: `CpuMeter` samples the CPU seconds of this process (the clients), of process
trees (the service, PostgreSQL) and of the whole machine, so a run can state what share each
took and how much went to processes that are not ours (other sessions on a shared machine).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

_HEAD_END = b"\r\n\r\n"


@dataclass
class LoadResults:
    """What a run measured: latencies, server-side figures, cache outcomes, errors."""

    client_s: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    cache: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: int = 0
    wall_s: float = 0.0

    def rate(self) -> float:
        """Requests per second."""
        return len(self.client_s) / self.wall_s if self.wall_s else 0.0


def request_bytes(
    host: str, path: str, body: Mapping[str, Any], headers: Mapping[str, str]
) -> bytes:
    """A complete HTTP/1.1 POST of `body` as JSON, keep-alive."""
    payload = json.dumps(body).encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def _record(results: LoadResults, head: bytes, body: bytes, elapsed: float) -> None:
    """Record one response from its raw head and body."""
    results.client_s.append(elapsed)
    status_line, _, rest = head.partition(b"\r\n")
    if status_line[9:12] != b"200":
        results.errors += 1
        return
    if b'"degraded":true' in body:
        results.cache["degraded"] += 1
    elif b'"cache":"hit"' in body:
        results.cache["hit"] += 1
    else:
        results.cache["miss"] += 1
    for raw in rest.split(b"\r\n"):
        name, _, value = raw.partition(b":")
        lowered = name.lower()
        if lowered == b"x-server-time-ms":
            results.server_ms.append(float(value))
        elif lowered == b"server-timing":
            for item in value.decode().split(","):
                phase, _, duration = item.strip().partition(";dur=")
                if duration:
                    results.phases[phase].append(float(duration))


async def _read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One response's head and body (Content-Length framing: what uvicorn sends here)."""
    head = await reader.readuntil(_HEAD_END)
    length = 0
    marker = head.lower().find(b"content-length:")
    if marker >= 0:
        end = head.find(b"\r\n", marker)
        length = int(head[marker + 15 : end])
    body = await reader.readexactly(length) if length else b""
    return head, body


async def hammer(
    host: str,
    port: int,
    requests: Sequence[bytes],
    clients: int,
    seconds: float,
    rate: float | None = None,
    *,
    seed: int = 7,
) -> LoadResults:
    """`clients` keep-alive connections cycling through `requests` for `seconds`.

    Without `rate` each client sends its next request once the last is answered (closed loop:
    the clients saturate the machine); with `rate` (requests/s in all) on a fixed schedule.
    """
    results = LoadResults()
    stop_at = time.perf_counter() + seconds
    rng = random.Random(seed)
    interval = clients / rate if rate else 0.0

    async def client(i: int) -> None:
        """One connection: a request at a time."""
        reader, writer = await asyncio.open_connection(host, port)
        order = list(requests)
        rng.shuffle(order)
        k = i
        due = time.perf_counter() + interval * i / clients
        try:
            while time.perf_counter() < stop_at:
                if interval:
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    due += interval
                data = order[k % len(order)]
                k += 1
                started = time.perf_counter()
                writer.write(data)
                head, body = await _read_response(reader)
                _record(results, head, body, time.perf_counter() - started)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    results.wall_s = time.perf_counter() - started
    return results


# -- CPU accounting -------------------------------------------------------------------------------


def _tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of `root` and its live descendants."""
    try:
        top = psutil.Process(root)
        members = [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in members:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _machine_cpu() -> float:
    """CPU seconds spent by the whole machine (all cores, not idle / iowait)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds at one instant: this process, each named process tree, the machine."""

    at: float
    client: float
    trees: dict[str, float]
    machine: float


class CpuMeter:
    """CPU shares of the clients (this process), named process trees and everything else."""

    def __init__(self, trees: Mapping[str, int]) -> None:
        """Trees by name: the root pid of each (its descendants are counted with it)."""
        self.trees = dict(trees)

    def sample(self) -> CpuSample:
        """The CPU seconds so far."""
        return CpuSample(
            time.perf_counter(),
            time.process_time(),
            {name: _tree_cpu(pid) for name, pid in self.trees.items()},
            _machine_cpu(),
        )

    @staticmethod
    def shares(before: CpuSample, after: CpuSample) -> dict[str, float]:
        """Cores used between two samples: client, each tree, other (not ours), machine."""
        wall = max(after.at - before.at, 1e-9)
        out = {"client": (after.client - before.client) / wall}
        for name in before.trees:
            out[name] = (after.trees[name] - before.trees[name]) / wall
        out["machine"] = (after.machine - before.machine) / wall
        out["other"] = max(0.0, out["machine"] - sum(v for k, v in out.items() if k != "machine"))
        return out


def format_shares(shares: Mapping[str, float]) -> str:
    """Cores used by each, e.g. `client 0.21, serve 1.10, postgres 0.52, other 0.10 of 2`."""
    names = [n for n in shares if n != "machine"]
    text = ", ".join(f"{name} {shares[name]:.2f}" for name in names)
    return f"{text} (machine {shares['machine']:.2f} of {os.cpu_count()} cores)"
