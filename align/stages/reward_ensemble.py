"""A reward-model ensemble on bootstrap resamples: `align reward-ensemble bootstrap.members=4 ...`.

For `align pairs selection=ensemble_disagreement` (align/rollout/pairs.py): K reward models whose
disagreement on a pair says how unsure the labels so far leave it. Each member is an ordinary
`align reward` run, trained by that stage (not a second trainer), on its own bootstrap resample of the
training pairs: n pairs drawn with replacement from the n the reward stage would train on (after the
held-out split, the token budget and `data.max_train_pairs`), with seed `reward seed + k`, so the
members differ in data, in score-head initialisation and in data order. Every member is measured on
the same held-out pairs (`data.test`, or the `data.test_fraction` split written once for all).
Validation pairs (`data.validation_fraction`) stay out of every member's training and are not scored.

Run directories, all in `runs_dir`: `<name>-resamples` (the K training files and the held-out file),
`<name>-member-<k>` (the reward runs) and `<name>` (stage `reward ensemble`: `members.json` lists the
members relative to it; its manifest holds their manifests and test accuracies). `align score
reward_model=<name>` scores with every member. The settings are `align reward`'s plus `bootstrap`.

Departure from Lakshminarayanan et al. 2017 (deep ensembles): their members differ only in random
initialisation; here they share the starting policy and differ by bootstrap resampling (the classic
bagging ensemble), because a 135M policy gives every member the same start.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from align.core import runs
from align.core.config import build, to_dict
from align.core.errors import AlignError
from align.data.length import LENGTH
from align.data.records import write_jsonl
from align.stages import reward
from align.stages.score import ENSEMBLE_STAGE, MEMBERS

log = logging.getLogger(__name__)

RESAMPLES_STAGE = "reward resamples"
HELD_OUT = "test.jsonl"


@dataclass
class Bootstrap:
    """How the ensemble is made."""

    members: int = 4
    """Reward models in the ensemble (each on its own bootstrap resample)."""
    seed: int = 0
    """Seed of the resamples (member k draws with seed + k)."""

    def __post_init__(self):
        if self.members < 2:
            raise AlignError(f"'bootstrap.members' must be >= 2 (one model has nothing to disagree with), got {self.members}")


@dataclass
class Config(reward.Config):
    """`align reward-ensemble` settings: `align reward`'s, plus `bootstrap`."""

    bootstrap: Bootstrap = field(default_factory=Bootstrap)
    """Members and the seed of their resamples."""


def check(cfg: Config) -> dict:
    """What `--dry-run` prints: the reward stage's check, and the ensemble's size."""
    return {**reward.prepare(_as_reward(cfg, {})).report, "members": cfg.bootstrap.members}


def run(cfg: Config) -> dict:
    ready = reward.prepare(_as_reward(cfg, {}))  # the pairs `align reward` would train on, checked
    name = cfg.name or f"reward-ensemble-{random.Random().getrandbits(16):04x}"
    runs_dir = Path(cfg.runs_dir)
    for path in [runs_dir / name, runs_dir / f"{name}-resamples",
                 *(runs_dir / f"{name}-member-{k}" for k in range(cfg.bootstrap.members))]:
        if path.exists():
            raise AlignError(f"{path} already exists; choose another `name` or remove it")
    rows = [{k: v for k, v in r.items() if k not in (LENGTH, "margin")} for r in ready.rows]

    with runs.new_run(RESAMPLES_STAGE, to_dict(cfg), runs_dir, f"{name}-resamples") as resamples:
        for k in range(cfg.bootstrap.members):
            draw = random.Random(cfg.bootstrap.seed + k)
            picked = [draw.randrange(len(rows)) for _ in rows]
            write_jsonl(resamples.path / f"train-{k}.jsonl", [rows[i] for i in picked])
            resamples.add_output(f"train_{k}", f"train-{k}.jsonl", rows=len(picked), distinct=len(set(picked)))
        if ready.test is not None and not cfg.data.test:
            write_jsonl(resamples.path / HELD_OUT, [{k: v for k, v in r.items() if k != LENGTH} for r in ready.test.rows])
            resamples.add_output("test", HELD_OUT, rows=len(ready.test.rows))
        resamples.notes["data"] = ready.report["data"]
        resampled = runs.finish(resamples)

    members = []
    for k in range(cfg.bootstrap.members):
        data = {"data.train": str(Path(resampled["path"]) / f"train-{k}.jsonl"), "data.format": "conversational",
                "data.max_train_pairs": None, "data.validation_fraction": 0.0, "data.test_fraction": 0.0,
                "name": f"{name}-member-{k}", "seed": cfg.seed + k}
        if "test" in resampled["outputs"]:
            data.update({"data.test": str(Path(resampled["path"]) / HELD_OUT), "data.max_test_pairs": None})
        log.info("reward ensemble: member %d of %d", k + 1, cfg.bootstrap.members)
        members.append(reward.run(_as_reward(cfg, data)))

    with runs.new_run(ENSEMBLE_STAGE, to_dict(cfg), runs_dir, name) as ens:
        ens.add_input("resamples", resampled["path"])
        for k, member in enumerate(members):
            ens.add_input(f"member_{k}", member["path"])
        (ens.path / MEMBERS).write_text(json.dumps([f"../{Path(m['path']).name}" for m in members]) + "\n", encoding="utf-8")
        ens.add_output("members", MEMBERS, members=len(members))
        accuracies = [m["metrics"].get("test_accuracy") for m in members]
        if all(a is not None for a in accuracies):
            ens.metrics.update(member_test_accuracy=accuracies, mean_member_test_accuracy=round(statistics.fmean(accuracies), 4))
        ens.metrics["members"] = len(members)
        return runs.finish(ens)


def _as_reward(cfg: Config, overrides: dict) -> reward.Config:
    """The `align reward` config of the ensemble's settings (without `bootstrap`), with dotted overrides."""
    from align.core.config import set_dotted

    data = to_dict(cfg)
    data.pop("bootstrap")
    for key, value in overrides.items():
        set_dotted(data, key, value)
    return build(reward.Config, data)
