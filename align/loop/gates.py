"""Gates: the conditions a round's evaluation must meet before its policy is promoted.

A gate names one number of an `align evaluate policy` or `align evaluate retention` manifest by a
dotted path into its metrics, a comparison and a threshold:

    - name: brand voice improves
      metric: brand.brand_score.difference.ci_low   # <prompt set>.<metric>.<model>.<statistic>
      op: ">"
      value: 0.0
    - name: reward model prefers the policy
      metric: brand.rm_win_rate.mean                # the win rate has no model part: it already compares the two
      op: ">="
      value: 0.5
    - name: harmful refusals kept against the base
      metric: harmful.refusal_rate.difference.ci_high
      op: ">="
      value: 0.0
      against: start                                # the loop's starting model, not the previous policy

`against` says which comparison the metric is read from: `previous` (the default) the round's
evaluation, the candidate against the policy the round started from; `start` the candidate against the
loop's starting model (`policy` in the loop config: the base before any warm start), computed from both
models' judged replies to the same prompts (align/loop/versus_start.py). Round-to-round gates cannot see
a loss that happened before them (a warm start that removed every refusal keeps "no fall" true from 0
to 0); `start` gates can, and they gate round 0, the warm start, too. An absolute floor or ceiling is a
gate on `<set>.<metric>.policy.<stat>`, which reads the same under either comparison.

Prompt sets, metrics, models and statistics are the ones evaluate policy writes (see
align/stages/evaluate_policy.py) and, for the `ifeval` and `drift` sets, evaluate retention (e.g.
`ifeval.prompt_strict.difference.mean`, `drift.kl.mean`; align/stages/evaluate_retention.py). A
gates file is checked against the run of the stage that writes its sets. A path it can never produce is an AlignError when the gates are
read, naming the gate and the nearest valid name, so a recipe with a misspelt gate fails before
anything runs. A path it can produce but did not this time (a win rate evaluated without a reward
model, a prompt set left out) fails the gate with that reason: a gate never passes on a number it
did not see. A round is promoted only when every gate passes.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from align.core import runs
from align.core.config import build, read_yaml
from align.core.errors import AlignError, nearest
from align.loop.versus_start import STAGE as VERSUS_START
from align.stages import evaluate_retention as retention
from align.stages.evaluate_policy import MODELS, STAGE
from align.stages.evaluate_policy import SETS as POLICY_SETS

# What evaluate policy writes per prompt set: metric -> the sets it can appear in. rm_* need a reward model.
METRICS: dict[str, tuple[str, ...]] = {
    "refusal_rate": POLICY_SETS,
    "length_words": POLICY_SETS + retention.SETS,
    "brand_score": ("brand",),
    "rm_reward": POLICY_SETS + ("drift",),
    **{
        m: (name,) for name, names in retention.METRICS.items() for m in names if m not in ("length_words", "rm_reward")
    },
}
WIN_RATE = "rm_win_rate"  # one interval per set, no policy/baseline/difference level
# Metrics that carry one interval (they already compare the two models): metric -> the sets that have it.
SINGLE: dict[str, tuple[str, ...]] = {WIN_RATE: POLICY_SETS + ("drift",), "kl": ("drift",)}
# Which stage writes which prompt sets: gates read evaluate policy and evaluate retention runs alike.
STAGES: dict[str, tuple[str, ...]] = {STAGE: POLICY_SETS, retention.STAGE: retention.SETS, VERSUS_START: POLICY_SETS}
AGAINST = ("previous", "start")
# The run each comparison is read from (retention runs compare with the loop's base by construction).
AGAINST_STAGE = {"previous": (STAGE, retention.STAGE), "start": (VERSUS_START,)}
SETS = POLICY_SETS + retention.SETS
ROLES = (*MODELS, "difference")
STATS = ("mean", "ci_low", "ci_high", "n")
OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
}


@dataclass
class GateSpec:
    """One gate: `metric op value` must hold for the round's policy to be promoted."""

    name: str = ""
    """What the gate protects, in a few words; shown in the report and in the reason a round is held back."""
    metric: str = ""
    """Dotted path into the evaluation's metrics: <set>.<metric>.<policy|baseline|difference>.<stat>, or <set>.rm_win_rate.<stat> / drift.kl.<stat>."""
    op: str = ">="
    """Comparison: > >= < <= ==."""
    value: float = 0.0
    """The threshold the metric is compared with."""
    against: str = "previous"
    """previous: read from the round's evaluation (the candidate vs the policy the round started from);
    start: from the candidate vs the loop's starting model (align/loop/versus_start.py); gates round 0 too."""

    def __post_init__(self):
        label = f"gate '{self.name}'" if self.name else "a gate"
        if not self.name:
            raise AlignError(f"{label} has no name: give each gate a `name:` saying what it protects")
        if self.op not in OPS:
            # '=>' and '=<' are the usual slips; difflib would suggest '>' for them.
            hint = f" (did you mean '{self.op[::-1]}'?)" if self.op[::-1] in OPS else nearest(self.op, OPS)
            raise AlignError(f"{label}: op '{self.op}' is not one of {' '.join(OPS)}{hint}")
        if isinstance(self.value, bool) or not math.isfinite(self.value):
            raise AlignError(f"{label}: value must be a finite number, got {self.value!r}")
        parse_metric(self.metric, label)
        if self.against not in AGAINST:
            raise AlignError(
                f"{label}: against '{self.against}' is not one of {', '.join(AGAINST)}{nearest(self.against, AGAINST)}"
            )
        if self.against == "start" and self.path[0] not in POLICY_SETS:
            raise AlignError(
                f"{label}: against: start compares evaluate policy's sets ({', '.join(POLICY_SETS)}); "
                f"{self.metric} is a retention metric, already measured against the loop's base"
            )

    @property
    def path(self) -> tuple[str, ...]:
        """The metric path split and checked against what evaluate policy can write."""
        return parse_metric(self.metric, f"gate '{self.name}'")


@dataclass
class GateOutcome:
    """One gate checked against one evaluation."""

    name: str
    metric: str
    actual: float | None
    """The number read from the manifest; None when the manifest does not have it."""
    op: str
    threshold: float
    passed: bool
    reason: str
    """One line a person reads: the number, the comparison and, on failure, what was needed."""
    against: str = "previous"
    """Which comparison the number was read from: previous (the round's evaluation) or start."""


@dataclass
class GateResult:
    """Every gate of a round; the round is promoted only when all passed (and there is at least one)."""

    gates: list[GateOutcome] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.gates) and all(g.passed for g in self.gates)

    @property
    def failures(self) -> list[GateOutcome]:
        return [g for g in self.gates if not g.passed]

    @property
    def reasons(self) -> list[str]:
        """Why the round is held back: one line per failed gate."""
        return [g.reason for g in self.failures] or ([] if self.gates else ["no gates were checked"])

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "gates": [asdict(g) for g in self.gates]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateResult:
        return cls([GateOutcome(**g) for g in data["gates"]])


def parse_metric(metric: str, label: str) -> tuple[str, ...]:
    """`brand.brand_score.difference.ci_low` -> its parts, or an AlignError naming the nearest valid part."""
    parts = metric.split(".") if metric else []
    example = "e.g. brand.brand_score.difference.ci_low or harmful.refusal_rate.policy.mean"
    if not parts:
        raise AlignError(f"{label}: no metric; give a dotted path, {example}")
    prompt_set = parts[0]
    if prompt_set not in SETS:
        raise AlignError(
            f"{label}: metric '{metric}': unknown prompt set '{prompt_set}'{nearest(prompt_set, SETS)}; "
            f"evaluate policy has {', '.join(POLICY_SETS)}, evaluate retention {', '.join(retention.SETS)}"
        )
    names = [m for m, sets in {**METRICS, **SINGLE}.items() if prompt_set in sets]
    name = parts[1] if len(parts) > 1 else ""
    if name not in names:
        hint = nearest(name, [*METRICS, *SINGLE])
        extra = " (brand_score exists only for the brand set)" if name == "brand_score" else ""
        raise AlignError(
            f"{label}: metric '{metric}': unknown metric '{name}' for prompt set '{prompt_set}'"
            f"{hint if not extra else extra}; valid: {', '.join(names)}"
        )
    want = 3 if name in SINGLE else 4
    if name not in SINGLE:
        role = parts[2] if len(parts) > 2 else ""
        if role not in ROLES:
            raise AlignError(
                f"{label}: metric '{metric}': '{role}' is not one of {', '.join(ROLES)}{nearest(role, ROLES)}"
            )
    stat = parts[want - 1] if len(parts) >= want else ""
    if stat not in STATS:
        raise AlignError(
            f"{label}: metric '{metric}': statistic '{stat}' is not one of {', '.join(STATS)}{nearest(stat, STATS)}"
        )
    if len(parts) != want:
        shape = f"<set>.{name}.<stat>" if name in SINGLE else "<set>.<metric>.<model>.<stat>"
        raise AlignError(f"{label}: metric '{metric}' has {len(parts)} parts; the shape is {shape}, {example}")
    return tuple(parts)


def parse_gates(
    data: Any, where: str, sets: tuple[str, ...] | None = None, reward_model: bool | None = None
) -> list[GateSpec]:
    """Gates from a YAML list of mappings, checked against what the loop will evaluate when it says.

    `sets`: the prompt sets the loop evaluates; a gate on another is an error. `reward_model=False`:
    the loop never evaluates with a reward model, so a gate on rm_* could never pass: an error.
    None (either): not checked here; a number missing at evaluation still fails its gate.
    """
    if not isinstance(data, list) or not data:
        raise AlignError(f"{where}: 'gates' must be a non-empty list of gates (name, metric, op, value), got {data!r}")
    specs = [build(GateSpec, item, prefix=f"gates[{i}].") for i, item in enumerate(data)]
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise AlignError(f"{where}: two gates are named '{spec.name}'; give each gate its own name")
        seen.add(spec.name)
        if sets is not None and spec.path[0] not in sets:
            raise AlignError(
                f"{where}: gate '{spec.name}' reads prompt set '{spec.path[0]}', which is not evaluated "
                f"(evaluated: {', '.join(sets) or 'none'}); add its paths to the evaluation config or drop the gate"
            )
        if reward_model is False and spec.path[1].startswith("rm_"):
            raise AlignError(
                f"{where}: gate '{spec.name}' reads {spec.metric}, a reward-model metric, but no reward "
                "model is evaluated; give the evaluation a reward_model or drop the gate"
            )
    return specs


def load_gates(
    path: str | Path, sets: tuple[str, ...] | None = None, reward_model: bool | None = None
) -> list[GateSpec]:
    """The `gates:` list of a YAML file (e.g. recipes/brand_voice/gates.yaml)."""
    data = read_yaml(path)
    unknown = set(data) - {"gates"}
    if unknown:
        key = min(unknown)
        raise AlignError(f"{path}: unknown key '{key}'{nearest(key, ['gates'])}; a gates file holds one list, `gates:`")
    return parse_gates(data.get("gates"), str(path), sets, reward_model)


def evaluate_gates(specs: list[GateSpec], manifest: dict[str, Any] | str | Path) -> GateResult:
    """Check every gate against an evaluate-policy or evaluate-retention manifest (the dict, or its run directory)."""
    if not isinstance(manifest, dict):
        manifest = runs.read_manifest(manifest)
    stage = manifest.get("stage")
    if stage not in STAGES:
        raise AlignError(
            f"gates read an '{STAGE}' or '{retention.STAGE}' run; {manifest.get('path', 'the manifest given')} "
            f"is a '{stage}' run"
        )
    foreign = [s for s in specs if s.path[0] not in STAGES[stage]]
    if foreign:
        owner = next(name for name, sets in STAGES.items() if foreign[0].path[0] in sets)
        raise AlignError(
            f"gate '{foreign[0].name}' reads {foreign[0].metric}, which `align {owner}` writes; "
            f"{manifest.get('path', 'the manifest given')} is a '{stage}' run: check each gates file "
            f"against its own evaluation (e.g. retention_gates.yaml against `align evaluate retention`)"
        )
    wrong = [s for s in specs if stage not in AGAINST_STAGE[s.against]]
    if wrong:
        raise AlignError(
            f"gate '{wrong[0].name}' (against: {wrong[0].against}) reads a "
            f"'{' or '.join(AGAINST_STAGE[wrong[0].against])}' run; {manifest.get('path', 'the manifest given')} "
            f"is a '{stage}' run: check each comparison's gates against its own run (`split_gates`)"
        )
    metrics = manifest.get("metrics", {})
    return GateResult([_check(spec, metrics) for spec in specs])


def split_gates(specs: list[GateSpec]) -> tuple[list[GateSpec], list[GateSpec]]:
    """(gates against the previous policy, gates against the loop's starting model)."""
    return [s for s in specs if s.against == "previous"], [s for s in specs if s.against == "start"]


def _check(spec: GateSpec, metrics: dict[str, Any]) -> GateOutcome:
    actual, missing = _lookup(metrics, spec.path)
    need = f"{spec.op} {_fmt(spec.value)}"
    where = " (vs the starting model)" if spec.against == "start" else ""
    if actual is None:
        return GateOutcome(
            spec.name,
            spec.metric,
            None,
            spec.op,
            spec.value,
            False,
            f"{spec.name}: {spec.metric}{where} is missing ({missing}), needs {need}",
            spec.against,
        )
    passed = OPS[spec.op](actual, spec.value)
    verdict = f"holds {need}" if passed else f"needs {need}"
    return GateOutcome(
        spec.name,
        spec.metric,
        actual,
        spec.op,
        spec.value,
        passed,
        f"{spec.name}: {spec.metric}{where} = {_fmt(actual)}, {verdict}",
        spec.against,
    )


def _lookup(metrics: dict[str, Any], path: tuple[str, ...]) -> tuple[float | None, str]:
    node: Any = metrics
    for depth, part in enumerate(path):
        if not isinstance(node, dict) or part not in node:
            if depth == 0:
                return None, f"prompt set '{part}' was not evaluated"
            if part.startswith("rm_"):
                return None, "evaluated without a reward model"
            return None, f"no '{'.'.join(path[: depth + 1])}' in the evaluation"
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(node):
        return None, f"not a finite number: {node!r}"
    return float(node), ""


def _fmt(x: float) -> str:
    return format(x, ".4g")
