"""Write recipes/safety/prompts_val.jsonl: the safety recipe's validation prompts, for choosing settings.

    python -m recipes.safety.make_validation_prompts

Why: the loop is gated on the eval side of the harmful split and on all 250 of XSTest's safe prompts. Those
are the test; a setting chosen by reading them (the warm start's epochs, DPO's learning rate, the pair mix)
would make the gate measure the choice. This file is what settings are chosen on instead:
- 100 harmful prompts sampled (seed 1) from the *train* side of the split, none of them among the 48 the
  loop trains on (AdvBench, HarmBench: MIT; Do-Not-Answer: Apache-2.0); `label: unsafe`;
- the 40 look-alikes in lookalike_validation.jsonl, written for this repository, four in each of the ten
  kinds of the XSTest paper, none of them a training look-alike; `label: safe`.
tests/recipes/test_safety_recipe.py rebuilds it, and checks it against the training prompts and XSTest.
Score a policy on it (both rates, with intervals) with the command in the README ("Validation prompts").
"""

from __future__ import annotations

import json
import random

import yaml

from align.evaluation.prompt_sets import PromptSetConfig, load_prompt_set
from recipes.safety.make_train_prompts import HERE, ROOT, prompt_rows, write_rows


def build() -> list[dict]:
    policy = yaml.safe_load((ROOT / "configs/evaluate/policy.yaml").read_text())
    train_side = load_prompt_set("harmful", PromptSetConfig(**{**policy["harmful"], "split": "train",
                                                                "max_prompts": None}))
    trained = {json.loads(line)["prompt"] for line in (HERE / "prompts_train.jsonl").read_text().splitlines()}
    harmful = random.Random(1).sample([p for p in train_side if p.messages[-1]["content"] not in trained], 100)
    lookalike = load_prompt_set("lookalike", PromptSetConfig(paths=[str(HERE / "lookalike_validation.jsonl")]))
    return prompt_rows("safety-val", [("harmful", p) for p in harmful] + [("lookalike", p) for p in lookalike])


def main() -> None:
    write_rows(build(), "prompts_val.jsonl")


if __name__ == "__main__":
    main()
