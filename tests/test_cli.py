"""The command line: exit code 2 and one clear line for bad input, and no run directory left behind."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from align.cli import COMMANDS, main
from tests.conftest import write_jsonl


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_lines(err: str) -> list[str]:
    return [l for l in err.splitlines() if l.startswith("align: error:")]


@pytest.fixture
def good_pairs(tmp_path):
    return write_jsonl(
        tmp_path / "pairs.jsonl",
        [{"prompt": "q", "chosen": "good", "rejected": "bad"}, {"prompt": "q2", "chosen": "yes", "rejected": "no"}],
    )


def test_misspelt_config_key(tmp_path, capsys, good_pairs):
    cfg = tmp_path / "dpo.yaml"
    cfg.write_text(f"data:\n  train: {good_pairs}\nbetta: 0.1\n")
    code, _, err = run_cli(["dpo", "--config", str(cfg), f"runs_dir={tmp_path / 'runs'}"], capsys)
    assert code == 2
    assert error_lines(err) == ["align: error: unknown config key 'betta' (did you mean 'beta'?)"]
    assert not (tmp_path / "runs").exists()


def test_malformed_jsonl_line(tmp_path, capsys, tiny_model):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "q2", "chosen": \n')
    code, _, err = run_cli(
        ["reward", f"model={tiny_model}", f"data.train={bad}", f"runs_dir={tmp_path / 'runs'}"], capsys
    )
    assert code == 2
    (line,) = error_lines(err)
    assert f"{bad}:2: malformed JSON" in line
    assert not (tmp_path / "runs").exists()


def test_missing_field(tmp_path, capsys, tiny_model):
    bad = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "q", "chosen": "a"}])
    code, _, err = run_cli(["dpo", f"model={tiny_model}", f"data.train={bad}", f"runs_dir={tmp_path / 'runs'}"], capsys)
    assert code == 2
    (line,) = error_lines(err)
    assert f"{bad}:1: missing field 'rejected'" in line
    assert not (tmp_path / "runs").exists()


def test_model_path_that_does_not_exist(tmp_path, capsys, good_pairs):
    code, _, err = run_cli(
        ["sft", "model=./no/such/model", f"data.train={good_pairs}", f"runs_dir={tmp_path / 'runs'}"], capsys
    )
    assert code == 2
    (line,) = error_lines(err)
    assert "model path does not exist: ./no/such/model" in line
    assert not (tmp_path / "runs").exists()


def test_hub_id_without_a_hub_fails_clearly(tmp_path, capsys, good_pairs, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run_cli(
        ["sft", "model=someorg/some-model", f"data.train={good_pairs}", f"runs_dir={tmp_path / 'runs'}"], capsys
    )
    assert code == 2
    (line,) = error_lines(err)
    assert "'someorg/some-model' is not a local directory, not in the local Hugging Face cache" in line
    assert "hf download someorg/some-model" in line


def test_weights_must_be_safetensors(tmp_path, capsys, good_pairs):
    model = tmp_path / "pickled"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "pytorch_model.bin").write_bytes(b"\x80")
    code, _, err = run_cli(["sft", f"model={model}", f"data.train={good_pairs}"], capsys)
    assert code == 2 and "no .safetensors weights" in err


def test_unknown_command_and_unknown_subcommand(capsys):
    assert run_cli(["dop"], capsys)[0] == 2
    code, _, err = run_cli(["annotate", "pusj"], capsys)
    assert code == 2 and error_lines(err) and "did you mean 'push'" in err


@pytest.mark.parametrize("group", sorted({n.split()[0] for n in COMMANDS if " " in n}))
@pytest.mark.parametrize("flag", [[], ["--help"], ["-h"]])
def test_command_group_lists_its_subcommands(group, flag, capsys):
    code, out, err = run_cli([group, *flag], capsys)
    assert code == 0 and not error_lines(err)
    for name in COMMANDS:
        if name.startswith(group + " "):
            assert name in out


def test_evaluate_reward_refuses_a_causal_lm(tmp_path, capsys, good_pairs, tiny_model):
    """A plain causal LM loaded as a classifier gets a random score head: refuse, as `align score` does."""
    code, _, err = run_cli(
        [
            "evaluate",
            "reward",
            f"reward_model={tiny_model}",
            f"data.path={good_pairs}",
            f"runs_dir={tmp_path / 'runs'}",
        ],
        capsys,
    )
    assert code == 2 and len(error_lines(err)) == 1 and "not a reward model" in err
    assert not (tmp_path / "runs").exists()


def test_evaluate_reward_refuses_a_two_label_classifier(tmp_path, capsys, good_pairs, tiny_model):
    import shutil

    model = tmp_path / "two-labels"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    config.update(
        architectures=["LlamaForSequenceClassification"], id2label={"0": "A", "1": "B"}, label2id={"A": 0, "B": 1}
    )
    (model / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli(
        ["evaluate", "reward", f"reward_model={model}", f"data.path={good_pairs}", f"runs_dir={tmp_path / 'runs'}"],
        capsys,
    )
    assert code == 2 and "2 labels" in err


def test_stages_lists_every_command(capsys):
    code, out, _ = run_cli(["stages"], capsys)
    assert code == 0
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", ["sft", "reward", "dpo", "evaluate reward"])
def test_help_lists_documented_keys(name, capsys):
    code, out, _ = run_cli([*name.split(), "--help"], capsys)
    assert code == 0
    assert "config keys" in out and "runs_dir" in out


def test_dry_run_prints_resolved_config_and_counts_the_inputs(tmp_path, capsys, good_pairs, tiny_model, monkeypatch):
    import align.models

    def no_weights(*args, **kwargs):
        raise AssertionError("a dry run must not load model weights")

    monkeypatch.setattr(align.models, "_load", no_weights)
    code, out, _ = run_cli(
        [
            "dpo",
            "beta=0.3",
            f"model={tiny_model}",
            f"data.train={good_pairs}",
            f"runs_dir={tmp_path / 'runs'}",
            "--dry-run",
        ],
        capsys,
    )
    assert code == 0 and "beta: 0.3" in out
    assert out.index("beta: 0.3") < out.index("# inputs")
    assert "records_read: 2" in out and "pairs_trained: 2" in out and f"model: {tiny_model}" in out
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["dpo"],  # data.train unset
        ["dpo", "data.train=does-not-exist.jsonl"],
        ["sft", "data.train=does-not-exist.jsonl"],
        ["evaluate", "reward", "reward_model=does-not-exist"],
        ["generate", "prompts=does-not-exist.jsonl"],
    ],
)
def test_dry_run_fails_on_bad_input(argv, capsys, tiny_model):
    code, _, err = run_cli(
        [*argv, f"model={tiny_model}" if argv[0] in ("sft", "dpo") else "runs_dir=runs", "--dry-run"], capsys
    )
    assert code == 2 and len(error_lines(err)) == 1


def test_dry_run_counts_prompts_for_generate(tmp_path, capsys, tiny_model):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", ["Hello?", "Name a colour."])
    code, out, _ = run_cli(
        ["generate", f"prompts={prompts}", f"policy={tiny_model}", "sampling.n=3", "--dry-run"], capsys
    )
    assert code == 0 and "prompts: 2" in out and "responses: 6" in out


def test_lineage_command(tmp_path, capsys):
    from align.core import runs

    with runs.new_run("sft", {}, tmp_path, "r") as run:
        runs.finish(run)
    code, out, _ = run_cli(["lineage", str(tmp_path / "r")], capsys)
    assert code == 0 and out.startswith("sft")
    code, out, _ = run_cli(["lineage", "--json", str(tmp_path / "r")], capsys)
    assert json.loads(out)["stage"] == "sft"
    assert run_cli(["lineage", str(tmp_path)], capsys)[0] == 2


@pytest.mark.parametrize(
    "env, printed",
    [
        ({}, True),
        ({"RANK": "0", "WORLD_SIZE": "2"}, True),
        ({"RANK": "1", "WORLD_SIZE": "2"}, False),
        ({"LOCAL_RANK": "1", "WORLD_SIZE": "2"}, False),
    ],
)
def test_stage_summary_is_printed_by_the_main_process_only(env, printed, tmp_path, capsys, monkeypatch):
    """Under `accelerate launch` every process runs the stage; one summary, not one per process."""
    from align.cli import print_summary
    from align.core import runs

    with runs.new_run("sft", {}, tmp_path, "r") as run:
        run.metrics["test_loss"] = 0.5
        manifest = runs.finish(run)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    print_summary("sft", manifest)
    out = capsys.readouterr().out
    assert (f"sft: run written to {tmp_path / 'r'}" in out and "test_loss: 0.5" in out) if printed else out == ""


def test_import_align_does_not_import_heavy_dependencies():
    code = (
        "import sys, align, align.cli, align.core.config, align.core.runs; "
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'vllm', 'argilla') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dry_run_reads_and_redacts_push_input_without_contacting_argilla(tmp_path, capsys, monkeypatch):
    # An unreachable URL: a dry run that tried to connect would fail (exit 1), not print counts.
    monkeypatch.setenv("ARGILLA_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("ARGILLA_API_KEY", "not-used")
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"prompt": "Mail me at jane.doe@example.com", "response_a": "Sure.", "response_b": "No."},
            {"prompt": "Hi", "response_a": "Hello!", "response_b": "Hey."},
            {"prompt": "Same", "response_a": "Twin", "response_b": "Twin"},
        ],
    )
    code, out, _ = run_cli(["annotate", "push", str(pairs), "dataset=d", "--dry-run"], capsys)
    assert code == 0, out
    assert "pairs_read: 3" in out and "records: 2" in out and "skipped_identical_responses: 1" in out
    assert "EMAIL: 1" in out and "jane.doe" not in out.split("# inputs")[1]
    code, _, err = run_cli(["annotate", "push", str(tmp_path / "missing.jsonl"), "dataset=d", "--dry-run"], capsys)
    assert code == 2 and len(error_lines(err)) == 1
