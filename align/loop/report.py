"""report.html: one self-contained page saying how a loop's rounds went.

The loop calls `write_report(path, rounds, loop_info)` after every round with one `RoundSummary`
(align/loop/rounds.py) per round so far (round 0 is the starting policy: evaluated, no labels, no gates). The page has:

- the rounds at a glance: policy, promoted or held back and why;
- scores per round with their 95% bootstrap intervals (error bars and table): brand-voice score,
  refusal rate on harmful prompts and on XSTest's safe prompts (over-refusal), reward-model win
  rate, mean reply length; the interval is evaluate policy's (align/evaluation/bootstrap.py);
- labels per round: records pushed (the label budget spent), records labelled, votes, gold votes
  (spent on checking annotators), discards, ties, how votes became labels (majority or Dawid-Skene), agreement, Krippendorff's alpha, annotators,
  and who voted: the pull's counts of simulated and human votes (both when a round has both);
  per record kind in a mixed loop: records, usable pairs, votes, ties;
- per round, a table per annotator (align/loop/annotators.py): gold accuracy, alpha without them,
  share of A, median seconds, flags, from the pull's `metrics.annotator_quality`;
- wall time of each step of each round;
- with a retention step: per round, what the policy lost against the loop's base model (IFEval
  prompt- and instruction-level strict accuracy, drift KL, the base replies' log-likelihood change,
  with intervals), a plot across rounds and each round's own retention.png;
- every gate of every round with its number and reason, failures marked;
- example replies, baseline and policy side by side.

Plots are drawn by align/loop/plots.py and embedded as base64 PNG, and all text from runs (prompts, replies, names) is HTML-escaped: the page loads nothing from outside,
runs no script and can be mailed as one file. It is written to a temporary file and renamed into
place, so a reader (or a kill -9) never sees half a report.
"""

from __future__ import annotations

import base64
import html
import json
import os
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from align.core import runs
from align.loop.annotators import annotators_section
from align.loop.feedback import report_section as feedback_section
from align.loop.plots import SET_LABELS, Figure, retention_figures, score_figures
from align.loop.rounds import LabelSummary, RoundSummary, steps

REPORT = "report.html"

METRIC_LABELS = {
    "brand_score": "brand-voice score",
    "refusal_rate": "refusal rate",
    "rm_win_rate": "reward-model win rate",
    "rm_reward": "reward",
    "length_words": "reply length, words",
}
TABLE_METRICS = ("brand_score", "refusal_rate", "rm_win_rate", "rm_reward", "length_words")


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
    info_rows = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(_text(v))}</td></tr>" for k, v in loop_info.items() if k != "title"
    )
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    sections = [
        (
            f"<h1>{_e(title)}</h1><p class='muted'>Written {generated}; {len(rounds) - 1} round(s) after the starting "
            f"policy. Intervals are 95% percentile bootstrap intervals over prompts.</p>"
        ),
        f"<table>{info_rows}</table>" if info_rows else "",
        "<h2>Rounds</h2>",
        _overview(rounds),
        "<h2>Scores per round</h2>",
        (
            "<p>Each point is the round's policy on the held-out prompt sets; bars are 95% intervals. Hollow markers: "
            "a policy that was held back. The win rate compares each round's policy with that round's baseline.</p>"
        ),
        _figures(score_figures(rounds)),
        _scores_table(rounds),
        _rules_table(rounds),
        _start_table(rounds),
        _retention(rounds),
        "<h2>Labels per round</h2>",
        _labels_table(rounds),
        _kinds_table(rounds),
        feedback_section(rounds),
        annotators_section(rounds),
        "<h2>Wall time per step</h2>",
        _time_table(rounds),
        "<h2>Gates</h2>",
        _gates_table(rounds),
        "<h2>Example replies</h2>",
        _examples(rounds),
    ]
    body = "\n".join(sections)
    return (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def _overview(rounds: list[RoundSummary]) -> str:
    rows = []
    for r in rounds:
        if r.round == 0 and r.promoted is None:
            status = "<span class='muted'>starting policy</span>"
        elif r.round == 0:
            status = (
                "<span class='pass'>warm start kept</span>"
                if r.promoted
                else "<span class='fail'>warm start held back</span>"
            )
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


def _start_table(rounds: list[RoundSummary]) -> str:
    """Per round, the policy against the loop's starting model (the `against: start` gates' numbers)."""
    per_round = [r.start_metrics() for r in rounds]
    keys = [(s, m) for s in SET_LABELS for m in TABLE_METRICS if any(m in pr.get(s, {}) for pr in per_round)]
    if not keys:
        return ""
    head = "".join(f"<th>round {r.round}</th>" for r in rounds)
    rows = "".join(
        f"<tr><th>{_e(SET_LABELS[s])}</th><th>{_e(METRIC_LABELS[m])}</th>"
        + "".join(_metric_cell(pr.get(s, {}).get(m), m, single=False, against="start") for pr in per_round)
        + "</tr>"
        for s, m in keys
    )
    return (
        "<h3>Against the starting model</h3><p>Each round's policy against the model the loop started from (before "
        "any warm start), paired by prompt: its replies in the round's evaluation against the starting model's in "
        "round 0's (<code>versus_start</code> runs). Gates with <code>against: start</code> read these.</p>"
        f"<table><tr><th>prompt set</th><th>metric</th>{head}</tr>{rows}</table>"
    )


def _rules_table(rounds: list[RoundSummary]) -> str:
    """Per brand-voice rule, the policy's mean score per round: which rules moved the brand score."""
    per_round = [r.metrics().get("brand", {}).get("brand_rules", {}) for r in rounds]
    rules = list(dict.fromkeys(rule for pr in per_round for rule in pr))
    if not rules:
        return ""
    head = "".join(f"<th>round {r.round}</th>" for r in rounds)
    rows = "".join(
        f"<tr><th>{_e(rule)}</th>"
        + "".join(f"<td class='num'>{_rule(pr.get(rule, {}).get('policy'))}</td>" for pr in per_round)
        + "</tr>"
        for rule in rules
    )
    return (
        "<p>Brand-voice rules: the policy's mean score per rule (— where no prompt of the set applies the rule).</p>"
        f"<table><tr><th>rule</th>{head}</tr>{rows}</table>"
    )


RETENTION_ROWS = (
    ("ifeval", "prompt_strict", "IFEval prompt-level strict"),
    ("ifeval", "inst_strict", "IFEval instruction-level strict"),
    ("drift", "kl", "drift: KL(policy || base), nats/token"),
    ("drift", "baseline_logprob", "drift: base replies' log-likelihood, nats/token"),
)


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
                cells.append(
                    f"<td class='num'>{_ci(own, m)}<br><small>the base itself (round {source.round}'s "
                    f"baseline), n={own['n']}</small></td>"
                )
            else:
                cells.append(_metric_cell(node, m, single=m == "kl", against="base"))
        rows.append(f"<tr><th>{_e(label)}</th>{''.join(cells)}</tr>")
    baseline = source.retention.get("notes", {}).get("baseline", "") if isinstance(source.retention, dict) else ""
    return (
        "<h2>Retention per round</h2>"
        f"<p>What each round's policy lost against the loop's base model{f' ({_e(baseline)})' if baseline else ''}"
        " (<code>align evaluate retention</code>): every round is measured against the same model, so losses add up across "
        "rounds. Accuracies are the policy's, with its difference from the base; KL on the policy's own sampled "
        "replies to general prompts; 95% intervals.</p>"
        f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>" + _retention_figures(rounds)
    )


def _retention_figures(rounds: list[RoundSummary]) -> str:
    # Each round's own plot too: the titles drawn in it do not say which round it is, so a caption does.
    own = [(f"round {r.round}: retention.png", png) for r in rounds if (png := _run_png(r.retention))]
    return _figures(retention_figures(rounds), captioned=own)


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
            rows.append(f"<tr><td class='num'>{r.round}</td><td colspan='11' class='muted'>{note}</td></tr>")
            continue
        who = _annotated_by(lab)
        rows.append(
            f"<tr><td class='num'>{r.round}</td><td class='num'>{_num(lab.records_pushed)}</td>"
            f"<td class='num'>{lab.records}</td><td class='num'>{lab.votes}</td><td class='num'>{lab.gold_votes}</td>"
            f"<td class='num'>{lab.discards}</td><td class='num'>{lab.ties}</td><td>{_e(lab.label_model or '')}</td>"
            f"<td class='num'>{_num(lab.pairwise_agreement)}</td><td class='num'>{_num(lab.krippendorff_alpha)}</td>"
            f"<td>{_e(', '.join(lab.annotators))} <small>({len(lab.annotators)})</small></td><td>{who}</td></tr>"
        )
    return (
        "<table><tr><th>round</th><th>records pushed</th><th>records labelled</th><th>votes</th><th>gold votes</th>"
        "<th>discards</th><th>ties</th><th>labels by</th><th>pairwise agreement</th><th>Krippendorff's α</th><th>annotators</th><th>annotated by</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _annotated_by(lab: LabelSummary) -> str:
    """Who voted, from the pull's own counts of simulated and human votes (by user id); both when a round has both."""
    sim, human = lab.simulated_votes, lab.human_votes
    if lab.annotated_by == "unknown":
        return "<span class='muted'>not counted by the pull</span>"
    if sim and human:
        return f"both: {sim} simulated, {human} by people"
    return f"simulated ({sim} votes)" if sim else f"people ({human} votes)"


def _kinds_table(rounds: list[RoundSummary]) -> str:
    """Per round of a mixed loop, what each record kind (its prompts, its judge) contributed to the labels."""
    rows = []
    for r in rounds:
        for kind, c in (r.labels.kinds if r.labels else {}).items():
            rows.append(
                f"<tr><td class='num'>{r.round}</td><td>{_e(kind)}</td><td class='num'>{c.get('records', 0)}</td>"
                f"<td class='num'>{c.get('usable_pairs', 0)}</td><td class='num'>{c.get('votes', 0)}</td>"
                f"<td class='num'>{c.get('ties', 0)}</td></tr>"
            )
    if not rows:
        return ""
    return (
        "<p>Per record kind (the loop's <code>mix</code>: each kind's prompts, judged by its own judge when "
        "simulated): records pulled, usable pairs (a majority, not a tie), votes and tied records.</p>"
        "<table><tr><th>round</th><th>kind</th><th>records</th><th>usable pairs</th><th>votes</th><th>ties</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _time_table(rounds: list[RoundSummary]) -> str:
    ordered = steps(rounds)
    if not ordered:
        return "<p class='muted'>No step timed yet.</p>"
    head = "".join(f"<th>round {r.round}</th>" for r in rounds)
    rows = [
        f"<tr><th>{_e(step)}</th>"
        + "".join(
            f"<td class='num'>{_duration(r.wall_time_s[step])}</td>"
            if step in r.wall_time_s
            else "<td class='num muted'>—</td>"
            for r in rounds
        )
        + "</tr>"
        for step in ordered
    ]
    rows.append(
        "<tr><th>total</th>"
        + "".join(f"<td class='num'><b>{_duration(sum(r.wall_time_s.values()))}</b></td>" for r in rounds)
        + "</tr>"
    )
    return f"<table><tr><th>step</th>{head}</tr>{''.join(rows)}</table>"


def _gates_table(rounds: list[RoundSummary]) -> str:
    rows = []
    for r in rounds:
        if r.gates is None:
            continue
        for g in r.gates.gates:
            mark = "<span class='pass'>pass</span>" if g.passed else "<span class='fail'>FAIL</span>"
            rows.append(
                f"<tr class='{'passed' if g.passed else 'failed'}'><td class='num'>{r.round}</td><td>{_e(g.name)}</td>"
                f"<td><code>{_e(g.metric)}</code>{' <small>vs start</small>' if g.against == 'start' else ''}</td>"
                f"<td class='num'>{_num(g.actual)}</td>"
                f"<td class='num'>{_e(g.op)} {_num(g.threshold)}</td><td>{mark}</td><td>{_e(g.reason)}</td></tr>"
            )
    if not rows:
        return "<p class='muted'>No round gated yet (round 0 is gated only as a warm start, by gates against the start).</p>"
    return (
        "<table><tr><th>round</th><th>gate</th><th>metric</th><th>actual</th><th>needs</th><th>result</th>"
        f"<th>reason</th></tr>{''.join(rows)}</table>"
    )


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
                f"<div><small>policy (round {r.round})</small><div class='reply'>{_e(ex.policy)}</div></div></div></div>"
            )
    return "\n".join(parts) or "<p class='muted'>No examples.</p>"


def _figures(figures: Sequence[Figure], captioned: Sequence[Figure] = ()) -> str:
    if not figures and not captioned:
        return ""
    return (
        "<div class='plots'>"
        + "".join(f"<img alt='{_e(alt)}' src='data:image/png;base64,{png}'>" for alt, png in figures)
        + "".join(
            f"<figure><img alt='{_e(alt)}' src='data:image/png;base64,{png}'><figcaption><small>{_e(alt)}"
            "</small></figcaption></figure>"
            for alt, png in captioned
        )
        + "</div>"
    )


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
    return (
        f"<td class='num'>{_ci(node['policy'], metric)}<br><small>vs {against} {_ci(diff, metric, signed=True)}"
        f", n={diff['n']}</small></td>"
    )


def _ci(node: dict, metric: str, signed: bool = False) -> str:
    f = ".1f" if metric == "length_words" else ".3f"
    f = ("+" if signed else "") + f
    return f"{node['mean']:{f}} [{node['ci_low']:{f}}, {node['ci_high']:{f}}]"


def _duration(seconds: float) -> str:
    # Waiting for people to label can take days; training takes minutes.
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
