"""Critic-free advantage estimators (GRPO, Dr. GRPO, RLOO, REINFORCE++), loss aggregations and the KL loss,
on numbers worked out by hand and against plain loops."""

import math

import pytest
import torch

from posttrain.rl import (
    AdvantageInputs,
    aggregate,
    discounted_returns,
    estimate_advantages,
    group_normalized_advantages,
    kl_loss,
    leave_one_out_advantages,
    per_token_rewards,
)


def test_grpo_advantage_by_hand():
    # group 1: rewards 1, 2, 3, 6 -> mean 3, centred -2, -1, 0, 3; unbiased std sqrt((4 + 1 + 0 + 9) / 3)
    # group 2: all equal -> no signal at all (0 / eps = 0), however large the rewards
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0, 5.0, 5.0, 5.0, 5.0])
    std = math.sqrt(14 / 3)
    expected = torch.tensor([-2 / (std + 1e-4), -1 / (std + 1e-4), 0.0, 3 / (std + 1e-4), 0, 0, 0, 0])
    torch.testing.assert_close(group_normalized_advantages(rewards, 4), expected)
    # Dr. GRPO: the same without the division by the group's std
    torch.testing.assert_close(group_normalized_advantages(rewards, 4, scale=False),
                               torch.tensor([-2.0, -1.0, 0.0, 3.0, 0, 0, 0, 0]))


def test_rloo_is_reward_minus_the_mean_of_the_others():
    # r = 1: others average (2 + 3 + 6) / 3 = 11/3 -> 1 - 11/3 = -8/3; ... which is K/(K-1) times the centred reward
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0])
    torch.testing.assert_close(leave_one_out_advantages(rewards, 4), torch.tensor([-8 / 3, -4 / 3, 0.0, 4.0]))
    # a plain loop over the others, on random groups of 3
    torch.manual_seed(0)
    r = torch.randn(12)
    loop = torch.tensor([r[i] - sum(r[j] for j in range(i // 3 * 3, i // 3 * 3 + 3) if j != i) / 2 for i in range(12)])
    torch.testing.assert_close(leave_one_out_advantages(r, 3), loop)
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out_advantages(r, 1)


def test_groups_must_divide_the_batch():
    with pytest.raises(ValueError, match="groups of 4"):
        group_normalized_advantages(torch.zeros(6), 4)


def test_discounted_returns_match_a_plain_loop_and_skip_padding():
    torch.manual_seed(1)
    rewards = torch.randn(4, 7)
    lengths = torch.tensor([7, 1, 4, 0])
    mask = torch.arange(7)[None] < lengths[:, None]
    gamma = 0.9
    out = discounted_returns(rewards, mask, gamma)
    for row in range(4):
        for t in range(7):
            want = sum(gamma ** (s - t) * rewards[row, s].item() for s in range(t, int(lengths[row]))) if t < lengths[row] else 0.0
            assert out[row, t].item() == pytest.approx(want, abs=1e-5)


def test_reinforce_pp_whitens_the_reward_to_go_over_the_whole_batch():
    # two responses: scores 1 and 0 at their last tokens, KL 0.1 per token at beta 1 (in the reward)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    kl = torch.full((2, 3), 0.1)
    rewards = per_token_rewards(torch.tensor([1.0, 0.0]), kl, 1.0, mask).rewards
    # reward-to-go: row 0: [0.9 - 0.1, 0.9] = [0.8, 0.9]; row 1: [-0.3, -0.2, -0.1]
    out = estimate_advantages("reinforce_pp", AdvantageInputs(rewards, None, mask, group_size=1))
    go = torch.tensor([0.8, 0.9, -0.3, -0.2, -0.1])
    whitened = (go - go.mean()) / torch.sqrt(go.var() + 1e-8)
    torch.testing.assert_close(out.advantages[mask], whitened)
    torch.testing.assert_close(out.returns[mask], go)
    assert out.advantages[0, 2] == 0


def test_group_estimators_give_every_token_of_a_response_its_sequence_advantage():
    # KL in the loss: per-token rewards are the score alone, at the last token
    mask = torch.tensor([[True, True, True], [True, False, False]])
    rewards = per_token_rewards(torch.tensor([2.0, 0.0]), torch.zeros(2, 3), 0.0, mask).rewards
    grpo = estimate_advantages("grpo", AdvantageInputs(rewards, None, mask, group_size=2, scale_rewards=False))
    torch.testing.assert_close(grpo.advantages, torch.tensor([[1.0, 1.0, 1.0], [-1.0, 0.0, 0.0]]))
    rloo = estimate_advantages("rloo", AdvantageInputs(rewards, None, mask, group_size=2, whiten=False))
    torch.testing.assert_close(rloo.advantages, torch.tensor([[2.0, 2.0, 2.0], [-2.0, 0.0, 0.0]]))


def test_rloo_whitens_over_responses_not_tokens():
    """Two groups of 2: rewards (1, -1) with 4 and 1 tokens, (0.1, -0.1) with 1 and 4 tokens. Leave-one-out
    advantages are (2, -2, 0.2, -0.2): mean 0, unbiased std sqrt(8.08 / 3). Whitened over responses the third
    keeps its sign: 0.2 / sqrt(8.08 / 3) = 0.1219. Over tokens the mean would be (8 - 2 + 0.2 - 0.8) / 10 = 0.54,
    and the response that beat its baseline would get a negative advantage."""
    lengths = torch.tensor([4, 1, 1, 4])
    mask = torch.arange(4)[None, :] < lengths[:, None]
    rewards = per_token_rewards(torch.tensor([1.0, -1.0, 0.1, -0.1]), torch.zeros(4, 4), 0.0, mask).rewards
    out = estimate_advantages("rloo", AdvantageInputs(rewards, None, mask, group_size=2))
    std = math.sqrt(8.08 / 3)
    for row, want in enumerate([2 / std, -2 / std, 0.2 / std, -0.2 / std]):
        torch.testing.assert_close(out.advantages[row][mask[row]], torch.full((int(lengths[row]),), want))
    assert out.advantages[2, 0] > 0 and not out.advantages[~mask].any()


def test_loss_aggregations_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    assert aggregate(x, mask, "token_mean").item() == pytest.approx(10 / 4)  # (1 + 2 + 3 + 4) / 4 tokens
    assert aggregate(x, mask, "sequence_mean").item() == pytest.approx((2 + 4) / 2)  # row means 2 and 4
    assert aggregate(x, mask, "token_sum", max_len=4).item() == pytest.approx(10 / (2 * 4))  # Dr. GRPO constant
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        aggregate(x, mask, "mean")


def test_kl_loss_is_k3_and_pulls_toward_the_reference():
    # p = 0.5, q = 0.25: k3 = q/p - log(q/p) - 1 = 0.5 + log 2 - 1
    logp = torch.tensor([[math.log(0.5)]], requires_grad=True)
    ref = torch.tensor([[math.log(0.25)]])
    out = kl_loss(logp, ref, torch.ones(1, 1, dtype=torch.bool), kl_coef=2.0)
    assert out.kl.item() == pytest.approx(0.5 + math.log(2) - 1)
    assert out.loss.item() == pytest.approx(2 * (0.5 + math.log(2) - 1))
    out.loss.backward()
    # d k3 / d logp = 1 - q/p = 0.5 > 0: descending the loss lowers the policy's log-prob toward the reference's
    assert logp.grad.item() == pytest.approx(2 * 0.5)
    # no KL where the policy is the reference
    same = kl_loss(ref.clone().requires_grad_(), ref, torch.ones(1, 1, dtype=torch.bool), 1.0)
    assert same.loss.item() == 0.0
