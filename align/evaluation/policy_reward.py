"""Policy vs reference, judged by a reward model: the reward-model view of what training changed.

Both answer the same held-out prompts greedily (deterministic, so the comparison is about the
weights, not sampling luck); the reward model scores each reply with its training formatting.
Reported: mean reward of each, mean gain, and the policy's win rate (ties count half). With
`replies_path` the replies and their scores are written there too (one JSON line per prompt), so what
the reward model preferred can be read, not only its mean.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from align.evaluation.bootstrap import bootstrap_paired_difference
from align.models import ModelSource, load_reward_model, load_tokenizer
from align.scoring import pairwise_metrics, reward_scores

log = logging.getLogger(__name__)

HELD_OUT_REPLIES = "held_out_replies.jsonl"
REPLY_FIELDS = ("prompt", "policy", "reference", "policy_reward", "reference_reward")


def compare_with_reward_model(
    policy,
    tokenizer,
    reward_source: ModelSource,
    prompts: list,
    settings,
    dtype: str,
    max_length: int,
    disable_adapter: bool,
    reference=None,
    replies_path: Path | None = None,
    attn_implementation: str = "auto",
) -> dict[str, Any]:
    """The policy's and the reference's greedy replies, scored by the reward model (placed on this process's
    device, where the stage's policy is)."""
    policy_replies = greedy_replies(policy, tokenizer, prompts, settings.max_new_tokens, settings.batch_size)
    ctx = policy.disable_adapter() if disable_adapter else contextlib.nullcontext()
    with ctx:
        reference_replies = greedy_replies(
            reference if reference is not None else policy,
            tokenizer,
            prompts,
            settings.max_new_tokens,
            settings.batch_size,
        )
    reward_tokenizer = load_tokenizer(reward_source)
    reward_model = load_reward_model(
        reward_source,
        dtype,
        pad_token_id=reward_tokenizer.pad_token_id,
        attn_implementation=attn_implementation,
        place=True,
    )
    convo = lambda p, r: p + [{"role": "assistant", "content": r}]  # noqa: E731
    policy_scores = reward_scores(
        reward_model,
        reward_tokenizer,
        [convo(p, r) for p, r in zip(prompts, policy_replies)],
        settings.batch_size,
        max_length,
        "scoring policy replies",
    )
    reference_scores = reward_scores(
        reward_model,
        reward_tokenizer,
        [convo(p, r) for p, r in zip(prompts, reference_replies)],
        settings.batch_size,
        max_length,
        "scoring reference replies",
    )
    if replies_path is not None:
        with open(replies_path, "w", encoding="utf-8") as f:
            for row in zip(prompts, policy_replies, reference_replies, policy_scores, reference_scores):
                f.write(json.dumps(dict(zip(REPLY_FIELDS, row)), ensure_ascii=False) + "\n")
    vs = pairwise_metrics(policy_scores, reference_scores)
    n = len(prompts)
    result = {
        "rm_eval_prompts": n,
        "rm_policy_mean_reward": sum(policy_scores) / n,
        "rm_reference_mean_reward": sum(reference_scores) / n,
        "rm_mean_gain": vs["mean_margin"],
        "rm_policy_win_rate": vs["accuracy"],
    }
    if n > 1:
        # Paired by prompt: is the gain more than which prompts happened to be held out?
        gain = bootstrap_paired_difference(policy_scores, reference_scores)
        result.update(rm_mean_gain_ci_low=gain.ci_low, rm_mean_gain_ci_high=gain.ci_high)
    log.info(
        "reward model on %d held-out prompts: policy %.3f vs reference %.3f (gain %+.3f [%s], win rate %.2f)",
        n,
        result["rm_policy_mean_reward"],
        result["rm_reference_mean_reward"],
        result["rm_mean_gain"],
        f"{result['rm_mean_gain_ci_low']:+.3f}, {result['rm_mean_gain_ci_high']:+.3f}" if n > 1 else "n=1",
        result["rm_policy_win_rate"],
    )
    return result


def replies_output(run_dir) -> Path | None:
    """Where a stage's held-out replies go, named as an output of its run (main process only: one writer)."""
    if not run_dir.is_main:
        return None
    run_dir.add_output("held_out_replies", HELD_OUT_REPLIES)
    return Path(run_dir.path) / HELD_OUT_REPLIES


def greedy_replies(model, tokenizer, prompts: list, max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy replies of an in-memory policy through the hf rollout engine."""
    from align.rollout import SamplingSettings, encode_prompts
    from align.rollout.hf_engine import HFEngine

    engine = HFEngine(None, tokenizer, batch_size=batch_size, model=model)
    greedy = SamplingSettings(n=1, temperature=0.0, max_tokens=max_new_tokens)
    return [c[0].text.strip() for c in engine.generate(encode_prompts(tokenizer, prompts), greedy)]
