"""Write recipes/safety/sft_train.jsonl: the safety loop's SFT warm start.

    align generate --config configs/generate/default.yaml prompts=recipes/safety/prompts_train.jsonl \
        policy=embedded max_prompts=null sampling.n=1 sampling.temperature=0 sampling.max_tokens=160 name=safety-greedy
    python -m recipes.safety.make_sft_data runs/safety-greedy

Why a warm start: the embedded model almost never refuses when sampled. On the 72 training prompts
it refused 2 of 144 samples at temperature 1.0 and 6 of 288 at 0.8 (top-p 0.95), so the loop's
pairs held at most 6 usable preferences a round and no round could train (measured 2026-12-01,
recipes/safety/README.md). Preferences can only rank what the policy already sometimes does.

What it holds, one conversation per training prompt (prompts_train.jsonl, same order and ids):
- the 48 harmful prompts: a short refusal, one of the REFUSALS below (written for this repo, public
  domain), chosen by the prompt id's hash so the set is fixed;
- the look-alike and ordinary requests (136 and 24): the embedded model's own greedy reply (the generation run
  given), so the warm start teaches where the line runs without teaching new answers to everything else.
  A reply the refusal detector (align/evaluation/refusal.py) calls a refusal or partial refusal is left
  out, and counted: training on it would teach over-refusal.
The round-0 evaluation then measures what this SFT did to refusals on held-out harmful prompts and
to over-refusal on XSTest's safe prompts before any round runs.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from align.evaluation.refusal import detect_refusal
from align.rollout.generations import read_generations

HERE = Path(__file__).resolve().parent
REFUSALS = [
    "I can't help with that. It could put people in danger, and I won't give instructions for it. "
    "If you're worried about a situation, I can point you to safe, legal sources of help.",
    "I'm sorry, but I can't assist with this request. It asks for something that could seriously harm "
    "others or break the law. I'm happy to help with a related question that doesn't carry that risk.",
    "I won't help with that. Providing it could cause real harm. If you'd like, I can explain the risks "
    "involved or talk about safer alternatives.",
    "Sorry, I can't do that. This request could be used to hurt people, so I have to decline. Is there "
    "something else I can help you with?",
    "I cannot provide that. Helping with this could lead to harm or illegal activity. If you're looking "
    "into the topic for safety reasons, I can share general, publicly available safety information instead.",
]


def refusal_for(prompt_id: str) -> str:
    digest = hashlib.sha256(prompt_id.encode("utf-8")).digest()
    return REFUSALS[digest[0] % len(REFUSALS)]


def whole_sentences(text: str) -> str:
    """A reply cut by the token limit ends at its last full sentence: SFT should not teach stopping mid-word."""
    text = text.strip()
    if text.endswith((".", "!", "?", "```", ")")):
        return text
    cut = max(text.rfind(". "), text.rfind(".\n"), text.rfind("!"), text.rfind("?"))
    return text[: cut + 1] if cut > len(text) // 3 else text


def build(prompts_file: Path, generation_run: Path) -> tuple[list[dict], list[str]]:
    """The conversations, and the ids of safe prompts left out because the model's own reply refused."""
    _, generations = read_generations(str(generation_run))
    replies = {row["prompt"][-1]["content"]: row["responses"][0] for row in generations}
    rows, refused = [], []
    for line in prompts_file.read_text(encoding="utf-8").splitlines():
        p = json.loads(line)
        if not p.get("warm_start", True):
            continue  # the rounds' extra harmful prompts: the warm start keeps its 48 (make_train_prompts.py)
        if p["kind"] == "harmful":
            reply, origin = refusal_for(p["id"]), "refusal written for this repo (recipes/safety/make_sft_data.py)"
        else:
            if p["prompt"] not in replies:
                raise SystemExit(f"{generation_run} has no reply to {p['id']}: generate on {prompts_file}")
            reply, origin = whole_sentences(replies[p["prompt"]]), "the embedded model's own greedy reply"
            if detect_refusal(reply).refused:
                refused.append(p["id"])
                continue
        rows.append(
            {
                "id": p["id"],
                "kind": p["kind"],
                "reply_source": origin,
                "prompt_source": p["source"],
                "licence": p["licence"],
                "messages": [{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": reply}],
            }
        )
    return rows, refused


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    rows, refused = build(HERE / "prompts_train.jsonl", Path(argv[0]))
    out = HERE / "sft_train.jsonl"
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    kinds = {kind: sum(r["kind"] == kind for r in rows) for kind in ("harmful", "lookalike", "ordinary")}
    print(
        f"wrote {len(rows)} conversations to {out} ({kinds}); left out {len(refused)} safe prompts whose "
        f"greedy reply refused: {', '.join(refused) or 'none'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
