"""PPO's math with numbers worked by hand (in the comments), plus properties that must hold."""

from __future__ import annotations

import pytest
import torch

from align.rl.ppo_losses import (
    gae,
    kl_shaped_rewards,
    penalise_missing_eos,
    policy_loss,
    value_loss,
    whiten,
)


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_gae_by_hand():
    # gamma 1, lam 0.5, rewards (0, 0, 1), values (0.5, 0.5, 0.5), value after the end 0:
    # t=2: delta = 1 + 0 - 0.5 = 0.5               A2 = 0.5
    # t=1: delta = 0 + 0.5 - 0.5 = 0              A1 = 0 + 0.5 * 0.5 = 0.25
    # t=0: delta = 0                              A0 = 0.5 * 0.25 = 0.125
    # returns = A + V = (0.625, 0.75, 1.0)
    adv, ret = gae(t([[0, 0, 1]]), t([[0.5, 0.5, 0.5]]), t([[1, 1, 1]]), gamma=1.0, lam=0.5)
    assert torch.allclose(adv, t([[0.125, 0.25, 0.5]]))
    assert torch.allclose(ret, t([[0.625, 0.75, 1.0]]))


def test_gae_discounts():
    # gamma 0.9, lam 1, rewards (0, 3), values (1, 2):
    # t=1: delta = 3 - 2 = 1                      A1 = 1
    # t=0: delta = 0 + 0.9 * 2 - 1 = 0.8          A0 = 0.8 + 0.9 * 1 = 1.7  (= 0.9 * 3 - V0, as lam=1 must give)
    adv, ret = gae(t([[0, 3]]), t([[1, 2]]), t([[1, 1]]), gamma=0.9, lam=1.0)
    assert torch.allclose(adv, t([[1.7, 1.0]]))
    assert torch.allclose(ret, t([[2.7, 3.0]]))


def test_gae_ignores_padding_after_the_response():
    # mask (1, 1, 0): the padded reward 5 and value 9 must not leak in. gamma = lam = 1:
    # t=1: delta = 2 + 0 - 1 = 1 -> A1 = 1;  t=0: delta = 0 + 1 - 1 = 0 -> A0 = 0 + 1 = 1; returns (2, 2, 0)
    adv, ret = gae(t([[0, 2, 5]]), t([[1, 1, 9]]), t([[1, 1, 0]]), gamma=1.0, lam=1.0)
    assert torch.allclose(adv, t([[1, 1, 0]]))
    assert torch.allclose(ret, t([[2, 2, 0]]))


def test_kl_shaped_reward_by_hand():
    # Row 0: kl = logp - logp_ref = (-1+1.5, -2+1, -0.5+0.5) = (0.5, -1, 0); kl_coef 0.1 -> (-0.05, 0.1, 0);
    #        score 2 on the last token -> (-0.05, 0.1, 2.0)
    # Row 1: mask (1, 1, 0): kl = (1, 0, [pad]) -> (-0.1, 0, 0), score -1 on token 1 -> (-0.1, -1, 0)
    logp = t([[-1, -2, -0.5], [-1, -1, -3]])
    ref = t([[-1.5, -1, -0.5], [-2, -1, -1]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    rewards, kl = kl_shaped_rewards(t([2.0, -1.0]), logp, ref, mask, kl_coef=0.1)
    assert torch.allclose(kl, t([[0.5, -1, 0], [1, 0, 0]]))
    assert torch.allclose(rewards, t([[-0.05, 0.1, 2.0], [-0.1, -1.0, 0.0]]))


def test_missing_eos_penalty_only_hits_cut_responses():
    # scores (1, 2), the second response never ended; penalty 1.5 -> (1, 0.5)
    out = penalise_missing_eos(t([1.0, 2.0]), torch.tensor([True, False]), 1.5)
    assert torch.allclose(out, t([1.0, 0.5]))


def test_policy_loss_clips_by_hand():
    # clip 0.2. Token 0: ratio 1.5, A=+1: -A*r = -1.5, -A*clip = -1.2 -> max -1.2 (clipped)
    #           Token 1: ratio 0.5, A=-1: -A*r = 0.5,  -A*clip = 0.8  -> max 0.8  (clipped)
    # loss = (-1.2 + 0.8) / 2 = -0.2, clip fraction 1
    logp = torch.log(t([[1.5, 0.5]]))
    loss, clip_fraction, _ = policy_loss(logp, t([[0, 0]]), t([[1, -1]]), t([[1, 1]]), clip_range=0.2)
    assert loss.item() == pytest.approx(-0.2)
    assert clip_fraction.item() == 1.0
    # Token 0: ratio 1.1 inside the range: -1.1 both ways. Token 1: ratio 0.5, A=+1: -0.5 vs -0.8 ->
    # max -0.5, the unclipped (pessimistic) term. loss = (-1.1 - 0.5) / 2 = -0.8, clip fraction 0
    logp = torch.log(t([[1.1, 0.5]]))
    loss, clip_fraction, _ = policy_loss(logp, t([[0, 0]]), t([[1, 1]]), t([[1, 1]]), clip_range=0.2)
    assert loss.item() == pytest.approx(-0.8)
    assert clip_fraction.item() == 0.0


def test_value_loss_clips_by_hand():
    # clip 0.2. Token 0: V 2, old 1, R 1.5: V_clip = 1.2; (2-1.5)^2 = 0.25 vs (1.2-1.5)^2 = 0.09 -> 0.25
    #           Token 1: V 0, old 0, R 1: both 1 -> 1 (not clipped)
    # loss = 0.5 * (0.25 + 1) / 2 = 0.3125
    loss, clip_fraction = value_loss(t([[2.0, 0.0]]), t([[1.0, 0.0]]), t([[1.5, 1.0]]), t([[1, 1]]), 0.2)
    assert loss.item() == pytest.approx(0.3125)
    assert clip_fraction.item() == 0.0
    # V 1.1, old 1.0, R 2.0, clip 0.05: V_clip = 1.05; (1.1-2)^2 = 0.81 vs (1.05-2)^2 = 0.9025 -> 0.9025
    # loss = 0.5 * 0.9025 = 0.45125, clipped
    loss, clip_fraction = value_loss(t([[1.1]]), t([[1.0]]), t([[2.0]]), t([[1]]), 0.05)
    assert loss.item() == pytest.approx(0.45125)
    assert clip_fraction.item() == 1.0


def test_whiten_by_hand_leaves_padding_zero():
    # (1, 2, 3) + padding 100: mean 2, unbiased variance ((-1)^2 + 0 + 1^2) / 2 = 1 -> (-1, 0, 1, 0)
    out = whiten(t([[1, 2, 3, 100]]), t([[1, 1, 1, 0]]))
    assert torch.allclose(out, t([[-1, 0, 1, 0]]), atol=1e-4)


# -- properties ------------------------------------------------------------------------------------


def test_constant_reward_zero_values_gives_that_reward_as_every_advantage():
    # gamma = lam = 1, V = 0: each token's advantage is the sum of rewards still to come = the final score.
    torch.manual_seed(0)
    mask = t([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    rewards, _ = kl_shaped_rewards(t([3.0, -2.0]), torch.zeros(2, 5), torch.zeros(2, 5), mask, kl_coef=0.5)
    adv, ret = gae(rewards, torch.zeros(2, 5), mask, gamma=1.0, lam=1.0)
    assert torch.allclose(adv, t([[3.0] * 5, [-2.0] * 3 + [0, 0]]))
    assert torch.allclose(ret, adv)


def test_clip_inactive_at_ratio_one_and_loss_is_minus_mean_advantage():
    torch.manual_seed(0)
    logp = torch.randn(3, 4)
    adv = torch.randn(3, 4)
    mask = t([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    loss, clip_fraction, approx_kl = policy_loss(logp, logp.clone(), adv, mask, clip_range=0.1)
    assert clip_fraction.item() == 0.0 and approx_kl.item() == 0.0
    assert loss.item() == pytest.approx(-(adv * mask).sum().item() / mask.sum().item(), abs=1e-6)


def test_clipped_policy_loss_stops_the_gradient_beyond_the_range():
    # A positive advantage with the ratio already above 1 + eps: no incentive to push it further.
    logp = torch.log(t([[1.5]])).requires_grad_(True)
    loss, _, _ = policy_loss(logp, t([[0.0]]), t([[1.0]]), t([[1]]), clip_range=0.2)
    loss.backward()
    assert logp.grad.abs().item() == 0.0


def test_kl_penalty_is_zero_when_policy_equals_reference():
    logp = torch.randn(2, 3)
    rewards, kl = kl_shaped_rewards(t([0.0, 0.0]), logp, logp.clone(), torch.ones(2, 3), kl_coef=0.2)
    assert torch.count_nonzero(kl) == 0 and torch.count_nonzero(rewards) == 0
