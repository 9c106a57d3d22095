"""Write the safety loop's training prompts: prompts_train.jsonl (the warm start's 208) and, with
`--extra-harmful 88`, prompts_rounds.jsonl (the same 208 and 88 more harmful prompts: what the rounds answer).

    python -m recipes.safety.make_train_prompts
    python -m recipes.safety.make_train_prompts --extra-harmful 88 recipes/safety/prompts_rounds.jsonl

208 prompts, interleaved in proportion:
- 48 harmful prompts sampled (seed 0) from the *train* side of the harmful split that
  configs/evaluate/policy.yaml evaluates on the *eval* side (AdvBench, HarmBench: MIT; Do-Not-Answer:
  Apache-2.0); `label: unsafe`;
- the 136 safe prompts that only look harmful in lookalike_prompts.jsonl ("How do I kill it at my first job
  interview?", "How should I destroy an old hard drive?"), written for this repository in each of the ten
  kinds of prompt XSTest's paper describes; `label: safe`;
- 24 ordinary requests from OpenAssistant (oasst_prompts_en_250.jsonl, Apache-2.0); `label: safe`.
`--extra-harmful N` appends N more harmful prompts from the same train side (seed 2), none of them a
validation prompt, marked `warm_start: false` (make_sft_data.py leaves them out). loop.yaml's rounds answer
prompts_rounds.jsonl, written with 88 (136 harmful against 136 look-alikes); the warm start is made from the
208. Why: with the 48 alone a round drew 20 pairs preferring a refusal against 35 preferring an answer, and
held-out harmful refusals fell (README, runs 9-11).
Why the look-alikes: with only harmful and ordinary requests, nothing in training shows where the line
runs, and a warm start on these refusals refused 0.67 of XSTest's safe prompts (README). XSTest itself
stays out of training, the over-refusal gate reads it; tests/recipes check that no look-alike copies one
of its prompts. Each line keeps its source (file:line) and licence.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import yaml

from align.evaluation.prompt_sets import PromptSetConfig, load_prompt_set

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LICENCES = {
    "advbench": "MIT",
    "harmbench": "MIT",
    "donotanswer": "Apache-2.0",
    "oasst": "Apache-2.0",
    "lookalike": "Apache-2.0",
}


def harmful_train_side(max_prompts: int | None = None, sample_seed: int = 0) -> list:
    """The train side of the harmful split configs/evaluate/policy.yaml evaluates on the eval side of."""
    policy = yaml.safe_load((ROOT / "configs/evaluate/policy.yaml").read_text())
    cfg = {**policy["harmful"], "split": "train", "max_prompts": max_prompts, "sample_seed": sample_seed}
    return load_prompt_set("harmful", PromptSetConfig(**cfg))


def validation_harmful(train_side: list, warm_start: list) -> list:
    """prompts_val.jsonl's 100 harmful prompts: seed 1, none of the warm start's 48."""
    taken = {p.messages[-1]["content"] for p in warm_start}
    return random.Random(1).sample([p for p in train_side if p.messages[-1]["content"] not in taken], 100)


def build(extra_harmful: int = 0) -> list[dict]:
    harmful = harmful_train_side(max_prompts=48)
    ordinary = load_prompt_set(
        "ordinary",
        PromptSetConfig(paths=["data/instructions/oasst_prompts_en_250.jsonl"], max_prompts=24, sample_seed=0),
    )
    lookalike = load_prompt_set("lookalike", PromptSetConfig(paths=[str(HERE / "lookalike_prompts.jsonl")]))
    # Interleaved in proportion (each prompt at its fractional position within its kind), so any prefix of the
    # file, e.g. `max_prompts`, keeps the mix.
    kinds = {"harmful": harmful, "lookalike": lookalike, "ordinary": ordinary}
    order = sorted(((j + 0.5) / len(ps), k, ps[j]) for k, ps in kinds.items() for j in range(len(ps)))
    rows = prompt_rows("safety-train", [(kind, prompt) for _, kind, prompt in order])
    if extra_harmful:
        # After the warm start's prompts, so a prefix of the file is still the warm start's set; drawn after the
        # validation prompts, from what is left, so the validation set stays what it was.
        train_side = harmful_train_side()
        taken = {p.messages[-1]["content"] for p in harmful + validation_harmful(train_side, harmful)}
        pool = [p for p in train_side if p.messages[-1]["content"] not in taken]
        extra = prompt_rows(
            "safety-train", [("harmful", p) for p in random.Random(2).sample(pool, extra_harmful)], start=len(rows)
        )
        rows += [{**row, "warm_start": False} for row in extra]
    return rows


def prompt_rows(prefix: str, prompts: list, start: int = 0) -> list[dict]:
    """One line per (kind, prompt): numbered id (from start + 1), `label: unsafe` for harmful ones, source
    file:line and licence."""
    rows = []
    for kind, prompt in prompts:
        # A public set's prompt is named relative to data/ (as data/README.md lists it), the recipe's own files
        # relative to the repository root: the committed prompt files keep these names.
        source = prompt.source.removeprefix("data/").replace(f"{ROOT}/", "")
        licence = next(v for k, v in LICENCES.items() if k in source)
        rows.append(
            {
                "id": f"{prefix}-{start + len(rows) + 1:03d}",
                "kind": kind,
                "label": "unsafe" if kind == "harmful" else "safe",
                "prompt": prompt.messages[-1]["content"],
                "source": source,
                "licence": licence,
            }
        )
    return rows


def write_rows(rows: list[dict], out: Path) -> None:
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} prompts to {out}")


def main(argv: list[str]) -> int:
    if not argv:
        write_rows(build(), HERE / "prompts_train.jsonl")
        return 0
    if len(argv) != 3 or argv[0] != "--extra-harmful" or not argv[1].isdigit():
        usage = "usage: python -m recipes.safety.make_train_prompts [--extra-harmful N OUT.jsonl]"
        print(f"{usage}, got: {' '.join(argv)}", file=sys.stderr)
        return 2
    write_rows(build(int(argv[1])), Path(argv[2]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
