"""A wheel built from the repository works without the source tree: it migrates and serves.

The wheel is built with `pip wheel --no-deps` and installed into a fresh virtual environment
whose only view of the dependencies is the test venv's site-packages, appended through a .pth
line (which adds the folder to sys.path but runs none of its .pth files, so the editable install
of this checkout stays invisible). Every command runs from an empty folder, so nothing can be
imported from the checkout: the migrations must come from inside the installed package.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import pytest

from llm_service.db import migrate

ROOT = Path(__file__).resolve().parents[1]


def _env(data_dir: Path) -> dict[str, str]:
    drop = ("DATABASE_URL", "APP_DATABASE_URL", "PYTHONPATH", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "LLM_SERVICE_DATA_DIR": str(data_dir), "WORKERS_IN_PROCESS": "0"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a fresh venv holding only the wheel (dependencies borrowed)."""
    base = tmp_path_factory.mktemp("wheel")
    wheels = base / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        cwd=base,
        timeout=600,
    )
    (wheel,) = wheels.glob("llm_service-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
         str(wheel)],
        check=True,
        cwd=base,
        timeout=600,
    )  # fmt: skip
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "zz_test_venv_dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    return venv / "bin"


def test_the_installed_package_is_the_wheel_and_carries_its_migrations(
    installed: Path, tmp_path: Path
) -> None:
    probe = (
        "import llm_service, llm_service.db.migrate as m; "
        "print(llm_service.__file__); print(m.MIGRATIONS_DIR); "
        "print(sorted(p.name for p in (m.MIGRATIONS_DIR / 'versions').iterdir() if p.is_dir()))"
    )
    out = subprocess.run(
        [str(installed / "python"), "-c", probe],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path),
    ).stdout.splitlines()
    venv = installed.parent.resolve()
    assert Path(out[0]).resolve().is_relative_to(venv), out[0]
    assert Path(out[1]).resolve().is_relative_to(venv), out[1]
    assert "001_core_schema" in out[2] and all(head in out[2] for head in migrate.heads())


def test_the_wheel_migrates_an_embedded_server_and_serves(installed: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    migrated = subprocess.run(
        [str(installed / "llm-service"), "migrate"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(data),
        timeout=300,
    )
    assert migrated.returncode == 0, migrated.stderr
    assert migrate.heads()[0] in migrated.stdout

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve = subprocess.Popen(
        [str(installed / "llm-service"), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env=_env(data),
    )
    seen: list[str] = []
    try:
        assert serve.stdout is not None
        # Synchronise on uvicorn's own start-up line (the process ends the stream if it dies).
        for line in serve.stdout:
            seen.append(line)
            if "Uvicorn running on" in line or "Application startup complete" in line:
                break
        assert serve.poll() is None, "".join(seen)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz", timeout=10).json() == {"status": "ok"}
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["revision"] == migrate.heads()
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.communicate()
    assert serve.returncode == 0, "".join(seen)
