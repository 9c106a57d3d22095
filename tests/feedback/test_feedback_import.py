"""`align feedback import`: validation (file:line, exit 2, nothing written), hashing, redaction, dedupe, counts,
and the training data it makes (KTO examples, correction pairs) as `align kto` and `align dpo` read them."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from align.cli import main
from align.core.config import load_config
from align.core.errors import AlignError
from align.data.preferences import load_preference_pairs
from align.feedback.log import hash_id
from align.feedback.rows import kto_weights
from align.stages import feedback

EXAMPLE = Path(__file__).parent / "data" / "feedback_example.jsonl"


def write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def import_run(tmp_path, *inputs, **overrides):
    items = [f"{k}={v}" for k, v in overrides.items()]
    cfg = load_config(
        feedback.Config,
        None,
        [f"inputs={json.dumps([str(i) for i in inputs])}", f"runs_dir={tmp_path / 'runs'}", *items],
    )
    return feedback.run(cfg)


@pytest.fixture
def salt(monkeypatch):
    monkeypatch.setenv("ALIGN_FEEDBACK_SALT", "team-secret")
    return "team-secret"


def test_example_file_counts_by_rating_policy_and_day(tmp_path, salt):
    manifest = import_run(tmp_path, EXAMPLE)
    counts = manifest["notes"]["counts"]
    # Worked out from the file: round 1 has 6 up / 6 down, round 2 8 up / 4 down plus one up (1) and one unrated.
    assert counts["by_rating"] == {"up": 15, "down": 10, "unrated": 1}
    assert counts["by_policy_run"] == {
        "dpo-round1": {"down": 6, "up": 6},
        "dpo-round2": {"down": 4, "unrated": 1, "up": 9},
    }
    assert counts["flagged"] == 4 and counts["corrections"] == 6
    assert counts["by_day"]["2026-11-21"] == 12 and counts["by_day"]["2026-11-28"] == 14
    assert sum(counts["by_day"].values()) == 26
    assert manifest["metrics"]["duplicates_dropped"] == 1 and manifest["metrics"]["rows_read"] == 27
    # 15 desirable vs 10 undesirable: ratio 1.5 > 4/3, so undesirable is raised to 1.5 / (7/6) = 1.2857.
    assert manifest["notes"]["kto_weights"] == {"desirable_weight": 1.0, "undesirable_weight": 1.2857}
    assert manifest["metrics"]["review_rows"] == 4


@pytest.mark.parametrize("backend", ["rules", "auto"])
def test_no_raw_personal_data_or_ids_are_stored(tmp_path, salt, backend):
    # auto: presidio where it is installed with its spaCy model (it may find more), else the rules.
    manifest = import_run(tmp_path, EXAMPLE, redaction_backend=backend)
    run = Path(manifest["path"])
    for name in (
        "feedback.jsonl",
        "examples.jsonl",
        "preferences.jsonl",
        "review.jsonl",
        "manifest.json",
        "config.yaml",
    ):
        text = (run / name).read_text(encoding="utf-8")
        for raw in ("jane.doe@example.com", "415 555 2671", "customer-1", "s-77", "team-secret"):
            assert raw not in text, (name, raw)
    assert stat.S_IMODE(os.stat(run / "feedback.jsonl").st_mode) == 0o600
    rows = [json.loads(line) for line in (run / "feedback.jsonl").open()]
    assert "[EMAIL]" in rows[1]["prompt"][0]["content"] and "[PHONE]" in rows[1]["prompt"][0]["content"]
    assert rows[1]["user"] == hash_id("customer-1", salt) and rows[1]["user"].startswith("sha256:")
    findings = manifest["notes"]["redaction"]["findings"]
    assert findings == {"EMAIL": 1, "PHONE": 1} if backend == "rules" else findings.keys() >= {"EMAIL", "PHONE"}
    assert manifest["notes"]["redaction"]["detectors"]["backend"] in ("rules", "presidio")


def test_bad_rows_are_listed_with_file_line_and_nothing_is_written(tmp_path, salt):
    bad = write(
        tmp_path / "bad.jsonl",
        [
            {"messages": "hi", "reply": "hello", "rating": "up"},
            {"messages": "hi", "reply": "hello", "rating": "meh"},
            {"reply": "hello"},
            {"messages": "hi", "reply": "", "rating": "down"},
            {"messages": "hi", "reply": "ok", "time": "yesterday"},
        ],
    )
    with pytest.raises(AlignError) as exc:
        import_run(tmp_path, bad)
    message = str(exc.value)
    assert message.startswith("4 bad feedback row(s), nothing written")
    assert f"{bad}:2: rating 'meh' is not up or down" in message
    assert f"{bad}:3: no conversation" in message
    assert f"{bad}:4: no reply: field 'reply' is missing or empty" in message
    assert f"{bad}:5: time 'yesterday' is not ISO 8601" in message
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_raw_user_id_without_a_salt_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("ALIGN_FEEDBACK_SALT", raising=False)
    file = write(tmp_path / "f.jsonl", [{"prompt": "hi", "reply": "hello", "rating": 1, "user": "alice"}])
    with pytest.raises(AlignError, match=r"f.jsonl:1: 'user' holds a raw id; set the salt"):
        import_run(tmp_path, file)
    hashed = write(
        tmp_path / "g.jsonl", [{"prompt": "hi", "reply": "hello", "rating": 1, "user": hash_id("alice", "s")}]
    )
    assert import_run(tmp_path, hashed)["metrics"]["rows"] == 1


def test_columns_are_configurable_and_csv_reads(tmp_path, salt):
    csv = tmp_path / "export.csv"
    csv.write_text("question,answer,model_version,thumbs\nWhere is it?,On its way.,v7,1\nAnd now?,No idea.,v7,0\n")
    manifest = import_run(
        tmp_path,
        csv,
        **{
            "columns.prompt": "question",
            "columns.reply": "answer",
            "columns.policy_run": "model_version",
            "columns.rating": "thumbs",
        },
    )
    assert manifest["notes"]["counts"]["by_policy_run"] == {"v7": {"down": 1, "up": 1}}


def test_drop_mode_leaves_out_rows_with_personal_data(tmp_path, salt):
    manifest = import_run(tmp_path, EXAMPLE, redaction="drop")
    assert manifest["metrics"]["rows"] == 25 and manifest["notes"]["redaction"]["rows_dropped"] == 1


def test_kto_reads_thumbs_and_dpo_reads_corrections_from_the_run(tmp_path, salt):
    run = import_run(tmp_path, EXAMPLE)["path"]
    examples = load_preference_pairs(run, unpaired=True)
    assert examples.report["desirable"] == 15 and examples.report["undesirable"] == 10
    pairs = load_preference_pairs(run)
    assert len(pairs.rows) == 6
    first = pairs.rows[0]
    assert first["chosen"][0]["content"].startswith("I'm sorry for the trouble with the invoice")
    assert first["rejected"][0]["content"] == "No."


def test_kto_weights_by_hand():
    # 10 desirable, 30 undesirable: ratio 1/3 -> desirable_weight 3.5 gives 3.5*10/30 = 7/6.
    assert kto_weights(10, 30) == {"desirable_weight": 3.5, "undesirable_weight": 1.0}
    # 30 vs 10: ratio 3 -> undesirable_weight 3 / (7/6) = 2.5714; 30 / (2.5714*10) = 1.1667.
    assert kto_weights(30, 10) == {"desirable_weight": 1.0, "undesirable_weight": 2.5714}
    assert kto_weights(12, 10) == {"desirable_weight": 1.0, "undesirable_weight": 1.0}  # 1.2 is within [1, 4/3]
    assert kto_weights(5, 0) is None


def test_cli_import_takes_several_files_and_serve_log_joins_ratings(tmp_path, salt, capsys):
    from align.feedback.log import FeedbackLog, rating_event

    log = FeedbackLog(tmp_path / "feedback.jsonl")
    log.append(
        {
            "event": "reply",
            "reply_id": "r-1",
            "time": "2026-12-01T10:00:00+00:00",
            "policy_run": "dpo-r3",
            "messages": [{"role": "user", "content": "Hello"}],
            "reply": "Hi there.",
        }
    )
    log.append(
        {
            "event": "reply",
            "reply_id": "r-2",
            "time": "2026-12-01T10:01:00+00:00",
            "policy_run": "dpo-r3",
            "messages": [{"role": "user", "content": "Help"}],
            "reply": "No.",
        }
    )
    log.append(rating_event("r-2", "down", user="bob", salt=salt))
    log.append(rating_event("r-2", correction="Of course, what do you need?", user="bob", salt=salt))
    code = main(["feedback", "import", str(log.path), str(EXAMPLE), f"runs_dir={tmp_path / 'runs'}", "name=fb"])
    assert code == 0
    manifest = json.loads((tmp_path / "runs" / "fb" / "manifest.json").read_text())
    assert manifest["notes"]["counts"]["by_policy_run"]["dpo-r3"] == {"down": 1, "unrated": 1}
    rows = [json.loads(line) for line in (tmp_path / "runs" / "fb" / "feedback.jsonl").open()]
    joined = next(r for r in rows if r["reply_id"] == "r-2")
    assert joined["rating"] == "down" and joined["correction"] == "Of course, what do you need?"
    assert [i["role"] for i in manifest["inputs"]] == ["feedback0", "feedback1"]


def test_a_rating_of_an_unknown_reply_in_a_serve_log_is_a_bad_row(tmp_path, salt):
    from align.feedback.log import FeedbackLog, rating_event

    log = FeedbackLog(tmp_path / "feedback.jsonl")
    log.append({"event": "reply", "reply_id": "r-1", "messages": [{"role": "user", "content": "Hi"}], "reply": "Yo"})
    log.append(rating_event("r-9", "up"))
    with pytest.raises(AlignError, match=r"feedback.jsonl:2: a rating of reply_id 'r-9'"):
        import_run(tmp_path, log.path)


def test_parquet_export_reads(tmp_path, salt):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(
        [
            {
                "messages": [{"role": "user", "content": "Is it in stock?"}],
                "reply": "Yes, ships today.",
                "rating": 1,
                "policy_run": "r7",
                "time": 1795860000,
                "correction": None,
            },  # pyarrow takes the columns from row 1
            {
                "messages": [{"role": "user", "content": "Refund?"}],
                "reply": "No.",
                "rating": 0,
                "policy_run": "r7",
                "time": 1795860060,
                "correction": "Of course, I've started your refund.",
            },
        ]
    )
    pq.write_table(table, tmp_path / "export.parquet")
    manifest = import_run(tmp_path, tmp_path / "export.parquet")
    assert manifest["notes"]["counts"]["by_rating"] == {"up": 1, "down": 1, "unrated": 0}
    assert manifest["notes"]["counts"]["by_day"] == {"2026-11-28": 2}
    assert manifest["metrics"]["correction_pairs"] == 1
