"""The logging proxy `align serve` puts in front of vLLM's OpenAI-compatible server (FastAPI, run by uvicorn).

    POST /v1/chat/completions   forwarded to vLLM; the request's messages and each reply are logged with a
                                new `reply_id`, returned in the response (top level for choice 0, and in
                                each choice) and in the `X-Reply-Id` header
    POST /v1/feedback           {reply_id, rating: up|down, flag: reason, correction: text, user?}: a rating
                                line in the same log; 404 for a reply_id the log does not hold
    GET  /v1/models, /health    forwarded, not logged

Why a proxy and not a vLLM plugin: vLLM's server is used unchanged (its flags, its OpenAI schema), and
the log is written by code align owns and tests without a model (tests give `upstream_transport`, an
httpx MockTransport standing in for vLLM). Streaming requests are refused (400): a reply is logged whole
or not at all. With an API key, every /v1 call needs `Authorization: Bearer <key>`; the key is passed
on to vLLM (which is started with the same key), never logged. FastAPI, uvicorn and httpx come with
vLLM's server; this module is imported only by `align serve` when it starts.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from align.core.errors import AlignError
from align.feedback.log import FeedbackLog, hash_id, new_reply_id, now, rating_event

log = logging.getLogger(__name__)

# Request settings worth keeping beside a reply (what it was sampled with); messages are logged on their own.
LOGGED_PARAMS = ("temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens", "n", "seed", "stop")


def create_app(
    upstream: str,
    log_path: str | Path,
    policy_run: str,
    model: str,
    api_key: str | None = None,
    salt: str | None = None,
    upstream_transport=None,
    timeout_s: float = 600.0,
):
    """The proxy app: `upstream` is vLLM's base URL (http://127.0.0.1:PORT); `policy_run` goes in every line."""
    feedback_log = FeedbackLog(log_path)
    known = feedback_log.reply_ids() if Path(log_path).exists() else set()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    client = httpx.AsyncClient(base_url=upstream, timeout=timeout_s, transport=upstream_transport, headers=headers)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        await client.aclose()

    app = FastAPI(
        title="align serve", description=f"policy {policy_run}, feedback logged to {log_path}", lifespan=lifespan
    )
    app.state.counts = {"replies": 0, "ratings": 0, "upstream_errors": 0, "user_ids_dropped": 0}

    def error(status: int, message: str) -> JSONResponse:
        # OpenAI's error shape, so client libraries show the message.
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "code": status}}, status)

    def refused(request: Request) -> JSONResponse | None:
        if api_key and request.headers.get("authorization", "") != f"Bearer {api_key}":
            return error(401, "missing or wrong API key (Authorization: Bearer <key>)")
        return None

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        if (denied := refused(request)) is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            return error(400, "the body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return error(400, "a chat completion request needs 'messages', a list")
        if body.get("stream"):
            return error(400, "streaming is not supported by align serve (replies are logged whole); set stream=false")
        body.setdefault("model", model)
        started = time.perf_counter()
        upstream_reply = await client.post("/v1/chat/completions", json=body)
        latency = round(time.perf_counter() - started, 3)
        if upstream_reply.status_code != 200:
            app.state.counts["upstream_errors"] += 1
            return Response(
                upstream_reply.content,
                upstream_reply.status_code,
                media_type=upstream_reply.headers.get("content-type", "application/json"),
            )
        data = upstream_reply.json()
        user = hash_id(body.get("user"), salt)
        if body.get("user") and user is None:
            app.state.counts["user_ids_dropped"] += 1
        for choice in data.get("choices", []):
            reply_id = new_reply_id()
            choice["reply_id"] = reply_id
            event: dict[str, Any] = {
                "event": "reply",
                "reply_id": reply_id,
                "time": now(),
                "policy_run": policy_run,
                "model": data.get("model", body["model"]),
                "messages": body["messages"],
                "reply": (choice.get("message") or {}).get("content"),
                "finish_reason": choice.get("finish_reason"),
                "usage": data.get("usage"),
                "latency_s": latency,
                "params": {k: body[k] for k in LOGGED_PARAMS if k in body},
            }
            if user:
                event["user"] = user
            feedback_log.append(event)
            known.add(reply_id)
            app.state.counts["replies"] += 1
        first = (data.get("choices") or [{}])[0].get("reply_id")
        data["reply_id"] = first
        return JSONResponse(data, headers={"X-Reply-Id": first or ""})

    @app.post("/v1/feedback")
    async def feedback(request: Request):
        if (denied := refused(request)) is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            return error(400, "the body is not JSON")
        if not isinstance(body, dict):
            return error(400, "feedback is an object {reply_id, rating, flag, correction}")
        unknown = set(body) - {"reply_id", "rating", "flag", "correction", "user"}
        if unknown:
            return error(
                400, f"unknown field(s) {sorted(unknown)}; feedback has reply_id, rating, flag, correction, user"
            )
        flag = body.get("flag")
        if isinstance(flag, dict):
            flag = flag.get("reason")
        try:
            event = rating_event(
                body.get("reply_id"),
                body.get("rating"),
                flag,
                body.get("correction"),
                body.get("user"),
                salt,
                where="feedback",
            )
        except AlignError as exc:
            return error(400, str(exc))
        if event["reply_id"] not in known:
            return error(404, f"no reply with reply_id {event['reply_id']!r} in this server's log")
        feedback_log.append(event)
        app.state.counts["ratings"] += 1
        return {"ok": True, "reply_id": event["reply_id"]}

    async def passthrough(request: Request, path: str):
        if path.startswith("/v1") and (denied := refused(request)) is not None:
            return denied
        reply = await client.get(path)
        return Response(reply.content, reply.status_code, media_type=reply.headers.get("content-type"))

    @app.get("/v1/models")
    async def models(request: Request):
        return await passthrough(request, "/v1/models")

    @app.get("/health")
    async def health(request: Request):
        return await passthrough(request, "/health")

    return app
