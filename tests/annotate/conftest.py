"""A real local Argilla for the annotate integration tests, started once per session.

The server is the one `align annotate serve` starts (argilla-server 2.8.0 in .venv-argilla-server,
SQLite, Redis, the SQL-backed search engine), on free loopback ports with a temporary home.
`make argilla-server` installs what it needs. Annotators act through the REST API exactly as the web
UI does: log in at /api/v1/token, then POST /api/v1/records/{id}/responses.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from align.annotate import local, serve
from align.annotate.connection import ArgillaConfig, Connection


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalArgilla:
    def __init__(self, home: Path):
        self.home = home
        self.cfg = serve.Config(home=str(home), port=free_port(), redis_port=free_port(), worker=False)
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

    def owner(self) -> Connection:
        creds = json.loads(self.credentials.read_text())
        return Connection(self.api_url, creds["api_key"], "test", retry_seconds=5)

    def annotator(self, username: str) -> "Annotator":
        """An annotator user in the `align` workspace (created on first use), logged in like the UI."""
        with self.owner() as conn:
            users = {u["username"]: u for u in conn.get("/api/v1/users")["items"]}
            if username not in users:
                user = conn.request("POST", "/api/v1/users", json={
                    "first_name": username.title(), "username": username, "password": f"{username}-pass-1234",
                    "role": "annotator"})
                ws = conn.workspace_id("align", create=True)
                conn.request("POST", f"/api/v1/workspaces/{ws}/users", json={"user_id": user["id"]})
        return Annotator(self.api_url, username, f"{username}-pass-1234")


class Annotator:
    def __init__(self, api_url: str, username: str, password: str):
        import httpx

        self.username = username
        token = httpx.post(f"{api_url}/api/v1/token", data={"username": username, "password": password})
        token.raise_for_status()
        self.http = httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {token.json()['access_token']}"})

    def respond(self, argilla_record_id: str, status: str = "submitted", **answers) -> None:
        """Answer by *shown* position (preference A/B/tie) as an annotator would; `values` always present."""
        values = {name: {"value": value} for name, value in answers.items()}
        resp = self.http.post(f"/api/v1/records/{argilla_record_id}/responses", json={"values": values, "status": status})
        assert resp.status_code == 201, resp.text


@pytest.fixture(scope="session")
def argilla(tmp_path_factory):
    server = LocalArgilla(tmp_path_factory.mktemp("argilla-home"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    return tmp_path / "runs"
