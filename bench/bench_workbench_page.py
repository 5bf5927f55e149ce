"""The analyst's workbench page (/investigations): its weight and how fast it loads.

The REAL service (`llm-service serve`, embedded PostgreSQL, workers off) serves the page on
127.0.0.1. Reported: the bytes of its HTML, JS and CSS (as served, and gzipped for reference);
the time to fetch all three over HTTP; and, in headless chromium (the tests' DevTools client),
the navigation timings of /investigations (DOMContentLoaded, load) and the time until the page
is signed in and ready (tenant, limits and history fetched). Target: loads in under 200 ms.
Figures only, never pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.harness import ROOT, free_port, line, pct, start, stop, wait_http
from llm_service.db import migrate
from llm_service.db.embedded import embedded_url, start_embedded
from llm_service.tenants.service import create_tenant

ASSETS = (
    "/investigations",
    "/investigations/workbench.js",
    "/investigations/workbench-evidence.js",
    "/investigations/workbench.css",
)


async def _weights(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        total = zipped = 0
        for path in ASSETS:
            body = (await http.get(path)).content
            total += len(body)
            zipped += len(gzip.compress(body))
            print(f"  {path:<32} {len(body):>7,} bytes ({len(gzip.compress(body)):,} gzipped)")
        print(f"  {'total':<32} {total:>7,} bytes ({zipped:,} gzipped)")


async def _http_times(base_url: str, rounds: int) -> None:
    times: list[float] = []
    async with httpx.AsyncClient(base_url=base_url) as http:
        for _ in range(rounds):
            t0 = time.perf_counter()
            for path in ASSETS:
                (await http.get(path)).raise_for_status()
            times.append(time.perf_counter() - t0)
    print(f"  HTML+JS+CSS over HTTP, {rounds} rounds: {line(times, 1000)}")


async def _browser_times(base_url: str, key: str, rounds: int) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.browser import Browser

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("  chromium not installed (`make browser`): browser timings skipped")
        return
    fresh: dict[str, list[float]] = {"dcl": [], "load": [], "ready": []}
    reloaded: dict[str, list[float]] = {"dcl": [], "load": [], "ready": []}
    async with Browser.launch(chromium) as browser:
        for _ in range(rounds):
            page = await browser.new_page()
            await page.goto(f"{base_url}/investigations#key={key}")
            await _timings(page, fresh)
            # The same tab again: its renderer is up, the key is in its sessionStorage.
            await page.goto(f"{base_url}/investigations")
            await _timings(page, reloaded)
            await page.close()
    for name, figures in (("fresh tab", fresh), ("same tab again", reloaded)):
        print(f"  chromium, {rounds} x {name}:")
        print(f"    DOMContentLoaded           {line(figures['dcl'], 1000)}")
        print(f"    load event                 {line(figures['load'], 1000)}")
        print(f"    signed in, history shown   {line(figures['ready'], 1000)}")
    print(
        f"  target: load < 200 ms; load event p50/p95 {pct(fresh['load'], 50) * 1000:.0f}/"
        f"{pct(fresh['load'], 95) * 1000:.0f} ms (fresh tab), "
        f"{pct(reloaded['load'], 50) * 1000:.0f}/{pct(reloaded['load'], 95) * 1000:.0f} ms (again)"
    )


async def _timings(page: Any, into: dict[str, list[float]]) -> None:
    ready_ms = await page.wait_for(
        "() => document.body.dataset.state === 'ready' && performance.now()"
    )
    timing = await page.evaluate(
        "(() => { const n = performance.getEntriesByType('navigation')[0];"
        " return [n.domContentLoadedEventEnd, n.loadEventEnd]; })()"
    )
    into["dcl"].append(timing[0] / 1000)
    into["load"].append(timing[1] / 1000)
    into["ready"].append(float(ready_ms) / 1000)


async def _run(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-workbench-"))
    server = start_embedded(data_dir, cleanup="delete")
    process: subprocess.Popen[bytes] | None = None
    try:
        owner_url = embedded_url(server)
        migrate.upgrade(owner_url)
        pool = await asyncpg.create_pool(owner_url, min_size=1, max_size=2)
        try:
            tenant = await create_tenant(pool, "bench-workbench")
        finally:
            await pool.close()
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("LLM_MODEL", "LLM_API_BASE")},
            "DATABASE_URL": owner_url,
            "WORKERS_IN_PROCESS": "0",
            "LLM_SERVICE_DATA_DIR": str(data_dir),
        }
        log = data_dir / "service.log"
        cli = [sys.executable, "-m", "llm_service.cli", "serve", "--no-migrate"]
        process = start([*cli, "--port", str(port)], env, log)
        base_url = f"http://127.0.0.1:{port}"
        await wait_http(f"{base_url}/healthz", process, log)
        print("page weight (as served, no compression):")
        await _weights(base_url)
        print("load times (from the embedded server on 127.0.0.1):")
        await _http_times(base_url, args.rounds)
        await _browser_times(base_url, tenant.api_key, args.browser_rounds)
    finally:
        if process is not None:
            stop(process)
        server.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=100, help="HTTP fetches of the three files")
    parser.add_argument("--browser-rounds", type=int, default=20, help="fresh tabs in chromium")
    asyncio.run(_run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
