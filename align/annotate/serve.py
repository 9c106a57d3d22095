"""Start a local Argilla for laptops, demos and tests: `align annotate serve`.

Runs the real argilla-server 2.8.0 from its own virtual environment ($ALIGN_ARGILLA_SERVER_VENV,
else ~/.cache/align/argilla-server-venv; `make argilla-server` creates it), with SQLite for the
database, Redis on loopback, and a search engine backed by the server's own SQL database
(align/annotate/server/sql_engine.py, registered as `align-sql`: Elasticsearch and OpenSearch cannot
be installed here). The owner's credentials are generated once and kept in
`<home>/credentials.json` with mode 0600; they are never printed in full and never written into a
manifest. Every other `align annotate` command finds them by itself.
Departures from a production Argilla are listed in sql_engine.py; production runs with
Elasticsearch (annotation/deploy/).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.annotate import local
from align.core.errors import AlignError, ServiceError

log = logging.getLogger(__name__)

LAUNCHER = Path(__file__).resolve().parent / "server" / "launch.py"
ENGINE_NAME = "align-sql"


@dataclass
class Config:
    home: str = ""
    """Server folder: database, credentials, logs (default $ALIGN_ARGILLA_HOME or ~/.cache/align/argilla-server)."""
    port: int = 6900
    """Port of the Argilla web UI and API on 127.0.0.1."""
    redis_port: int = 6390
    """Port of the server's own Redis on 127.0.0.1."""
    server_venv: str = ""
    """Virtual environment with argilla-server (default $ALIGN_ARGILLA_SERVER_VENV, else ~/.cache/align/argilla-server-venv)."""
    worker: bool = True
    """Also start Argilla's background worker (needed to change a dataset's distribution once it has responses)."""
    wait_seconds: float = 120.0
    """How long to wait for the server to answer before giving up."""

    def __post_init__(self):
        for key in ("port", "redis_port"):
            if not 1024 <= getattr(self, key) <= 65535:
                raise AlignError(f"'{key}' must be a port in 1024-65535, got {getattr(self, key)}")


def run(cfg: Config) -> dict[str, Any]:
    home = Path(cfg.home).expanduser() if cfg.home else local.default_home()
    api_url = f"http://127.0.0.1:{cfg.port}"
    state = read_state(home)
    if state and _alive(state.get("server_pid")) and _answers(state["api_url"]):
        print(f"Argilla is already running at {state['api_url']} (home {home}); `align annotate stop` stops it")
        return {**state, "already_running": True}
    if state:
        stop_processes(home, state)  # leftovers of a crashed server
    python = _server_python(cfg)
    redis = shutil.which("redis-server")
    if redis is None:
        raise AlignError("redis-server is not installed: run `make argilla-server` (or `apt-get install redis-server`)")
    if _answers(api_url):
        raise AlignError(f"port {cfg.port} is already serving something at {api_url}; choose another with port=N")

    local.private_dirs(home)
    os.chmod(home, 0o700)
    creds = local.ensure_credentials(home, api_url)
    env = server_env(home, cfg.redis_port)
    state = {"api_url": api_url, "home": str(home), "port": cfg.port, "redis_port": cfg.redis_port}

    subprocess.run(
        [
            redis,
            "--port",
            str(cfg.redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
            "--pidfile",
            str(home / "redis.pid"),
            "--logfile",
            str(home / "redis.log"),
            "--dir",
            str(home),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    state["redis_pid"] = _wait_pidfile(home / "redis.pid")
    write_state(home, state)
    try:
        done = subprocess.run(
            [python, str(LAUNCHER), "init", str(local.credentials_path(home))], env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
            raise AlignError(f"argilla-server database migration or owner creation failed in {home}:\n{tail}")
        state["server_pid"] = _spawn(
            python,
            ["start", "--host", "127.0.0.1", "--port", str(cfg.port), "--no-access-log"],
            env,
            home / "server.log",
        )
        if cfg.worker:
            state["worker_pid"] = _spawn(python, ["worker", "--num-workers", "1"], env, home / "worker.log")
        write_state(home, state)
        _wait_ready(api_url, state["server_pid"], home / "server.log", cfg.wait_seconds)
    except BaseException:
        stop_processes(home, state)
        raise
    print(f"Argilla {api_url} is up (home {home})")
    print(
        f"  owner login: {creds['username']} / password in {local.credentials_path(home)} (mode 0600), "
        f"API key {local.masked(creds['api_key'])}"
    )
    print("  align annotate push/pull/status use it automatically; stop it with `align annotate stop`")
    return {**state, "credentials": str(local.credentials_path(home))}


def server_env(home: Path, redis_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGILLA_")}
    env.update(
        {
            "ARGILLA_HOME_PATH": str(home),
            "ARGILLA_DATABASE_URL": f"sqlite+aiosqlite:///{home / 'argilla.db'}",
            "ARGILLA_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "ARGILLA_SEARCH_ENGINE": ENGINE_NAME,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _server_python(cfg: Config) -> str:
    venv = Path(cfg.server_venv).expanduser() if cfg.server_venv else local.server_venv()
    python = venv.expanduser() / "bin" / "python"
    if not python.exists():
        raise AlignError(
            f"no argilla-server environment at {venv}: create it with `make argilla-server` "
            "(scripts/setup-argilla-server.sh), or point $ALIGN_ARGILLA_SERVER_VENV or server_venv=PATH "
            "at one"
        )
    return str(python)


def _spawn(python: str, args: list[str], env: dict[str, str], logfile: Path) -> int:
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(
            [python, str(LAUNCHER), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return proc.pid


def _wait_pidfile(path: Path, seconds: float = 10.0) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text().strip())
        time.sleep(0.05)
    raise AlignError(f"redis-server did not start (no pid file {path}); see {path.with_name('redis.log')}")


def _wait_ready(api_url: str, pid: int, logfile: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _answers(api_url):
            return
        if not _alive(pid):
            tail = "\n".join(logfile.read_text(errors="replace").strip().splitlines()[-8:])
            raise AlignError(f"argilla-server exited while starting; last lines of {logfile}:\n{tail}")
        time.sleep(0.3)
    raise ServiceError(f"argilla-server at {api_url} did not answer within {seconds:.0f} s; see {logfile}")


def _answers(api_url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api_url}/api/v1/version", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this process counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


# -- state and stopping (shared with stop.py) ------------------------------------------------------


def read_state(home: Path) -> dict[str, Any] | None:
    path = home / local.STATE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def write_state(home: Path, state: dict[str, Any]) -> None:
    (home / local.STATE).write_text(json.dumps(state, indent=2))


def stop_processes(home: Path, state: dict[str, Any], timeout: float = 15.0) -> list[str]:
    """Stop the processes this server started (by their recorded pids), gently then firmly."""
    stopped = []
    for name in ("worker_pid", "server_pid", "redis_pid"):
        pid = state.get(name)
        if not _alive(pid):
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
        stopped.append(name.removesuffix("_pid"))
    (home / local.STATE).unlink(missing_ok=True)
    return stopped


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
