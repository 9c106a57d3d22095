"""Results-table builders for label quality (issue 32): label_models, label_agreement, active_selection,
label_efficiency_probe and label_efficiency. scripts/results_tables.py picks the builder for a file."""

from __future__ import annotations

from results_format import _ci, minutes, num, table


def label_models(files: list[tuple[str, dict]]) -> str:
    """benchmarks/label_models.py: label accuracy per team and budget, then the synthetic training and ties."""
    _, data = files[0]
    text = table(
        [
            "team",
            "votes/pair",
            "pairs",
            "majority accuracy",
            "Dawid-Skene accuracy",
            "DS − majority",
            "Brier majority",
            "Brier DS",
        ],
        [
            [
                f"`{r['team']}`",
                r["votes_per_pair"],
                r["pairs"],
                _ci(r["majority"]["accuracy"]),
                _ci(r["dawid_skene"]["accuracy"]),
                _ci(r["dawid_skene_minus_majority_accuracy"], sign=True),
                _ci(r["majority"]["brier"]),
                _ci(r["dawid_skene"]["brier"]),
            ]
            for r in data["results"]
        ],
    )
    text += "\nSynthetic linear Bradley-Terry model trained on the labels (held-out accuracy against the truth):\n\n"
    text += table(
        [
            "team",
            "pairs",
            "majority, hard",
            "DS, hard",
            "DS, label_smoothing",
            "DS, weight",
            "label_smoothing − majority",
        ],
        [
            [
                f"`{r['team']}`",
                r["pairs"],
                _ci(r["majority_hard"]),
                _ci(r["dawid_skene_hard"]),
                _ci(r["dawid_skene_label_smoothing"]),
                _ci(r["dawid_skene_weight"]),
                _ci(r["dawid_skene_label_smoothing_minus_majority_hard"], sign=True),
            ]
            for r in data["training"]
        ],
    )
    text += "\nTies dropped or kept (synthetic; clear-pair accuracy, and tie gap ratio: lower is better):\n\n"
    text += table(
        ["pairs", "ties", "clear accuracy", "tie gap ratio", "clear accuracy − drop"],
        [
            [
                r["pairs"],
                f"`{ties}`",
                _ci(r[ties]["clear_accuracy"]),
                _ci(r[ties]["tie_gap_ratio"]),
                _ci(r.get(f"{ties}_minus_drop_clear_accuracy"), sign=True),
            ]
            for r in data["ties"]
            for ties in ("drop", "davidson", "rao_kupper")
        ],
    )
    return text


def label_agreement(files: list[tuple[str, dict]]) -> str:
    """benchmarks/label_agreement.py: majority vs Dawid-Skene against the brand rubric on the recipe's candidates."""
    _, data = files[0]
    rows = []
    for r in data["results"]:
        team = ", ".join(
            f"{a['username']} (noise {a['noise'] or 0:g}" + (f", bias {a['bias_a']:g}" if a["bias_a"] else "") + ")"
            for a in r["annotators"]
        )
        rel = ", ".join(f"{who} {v['mean']:.2f}" for who, v in r["estimated_reliability"].items())
        rows.append(
            [
                f"`{r['team']}`: {team}",
                _ci(r["majority"]["accuracy"]),
                _ci(r["dawid_skene"]["accuracy"]),
                f"**{_ci(r['dawid_skene_minus_majority_accuracy'], sign=True)}**",
                rel,
            ]
        )
    return (
        f"{data['records']} records from {data['prompts']} prompt rows ({data['records_tied_by_the_judge']} tied by "
        f"the rubric, not scored), {data['votes_per_record']} votes per record, {data['seeds']} seeds.\n\n"
        + table(
            ["team", "majority accuracy", "Dawid-Skene accuracy", "DS − majority, paired", "estimated reliability"],
            rows,
        )
    )


def active_selection(files: list[tuple[str, dict]]) -> str:
    """benchmarks/active_selection.py: test accuracy per label budget for random, ensemble disagreement and least-sure."""
    rows = []
    for name, data in files:
        for r in data["table"]:
            rows.append(
                [
                    f"`{name}`",
                    r["labels"],
                    _ci(r["random"]),
                    _ci(r["ensemble_disagreement"]),
                    _ci(r["ensemble_disagreement_minus_random"], sign=True),
                    _ci(r["least_sure"]),
                    _ci(r["least_sure_minus_random"], sign=True),
                ]
            )
    text = table(
        ["file", "labels", "random", "ensemble disagreement", "ED − random", "least sure", "LS − random"], rows
    )
    for name, data in files:
        verdict = data.get("verdict")
        for line in verdict if isinstance(verdict, list) else [verdict] if verdict else []:
            text += f"\n- `{name}`: {line}"
    return text + "\n"


def label_efficiency_probe(files: list[tuple[str, dict]]) -> str:
    """benchmarks/label_efficiency_probe.py: per recipe, team and budget, majority's score and each arm's paired
    difference from it, for the best-of-8 score, the probe's pairwise accuracy and the labels' own accuracy."""
    _, data = files[0]
    text = ""
    for recipe, info in data["recipes"].items():
        ref = info["held_out"]
        text += (
            f"- `{recipe}`: {info['records_in_pool']} records in the label pool from {info['pool_prompts']} training "
            f"prompts, {info['records_tied_by_the_judge']} of them tied by the judge; held out: {ref['prompts']} "
            f"prompts x {ref['samples_per_prompt']} samples; one sample scores {num(ref['start'])} on average "
            f"(start), the judge's own best of {ref['samples_per_prompt']} {num(ref['oracle'])} (oracle).\n"
        )
    seeds = data["settings"]["seeds"]
    others = [a for a in data["settings"]["arms"] if a != "majority"]
    by = {(r["recipe"], r["team"], r["budget"], r["arm"]): r for r in data["summary"]}
    cells = sorted({(r["recipe"], r["team"], r["budget"]) for r in data["summary"]})

    def pivot(measure: str, recipes: list[str]) -> str:
        rows = []
        for recipe, team, budget in cells:
            if recipe not in recipes:
                continue
            base = by[(recipe, team, budget, "majority")]
            row = [f"`{recipe}`", f"`{team}`", budget, _ci(base.get(measure))]
            row += [
                _ci(by.get((recipe, team, budget, a), {}).get(f"{measure}_minus_majority"), sign=True) for a in others
            ]
            rows.append(row)
        return table(["recipe", "team", "labels", "majority"] + [f"`{a}` − majority" for a in others], rows)

    recipes = list(data["recipes"])
    text += f"\nBest-of-8 score on the held-out prompts ({seeds} seeds; differences paired by seed):\n\n"
    text += pivot("best_of_n", recipes)
    text += "\nThe probe's pairwise accuracy against the judge on the held-out pairs:\n\n"
    text += pivot("accuracy", recipes)
    text += "\nThe labels themselves: share of the pairs trained on whose label agrees with the judge:\n\n"
    text += pivot("label_accuracy", recipes)
    if "safety" in recipes:
        ref = data["recipes"]["safety"]["held_out"]
        text += (
            f"\nSafety, the best of 8 by kind: harmful requests refused (start {num(ref['start_harmful_refused'])}, "
            f"{ref['prompts_harmful']} prompts) and look-alikes refused (start {num(ref['start_safe_refused'])}, "
            f"{ref['prompts_safe']} prompts):\n\n"
        )
        text += pivot("harmful_refused", ["safety"]) + "\n" + pivot("safe_refused", ["safety"])
    text += "\n" + "".join(f"- {line}\n" for line in data["verdict"])
    return text


def label_efficiency(files: list[tuple[str, dict]]) -> str:
    """benchmarks/label_efficiency.py: held-out brand score per team, budget and arm, and what did not run."""
    _, data = files[0]
    rows = [
        [
            f"`{r['team']}`",
            r["budget"],
            f"`{r['arm']}`",
            r["brand_score"]["n"],
            _ci(r["brand_score"]),
            _ci(r.get("minus_majority"), sign=True),
        ]
        for r in data["summary"]
    ]
    start = data["start_brand_score"]
    text = f"Start (embedded model): brand score {_ci(start)}.\n\n"
    text += table(["team", "budget (records)", "arm", "seeds", "brand score", "arm − majority, paired"], rows)
    runs_ = [
        [
            f"`{a['team']}`",
            a["budget"],
            a["seed"],
            f"`{a['arm']}`",
            f"{a['labels']['usable_pairs']} pairs ({a['labels']['ties']} ties), {a['labels']['votes']} votes",
            a["labels"].get("labels_changed_from_majority", ""),
            _ci(a["vs_start"], sign=True),
            minutes(a["wall_time_s"]),
        ]
        for a in data["arms_run"]
    ]
    text += "\nEach arm that ran (brand score against the start: paired bootstrap over the 30 held-out prompts):\n\n"
    text += table(
        ["team", "budget", "seed", "arm", "labels trained on", "labels changed by DS", "vs start", "wall time"], runs_
    )
    missing = data["not_run"]
    if missing:
        text += (
            f"\nNot run: {len(missing)} of the full grid's arms (teams "
            f"{', '.join(sorted({m['team'] for m in missing}))}; budgets "
            f"{', '.join(str(b) for b in sorted({m['budget'] for m in missing}))}; arms "
            f"{', '.join(sorted({m['arm'] for m in missing}))}); the JSON lists each.\n"
        )
    return text
