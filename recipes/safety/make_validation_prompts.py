"""Write recipes/safety/prompts_val.jsonl: the safety recipe's validation prompts, for choosing settings.

    python -m recipes.safety.make_validation_prompts

Why: the loop is gated on the eval side of the harmful split and on all 250 of XSTest's safe prompts. Those
are the test; a setting chosen by reading them (the warm start's epochs, DPO's learning rate, the pair mix)
would make the gate measure the choice. This file is what settings are chosen on instead:
- 100 harmful prompts sampled (seed 1) from the *train* side of the split, none of them among the 48 of
  the warm start (the loop's 88 other training harmful prompts are drawn after these, from what is left;
  AdvBench, HarmBench: MIT; Do-Not-Answer: Apache-2.0); `label: unsafe`;
- the 40 look-alikes in lookalike_validation.jsonl, written for this repository, four in each of the ten
  kinds of the XSTest paper, none of them a training look-alike; `label: safe`.
tests/recipes/test_safety_recipe.py rebuilds it, and checks it against the training prompts and XSTest.
Score a policy on it (both rates, with intervals) with the command in the README ("Validation prompts").
"""

from __future__ import annotations

from align.evaluation.prompt_sets import PromptSetConfig, load_prompt_set
from recipes.safety.make_train_prompts import HERE, harmful_train_side, prompt_rows, validation_harmful, write_rows


def build() -> list[dict]:
    harmful = validation_harmful(harmful_train_side(), harmful_train_side(max_prompts=48))
    lookalike = load_prompt_set("lookalike", PromptSetConfig(paths=[str(HERE / "lookalike_validation.jsonl")]))
    return prompt_rows("safety-val", [("harmful", p) for p in harmful] + [("lookalike", p) for p in lookalike])


def main() -> None:
    write_rows(build(), HERE / "prompts_val.jsonl")


if __name__ == "__main__":
    main()
