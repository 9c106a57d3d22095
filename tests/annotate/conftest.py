"""A real local Argilla for the annotate integration tests, started once per session.

The server is the one `align annotate serve` starts (argilla-server 2.8.0 in its own venv:
$ALIGN_ARGILLA_SERVER_VENV, ~/.cache/align/argilla-server-venv, or .venv-argilla-server in the
checkout; SQLite, Redis, the SQL-backed search engine), on free loopback ports with a temporary
home. `make argilla-server` installs what it needs. Annotators act through the REST API exactly as
the web UI does: log in at /api/v1/token, then POST /api/v1/records/{id}/responses. The owner's
side of the fixtures (making users, reading records back) is plain REST too, independent of the
SDK code under test.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
from pathlib import Path

import pytest

from align.annotate import local, serve
from align.annotate.connection import ArgillaConfig
from tests.browser import headless_chromium

REPO = Path(__file__).resolve().parents[2]


def server_venv() -> str:
    """Where the tests find argilla-server: as `align annotate serve` does, else the checkout's venv."""
    found = local.server_venv()
    return str(found if (found / "bin" / "python").exists() else REPO / ".venv-argilla-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalArgilla:
    def __init__(self, home: Path):
        self.home = home
        self.cfg = serve.Config(
            home=str(home), port=free_port(), redis_port=free_port(), worker=False, server_venv=server_venv()
        )
        self.credentials = local.credentials_path(home)

    def start(self) -> None:
        serve.run(self.cfg)

    def stop(self) -> None:
        state = serve.read_state(self.home)
        if state:
            serve.stop_processes(self.home, state)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.port}"

    def argilla_config(self, **overrides) -> ArgillaConfig:
        return ArgillaConfig(credentials=str(self.credentials), **overrides)

    def owner(self) -> OwnerREST:
        creds = json.loads(self.credentials.read_text())
        return OwnerREST(self.api_url, creds["api_key"])

    def records_by_id(self, dataset: str) -> dict[str, dict]:
        """external id -> the record as the server holds it, with its responses."""
        with self.owner() as conn:
            ds = conn.dataset(dataset, "align")
            return {r["external_id"]: r for r in conn.records(ds["id"], responses=True)}

    def signed_in_browser(self, profile: Path) -> list[str]:
        """Headless Chromium signed in as the owner the way Argilla's UI supports (`?auth=` base64
        user:password); the session stays in `profile`, so later calls with the command open pages."""
        creds = json.loads(self.credentials.read_text())
        auth = base64.b64encode(f"{creds['username']}:{creds['password']}".encode()).decode()
        browser = headless_chromium(profile, "1400,1000", 15000)
        subprocess.run(
            [*browser, "--dump-dom", f"{self.api_url}/sign-in?auth={auth}"], capture_output=True, timeout=90, check=True
        )
        return browser

    def annotator(self, username: str) -> Annotator:
        """An annotator user in the `align` workspace (created on first use), logged in like the UI."""
        with self.owner() as conn:
            users = {u["username"]: u for u in conn.get("/api/v1/users")["items"]}
            if username not in users:
                user = conn.request(
                    "POST",
                    "/api/v1/users",
                    json={
                        "first_name": username.title(),
                        "username": username,
                        "password": f"{username}-pass-1234",
                        "role": "annotator",
                    },
                )
                ws = conn.workspace_id("align", create=True)
                conn.request("POST", f"/api/v1/workspaces/{ws}/users", json={"user_id": user["id"]})
        return Annotator(self.api_url, username, f"{username}-pass-1234")


class OwnerREST:
    """The owner's REST calls the fixtures need (what the UI's settings pages call)."""

    def __init__(self, api_url: str, api_key: str):
        import httpx

        self.http = httpx.Client(base_url=api_url, headers={"X-Argilla-Api-Key": api_key}, timeout=60)

    def __enter__(self) -> OwnerREST:
        return self

    def __exit__(self, *exc) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs):
        resp = self.http.request(method, path, **kwargs)
        assert resp.status_code < 400, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json() if resp.content else None

    def get(self, path: str, **params):
        return self.request("GET", path, params=params or None)

    def workspace_id(self, name: str, create: bool = False) -> str | None:
        for ws in self.get("/api/v1/me/workspaces")["items"]:
            if ws["name"] == name:
                return ws["id"]
        return self.request("POST", "/api/v1/workspaces", json={"name": name})["id"] if create else None

    def dataset(self, name: str, workspace: str = "align") -> dict:
        ws = self.workspace_id(workspace)
        return next(
            d for d in self.get("/api/v1/me/datasets")["items"] if d["name"] == name and d["workspace_id"] == ws
        )

    def records(self, dataset_id: str, responses: bool = True) -> list[dict]:
        params = {"limit": 1000, **({"include": "responses"} if responses else {})}
        return self.get(f"/api/v1/datasets/{dataset_id}/records", **params)["items"]


class Annotator:
    def __init__(self, api_url: str, username: str, password: str):
        import httpx

        self.username = username
        token = httpx.post(f"{api_url}/api/v1/token", data={"username": username, "password": password}, timeout=60)
        token.raise_for_status()
        self.http = httpx.Client(
            base_url=api_url, timeout=60, headers={"Authorization": f"Bearer {token.json()['access_token']}"}
        )

    def respond(self, argilla_record_id: str, status: str = "submitted", **answers) -> dict:
        """Answer by *shown* position (preference A/B/tie) as an annotator would; `values` always present."""
        values = {name: {"value": value} for name, value in answers.items()}
        resp = self.http.post(
            f"/api/v1/records/{argilla_record_id}/responses", json={"values": values, "status": status}
        )
        assert resp.status_code == 201, resp.text
        return resp.json()

    def update(self, response_id: str, status: str, **answers) -> None:
        """Change one's own response (e.g. back to draft), as the UI does: PUT /api/v1/responses/{id}."""
        values = {name: {"value": value} for name, value in answers.items()}
        resp = self.http.put(f"/api/v1/responses/{response_id}", json={"values": values, "status": status})
        assert resp.status_code == 200, resp.text

    def delete(self, response_id: str) -> None:
        resp = self.http.delete(f"/api/v1/responses/{response_id}")
        assert resp.status_code == 200, resp.text


def shown_orders(runs_dir: Path) -> dict[str, str]:
    """record id -> the candidate shown as A, from the push runs under `runs_dir` (the server does not have it)."""
    return {
        r["record_id"]: r["shown_as_a"]
        for path in Path(runs_dir).glob("*/records.jsonl")
        for r in map(json.loads, path.read_text().splitlines())
    }


# The `argilla` fixture (one local server per test session) is in tests/conftest.py: the loop tests share it.


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    return tmp_path / "runs"
