"""A reward-model ensemble on bootstrap resamples: `align reward-ensemble reward.config=FILE bootstrap.members=4 ...`.

For `align pairs selection=ensemble_disagreement` (align/rollout/pairs.py): K reward models whose
disagreement on a pair says how unsure the labels so far leave it. Each member is an ordinary
`align reward` run, trained by that command in a process of its own (no second trainer; one member's
weights are freed before the next loads), on its own bootstrap resample of the training pairs: n pairs
drawn with replacement from the n training pairs (after the held-out split and `data.max_train_pairs`),
member k with resample seed and reward `seed` S + k (`bootstrap.seed` = S), so the members differ in data,
in score-head initialisation and in data order. Every member is measured on the same held-out pairs
(`data.test`, or the `data.test_fraction` split, written once for all). Pairs over the token budget are
handled by each member as `align reward` does. Validation pairs (`data.validation_fraction`) stay out of
every member's training and are not scored.

`reward` holds `align reward`'s settings as a loop section does: `config: FILE` plus any of its keys.
Run directories, all in `runs_dir`: `<name>-resamples` (the K training files, the held-out file and each
member's resolved config), `<name>-member-<k>` (the reward runs) and `<name>` (stage `reward ensemble`:
`members.json` lists the members relative to it; its manifest holds their manifests and test accuracies).
`align score reward_model=<name>` scores with every member.

Departure from Lakshminarayanan et al. 2017 (deep ensembles): their members differ only in random
initialisation; here they also differ by bootstrap resampling (bagging), because every member starts
from the same policy.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from align.core import runs
from align.core.config import build, read_yaml, set_dotted, to_dict
from align.core.errors import AlignError
from align.data.preferences import PreferenceDataConfig, sample, training_pool
from align.data.records import write_jsonl
from align.scoring import ENSEMBLE_STAGE, MEMBERS

log = logging.getLogger(__name__)

RESAMPLES_STAGE = "reward resamples"
HELD_OUT = "test.jsonl"


@dataclass
class Bootstrap:
    """How the ensemble is made."""

    members: int = 4
    """Reward models in the ensemble (each on its own bootstrap resample)."""
    seed: int = 0
    """Member k draws its resample with seed + k and trains with reward seed + k."""

    def __post_init__(self):
        if self.members < 2:
            raise AlignError(
                f"'bootstrap.members' must be >= 2 (one model has nothing to disagree with), got {self.members}"
            )


@dataclass
class Config(runs.RunOutput):
    """`align reward-ensemble` settings."""

    reward: dict[str, Any] = field(default_factory=dict)
    """`align reward` settings: `config: FILE` plus any of its keys (e.g. model, data.train, data.test_fraction);
    `seed`, `runs_dir` and `name` are set per member."""
    bootstrap: Bootstrap = field(default_factory=Bootstrap)
    """Members and the seed of their resamples."""

    def __post_init__(self):
        for key in ("seed", "runs_dir", "name"):
            if key in self.reward:
                raise AlignError(
                    f"'reward.{key}' is set per member (bootstrap.seed + k, runs_dir, <name>-member-<k>); remove it"
                )


def check(cfg: Config) -> dict:
    """What `--dry-run` prints: the pairs the members would resample, and `align reward --dry-run` of member 0."""
    settings, train, test = prepare(cfg)
    _align_reward(_member_settings(settings, {"seed": cfg.bootstrap.seed}), ["--dry-run"], capture=True)
    return {
        "train_pairs": len(train),
        "test_pairs": len(test) if test is not None else None,
        "members": cfg.bootstrap.members,
    }


def prepare(cfg: Config) -> tuple[dict[str, Any], list[dict], list[dict] | None]:
    """(the reward settings, file merged with keys; the training pairs; the held-out pairs or None), checked."""
    settings = dict(cfg.reward)
    file = settings.pop("config", None)
    merged: dict[str, Any] = read_yaml(file) if file else {}
    for key, value in _flatten(settings).items():
        set_dotted(merged, key, value)
    data_cfg = build(PreferenceDataConfig, merged.get("data") or {}, "reward.data.")
    _, train, test = training_pool(data_cfg)
    train = sample(train, data_cfg.max_train_pairs, data_cfg.seed)
    if not train:
        raise AlignError(f"{data_cfg.train}: no training pairs to resample")
    return merged, train, (test.rows if test is not None and not data_cfg.test else None)


def run(cfg: Config) -> dict:
    settings, train, held_out = prepare(cfg)
    name = cfg.name or f"reward-ensemble-{random.Random().getrandbits(16):04x}"
    runs_dir = Path(cfg.runs_dir)
    for path in [
        runs_dir / name,
        runs_dir / f"{name}-resamples",
        *(runs_dir / f"{name}-member-{k}" for k in range(cfg.bootstrap.members)),
    ]:
        if path.exists():
            raise AlignError(f"{path} already exists; choose another `name` or remove it")

    with runs.new_run(RESAMPLES_STAGE, to_dict(cfg), runs_dir, f"{name}-resamples") as resamples:
        final = (runs_dir / f"{name}-resamples").resolve()  # where the members will read the files
        for k in range(cfg.bootstrap.members):
            draw = random.Random(cfg.bootstrap.seed + k)
            picked = [draw.randrange(len(train)) for _ in train]
            write_jsonl(resamples.path / f"train-{k}.jsonl", [train[i] for i in picked])
            resamples.add_output(f"train_{k}", f"train-{k}.jsonl", rows=len(picked), distinct=len(set(picked)))
            overrides = {
                "seed": cfg.bootstrap.seed + k,
                "data.train": str(final / f"train-{k}.jsonl"),
                "data.format": "conversational",
                "data.max_train_pairs": None,
                "data.test_fraction": 0.0,
                "data.validation_fraction": 0.0,
            }
            if held_out is not None:
                overrides["data.test"] = str(final / HELD_OUT)
            (resamples.path / f"member-{k}.yaml").write_text(yaml.safe_dump(_member_settings(settings, overrides)))
            resamples.add_output(f"member_{k}_config", f"member-{k}.yaml")
        if held_out is not None:
            write_jsonl(resamples.path / HELD_OUT, held_out)
            resamples.add_output("test", HELD_OUT, rows=len(held_out))
        resampled = runs.finish(resamples)

    members = []
    for k in range(cfg.bootstrap.members):
        log.info("reward ensemble: member %d of %d (align reward)", k + 1, cfg.bootstrap.members)
        member = runs_dir / f"{name}-member-{k}"
        _align_reward(Path(resampled["path"]) / f"member-{k}.yaml", [f"runs_dir={runs_dir}", f"name={member.name}"])
        members.append(runs.read_manifest(member))

    with runs.new_run(ENSEMBLE_STAGE, to_dict(cfg), runs_dir, name) as ens:
        ens.add_input("resamples", resampled["path"])
        for k in range(len(members)):
            ens.add_input(f"member_{k}", runs_dir / f"{name}-member-{k}")
        (ens.path / MEMBERS).write_text(
            json.dumps([f"../{name}-member-{k}" for k in range(len(members))]) + "\n", encoding="utf-8"
        )
        ens.add_output("members", MEMBERS, members=len(members))
        accuracies = [m["metrics"].get("test_accuracy") for m in members]
        if all(a is not None for a in accuracies):
            ens.metrics.update(
                member_test_accuracy=accuracies, mean_member_test_accuracy=round(statistics.fmean(accuracies), 4)
            )
        ens.metrics["members"] = len(members)
        return runs.finish(ens)


def _member_settings(settings: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(settings))
    for key, value in overrides.items():
        set_dotted(out, key, value)
    return out


def _align_reward(config: Path | dict, extra: list[str], capture: bool = False) -> None:
    """`align reward --config CONFIG EXTRA...` in a process of its own (its progress shown unless `capture`);
    a failure stops the ensemble: exit 2 stays a bad-input error, anything else is one too many to guess at."""
    if isinstance(config, dict):
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(config, f)
        config = Path(f.name)
    done = subprocess.run(
        [sys.executable, "-m", "align", "reward", "--config", str(config), *extra], capture_output=capture, text=True
    )
    if done.returncode != 0:
        said = (
            "\n".join(((done.stdout or "") + (done.stderr or "")).strip().splitlines()[-5:]) or "(its output is above)"
        )
        message = f"align reward --config {config} failed with exit code {done.returncode}:\n{said}"
        if done.returncode == 2:
            raise AlignError(message)
        raise RuntimeError(message)


def _flatten(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
