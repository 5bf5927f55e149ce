"""Red team, issue 15: `serve --workers N` and the settings of the hot path.

Hostile values of `--workers`, SERVE_WORKERS, HTTP_LOG_EVERY and HTTP_LOG_SLOW_MS (a clear
start-up error, non-zero exit, no traceback), then ONE real `serve --workers 2` against the
session's database: the job-worker election when the lock is released by another holder, when
its holder is SIGKILLed, and the request log of its processes.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
import uvicorn
from pydantic import ValidationError

from llm_service import cli
from llm_service.api.worker_election import WorkerLock
from llm_service.db.pool import tenant_transaction
from llm_service.db.urls import DatabaseUrls
from llm_service.settings import Settings, get_settings
from llm_service.tenants.service import CreatedTenant
from tests.helpers.served_app import free_port
from tests.helpers.waiting import wait_until, wait_until_sync

TERMINAL = {"succeeded", "budget_exhausted", "timed_out", "failed", "cancelled"}


# -- --workers N on the command line ---------------------------------------------------------


@pytest.fixture
def serve_cli(
    monkeypatch: pytest.MonkeyPatch, database_urls: DatabaseUrls, tmp_path: Path
) -> Iterator[list[dict[str, Any]]]:
    """`llm-service serve` in this process, with uvicorn.run recording what it would start
    (so that a value let through starts nothing: not 1,000 processes on 2 cores)."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: calls.append(k))
    for name, value in (
        ("DATABASE_URL", database_urls.owner),
        ("APP_DATABASE_URL", database_urls.app),
        ("LLM_SERVICE_DATA_DIR", str(tmp_path)),
        ("SERVE_WORKERS", "1"),
    ):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SERVE_WORKERS")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    sigterm = signal.getsignal(signal.SIGTERM)
    get_settings.cache_clear()
    yield calls
    get_settings.cache_clear()
    signal.signal(signal.SIGTERM, sigterm)
    root.handlers[:], root.level = handlers, level


@pytest.mark.parametrize("n", ["0", "-1", "1000"])
def test_hostile_workers_flag_is_a_clear_error(
    serve_cli: list[dict[str, Any]], capsys: pytest.CaptureFixture[str], n: str
) -> None:
    code = cli.main(["serve", "--no-migrate", "--workers", n])
    err = capsys.readouterr().err
    assert serve_cli == [], f"--workers {n} started uvicorn with {serve_cli}"
    assert code != 0
    assert "workers" in err.lower() and "Traceback" not in err


def test_non_numeric_workers_flag_is_a_clear_error(
    serve_cli: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["serve", "--no-migrate", "--workers", "two"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "--workers" in err and "two" in err and "Traceback" not in err
    assert serve_cli == []


# -- the settings from the environment -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SERVE_WORKERS", "0"),
        ("SERVE_WORKERS", "-1"),
        ("SERVE_WORKERS", "1000"),
        ("SERVE_WORKERS", "two"),
        ("HTTP_LOG_EVERY", "-1"),
        ("HTTP_LOG_EVERY", "ten"),
        ("HTTP_LOG_SLOW_MS", "0"),
        ("HTTP_LOG_SLOW_MS", "-5"),
        ("HTTP_LOG_SLOW_MS", "nan"),
        ("HTTP_LOG_SLOW_MS", "abc"),
    ],
)
def test_hostile_setting_is_a_clear_start_up_error(
    database_urls: DatabaseUrls, tmp_path: Path, name: str, value: str
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": database_urls.owner,
        "APP_DATABASE_URL": database_urls.app,
        "LLM_SERVICE_DATA_DIR": str(tmp_path),
        name: value,
    }
    port = str(free_port())
    done = subprocess.run(
        [sys.executable, "-m", "llm_service.cli", "serve", "--no-migrate", "--port", port],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,  # a safety net: a value let through would start serving
    )
    assert done.returncode != 0
    assert name.lower() in done.stderr.lower()
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("value", ["inf", "1e400"])
def test_infinite_slow_threshold_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("HTTP_LOG_SLOW_MS", value)
    with pytest.raises(ValidationError):
        Settings()


# -- the lock file itself ---------------------------------------------------------------------


def test_a_stale_or_symlinked_lock_file_still_elects_exactly_one(tmp_path: Path) -> None:
    lock = tmp_path / "serve-worker.lock"
    lock.write_text("left by a crashed process\n")  # a stale file: nobody holds its flock
    first = WorkerLock(lock)
    assert first.acquire()
    # The same file through a symlink (a data dir laid out with links) is the same lock.
    link = tmp_path / "link.lock"
    link.symlink_to(lock)
    assert not WorkerLock(link).acquire()
    assert not WorkerLock(lock).acquire()
    first.release()
    via_link = WorkerLock(link)
    assert via_link.acquire()
    assert not WorkerLock(lock).acquire()
    via_link.release()


# -- one real `serve --workers 2` ------------------------------------------------------------


@dataclass
class Serve:
    """A `serve --workers 2` process, its stderr file and the election's lock file."""

    proc: subprocess.Popen[bytes]
    port: int
    lock_path: Path
    stderr: Path
    outsider: WorkerLock  # another holder of the lock when serve started (a second serve)

    def children(self) -> list[int]:
        """The serving processes (uvicorn's spawned workers, not its resource tracker)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.proc.pid and b"spawn_main" in cmdline:
                found.append(int(entry.name))
        return found

    def holder(self) -> int | None:
        """The pid holding the election's flock, if any."""
        inode = self.lock_path.stat().st_ino
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "FLOCK" in fields and fields[5].rsplit(":", 1)[-1] == str(inode):
                return int(fields[4])
        return None

    def serving(self, pid: int) -> bool:
        """Whether process `pid` accepts connections: its event loop watches the listening
        socket (uvicorn starts serving only after the application's lifespan started up)."""
        port = f"{self.port:04X}"
        listening = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[1].endswith(":" + port) and fields[3] == "0A":
                    listening.add(f"socket:[{fields[9]}]")
        fds = Path(f"/proc/{pid}/fd")
        try:
            links = {fd.name: os.readlink(fd) for fd in fds.iterdir()}
            listen_fds = {name for name, link in links.items() if link in listening}
            for name, link in links.items():
                if link == "anon_inode:[eventpoll]":
                    info = Path(f"/proc/{pid}/fdinfo/{name}").read_text()
                    watched = {ln.split()[1] for ln in info.splitlines() if ln.startswith("tfd:")}
                    if watched & listen_fds:
                        return True
        except OSError:
            return False
        return False

    def all_serving(self) -> bool:
        """Both serving processes exist and accept connections (their start-up is over)."""
        children = self.children()
        return len(children) == 2 and all(self.serving(pid) for pid in children)

    def live_holder(self) -> int | None:
        """The lock's holder if it is one of serve's live processes."""
        pid = self.holder()
        return pid if pid is not None and pid in self.children() else None

    def stop(self) -> str:
        """SIGTERM, wait for the exit; the whole stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=120)
        return self.stderr.read_text(errors="replace")


@pytest.fixture(scope="module")
def serve_two(
    database_urls: DatabaseUrls, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Serve]:
    data_dir = tmp_path_factory.mktemp("serve-two")
    lock_path = data_dir / "serve-worker.lock"
    outsider = WorkerLock(lock_path)
    assert outsider.acquire()
    port = free_port()
    stderr = data_dir / "stderr.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_urls.owner,
        "APP_DATABASE_URL": database_urls.app,
        "LLM_SERVICE_DATA_DIR": str(data_dir),
        "HTTP_LOG_EVERY": "1",
    }
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llm_service.cli",
                "serve",
                "--no-migrate",
                "--workers",
                "2",
                "--port",
                str(port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    serve = Serve(proc, port, lock_path, stderr, outsider)

    def ready() -> bool:
        assert proc.poll() is None, stderr.read_text(errors="replace")[-3000:]
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until_sync(ready, "serve --workers 2 answered /healthz", timeout=120)
        wait_until_sync(serve.all_serving, "both serve processes accept connections")
        yield serve
    finally:
        serve.stop()
        outsider.release()


def test_a_released_lock_is_taken_by_a_running_serve_process(serve_two: Serve) -> None:
    assert serve_two.live_holder() is None  # the outsider had it: no serve process runs jobs
    serve_two.outsider.release()
    # A safety net of 20 s: 40 job-worker poll intervals, a generous re-election delay.
    wait_until_sync(serve_two.live_holder, "a serve process took the released lock", timeout=20)


async def test_a_killed_holder_is_replaced_and_runs_go_on(
    serve_two: Serve, tenant: CreatedTenant, owner_pool: asyncpg.Pool
) -> None:
    serve_two.outsider.release()
    if serve_two.live_holder() is None:
        # Nobody re-elected (see above): a restarted process does take the lock at start-up.
        os.kill(serve_two.children()[0], signal.SIGKILL)
        await wait_until(_async(serve_two.live_holder), "a restarted serve process took the lock")
    first = serve_two.live_holder()
    assert first is not None
    os.kill(first, signal.SIGKILL)  # a crash: no graceful release, the lock file stays

    def replaced() -> int | None:
        pid = serve_two.live_holder()
        return pid if pid not in (None, first) else None

    second = await wait_until(_async(replaced), "another serve process took over the job worker")
    assert second != first and serve_two.holder() == second
    # The job worker runs: an investigation asked for now ends.
    auth = {"Authorization": f"Bearer {tenant.api_key}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{serve_two.port}") as http:
        created = await http.post(
            "/v1/investigations",
            json={"question": "Why did revenue fall last week?", "timeout_s": 30},
            headers=auth,
        )
        assert created.status_code == 202, created.text
        run = created.json()["id"]

        async def ended() -> bool:
            got = await http.get(f"/v1/investigations/{run}", headers=auth)
            return got.json()["status"] in TERMINAL

        try:
            await wait_until(ended, "the investigation ended after the takeover")
        finally:
            # No row left behind for later tests that count every tenant's runs.
            async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
                await conn.execute("DELETE FROM investigations WHERE id = $1", UUID(run))


def _async(check: Any) -> Any:
    async def run() -> Any:
        return check()

    return run


def test_serve_processes_log_failed_requests(serve_two: Serve) -> None:
    base = f"http://127.0.0.1:{serve_two.port}"
    statuses = [
        httpx.get(f"{base}/v1/tenants/me", headers={"Authorization": "Bearer lsk_nope"}).status_code
        for _ in range(4)  # both processes answer some, whatever the kernel's spread
    ]
    assert statuses == [401] * 4
    text = serve_two.stop()
    logged = [
        line
        for line in text.splitlines()
        if '"message": "request"' in line and '"status": 401' in line
    ]
    assert len(logged) == 4, text[-3000:]
