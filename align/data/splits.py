"""Held-out prompts across a chain of runs: what a stage holds out must not have been trained on upstream.

SFT, reward and DPO each hold out prompts by the same content hash (`split_pairs`), so with equal
`test_fraction` and `seed` on the same data they leave out the same prompts. When they differ, the
model a stage starts from (or the reward model DPO evaluates with) may have been trained on prompts
this stage reports as held out, and its held-out figures measure memory, not generalisation.

`check_upstream` walks the manifests of the runs a stage builds on (model -> its model -> ...;
DPO's reward model and its chain too), recomputes for each training run the prompts it could have
trained on (its training file and split settings, from its manifest: the split alone, before its
token budget and `max_*` samples, so the check errs on the side of refusing) and refuses with an
AlignError naming the run when any of this stage's held-out prompts are among them.
`data.check_upstream_split: false` skips the check; the manifest records that it was skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from align.core import runs
from align.core.config import build
from align.core.errors import AlignError
from align.data.records import data_exists

log = logging.getLogger(__name__)

SPLIT_RULE = (
    "prompt-hash-v1: sha256('{seed}:' + json.dumps(prompt, sort_keys=True)), first 8 bytes / 2**64 < test_fraction"
)
TRAINING_STAGES = ("sft", "reward", "dpo", "kto")


def prompt_key(prompt: Any) -> str:
    return hashlib.sha256(json.dumps(prompt, sort_keys=True).encode("utf-8")).hexdigest()


def split_record(data_cfg, held_out_prompts: list[Any]) -> dict[str, Any]:
    """What goes into the manifest (`notes.split`): the settings and a hash of the held-out prompts."""
    keys = sorted({prompt_key(p) for p in held_out_prompts})
    return {
        "rule": SPLIT_RULE,
        "test_fraction": data_cfg.test_fraction,
        "seed": data_cfg.seed,
        "test": getattr(data_cfg, "test", None),
        "validation_fraction": getattr(data_cfg, "validation_fraction", 0.0),
        "held_out_prompts": len(keys),
        "held_out_sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest(),
        "check_upstream_split": data_cfg.check_upstream_split,
    }


def check_upstream(
    stage: str, data_cfg, held_out_prompts: list[Any], parents: list[dict[str, Any] | None]
) -> dict[str, Any]:
    """The split record, with what was checked upstream; AlignError when a held-out prompt was trained on."""
    record = split_record(data_cfg, held_out_prompts)
    record["upstream"] = []
    if not held_out_prompts:
        return record
    if not data_cfg.check_upstream_split:
        log.warning("data.check_upstream_split=false: held-out prompts were not checked against upstream runs")
        return record
    held_out = {prompt_key(p) for p in held_out_prompts}
    own = _own_split(data_cfg)
    for run_path, manifest in _upstream_runs(parents):
        trained, why = _trained_prompt_keys(manifest, data_cfg.train)
        entry = {"run": run_path, "stage": manifest.get("stage"), "split": _split_of(manifest)}
        if trained is None:
            log.warning("cannot check held-out prompts against %s run %s: %s", manifest.get("stage"), run_path, why)
            record["upstream"].append({**entry, "verified": False, "reason": why})
            continue
        overlap = len(held_out & trained)
        record["upstream"].append({**entry, "verified": True, "held_out_prompts_trained_on": overlap})
        if overlap:
            parent = _split_of(manifest)
            raise AlignError(
                f"{overlap} of the {len(held_out)} prompts this {stage} run holds out ({own}) were trained on by "
                f"upstream {manifest.get('stage')} run {run_path} ({_describe(parent)}); re-run that stage with the same "
                f"split (data.test_fraction={data_cfg.test_fraction} data.seed={data_cfg.seed} on the same data), "
                "or set data.check_upstream_split=false to accept it (recorded in the manifest)"
            )
    return record


def _own_split(data_cfg) -> str:
    if getattr(data_cfg, "test", None):
        return f"data.test={data_cfg.test}"
    return f"data.test_fraction={data_cfg.test_fraction}, data.seed={data_cfg.seed}"


def _split_of(manifest: dict[str, Any]) -> dict[str, Any]:
    data = (manifest.get("config") or {}).get("data") or {}
    return {
        "data": _input_path(manifest, "data.train") or data.get("train"),
        "test_fraction": data.get("test_fraction", 0.0),
        "seed": data.get("seed", 0),
        "test": data.get("test"),
    }


def _describe(split: dict[str, Any]) -> str:
    held = (
        f"data.test={split['test']}"
        if split.get("test")
        else (
            f"data.test_fraction={split['test_fraction']}, data.seed={split['seed']}"
            if split["test_fraction"]
            else "nothing held out"
        )
    )
    return f"trained on {split['data']} with {held}"


def _upstream_runs(parents: list[dict[str, Any] | None]):
    """(path, manifest) of every training run upstream, nearest first, each once."""
    seen: set[str] = set()
    stack = [p for p in parents if p]
    while stack:
        record = stack.pop(0)
        manifest = record.get("manifest")
        if record.get("kind") != "run" or not isinstance(manifest, dict) or record.get("path") in seen:
            continue
        seen.add(record["path"])
        if manifest.get("stage") in TRAINING_STAGES:
            yield record["path"], manifest
        stack.extend(i for i in manifest.get("inputs", []) if i.get("role") in ("model", "reward_model"))


def _input_path(manifest: dict[str, Any], role: str) -> str | None:
    # A hub dataset is recorded by its `hf:` reference (`ref`), a file by its path.
    return next((i.get("ref") or i.get("path") for i in manifest.get("inputs", []) if i.get("role") == role), None)


def _locate(record: dict[str, Any] | None, own_train: str) -> tuple[str | None, str]:
    """A readable path with the content the upstream run recorded, or None and why not."""
    if record is None:
        return None, "its manifest records no training data"
    recorded = record.get("ref") or record.get("path")
    for candidate in (recorded, own_train):
        if (
            candidate
            and data_exists(candidate)
            and runs.describe_input(candidate).get("sha256") == record.get("sha256")
        ):
            return candidate, ""
    return None, f"its training data {recorded} is gone or has changed since (sha256 {str(record.get('sha256'))[:12]})"


def _trained_prompt_keys(manifest: dict[str, Any], own_train: str) -> tuple[set[str] | None, str]:
    from align.data.conversations import ReplayConfig, SFTDataConfig, replay_pool, sft_pool
    from align.data.preferences import PreferenceDataConfig, training_pool

    inputs = {i.get("role"): i for i in manifest.get("inputs", [])}
    train, why = _locate(inputs.get("data.train"), own_train)
    if train is None:
        return None, why
    data = dict((manifest.get("config") or {}).get("data") or {}, train=train)
    if data.get("test"):
        test, why = _locate(inputs.get("data.test"), "")
        if test is None:
            return None, why.replace("training data", "test data")
        data["test"] = test
    if manifest.get("stage") == "sft":
        rows, _, _ = sft_pool(build(SFTDataConfig, {**data, "replay": {}}, "data."))
        replay = data.get("replay") or {}
        if replay.get("path"):  # replayed conversations were trained on too
            path, why = _locate(inputs.get("data.replay"), "")
            if path is None:
                return None, why.replace("training data", "replay data")
            rows = rows + replay_pool(build(ReplayConfig, {**replay, "path": path}, "data.replay."))
    else:
        # `align kto` reads unpaired data too; its examples carry the same prompts as the pairs they came from.
        _, rows, _ = training_pool(build(PreferenceDataConfig, data, "data."), unpaired=manifest.get("stage") == "kto")
    return {prompt_key(r["prompt"]) for r in rows}, ""
