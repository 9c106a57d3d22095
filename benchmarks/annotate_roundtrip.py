"""Benchmark of the annotation round trip against a real local Argilla (argilla-server 2.8.0, SQLite,
the SQL-backed search engine): push N pairs, two annotators submit a response to every record, pull.

    .venv/bin/python benchmarks/annotate_roundtrip.py [--pairs 1000] [--out benchmarks/results/annotate_roundtrip.json]

Reports records/s for `align annotate push` (whole stage: read, connect, check, upsert, write run)
and `align annotate pull` (whole stage: page through records with responses, journal, build rows,
write run), measured in one run on one machine. Aims: push >= 100/s, pull >= 500/s. Starts its own
server on free loopback ports in a temporary folder and stops it at the end. Annotators submit
through POST /api/v1/me/responses/bulk (what the UI's bulk view calls), 100 at a time; that time is
reported but is not part of either figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from align.annotate import local, pull, push, serve  # noqa: E402
from align.annotate.connection import ArgillaConfig, Connection  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "annotate_roundtrip.json"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="align-bench-") as tmp:
        tmp = Path(tmp)
        home = tmp / "argilla"
        scfg = serve.Config(home=str(home), port=free_port(), redis_port=free_port(), worker=False)
        t0 = time.time()
        state = serve.run(scfg)
        start_s = time.time() - t0
        try:
            result = roundtrip(tmp, home, scfg, args.pairs)
        finally:  # stop by the pids serve returned, whatever happened to the state file
            serve.stop_processes(home, state)
    result["server_start_s"] = round(start_s, 1)
    # Other work on the machine slows every figure: compare runs only at a similar load.
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def roundtrip(tmp: Path, home: Path, scfg: serve.Config, n: int) -> dict:
    pairs = tmp / "pairs.jsonl"
    with open(pairs, "w") as f:
        for i in range(n):
            f.write(json.dumps({
                "prompt": [{"role": "user", "content": f"Question {i}: how do I keep a houseplant alive?"}],
                "response_a": f"Water it weekly and give it indirect light ({i}).",
                "response_b": f"Plants are hard ({i}).",
                "policy": "bench", "sampling": {"temperature": 0.7}, "scores": None, "source": "benchmark",
            }) + "\n")
    argilla = ArgillaConfig(credentials=str(local.credentials_path(home)))
    runs_dir = tmp / "runs"

    t0 = time.time()
    pushed = push.run(push.Config(pairs=str(pairs), dataset="bench", argilla=argilla, runs_dir=str(runs_dir)))
    push_s = time.time() - t0

    creds = json.loads(local.credentials_path(home).read_text())
    api_url = creds["api_url"]
    import httpx

    with Connection(api_url, creds["api_key"], "benchmark") as owner:
        ws = owner.workspace_id("align")
        ds = owner.dataset("bench", "align")
        record_ids = [r["id"] for r in owner.records(ds["id"], responses=False)]
        annotators = []
        for name in ("ann1", "ann2"):
            user = owner.request("POST", "/api/v1/users", json={"first_name": name, "username": name,
                                                                "password": f"{name}-password", "role": "annotator"})
            owner.request("POST", f"/api/v1/workspaces/{ws}/users", json={"user_id": user["id"]})
            token = httpx.post(f"{api_url}/api/v1/token", data={"username": name, "password": f"{name}-password"}).json()
            annotators.append(httpx.Client(base_url=api_url, timeout=120,
                                           headers={"Authorization": f"Bearer {token['access_token']}"}))
    t0 = time.time()
    for k, client in enumerate(annotators):
        for i in range(0, len(record_ids), 100):
            items = [{"record_id": rid, "status": "submitted",
                      "values": {"preference": {"value": ("A", "B", "tie")[(j + k) % 3]}}}
                     for j, rid in enumerate(record_ids[i: i + 100])]
            client.post("/api/v1/me/responses/bulk", json={"items": items}).raise_for_status()
    annotate_s = time.time() - t0

    t0 = time.time()
    pulled = pull.run(pull.Config(dataset="bench", argilla=argilla, journal_dir=str(tmp / "journal"), runs_dir=str(runs_dir)))
    pull_s = time.time() - t0
    return {
        "pairs": n,
        "push_records": pushed["metrics"]["records_new"],
        "push_s": round(push_s, 2),
        "push_records_per_s": round(pushed["metrics"]["records_new"] / push_s, 1),
        "push_upsert_only_records_per_s": pushed["metrics"]["push_records_per_s"],
        "annotators": 2,
        "responses_submitted": 2 * len(record_ids),
        "annotators_submit_s": round(annotate_s, 2),
        "pull_records": pulled["metrics"]["records_read"],
        "pull_responses": pulled["metrics"]["votes"],
        "pull_s": round(pull_s, 2),
        "pull_records_per_s": round(pulled["metrics"]["records_read"] / pull_s, 1),
        "aims": {"push_records_per_s": 100, "pull_records_per_s": 500},
    }


if __name__ == "__main__":
    raise SystemExit(main())
