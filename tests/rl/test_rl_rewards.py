import pytest
import torch

from posttrain.rl.rewards import RunningMoments, no_eos_penalty, per_token_rewards


def test_per_token_rewards_put_score_only_at_last_response_token():
    scores = torch.tensor([2.0, 3.0, 5.0])
    kl = torch.tensor([[1.0, 1.0, 1.0, 9.0], [2.0, 9.0, 9.0, 9.0], [1.0, 1.0, 1.0, 1.0]])
    mask = torch.tensor(
        [[True, True, True, False], [True, False, False, False], [True, True, True, True]]
    )
    out = per_token_rewards(scores, kl, kl_coef=0.1, response_mask=mask)
    # -0.1 * kl on each response token, score added on the last one, padding 0
    expected = torch.tensor(
        [[-0.1, -0.1, 2.0 - 0.1, 0.0], [3.0 - 0.2, 0.0, 0.0, 0.0], [-0.1, -0.1, -0.1, 5.0 - 0.1]]
    )
    torch.testing.assert_close(out.rewards, expected)
    torch.testing.assert_close(
        out.non_score_rewards,
        torch.tensor([[-0.1, -0.1, -0.1, 0.0], [-0.2, 0.0, 0.0, 0.0], [-0.1, -0.1, -0.1, -0.1]]),
    )


def test_per_token_rewards_empty_row_gets_nothing():
    empty_mask = torch.zeros(1, 3, dtype=torch.bool)
    out = per_token_rewards(torch.tensor([7.0]), torch.ones(1, 3), 0.5, empty_mask)
    assert (out.rewards == 0).all()


def test_no_eos_penalty_replaces_only_unfinished_scores():
    scores = torch.tensor([0.5, 2.0, -0.3])
    has_stop = torch.tensor([True, False, True])
    penalised = no_eos_penalty(scores, has_stop, penalty=-1.0)
    assert penalised.tolist() == pytest.approx([0.5, -1.0, -0.3])


def test_running_moments_match_torch_over_concatenated_batches():
    torch.manual_seed(0)
    batches = [3.0 + 2.0 * torch.randn(n) for n in (5, 1, 17, 2)]
    moments = RunningMoments()
    for batch in batches:
        batch_mean, batch_std = moments.update(batch)
        assert batch_mean == pytest.approx(batch.mean().item(), rel=1e-6)
        expected_std = batch.std().item() if batch.numel() > 1 else 0.0
        assert batch_std == pytest.approx(expected_std, rel=1e-6)
    everything = torch.cat(batches).double()
    assert moments.count == everything.numel()
    assert moments.mean == pytest.approx(everything.mean().item(), rel=1e-12)
    assert moments.std == pytest.approx(everything.std().item(), rel=1e-12)
    normalized = moments.normalize(everything)
    assert normalized.mean().item() == pytest.approx(0.0, abs=1e-9)


def test_running_moments_survive_state_dict_round_trip():
    torch.manual_seed(1)
    moments = RunningMoments()
    moments.update(torch.randn(8))
    moments.update(torch.randn(3, 4))
    resumed = RunningMoments()
    resumed.load_state_dict(moments.state_dict())
    more = torch.randn(6)
    moments.update(more)
    resumed.update(more)
    assert resumed.state_dict() == moments.state_dict()
    assert resumed.std == moments.std
