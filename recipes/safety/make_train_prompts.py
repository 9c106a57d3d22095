"""Write recipes/safety/prompts_train.jsonl: the prompts the safety loop generates candidates for.

    python -m recipes.safety.make_train_prompts

48 harmful prompts sampled (seed 0) from the *train* side of the harmful split that
configs/evaluate/policy.yaml evaluates on the *eval* side (AdvBench, HarmBench: MIT; Do-Not-Answer:
Apache-2.0), and 24 ordinary requests from OpenAssistant (oasst_prompts_en_250.jsonl, Apache-2.0), so
the loop's annotators see both what to refuse and what to answer, interleaved two harmful to one
ordinary. XSTest's safe prompts stay out of training: they are the over-refusal gate. Each line keeps
its source (file:line) and licence.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from align.evaluation.prompt_sets import PromptSetConfig, load_prompt_set

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LICENCES = {"advbench": "MIT", "harmbench": "MIT", "donotanswer": "Apache-2.0", "oasst": "Apache-2.0"}


def main() -> None:
    policy = yaml.safe_load((ROOT / "configs/evaluate/policy.yaml").read_text())
    harmful_cfg = {**policy["harmful"], "split": "train", "max_prompts": 48, "sample_seed": 0}
    harmful = load_prompt_set("harmful", PromptSetConfig(**harmful_cfg))
    ordinary = load_prompt_set("ordinary", PromptSetConfig(
        paths=["../shared/data/instructions/oasst_prompts_en_250.jsonl"], max_prompts=24, sample_seed=0))
    rows = []
    for i in range(24):
        for kind, prompt in (("harmful", harmful[2 * i]), ("harmful", harmful[2 * i + 1]), ("ordinary", ordinary[i])):
            source = prompt.source.split("shared/data/")[-1]
            licence = next(v for k, v in LICENCES.items() if k in source)
            rows.append({"id": f"safety-train-{len(rows) + 1:02d}", "kind": kind,
                         "prompt": prompt.messages[-1]["content"], "source": source, "licence": licence})
    out = HERE / "prompts_train.jsonl"
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} prompts to {out}")


if __name__ == "__main__":
    main()
