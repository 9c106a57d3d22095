"""Benchmark of the annotation round trip against a real local Argilla (argilla-server 2.8.0, SQLite,
the SQL-backed search engine): push N pairs, two annotators submit a response to every record, pull.

    .venv/bin/python benchmarks/annotate_roundtrip.py [--pairs 1000] [--compare-ref bf4e933] [--out FILE]

Reports records/s for `align annotate push` (whole stage: read, connect, check, upsert, write run)
and `align annotate pull` (whole stage: page through records with responses, journal, build rows,
write run). Aims: push >= 100/s, pull >= 500/s.

Two clients run against the same server in the same run, each in its own process and on its own
dataset: `sdk`, this checkout's align (the argilla SDK client), and `rest`, align as of
`--compare-ref` (the commit before the move to the SDK, whose client called the REST API by hand),
extracted with `git archive`. The `rest` client runs first, so the `sdk` one meets a database with
one more dataset in it. Annotators submit through POST /api/v1/me/responses/bulk (what the UI's bulk
view calls), 100 at a time; that time is reported but is not part of either figure. The server is
started on free loopback ports in a temporary folder and stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PREVIOUS_REST_CLIENT = "bf4e933"  # last commit whose align/annotate/connection.py used REST by hand


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument(
        "--compare-ref",
        default=PREVIOUS_REST_CLIENT,
        help="git ref of the REST client to compare with; empty: measure the SDK client only",
    )
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "annotate_roundtrip.json"))
    ap.add_argument("--client", help=argparse.SUPPRESS)  # internal: run one client (src dir) and print JSON
    ap.add_argument("--home", help=argparse.SUPPRESS)
    ap.add_argument("--dataset", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        sys.path.insert(0, args.client)
        print(json.dumps(roundtrip(Path(args.home), args.dataset, args.pairs)))
        return 0

    sys.path.insert(0, str(REPO))
    from align.annotate import serve

    with tempfile.TemporaryDirectory(prefix="align-bench-") as tmp:
        tmp = Path(tmp)
        home = tmp / "argilla"
        scfg = serve.Config(
            home=str(home),
            port=free_port(),
            redis_port=free_port(),
            worker=False,
            server_venv=os.environ.get("ALIGN_ARGILLA_SERVER_VENV") or _server_venv(),
        )
        t0 = time.time()
        state = serve.run(scfg)
        start_s = time.time() - t0
        clients = {}
        if args.compare_ref:
            old = tmp / "rest-client"
            old.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(REPO), "archive", args.compare_ref, "align", "annotation"],
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
            clients[f"rest ({args.compare_ref})"] = old
        clients["sdk (this checkout)"] = REPO
        results = {}
        try:
            _make_annotators(home)
            for i, (label, src) in enumerate(clients.items()):
                done = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--client",
                        str(src),
                        "--home",
                        str(home),
                        "--dataset",
                        f"bench-{i}",
                        "--pairs",
                        str(args.pairs),
                    ],
                    capture_output=True,
                    text=True,
                    cwd=tmp,
                )
                if done.returncode != 0:
                    raise SystemExit(f"{label} failed:\n{done.stderr[-3000:]}")
                results[label] = json.loads(done.stdout.strip().splitlines()[-1])
        finally:  # stop by the pids serve returned, whatever happened to the state file
            serve.stop_processes(home, state)
    result = {
        "pairs": args.pairs,
        "clients": results,
        "aims": {"push_records_per_s": 100, "pull_records_per_s": 500},
        "server_start_s": round(start_s, 1),
        # Other work on the machine slows every figure: compare runs only at a similar load.
        "load_average_1m": round(os.getloadavg()[0], 2),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "command": " ".join(["benchmarks/annotate_roundtrip.py", *sys.argv[1:]]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def _server_venv() -> str:
    from align.annotate import local

    found = local.server_venv()
    return str(found if (found / "bin" / "python").exists() else REPO / ".venv-argilla-server")


def _owner(home: Path):
    import httpx

    creds = json.loads((home / "credentials.json").read_text())
    return creds["api_url"], httpx.Client(
        base_url=creds["api_url"], timeout=120, headers={"X-Argilla-Api-Key": creds["api_key"]}
    )


def _make_annotators(home: Path) -> None:
    api_url, owner = _owner(home)
    with owner:
        ws = next(w["id"] for w in owner.get("/api/v1/me/workspaces").json()["items"] if w["name"] == "align")
        for name in ("ann1", "ann2"):
            user = owner.post(
                "/api/v1/users",
                json={"first_name": name, "username": name, "password": f"{name}-password", "role": "annotator"},
            )
            user.raise_for_status()
            owner.post(f"/api/v1/workspaces/{ws}/users", json={"user_id": user.json()["id"]}).raise_for_status()


def roundtrip(home: Path, dataset: str, n: int) -> dict:
    import httpx

    from align.annotate import pull, push
    from align.annotate.connection import ArgillaConfig

    tmp = Path(tempfile.mkdtemp(prefix=f"align-bench-{dataset}-"))
    pairs = tmp / "pairs.jsonl"
    with open(pairs, "w") as f:
        for i in range(n):
            f.write(
                json.dumps(
                    {
                        "prompt": [{"role": "user", "content": f"Question {i}: how do I keep a houseplant alive?"}],
                        "response_a": f"Water it weekly and give it indirect light ({i}).",
                        "response_b": f"Plants are hard ({i}).",
                        "policy": "bench",
                        "sampling": {"temperature": 0.7},
                        "scores": None,
                        "source": "benchmark",
                    }
                )
                + "\n"
            )
    argilla = ArgillaConfig(credentials=str(home / "credentials.json"))
    runs_dir = tmp / "runs"

    t0 = time.time()
    pushed = push.run(push.Config(pairs=str(pairs), dataset=dataset, argilla=argilla, runs_dir=str(runs_dir)))
    push_s = time.time() - t0

    api_url, owner = _owner(home)
    with owner:
        ws = next(w["id"] for w in owner.get("/api/v1/me/workspaces").json()["items"] if w["name"] == "align")
        ds = next(
            d
            for d in owner.get("/api/v1/me/datasets").json()["items"]
            if d["name"] == dataset and d["workspace_id"] == ws
        )
        record_ids = [
            r["id"] for r in owner.get(f"/api/v1/datasets/{ds['id']}/records", params={"limit": 1000}).json()["items"]
        ]
        while len(record_ids) % 1000 == 0 and record_ids:
            more = owner.get(
                f"/api/v1/datasets/{ds['id']}/records", params={"limit": 1000, "offset": len(record_ids)}
            ).json()["items"]
            if not more:
                break
            record_ids += [r["id"] for r in more]
    annotators = []
    for name in ("ann1", "ann2"):
        token = httpx.post(f"{api_url}/api/v1/token", data={"username": name, "password": f"{name}-password"}).json()
        annotators.append(
            httpx.Client(base_url=api_url, timeout=120, headers={"Authorization": f"Bearer {token['access_token']}"})
        )
    t0 = time.time()
    for k, client in enumerate(annotators):
        for i in range(0, len(record_ids), 100):
            items = [
                {
                    "record_id": rid,
                    "status": "submitted",
                    "values": {"preference": {"value": ("A", "B", "tie")[(j + k) % 3]}},
                }
                for j, rid in enumerate(record_ids[i : i + 100])
            ]
            client.post("/api/v1/me/responses/bulk", json={"items": items}).raise_for_status()
        client.close()
    annotate_s = time.time() - t0

    t0 = time.time()
    pulled = pull.run(
        pull.Config(dataset=dataset, argilla=argilla, journal_dir=str(tmp / "journal"), runs_dir=str(runs_dir))
    )
    pull_s = time.time() - t0
    return {
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
    }


if __name__ == "__main__":
    raise SystemExit(main())
