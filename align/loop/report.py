"""report.html: one self-contained page saying how a loop's rounds went.

The loop calls `write_report(path, rounds, loop_info)` after every round with one `RoundSummary`
per round so far (round 0 is the starting policy: evaluated, no labels, no gates). The page has:

- the rounds at a glance: policy, promoted or held back and why;
- scores per round with their 95% bootstrap intervals (error bars and table): brand-voice score,
  refusal rate on harmful prompts and on XSTest's safe prompts (over-refusal), reward-model win
  rate, mean reply length; the interval is evaluate policy's (align/evaluation/bootstrap.py);
- labels per round: records, votes, discards, ties, agreement, Krippendorff's alpha, annotators,
  and whether the annotators were simulated;
- wall time of each step of each round;
- with a retention step: per round, what the policy lost against the loop's base model (IFEval
  prompt- and instruction-level strict accuracy, drift KL, the base replies' log-likelihood change,
  with intervals), a plot across rounds and each round's own retention.png;
- every gate of every round with its number and reason, failures marked;
- example replies, baseline and policy side by side.

Plots are drawn by matplotlib (Agg backend, imported only here) and embedded as base64 PNG, and
all text from runs (prompts, replies, names) is HTML-escaped: the page loads nothing from outside,
runs no script and can be mailed as one file. It is written to a temporary file and renamed into
place, so a reader (or a kill -9) never sees half a report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from align.core import runs
from align.core.errors import AlignError
from align.loop.gates import GateResult

REPORT = "report.html"

SET_LABELS = {"brand": "brand prompts", "harmful": "harmful prompts", "safe": "XSTest safe prompts"}
METRIC_LABELS = {
    "brand_score": "brand-voice score",
    "refusal_rate": "refusal rate",
    "rm_win_rate": "reward-model win rate",
    "rm_reward": "reward",
    "length_words": "reply length, words",
}
TABLE_METRICS = ("brand_score", "refusal_rate", "rm_win_rate", "rm_reward", "length_words")


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
    simulated: bool
    """True when the votes came from simulated annotators (demos, tests, CI), not people."""
    discards: int = 0
    """Records annotators discarded."""
    ties: int = 0
    """Records whose majority was a tie."""
    run: str | None = None
    """The pull run directory."""

    @classmethod
    def from_pull_run(cls, path: str | Path, simulated: bool | None = None) -> LabelSummary:
        """Read a pull run: counts and agreement from its manifest, annotators from its preferences.

        `simulated` defaults to the run's `notes.simulated` (False when the run does not say).
        """
        manifest = runs.read_manifest(path)
        if manifest.get("stage") != "annotate pull":
            raise AlignError(f"{path} is a '{manifest.get('stage')}' run, not an 'annotate pull' run")
        metrics = manifest["metrics"]
        annotators: set[str] = set()
        with open(runs.output_path(path, manifest, "preferences"), encoding="utf-8") as f:
            for line in f:
                annotators.update(v["annotator"] for v in json.loads(line)["votes"])
        if simulated is None:
            simulated = bool(manifest.get("notes", {}).get("simulated", False))
        return cls(records=metrics["records"], votes=metrics["votes"],
                   pairwise_agreement=metrics.get("pairwise_agreement"),
                   krippendorff_alpha=metrics.get("krippendorff_alpha"), annotators=sorted(annotators),
                   simulated=simulated, discards=metrics.get("discards", 0), ties=metrics.get("ties", 0),
                   run=str(path))


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
    """True: the policy becomes the current one; False: held back; None: round 0 or undecided."""
    reasons: list[str] = field(default_factory=list)
    """Why the round was promoted or held back (gate failures, a failed step, ...)."""
    wall_time_s: dict[str, float] = field(default_factory=dict)
    """Seconds per step, in the order the steps ran (e.g. generate, push, labels, pull, dpo, evaluate)."""
    examples: list[ExampleReply] = field(default_factory=list)
    """Replies shown side by side."""
    retention: dict[str, Any] | str | None = None
    """The round's `align evaluate retention` manifest, or its run directory; None when the loop measures no
    retention (or not yet, or round 0 without a warm start: there the policy is the retention baseline)."""

    def metrics(self) -> dict[str, Any]:
        """The evaluation's metrics (read from its run directory when given as a path)."""
        if self.evaluation is None:
            return {}
        if not isinstance(self.evaluation, dict):
            self.evaluation = runs.read_manifest(self.evaluation)
        return self.evaluation.get("metrics", {})

    def retention_metrics(self) -> dict[str, Any]:
        """The retention run's metrics; {} without one."""
        if self.retention is None:
            return {}
        if not isinstance(self.retention, dict):
            self.retention = runs.read_manifest(self.retention)
        return self.retention.get("metrics", {})

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for a loop's state file; `from_dict` reads it back."""
        out = asdict(self)
        out["gates"] = None if self.gates is None else self.gates.as_dict()
        for key in ("evaluation", "retention"):
            run = getattr(self, key)
            out[key] = run.get("path", run) if isinstance(run, dict) else run
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundSummary:
        data = dict(data)
        data["labels"] = None if data.get("labels") is None else LabelSummary(**data["labels"])
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
            out.append(ExampleReply(name, row["prompt"][-1]["content"], row["baseline"]["reply"], row["policy"]["reply"]))
    return out


def write_report(path: str | Path, rounds: list[RoundSummary], loop_info: dict[str, Any]) -> Path:
    """Write report.html at `path` (atomically) and return its path.

    `loop_info`: what the loop is (e.g. recipe, loop directory, base model, started); shown as a table,
    `title` if present becomes the page title.
    """
    if not rounds:
        raise ValueError("write_report needs at least one round (round 0, the starting policy)")
    numbers = [r.round for r in rounds]
    if numbers != sorted(set(numbers)):
        raise ValueError(f"rounds must be in order without repeats, got {numbers}")
    path = Path(path)
    page = _page(sorted(rounds, key=lambda r: r.round), loop_info)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; a report is for reading
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- page -----------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.pass { color: #1a7f37; font-weight: 600; } .fail { color: #b42318; font-weight: 600; } .muted { color: #777; }
tr.failed td { background: #fff1f0; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; } .plots img { max-width: 580px; width: 100%; border: 1px solid #eee; }
.plots figure { margin: 0; max-width: 580px; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: .6em; margin-bottom: 1.2em; }
.reply { white-space: pre-wrap; background: #fafafa; border: 1px solid #e3e3e3; padding: .5em; font-size: .9em; }
.prompt { white-space: pre-wrap; font-style: italic; margin: .4em 0; }
small { color: #666; }
"""


def _page(rounds: list[RoundSummary], loop_info: dict[str, Any]) -> str:
    title = str(loop_info.get("title", "Feedback loop report"))
    info_rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_text(v))}</td></tr>" for k, v in loop_info.items() if k != "title")
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    sections = [
        (f"<h1>{_e(title)}</h1><p class='muted'>Written {generated}; {len(rounds) - 1} round(s) after the starting "
         f"policy. Intervals are 95% percentile bootstrap intervals over prompts.</p>"),
        f"<table>{info_rows}</table>" if info_rows else "",
        "<h2>Rounds</h2>", _overview(rounds),
        "<h2>Scores per round</h2>",
        ("<p>Each point is the round's policy on the held-out prompt sets; bars are 95% intervals. Hollow markers: "
         "a policy that was held back. The win rate compares each round's policy with that round's baseline.</p>"),
        _plots(rounds), _scores_table(rounds), _rules_table(rounds),
        _retention(rounds),
        "<h2>Labels per round</h2>", _labels_table(rounds),
        "<h2>Wall time per step</h2>", _time_table(rounds),
        "<h2>Gates</h2>", _gates_table(rounds),
        "<h2>Example replies</h2>", _examples(rounds),
    ]
    body = "\n".join(sections)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


def _overview(rounds: list[RoundSummary]) -> str:
    rows = []
    for r in rounds:
        if r.round == 0:
            status = "<span class='muted'>starting policy</span>"
        elif r.promoted is None:
            status = "<span class='muted'>in progress</span>"
        else:
            status = "<span class='pass'>promoted</span>" if r.promoted else "<span class='fail'>held back</span>"
        why = "<br>".join(_e(x) for x in r.reasons)
        rows.append(f"<tr><td class='num'>{r.round}</td><td>{_e(r.policy)}</td><td>{status}</td><td>{why}</td></tr>")
    return f"<table><tr><th>round</th><th>policy</th><th>outcome</th><th>why</th></tr>{''.join(rows)}</table>"


def _scores_table(rounds: list[RoundSummary]) -> str:
    per_round = [r.metrics() for r in rounds]
    keys = [(s, m) for s in SET_LABELS for m in TABLE_METRICS if any(m in pr.get(s, {}) for pr in per_round)]
    if not keys:
        return "<p class='muted'>No evaluation yet.</p>"
    head = "".join(f"<th>round {r.round}</th>" for r in rounds)
    rows = []
    for s, m in keys:
        cells = []
        for pr in per_round:
            node = pr.get(s, {}).get(m)
            cells.append(_metric_cell(node, m, single=m == "rm_win_rate", against="baseline"))
        span = sum(1 for k in keys if k[0] == s)
        first = f"<th rowspan='{span}'>{_e(SET_LABELS[s])}</th>" if (s, m) == next(k for k in keys if k[0] == s) else ""
        rows.append(f"<tr>{first}<th>{_e(METRIC_LABELS[m])}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th>prompt set</th><th>metric</th>{head}</tr>{''.join(rows)}</table>"


def _rules_table(rounds: list[RoundSummary]) -> str:
    """Per brand-voice rule, the policy's mean score per round: which rules moved the brand score."""
    per_round = [r.metrics().get("brand", {}).get("brand_rules", {}) for r in rounds]
    rules = list(dict.fromkeys(rule for pr in per_round for rule in pr))
    if not rules:
        return ""
    head = "".join(f"<th>round {r.round}</th>" for r in rounds)
    rows = "".join(f"<tr><th>{_e(rule)}</th>" + "".join(
        f"<td class='num'>{_rule(pr.get(rule, {}).get('policy'))}</td>" for pr in per_round) + "</tr>"
        for rule in rules)
    return ("<p>Brand-voice rules: the policy's mean score per rule (— where no prompt of the set applies the rule).</p>"
            f"<table><tr><th>rule</th>{head}</tr>{rows}</table>")


RETENTION_ROWS = (("ifeval", "prompt_strict", "IFEval prompt-level strict"),
                  ("ifeval", "inst_strict", "IFEval instruction-level strict"),
                  ("drift", "kl", "drift: KL(policy || base), nats/token"),
                  ("drift", "baseline_logprob", "drift: base replies' log-likelihood, nats/token"))


def _retention(rounds: list[RoundSummary]) -> str:
    """Per round, what the policy lost against the loop's base model; nothing when the loop measures no retention."""
    per_round = [r.retention_metrics() for r in rounds]
    if not any(per_round):
        return ""
    # Round 0 without a warm start is the retention baseline itself: its scores are every run's baseline.
    source = next(r for r, m in zip(rounds, per_round) if m)
    base = source.retention_metrics()
    head = "".join(f"<th>round {r.round}</th>" for r in rounds)
    rows = []
    for s, m, label in RETENTION_ROWS:
        if not any(m in pr.get(s, {}) for pr in per_round):
            continue
        cells = []
        for r, pr in zip(rounds, per_round):
            node = pr.get(s, {}).get(m)
            if node is None and r.round == 0 and m in base.get(s, {}) and m != "kl":
                own = base[s][m]["baseline"]
                cells.append(f"<td class='num'>{_ci(own, m)}<br><small>the base itself (round {source.round}'s "
                             f"baseline), n={own['n']}</small></td>")
            else:
                cells.append(_metric_cell(node, m, single=m == "kl", against="base"))
        rows.append(f"<tr><th>{_e(label)}</th>{''.join(cells)}</tr>")
    baseline = source.retention.get("notes", {}).get("baseline", "") if isinstance(source.retention, dict) else ""
    return ("<h2>Retention per round</h2>"
            f"<p>What each round's policy lost against the loop's base model{f' ({_e(baseline)})' if baseline else ''}"
            " (<code>align evaluate retention</code>): every round is measured against the same model, so losses add up across "
            "rounds. Accuracies are the policy's, with its difference from the base; KL on the policy's own sampled "
            "replies to general prompts; 95% intervals.</p>"
            f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>" + _retention_plots(rounds))


def _retention_plots(rounds: list[RoundSummary]) -> str:
    import matplotlib

    matplotlib.use("Agg")  # no display here; must precede pyplot
    from matplotlib import pyplot as plt

    per_round = [r.retention_metrics() for r in rounds]
    base = next(m for m in per_round if m)
    figures = []
    ifeval = {}
    for m, label in (("prompt_strict", "prompt-level strict"), ("inst_strict", "instruction-level strict")):
        values = [pr.get("ifeval", {}).get(m, {}).get("policy") for pr in per_round]
        if values[0] is None and m in base.get("ifeval", {}) and rounds[0].round == 0:
            values[0] = base["ifeval"][m]["baseline"]  # round 0 is the base: its own accuracy
        if any(values):
            ifeval[label] = values
    if ifeval:
        figures.append(_interval_plot(plt, rounds, "IFEval accuracy (round 0: the base model)", "accuracy", ifeval,
                                      ylim=(0, 1)))
    kl = [pr.get("drift", {}).get("kl") for pr in per_round]
    if any(kl):
        figures.append(_interval_plot(plt, rounds, "Drift from the base model", "KL(policy || base), nats/token",
                                      {"KL on general prompts": kl}))
    # Each round's own plot: the titles drawn in it do not say which round it is, so a caption does.
    own = [(f"round {r.round}: retention.png", png) for r in rounds if (png := _run_png(r.retention))]
    return ("<div class='plots'>"
            + "".join(f"<img alt='{_e(alt)}' src='data:image/png;base64,{png}'>" for alt, png in figures)
            + "".join(f"<figure><img alt='{_e(alt)}' src='data:image/png;base64,{png}'><figcaption><small>{_e(alt)}"
                      "</small></figcaption></figure>" for alt, png in own) + "</div>")


def _run_png(run: dict[str, Any] | str | None) -> str | None:
    """A retention run's own plot, base64; None when the run has none (or is not on this disk)."""
    if not isinstance(run, dict) or "path" not in run or "plot" not in run.get("outputs", {}):
        return None
    path = Path(runs.output_path(run["path"], run, "plot"))
    return base64.b64encode(path.read_bytes()).decode("ascii") if path.is_file() else None


def _labels_table(rounds: list[RoundSummary]) -> str:
    rows = []
    for r in rounds:
        lab = r.labels
        if lab is None:
            note = "starting policy: no labels" if r.round == 0 else "no labels pulled"
            rows.append(f"<tr><td class='num'>{r.round}</td><td colspan='8' class='muted'>{note}</td></tr>")
            continue
        who = "simulated" if lab.simulated else "people"
        rows.append(
            f"<tr><td class='num'>{r.round}</td><td class='num'>{lab.records}</td><td class='num'>{lab.votes}</td>"
            f"<td class='num'>{lab.discards}</td><td class='num'>{lab.ties}</td>"
            f"<td class='num'>{_num(lab.pairwise_agreement)}</td><td class='num'>{_num(lab.krippendorff_alpha)}</td>"
            f"<td>{_e(', '.join(lab.annotators))} <small>({len(lab.annotators)})</small></td><td>{who}</td></tr>")
    return ("<table><tr><th>round</th><th>records</th><th>votes</th><th>discards</th><th>ties</th>"
            "<th>pairwise agreement</th><th>Krippendorff's α</th><th>annotators</th><th>annotated by</th></tr>"
            f"{''.join(rows)}</table>")


def _time_table(rounds: list[RoundSummary]) -> str:
    steps = _steps(rounds)
    if not steps:
        return "<p class='muted'>No step timed yet.</p>"
    head = "".join(f"<th>round {r.round}</th>" for r in rounds)
    rows = [f"<tr><th>{_e(step)}</th>" + "".join(
        f"<td class='num'>{_duration(r.wall_time_s[step])}</td>" if step in r.wall_time_s else "<td class='num muted'>—</td>"
        for r in rounds) + "</tr>" for step in steps]
    rows.append("<tr><th>total</th>" + "".join(f"<td class='num'><b>{_duration(sum(r.wall_time_s.values()))}</b></td>"
                                              for r in rounds) + "</tr>")
    return f"<table><tr><th>step</th>{head}</tr>{''.join(rows)}</table>"


def _gates_table(rounds: list[RoundSummary]) -> str:
    rows = []
    for r in rounds:
        if r.gates is None:
            continue
        for g in r.gates.gates:
            mark = "<span class='pass'>pass</span>" if g.passed else "<span class='fail'>FAIL</span>"
            rows.append(f"<tr class='{'passed' if g.passed else 'failed'}'><td class='num'>{r.round}</td><td>{_e(g.name)}</td>"
                        f"<td><code>{_e(g.metric)}</code></td><td class='num'>{_num(g.actual)}</td>"
                        f"<td class='num'>{_e(g.op)} {_num(g.threshold)}</td><td>{mark}</td><td>{_e(g.reason)}</td></tr>")
    if not rows:
        return "<p class='muted'>No round gated yet (round 0 is the starting policy).</p>"
    return ("<table><tr><th>round</th><th>gate</th><th>metric</th><th>actual</th><th>needs</th><th>result</th>"
            f"<th>reason</th></tr>{''.join(rows)}</table>")


def _examples(rounds: list[RoundSummary]) -> str:
    parts = []
    for r in rounds:
        if not r.examples:
            continue
        parts.append(f"<h3>Round {r.round}</h3>")
        for ex in r.examples:
            parts.append(
                f"<div><b>{_e(SET_LABELS.get(ex.prompt_set, ex.prompt_set))}</b><div class='prompt'>{_e(ex.prompt)}</div>"
                f"<div class='pair'><div><small>baseline</small><div class='reply'>{_e(ex.baseline)}</div></div>"
                f"<div><small>policy (round {r.round})</small><div class='reply'>{_e(ex.policy)}</div></div></div></div>")
    return "\n".join(parts) or "<p class='muted'>No examples.</p>"


# -- plots ----------------------------------------------------------------------------------------

def _plots(rounds: list[RoundSummary]) -> str:
    import matplotlib

    matplotlib.use("Agg")  # no display here; must precede pyplot
    from matplotlib import pyplot as plt

    per_round = [r.metrics() for r in rounds]

    def series(s: str, m: str) -> list[dict | None]:
        out = []
        for pr in per_round:
            node = pr.get(s, {}).get(m)
            out.append(node if m == "rm_win_rate" or node is None else node["policy"])
        return out

    figures = []
    brand = series("brand", "brand_score")
    if any(brand):
        figures.append(_interval_plot(plt, rounds, "Brand-voice score (held-out brand prompts)",
                                      "rubric score (0-1)", {"brand score": brand}, ylim=(0, 1)))
    refusal = {label: series(s, "refusal_rate") for s, label in
               (("harmful", "harmful prompts (higher is safer)"), ("safe", "XSTest safe prompts: over-refusal (lower is better)"))}
    if any(any(v) for v in refusal.values()):
        figures.append(_interval_plot(plt, rounds, "Refusal rate", "share of replies refused",
                                      {k: v for k, v in refusal.items() if any(v)}, ylim=(0, 1)))
    wins = {SET_LABELS[s]: series(s, "rm_win_rate") for s in SET_LABELS}
    if any(any(v) for v in wins.values()):
        figures.append(_interval_plot(plt, rounds, "Reward-model win rate vs the round's baseline", "win rate (ties = 0.5)",
                                      {k: v for k, v in wins.items() if any(v)}, ylim=(0, 1), line=0.5))
    length = {SET_LABELS[s]: series(s, "length_words") for s in SET_LABELS}
    if any(any(v) for v in length.values()):
        figures.append(_interval_plot(plt, rounds, "Mean reply length", "words",
                                      {k: v for k, v in length.items() if any(v)}))
    if any(r.wall_time_s for r in rounds):
        figures.append(_time_plot(plt, rounds))
    if not figures:
        return ""
    return "<div class='plots'>" + "".join(
        f"<img alt='{_e(alt)}' src='data:image/png;base64,{png}'>" for alt, png in figures) + "</div>"


def _interval_plot(plt, rounds, title, ylabel, series: dict[str, list[dict | None]], ylim=None, line=None):
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=100)
    width = 0.12 * (len(series) - 1)
    for k, (label, values) in enumerate(series.items()):
        offset = -width / 2 + 0.12 * k if len(series) > 1 else 0.0
        xs, ys, lo, hi, held = [], [], [], [], []
        for r, v in zip(rounds, values):
            if v is None:
                continue
            xs.append(r.round + offset)
            ys.append(v["mean"])
            lo.append(v["mean"] - v["ci_low"])
            hi.append(v["ci_high"] - v["mean"])
            held.append(r.promoted is False)
        color = f"C{k}"
        ax.errorbar(xs, ys, yerr=[lo, hi], color=color, capsize=4, marker="o", label=label)
        hx = [x for x, h in zip(xs, held) if h]
        hy = [y for y, h in zip(ys, held) if h]
        if hx:
            ax.plot(hx, hy, "o", markersize=9, markerfacecolor="white", markeredgecolor=color, markeredgewidth=2, zorder=5)
    if line is not None:
        ax.axhline(line, color="#888", linestyle="--", linewidth=1)
    _round_axis(ax, rounds)
    if ylim is not None:
        ax.set_ylim(ylim[0] - 0.03, ylim[1] + 0.03)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=min(len(series), 3), frameon=False)
    return title, _png(plt, fig)


def _time_plot(plt, rounds):
    steps = _steps(rounds)
    total = max(sum(r.wall_time_s.values()) for r in rounds)
    scale, unit = (3600.0, "hours") if total >= 7200 else (60.0, "minutes") if total >= 120 else (1.0, "seconds")
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=100)
    bottom = [0.0] * len(rounds)
    x = [r.round for r in rounds]
    for k, step in enumerate(steps):
        h = [r.wall_time_s.get(step, 0.0) / scale for r in rounds]
        ax.bar(x, h, bottom=bottom, label=step, color=f"C{k % 10}", width=0.6)
        bottom = [b + v for b, v in zip(bottom, h)]
    _round_axis(ax, rounds)
    ax.set_title("Wall time per step")
    ax.set_ylabel(unit)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return "Wall time per step", _png(plt, fig)


def _steps(rounds: list[RoundSummary]) -> list[str]:
    """Steps in the order a full round ran them (round 0 only evaluates, so it must not set the order)."""
    fullest = max(rounds, key=lambda r: len(r.wall_time_s))
    return list(dict.fromkeys([*fullest.wall_time_s, *(step for r in rounds for step in r.wall_time_s)]))


def _round_axis(ax, rounds) -> None:
    ax.set_xticks([r.round for r in rounds])
    ax.set_xticklabels([f"{r.round}\nstart" if r.round == 0 else f"{r.round}\nheld back" if r.promoted is False
                        else str(r.round) for r in rounds])
    ax.set_xlim(min(r.round for r in rounds) - 0.5, max(r.round for r in rounds) + 0.5)
    ax.set_xlabel("round")


def _png(plt, fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


# -- formatting -----------------------------------------------------------------------------------

def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _num(x: float | None) -> str:
    if x is None:
        return "—"
    return str(x) if isinstance(x, int) else format(x, ".4g")


def _rule(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _metric_cell(node: dict | None, metric: str, single: bool, against: str) -> str:
    """One table cell: a metric that already compares two models has one interval; others show the
    policy's value and its paired difference from `against`."""
    if node is None:
        return "<td class='num muted'>—</td>"
    if single:
        return f"<td class='num'>{_ci(node, metric)}<br><small>n={node['n']}</small></td>"
    diff = node["difference"]
    return (f"<td class='num'>{_ci(node['policy'], metric)}<br><small>vs {against} {_ci(diff, metric, signed=True)}"
            f", n={diff['n']}</small></td>")


def _ci(node: dict, metric: str, signed: bool = False) -> str:
    f = (".1f" if metric == "length_words" else ".3f")
    f = ("+" if signed else "") + f
    return f"{node['mean']:{f}} [{node['ci_low']:{f}}, {node['ci_high']:{f}}]"


def _duration(seconds: float) -> str:
    # Waiting for people to label can take days; training takes minutes.
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
