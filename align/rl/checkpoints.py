"""`align ppo`'s checkpoints: `checkpoint_dir/step-N/` with the trainer's state and `checkpoint.json` (the
settings a resumed run must share and its training prompts' hash), for PPO (align's trainer) and for
RLOO/GRPO (transformers' checkpoint, align/rl/trl_online.py). `cfg` is the ppo stage's Config.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from align.core.config import to_dict
from align.core.errors import AlignError
from align.core.runs import CHECKPOINT_INFO
from align.data.splits import prompt_key

log = logging.getLogger(__name__)

CHECKPOINT_STATE = "state.pt"  # PPO's; RLOO's and GRPO's are transformers' trainer_state.json and company
TRL_CHECKPOINT_STATE = "trainer_state.json"
# Settings a resumed run must share with the run that wrote the checkpoint (TRL's also `training`, which
# holds what decides their batches, e.g. gradient_accumulation_steps).
RESUME_KEYS = (
    "algorithm",
    "model",
    "reward_model",
    "prompts",
    "prompt_field",
    "max_prompts",
    "batch_size",
    "num_generations",
    "max_new_tokens",
    "temperature",
    "lora",
    "seed",
)


def resume_keys(cfg) -> tuple[str, ...]:
    return RESUME_KEYS if cfg.algorithm == "ppo" else (*RESUME_KEYS, "training")


def prompts_digest(prompts) -> str:
    """The training prompts, in order, as one hash: a resumed run must draw from the same list (a changed
    file, or another held-out split of it, would silently change which prompts the later steps use)."""
    return prompt_key([p.messages for p in prompts])


def publish_checkpoint(cfg, step: int, prompts, fill) -> Path:
    """`checkpoint_dir/step-N/`: `fill(directory)` writes the trainer's state, then the settings it was
    trained with (and its training prompts' hash) go beside it, and the directory is renamed into
    place, so a half-written checkpoint never looks complete."""
    import shutil

    target = Path(cfg.checkpoint_dir) / f"step-{step}"
    tmp = target.with_name(f".{target.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    fill(tmp)
    settings = to_dict(cfg)
    (tmp / CHECKPOINT_INFO).write_text(
        json.dumps(
            {
                "step": step,
                "config": {k: settings[k] for k in resume_keys(cfg)},
                "train_prompts_sha256": prompts_digest(prompts),
            },
            indent=2,
        )
    )
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    log.info("checkpoint written: %s", target)
    return target


def write_checkpoint(cfg, trainer, step: int, prompts) -> Path:
    """PPO's checkpoint: both adapters, the optimizer and the RNG (`PPOTrainer.state_dict`)."""
    import torch

    def fill(directory: Path) -> None:
        directory.mkdir()
        torch.save(trainer.state_dict(), directory / CHECKPOINT_STATE)

    return publish_checkpoint(cfg, step, prompts, fill)


def read_checkpoint(cfg) -> dict:
    path = Path(cfg.resume_from)
    info = path / CHECKPOINT_INFO
    if not info.exists():
        raise AlignError(
            f"resume_from={cfg.resume_from} is not an `align ppo` checkpoint (no {CHECKPOINT_INFO}); "
            "give a `checkpoint_dir/step-N` directory"
        )
    record = json.loads(info.read_text(encoding="utf-8"))
    # Checkpoints written before the algorithm was recorded are PPO's (the only one that had them).
    record["config"].setdefault("algorithm", "ppo")
    if record["config"]["algorithm"] != cfg.algorithm:
        raise AlignError(
            f"resume_from={cfg.resume_from} is a checkpoint of algorithm={record['config']['algorithm']}, "
            f"this run has algorithm={cfg.algorithm}; resume with the algorithm that wrote it"
        )
    state = CHECKPOINT_STATE if cfg.algorithm == "ppo" else TRL_CHECKPOINT_STATE
    if not (path / state).exists():
        raise AlignError(
            f"resume_from={cfg.resume_from} has {CHECKPOINT_INFO} but no {state}: the checkpoint is "
            "incomplete; give another `checkpoint_dir/step-N` directory"
        )
    settings = to_dict(cfg)
    changed = [k for k in resume_keys(cfg) if record["config"].get(k) != settings[k]]
    if changed:
        k = changed[0]
        raise AlignError(
            f"resume_from={cfg.resume_from} was written with {k}={record['config'].get(k)!r}, this run has "
            f"{k}={settings[k]!r}; resume with the same settings ({', '.join(changed)} differ)"
        )
    if record["step"] >= cfg.steps:
        raise AlignError(
            f"resume_from={cfg.resume_from} is at step {record['step']}, not before steps={cfg.steps}; "
            "raise steps to train further"
        )
    return record


def check_resume_prompts(cfg, record: dict, prompts) -> None:
    expected = record.get("train_prompts_sha256")  # absent in checkpoints written before it was recorded
    if expected and expected != prompts_digest(prompts):
        raise AlignError(
            f"resume_from={cfg.resume_from} was trained on other prompts than this run's {len(prompts)} "
            f"training prompts from {cfg.prompts} (the file, or the held-out split eval.prompts/eval.path, "
            "changed); resume with the prompts it started with"
        )
