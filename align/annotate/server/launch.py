"""Run argilla-server's own CLI with the SQL-backed search engine registered first.

Run with the server venv's python (`align annotate serve` does this):

    $ALIGN_ARGILLA_SERVER_VENV/bin/python align/annotate/server/launch.py start --host 127.0.0.1 --port 6900
    $ALIGN_ARGILLA_SERVER_VENV/bin/python align/annotate/server/launch.py create-owner CREDENTIALS.json
    $ALIGN_ARGILLA_SERVER_VENV/bin/python align/annotate/server/launch.py init CREDENTIALS.json

Every argilla-server command works (`database migrate`, `worker`, ...). `start` first restricts
GET /api/v1/records/{id} so annotators see only their own responses (private_responses.py). `create-owner` adds the owner
user from a credentials file, so the password and API key never appear on a command line; `init`
migrates the database to the current schema, then does `create-owner`.
This file runs in the server's virtual environment: it imports nothing from align.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys


def _tune_sqlite() -> None:
    # A local server for laptops and tests: WAL lets the search engine read while a bulk write is in
    # progress, and synchronous=NORMAL makes each commit far cheaper (still safe if the process dies;
    # a power cut can lose the last commits). Production runs PostgreSQL (annotation/deploy/).
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def _skip_events_nobody_listens_to() -> None:
    # argilla-server builds a webhook event for every record and response written (a dataset query
    # with five relationships, then serialisation) before it looks for an enabled webhook. Looking
    # first gives the same behaviour (no webhook, no event) and makes bulk writes several times
    # faster on a small machine. Events still go out as before once a webhook is enabled.
    from argilla_server.bulk import records_bulk
    from argilla_server.contexts import datasets, webhooks

    def guarded(notify):
        async def notify_if_heard(db, event, resource):
            if not await webhooks.list_enabled_webhooks(db):
                return []
            return await notify(db, event, resource)

        return notify_if_heard

    records_bulk.notify_record_event_v1 = guarded(records_bulk.notify_record_event_v1)
    datasets.notify_response_event_v1 = guarded(datasets.notify_response_event_v1)


def _create_owner(credentials_path: str) -> None:
    from argilla_server.cli.database.users.create import _create
    from argilla_server.models import UserRole

    with open(credentials_path, encoding="utf-8") as f:
        creds = json.load(f)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # it echoes the API key
        asyncio.run(
            _create(
                first_name="Owner",
                username=creds["username"],
                role=UserRole.owner,
                password=creds["password"],
                api_key=creds["api_key"],
                workspace=[creds.get("workspace", "align")],
            )
        )


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import sql_engine  # noqa: F401  (registers the engine under its name)

    if os.environ.get("ARGILLA_DATABASE_URL", "").startswith("sqlite"):
        _tune_sqlite()
    _skip_events_nobody_listens_to()
    if sys.argv[1:2] == ["create-owner"]:
        _create_owner(sys.argv[2])
        return
    if sys.argv[1:2] == ["init"]:  # migrate + create-owner in one process: one interpreter start less
        from argilla_server.cli.database.migrate import migrate_db

        migrate_db(revision="head")
        _create_owner(sys.argv[2])
        return
    if sys.argv[1:2] == ["start"]:
        import private_responses

        private_responses.install()  # annotators get only their own responses from GET /api/v1/records/{id}
    from argilla_server.cli import app

    app(prog_name="argilla-server")


if __name__ == "__main__":
    main()
