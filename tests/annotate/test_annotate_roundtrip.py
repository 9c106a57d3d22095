"""The annotation round trip against a real local Argilla: push, two annotators, pull, status.

Annotators answer by the position they see (A/B); the pulled rows must speak of candidates (a/b)
with the display swap undone. Covers: no duplicates on a second push, a tie, a disagreement, a
discard, a draft, agreement numbers, chosen/rejected, the preference loader reading the run, the
journal surviving a deleted dataset, and clear errors for a wrong key and a mismatched template.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.annotate import pull, push, status
from align.annotate.votes import record_id
from align.cli import main as cli_main
from align.core.errors import AlignError
from align.data.preferences import load_preference_pairs
from tests.annotate.conftest import shown_orders

pytestmark = pytest.mark.integration

TOPICS = ["the weather", "a refund", "my password", "the meeting", "the invoice", "a delivery"]


def write_pairs(path: Path, n: int = 6, tag: str = "") -> Path:
    rows = []
    for topic in TOPICS[:n]:
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"Can you help me with {topic}?{tag}"}],
                "response_a": f"Of course! Here is what I know about {topic}.",
                "response_b": f"No. Look {topic} up yourself.",
                "policy": "runs/sft-test",
                "sampling": {"temperature": 0.7, "max_new_tokens": 64},
                "scores": [1.5, -0.5],
                "source": "test",
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def server_dataset(argilla, name: str) -> dict:
    with argilla.owner() as conn:
        return conn.dataset(name)


def shown_label(order: str, candidate: str) -> str:
    """The position (A or B) where `candidate` (a or b) is displayed, given the record's order (its `shown_as_a`)."""
    return "A" if order == candidate else "B"


@pytest.fixture(scope="module")
def labelled(argilla, tmp_path_factory):
    """Push 6 pairs twice, then alice and bob label them; returns what the tests check against."""
    tmp = tmp_path_factory.mktemp("roundtrip")
    pairs = write_pairs(tmp / "pairs.jsonl")
    cfg = push.Config(
        pairs=str(pairs),
        dataset="roundtrip",
        argilla=argilla.argilla_config(),
        runs_dir=str(tmp / "runs"),
        guidelines="brand_voice",
        journal_dir=str(tmp / "journal"),
    )
    first = push.run(cfg)
    second = push.run(cfg)
    recs = argilla.records_by_id("roundtrip")
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    ids = [record_id(r["prompt"], r["response_a"], r["response_b"], 1) for r in rows]
    alice, bob = argilla.annotator("alice"), argilla.annotator("bob")
    r = [recs[i] for i in ids]
    orders = shown_orders(tmp / "runs")  # the A/B order is in the push run and journal, not on the server
    o = [orders[i] for i in ids]
    # record 0: both prefer candidate a        -> chosen a, agreement 1
    # ratings are given per shown position: candidate a gets 4, b gets 2, wherever they are shown
    shown_ratings = {"rating_a": 4, "rating_b": 2} if o[0] == "a" else {"rating_a": 2, "rating_b": 4}
    alice.respond(r[0]["id"], preference=shown_label(o[0], "a"), strength=3, **shown_ratings)
    bob.respond(r[0]["id"], preference=shown_label(o[0], "a"), strength=2)
    # record 1: alice a, bob b                   -> no majority, agreement 0.5
    alice.respond(r[1]["id"], preference=shown_label(o[1], "a"))
    bob.respond(r[1]["id"], preference=shown_label(o[1], "b"), reason="shorter")
    # record 2: both tie                         -> tie kept, chosen null
    alice.respond(r[2]["id"], preference="tie")
    bob.respond(r[2]["id"], preference="tie")
    # record 3: alice b, bob discards            -> chosen b from one vote; one discard
    alice.respond(r[3]["id"], preference=shown_label(o[3], "b"), strength=1)
    bob.respond(r[3]["id"], status="discarded")
    # record 4: alice's draft only               -> ignored
    alice.respond(r[4]["id"], status="draft", preference="A")
    # record 5: untouched
    return {
        "tmp": tmp,
        "pairs": pairs,
        "orders": orders,
        "first": first,
        "second": second,
        "ids": ids,
        "rows": rows,
        "records": r,
    }


def test_push_creates_records_once_with_swap_recorded(argilla, labelled):
    assert labelled["first"]["metrics"]["records_new"] == 6
    assert labelled["second"]["metrics"]["records_new"] == 0
    assert labelled["second"]["metrics"]["records_already_there"] == 6
    recs = argilla.records_by_id("roundtrip")
    assert sorted(recs) == sorted(labelled["ids"])  # six records, no duplicates
    shown = set()
    for rid, row in zip(labelled["ids"], labelled["rows"]):
        rec = recs[rid]
        first = labelled["orders"][rid]
        shown.add(first)
        assert "shown_as_a" not in rec["metadata"]  # kept off the server: any annotator can read metadata
        expect_a = row["response_a"] if first == "a" else row["response_b"]
        assert rec["fields"]["response_a"] == expect_a
        assert rec["fields"]["prompt"] == row["prompt"]
        assert rec["metadata"]["round"] == 1 and rec["metadata"]["policy"] == "runs/sft-test"
    assert shown == {"a", "b"}, "the test data should exercise both display orders"
    records_file = Path(labelled["first"]["path"]) / "records.jsonl"
    assert len(records_file.read_text().splitlines()) == 6


def test_pull_votes_agreement_and_chosen(argilla, labelled, tmp_path):
    journal_dir = tmp_path / "journal"
    manifest = pull.run(
        pull.Config(
            dataset="roundtrip",
            argilla=argilla.argilla_config(),
            journal_dir=str(journal_dir),
            push_runs=[labelled["first"]["path"]],
            runs_dir=str(tmp_path / "runs"),
        )
    )
    rows = {
        r["record_id"]: r
        for r in map(json.loads, (Path(manifest["path"]) / "preferences.jsonl").read_text().splitlines())
    }
    ids, src = labelled["ids"], labelled["rows"]
    assert set(rows) == set(ids[:4])  # the draft-only and untouched records have no votes

    r0 = rows[ids[0]]
    assert [(v["annotator"], v["choice"], v["strength"]) for v in r0["votes"]] == [("alice", "a", 3), ("bob", "a", 2)]
    assert (r0["votes"][0]["rating_a"], r0["votes"][0]["rating_b"]) == (4, 2)  # ratings follow the candidates
    assert r0["majority"] == "a" and r0["agreement"] == 1.0 and r0["strength"] == 2.5
    assert r0["chosen"] == [{"role": "assistant", "content": src[0]["response_a"]}]
    assert r0["rejected"] == [{"role": "assistant", "content": src[0]["response_b"]}]
    assert (r0["response_a"], r0["response_b"]) == (src[0]["response_a"], src[0]["response_b"])
    assert r0["prompt"] == src[0]["prompt"] and r0["sampling"] == src[0]["sampling"]

    r1 = rows[ids[1]]
    assert [(v["annotator"], v["choice"]) for v in r1["votes"]] == [("alice", "a"), ("bob", "b")]
    assert r1["votes"][1]["reason"] == "shorter"
    assert r1["majority"] is None and r1["agreement"] == 0.5 and r1["chosen"] is None and r1["rejected"] is None

    r2 = rows[ids[2]]
    assert r2["counts"] == {"a": 0, "b": 0, "tie": 2} and r2["majority"] == "tie" and r2["agreement"] == 1.0
    assert r2["chosen"] is None and r2["rejected"] is None

    r3 = rows[ids[3]]
    assert [(v["annotator"], v["choice"]) for v in r3["votes"]] == [("alice", "b")]
    assert r3["discards"] == 1 and r3["n_votes"] == 1
    assert r3["chosen"][0]["content"] == src[3]["response_b"]

    m = manifest["metrics"]
    assert (m["records"], m["votes"], m["discards"], m["pairs"], m["ties"], m["no_majority"]) == (4, 7, 1, 2, 1, 1)
    assert m["drafts_ignored"] == 1
    assert m["pairwise_agreement"] == pytest.approx(2 / 3, abs=1e-3)
    # The owner's key appears in no file push or pull wrote (runs, journal).
    key = json.loads(argilla.credentials.read_text())["api_key"]
    written = [
        p
        for folder in (Path(manifest["path"]), Path(labelled["first"]["path"]), journal_dir)
        for p in folder.rglob("*")
        if p.is_file()
    ]
    assert len(written) >= 5 and not [p for p in written if key in p.read_text(errors="replace")]

    # The trainers' loader reads the run: two pairs, the tie and the split counted, not trained on.
    data = load_preference_pairs(manifest["path"])
    assert data.report["pairs"] == 2 and data.report["ties_or_no_majority"] == 2

    # Pulling again journals nothing new and gives the same rows.
    again = pull.run(
        pull.Config(
            dataset="roundtrip",
            argilla=argilla.argilla_config(),
            journal_dir=str(journal_dir),
            runs_dir=str(tmp_path / "runs"),
        )
    )
    assert again["metrics"]["responses_journaled"] == 0
    assert (Path(again["path"]) / "preferences.jsonl").read_text() == (
        Path(manifest["path"]) / "preferences.jsonl"
    ).read_text()


def test_status_reports_progress_and_agreement(argilla, labelled, capsys):
    report = status.run(
        status.Config(
            dataset="roundtrip", argilla=argilla.argilla_config(), journal_dir=str(labelled["tmp"] / "journal")
        )
    )  # where push kept the A/B order
    # min_submitted is 2: records 0, 1 and 2 have two submissions; 3 has one plus a discard
    assert (report["records"], report["completed"], report["pending"]) == (6, 3, 3)
    assert report["annotators"]["alice"] == {"submitted": 4, "discarded": 0, "draft": 1, "agrees_with_majority": 0.6667}
    assert report["annotators"]["bob"]["submitted"] == 3 and report["annotators"]["bob"]["discarded"] == 1
    assert report["pairwise_agreement"] == pytest.approx(2 / 3, abs=1e-3)
    # units [a,a], [a,b], [tie,tie] (+ a single vote): alpha = 1 - (6-1)*2 / (2*(3*1 + 3*2 + 1*2)) = 0.5455
    assert report["krippendorff_alpha"] == 0.5455
    out = capsys.readouterr().out
    assert "alice" in out and "Krippendorff" in out


def test_labels_survive_a_deleted_dataset(argilla, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", n=2, tag=" (deleted)")
    push.run(
        push.Config(
            pairs=str(pairs),
            dataset="to-delete",
            argilla=argilla.argilla_config(),
            runs_dir=str(tmp_path / "runs"),
            journal_dir=str(tmp_path / "j"),
        )
    )
    recs = list(argilla.records_by_id("to-delete").values())
    argilla.annotator("alice").respond(recs[0]["id"], preference="A")
    cfg = dict(
        dataset="to-delete",
        argilla=argilla.argilla_config(),
        journal_dir=str(tmp_path / "j"),
        runs_dir=str(tmp_path / "runs"),
    )
    before = pull.run(pull.Config(**cfg))
    with argilla.owner() as conn:
        conn.request("DELETE", f"/api/v1/datasets/{conn.dataset('to-delete', 'align')['id']}")
    with pytest.raises(AlignError, match="offline=true"):
        pull.run(pull.Config(**cfg))
    after = pull.run(pull.Config(**cfg, offline=True))
    assert (Path(after["path"]) / "preferences.jsonl").read_text() == (
        Path(before["path"]) / "preferences.jsonl"
    ).read_text()


def test_push_with_other_guidelines_replaces_them_and_records_both(argilla, labelled, tmp_path):
    from align.annotate.template import GUIDELINES_DIR

    brand_voice, safety = ((GUIDELINES_DIR / f"{n}.md").read_text().strip() for n in ("brand_voice", "safety"))
    assert server_dataset(argilla, "roundtrip")["guidelines"].strip() == brand_voice
    m = push.run(
        push.Config(
            pairs=str(labelled["pairs"]),
            dataset="roundtrip",
            guidelines="safety",
            argilla=argilla.argilla_config(),
            runs_dir=str(tmp_path / "runs"),
        )
    )
    assert server_dataset(argilla, "roundtrip")["guidelines"].strip() == safety  # what annotators now see
    from align.annotate.template import text_hash

    assert m["notes"]["guidelines_sha256"] == text_hash(safety)
    assert m["notes"]["guidelines_replaced_sha256"] == text_hash(brand_voice)
    assert m["metrics"]["records_new"] == 0
    again = push.run(
        push.Config(
            pairs=str(labelled["pairs"]),
            dataset="roundtrip",
            guidelines="brand_voice",
            argilla=argilla.argilla_config(),
            runs_dir=str(tmp_path / "runs"),
        )
    )
    assert server_dataset(argilla, "roundtrip")["guidelines"].strip() == brand_voice
    same = push.run(
        push.Config(
            pairs=str(labelled["pairs"]),
            dataset="roundtrip",
            guidelines="brand_voice",
            argilla=argilla.argilla_config(),
            runs_dir=str(tmp_path / "runs"),
        )
    )
    assert "guidelines_replaced_sha256" in again["notes"] and "guidelines_replaced_sha256" not in same["notes"]


def test_local_server_shows_an_annotator_only_their_own_vote(argilla, labelled):
    """Stock argilla-server 2.8 answers GET /api/v1/records/{id} with every annotator's response; the local
    server align starts (server/private_responses.py) gives an annotator only their own."""
    bob = argilla.annotator("bob")
    record = labelled["records"][1]  # alice voted a, bob b, with a reason
    resp = bob.http.get(f"/api/v1/records/{record['id']}", params={"include": "responses"})
    assert resp.status_code == 200
    [own] = resp.json()["responses"]
    assert own["values"]["reason"]["value"] == "shorter"  # bob's, not alice's


def test_wrong_api_key_exits_2_and_says_so(argilla, tmp_path, capsys):
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({"api_url": argilla.api_url, "api_key": "not-the-key"}))
    creds.chmod(0o600)
    code = cli_main(["annotate", "status", "dataset=roundtrip", f"argilla.credentials={creds}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "rejected the API key" in err and "not-the-key" not in err


def test_unreachable_server_exits_1_naming_the_url_and_writes_nothing(argilla, tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    pairs = write_pairs(tmp_path / "pairs.jsonl", n=1)
    code = cli_main(
        [
            "annotate",
            "push",
            str(pairs),
            "dataset=x",
            f"argilla.api_url={url}",
            f"argilla.credentials={argilla.credentials}",
            "argilla.retry_seconds=1.5",
            f"runs_dir={tmp_path / 'runs'}",
        ]
    )
    assert code == 1
    assert url in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_template_mismatch_is_a_clear_error(argilla, labelled, tmp_path):
    from align.annotate.template import TEMPLATES_DIR

    other = tmp_path / "other.yaml"
    other.write_text(
        (TEMPLATES_DIR / "pairwise.yaml").read_text().replace("values: [1, 2, 3]\n", "values: [1, 2, 3, 4]\n")
    )
    with pytest.raises(AlignError, match=r"does not match template 'other'.*strength"):
        push.run(
            push.Config(
                pairs=str(labelled["pairs"]),
                dataset="roundtrip",
                template=str(other),
                argilla=argilla.argilla_config(),
                runs_dir=str(tmp_path / "runs"),
            )
        )
    with pytest.raises(AlignError, match="does not match template"):
        pull.run(
            pull.Config(
                dataset="roundtrip",
                template=str(other),
                argilla=argilla.argilla_config(),
                journal_dir=str(tmp_path / "j"),
                runs_dir=str(tmp_path / "runs"),
            )
        )
    assert not (tmp_path / "j").exists()


def test_team_invite_creates_users_once_and_keeps_passwords_private(argilla, tmp_path, capsys):
    import stat

    from align.annotate import team

    spec = tmp_path / "team.yaml"
    spec.write_text("workspace: team-ws\nannotators: [carol, dave]\nadmins: [lead]\n")
    passwords = tmp_path / "team.json"
    args = [str(spec), "--credentials", str(argilla.credentials), "--passwords", str(passwords)]
    assert team.main(args) == 0
    saved = json.loads(passwords.read_text())
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600
    assert sorted(k for k in saved if k.startswith("password:")) == ["password:carol", "password:dave", "password:lead"]
    out = capsys.readouterr().out
    assert saved["password:carol"] not in out
    assert team.main(args) == 0  # again: nobody created, nobody added
    assert "created nobody; added nobody" in capsys.readouterr().out
    with argilla.owner() as conn:
        ws = conn.workspace_id("team-ws")
        members = {u["username"]: u["role"] for u in conn.get(f"/api/v1/workspaces/{ws}/users")["items"]}
    assert members == {"carol": "annotator", "dave": "annotator", "lead": "admin"}
    # carol can log in with the generated password
    import httpx

    token = httpx.post(
        f"{argilla.api_url}/api/v1/token", data={"username": "carol", "password": saved["password:carol"]}
    )
    assert token.status_code == 201


def test_team_passwords_live_under_the_server_home(argilla, tmp_path, monkeypatch, capsys):
    import stat

    from align.annotate import team

    home, cache = tmp_path / "server-home", tmp_path / "cache"
    monkeypatch.setenv("ALIGN_ARGILLA_HOME", str(home))
    monkeypatch.setenv("ALIGN_CACHE", str(cache))
    spec = tmp_path / "team.yaml"
    spec.write_text("workspace: home-ws\nannotators: [hana]\n")
    assert team.main([str(spec), "--credentials", str(argilla.credentials)]) == 0
    passwords = home / "team-home-ws.json"
    assert "password:hana" in json.loads(passwords.read_text())
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600 and stat.S_IMODE(home.stat().st_mode) == 0o700
    assert not cache.exists()
    assert str(passwords) in capsys.readouterr().out


def test_pull_before_any_label_says_so_and_writes_no_run(argilla, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", n=2, tag=" (unlabelled)")
    push.run(
        push.Config(
            pairs=str(pairs),
            dataset="unlabelled",
            argilla=argilla.argilla_config(),
            runs_dir=str(tmp_path / "runs"),
            journal_dir=str(tmp_path / "j"),
        )
    )
    with pytest.raises(AlignError, match=r"no submitted labels yet \(2 record"):
        pull.run(
            pull.Config(
                dataset="unlabelled",
                argilla=argilla.argilla_config(),
                journal_dir=str(tmp_path / "j"),
                runs_dir=str(tmp_path / "pull-runs"),
            )
        )
    assert not (tmp_path / "pull-runs").exists() or not any((tmp_path / "pull-runs").iterdir())
