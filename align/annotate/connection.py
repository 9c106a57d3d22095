"""A connection to an Argilla server (hosted with Elasticsearch, or the local one) over its REST API.

Where the URL and API key come from, first found wins:
1. `argilla.api_url` in the config (URL only; API keys never go into configs or manifests);
2. the environment: ARGILLA_API_URL, ARGILLA_API_KEY;
3. `argilla.credentials`: a JSON file `{"api_url": ..., "api_key": ...}` readable by its owner only;
4. the local server's credentials, written by `align annotate serve`.

Faults: an unreachable server, a timeout or a 5xx answer is retried with exponential backoff for
`argilla.retry_seconds`, then raises `ServiceError` (exit 1) naming the URL. A rejected API key
(401) raises `AlignError` (exit 2) saying so; so do 403 (role) and 422 (a payload the server refuses).
The REST API is used directly (not the `argilla` SDK) so that every call goes through one retry and
error policy and large pulls stay fast; the endpoints are those the SDK itself calls.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Iterator

from align.annotate import local
from align.core.errors import AlignError, ServiceError

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-Argilla-Api-Key"
PAGE = 1000  # the list endpoint's maximum page
UPSERT_BATCH = 500  # the bulk endpoint's maximum


@dataclass
class ArgillaConfig:
    """Which Argilla server to talk to, and how patiently."""

    api_url: str = ""
    """Argilla URL. Empty: $ARGILLA_API_URL, else the credentials file's."""
    credentials: str = ""
    """JSON file with api_url and api_key (mode 0600). Empty: $ARGILLA_API_KEY, else the local server's (`align annotate serve`)."""
    workspace: str = "align"
    """Workspace holding the datasets (created by push if missing)."""
    retry_seconds: float = 30.0
    """How long to keep retrying an unreachable server or a 5xx answer before giving up (exit 1)."""
    timeout: float = 120.0
    """Seconds to wait for one HTTP answer."""

    def __post_init__(self):
        if self.retry_seconds < 0:
            raise AlignError(f"'argilla.retry_seconds' must be >= 0, got {self.retry_seconds}")
        if self.timeout <= 0:
            raise AlignError(f"'argilla.timeout' must be > 0, got {self.timeout}")


class NotFound(Exception):
    """A 404 from Argilla; callers that expect it turn it into a clear message."""


class Forbidden(AlignError):
    """A 403 from Argilla: the key's user lacks the role for this call."""


class Connection:
    """REST calls with one retry and error policy. Use `connect(cfg)`."""

    def __init__(self, api_url: str, api_key: str, source: str, retry_seconds: float = 30.0, timeout: float = 120.0):
        import httpx

        self.api_url = api_url.rstrip("/")
        self.source = source
        self.retry_seconds = retry_seconds
        self._http = httpx.Client(base_url=self.api_url, headers={API_KEY_HEADER: api_key}, timeout=timeout)
        self._users: dict[str, str] = {}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs) -> Any:
        """JSON of a successful answer; retries transport failures and 5xx; maps 4xx to clear errors."""
        import httpx

        deadline = time.monotonic() + self.retry_seconds
        delay, tries = 0.5, 0
        while True:
            tries += 1
            try:
                resp = self._http.request(method, path, **kwargs)
                problem = None if resp.status_code < 500 else f"HTTP {resp.status_code}"
            except httpx.TransportError as exc:  # refused, reset, timed out, DNS
                resp, problem = None, f"{type(exc).__name__}: {exc}".rstrip(": ")
            if problem is None:
                break
            if time.monotonic() + delay > deadline:
                raise ServiceError(
                    f"Argilla at {self.api_url} is not answering ({method} {path}: {problem}; {tries} tries over "
                    f"{self.retry_seconds:.0f} s). Is the server running? (`align annotate serve` starts a local "
                    "one; `argilla.retry_seconds` waits longer)"
                )
            log.warning("Argilla at %s: %s; retrying in %.1f s", self.api_url, problem, delay)
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
        return self._answer(resp, method, path)

    def _answer(self, resp, method: str, path: str) -> Any:
        code = resp.status_code
        if code == 401:
            raise AlignError(
                f"Argilla at {self.api_url} rejected the API key (401 Unauthorized; key from {self.source}). "
                "Set ARGILLA_API_KEY to a valid key (Argilla UI: My settings -> API key)"
            )
        if code == 403:
            raise Forbidden(
                f"Argilla at {self.api_url} refused {method} {path} (403 Forbidden): the API key's user lacks the "
                "role; push, pull and status need an owner or admin key"
            )
        if code == 404:
            raise NotFound(f"{method} {path}")
        if code >= 400:
            raise AlignError(f"Argilla at {self.api_url} refused {method} {path} ({code}): {_detail(resp)}")
        if code == 204 or not resp.content:
            return None
        return resp.json()

    # -- conveniences --------------------------------------------------------------------------
    def get(self, path: str, **params) -> Any:
        return self.request("GET", path, params=params or None)

    def me(self) -> dict[str, Any]:
        return self.get("/api/v1/me")

    def username(self, user_id: str) -> str:
        """An annotator's username (cached); the id itself if the user was deleted."""
        if not self._users:
            try:
                for user in self.get("/api/v1/users")["items"]:
                    self._users[user["id"]] = user["username"]
            except Forbidden:  # an admin key may not list users: fall back to one lookup each
                self._users[""] = ""
        if user_id not in self._users:
            try:
                self._users[user_id] = self.get(f"/api/v1/users/{user_id}")["username"]
            except (NotFound, Forbidden):  # deleted, or not visible to this key: the id names them
                self._users[user_id] = user_id
        return self._users[user_id]

    def workspace_id(self, name: str, create: bool = False) -> str | None:
        for ws in self.get("/api/v1/me/workspaces")["items"]:
            if ws["name"] == name:
                return ws["id"]
        if not create:
            return None
        return self.request("POST", "/api/v1/workspaces", json={"name": name})["id"]

    def find_dataset(self, name: str, workspace: str) -> dict[str, Any] | None:
        ws_id = self.workspace_id(workspace)
        if ws_id is None:
            return None
        for ds in self.get("/api/v1/me/datasets")["items"]:
            if ds["name"] == name and ds["workspace_id"] == ws_id:
                return ds
        return None

    def dataset(self, name: str, workspace: str) -> dict[str, Any]:
        """An existing dataset, or an AlignError listing the datasets there are."""
        ds = self.find_dataset(name, workspace)
        if ds is None:
            names = sorted(d["name"] for d in self.get("/api/v1/me/datasets")["items"])
            raise AlignError(
                f"no dataset '{name}' in workspace '{workspace}' at {self.api_url} "
                f"(datasets there: {', '.join(names) or 'none'}); push pairs first with `align annotate push`"
            )
        return ds

    def records(self, dataset_id: str, responses: bool = True) -> Iterator[dict[str, Any]]:
        """Every record of a dataset, a page at a time, with its responses."""
        offset = 0
        params: dict[str, Any] = {"limit": PAGE}
        if responses:
            params["include"] = "responses"
        while True:
            page = self.request("GET", f"/api/v1/datasets/{dataset_id}/records", params={**params, "offset": offset})
            items = page["items"]
            yield from items
            if len(items) < PAGE:
                return
            offset += len(items)


def _detail(resp) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return str(detail)[:500]


def connect(cfg: ArgillaConfig) -> Connection:
    """A checked connection: the URL answers and the API key is accepted (one GET /api/v1/me)."""
    api_url, api_key, source = resolve(cfg)
    conn = Connection(api_url, api_key, source, cfg.retry_seconds, cfg.timeout)
    try:
        conn.me()
    except BaseException:
        conn.close()
        raise
    return conn


def resolve(cfg: ArgillaConfig) -> tuple[str, str, str]:
    """(api_url, api_key, where the key came from). The key itself is never logged."""
    creds: dict[str, Any] = {}
    creds_source = ""
    if cfg.credentials:
        creds, creds_source = local.read_credentials(cfg.credentials), cfg.credentials
    elif not os.environ.get("ARGILLA_API_KEY") and local.credentials_path().exists():
        creds, creds_source = local.read_credentials(local.credentials_path()), str(local.credentials_path())
    api_url = cfg.api_url or os.environ.get("ARGILLA_API_URL") or creds.get("api_url", "")
    if os.environ.get("ARGILLA_API_KEY") and not cfg.credentials:
        api_key, source = os.environ["ARGILLA_API_KEY"], "$ARGILLA_API_KEY"
    else:
        api_key, source = creds.get("api_key", ""), creds_source
    if not api_url or not api_key:
        missing = " and ".join(n for n, v in (("URL", api_url), ("API key", api_key)) if not v)
        raise AlignError(
            f"no Argilla {missing}: set ARGILLA_API_URL and ARGILLA_API_KEY, give argilla.credentials=FILE "
            "(JSON with api_url and api_key), or start a local server with `align annotate serve`"
        )
    return api_url, api_key, source
