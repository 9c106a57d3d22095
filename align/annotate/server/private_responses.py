"""Annotators see only their own responses, on the local server align starts.

Stock argilla-server 2.8 answers GET /api/v1/records/{id} to any member of the record's workspace
with every user's response and every metadata value, hidden or not (it filters both only on the
annotation page's search endpoint). An annotator who calls the API can then read the others' votes
before voting, which defeats independent labels and the agreement numbers built on them.

`install()` wraps that one endpoint: for a user who is neither owner nor admin, the answer keeps only
that user's own response and the metadata annotators may see (the same filter the annotation page's
search applies). Owners and admins get the stock answer. The other endpoints that return responses
are already restricted in stock Argilla 2.8: the dataset record list and search (owner/admin only),
and the annotation page's search (the user's own response only). A production server does not run
this file: docs/guide/annotation_quality.md says what it must configure instead.

Imported by launch.py in the server's own virtual environment: it imports nothing from align.
"""

from __future__ import annotations

ROUTE = "/records/{record_id}"


def install() -> None:
    from argilla_server.api.routes import api_v1
    from fastapi.routing import APIRoute

    for route in api_v1.routes:
        if isinstance(route, APIRoute) and route.path == ROUTE and "GET" in route.methods:
            # FastAPI's request handler calls `dependant.call` with the resolved dependencies (record_id,
            # db, current_user), so swapping it keeps authentication and validation exactly as they were.
            route.dependant.call = _own_responses_only(route.dependant.call)
            return
    raise RuntimeError(
        f"argilla-server has no GET /api/v1{ROUTE} route to restrict (server version changed?); "
        "refusing to start a server that would show annotators each other's responses"
    )


def _own_responses_only(stock):
    from argilla_server.api.handlers.v1.datasets.records import (
        _filter_record_metadata_for_user,
    )
    from argilla_server.api.schemas.v1.records import Record as RecordSchema

    async def get_record(**kwargs):
        record = await stock(**kwargs)
        user = kwargs["current_user"]
        if user.is_owner or user.is_admin:
            return record
        await record.dataset.awaitable_attrs.metadata_properties  # the visibility filter reads them
        answer = RecordSchema.model_validate(record)
        # A copy, not the ORM object: changing record.responses could reach the database.
        answer.responses = [r for r in answer.responses or [] if r.user_id == user.id]
        answer.metadata = await _filter_record_metadata_for_user(record, user)
        return answer

    return get_record
