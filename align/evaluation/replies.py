"""Replies of a policy and their reward-model scores: the generation and scoring shared by
`align evaluate policy` and `align evaluate retention`.

Both stages answer prompt sets with a policy and a baseline, one engine load per model, keep the first
completion per prompt, time each job, and may score every reply with a reward model loaded once.
"""

from __future__ import annotations

import time

from align.models import ModelSource, load_reward_model, load_tokenizer
from align.rollout import Completion, SamplingSettings
from align.rollout.engines import EngineConfig, make_engine
from align.scoring import reward_scores

Messages = list[dict[str, str]]


def generate_replies(
    cfg: EngineConfig,
    engine_name: str,
    source: ModelSource,
    tokenizer,
    jobs: dict[str, tuple[list[list[int]], SamplingSettings]],
    seed: int,
) -> tuple[dict[str, list[Completion]], dict]:
    """Every job's first completion per prompt from one engine load, and the timing:
    `({job: [Completion per prompt]}, {"engine_load_s": s, "jobs": {job: {generation_s, new_tokens, tokens_per_s}}})`.

    `jobs`: {name: (prompt token ids, sampling)}; the engine is sized for the longest prompt plus its reply budget.
    """
    start = time.time()
    max_model_len = max((max(map(len, ids)) + sampling.max_tokens for ids, sampling in jobs.values()), default=1)
    engine = make_engine(engine_name, source, tokenizer, cfg, max_model_len, seed)
    timing: dict = {"engine_load_s": round(time.time() - start, 2), "jobs": {}}
    out = {}
    try:
        for job, (ids, sampling) in jobs.items():
            began = time.time()
            out[job] = [c[0] for c in engine.generate(ids, sampling)]
            took = time.time() - began
            tokens = sum(c.tokens for c in out[job])
            timing["jobs"][job] = {
                "generation_s": round(took, 2),
                "new_tokens": tokens,
                "tokens_per_s": round(tokens / max(took, 1e-9), 2),
            }
    finally:
        engine.close()
    return out, timing


def reward_replies(
    cfg,
    source: ModelSource,
    conversations: list[Messages],
    replies: dict[str, list[Completion]],
    batch_size: int,
    max_length: int | None,
    what: str = "replies",
) -> dict[str, list[float]]:
    """Reward-model score of each reply after its conversation, per model: {model: [score per prompt]}.

    `cfg`: the stage's model loading (dtype, trust_remote_code, attn_implementation). The reply is stripped
    of surrounding whitespace and scored as the assistant's turn, as the reward stage formats its pairs.
    """
    tokenizer = load_tokenizer(source, cfg.trust_remote_code)
    model = load_reward_model(
        source,
        cfg.dtype,
        cfg.trust_remote_code,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation=cfg.attn_implementation,
        place=True,
    )
    return {
        role: reward_scores(
            model,
            tokenizer,
            [c + [{"role": "assistant", "content": r.text.strip()}] for c, r in zip(conversations, completions)],
            batch_size,
            max_length,
            f"scoring {role} {what}",
        )
        for role, completions in replies.items()
    }
