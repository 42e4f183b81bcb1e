import pytest
import torch

from posttrain.rl.advantages import compute_gae, whiten_advantages


def gae_plain_loop(values, rewards, mask, gamma, lam):
    """Textbook GAE, one row at a time, over that row's unmasked tokens only."""
    advantages = torch.zeros_like(values)
    for row in range(values.size(0)):
        steps = [t for t in range(values.size(1)) if mask[row, t]]
        last_gae = 0.0
        for i in reversed(range(len(steps))):
            t = steps[i]
            next_value = values[row, steps[i + 1]].item() if i + 1 < len(steps) else 0.0
            delta = rewards[row, t].item() + gamma * next_value - values[row, t].item()
            last_gae = delta + gamma * lam * last_gae
            advantages[row, t] = last_gae
    returns = torch.where(mask, advantages + values, 0)
    return advantages, returns


def test_gae_by_hand_gamma_lam_one():
    # gamma = lam = 1: A_t = (sum of rewards from t) - V_t = 1 - 0.5 for every token.
    # The padding value 100 must not be bootstrapped into the last response token.
    values = torch.tensor([[0.5, 0.5, 0.5, 100.0]])
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    mask = torch.tensor([[True, True, True, False]])
    out = compute_gae(values, rewards, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(out.advantages, torch.tensor([[0.5, 0.5, 0.5, 0.0]]))
    torch.testing.assert_close(out.returns, torch.tensor([[1.0, 1.0, 1.0, 0.0]]))


def test_gae_by_hand_lam_zero_is_one_step_td():
    # lam = 0: A_t = r_t + gamma * V_{t+1} - V_t; the last token bootstraps from 0.
    values = torch.tensor([[1.0, 2.0]])
    rewards = torch.tensor([[0.5, 3.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    out = compute_gae(values, rewards, mask, gamma=0.9, lam=0.0)
    torch.testing.assert_close(out.advantages, torch.tensor([[0.5 + 0.9 * 2.0 - 1.0, 3.0 - 2.0]]))


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 0.9), (0.5, 1.0)])
def test_gae_matches_plain_loop_with_rows_of_different_lengths(gamma, lam):
    torch.manual_seed(0)
    batch, response_len = 6, 11
    values, rewards = torch.randn(batch, response_len), torch.randn(batch, response_len)
    lengths = torch.tensor([11, 1, 5, 8, 3, 10])
    mask = torch.arange(response_len).unsqueeze(0) < lengths.unsqueeze(1)
    out = compute_gae(values, rewards, mask, gamma, lam)
    expected_advantages, expected_returns = gae_plain_loop(values, rewards, mask, gamma, lam)
    torch.testing.assert_close(out.advantages, expected_advantages)
    torch.testing.assert_close(out.returns, expected_returns)
    assert (out.advantages[~mask] == 0).all() and (out.returns[~mask] == 0).all()


def test_gae_skips_masked_tokens_inside_a_row():
    torch.manual_seed(1)
    values, rewards = torch.randn(4, 9), torch.randn(4, 9)
    mask = torch.rand(4, 9) > 0.35
    out = compute_gae(values, rewards, mask, 0.97, 0.9)
    expected_advantages, expected_returns = gae_plain_loop(values, rewards, mask, 0.97, 0.9)
    torch.testing.assert_close(out.advantages, expected_advantages)
    torch.testing.assert_close(out.returns, expected_returns)


def test_gae_ignores_what_is_written_on_padding_and_is_detached():
    torch.manual_seed(2)
    values = torch.randn(3, 6, requires_grad=True)
    rewards = torch.randn(3, 6)
    mask = torch.arange(6).unsqueeze(0) < torch.tensor([[2], [6], [4]])
    out = compute_gae(values, rewards, mask, 1.0, 0.95)
    garbage_values = torch.where(mask, values.detach(), 1e4)
    garbage_rewards = torch.where(mask, rewards, -1e4)
    out_garbage = compute_gae(garbage_values, garbage_rewards, mask, 1.0, 0.95)
    torch.testing.assert_close(out.advantages, out_garbage.advantages)
    assert not out.advantages.requires_grad and not out.returns.requires_grad


def test_whiten_advantages_zero_mean_unit_std_on_response_tokens():
    torch.manual_seed(3)
    advantages = 4.0 * torch.randn(5, 7) + 2.0
    mask = torch.rand(5, 7) > 0.3
    white = whiten_advantages(advantages, mask)
    assert white[mask].mean().item() == pytest.approx(0.0, abs=1e-5)
    assert white[mask].std().item() == pytest.approx(1.0, abs=1e-5)
