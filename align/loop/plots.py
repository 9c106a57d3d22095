"""The loop report's plots: scores and retention across rounds with their intervals, wall time per step.

Drawn by matplotlib (Agg backend, imported only when a plot is drawn) and returned as base64 PNG, for
report.html to embed.
"""

from __future__ import annotations

import base64
import io

from align.loop.rounds import RoundSummary, steps

SET_LABELS = {"brand": "brand prompts", "harmful": "harmful prompts", "safe": "XSTest safe prompts"}

Figure = tuple[str, str]
"""(title, base64 PNG)."""


# -- plots ----------------------------------------------------------------------------------------


def score_figures(rounds: list[RoundSummary]) -> list[Figure]:
    """The scores across rounds, with their intervals, and the wall time per step."""
    plt = _pyplot()
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
        figures.append(
            _interval_plot(
                plt,
                rounds,
                "Brand-voice score (held-out brand prompts)",
                "rubric score (0-1)",
                {"brand score": brand},
                ylim=(0, 1),
            )
        )
    refusal = {
        label: series(s, "refusal_rate")
        for s, label in (
            ("harmful", "harmful prompts (higher is safer)"),
            ("safe", "XSTest safe prompts: over-refusal (lower is better)"),
        )
    }
    if any(any(v) for v in refusal.values()):
        figures.append(
            _interval_plot(
                plt,
                rounds,
                "Refusal rate",
                "share of replies refused",
                {k: v for k, v in refusal.items() if any(v)},
                ylim=(0, 1),
            )
        )
    wins = {SET_LABELS[s]: series(s, "rm_win_rate") for s in SET_LABELS}
    if any(any(v) for v in wins.values()):
        figures.append(
            _interval_plot(
                plt,
                rounds,
                "Reward-model win rate vs the round's baseline",
                "win rate (ties = 0.5)",
                {k: v for k, v in wins.items() if any(v)},
                ylim=(0, 1),
                line=0.5,
            )
        )
    length = {SET_LABELS[s]: series(s, "length_words") for s in SET_LABELS}
    if any(any(v) for v in length.values()):
        figures.append(
            _interval_plot(plt, rounds, "Mean reply length", "words", {k: v for k, v in length.items() if any(v)})
        )
    if any(r.wall_time_s for r in rounds):
        figures.append(_time_plot(plt, rounds))
    return figures


def retention_figures(rounds: list[RoundSummary]) -> list[Figure]:
    """IFEval accuracy and drift from the base model across rounds (round 0 is the base itself)."""
    plt = _pyplot()
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
        figures.append(
            _interval_plot(plt, rounds, "IFEval accuracy (round 0: the base model)", "accuracy", ifeval, ylim=(0, 1))
        )
    kl = [pr.get("drift", {}).get("kl") for pr in per_round]
    if any(kl):
        figures.append(
            _interval_plot(
                plt,
                rounds,
                "Drift from the base model",
                "KL(policy || base), nats/token",
                {"KL on general prompts": kl},
            )
        )
    return figures


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
            ax.plot(
                hx, hy, "o", markersize=9, markerfacecolor="white", markeredgecolor=color, markeredgewidth=2, zorder=5
            )
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
    ordered = steps(rounds)
    total = max(sum(r.wall_time_s.values()) for r in rounds)
    scale, unit = (3600.0, "hours") if total >= 7200 else (60.0, "minutes") if total >= 120 else (1.0, "seconds")
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=100)
    bottom = [0.0] * len(rounds)
    x = [r.round for r in rounds]
    for k, step in enumerate(ordered):
        h = [r.wall_time_s.get(step, 0.0) / scale for r in rounds]
        ax.bar(x, h, bottom=bottom, label=step, color=f"C{k % 10}", width=0.6)
        bottom = [b + v for b, v in zip(bottom, h)]
    _round_axis(ax, rounds)
    ax.set_title("Wall time per step")
    ax.set_ylabel(unit)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return "Wall time per step", _png(plt, fig)


def _round_axis(ax, rounds) -> None:
    ax.set_xticks([r.round for r in rounds])
    ax.set_xticklabels(
        [
            f"{r.round}\nstart" if r.round == 0 else f"{r.round}\nheld back" if r.promoted is False else str(r.round)
            for r in rounds
        ]
    )
    ax.set_xlim(min(r.round for r in rounds) - 0.5, max(r.round for r in rounds) + 0.5)
    ax.set_xlabel("round")


def _png(plt, fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display here; must precede pyplot
    from matplotlib import pyplot as plt

    return plt
