"""The prompts of a preference file, split the way the reward and DPO stages split it, as two prompt files.

    .venv/bin/python benchmarks/preference_prompts.py --data FILE [--format auto] [--test-fraction 0.1]
        [--seed 0] --out-dir DIR

Writes DIR/train_prompts.jsonl and DIR/test_prompts.jsonl: one `{"prompt_id", "messages"}` record per
distinct prompt (the conversation up to the reply the pair compares), in file order, split by
`align.data.preferences.training_pool` with the given `test_fraction` and `seed`. With the settings a
reward model was trained with, the test file holds exactly the prompts that reward model held out, so
`align ppo prompts=DIR/train_prompts.jsonl eval.path=DIR/test_prompts.jsonl` trains online RL on the
reward model's training-side prompts and measures it on prompts neither the reward model nor the
policy has seen (`align ppo` refuses a prompt found in both files).

Prints the counts. Any preference format `align reward` reads works; nothing is special-cased by file name.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from align.core.errors import AlignError
from align.data.preferences import PreferenceDataConfig, training_pool
from align.data.splits import prompt_key


def distinct_prompts(rows: list[dict]) -> list[dict]:
    seen: set[str] = set()
    out = []
    for row in rows:
        key = prompt_key(row["prompt"])
        if key not in seen:
            seen.add(key)
            out.append({"prompt_id": key[:16], "messages": row["prompt"]})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a preference file (any format `align reward` reads)")
    ap.add_argument("--format", default="auto")
    ap.add_argument("--test-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args()
    try:
        cfg = PreferenceDataConfig(
            train=args.data, format=args.format, test_fraction=args.test_fraction, seed=args.seed
        )
        _, train_rows, test = training_pool(cfg)
    except AlignError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train_prompts.jsonl", train_rows), ("test_prompts.jsonl", test.rows if test else [])):
        prompts = distinct_prompts(rows)
        tmp = out / (name + ".tmp")
        tmp.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in prompts))
        tmp.replace(out / name)  # no half-written prompt file
        print(f"{out / name}: {len(prompts)} prompts ({len(rows)} pairs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
