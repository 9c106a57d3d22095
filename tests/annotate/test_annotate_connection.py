"""align's error policy around the argilla SDK client, against a small HTTP server that answers with
chosen status codes (the real server cannot be made to answer 503 or to fail a POST on demand):
a rejected key is exit 2, a server answering 5xx is retried for `retry_seconds` then exit 1 naming
the URL, and a call that is not idempotent is never sent twice."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from align.annotate.connection import ArgillaConfig, Connection, connect
from align.core.errors import AlignError, ServiceError

ME = {
    "id": "00000000-0000-0000-0000-000000000001",
    "username": "owner",
    "role": "owner",
    "first_name": "Owner",
    "inserted_at": "2026-01-01T00:00:00",
    "updated_at": "2026-01-01T00:00:00",
}


@pytest.fixture
def stub():
    """A server whose answer per path is set by the test; it counts the requests it gets."""
    answers: dict[str, int] = {}
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            hits.append(f"{self.command} {self.path}")
            code = answers.get(self.path.split("?")[0], 404)
            body = json.dumps(ME if code == 200 else {"detail": "stub"}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", answers, hits
    server.shutdown()
    server.server_close()


def test_rejected_key_is_exit_2_and_names_the_source(stub, monkeypatch):
    url, answers, _ = stub
    answers["/api/v1/me"] = 401
    monkeypatch.setenv("ARGILLA_API_KEY", "wrong-key")
    with pytest.raises(
        AlignError, match=r"rejected the API key \(401 Unauthorized; key from \$ARGILLA_API_KEY\)"
    ) as err:
        connect(ArgillaConfig(api_url=url, retry_seconds=1))
    assert err.value.exit_code == 2 and "wrong-key" not in str(err.value)


def test_5xx_is_retried_then_exit_1_naming_the_url(stub, monkeypatch):
    url, answers, hits = stub
    answers["/api/v1/me"] = 503
    monkeypatch.setenv("ARGILLA_API_KEY", "some-key")
    with pytest.raises(ServiceError, match=url) as err:
        connect(ArgillaConfig(api_url=url, retry_seconds=1))
    assert err.value.exit_code == 1 and "HTTP 503" in str(err.value)
    assert len(hits) >= 2  # retried


def test_only_idempotent_calls_are_sent_again(stub):
    url, answers, hits = stub
    answers["/api/v1/me"] = 200
    answers["/flaky"] = 503
    conn = Connection(url, "some-key", "test", retry_seconds=1)

    def post():
        conn.client.http_client.post("/flaky", json={}).raise_for_status()

    hits.clear()
    with pytest.raises(ServiceError, match="not retried because it may have been applied"):
        conn.call("POST /flaky", post, idempotent=False)
    assert hits == ["POST /flaky"]  # sent once
    hits.clear()
    with pytest.raises(ServiceError, match=r"not answering \(PUT /flaky"):
        conn.call("PUT /flaky", lambda: conn.client.http_client.put("/flaky", json={}).raise_for_status())
    assert len(hits) >= 2
    conn.close()
