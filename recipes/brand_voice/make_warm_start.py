"""Write recipes/brand_voice/sft_warm_start.jsonl: the brand loop's SFT warm start, voice and safety together.

    .venv/bin/python recipes/brand_voice/make_warm_start.py

A warm start on the 30 hand-written customer replies alone (sft_train.jsonl) taught the embedded model to help
with everything: harmful-request refusal fell from 0.15 to 0 (README). So the warm start also holds:

- refusals in the brand's own voice for harmful requests: a greeting, "I'm sorry, but we can't help with
  that", what we can do instead, and the team's sign-off. Prompts from recipes/safety's TRAIN side only
  (prompts_train.jsonl, kind harmful; the evaluation's harmful prompts are the other side of the same
  content-hash split, and XSTest is never trained on);
- answers to requests that only look harmful ("how do I kill a Python process"), so refusing is not learnt
  as the answer to every scary word (recipes/safety: a refusal-only warm start refused 0.67 of XSTest's
  safe prompts). The answers are the embedded model's own greedy replies from recipes/safety/sft_train.jsonl
  (made by recipes/safety/make_sft_data.py), put between the brand's greeting and sign-off.

The first HARMFUL harmful and LOOKALIKE look-alike prompts in file order are taken (look-alike replies that loop
on a few words are skipped). The output is sft_train.jsonl's 30 rows, then the safety rows, each with `kind` and
`prompt_source`.

How many of each was chosen on validation prompts only (tune_warm_start.py, 2026-12-06,
benchmarks/results/brand_voice_warm_start_tuning.json): the first version, 16 refusals and 16 look-alike
answers, refused 0.15 of XSTest's safe prompts in the loop (the base: 0.03) and was held back. 8 refusals and 48
look-alike answers, 2 epochs at 5e-4, refused 0.42 of the 100 validation harmful prompts (the base: 0.15;
paired difference +0.27 [+0.17, +0.37]) and 0.014 of 70 validation look-alikes (the base: 0; +0.014).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BRAND = HERE / "sft_train.jsonl"
SAFETY_PROMPTS = ROOT / "recipes" / "safety" / "prompts_train.jsonl"
SAFETY_SFT = ROOT / "recipes" / "safety" / "sft_train.jsonl"
OUT = HERE / "sft_warm_start.jsonl"
HARMFUL = 8
LOOKALIKE = 48
GREETINGS = ("Hi there,", "Hello,", "Hi,", "Hey there,")
SIGN_OFF = "— The Kettle & Crumb team"
# Why we decline and what we can do instead, varied so no one sentence becomes the policy's only refusal.
REASONS = (
    "It could put people at risk, and that is not something we will take part in.",
    "It could hurt someone, so we will not give instructions for it.",
    "It could be used to cause real harm, and we want no part in that.",
    "It is not safe or legal, so we will not walk anyone through it.",
)
INSTEAD = (
    "If you are worried about someone's safety, please contact your local emergency services. We are happy to "
    "help with anything about your coffee, your subscription or your brewing gear.",
    "If something has gone wrong, a local support service or the police can help. For anything about your order "
    "or your beans, just reply and we will sort it out.",
    "If you need help, trusted local services are the right place to start. We are always here for questions "
    "about deliveries, billing or brewing.",
    "If this is about staying safe, please talk to someone you trust or a local helpline. Anything about your "
    "coffee, we are glad to help with.",
)


def brand_refusal(i: int) -> str:
    return (
        f"{GREETINGS[i % len(GREETINGS)]}\n\nI'm sorry, but we can't help with that. {REASONS[i % len(REASONS)]} "
        f"{INSTEAD[(i // len(REASONS)) % len(INSTEAD)]}\n\n{SIGN_OFF}"
    )


def repetitive(reply: str) -> bool:
    """A degenerate reply (the 135M model sometimes loops on a token): not a style to teach."""
    words = reply.split()
    return len(words) >= 20 and len(set(words)) / len(words) < 0.5


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def safety_rows(harmful: int, lookalike: int) -> list[dict]:
    prompts = [r for r in read_jsonl(SAFETY_PROMPTS) if r["kind"] == "harmful"][:harmful]
    rows = [
        {
            "id": f"kc-safety-{r['id']}",
            "kind": "harmful_refusal",
            "prompt_source": r["source"],
            "reply_source": "brand-voice refusal written for this repo (recipes/brand_voice/make_warm_start.py)",
            "licence": r["licence"],
            "messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": brand_refusal(i)}],
        }
        for i, r in enumerate(prompts)
    ]
    for i, r in enumerate(lookalike_rows()[:lookalike]):
        user, reply = r["messages"][0]["content"], r["messages"][-1]["content"].strip()
        rows.append(
            {
                "id": f"kc-safety-{r['id']}",
                "kind": "lookalike_answer",
                "prompt_source": r["prompt_source"],
                "reply_source": "the embedded model's own greedy reply (recipes/safety/sft_train.jsonl), with the "
                "brand's greeting and sign-off",
                "licence": r["licence"],
                "messages": [
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": f"{GREETINGS[i % len(GREETINGS)]}\n\n{reply}\n\n{SIGN_OFF}"},
                ],
            }
        )
    return rows


def lookalike_rows() -> list[dict]:
    """recipes/safety/sft_train.jsonl's look-alike rows (prompt and the embedded model's reply) in file order,
    degenerate replies left out: the warm start takes the first ones (tune_warm_start.py validates on the rest)."""
    return [
        r for r in read_jsonl(SAFETY_SFT) if r["kind"] == "lookalike" and not repetitive(r["messages"][-1]["content"])
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--harmful", type=int, default=HARMFUL, help="brand-voice refusals (train-side harmful prompts)"
    )
    parser.add_argument("--lookalike", type=int, default=LOOKALIKE, help="answers to look-alike prompts")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    rows = read_jsonl(BRAND) + safety_rows(args.harmful, args.lookalike)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{args.out}: {len(rows)} conversations ({len(rows) - len(read_jsonl(BRAND))} safety)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
