"""A loop's rounds as people read them: what each round's policy scored, what its labels were, how
its gates went and how long its steps took. The loop builds one `RoundSummary` per round
(align/loop/summary.py); report.html (align/loop/report.py) and `align loop status` show them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from align.core import runs
from align.core.errors import AlignError
from align.loop.gates import GateResult


@dataclass
class LabelSummary:
    """What one label pull (`align annotate pull`) brought in."""

    records: int
    """Records with at least one submitted vote."""
    votes: int
    """Submitted votes over those records."""
    pairwise_agreement: float | None
    """Share of agreeing vote pairs within a record; None with no record of two votes."""
    krippendorff_alpha: float | None
    """Chance-corrected agreement (nominal); None when undefined."""
    annotators: list[str]
    """Usernames that voted."""
    simulated_votes: int | None = None
    """Votes by simulated annotators (`align annotate simulate`'s users, known by user id), from the pull's
    `metrics.simulated_votes`; None for a pull made before the pull counted them."""
    human_votes: int | None = None
    """Votes by everyone else (people in the web UI), from the pull's `metrics.human_votes`; None as above."""
    discards: int = 0
    """Records annotators discarded."""
    ties: int = 0
    """Records whose majority was a tie."""
    run: str | None = None
    """The pull run directory."""
    kinds: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per record kind of a mixed round (`mix:` in the loop config): records, usable pairs, votes and ties
    it contributed; {} for a round of one kind."""
    records_pushed: int | None = None
    """Records the round's push sent (its `metrics.records`: the round's label budget spent, gold included);
    None when the push run is not known."""
    gold_votes: int = 0
    """Votes on known-answer (gold) records: labels spent on checking annotators, never trained on."""
    label_model: str | None = None
    """How votes became labels (the pull's `label_model.method`: majority or dawid_skene); None for an older pull."""

    @property
    def annotated_by(self) -> str:
        """Who labelled, from the vote counts: 'simulated', 'people', 'simulated and people' or 'unknown'."""
        if self.simulated_votes is None or self.human_votes is None:
            return "unknown"
        if self.simulated_votes and self.human_votes:
            return "simulated and people"
        return "simulated" if self.simulated_votes else "people" if self.human_votes else "unknown"

    @classmethod
    def from_pull_run(
        cls, path: str | Path, kinds: dict[str, dict[str, int]] | None = None, push: str | Path | None = None
    ) -> LabelSummary:
        """Read a pull run: counts, agreement and who voted (simulated or human votes, as the pull counted
        them by user id) from its manifest, annotators from its preferences; records pushed from the `push` run."""
        manifest = runs.read_manifest(path)
        if manifest.get("stage") != "annotate pull":
            raise AlignError(f"{path} is a '{manifest.get('stage')}' run, not an 'annotate pull' run")
        metrics = manifest["metrics"]
        annotators: set[str] = set()
        with open(runs.output_path(path, manifest, "preferences"), encoding="utf-8") as f:
            for line in f:
                annotators.update(v["annotator"] for v in json.loads(line)["votes"])
        return cls(
            records=metrics["records"],
            votes=metrics["votes"],
            pairwise_agreement=metrics.get("pairwise_agreement"),
            krippendorff_alpha=metrics.get("krippendorff_alpha"),
            annotators=sorted(annotators),
            simulated_votes=metrics.get("simulated_votes"),
            human_votes=metrics.get("human_votes"),
            discards=metrics.get("discards", 0),
            ties=metrics.get("ties", 0),
            run=str(path),
            kinds=dict(kinds or {}),
            records_pushed=runs.read_manifest(push)["metrics"].get("records") if push else None,
            gold_votes=metrics.get("gold_votes", 0),
            label_model=(manifest.get("notes", {}).get("label_model") or {}).get("method"),
        )


@dataclass
class ExampleReply:
    """One prompt answered by the baseline and by the policy."""

    prompt_set: str
    prompt: str
    baseline: str
    policy: str


@dataclass
class RoundSummary:
    """One round of the loop, as the report shows it. Round 0 is the starting policy."""

    round: int
    """0 for the starting policy, then 1, 2, ..."""
    policy: str
    """The round's policy run directory (or model reference for round 0)."""
    evaluation: dict[str, Any] | str | None = None
    """The round's `align evaluate policy` manifest, or its run directory; None when not evaluated yet."""
    labels: LabelSummary | None = None
    """The round's label pull; None for round 0 or before the pull."""
    gates: GateResult | None = None
    """The round's gates; None for round 0 (nothing to gate) or before evaluation."""
    promoted: bool | None = None
    """True: the policy becomes the current one; False: held back; None: undecided, or round 0 without gates
    (round 0 is gated only when it is a warm start and the loop has gates against the starting model)."""
    reasons: list[str] = field(default_factory=list)
    """Why the round was promoted or held back (gate failures, a failed step, ...)."""
    wall_time_s: dict[str, float] = field(default_factory=dict)
    """Seconds per step, in the order the steps ran (e.g. generate, push, labels, pull, dpo, evaluate)."""
    examples: list[ExampleReply] = field(default_factory=list)
    """Replies shown side by side."""
    retention: dict[str, Any] | str | None = None
    """The round's `align evaluate retention` manifest, or its run directory; None when the loop measures no
    retention (or not yet, or round 0 without a warm start: there the policy is the retention baseline)."""
    versus_start: dict[str, Any] | str | None = None
    """The round's policy against the loop's starting model (a `loop versus start` run, align/loop/versus_start.py),
    or its run directory; None when no gate reads it (or not yet)."""
    feedback: dict[str, Any] | str | None = None
    """The round's training data with feedback from deployment (a `loop feedback` run, align/loop/feedback.py), or
    its run directory; None for a round without feedback."""

    def metrics(self) -> dict[str, Any]:
        """The evaluation's metrics (read from its run directory when given as a path)."""
        return self._run_metrics("evaluation")

    def start_metrics(self) -> dict[str, Any]:
        """The comparison with the loop's starting model; {} without one."""
        return self._run_metrics("versus_start")

    def retention_metrics(self) -> dict[str, Any]:
        """The retention run's metrics; {} without one."""
        return self._run_metrics("retention")

    def _run_metrics(self, name: str) -> dict[str, Any]:
        # A run given as its directory is read once and kept as its manifest.
        run = getattr(self, name)
        if run is None:
            return {}
        if not isinstance(run, dict):
            run = runs.read_manifest(run)
            setattr(self, name, run)
        return run.get("metrics", {})

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for a loop's state file; `from_dict` reads it back."""
        out = asdict(self)
        out["gates"] = None if self.gates is None else self.gates.as_dict()
        for key in ("evaluation", "retention", "versus_start", "feedback"):
            run = getattr(self, key)
            out[key] = run.get("path", run) if isinstance(run, dict) else run
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundSummary:
        data = dict(data)
        labels = data.get("labels")
        # A `simulated` flag written before the counts existed said nothing a run had recorded: dropped.
        data["labels"] = (
            None if labels is None else LabelSummary(**{k: v for k, v in labels.items() if k != "simulated"})
        )
        data["gates"] = None if data.get("gates") is None else GateResult.from_dict(data["gates"])
        data["examples"] = [ExampleReply(**e) for e in data.get("examples", [])]
        return cls(**data)


def examples_from_replies(eval_run: str | Path, per_set: int = 2) -> list[ExampleReply]:
    """The first `per_set` prompts of each prompt set of an evaluate-policy run, both replies."""
    manifest = runs.read_manifest(eval_run)
    taken: dict[str, int] = {}
    out = []
    with open(runs.output_path(eval_run, manifest, "replies"), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            name = row["prompt_set"]
            if taken.get(name, 0) >= per_set:
                continue
            taken[name] = taken.get(name, 0) + 1
            out.append(
                ExampleReply(name, row["prompt"][-1]["content"], row["baseline"]["reply"], row["policy"]["reply"])
            )
    return out


def steps(rounds: list[RoundSummary]) -> list[str]:
    """Steps in the order a full round ran them (round 0 only evaluates, so it must not set the order)."""
    fullest = max(rounds, key=lambda r: len(r.wall_time_s))
    return list(dict.fromkeys([*fullest.wall_time_s, *(step for r in rounds for step in r.wall_time_s)]))
