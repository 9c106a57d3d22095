"""DPO's reward-model comparison answers held-out prompts only: without a held-out split it refuses
(before any run directory or model weights) instead of scoring training prompts as "held-out"."""

from __future__ import annotations

import shutil
from pathlib import Path

from align.cli import main
from align.core import runs
from tests.conftest import write_jsonl


def reward_run(runs_dir: Path, tiny_model: Path) -> Path:
    """A hand-made full-weights reward run (only its manifest is read before the refusal)."""
    with runs.new_run("reward", {"hand_made": True}, runs_dir, "reward-hand") as run:
        shutil.copytree(tiny_model, Path(run.path) / "model")
        run.add_output("model", "model", format="full", task="reward")
        runs.finish(run)
    return runs_dir / "reward-hand"


def test_reward_eval_without_held_out_prompts_exits_2(tmp_path, tiny_model, capsys):
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(8)])
    rm = reward_run(tmp_path / "rm", tiny_model)
    code = main(
        [
            "dpo",
            f"model={tiny_model}",
            f"data.train={data}",
            f"reward_model={rm}",
            f"runs_dir={tmp_path / 'runs'}",
            "max_length=64",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "no held-out prompts" in err and "reward_eval.prompts=0" in err
    assert not (tmp_path / "runs").exists()
