"""The logging proxy of `align serve`, with an httpx MockTransport standing in for vLLM (a test double of the
network): requests are forwarded, replies logged with a reply id, ratings recorded, the API key enforced.
The real server on a real model is tests/feedback/test_serve_vllm.py (slow, integration)."""

from __future__ import annotations

import json
import os
import stat

import httpx
import pytest
from fastapi.testclient import TestClient

from align.cli import main
from align.feedback.log import hash_id, read_events
from align.feedback.proxy import create_app


def fake_vllm(seen: list):
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200)
        body = json.loads(request.content)
        seen.append((request, body))
        if body["model"] != "policy":
            return httpx.Response(404, json={"error": {"message": f"model {body['model']} not found"}})
        text = "Echo: " + body["messages"][-1]["content"]
        return httpx.Response(
            200,
            json={
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            },
        )

    return httpx.MockTransport(handle)


@pytest.fixture
def proxy(tmp_path):
    seen: list = []
    app = create_app(
        "http://vllm", tmp_path / "feedback.jsonl", "dpo-round3", "policy", salt="s", upstream_transport=fake_vllm(seen)
    )
    with TestClient(app) as client:
        yield client, seen, tmp_path / "feedback.jsonl", app


def test_chat_is_forwarded_logged_and_rated(proxy):
    client, seen, log_path, app = proxy
    reply = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Hi"}], "temperature": 0, "user": "alice"},
    )
    assert reply.status_code == 200
    data = reply.json()
    assert data["choices"][0]["message"]["content"] == "Echo: Hi"
    reply_id = data["reply_id"]
    assert reply.headers["x-reply-id"] == reply_id == data["choices"][0]["reply_id"]
    assert seen[0][1]["model"] == "policy"  # filled in for a request without one
    rated = client.post(
        "/v1/feedback",
        json={
            "reply_id": reply_id,
            "rating": "down",
            "flag": "too short",
            "correction": "Hello! How can I help?",
            "user": "alice",
        },
    )
    assert rated.status_code == 200 and rated.json() == {"ok": True, "reply_id": reply_id}
    events = read_events(log_path)
    assert [e["event"] for e in events] == ["reply", "rating"]
    assert events[0]["policy_run"] == "dpo-round3" and events[0]["reply"] == "Echo: Hi"
    assert events[0]["messages"] == [{"role": "user", "content": "Hi"}] and events[0]["params"] == {"temperature": 0}
    assert events[0]["user"] == hash_id("alice", "s") and "alice" not in log_path.read_text()
    assert events[1] == {
        **events[1],
        "rating": "down",
        "flag": {"reason": "too short"},
        "correction": "Hello! How can I help?",
    }
    assert stat.S_IMODE(os.stat(log_path).st_mode) == 0o600
    assert app.state.counts["replies"] == 1 and app.state.counts["ratings"] == 1


def test_bad_feedback_and_unknown_replies_are_refused(proxy):
    client, _, log_path, _ = proxy
    assert client.post("/v1/feedback", json={"reply_id": "r-nope", "rating": "up"}).status_code == 404
    bad = client.post("/v1/feedback", json={"reply_id": "r-1", "rating": "meh"})
    assert bad.status_code == 400 and "rating 'meh' is not up or down" in bad.json()["error"]["message"]
    assert client.post("/v1/feedback", json={"reply_id": "r-1", "stars": 5}).status_code == 400
    streaming = client.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "stream": True}
    )
    assert streaming.status_code == 400
    assert not log_path.exists() or log_path.read_text() == ""


def test_upstream_errors_pass_through_unlogged(proxy):
    client, _, log_path, app = proxy
    reply = client.post("/v1/chat/completions", json={"model": "other", "messages": [{"role": "user", "content": "x"}]})
    assert reply.status_code == 404 and "not found" in reply.json()["error"]["message"]
    assert app.state.counts["upstream_errors"] == 1 and (not log_path.exists() or log_path.read_text() == "")


def test_api_key_is_required_and_passed_on(tmp_path):
    seen: list = []
    app = create_app(
        "http://vllm", tmp_path / "feedback.jsonl", "p", "policy", api_key="k3y", upstream_transport=fake_vllm(seen)
    )
    with TestClient(app) as client:
        body = {"messages": [{"role": "user", "content": "Hi"}]}
        assert client.post("/v1/chat/completions", json=body).status_code == 401
        ok = client.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer k3y"})
        assert ok.status_code == 200
    assert seen[0][0].headers["authorization"] == "Bearer k3y"
    assert "k3y" not in (tmp_path / "feedback.jsonl").read_text()


def test_cli_rate_appends_to_the_log_and_refuses_unknown_ids(proxy, capsys):
    client, _, log_path, _ = proxy
    reply_id = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]}).json()[
        "reply_id"
    ]
    assert (
        main(
            [
                "feedback",
                "rate",
                str(log_path.parent),
                reply_id,
                "--rating",
                "up",
                "--correction",
                "Hello: how can I help?",
            ]
        )
        == 0
    )
    last = read_events(log_path)[-1]
    assert last["rating"] == "up" and last["correction"] == "Hello: how can I help?"  # taken as typed, not YAML
    assert main(["feedback", "rate", str(log_path.parent), "r-unknown", "--rating", "up"]) == 2
    assert "no reply with reply_id 'r-unknown'" in capsys.readouterr().err


def test_serve_refuses_a_public_bind_without_an_api_key(monkeypatch, capsys):
    monkeypatch.delenv("ALIGN_SERVE_API_KEY", raising=False)
    assert main(["serve", "embedded", "host=0.0.0.0", "--dry-run"]) == 2
    assert "set an API key in the environment variable ALIGN_SERVE_API_KEY" in capsys.readouterr().err


def test_serve_dry_run_never_shows_the_api_key(monkeypatch, capsys):
    monkeypatch.setenv("ALIGN_SERVE_API_KEY", "s3cret-key")
    assert main(["serve", "embedded", "host=0.0.0.0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "--api-key" in out and "***" in out
    assert "s3cret-key" not in out
