import math

import pytest
import torch

from posttrain.rl.losses import (
    bradley_terry_loss,
    entropy_bonus,
    explained_variance,
    ppo_policy_loss,
    value_loss,
)


def test_ppo_policy_loss_by_hand():
    # clip_eps = 0.2, so the ratio is clipped to [0.8, 1.2].
    # Per token, loss = max(-A r, -A clip(r)):
    #   r = 1.5, A = +1: max(-1.5, -1.2) = -1.2  clipped: no credit for moving past 1.2
    #   r = 0.5, A = +1: max(-0.5, -0.8) = -0.5  unclipped: the pessimistic term is the raw one
    #   r = 0.5, A = -2: max( 1.0,  1.6) =  1.6  clipped
    #   r = 1.0, A = +3: masked out
    # loss = (-1.2 - 0.5 + 1.6) / 3 = -0.1 / 3; 2 of 3 tokens clipped.
    old_logprobs = torch.log(torch.full((1, 4), 0.4))
    ratio = torch.tensor([[1.5, 0.5, 0.5, 1.0]])
    logprobs = (old_logprobs + ratio.log()).requires_grad_()
    advantages = torch.tensor([[1.0, 1.0, -2.0, 3.0]])
    mask = torch.tensor([[True, True, True, False]])
    out = ppo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_eps=0.2)
    assert out.loss.item() == pytest.approx(-0.1 / 3, abs=1e-6)
    assert out.clip_frac.item() == pytest.approx(2 / 3)
    assert out.ratio_mean.item() == pytest.approx(2.5 / 3, abs=1e-6)
    # k3 of KL(old || new): (r - 1) - log r per token
    k3 = [(r - 1) - math.log(r) for r in (1.5, 0.5, 0.5)]
    assert out.approx_kl.item() == pytest.approx(sum(k3) / 3, abs=1e-6)
    # clipped tokens give no gradient; the unclipped one gives d(-A r)/d logp / 3 = -A r / 3
    out.loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[0.0, -0.5 / 3, 0.0, 0.0]]))
    assert not out.clip_frac.requires_grad and not out.approx_kl.requires_grad


def test_ppo_policy_loss_when_new_equals_old():
    torch.manual_seed(0)
    logprobs = torch.log(torch.rand(3, 5))
    advantages = torch.randn(3, 5)
    mask = torch.rand(3, 5) > 0.3
    out = ppo_policy_loss(logprobs, logprobs.clone(), advantages, mask, clip_eps=0.2)
    # ratio exactly 1: loss is -mean(A), nothing clipped, KL 0
    assert out.ratio_mean.item() == 1.0
    assert out.approx_kl.item() == 0.0
    assert out.clip_frac.item() == 0.0
    assert out.loss.item() == pytest.approx(-advantages[mask].mean().item(), abs=1e-6)


def test_value_loss_clipping_by_hand():
    # old value 1.0, clip 0.2, so the clipped value lies in [0.8, 1.2]; return 2.0.
    #   v = 1.5: (1.5-2)^2 = 0.25, clipped 1.2 -> (1.2-2)^2 = 0.64; max 0.64 (clipped)
    #   v = 0.9: inside the range, both 1.21 (not counted as clipped)
    #   v = 3.0: (3-2)^2 = 1.0, clipped 1.2 -> 0.64; max 1.0 (unclipped)
    #   v = 7.0: masked out
    # loss = 0.5 * (0.64 + 1.21 + 1.0) / 3 = 0.475
    values = torch.tensor([[1.5, 0.9, 3.0, 7.0]], requires_grad=True)
    old_values = torch.ones(1, 4)
    returns = torch.full((1, 4), 2.0)
    mask = torch.tensor([[True, True, True, False]])
    out = value_loss(values, old_values, returns, mask, clip_eps_value=0.2)
    assert out.loss.item() == pytest.approx(0.475, abs=1e-6)
    assert out.clip_frac.item() == pytest.approx(1 / 3)
    # the clipped token has no gradient; the others give (v - R) / 3
    out.loss.backward()
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, -1.1 / 3, 1.0 / 3, 0.0]]))


def test_entropy_bonus_sign_and_stat():
    entropy = torch.tensor([[1.0, 3.0, 100.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    out = entropy_bonus(entropy, mask, entropy_coef=0.01)
    # mean entropy 2.0; a bonus lowers the loss as entropy rises
    assert out.entropy.item() == pytest.approx(2.0)
    assert out.loss.item() == pytest.approx(-0.02)


def test_explained_variance():
    torch.manual_seed(0)
    returns = torch.randn(4, 6)
    mask = torch.rand(4, 6) > 0.2
    assert explained_variance(returns, returns, mask).item() == pytest.approx(1.0)
    # predicting the (masked) mean explains nothing
    mean_prediction = torch.full_like(returns, returns[mask].mean().item())
    assert explained_variance(mean_prediction, returns, mask).item() == pytest.approx(0.0, abs=1e-6)
    constant_returns = torch.ones(1, 3)
    no_variance = explained_variance(torch.zeros(1, 3), constant_returns, torch.ones(1, 3))
    assert math.isnan(no_variance.item())


def test_bradley_terry_loss_by_hand():
    # equal rewards: -log sigmoid(0) = log 2, and a tie does not count as correct
    tie = bradley_terry_loss(torch.tensor([0.3]), torch.tensor([0.3]))
    assert tie.loss.item() == pytest.approx(math.log(2))
    assert tie.accuracy.item() == 0.0
    # diff 2 and diff 0: (log(1 + e^-2) + log 2) / 2, one of two correct
    chosen = torch.tensor([2.0, 0.0], requires_grad=True)
    out = bradley_terry_loss(chosen, torch.tensor([0.0, 0.0]))
    assert out.loss.item() == pytest.approx((math.log1p(math.exp(-2)) + math.log(2)) / 2)
    assert out.accuracy.item() == 0.5
    assert out.reward_margin.item() == pytest.approx(1.0)
    # d/dr_chosen of -log sigmoid(d) / 2 is -sigmoid(-d) / 2
    out.loss.backward()
    torch.testing.assert_close(
        chosen.grad, torch.tensor([-1 / (1 + math.exp(2)) / 2, -0.25]), atol=1e-6, rtol=0
    )
    # a margin equal to the gap brings the loss back to log 2; accuracy ignores the margin
    margin = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), margin=1.0)
    assert margin.loss.item() == pytest.approx(math.log(2))
    assert margin.accuracy.item() == 1.0
