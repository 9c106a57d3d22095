"""How far a policy has moved from its baseline on general prompts, measured on token distributions.

- `token_kl`: the mean per-token KL(policy || baseline) on the policy's own replies. At every reply
  position the two next-token distributions are compared over the whole vocabulary (the exact KL of
  that step, not the one-sample log-ratio estimate the online trainers log), then averaged over the
  reply's tokens. Replies sampled from the policy make it an estimate of the per-token KL of the
  policy's sequence distribution from the baseline's (the quantity a KL penalty bounds).
- `reply_logprob`: the mean per-token log-likelihood of given replies under a model. Applied to the
  baseline's own replies under the policy and under the baseline, its change says how much less
  likely the policy finds what the model used to say (forgetting shows as a drop).

Both need the two models to share a tokenizer (same vocabulary and ids); the stage checks that.
Reply tokens are the reply text encoded without special tokens, plus the end-of-turn token when the
reply ended on it: the tokens a reply was scored on are the ones the engine produced, up to the rare
text that tokenizes differently when re-encoded.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from align.core import device


def reply_ids(tokenizer, text: str, ended: bool, eos_id: int) -> list[int]:
    """Token ids of a generated reply, with the end-of-turn token when the reply stopped on it."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids + [eos_id] if ended else ids


def token_kl(
    policy, baseline, prompts: list[list[int]], replies: list[list[int]], batch_size: int = 4
) -> list[tuple[float, int]]:
    """Per reply: (sum over its tokens of KL(policy || baseline) at that step, number of tokens)."""
    out = []
    for p_logits, b_logits, _ in _paired_reply_logits(policy, baseline, prompts, replies, batch_size):
        p_logp, b_logp = p_logits.log_softmax(-1), b_logits.log_softmax(-1)
        kl = (p_logp.exp() * (p_logp - b_logp)).sum(-1)
        out.append((float(kl.sum()), int(kl.numel())))
    return out


def reply_logprob(
    model, prompts: list[list[int]], replies: list[list[int]], batch_size: int = 4
) -> list[tuple[float, int]]:
    """Per reply: (sum of its tokens' log-probabilities under `model`, number of tokens)."""
    out = []
    for logits, _, targets in _paired_reply_logits(model, None, prompts, replies, batch_size):
        logp = logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
        out.append((float(logp.sum()), int(logp.numel())))
    return out


def _paired_reply_logits(
    a, b, prompts, replies, batch_size
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
    """For each (prompt, reply): the logits predicting the reply's tokens under `a` (and `b`), and those tokens.

    Sequences are right-padded in batches; the logits at position t predict token t + 1, so a reply
    starting at position s is predicted by positions s - 1 ... s + len(reply) - 2.
    """
    if len(prompts) != len(replies):
        raise ValueError(f"{len(prompts)} prompts but {len(replies)} replies")
    where, where_b = device.model_device(a), device.model_device(b) if b is not None else None
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            seqs = [p + r for p, r in zip(prompts[start : start + batch_size], replies[start : start + batch_size])]
            width = max(map(len, seqs))
            ids = torch.zeros((len(seqs), width), dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for row, seq in enumerate(seqs):
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            ids, mask = ids.to(where), mask.to(where)
            la = a(input_ids=ids, attention_mask=mask).logits.float()
            # The baseline may sit on another device (two large models split over GPUs): its logits come back.
            lb = (
                b(input_ids=ids.to(where_b), attention_mask=mask.to(where_b)).logits.float().to(where)
                if b is not None
                else None
            )
            for row, k in enumerate(range(start, start + len(seqs))):
                s, n = len(prompts[k]), len(replies[k])
                if n == 0:
                    empty = la.new_zeros((0, la.shape[-1]))
                    yield empty, (empty if lb is not None else None), ids.new_zeros((0,))
                    continue
                window = slice(s - 1, s + n - 1)
                yield la[row, window], (lb[row, window] if lb is not None else None), ids[row, s : s + n]
