"""Invite an annotation team: users and a workspace from a small YAML file.

    python -m align.annotate.team annotation/team.example.yaml [--credentials FILE]

The file names a workspace and the users to put in it, by role (`annotators`, `admins`). Users that
do not exist yet are created with a generated password; those passwords are written to a file
readable by its owner only (never printed), for the annotation lead to hand out:
`<server home>/team-<workspace>.json` (the server home is $ALIGN_ARGILLA_HOME, else
~/.cache/align/argilla-server), or `--passwords FILE`. Existing users are
only added to the workspace. Connection as for every `align annotate` command (ARGILLA_API_URL /
ARGILLA_API_KEY, `--credentials`, or the local server); an owner's API key is needed.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path
from typing import Any

import yaml

from align.annotate import local
from align.annotate.connection import ArgillaConfig, connect, sdk
from align.core.errors import AlignError

ROLES = {"annotators": "annotator", "admins": "admin"}


def read_team(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise AlignError(f"team file not found: {path}")
    team = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(team) - {"workspace", *ROLES}
    if unknown:
        raise AlignError(f"{path}: unknown key(s) {sorted(unknown)}; a team file has workspace, annotators, admins")
    if not team.get("workspace"):
        raise AlignError(f"{path}: `workspace` is required")
    for key in ROLES:
        names = team.get(key) or []
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise AlignError(f"{path}: `{key}` must be a list of usernames")
    return team


def invite(team: dict[str, Any], cfg: ArgillaConfig, passwords_file: Path) -> dict[str, Any]:
    """Create missing users, add everyone to the workspace. Returns {created, added, workspace, ids}.

    Each new user's password is written to `passwords_file` as soon as the user exists, so an
    interrupted invite never leaves a user nobody knows the password of.
    """
    rg = sdk()
    created: list[str] = []
    added = []
    ids: dict[str, str] = {}
    with connect(cfg) as conn:
        ws = conn.workspace(team["workspace"], create=True)
        users = {u.username: u for u in conn.call("GET users", lambda: list(conn.client.users))}
        members = {u.id for u in conn.call(f"GET users of workspace {ws.name}", lambda: list(ws.users))}
        for key, role in ROLES.items():
            for name in team.get(key) or []:
                user = users.get(name)
                if user is None:
                    password = secrets.token_urlsafe(12)
                    new = rg.User(username=name, first_name=name, password=password, role=role, client=conn.client)
                    user = conn.call(f"POST user {name}", new.create, idempotent=False)
                    existing = local.read_credentials(passwords_file) if passwords_file.exists() else {}
                    local.write_private_json(
                        passwords_file, {**existing, "api_url": conn.api_url, f"password:{name}": password}
                    )
                    created.append(name)
                ids[name] = str(user.id)
                if user.id not in members:
                    conn.call(f"POST user {name} to workspace {ws.name}", lambda: ws.add_user(user), idempotent=False)
                    added.append(name)
        api_url = conn.api_url
    return {"workspace": team["workspace"], "created": sorted(created), "added": added, "api_url": api_url, "ids": ids}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m align.annotate.team", description=__doc__.splitlines()[0])
    ap.add_argument("team", help="team YAML: workspace, annotators, admins")
    ap.add_argument("--credentials", default="", help="owner credentials JSON (default: env, then the local server's)")
    ap.add_argument(
        "--passwords",
        default="",
        help="where new users' passwords go (mode 0600; default: "
        "<server home>/team-<workspace>.json, the server home being $ALIGN_ARGILLA_HOME or "
        "~/.cache/align/argilla-server)",
    )
    args = ap.parse_args(argv)
    try:
        team = read_team(args.team)
        out = Path(args.passwords) if args.passwords else local.default_home() / f"team-{team['workspace']}.json"
        result = invite(team, ArgillaConfig(credentials=args.credentials, workspace=team["workspace"]), out)
    except AlignError as exc:
        print(f"align: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(
        f"workspace '{result['workspace']}' at {result['api_url']}: created {', '.join(result['created']) or 'nobody'}; "
        f"added {', '.join(result['added']) or 'nobody'}"
    )
    if result["created"]:
        print(f"new users' passwords are in {out} (mode 0600): hand each annotator their own, and the URL")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
