"""How a simulated annotator (`align annotate simulate`) decides: a judge scores the two replies it
is shown, then seeded draws decide whether it discards, follows a position bias or flips the judge's
choice (the rules are in align/annotate/simulate.py's docstring, the command's `--help`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from align.core.errors import AlignError

if TYPE_CHECKING:
    from align.annotate.simulate import Annotator, Config

Score = Callable[[list[dict[str, Any]], list[tuple[str, str]]], list[tuple[float, float] | None]]
"""A judge: (prompts, [(shown A, shown B)]) -> [(score A, score B), or None where it cannot judge]."""


def last_user_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content", "") for m in prompt or [] if isinstance(m, dict) and m.get("role") == "user"]
    return users[-1] if users else ""


def make_judge(cfg: Config) -> Score:
    """A function scoring a page of records: (prompts, [(shown A, shown B)]) -> [(score A, score B) or None]."""
    if cfg.judge == "brand_voice":
        from align.evaluation.brand_voice import BrandRubric

        rubric = BrandRubric.load(cfg.rubric)

        def brand(prompts, shown):
            return [
                (rubric.judge(last_user_text(p), a).score, rubric.judge(last_user_text(p), b).score)
                for p, (a, b) in zip(prompts, shown)
            ]

        return brand
    if cfg.judge == "safety":
        from align.evaluation.prompt_sets import load_prompt_set
        from align.evaluation.refusal import detect_refusal

        kinds: dict[str, str] = {}
        for kind, set_cfg in (("harmful", cfg.harmful), ("safe", cfg.safe)):
            if set_cfg.paths:
                for prompt in load_prompt_set(kind, set_cfg):
                    text = _key(last_user_text(prompt.messages))
                    if kinds.get(text, kind) != kind:
                        raise AlignError(
                            f"prompt {prompt.source} is in both the harmful and the safe set; "
                            "fix harmful.match / safe.match"
                        )
                    kinds[text] = kind

        def safety(prompts, shown):
            out = []
            for p, pair in zip(prompts, shown):
                kind = kinds.get(_key(last_user_text(p)))
                if kind is None:
                    out.append(None)
                    continue
                want_refusal = kind == "harmful"
                out.append(tuple(float(detect_refusal(reply).refused == want_refusal) for reply in pair))
            return out

        return safety
    if cfg.judge == "reward_model":
        from align.models import load_reward_model, load_tokenizer, resolve_model
        from align.scoring import reward_scores

        source = resolve_model(cfg.reward_model)
        if source.task != "reward":
            raise AlignError(
                f"reward_model {cfg.reward_model} is a {source.task} model, not a reward model; "
                "give a run of `align reward`"
            )
        tokenizer = load_tokenizer(source)
        model = load_reward_model(source, "float32", pad_token_id=tokenizer.pad_token_id)

        def reward(prompts, shown):
            conversations = [
                _messages(p) + [{"role": "assistant", "content": reply.strip()}]
                for p, pair in zip(prompts, shown)
                for reply in pair
            ]
            scores = reward_scores(model, tokenizer, conversations, 8, cfg.reward_max_length, "simulated judge")
            return [(scores[2 * i], scores[2 * i + 1]) for i in range(len(shown))]

        return reward
    raise AlignError(f"unknown judge '{cfg.judge}': one of brand_voice, safety, reward_model")


def prompt_key(prompt: Any) -> str:
    """A prompt's identity for judging: its last user message, whitespace and case folded."""
    return _key(last_user_text(prompt))


def _key(text: str) -> str:
    return " ".join(text.split()).lower()


def _messages(prompt: Any) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def choose(annotator: Annotator, cfg: Config, rid: str, scores: tuple[float, float]) -> dict[str, Any]:
    """What this annotator answers on this record: {status, values} as POSTed to Argilla.

    All four random draws are made every time, in a fixed order, so changing one probability does
    not reshuffle the others' outcomes.
    """
    noise = cfg.noise if annotator.noise is None else annotator.noise
    bias_a = cfg.bias_a if annotator.bias_a is None else annotator.bias_a
    discard = cfg.discard if annotator.discard is None else annotator.discard
    seed = hashlib.sha256(f"{cfg.seed}:{annotator.username}:{rid}".encode()).digest()
    rng = random.Random(int.from_bytes(seed[:8], "big"))
    u_discard, u_bias, u_noise, u_coin = (rng.random() for _ in range(4))
    if u_discard < discard:
        return {"status": "discarded", "values": {}}
    score_a, score_b = scores
    gap = abs(score_a - score_b)
    judged = "tie" if gap < cfg.tie_margin else ("A" if score_a > score_b else "B")
    if u_bias < bias_a:
        label = "A"
    elif u_noise < noise:
        label = {"A": "B", "B": "A"}.get(judged) or ("A" if u_coin < 0.5 else "B")
    else:
        label = judged
    values: dict[str, Any] = {
        "preference": {"value": label},
        "reason": {"value": f"simulated ({cfg.judge}): A {score_a:.3g}, B {score_b:.3g}"},
    }
    if label != "tie":
        strength = 1 if label != judged else 1 + (gap >= cfg.strength_gaps[0]) + (gap >= cfg.strength_gaps[1])
        values["strength"] = {"value": strength}
    return {"status": "submitted", "values": values}
