"""`make demo-hh` (the main job before the feedback loop): SFT -> reward model -> DPO on the embedded model with HH-RLHF harmless pairs.

    python -m recipes.hh_harmless.run [--runs-dir runs] [--resume DIR] [STAGE.key=value ...]

Composes the stages by run-directory path (no training code here): the reward model starts from
the SFT run, DPO starts from the SFT run and is judged by the reward run, so `align lineage` on the
DPO run shows the whole chain. All three runs go under one pipeline directory. Overrides address a
stage: `dpo.beta=0.2`, `reward.training.max_steps=2`, `all.model=/path/to/model`.

`--resume DIR` reuses a complete stage there only when it is the run the current command would make:
its recorded config equals the resolved config (paths inside the pipeline compared relative to it,
so a moved pipeline resumes), and the earlier runs it was trained on are the ones in DIR. Otherwise
it stops with exit 2 before training anything, naming the stage, the differing keys and both values:
a changed stage, or one downstream of a stage that will be (re)trained, is never silently reused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from pathlib import Path

from align.cli import run_guarded
from align.core import runs
from align.core.config import load_config, to_dict
from align.core.errors import AlignError
from align.stages import dpo, reward, sft

HERE = Path(__file__).resolve().parent
STAGES = {"sft": sft, "reward": reward, "dpo": dpo}
RUN_NAMES = {"sft": "1-sft", "reward": "2-reward", "dpo": "3-dpo"}
log = logging.getLogger("align.recipes.hh_harmless")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.hh_harmless.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", default="runs", help="where the pipeline directory is created")
    parser.add_argument("--resume", help="an earlier pipeline directory: complete stages are reused")
    parser.add_argument("overrides", nargs="*", metavar="STAGE.key=value")
    args = parser.parse_args(argv)

    def pipeline() -> int:
        print_summary(run_pipeline(args.runs_dir, args.resume, args.overrides))
        return 0

    return run_guarded(pipeline, interrupted_hint="; complete stages are kept: rerun with --resume")


def run_pipeline(runs_dir: str, resume: str | None, overrides: list[str]) -> dict:
    per_stage = split_overrides(overrides)
    root = Path(resume) if resume else Path(runs_dir) / f"hh-harmless-{dt.datetime.now():%Y%m%d-%H%M%S}"
    if resume and not root.is_dir():
        raise AlignError(f"--resume {resume}: no such pipeline directory")
    wiring = {
        "sft": [],
        "reward": [f"model={root / RUN_NAMES['sft']}"],
        "dpo": [f"model={root / RUN_NAMES['sft']}", f"reward_model={root / RUN_NAMES['reward']}"],
    }
    # Load (and so validate) every stage's config before the first one trains: a typo in the DPO
    # section should not cost a finished SFT run's time.
    configs = {
        name: load_config(
            module.Config,
            HERE / f"{name}.yaml",
            per_stage["all"] + wiring[name] + per_stage[name] + [f"runs_dir={root}", f"name={RUN_NAMES[name]}"],
        )
        for name, module in STAGES.items()
    }
    reuse = plan_resume(root, configs) if resume else {}
    manifests = {}
    for name, module in STAGES.items():
        if name in reuse:
            log.info("%s: reusing the complete run %s (same config)", name, root / RUN_NAMES[name])
            manifests[name] = reuse[name]
            continue
        log.info("=== stage %s ===", name)
        manifests[name] = module.run(configs[name])
    summary = {
        "pipeline": str(root),
        "runs": {n: m["path"] for n, m in manifests.items()},
        "wall_time_s": {n: m.get("wall_time_s") for n, m in manifests.items()},
        "reward_model": _pick(manifests["reward"]["metrics"], "test_accuracy", "test_mean_margin", "test_pairs"),
        "dpo": _pick(
            manifests["dpo"]["metrics"],
            "test_rewards/accuracies",
            "test_rewards/margins",
            "test_pairs",
            "rm_policy_mean_reward",
            "rm_reference_mean_reward",
            "rm_policy_win_rate",
        ),
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def plan_resume(root: Path, configs: dict) -> dict[str, dict]:
    """The complete runs in `root` that can stand for their stage, or an AlignError saying why not.

    Decided for all stages before any trains, in pipeline order: a stage that will run makes every
    complete run after it unusable (it was trained on the run being replaced).
    """
    reuse: dict[str, dict] = {}
    will_run: list[str] = []
    for name in STAGES:
        path = root / RUN_NAMES[name]
        if not runs.is_run(path):
            will_run.append(name)
            continue
        manifest = runs.read_manifest(path)
        hint = f"start a new pipeline (no --resume), or remove {path} to train it and the stages after it again"
        if will_run:
            raise AlignError(
                f"--resume: {name} in {path} is complete, but {', '.join(will_run)} before it is not, so it "
                f"would be trained on a different run; {hint}"
            )
        then = _comparable(manifest.get("config", {}), Path(manifest.get("config", {}).get("runs_dir", root)))
        now = _comparable(runs.scrub_secrets(to_dict(configs[name])), root)
        changed = [
            f"{key}={_show(then, key)} in the run, {_show(now, key)} now"
            for key in sorted(set(then) | set(now))
            if then.get(key, _MISSING) != now.get(key, _MISSING)
        ]
        if changed:
            raise AlignError(
                f"--resume: {name} in {path} was run with a different config: {'; '.join(changed)}; "
                f"resume with the same overrides, or {hint}"
            )
        for record in manifest.get("inputs", []):
            upstream = _pipeline_run(record, root, Path(manifest.get("config", {}).get("runs_dir", root)))
            if (
                upstream is not None
                and runs.is_run(upstream)
                and runs.hash_file(upstream / runs.MANIFEST) != record.get("sha256")
            ):
                raise AlignError(
                    f"--resume: {name} in {path} was trained on a different {upstream.name} than the one now in "
                    f"{root} (its manifest changed); {hint}"
                )
        reuse[name] = manifest
    return reuse


_MISSING = object()


def _comparable(config: dict, root: Path) -> dict:
    """Flattened dotted keys; where the run went (runs_dir, name) left out; paths under `root` relative."""
    prefix = str(root.resolve()) + "/"
    plain_prefix = str(root) + "/"
    flat: dict = {}

    def walk(node, key: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, str) and node.startswith((prefix, plain_prefix)):
            flat[key] = "<pipeline>/" + node[len(prefix if node.startswith(prefix) else plain_prefix) :]
        else:
            flat[key] = node

    walk({k: v for k, v in config.items() if k not in ("runs_dir", "name")}, "")
    return flat


def _show(flat: dict, key: str) -> str:
    value = flat.get(key, _MISSING)
    return "(not set)" if value is _MISSING else repr(value)


def _pipeline_run(record: dict, root: Path, recorded_root: Path) -> Path | None:
    """The run in `root` an input record points at, when the input is a run of this pipeline."""
    if record.get("kind") != "run":
        return None
    recorded = Path(record.get("path", ""))
    for base in (recorded_root.resolve(), recorded_root):
        try:
            return root / recorded.relative_to(base)
        except ValueError:
            continue
    return None


def split_overrides(overrides: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"all": [], **{n: [] for n in STAGES}}
    for item in overrides:
        stage, _, rest = item.partition(".")
        if stage not in out or not rest:
            raise AlignError(f"override '{item}' must start with a stage: {', '.join(out)} (e.g. dpo.beta=0.2)")
        out[stage].append(rest)
    return out


def _pick(metrics: dict, *keys: str) -> dict:
    return {k: metrics[k] for k in keys if k in metrics}


def print_summary(summary: dict) -> None:
    print(f"\nPipeline: {summary['pipeline']}")
    for name, path in summary["runs"].items():
        print(f"  {name:<7} {path}  ({summary['wall_time_s'][name]:.0f} s)")
    rm = summary["reward_model"]
    if rm:
        print(
            f"Reward model, {rm.get('test_pairs')} held-out pairs: accuracy {rm.get('test_accuracy', float('nan')):.3f}, "
            f"mean margin {rm.get('test_mean_margin', float('nan')):.3f}"
        )
    d = summary["dpo"]
    if "test_rewards/accuracies" in d:
        print(
            f"DPO, {d.get('test_pairs')} held-out pairs: implicit reward accuracy {d['test_rewards/accuracies']:.3f}, "
            f"margin {d.get('test_rewards/margins', float('nan')):.4f}"
        )
    if "rm_policy_mean_reward" in d:
        print(
            f"Reward model on policy vs reference replies: {d['rm_policy_mean_reward']:.3f} vs "
            f"{d['rm_reference_mean_reward']:.3f} (policy win rate {d['rm_policy_win_rate']:.2f})"
        )
    print(f"Lineage: align lineage {summary['runs']['dpo']}")


if __name__ == "__main__":
    sys.exit(main())
