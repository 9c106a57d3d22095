"""The loop's config (`recipes/<name>/loop.yaml`) and the stage configs it makes each round.

A loop config names the starting policy, how many rounds, the gates, and one section per step.
A step section is that stage's own settings: `config:` (a stage YAML, e.g. configs/generate/default.yaml)
plus any of the stage's keys, which override the file. The loop adds the wiring (which policy,
which run to read, where to write), so a section never names run directories:

    generate: {config: configs/generate/default.yaml, prompts: recipes/brand_voice/prompts_train.jsonl}
    dpo: {config: configs/dpo/default.yaml, beta: 0.1, training: {num_train_epochs: 2}}

Every stage config is built (so every key checked by the stage's own dataclass) when the loop
starts, with placeholder wiring: an unknown key, a missing prompt file or a gate on a metric the
evaluation cannot produce is exit 2 before anything runs.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from align.annotate.connection import ArgillaConfig
from align.core.config import build, read_yaml, set_dotted
from align.core.errors import AlignError
from align.loop.feedback import FeedbackSource
from align.loop.mix import MixSettings

# Stage modules per step, imported when a config is built (the loop itself stays light to import).
STAGE_MODULES = {
    "sft": "align.stages.sft",
    "generate": "align.stages.generate",
    "score": "align.stages.score",
    "pairs": "align.stages.pairs",
    "push": "align.annotate.push",
    "simulate": "align.annotate.simulate",
    "pull": "align.annotate.pull",
    "reward": "align.stages.reward",
    "dpo": "align.stages.dpo",
    "kto": "align.stages.kto",
    "ppo": "align.stages.ppo",
    "evaluate": "align.stages.evaluate_policy",
    "retention": "align.stages.evaluate_retention",
}
TRAIN_STAGES = ("reward", "dpo", "kto", "ppo")
POLICY_STAGES = ("dpo", "kto", "ppo")
# Keys the loop sets itself; a section that sets them would be silently overridden, so it is refused.
WIRED = {
    "sft": ("model", "runs_dir", "name"),
    "generate": ("policy", "runs_dir", "name"),
    "score": ("generations", "reward_model", "policy", "reference", "runs_dir", "name"),
    "pairs": ("generations", "runs_dir", "name"),
    "push": ("pairs", "dataset", "round", "argilla", "runs_dir", "name"),
    "simulate": ("dataset", "argilla", "journal_dir", "only", "runs_dir", "name"),
    "pull": ("dataset", "argilla", "runs_dir", "name"),
    "reward": ("data.train", "runs_dir", "name"),
    "dpo": ("model", "data.train", "runs_dir", "name"),
    "kto": ("model", "data.train", "runs_dir", "name"),
    "ppo": ("model", "reward_model", "runs_dir", "name"),
    "evaluate": ("policy", "baseline", "baseline_replies", "runs_dir", "name"),
    "retention": ("policy", "baseline", "runs_dir", "name"),
}


@dataclass
class WaitSettings:
    """When the loop stops waiting for labels and pulls."""

    min_records: int | None = None
    """Records that must be complete (all their submissions in) before the pull; unset = every record pushed this round."""
    deadline_minutes: float | None = None
    """Stop waiting this long after the push; the loop then pulls what is labelled (and stops if nothing is). Unset = no deadline."""
    poll_seconds: float = 30.0
    """Seconds between progress checks."""

    def __post_init__(self):
        if self.min_records is not None and self.min_records < 1:
            raise AlignError(f"'wait.min_records' must be >= 1 or unset, got {self.min_records}")
        if self.poll_seconds <= 0:
            raise AlignError(f"'wait.poll_seconds' must be > 0, got {self.poll_seconds}")


@dataclass
class TrainSettings:
    """What a round trains, on which labels."""

    stages: list[str] = field(default_factory=lambda: ["dpo"])
    """Stages in order: [dpo], [reward, dpo], [reward, ppo] (ppo: algorithm ppo, rloo or grpo in its section), [kto]
    (with `feedback.mode: kto`)."""
    labels: Literal["round", "all"] = "all"
    """Train on this round's labels only, or on every round's so far."""
    reference: Literal["previous", "start"] = "previous"
    """DPO reference: the policy the round starts from, or the loop's starting policy."""
    min_pairs: int = 4
    """Fewer usable pairs (ties and records without a majority do not count) hold the round back."""
    balance: Literal["none", "refusal"] = "none"
    """refusal: repeat the usable pairs of the smaller side (chosen reply refuses / answers, by
    align.evaluation.refusal) until both sides count the same, so the labels do not move the policy's line
    between refusing and answering just because one side had more contrast that round (recipes/safety)."""

    def __post_init__(self):
        if not self.stages:
            raise AlignError("'train.stages' is empty; e.g. [dpo] or [reward, dpo]")
        for name in self.stages:
            if name not in TRAIN_STAGES:
                from align.core.errors import nearest

                raise AlignError(
                    f"'train.stages' names unknown stage '{name}'{nearest(name, TRAIN_STAGES)}; "
                    f"one of {', '.join(TRAIN_STAGES)}"
                )
        if len(set(self.stages)) != len(self.stages):
            raise AlignError(f"'train.stages' repeats a stage: {self.stages}")
        policies = [s for s in self.stages if s in POLICY_STAGES]
        if len(policies) != 1 or self.stages[-1] not in POLICY_STAGES:
            raise AlignError(
                f"'train.stages' must end with exactly one policy stage (dpo, kto or ppo), got {self.stages}"
            )
        if self.min_pairs < 1:
            raise AlignError(f"'train.min_pairs' must be >= 1, got {self.min_pairs}")


@dataclass
class LoopConfig:
    """`align loop` settings (see recipes/brand_voice/loop.yaml)."""

    recipe: str = ""
    """The recipe's name: shown in the report and part of each round's Argilla dataset name."""
    loop_dir: str = ""
    """The loop's directory: state, one folder per round, report.html. Default runs/<recipe>-loop."""
    rounds: int = 2
    """Rounds after round 0 (the starting policy, evaluated only)."""
    policy: str = "embedded"
    """The starting policy: embedded, a model directory, or an SFT/DPO run."""
    sft: dict[str, Any] = field(default_factory=dict)
    """`align sft` settings for a warm start: when given, round 0 fine-tunes `policy` on them (e.g. the
    recipe's hand-written replies) and that SFT run is the policy round 1 starts from and round 0
    evaluates against `policy`. The loop sets model."""
    reward_model: str | None = None
    """A reward run to score round 1's candidates with (later rounds use the loop's newest reward model)."""
    gates: str = ""
    """Gates YAML (align/loop/gates.py): a round's policy is promoted only when all hold."""
    annotators: Literal["people", "simulated"] = "people"
    """people: wait for people in the Argilla web UI; simulated: `align annotate simulate` answers (demos, tests, CI)."""
    argilla: ArgillaConfig = field(default_factory=ArgillaConfig)
    """Which Argilla server (shared by push, simulate, pull and the wait)."""
    wait: WaitSettings = field(default_factory=WaitSettings)
    """When to stop waiting for labels."""
    train: TrainSettings = field(default_factory=TrainSettings)
    """What each round trains."""
    generate: dict[str, Any] = field(default_factory=dict)
    """`align generate` settings (config: FILE plus overrides); the loop sets policy (and, with `mix`, prompts)."""
    mix: MixSettings = field(default_factory=MixSettings)
    """Several kinds of prompt per round in fixed shares, each judged by its own simulated judge (align/loop/mix.py,
    e.g. brand-voice and safety prompts in one dataset); unset: generate.prompts, judged by `simulate`."""
    score: dict[str, Any] = field(default_factory=dict)
    """`align score` settings, used when the loop has a reward model; the loop sets generations and reward_model."""
    pairs: dict[str, Any] = field(default_factory=dict)
    """`align pairs` settings; selection defaults to least_sure when scored, else random."""
    push: dict[str, Any] = field(default_factory=dict)
    """`align annotate push` settings; the loop sets pairs, dataset (<recipe>-<loop id>-r<round>) and round.
    `max_records: N` is the round's label budget (the N most uncertain pairs with an uncertainty selection)."""
    simulate: dict[str, Any] = field(default_factory=dict)
    """`align annotate simulate` settings (annotators file, judge, noise, ...) when annotators=simulated."""
    pull: dict[str, Any] = field(default_factory=dict)
    """`align annotate pull` settings; its journal_dir (default: pull's, ~/.cache/align/annotate) is also simulate's."""
    reward: dict[str, Any] = field(default_factory=dict)
    """`align reward` settings; model defaults to the starting policy."""
    dpo: dict[str, Any] = field(default_factory=dict)
    """`align dpo` settings; the loop sets model (the current policy) and data.train (the labels)."""
    kto: dict[str, Any] = field(default_factory=dict)
    """`align kto` settings (train.stages [kto], with feedback.mode kto); the loop sets model and data.train, and
    the desirable/undesirable weights from the round's counts unless set here."""
    feedback: FeedbackSource = field(default_factory=FeedbackSource)
    """Feedback from deployment as training data (align/loop/feedback.py): source, mode kto|pairs, use
    with|instead of the round's generated pairs, rounds."""
    ppo: dict[str, Any] = field(default_factory=dict)
    """`align ppo` settings (algorithm ppo, rloo or grpo); the loop sets model and reward_model."""
    evaluate: dict[str, Any] = field(default_factory=dict)
    """`align evaluate policy` settings: the held-out prompt sets the gates read."""
    retention: dict[str, Any] = field(default_factory=dict)
    """`align evaluate retention` settings (e.g. config: configs/evaluate/retention.yaml): when given, each
    round's candidate is also measured for what it lost (IFEval, drift) against the starting policy's base
    model, so losses add up across rounds. Unset = not measured. The loop sets policy and baseline."""
    retention_gates: str = ""
    """Gates YAML on the retention run's metrics (e.g. recipes/brand_voice/retention_gates.yaml): a round is
    promoted only when these hold too. Needs a `retention` section; without gates, retention is measured
    and reported, not gated."""

    def __post_init__(self):
        if not self.recipe:
            raise AlignError("'recipe' is required: a short name for the loop (e.g. brand_voice)")
        if not self.recipe.replace("_", "").replace("-", "").isalnum():
            raise AlignError(
                f"'recipe' must be letters, digits, '-' or '_' (it names Argilla datasets), got {self.recipe!r}"
            )
        if self.rounds < 1:
            raise AlignError(f"'rounds' must be >= 1, got {self.rounds}")
        if not self.gates:
            raise AlignError(
                "'gates' is required: a gates YAML (e.g. recipes/brand_voice/gates.yaml); a loop "
                "that promotes every round needs no evaluation"
            )
        if self.retention_gates and not self.retention:
            raise AlignError(
                f"'retention_gates' ({self.retention_gates}) needs a 'retention' section saying how to "
                "measure retention, e.g. retention.config=configs/evaluate/retention.yaml"
            )
        if not self.loop_dir:
            self.loop_dir = f"runs/{self.recipe}-loop"
        for key in ("prompts", "max_prompts"):
            if self.mix.on and key in self.generate:
                raise AlignError(
                    f"'generate.{key}' ({self.generate[key]}) and 'mix' both say what a round answers; with "
                    f"mix, list each kind's prompts under mix.kinds (mix.prompts_per_round for the count) "
                    f"and drop generate.{key}"
                )
        if "kto" in self.train.stages and (self.feedback.mode != "kto" or not self.feedback.on):
            raise AlignError(
                "train.stages has kto, which the loop trains on feedback: set feedback.source and "
                "feedback.mode=kto (align/loop/feedback.py)"
            )
        self.feedback.check(self.train.stages)
        if self.annotators == "simulated" and not self.simulate.get("annotators"):
            raise AlignError(
                "annotators=simulated needs 'simulate.annotators': a YAML list of simulated annotators "
                "(e.g. recipes/brand_voice/annotators.yaml)"
            )


def stage_config(step: str, section: dict[str, Any], wiring: dict[str, Any]):
    """The stage's Config from its section (config file + overrides) and the loop's wiring."""
    module = importlib.import_module(STAGE_MODULES[step])
    section = dict(section)
    file = section.pop("config", None)
    data: dict[str, Any] = read_yaml(file) if file else {}
    for key, value in flatten(section).items():
        if key in WIRED[step] or any(key.startswith(w + ".") for w in WIRED[step]):
            raise AlignError(f"'{step}.{key}' is set by the loop each round; remove it from the loop config")
        set_dotted(data, key, value)
    for key, value in wiring.items():
        set_dotted(data, key, value)
    try:
        return build(module.Config, data)
    except AlignError as exc:
        raise AlignError(f"loop section '{step}'{f' (config {file})' if file else ''}: {exc}") from None


ROUND_SEED_STRIDE = 100_003
"""Round n generates with `sampling.seed + ROUND_SEED_STRIDE * (n - 1)`. vLLM seeds prompt i with seed + i, so
the stride is large (and prime) to keep two rounds' prompt seeds apart for any realistic prompt count."""


def round_generate_wiring(section: dict[str, Any], wiring: dict[str, Any], n: int) -> dict[str, Any]:
    """The generate step's wiring for round n, with a sampling seed of the round's own: a round whose
    candidate was held back leaves the same policy current, and with one seed for every round the next
    round would sample the very same replies again (and, with `train.labels: all`, train on them twice)."""
    seed = stage_config("generate", section, wiring).sampling.seed
    return {**wiring, "sampling.seed": seed + ROUND_SEED_STRIDE * (n - 1)}


def config_files(cfg: LoopConfig) -> list[str]:
    """Every file the loop config points at whose content decides what the loop does."""
    files = [cfg.gates] + ([cfg.retention_gates] if cfg.retention_gates else [])
    for step in STAGE_MODULES:
        section = getattr(cfg, step)
        if section.get("config"):
            files.append(section["config"])
    if cfg.simulate.get("annotators"):
        files.append(cfg.simulate["annotators"])
    files += [k.prompts for k in cfg.mix.kinds]
    return files


def flatten(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; training passthrough dicts are flattened too (set_dotted rebuilds them)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def describe_change(then: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every dotted key that differs.

    A key one side lacks and the other leaves empty is no change: a loop started before an optional
    section existed (e.g. `retention`) had it off, which is what the empty default says.
    """
    a, b = flatten(then), flatten(now)
    missing = object()
    a.update({k: v for k, v in b.items() if k not in a and _empty(v)})
    b.update({k: v for k, v in a.items() if k not in b and _empty(v)})
    return [
        f"{k}: {json.dumps(a.get(k)) if k in a else '(not set)'} -> {json.dumps(b.get(k)) if k in b else '(not set)'}"
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    ]


def loop_changes(
    then: dict[str, Any], then_files: dict[str, str], now: dict[str, Any], files: dict[str, str]
) -> tuple[list[str], list[str]]:
    """What differs between the config (and file hashes) a loop was started with and now: (changes that need
    --allow-config-change, changes that do not). `rounds` says how far the loop goes, not how a round runs, so
    raising it to add a round (what a round with too few labels asks for) needs no flag; both are recorded."""
    changes = describe_change({**then, "rounds": None}, {**now, "rounds": None})
    changes += [
        f"{f}: content changed" if f in then_files else f"{f}: new file"
        for f, h in files.items()
        if then_files.get(f) != h
    ]
    free = [f"rounds: {then.get('rounds')} -> {now['rounds']}"] if then.get("rounds") != now["rounds"] else []
    return changes, free


def _empty(value: Any) -> bool:
    # "none" is the off value of a choice added later (e.g. train.balance): a loop started before it had it off.
    return value is None or value == "" or value == "none" or value == {} or value == []


def retention_baseline(cfg: LoopConfig) -> str:
    """What every round's retention is measured against: the base of the loop's starting policy.

    The default of `align evaluate retention` (the policy's base), pinned once for the whole loop: each
    round's candidate is compared with the same model, so what two rounds lose adds up instead of each
    round being allowed its own loss against the last (the recipes' retention_gates assume this).
    """
    from align.models import base_of

    return base_of(cfg.policy)


def resolve_dir(cfg: LoopConfig) -> Path:
    return Path(cfg.loop_dir).expanduser()
