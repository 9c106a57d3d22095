"""Regenerate the tables of docs/results/*.md from the JSON files in benchmarks/results/.

    python scripts/results_tables.py            # rewrite every marked block in place
    python scripts/results_tables.py --check    # exit 1 naming the pages whose tables are out of date

A results page marks each generated table with

    <!-- table: online_rl_hh_grpo_cpu.json online_rl_hh_ppo_cpu.json -->
    ...generated, do not edit...
    <!-- /table -->

Everything between the two markers is replaced by a table built from the named files (several files
give one table, a row or more each). The kind of table follows from the file's contents (its
`benchmark` key or, for files written before that key existed, its name), so a figure on a results
page can only change by changing its JSON file. Below each table a line names the files and, where
the JSON recorded it, the machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules below, however this file is loaded

from results_format import interval, machine, minutes, num, stat, table  # noqa: E402
from results_tables_labels import (  # noqa: E402
    active_selection,
    label_agreement,
    label_efficiency,
    label_efficiency_probe,
    label_models,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PAGES = ROOT / "docs" / "results"
# A marker may be indented (a table inside a list item): the generated lines take its indentation.
BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)(?P<open><!-- table: (?P<files>[^>]+?) -->\n)(?P<body>.*?)[ \t]*<!-- /table -->", re.S | re.M
)


# -- one builder per kind of result file -----------------------------------------------------------


def online_rl(files: list[tuple[str, dict]]) -> str:
    """One row per algorithm and rollout engine of `benchmarks/online_rl.py` runs."""
    rows = []
    for name, data in files:
        steps_total = (data.get("settings") or {}).get("steps")
        for algorithm, by_engine in data["results"].items():
            # The first files keep one record per algorithm; later ones one per rollout engine.
            records = {"": by_engine} if "seconds_per_step" in by_engine else by_engine
            for engine, r in records.items():
                label = f"{algorithm} ({engine})" if engine else algorithm
                if "held_out_gain" in r:
                    gain = interval(r["held_out_gain"], *r["held_out_gain_ci95"])
                else:  # the first, 3-step file recorded both means but no paired interval
                    gain = f"{num(r['held_out_policy_reward'] - r['held_out_reference_reward'], 3, True)} (no interval)"
                rows.append(
                    [
                        label,
                        r.get("steps", steps_total),
                        num(r["seconds_per_step"], 1),
                        f"{num(r['generation_s'], 1)} ({r['generation_share']:.0%})",
                        num(r["training_s"], 1),
                        num(r["kl_last_step"], 4),
                        num(r["held_out_reference_reward"], 3),
                        gain,
                        num(r.get("held_out_win_rate"), 2),
                        r.get("held_out_prompts", ""),
                        minutes(r.get("wall_time_s")),
                        f"`{name}`",
                    ]
                )
    return table(
        [
            "algorithm (rollouts)",
            "steps",
            "s/step",
            "generation s (share)",
            "training s",
            "KL, last step",
            "held-out reward, start",
            "held-out gain [95%]",
            "win rate",
            "held-out prompts",
            "wall time",
            "file",
        ],
        rows,
    )


def online_rl_validation(files: list[tuple[str, dict]]) -> str:
    rows = []
    for _, data in files:
        for r in data["runs"].values():
            rows.append(
                [
                    r["label"],
                    interval(r["test_gain"], *r["test_gain_ci95"]),
                    interval(r["gain"], *r["gain_ci95"]),
                    num(r["win_rate"], 2),
                    f"{r['refusal_rate']:.1%} (start {r['base_refusal_rate']:.1%})",
                ]
            )
    return table(
        [
            "run",
            "test gain (150 prompts)",
            "validation gain (150 prompts)",
            "validation win rate",
            "validation refusals",
        ],
        rows,
    )


def training_vs_trl(files: list[tuple[str, dict]]) -> str:
    rows = []
    for _name, data in files:
        for c in data["comparisons"]:
            trl = [r for r in c["runs"] if r["label"].startswith("plain TRL")]
            ours = [r for r in c["runs"] if not r["label"].startswith("plain TRL")]
            for r in ours:
                if trl:
                    trl_rate = sum(t["pairs_per_s"] for t in trl) / len(trl)
                    rows.append(
                        [
                            f"{c['stage']}, {c['mode']} ({c['batch']})",
                            " / ".join(num(t["pairs_per_s"]) for t in trl),
                            num(r["pairs_per_s"]),
                            f"**{r['pairs_per_s'] / trl_rate:.2f}x**",
                            f"{trl[0]['padding_fraction']:.0%} -> {r['padding_fraction']:.0%}",
                            f"{trl[0]['peak_rss_mb'] / 1000:.1f} -> {r['peak_rss_mb'] / 1000:.1f} GB",
                            f"{interval(trl[0]['test_accuracy'], *trl[0]['test_accuracy_ci95'], sign=False)} / "
                            f"{interval(r['test_accuracy'], *r['test_accuracy_ci95'], sign=False)}",
                        ]
                    )
                else:  # an align-only comparison of settings (--skip-trl)
                    rows.append(
                        [
                            f"{c['stage']}, {c['mode']} ({c['batch']}): {r['label']}",
                            "",
                            num(r["pairs_per_s"]),
                            "",
                            f"{r['padding_fraction']:.0%}",
                            f"{r['peak_rss_mb'] / 1000:.1f} GB",
                            interval(r["test_accuracy"], *r["test_accuracy_ci95"], sign=False),
                        ]
                    )
    return table(
        [
            "stage, tuning (batch)",
            "plain TRL pairs/s, first / last",
            "align pairs/s",
            "align / TRL",
            "padding, TRL -> align",
            "peak RSS, TRL -> align",
            "held-out accuracy [95%]: TRL / align",
        ],
        rows,
    )


def retention_replay(files: list[tuple[str, dict]]) -> str:
    _, data = files[0]
    base = data["ifeval_base"]
    labels = {
        "prompt_strict": "IFEval prompt level, strict",
        "inst_strict": "IFEval instruction level, strict",
        "prompt_loose": "IFEval prompt level, loose",
        "inst_loose": "IFEval instruction level, loose",
    }
    rows = []
    for key, label in labels.items():
        e = data["ifeval"][key]
        rows.append(
            [
                f"{label} ({e['plain']['n']})",
                num(base[key]["mean"]),
                stat(e["plain"]),
                stat(e["replay"]),
                stat(e["replay_minus_plain"], sign=True),
            ]
        )
    b = data["brand_score"]
    rows.append(
        [
            f"**brand score** ({b['plain']['n']} held-out prompts)",
            "",
            stat(b["plain"]),
            stat(b["replay"]),
            f"**{stat(b['replay_minus_plain'], sign=True)}**",
        ]
    )
    sft = data["sft"]
    rows.append(
        [
            "SFT steps / wall time",
            "",
            f"{sft['plain']['steps']} / {minutes(sft['plain']['wall_time_s'])}",
            f"{sft['replay']['steps']} / {minutes(sft['replay']['wall_time_s'])}",
            "",
        ]
    )
    return table(["figure", "base", "SFT without replay", "SFT with replay", "replay − no replay, paired"], rows)


def generation_engines(files: list[tuple[str, dict]]) -> str:
    rows = []
    for _name, data in files:
        ratio_key = "ratio_vs_base" if "base_tokens_per_s_mean" in data else "ratio_vs_hf"
        for r in data["results"]:
            ratio = r.get(ratio_key)
            rows.append(
                [
                    r["label"],
                    num(r["tokens_per_s"], 1),
                    num(r["prompts_per_s"], 2),
                    f"{r['engine_load_s']:.1f} s",
                    f"{r['peak_rss_mb'] / 1000:.1f} GB",
                    f"{ratio:.2f}x" if ratio is not None else "1 (reference)" if r["label"].startswith("hf") else "",
                    r["new_tokens"],
                ]
            )
    vs = (
        "vs the base (mean of its two runs)"
        if "base_tokens_per_s_mean" in files[0][1]
        else "vs hf (mean of its two runs)"
    )
    return table(["configuration", "new tokens/s", "prompts/s", "engine start", "peak RSS", vs, "new tokens"], rows)


def batch_padding(files: list[tuple[str, dict]]) -> str:
    rows = []
    for _, data in files:
        for r in data["results"]:
            rows.append(
                [
                    r["pairs"],
                    r["batch"],
                    r["max_length"],
                    f"`{r['long_prompts']}`",
                    f"{r['padding_random']:.0%}",
                    f"{r['padding_grouped']:.0%}",
                    f"{r['positions_random_over_grouped']:.2f}x",
                ]
            )
    return table(
        [
            "pairs",
            "batch",
            "max_length",
            "long prompts",
            "padding, random order",
            "padding, grouped by length",
            "positions computed, random / grouped",
        ],
        rows,
    )


def prefix_sharing(files: list[tuple[str, dict]]) -> str:
    rows = []
    for name, data in files:
        for r in data["results"]:
            rows.append(
                [
                    f"{r['stage']} ({'LoRA' if r['lora'] else 'full'}), {r['pairs_per_batch']} pairs/batch",
                    data["max_length"],
                    f"{r['positions']['off']:,} -> {r['positions']['on']:,}",
                    f"{r['seconds_per_batch']['off']:.1f} -> {r['seconds_per_batch']['on']:.1f}",
                    f"**{r['speedup']:.2f}x**",
                    f"{r['max_abs_loss_difference']:.1e}",
                    f"`{name}`",
                ]
            )
    return table(
        [
            "stage (tuning), batch",
            "max_length",
            "positions computed, off -> on",
            "s per batch, off -> on",
            "speed-up",
            "largest loss difference",
            "file",
        ],
        rows,
    )


def annotate_roundtrip(files: list[tuple[str, dict]]) -> str:
    _, data = files[0]
    rows = []
    for client, r in data["clients"].items():
        rows.append(
            [
                client,
                r["push_records"],
                num(r["push_records_per_s"], 1),
                num(r["push_upsert_only_records_per_s"], 1),
                num(r["pull_records_per_s"], 1),
                r["pull_responses"],
            ]
        )
    aims = data.get("aims", {})
    rows.append(["aim", "", aims.get("push_records_per_s", ""), "", aims.get("pull_records_per_s", ""), ""])
    return (
        table(
            [
                "client",
                "records",
                "push records/s (whole stage)",
                "push, upsert only",
                "pull records/s",
                "responses pulled",
            ],
            rows,
        )
        + f"\nLoad average (1 min) at the end: {data.get('load_average_1m')}.\n"
    )


def demo_hh_reward(files: list[tuple[str, dict]]) -> str:
    _, data = files[0]
    rows = [
        [
            r["settings"],
            r["pairs"],
            f"{r['tokens']:,.0f}",
            num(r["training_s"], 1),
            num(r["stage_wall_s"], 1),
            num(r["tokens_per_s"], 1),
            num(r["peak_rss_gb"], 2),
        ]
        for r in data["runs"]
    ]
    return table(
        ["settings (in run order)", "pairs", "tokens", "training s", "stage wall s", "tokens/s", "peak RSS GB"], rows
    )


def gradient_checkpointing(files: list[tuple[str, dict]]) -> str:
    rows = []
    for _, data in files:
        for c in data["comparisons"]:
            for r in c["runs"]:
                rows.append(
                    [
                        r["label"],
                        num(r["pairs_per_s"]),
                        f"{r['peak_rss_mb'] / 1000:.1f} GB",
                        num(r["final_loss"], 4),
                        interval(r["test_accuracy"], *r["test_accuracy_ci95"], sign=False),
                    ]
                )
    return table(["run", "pairs/s", "peak RSS", "final loss", "held-out accuracy [95%]"], rows)


def pii_redaction(files: list[tuple[str, dict]]) -> str:
    """The benchmark's own table (benchmarks/pii_redaction.py `table`), so the two cannot differ."""
    spec = importlib.util.spec_from_file_location("pii_redaction", ROOT / "benchmarks" / "pii_redaction.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _, data = files[0]
    skipped = [f"{name} ({v['skipped']})" for name, v in data["backends"].items() if "skipped" in v]
    return module.table(data) + "\n" + (f"\nNot measured: {'; '.join(skipped)}.\n" if skipped else "")


def brand_voice_warm_start(files: list[tuple[str, dict]]) -> str:
    """recipes/brand_voice/tune_warm_start.py's own table (`table`), so the page and `--table` cannot differ."""
    spec = importlib.util.spec_from_file_location(
        "tune_warm_start", ROOT / "recipes" / "brand_voice" / "tune_warm_start.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _, data = files[0]
    return module.table(data) + f"\n\nChoice rule, fixed before any result: {data['rule']}.\n"


def feedback_vs_pairs(files: list[tuple[str, dict]]) -> str:
    """benchmarks/feedback_vs_pairs.py: base, pairs round and feedback round per metric, then what each trained on."""
    _, data = files[0]
    labels = {"brand_score": "brand score", "harmful_refusal": "harmful refusal", "over_refusal": "XSTest over-refusal"}
    rows = []
    for key, label in labels.items():
        m = data["metrics"][key]
        rows.append(
            [
                f"{label} ({m['prompts']})",
                stat(m["base"]),
                stat(m["pairs_round"]),
                stat(m["feedback_round"]),
                stat(m["pairs_minus_base"], sign=True),
                stat(m["feedback_minus_base"], sign=True),
                f"**{stat(m['feedback_minus_pairs'], sign=True)}**",
            ]
        )
    text = table(
        [
            "held-out metric (prompts)",
            "base",
            "pairs round",
            "feedback round",
            "pairs − base, paired",
            "feedback − base, paired",
            "feedback − pairs, paired",
        ],
        rows,
    )
    pairs, fb = data["labels"]["pairs"], data["labels"]["feedback"]
    wall = data["wall_time_s"]
    text += "\n" + table(
        ["round", "trained on", "labels", "training", "round wall time"],
        [
            [
                "pairs",
                f"{pairs['usable_pairs']} pairs (DPO)",
                f"{pairs['votes']} votes on {pairs['records']} records",
                minutes(wall["pairs"].get("dpo")),
                minutes(wall["pairs"]["round_total"]),
            ],
            [
                "feedback",
                f"{fb['examples']} thumbs (KTO)",
                f"{fb['thumbs_up']} up, {fb['thumbs_down']} down",
                minutes(wall["feedback"].get("kto")),
                minutes(wall["feedback"]["round_total"]),
            ],
        ],
    )
    return text


def loop_results(files: list[tuple[str, dict]]) -> str:
    """benchmarks/loop_results.py: the score table `align loop` prints, then labels and wall time per round."""
    rows = []
    for _, data in files:
        with_start = any(m.get("vs_start") for r in data["rounds"] for m in r["metrics"].values())
        for r in data["rounds"]:
            m = r["metrics"]
            outcome = r["outcome"] + (f" ({'; '.join(r['failed_gates'])})" if r["failed_gates"] else "")
            cells = [r["round"], outcome]
            cells += [
                stat(m[k]["policy"]) if k in m else "-" for k in ("brand_score", "harmful_refusal", "over_refusal")
            ]
            cells.append(num(m["words"]["policy"]["mean"], 1) if "words" in m else "-")
            if with_start:
                cells += [
                    stat(m[k]["vs_start"], sign=True) if m.get(k, {}).get("vs_start") else "-"
                    for k in ("brand_score", "harmful_refusal", "over_refusal")
                ]
            labels = r["labels"]
            cells.append(
                f"{labels['records']} records, {labels['votes']} votes ({labels['simulated_votes']} simulated, "
                f"{labels['human_votes']} human)"
                if labels
                else ""
            )
            cells.append(minutes(sum(r["wall_time_s"].values())))
            rows.append(cells)
    header = ["round", "outcome (failed gates)", "brand score", "harmful refused", "over-refusal", "words"]
    if with_start:
        header += ["brand vs start", "harmful refused vs start", "over-refusal vs start"]
    text = table(header + ["labels", "round wall time"], rows)
    for _, data in files:
        steps = "; ".join(
            f"round {r['round']}: " + ", ".join(f"{k} {v:.0f} s" for k, v in r["wall_time_s"].items())
            for r in data["rounds"]
        )
        text += (
            f"\n`{data['config'] or data['recipe']}`, loop {data['loop_id']} started {data['started'][:16]}: "
            f"{minutes(data['total_wall_time_s'])} of steps in all ({steps}); commit {(data['git_commit'] or '?')[:7]}.\n"
        )
    return text


def transcribed(files: list[tuple[str, dict]]) -> str:
    """A table transcribed from a run's printed output (`*_transcribed.json`, for runs that wrote no result file):
    the cells as they were printed, chosen by the marker's `FILE.json#TABLE`; the file's `source` says so."""
    text = ""
    for name, data in files:
        key = name.partition("#")[2]
        if key not in data["tables"]:
            raise SystemExit(f"results_tables: {name}: no table '{key}' (the file has: {', '.join(data['tables'])})")
        t = data["tables"][key]
        text += table(t["header"], t["rows"])
        if t.get("note"):
            text += f"\n{t['note']}\n"
    sources = sorted({d["source"] for _, d in files})
    return text + "\n" + " ".join(f"<small>{s}</small>" for s in sources) + "\n"


def builder(name: str, data: dict):
    """The table kind of a result file: its `benchmark` key, else its name."""
    kind = data.get("benchmark") or name
    for prefix, build in (
        ("online_rl_validation", online_rl_validation),
        ("online_rl", online_rl),
        ("reward_gradient_checkpointing", gradient_checkpointing),
        ("training_vs_trl", training_vs_trl),
        ("retention_replay", retention_replay),
        ("generation_", generation_engines),
        ("batch_padding", batch_padding),
        ("prefix_sharing", prefix_sharing),
        ("annotate_roundtrip", annotate_roundtrip),
        ("demo_hh_reward_before_after", demo_hh_reward),
        ("pii_redaction", pii_redaction),
        ("feedback_vs_pairs", feedback_vs_pairs),
        ("brand_voice_warm_start", brand_voice_warm_start),
        ("loop_results", loop_results),
        ("transcribed", transcribed),
    ):
        if kind.startswith(prefix):
            return build
    for prefix, build in (
        ("label_models", label_models),
        ("label_agreement", label_agreement),
        ("active_selection", active_selection),
        ("label_efficiency_probe", label_efficiency_probe),  # before label_efficiency: a longer name, same prefix
        ("label_efficiency", label_efficiency),
    ):
        if kind.startswith(prefix):
            return build
    raise SystemExit(f"results_tables: no table kind for {name} (benchmark {data.get('benchmark')!r})")


def render(names: list[str]) -> str:
    files = []
    for name in names:
        path = RESULTS / name.partition("#")[0]  # FILE.json#TABLE picks one table of a file that holds several
        if not path.is_file():
            raise SystemExit(f"results_tables: {path} named in a table marker does not exist")
        files.append((name, json.loads(path.read_text())))
    kinds = {builder(n, d) for n, d in files}
    if len(kinds) != 1:
        raise SystemExit(f"results_tables: one table cannot mix kinds of result files: {' '.join(names)}")
    text = kinds.pop()(files)
    machines = sorted({m for _, d in files if (m := machine(d))})
    source = ", ".join(f"`benchmarks/results/{n}`" for n in names)
    return (
        text
        + f"\n<small>Generated from {source}"
        + (f"; recorded: {' / '.join(machines)}" if machines else "")
        + ".</small>\n"
    )


def regenerate(text: str) -> str:
    def block(m: re.Match) -> str:
        indent = m.group("indent")
        body = "".join(
            indent + line if line.strip() else line for line in render(m.group("files").split()).splitlines(True)
        )
        return indent + m.group("open") + body + indent + "<!-- /table -->"

    return BLOCK.sub(block, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a page is out of date")
    args = parser.parse_args(argv)
    stale = []
    for page in sorted(PAGES.glob("*.md")):
        old = page.read_text()
        new = regenerate(old)
        if new != old:
            stale.append(page.relative_to(ROOT))
            if not args.check:
                page.write_text(new)
    if args.check and stale:
        print("out of date (run python scripts/results_tables.py): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    for page in stale:
        print(f"rewrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
