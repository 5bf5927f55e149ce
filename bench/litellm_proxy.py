"""Start the LiteLLM proxy (no database) in front of a stub, for bench_gateway's proxy column.

`pip install 'litellm[proxy]'` does not resolve here (its pinned `litellm-proxy` companion is not
in the registry); the proxy's code ships in litellm itself, so an interpreter with the extra's
other dependencies can run it. BENCH_LITELLM_PROXY_PYTHON names that interpreter (default: the
current one); when it cannot import the proxy the column is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

MASTER_KEY = "sk-bench-proxy-0123456789abcdef0123456789abcdef"
_CONFIG = """model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {base}
      api_key: sk-bench
litellm_settings:
  num_retries: 0
"""


@dataclass
class RunningProxy:
    """A proxy process and the base URL it serves on."""

    process: subprocess.Popen[bytes]
    base: str
    log: Path

    def cpu_seconds(self) -> float:
        """User + system CPU the proxy process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Terminate the proxy (and wait for it), then delete its folder (config and log)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.log.parent, ignore_errors=True)


def proxy_python() -> str:
    """The interpreter the proxy runs under."""
    return os.environ.get("BENCH_LITELLM_PROXY_PYTHON", sys.executable)


def why_not_installed() -> str | None:
    """None if the proxy can be imported under `proxy_python()`, else the error's last line."""
    probe = subprocess.run(
        [proxy_python(), "-c", "import fastapi, uvicorn, litellm.proxy.proxy_server"],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(),
    )
    if probe.returncode == 0:
        return None
    lines = (probe.stderr or probe.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit status {probe.returncode}"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LITELLM_MASTER_KEY=MASTER_KEY,
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_OFFLINE_MODE="true",
        LITELLM_LOG="ERROR",
        DISABLE_AIOHTTP_TRANSPORT="false",
    )
    env.pop("DATABASE_URL", None)  # no database: the proxy then keeps no spend records
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_proxy(stub_base: str, *, ready_within_s: float = 120.0) -> RunningProxy:
    """Start `litellm --config` on a free loopback port; raise RuntimeError if it never answers."""
    folder = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    config = folder / "config.yaml"
    config.write_text(_CONFIG.format(base=stub_base))
    log = folder / "proxy.log"
    port = _free_port()
    command = [
        proxy_python(),
        "-c",
        "import sys; from litellm.proxy.proxy_cli import run_server; sys.exit(run_server())",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_env())
    proxy = RunningProxy(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + ready_within_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError("the proxy exited: " + " | ".join(tail))
        try:
            if httpx.get(proxy.base + "/health/liveliness", timeout=1.0).status_code == 200:
                return proxy
        except httpx.HTTPError:
            pass
        time.sleep(0.5)  # start-up poll (a benchmark, not a test)
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    proxy.stop()
    raise RuntimeError(
        f"the proxy did not answer within {ready_within_s:.0f} s: " + " | ".join(tail)
    )
