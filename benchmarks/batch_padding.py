"""How much of a reward/DPO batch is padding: TRL's random order vs align's length-grouped batches.

    .venv/bin/python benchmarks/batch_padding.py --output benchmarks/results/batch_padding.json

No training: the HH-RLHF harmless-base training split (align's 10% held-out split, seed 0) is
measured with the embedded model's chat template after align's length budget, a seeded sample of
`pairs` is drawn, and the batches each order would build are counted the way TRL's collators pad
them (chosen and rejected rows of a batch padded to its longest sequence). Forward and backward
time scales with the padded positions on this CPU (docs: ENVIRONMENT.md), so the last column is
the compute grouping saves. Mean over 5 sampler seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT / "data" / "preferences" / "hh_rlhf_harmless_base_test.jsonl.gz"
CASES = [
    (128, 8, 192, "keep_last_turns"),
    (128, 8, 192, "drop"),
    (512, 8, 192, "keep_last_turns"),
    (64, 2, 192, "keep_last_turns"),
]
SEEDS = 5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "batch_padding.json"))
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from align.data.length import within_budget
    from align.data.preferences import load_preference_pairs, sample, split_pairs
    from align.models import embedded_model_dir
    from align.scoring import conversation_ids

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    train, _ = split_pairs(load_preference_pairs(args.data, "hh-rlhf").rows, 0.1, 0)
    results = []
    for pairs, batch, max_length, long_prompts in CASES:
        kept, _ = within_budget(
            train, tokenizer, max_length, ("chosen", "rejected"), "pairs", long_prompts, record_length=True
        )
        kept = sample(kept, pairs, 0)
        lengths = [
            tuple(len(conversation_ids(tokenizer, r["prompt"] + r[p])) for p in ("chosen", "rejected")) for r in kept
        ]

        def padding(order: list[int]) -> float:
            real = positions = 0
            for start in range(0, len(order), batch):
                rows = [lengths[i] for i in order[start : start + batch]]
                real += sum(sum(r) for r in rows)
                positions += 2 * len(rows) * max(max(r) for r in rows)
            return 1 - real / positions

        shuffled = [
            padding(torch.randperm(len(kept), generator=torch.Generator().manual_seed(s)).tolist())
            for s in range(SEEDS)
        ]
        grouped = [
            padding(
                list(
                    LengthGroupedSampler(
                        batch, lengths=[max(x) for x in lengths], generator=torch.Generator().manual_seed(s)
                    )
                )
            )
            for s in range(SEEDS)
        ]
        random_pad, grouped_pad = sum(shuffled) / SEEDS, sum(grouped) / SEEDS
        results.append(
            {
                "pairs": len(kept),
                "batch": batch,
                "max_length": max_length,
                "long_prompts": long_prompts,
                "padding_random": round(random_pad, 3),
                "padding_grouped": round(grouped_pad, 3),
                "positions_random_over_grouped": round((1 - grouped_pad) / (1 - random_pad), 3),
            }
        )
        print(json.dumps(results[-1]))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"command": " ".join(["python", *sys.argv]), "data": args.data, "results": results}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
