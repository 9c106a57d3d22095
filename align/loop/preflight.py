"""Everything a loop config can be checked for before anything runs (`align loop` calls it first).

Every stage section is built into its stage's typed config with placeholder wiring, every prompt
file, rubric, annotator list and SFT file read, and every gate's metric checked against what the
evaluation (and, with a retention section, evaluate retention) produces: a bad recipe is exit 2
with nothing made.
"""

from __future__ import annotations

from pathlib import Path

from align.core import hub
from align.core.config import to_dict
from align.core.errors import AlignError
from align.loop.config import LoopConfig, stage_config
from align.loop.gates import load_gates
from align.stages import evaluate_retention as retention_stage
from align.stages.evaluate_policy import SETS as POLICY_SETS


def preflight(cfg: LoopConfig) -> tuple[list, tuple[str, ...]]:
    """Build every stage config with placeholder wiring and read every input the loop will need."""
    from align.annotate import simulate as simulate_stage
    from align.evaluation.prompt_sets import load_prompt_set
    from align.stages import generate

    placeholder = cfg.policy
    if cfg.sft:
        sft = stage_config("sft", cfg.sft, {"model": cfg.policy, "runs_dir": ".", "name": "x"})
        if not sft.data.train:
            raise AlignError("loop section 'sft' needs 'data.train': the warm start's conversations")
        if hub.is_reference(sft.data.train):  # loaded now: its one-line error says what is missing and how to get it
            hub.load(hub.parse(sft.data.train))
        elif not Path(sft.data.train).exists():
            raise AlignError(f"sft.data.train: no such file {sft.data.train!r}")
    has_reward = bool(cfg.reward_model) or "reward" in cfg.train.stages
    gen_wiring = {"policy": cfg.policy, "runs_dir": ".", "name": "x"}
    if cfg.mix.on:
        gen_wiring.update(prompts=cfg.mix.kinds[0].prompts, max_prompts=None)
    gen = stage_config("generate", cfg.generate, gen_wiring)
    if not gen.prompts:
        raise AlignError("loop section 'generate' needs 'prompts': the recipe's training prompts (or give 'mix')")
    if cfg.mix.on:
        from align.loop.mix import load_kinds

        load_kinds(cfg.mix, gen.prompt_field)  # every kind can fill its share, and no prompt has two kinds
    else:
        generate.load_prompts(gen.prompts, gen.prompt_field, gen.max_prompts)
    if has_reward:
        stage_config(
            "score", cfg.score, {"generations": placeholder, "reward_model": placeholder, "runs_dir": ".", "name": "x"}
        )
    pairs = stage_config("pairs", cfg.pairs, {"generations": placeholder, "runs_dir": ".", "name": "x"})
    from align.rollout.pairs import NEEDS_MEMBERS, NEEDS_SCORES
    from align.scoring import reward_members

    if pairs.selection in NEEDS_SCORES + NEEDS_MEMBERS and not cfg.reward_model:
        raise AlignError(
            f"pairs.selection={pairs.selection} needs scored candidates, but round 1 has no reward model "
            "to score them: set reward_model (an `align reward` run) or use selection: random"
        )
    if pairs.selection in NEEDS_MEMBERS and ("reward" in cfg.train.stages or len(reward_members(cfg.reward_model)) < 2):
        raise AlignError(
            f"pairs.selection={pairs.selection} needs reward_model to be a reward ensemble "
            "(`align reward-ensemble`) kept for every round, so train.stages must not retrain a single "
            f"reward model; got reward_model={cfg.reward_model}, train.stages={cfg.train.stages}"
        )
    argilla = to_dict(cfg.argilla)
    stage_config(
        "push",
        cfg.push,
        {"pairs": placeholder, "dataset": "x", "round": 1, "argilla": argilla, "runs_dir": ".", "name": "x"},
    )
    stage_config("pull", cfg.pull, {"dataset": "x", "argilla": argilla, "runs_dir": ".", "name": "x"})
    if cfg.annotators == "simulated":
        for overrides in [k.simulate for k in cfg.mix.kinds] or [{}]:  # one judge per kind of a mixed round
            sim = stage_config(
                "simulate",
                {**cfg.simulate, **overrides},
                {"dataset": "x", "argilla": argilla, "runs_dir": ".", "name": "x"},
            )
            simulate_stage.read_annotators(sim.annotators)
            simulate_stage.make_judge(sim)
    for stage in cfg.train.stages:
        wiring = {
            "runs_dir": ".",
            "name": "x",
            "data.train": placeholder,
            "model": placeholder,
            "reward_model": placeholder,
        }
        if stage in ("reward", "kto"):
            wiring.pop("reward_model")
        if stage == "ppo":
            wiring.pop("data.train")
            if not has_reward:
                raise AlignError(
                    "train.stages has ppo but the loop has no reward model: add reward before it "
                    "(train.stages=[reward, ppo]) or set reward_model"
                )
        stage_config(stage, getattr(cfg, stage), wiring)
    ev = stage_config(
        "evaluate", cfg.evaluate, {"policy": placeholder, "baseline": placeholder, "runs_dir": ".", "name": "x"}
    )
    sets = tuple(name for name in ("harmful", "safe", "brand") if getattr(ev, name).paths)
    if not sets:
        raise AlignError(
            "loop section 'evaluate' has no prompt set: give harmful/safe/brand paths (e.g. "
            "config: configs/evaluate/policy.yaml)"
        )
    for name in sets:
        load_prompt_set(name, getattr(ev, name))
    if "brand" in sets and not Path(ev.brand_rubric).is_file():
        raise AlignError(f"evaluate.brand_rubric: no such file {ev.brand_rubric!r}")
    _refuse_foreign_gates(cfg.gates, "gates", retention_stage.SETS, "retention_gates", "align evaluate retention")
    specs = load_gates(cfg.gates, sets=sets, reward_model=has_reward or bool(cfg.evaluate.get("reward_model")))
    if cfg.retention:
        preflight_retention(cfg, specs)
    return specs, sets


def _retention_config(cfg: LoopConfig):
    placeholder = cfg.policy
    return stage_config(
        "retention", cfg.retention, {"policy": placeholder, "baseline": placeholder, "runs_dir": ".", "name": "x"}
    )


def _retention_sets(ret) -> tuple[str, ...]:
    return tuple(name for name, on in (("ifeval", bool(ret.ifeval.path)), ("drift", bool(ret.drift.paths))) if on)


def load_retention_gates(cfg: LoopConfig) -> list:
    """The retention_gates, checked against what the retention section evaluates."""
    ret = _retention_config(cfg)
    if not Path(cfg.retention_gates).is_file():
        raise AlignError(
            f"retention_gates: no such file {cfg.retention_gates!r}; give a gates YAML on the retention "
            "run's metrics, e.g. recipes/brand_voice/retention_gates.yaml"
        )
    _refuse_foreign_gates(cfg.retention_gates, "retention_gates", POLICY_SETS, "gates", "align evaluate policy")
    return load_gates(cfg.retention_gates, sets=_retention_sets(ret), reward_model=bool(ret.reward_model))


def preflight_retention(cfg: LoopConfig, specs: list) -> None:
    """The retention section's inputs (lm-eval, IFEval and drift prompts) and its gates, before anything runs."""
    from align.evaluation import ifeval
    from align.evaluation.prompt_sets import load_prompt_set

    ret = _retention_config(cfg)
    if not _retention_sets(ret):
        raise AlignError(
            "loop section 'retention' evaluates nothing: give ifeval.path and/or drift.paths "
            "(e.g. retention.config=configs/evaluate/retention.yaml)"
        )
    if ret.ifeval.path:
        ifeval.load_ifeval_prompts(ret.ifeval.path, ret.ifeval.limit, ret.ifeval.seed)  # also: lm-eval installed
    if ret.drift.paths:
        load_prompt_set("drift", ret.drift)
    if cfg.retention_gates:
        both = {s.name for s in specs} & {s.name for s in load_retention_gates(cfg)}
        if both:
            raise AlignError(
                f"gate '{min(both)}' is named in both {cfg.gates} and {cfg.retention_gates}; give each gate "
                "its own name (the report and the reasons a round is held back name gates)"
            )


def _refuse_foreign_gates(path: str, key: str, foreign: tuple[str, ...], owner_key: str, owner: str) -> None:
    """A gate on the other evaluation's prompt sets, caught with a message that says where it belongs."""
    from align.core.config import read_yaml

    data = read_yaml(path).get("gates")
    for gate in data if isinstance(data, list) else []:
        metric = gate.get("metric") if isinstance(gate, dict) else None
        if isinstance(metric, str) and metric.split(".")[0] in foreign:
            raise AlignError(
                f"{path}: gate '{gate.get('name')}' reads {metric}, which `{owner}` writes, but this is the "
                f"loop's '{key}' file; move the gate to the '{owner_key}' file"
            )
