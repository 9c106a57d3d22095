"""Feedback from deployment as a source of a round's training data (the loop config's `feedback:` section).

    feedback:
      source: runs/feedback-2026-12     # a feedback run (`align feedback import`), a reviewed run
                                        # (`align feedback reviewed`), or a feedback file (imported by the round)
      mode: kto                         # kto: thumbs as KTO examples (train.stages ends with kto)
                                        # pairs: corrections (or reviewed replies) as DPO pairs
      use: with                         # with: added to the round's generated, labelled pairs; instead: only these
      rounds: [1]                       # the rounds that use it (empty: every round)

Each round that uses it writes a `loop feedback` run (`feedback` in the round's steps) holding what the round
trains on, every row marked with its `origin` (generated | correction | review | thumbs), and counts per origin
in its metrics: the report's "Training data by origin" table reads them, and `align lineage` goes from the
trained policy through this run to the labels run (generated pairs) and the feedback run (users' ratings).

kto with generated pairs: each labelled pair gives a desirable and an undesirable example (TRL's
`unpair_preference_dataset`, as `align kto` reads pairs). The loop sets `training.desirable_weight` and
`training.undesirable_weight` of the kto step from the round's counts (align.feedback.rows.kto_weights: the
KTO paper's [1, 4/3]) unless the `kto:` section sets them itself.
"""

from __future__ import annotations

import html
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from align.core import runs
from align.core.errors import AlignError

log = logging.getLogger(__name__)

STAGE = "loop feedback"
PREFERENCES = "preferences.jsonl"
EXAMPLES = "examples.jsonl"
FEEDBACK_STAGES = ("feedback import", "feedback reviewed")


@dataclass
class FeedbackSource:
    """Feedback after deployment as training data for some rounds (align/loop/feedback.py)."""

    source: str = ""
    """A feedback run (`align feedback import`), a reviewed run (`align feedback reviewed`), or a feedback file;
    empty: no feedback."""
    mode: Literal["kto", "pairs"] | None = None
    """kto: thumbs up/down as KTO examples (train.stages must end with kto); pairs: corrections or reviewed
    replies as DPO pairs (the better reply over the logged one). Required with a source."""
    use: Literal["with", "instead"] | None = None
    """with (unset means with): added to the round's generated, labelled pairs; instead: the round trains on
    feedback alone (no generate, push or pull)."""
    rounds: list[int] = field(default_factory=list)
    """Rounds that use the feedback; empty: every round."""

    @property
    def on(self) -> bool:
        return bool(self.source)

    def applies(self, n: int) -> bool:
        return self.on and (not self.rounds or n in self.rounds)

    def check(self, stages: list[str]) -> None:
        """Refuse a source that does not exist or a mode the round's training cannot use."""
        if not self.on:
            if self.mode == "kto":
                raise AlignError("feedback.mode=kto needs feedback.source: a feedback run or file")
            return
        if self.mode is None:
            raise AlignError(
                "'feedback.mode' is required with feedback.source: kto (thumbs as KTO examples) or pairs "
                "(corrections or reviewed replies as DPO pairs)"
            )
        if not Path(self.source).exists():
            raise AlignError(
                f"'feedback.source' not found: {self.source} (a feedback run, reviewed run or feedback file)"
            )
        if runs.is_run(self.source):
            stage = runs.read_manifest(self.source).get("stage")
            if stage not in FEEDBACK_STAGES:
                raise AlignError(
                    f"'feedback.source' {self.source} is a '{stage}' run; give an `align feedback import` "
                    "or `align feedback reviewed` run, or a feedback file"
                )
            if stage == "feedback reviewed" and self.mode == "kto":
                raise AlignError(
                    "'feedback.source' is a reviewed run, which holds pairs, not thumbs: set feedback.mode=pairs"
                )
        last = stages[-1]
        if self.mode == "kto" and last != "kto":
            raise AlignError(f"feedback.mode=kto trains KTO: set train.stages to end with kto (got {stages})")
        if self.mode == "pairs" and last != "dpo":
            raise AlignError(
                f"feedback.mode=pairs trains DPO on the corrections: set train.stages to end with dpo (got {stages})"
            )


def import_if_file(source: str, runs_dir: str | Path) -> dict[str, Any] | None:
    """A feedback file is imported (validated, redacted, deduped) into the round once; a run is used as is."""
    if runs.is_run(source):
        return None
    from align.core.config import build
    from align.stages import feedback as feedback_import

    return feedback_import.run(
        build(feedback_import.Config, {"inputs": [source], "runs_dir": str(runs_dir), "name": "feedback_import"})
    )


def write_round_data(
    cfg: FeedbackSource, feedback_run: str, labels_run: str | None, runs_dir: str | Path, name: str = "feedback"
) -> dict[str, Any]:
    """The `loop feedback` run a round trains on (see the module docstring); returns its manifest."""
    generated: list[dict[str, Any]] = []
    if labels_run is not None:
        manifest = runs.read_manifest(labels_run)
        with open(runs.output_path(labels_run, manifest, "preferences"), encoding="utf-8") as f:
            generated = [r for r in map(json.loads, f) if r.get("chosen") and r.get("rejected")]
    fb_manifest = runs.read_manifest(feedback_run)
    if cfg.mode == "kto":
        with open(runs.output_path(feedback_run, fb_manifest, "examples"), encoding="utf-8") as f:
            from_users = [{**r, "origin": "thumbs"} for r in map(json.loads, f)]
        from align.data.preference_formats import unpair

        rows = [{**r, "origin": "generated"} for r in unpair(generated)] + from_users
        output, file = "examples", EXAMPLES
    else:
        with open(runs.output_path(feedback_run, fb_manifest, "preferences"), encoding="utf-8") as f:
            from_users = [
                {"origin": "review" if fb_manifest.get("stage") == "feedback reviewed" else "correction", **r}
                for r in map(json.loads, f)
            ]
        rows = [{**r, "origin": "generated"} for r in generated] + from_users
        output, file = "preferences", PREFERENCES
    if not from_users:
        raise AlignError(
            f"feedback run {feedback_run} has no {'thumbs' if cfg.mode == 'kto' else 'corrections or reviewed replies'} "
            f"for feedback.mode={cfg.mode}"
        )
    by_origin = Counter(r["origin"] for r in rows)
    use = cfg.use or "with"
    with runs.new_run(STAGE, {"mode": cfg.mode, "use": use}, runs_dir, name) as run:
        if labels_run is not None:
            run.add_input("labels", labels_run)
        run.add_input("feedback", feedback_run)
        with open(run.path / file, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        run.add_output(output, file, rows=len(rows))
        run.metrics.update(usable_pairs=len(rows), by_origin=dict(sorted(by_origin.items())), mode=cfg.mode, use=use)
        if cfg.mode == "kto":
            desirable = sum(bool(r["label"]) for r in rows)
            run.metrics.update(desirable=desirable, undesirable=len(rows) - desirable)
        return runs.finish(run)


def kto_wiring(data_run: dict[str, Any], section: dict[str, Any]) -> dict[str, Any]:
    """`training.*_weight` for the kto step from the round's counts, unless the kto section sets either."""
    from align.feedback.rows import kto_weights

    training = section.get("training") or {}
    if "desirable_weight" in training or "undesirable_weight" in training:
        return {}
    desirable, undesirable = data_run["metrics"].get("desirable", 0), data_run["metrics"].get("undesirable", 0)
    weights = kto_weights(desirable, undesirable)
    if weights:
        # Over a kto config file's own weights (configs/kto/default.yaml sets 1.0): said here, and in the kto run's config.
        log.info(
            "kto: %d desirable and %d undesirable examples: training.desirable_weight=%s, undesirable_weight=%s "
            "(the KTO paper's range; set them in the loop's kto section to choose your own)",
            desirable,
            undesirable,
            weights["desirable_weight"],
            weights["undesirable_weight"],
        )
    return {f"training.{k}": v for k, v in (weights or {}).items()}


def report_section(rounds) -> str:
    """The report's "Training data by origin" table: per round, rows from generated pairs and from users."""
    rows, sources = [], []
    for r in rounds:
        run = getattr(r, "feedback", None)
        if run is None:
            continue
        manifest = run if isinstance(run, dict) else runs.read_manifest(run)
        sources += [
            i["path"] for i in manifest.get("inputs", []) if i.get("role") == "feedback" and i["path"] not in sources
        ]
        m = manifest.get("metrics", {})
        origins = ", ".join(f"{html.escape(str(k))} {v}" for k, v in (m.get("by_origin") or {}).items())
        rows.append(
            f"<tr><td class='num'>{r.round}</td><td>{html.escape(str(m.get('mode')))}</td>"
            f"<td>{html.escape(str(m.get('use')))}</td><td>{origins}</td><td class='num'>{m.get('usable_pairs')}</td></tr>"
        )
    if not rows:
        return ""
    return (
        drift_table(sources)
        + "<h2>Training data by origin</h2><p>Rounds that used feedback from deployment (the loop's <code>feedback</code>): "
        "what the round trained on, by origin: generated (pairs annotators labelled), thumbs (users' ratings, as KTO "
        "examples), correction (users' corrected replies), review (replies annotators rewrote).</p>"
        "<table><tr><th>round</th><th>mode</th><th>use</th><th>rows by origin</th><th>total</th></tr>"
        f"{''.join(rows)}</table>"
    )


def drift_table(feedback_runs: list[str]) -> str:
    """Thumbs-up share per policy run in the feedback the loop used, with Wilson intervals and the change from the
    run before (Newcombe's interval; align/feedback/drift.py): did a promoted round do better with real users?"""
    from align.feedback.drift import compare, rating_rates
    from align.feedback.report import feedback_rows

    rows = [
        row
        for path in feedback_runs
        if runs.is_run(path) and runs.read_manifest(path).get("stage") == "feedback import"
        for row in feedback_rows(path)
    ]
    table = compare(rating_rates(rows))
    if not table:
        return ""
    cells = []
    for e in table:
        c = e.get("change")
        change = f"{c['diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]" if c else ""
        cells.append(
            f"<tr><td>{html.escape(e['policy_run'])}</td><td class='num'>{e['up']}</td><td class='num'>{e['down']}</td>"
            f"<td class='num'>{e['up_share']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]</td><td class='num'>{change}</td></tr>"
        )
    return (
        "<h2>Users' ratings per policy run</h2><p>Thumbs-up share of each policy run's replies in the feedback from "
        "deployment, with 95% Wilson intervals; the change from the run deployed before it has Newcombe's interval. "
        "An interval that excludes 0 is a change users noticed.</p><table><tr><th>policy run</th><th>up</th><th>down</th>"
        f"<th>thumbs-up share [95%]</th><th>change vs previous [95%]</th></tr>{''.join(cells)}</table>"
    )
