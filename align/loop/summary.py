"""The loop's state turned into what people read: the report's rounds, the score table, `align loop status`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from align.core import runs
from align.core.errors import AlignError
from align.loop.gates import GateResult
from align.loop.rounds import LabelSummary, RoundSummary, examples_from_replies
from align.loop.state import LoopState

# (prompt set, metric, column title) of the printed score table.
TABLE = (
    ("brand", "brand_score", "brand score"),
    ("harmful", "refusal_rate", "harmful refused"),
    ("safe", "refusal_rate", "over-refusal"),
    ("brand", "length_words", "words"),
)
# (prompt set, metric, part, column title) of the retention columns, printed when the loop measures retention.
RETENTION_TABLE = (
    ("ifeval", "prompt_strict", "difference", "IFEval p-strict vs base"),
    ("drift", "kl", None, "KL vs base"),
)
STEP_ORDER = (
    "sft",
    "prompts",
    "generate",
    "score",
    "pairs",
    "push",
    "simulate",
    "wait",
    "pull",
    "labels",
    "feedback_import",
    "feedback",
    "reward",
    "dpo",
    "kto",
    "ppo",
    "evaluate",
    "evaluate_start",
    "versus_start",
    "retention",
)
# (prompt set, metric, column title) of the printed comparison with the loop's starting model, when a gate reads it.
START_TABLE = (
    ("brand", "brand_score", "brand vs start"),
    ("harmful", "refusal_rate", "harmful refused vs start"),
    ("safe", "refusal_rate", "over-refusal vs start"),
)


def round_summaries(state: LoopState) -> list[RoundSummary]:
    out = []
    for rnd in state.rounds:
        steps = rnd["steps"]
        evaluation = _done(state, steps, "evaluate")
        pull = _done(state, steps, "pull")
        out.append(
            RoundSummary(
                round=rnd["round"],
                policy=state.abs(rnd.get("policy")) or "(not trained yet)",
                evaluation=evaluation,
                labels=LabelSummary.from_pull_run(pull, kinds=_kinds(state, rnd), push=_done(state, steps, "push"))
                if pull
                else None,
                gates=GateResult.from_dict(rnd["gates"]) if rnd.get("gates") else None,
                promoted=rnd.get("promoted") if rnd.get("decided") and (rnd["round"] > 0 or rnd.get("gates")) else None,
                reasons=list(rnd.get("reasons", [])),
                wall_time_s={
                    k: float(v["wall_time_s"])
                    for k, v in sorted(steps.items(), key=lambda kv: _order(kv[0]))
                    if v.get("status") == "done" and v.get("wall_time_s") is not None
                },
                examples=examples_from_replies(evaluation, 2)
                if evaluation and (rnd["round"] > 0 or "sft" in steps)
                else [],
                retention=_done(state, steps, "retention"),
                versus_start=_done(state, steps, "versus_start"),
                feedback=_done(state, steps, "feedback"),
            )
        )
    return out


def loop_info(state: LoopState, cfg) -> dict[str, Any]:
    data = state.data
    info: dict[str, Any] = {
        "title": f"Feedback loop: {data['recipe']}",
        "recipe": data["recipe"],
        "loop directory": str(state.loop_dir.resolve()),
        "loop id": data["loop_id"],
        "started": data["created"],
        "starting policy": (
            f"{cfg.policy}, SFT warm start on {cfg.sft.get('data', {}).get('train') or 'its config file data'}"
            if cfg.sft
            else cfg.policy
        ),
        "current policy": f"{state.abs(data['current']['policy'])} (round {data['current']['round']})",
        "annotators": "simulated (demo/test: not people)"
        if cfg.annotators == "simulated"
        else "people (Argilla web UI)",
        "training": f"{' -> '.join(cfg.train.stages)} on {cfg.train.labels} labels, reference: {cfg.train.reference}",
        "gates": cfg.gates,
    }
    if cfg.mix.on:
        from align.loop.mix import counts

        share = counts(cfg.mix)
        judges = {k.kind: {**cfg.simulate, **k.simulate}.get("judge", "brand_voice") for k in cfg.mix.kinds}
        info["candidates"] = f"{cfg.mix.prompts_per_round} prompts per round: " + ", ".join(
            f"{k.kind} {share[k.kind]} from {k.prompts}"
            + (f" (judge {judges[k.kind]})" if cfg.annotators == "simulated" else "")
            for k in cfg.mix.kinds
        )
    if cfg.retention:
        from align.loop.config import retention_baseline

        info["retention"] = (
            f"align evaluate retention ({cfg.retention.get('config') or 'section settings'}) of each "
            f"round's policy against {retention_baseline(cfg)}; "
            + (f"gated by {cfg.retention_gates}" if cfg.retention_gates else "measured, not gated")
        )
    last = next((r for r in reversed(state.rounds) if r.get("since_start")), None)
    if last is not None:
        for prompt_set, metric, title in TABLE:
            d = last["since_start"].get(prompt_set, {}).get(metric)
            if d:
                info[f"{title}, round {last['round']} policy minus round 0"] = (
                    f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] (n={d['n']}, paired bootstrap)"
                )
    for change in data.get("config_changes", []):
        info[f"config changed before round {change['before_round']}"] = "; ".join(change["changes"])
    return info


def score_table(state: LoopState) -> str:
    """Each round's policy on the held-out sets: mean [95% interval], plus the gate outcome; with gates against the
    starting model, the paired difference from it too; with retention, what was lost against the base."""
    retention = [_done(state, rnd["steps"], "retention") for rnd in state.rounds]
    versus = [_done(state, rnd["steps"], "versus_start") for rnd in state.rounds]
    extra = RETENTION_TABLE if any(retention) else ()
    start_cols = START_TABLE if any(versus) else ()
    header = (
        f"{'round':>5}  {'outcome':<16}"
        + "".join(f"  {t:>22}" for _, _, t in TABLE)
        + "".join(f"  {t:>25}" for *_, t in start_cols)
        + "".join(f"  {t:>24}" for *_, t in extra)
    )
    lines = [header]
    for rnd, kept, vs in zip(state.rounds, retention, versus):
        run = _done(state, rnd["steps"], "evaluate")
        metrics = runs.read_manifest(run)["metrics"] if run else {}
        kept_metrics = runs.read_manifest(kept)["metrics"] if kept else {}
        vs_metrics = runs.read_manifest(vs)["metrics"] if vs else {}
        cells = []
        for prompt_set, metric, _ in TABLE:
            m = metrics.get(prompt_set, {}).get(metric, {}).get("policy")
            cells.append(f"{m['mean']:.3f} [{m['ci_low']:.3f},{m['ci_high']:.3f}]" if m else "-")
        vs_cells = []
        for prompt_set, metric, _ in start_cols:
            m = vs_metrics.get(prompt_set, {}).get(metric, {}).get("difference")
            vs_cells.append(f"{m['mean']:+.3f} [{m['ci_low']:+.3f},{m['ci_high']:+.3f}]" if m else "-")
        kept_cells = []
        for prompt_set, metric, part, _ in extra:
            m = kept_metrics.get(prompt_set, {}).get(metric, {})
            m = m.get(part) if part else m
            kept_cells.append(f"{m['mean']:+.3f} [{m['ci_low']:+.3f},{m['ci_high']:+.3f}]" if m else "-")
        lines.append(
            f"{rnd['round']:>5}  {outcome(rnd):<16}"
            + "".join(f"  {c:>22}" for c in cells)
            + "".join(f"  {c:>25}" for c in vs_cells)
            + "".join(f"  {c:>24}" for c in kept_cells)
        )
    return "\n".join(lines)


def outcome(rnd: dict[str, Any]) -> str:
    """start, start held (round 0 gated against the starting model), promoted, held back or in progress."""
    if rnd["round"] == 0:
        gated = rnd.get("decided") and rnd.get("gates")
        return "start" if not gated else "start, kept" if rnd.get("promoted") else "start, held back"
    return ("promoted" if rnd.get("promoted") else "held back") if rnd.get("decided") else "in progress"


def status_text(state: LoopState) -> str:
    data = state.data
    lines = [
        f"loop {data['loop_id']} ({data['recipe']}) in {state.loop_dir}: {data['phase']}",
        f"current policy: {state.abs(data['current']['policy'])} (from round {data['current']['round']})",
    ]
    if data["current"].get("reward_model"):
        lines.append(f"reward model: {state.abs(data['current']['reward_model'])}")
    for rnd in data["rounds"]:
        steps = rnd["steps"]
        done = [k for k in sorted(steps, key=_order) if steps[k].get("status") == "done"]
        started = [k for k in steps if steps[k].get("status") == "started"]
        line = f"round {rnd['round']}: {outcome(rnd)}; done: {', '.join(done) or '-'}"
        if started:
            line += f"; started, not finished: {', '.join(started)}"
        if rnd.get("dataset"):
            line += f"; dataset {rnd['dataset']}"
        wait = steps.get("wait", {})
        if wait.get("status") == "done":
            line += f" ({wait.get('completed')}/{wait.get('total')} records complete at the pull)"
        lines.append(line)
        if rnd.get("decided") and (rnd["round"] > 0 or rnd.get("gates")):
            lines.append("   " + "; ".join(rnd.get("reasons", [])))
    if data.get("config_changes"):
        lines.append(f"config changed {len(data['config_changes'])} time(s): see loop.json")
    return "\n".join(lines)


def _kinds(state: LoopState, rnd: dict) -> dict[str, dict[str, int]]:
    """What each record kind of a mixed round contributed, as the round's labels run counted it ({} unmixed)."""
    run = _done(state, rnd["steps"], "labels")
    if not run:
        return {}
    return runs.read_manifest(run).get("notes", {}).get("rounds", {}).get(str(rnd["round"]), {}).get("kinds", {})


def _done(state: LoopState, steps: dict, name: str) -> str | None:
    step = steps.get(name, {})
    return state.abs(step["run"]) if step.get("status") == "done" and step.get("run") else None


def _order(name: str) -> int:
    name = "simulate" if name.startswith("simulate_") else name  # one simulate run per kind of a mixed round
    return STEP_ORDER.index(name) if name in STEP_ORDER else len(STEP_ORDER)


def status(loop_dir: Path, as_json: bool = False) -> int:
    """`align loop status LOOP_DIR`: where the loop stands, and the labels of a round waiting for them (asked of Argilla)."""
    state = LoopState.load(loop_dir)
    if state is None:
        raise AlignError(f"{loop_dir} holds no loop (no loop.json); give the loop_dir of an `align loop`")
    if as_json:
        print(json.dumps(state.data, indent=2, default=str))
        return 0
    print(status_text(state))
    waiting = next(
        (r for r in state.rounds if r.get("dataset") and r["steps"].get("wait", {}).get("status") != "done"), None
    )
    if waiting is not None:
        from align.annotate.connection import ArgillaConfig, connect
        from align.core.config import build

        argilla = build(ArgillaConfig, dict(state.data["config"].get("argilla", {}), retry_seconds=5.0))
        try:
            with connect(argilla) as conn:
                ds = conn.dataset(waiting["dataset"], argilla.workspace)
                progress = conn.call("GET progress", ds.progress)
            print(
                f"round {waiting['round']} labels: {progress.get('completed', 0)}/{progress.get('total', 0)} records "
                f"complete, {progress.get('pending', 0)} pending (Argilla dataset '{waiting['dataset']}')"
            )
        except AlignError as exc:
            print(f"round {waiting['round']} labels: Argilla not reachable now ({exc})")
    return 0
