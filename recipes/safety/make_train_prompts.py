"""Write recipes/safety/prompts_train.jsonl: the prompts the safety loop generates candidates for.

    python -m recipes.safety.make_train_prompts

208 prompts, interleaved in proportion:
- 48 harmful prompts sampled (seed 0) from the *train* side of the harmful split that
  configs/evaluate/policy.yaml evaluates on the *eval* side (AdvBench, HarmBench: MIT; Do-Not-Answer:
  Apache-2.0); `label: unsafe`;
- the 136 safe prompts that only look harmful in lookalike_prompts.jsonl ("How do I kill it at my first job
  interview?", "How should I destroy an old hard drive?"), written for this repository in each of the ten
  kinds of prompt XSTest's paper describes; `label: safe`;
- 24 ordinary requests from OpenAssistant (oasst_prompts_en_250.jsonl, Apache-2.0); `label: safe`.
Why the look-alikes: with only harmful and ordinary requests, nothing in training shows where the line
runs, and a warm start on these refusals refused 0.67 of XSTest's safe prompts (README). XSTest itself
stays out of training, the over-refusal gate reads it; tests/recipes check that no look-alike copies one
of its prompts. Each line keeps its source (file:line) and licence.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from align.evaluation.prompt_sets import PromptSetConfig, load_prompt_set

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LICENCES = {"advbench": "MIT", "harmbench": "MIT", "donotanswer": "Apache-2.0", "oasst": "Apache-2.0",
            "lookalike": "Apache-2.0"}


def build() -> list[dict]:
    policy = yaml.safe_load((ROOT / "configs/evaluate/policy.yaml").read_text())
    harmful_cfg = {**policy["harmful"], "split": "train", "max_prompts": 48, "sample_seed": 0}
    harmful = load_prompt_set("harmful", PromptSetConfig(**harmful_cfg))
    ordinary = load_prompt_set("ordinary", PromptSetConfig(
        paths=["../shared/data/instructions/oasst_prompts_en_250.jsonl"], max_prompts=24, sample_seed=0))
    lookalike = load_prompt_set("lookalike", PromptSetConfig(paths=[str(HERE / "lookalike_prompts.jsonl")]))
    # Interleaved in proportion (each prompt at its fractional position within its kind), so any prefix of the
    # file, e.g. `max_prompts`, keeps the mix.
    kinds = {"harmful": harmful, "lookalike": lookalike, "ordinary": ordinary}
    order = sorted(((j + 0.5) / len(ps), k, ps[j]) for k, ps in kinds.items() for j in range(len(ps)))
    return prompt_rows("safety-train", [(kind, prompt) for _, kind, prompt in order])


def prompt_rows(prefix: str, prompts: list) -> list[dict]:
    """One line per (kind, prompt): numbered id, `label: unsafe` for harmful ones, source file:line and licence."""
    rows = []
    for kind, prompt in prompts:
        source = prompt.source.split("shared/data/")[-1].replace(f"{ROOT}/", "")
        licence = next(v for k, v in LICENCES.items() if k in source)
        rows.append({"id": f"{prefix}-{len(rows) + 1:03d}", "kind": kind,
                     "label": "unsafe" if kind == "harmful" else "safe",
                     "prompt": prompt.messages[-1]["content"], "source": source, "licence": licence})
    return rows


def write_rows(rows: list[dict], name: str) -> None:
    out = HERE / name
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} prompts to {out}")


def main() -> None:
    write_rows(build(), "prompts_train.jsonl")


if __name__ == "__main__":
    main()
