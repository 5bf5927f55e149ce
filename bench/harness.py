"""What the HTTP benchmarks share: subprocesses, a provider stub server, percentiles, /proc.

Not a benchmark itself (`bench/__main__.py` runs only `bench_*.py`). The benchmarks that drive
the REAL service over HTTP start it (`llm-service serve`) and an OpenAI-compatible stub in
subprocesses on 127.0.0.1 with these helpers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]

#: What a stub answers: (the request's JSON body, its size in bytes) -> a chat completion.
Answer = Callable[[dict[str, Any], int], dict[str, Any]]


# -- the provider stub ----------------------------------------------------------------------------


def stub_app(answer: Answer, latency_s: float = 0.0) -> Any:
    """An OpenAI-compatible chat endpoint: `answer` each request after `latency_s`."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request: Request) -> JSONResponse:
        """One chat completion."""
        raw = await request.body()
        payload = answer(json.loads(raw), len(raw))
        if latency_s:
            await asyncio.sleep(latency_s)
        return JSONResponse(payload)

    async def health(_: Request) -> JSONResponse:
        """Up."""
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/health", health),
        ]
    )


def serve_stub(app: Any, port: int) -> None:
    """Serve a stub app on 127.0.0.1 until killed."""
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- processes --------------------------------------------------------------------------------


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a subprocess in its own process group, output to `log`."""
    handle = log.open("wb")
    return subprocess.Popen(
        args, env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a subprocess we started (SIGTERM, then SIGKILL)."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def wait_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until `url` answers 200 (or the process dies)."""
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{url}: the process exited\n{tail(log)}")
            try:
                if (await client.get(url, timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not come up\n{tail(log)}")


def tail(log: Path, chars: int = 3000) -> str:
    """The end of a log file."""
    return log.read_text(errors="replace")[-chars:]


# -- figures ------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def line(values: Sequence[float], scale: float = 1.0) -> str:
    """p50 / p95 / p99 / mean of values (times `scale`), in ms."""
    if not values:
        return "n/a"
    v = [x * scale for x in values]
    return (
        f"p50 {pct(v, 50):6.2f}  p95 {pct(v, 95):6.2f}  p99 {pct(v, 99):6.2f}  "
        f"mean {statistics.fmean(v):6.2f} ms"
    )


# -- memory of process trees (/proc) ------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    """One process's memory, from /proc/<pid>/status (MiB)."""

    pid: int
    hwm: float  # VmHWM: peak resident set
    rss: float  # VmRSS: resident now
    anon: float  # RssAnon: private anonymous memory now
    shmem: float  # RssShmem: shared memory mapped now (PostgreSQL's shared buffers)


def _status(pid: int) -> dict[str, str] | None:
    """The fields of /proc/<pid>/status, or None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return dict(item.split(":", 1) for item in text.splitlines() if ":" in item)


def _mib(fields: dict[str, str], name: str) -> float:
    """A `… kB` field in MiB (0 when absent)."""
    value = fields.get(name, "0 kB").split()
    return int(value[0]) / 1024 if value else 0.0


def tree(root: int) -> list[int]:
    """`root` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _status(int(entry))) is not None:
            children.setdefault(int(fields.get("PPid", "0").strip()), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def memory(pids: Iterable[int]) -> list[Memory]:
    """The memory of each process still alive."""
    out = []
    for pid in pids:
        fields = _status(pid)
        if fields is not None:
            out.append(
                Memory(
                    pid,
                    _mib(fields, "VmHWM"),
                    _mib(fields, "VmRSS"),
                    _mib(fields, "RssAnon"),
                    _mib(fields, "RssShmem"),
                )
            )
    return out
