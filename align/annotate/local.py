"""Files of the local Argilla server started by `align annotate serve`.

    <home>/credentials.json   api_url, owner username, password, API key (mode 0600)
    <home>/state.json         pids and ports of the running server, worker and Redis
    <home>/argilla.db         the server's SQLite database (the labels live here until pulled)
    <home>/*.log              server, worker and Redis logs

`<home>` is $ALIGN_ARGILLA_HOME, else `<align cache>/argilla-server` ($ALIGN_CACHE or ~/.cache/align).
The server's own virtual environment is $ALIGN_ARGILLA_SERVER_VENV, else `<align cache>/argilla-server-venv`.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from align.core.errors import AlignError

CREDENTIALS = "credentials.json"
STATE = "state.json"
OWNER = "owner"
WORKSPACE = "align"


def cache_root() -> Path:
    return Path(os.environ.get("ALIGN_CACHE") or Path.home() / ".cache" / "align")


def default_home() -> Path:
    return Path(os.environ.get("ALIGN_ARGILLA_HOME") or cache_root() / "argilla-server")


def server_venv() -> Path:
    """The argilla-server virtual environment: $ALIGN_ARGILLA_SERVER_VENV, else <align cache>/argilla-server-venv
    (where `make argilla-server` / scripts/setup-argilla-server.sh create it). Never looked up in the
    source tree, so an installed (non-editable) align finds it too."""
    return Path(os.environ.get("ALIGN_ARGILLA_SERVER_VENV") or cache_root() / "argilla-server-venv").expanduser()


def private_dirs(folder: Path) -> None:
    """Create `folder` and its missing parents with mode 0700 (they hold labels, names and secrets)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask


def credentials_path(home: str | Path | None = None) -> Path:
    return Path(home or default_home()) / CREDENTIALS


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON readable by the owner only (0600 from the start: never briefly world-readable)."""
    private_dirs(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def ensure_credentials(home: Path, api_url: str) -> dict[str, Any]:
    """The owner's credentials, generated on first use. The api_url is refreshed if the port changed."""
    path = credentials_path(home)
    if path.exists():
        creds = read_credentials(path)
        if creds.get("api_url") != api_url:
            creds["api_url"] = api_url
            write_private_json(path, creds)
        return creds
    creds = {
        "api_url": api_url,
        "username": OWNER,
        "password": secrets.token_urlsafe(18),
        "api_key": secrets.token_urlsafe(32),
        "workspace": WORKSPACE,
    }
    write_private_json(path, creds)
    return creds


def read_credentials(path: str | Path) -> dict[str, Any]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise AlignError(f"Argilla credentials file not found: {path}")
    try:
        creds = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AlignError(f"{path}: credentials must be a JSON object with api_url and api_key ({exc.msg})") from None
    if not isinstance(creds, dict):
        raise AlignError(f"{path}: credentials must be a JSON object with api_url and api_key")
    if path.stat().st_mode & 0o077:
        raise AlignError(f"{path} is readable by other users; restrict it with `chmod 600 {path}`")
    return creds


def masked(secret: str) -> str:
    """A secret as it may be shown: its first four characters only."""
    return f"{secret[:4]}…" if secret else "(none)"
