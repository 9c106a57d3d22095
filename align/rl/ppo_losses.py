"""PPO's math for RLHF, as tensors in and tensors out (no models here).

Shapes: `[batch, response_tokens]` with a 0/1 `mask` marking real response tokens (right padded);
`scores` is `[batch]`, one reward-model score per response. Follows Huang et al. 2024, "The N+
implementation details of RLHF with PPO":

- the per-token reward is -kl_coef * (log p - log p_ref) (the k1 estimator) on every response
  token, and the reward-model score is added on the last one;
- a response that does not end with EOS has `missing_eos_penalty` subtracted from its score (TRL's
  rule; Huang et al. replace the score by a constant instead);
- advantages by GAE over the response tokens, whitened over the batch (mean shifted); returns are
  advantages + values, not whitened;
- clipped policy loss, and a clipped value loss 0.5 * max((V - R)^2, (V_clip - R)^2).
"""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the masked entries; padding stays 0. Unbiased variance, as Huang et al."""
    mean = masked_mean(values, mask)
    centred = (values - mean) * mask
    count = mask.sum()
    variance = (centred**2).sum() / (count - 1).clamp(min=1)
    out = centred * torch.rsqrt(variance + 1e-8)
    if not shift_mean:
        out = out + mean * mask
    return out * mask


def penalise_missing_eos(scores: torch.Tensor, ended_with_eos: torch.Tensor, penalty: float) -> torch.Tensor:
    """Subtract `penalty` from the score of every response cut off before its end-of-turn token."""
    return scores - penalty * (~ended_with_eos.bool()).to(scores.dtype)


def kl_shaped_rewards(scores, logprobs, ref_logprobs, mask, kl_coef: float):
    """Per-token rewards -kl_coef * (log p - log p_ref), plus `scores` on each response's last token.

    Returns (rewards, kl), both `[batch, tokens]` and zero on padding.
    """
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)
    rewards = rewards.clone()
    rewards[torch.arange(len(scores), device=scores.device), last] += scores * (mask.sum(dim=1) > 0).to(scores.dtype)
    return rewards, kl


def gae(rewards, values, mask, gamma: float, lam: float):
    """Generalised advantage estimation over each response; the value after the last token is 0.

    delta_t = r_t + gamma * V_{t+1} - V_t,  A_t = delta_t + gamma * lam * A_{t+1}; returns = A + V.
    """
    rewards = rewards * mask
    values = values * mask
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


def policy_loss(logprobs, old_logprobs, advantages, mask, clip_range: float):
    """Clipped surrogate: mean over tokens of max(-A * r, -A * clip(r, 1 - eps, 1 + eps)).

    Returns (loss, clip_fraction, approx_kl), where approx_kl is 0.5 * mean((log r)^2).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = 0.5 * masked_mean(log_ratio**2, mask)
    return loss, clip_fraction.detach(), approx_kl.detach()


def value_loss(values, old_values, returns, mask, clip_range_value: float):
    """0.5 * mean over tokens of max((V - R)^2, (V_clip - R)^2), V_clip = old V +- clip_range_value.

    Returns (loss, clip_fraction).
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).float(), mask).detach()


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each position's next-token distribution, `[batch, tokens]`."""
    log_p = torch.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under `logits` (same leading shape), without materialising all log-probs twice."""
    return torch.gather(torch.log_softmax(logits, dim=-1), -1, tokens.unsqueeze(-1)).squeeze(-1)
