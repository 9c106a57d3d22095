"""Simulated users' feedback on the base model's brand-voice replies: recipes/brand_voice/feedback_simulated.jsonl.

    python recipes/brand_voice/make_feedback.py            # align generate, then rate, write, validate (~3-5 min)
    python recipes/brand_voice/make_feedback.py --generations runs/<generate-run>   # rate an existing run

The shipped file rated the replies of the feedback demo's pairs round (its round-1 generate run:
`--generations runs/brand_voice-feedback-pairs/round-1/generate`), so both rounds learn from the same replies,
one from annotators' pairs, the other from users' thumbs; only the training prompts' replies are rated.

Stands in for a pilot's users, and says so: every row's `user` is a hashed simulated user id and the file's
provenance is in docs/guide/feedback.md (demo section). No real person rated anything.

1. Replies: `align generate` samples the embedded SmolLM2-135M-Instruct (the model the feedback demo's rounds
   start from) `--samples` times on each of the recipe's 30 TRAINING prompts (prompts_train.jsonl; the
   held-out prompts_eval.jsonl is never shown to users here), with the brand_voice loop's sampling
   (temperature 1.0, 160 new tokens); or `--generations` names such a run of the base model.
2. Ratings: each reply goes to one of `--users` simulated users (seeded draw). A user rates thumbs up when
   the brand rubric (recipes/brand_voice/rubric.yaml, the judge the simulated annotators use,
   align.evaluation.brand_voice) scores the reply at least `--threshold`, else thumbs down. A share of the
   users (`--random-users`) ignore the reply and rate by a coin flip, as careless users do; the rest still
   misclick one time in `1 / --slip`.
3. Flags and corrections: a share of thumbs-down replies (`--flag-share`) is flagged with the rubric rule the
   reply did worst on (what a moderator would name); a share (`--correction-share`) gets a support agent's
   corrected reply, which here is the recipe's hand-written reply to the same training prompt
   (sft_train.jsonl, matched by prompt id). These are real hand-written replies, not generated ones, but
   written once per prompt: every correction of one prompt is the same text.
4. The file is written in the documented feedback format (align/feedback/rows.py) and checked by the real
   `align feedback import --dry-run` (validation, redaction, dedupe, counts), whose summary is printed.

Everything is seeded: the same command gives the same file (vLLM's sampling is seeded per run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: `align` is the repository's package

from align.annotate.judges import last_user_text  # noqa: E402
from align.evaluation.brand_voice import BrandRubric  # noqa: E402

RECIPE = Path(__file__).resolve().parent
PROMPTS = RECIPE / "prompts_train.jsonl"
HAND_WRITTEN = RECIPE / "sft_train.jsonl"
RUBRIC = RECIPE / "rubric.yaml"
OUTPUT = RECIPE / "feedback_simulated.jsonl"
POLICY_RUN = "embedded"  # the policy that replied: the base model, the feedback demo's starting point
START = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)  # the simulated pilot's first day (three days long)
FLAG_REASONS = {
    "greeting": "no greeting",
    "plain_words": "jargon",
    "no_blame": "blames the customer",
    "team_voice": "does not speak for the team",
    "length": "too long",
    "short_sentences": "long-winded",
    "calm": "not calm",
    "complaint": "does not own the problem",
    "sign_off": "no sign-off",
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    generations = Path(args.generations) if args.generations else generate(args)
    rows = rate(read_generations(generations), args)
    write_rows(rows, Path(args.output))
    ups = sum(r["rating"] == "up" for r in rows)
    print(
        f"wrote {len(rows)} rows to {args.output}: {ups} up, {len(rows) - ups} down, "
        f"{sum('flag' in r for r in rows)} flagged, {sum('correction' in r for r in rows)} corrected "
        f"(replies from {generations})"
    )
    if not args.no_check:
        # The real import, dry: validates every row and reports redaction findings and duplicates.
        subprocess.run(
            [sys.executable, "-m", "align", "feedback", "import", str(args.output), "--dry-run"], cwd=ROOT, check=True
        )
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--generations",
        help="an `align generate` run to rate instead of generating (its policy must be "
        "the one named in policy_run: the embedded base model)",
    )
    p.add_argument("--samples", type=int, default=4, help="replies per training prompt (default 4: 120 replies)")
    p.add_argument("--seed", type=int, default=7, help="seed of the sampling and of every simulated draw")
    p.add_argument("--users", type=int, default=40, help="simulated users the replies are spread over")
    p.add_argument(
        "--threshold", type=float, default=0.6, help="rubric score from which a careful user rates up (default 0.6)"
    )
    p.add_argument("--random-users", type=float, default=0.2, help="share of users who rate by a coin flip")
    p.add_argument("--slip", type=float, default=0.05, help="chance a careful user clicks the other thumb")
    p.add_argument("--flag-share", type=float, default=0.3, help="share of thumbs-down replies flagged")
    p.add_argument(
        "--correction-share",
        type=float,
        default=0.25,
        help="share of thumbs-down replies corrected with the hand-written reply (sft_train.jsonl)",
    )
    p.add_argument("--runs-dir", default="runs", help="where the generate run goes")
    p.add_argument("--output", default=str(OUTPUT.relative_to(ROOT)), help="the feedback file written")
    p.add_argument("--no-check", action="store_true", help="skip `align feedback import --dry-run`")
    args = p.parse_args(argv)
    for name in ("random_users", "slip", "flag_share", "correction_share"):
        if not 0 <= getattr(args, name) <= 1:
            p.error(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    return args


def generate(args: argparse.Namespace) -> Path:
    """`align generate` on the training prompts with the brand_voice loop's sampling; returns the run."""
    name = f"generate-feedback-s{args.seed}"
    run = ROOT / args.runs_dir / name
    if (run / "manifest.json").exists():
        return run  # already sampled with this seed: the stage's output is the same
    cmd = [
        sys.executable,
        "-m",
        "align",
        "generate",
        "--config",
        "configs/generate/default.yaml",
        "policy=embedded",
        f"prompts={PROMPTS.relative_to(ROOT)}",
        "max_prompts=null",
        f"sampling.n={args.samples}",
        "sampling.temperature=1.0",
        "sampling.top_p=1.0",
        "sampling.max_tokens=160",
        f"sampling.seed={args.seed}",
        "vllm.enforce_eager=true",
        f"runs_dir={args.runs_dir}",
        f"name={name}",
    ]
    subprocess.run(cmd, cwd=ROOT, check=True)
    return run


def read_generations(run: Path) -> list[dict]:
    """The run's replies to the recipe's training prompts (a loop round's run also holds safety prompts: left out)."""
    manifest = json.loads((run / "manifest.json").read_text())
    if manifest["config"].get("policy") != POLICY_RUN:
        raise SystemExit(
            f"{run} sampled {manifest['config'].get('policy')!r}; the feedback file names policy_run "
            f"{POLICY_RUN!r}: give a generate run of the embedded base model"
        )
    train = {json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines() if line.strip()}
    with open(run / "generations.jsonl") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if last_user_text(r["prompt"]) in train]


def rate(generations: list[dict], args: argparse.Namespace) -> list[dict]:
    """One feedback row per reply: the rating of the simulated user it went to, maybe a flag and a correction."""
    rubric = BrandRubric.load(RUBRIC)
    hand_written = read_hand_written()
    rng = random.Random(args.seed)
    random_users = set(rng.sample(range(args.users), round(args.random_users * args.users)))
    rows = []
    for gen in generations:
        prompt = gen["prompt"]
        text = last_user_text(prompt)
        for reply in gen["responses"]:
            # Every draw is made for every reply, in one order, so changing one share does not reshuffle the rest.
            user, u_slip, u_coin, u_flag, u_fix = rng.randrange(args.users), *(rng.random() for _ in range(4))
            seconds = rng.randrange(3 * 24 * 3600)
            judged = rubric.judge(text, reply)
            liked = judged.score >= args.threshold
            if user in random_users:
                liked = u_coin < 0.5
            elif u_slip < args.slip:
                liked = not liked
            row = {
                "messages": prompt,
                "reply": reply,
                "policy_run": POLICY_RUN,
                "rating": "up" if liked else "down",
                "user": "sha256:" + hashlib.sha256(f"simulated-user-{user}".encode()).hexdigest(),
                "time": (START + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "reply_id": f"sim-{gen.get('prompt_id', len(rows))}-{len(rows)}",
            }
            if not liked and u_flag < args.flag_share:
                # The rule the reply did worst on, the first in the rubric's order among equals.
                worst = min(((rule, s) for rule, s in judged.rules.items() if s is not None), key=lambda kv: kv[1])[0]
                row["flag"] = {"reason": FLAG_REASONS.get(worst, worst)}
            if not liked and u_fix < args.correction_share and text in hand_written:
                row["correction"] = hand_written[text]
            rows.append(row)
    rows.sort(key=lambda r: r["time"])  # a log is in time order
    return rows


def read_hand_written() -> dict[str, str]:
    """The recipe's hand-written reply to each training prompt, by the prompt's text."""
    out = {}
    with open(HAND_WRITTEN) as f:
        for line in f:
            if line.strip():
                messages = json.loads(line)["messages"]
                out[last_user_text(messages)] = messages[-1]["content"]
    return out


def write_rows(rows: list[dict], path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".partial")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)  # never a half-written feedback file


if __name__ == "__main__":
    sys.exit(main())
