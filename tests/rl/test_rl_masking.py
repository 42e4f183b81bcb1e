import math

import pytest
import torch

from posttrain.rl.masking import (
    entropy_from_logits,
    first_true_indices,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
    truncate_after_stop,
)


def test_first_true_indices_gives_row_length_when_no_true():
    bools = torch.tensor([[False, True, True], [False, False, False], [True, False, False]])
    assert first_true_indices(bools).tolist() == [1, 3, 0]


def test_truncate_after_stop_pads_after_first_stop_and_keeps_rows_without_stop():
    pad, eos = 0, 2
    response_ids = torch.tensor(
        [
            [5, 2, 7, 2],  # stop at 1: keep "5 2", the second eos is padding too
            [5, 6, 7, 8],  # no stop: keep everything, has_stop False
            [2, 9, 9, 9],  # stop first: the response is only the stop token
        ]
    )
    out = truncate_after_stop(response_ids, eos, pad)
    assert out.ids.tolist() == [[5, 2, 0, 0], [5, 6, 7, 8], [2, 0, 0, 0]]
    assert out.mask.tolist() == [
        [True, True, False, False],
        [True, True, True, True],
        [True, False, False, False],
    ]
    assert out.lengths.tolist() == [2, 4, 1]
    assert out.has_stop.tolist() == [True, False, True]


def test_truncate_after_stop_accepts_several_stop_ids():
    response_ids = torch.tensor([[5, 3, 2, 7], [5, 6, 2, 3]])
    out = truncate_after_stop(response_ids, [2, 3], pad_token_id=-1)
    assert out.ids.tolist() == [[5, 3, -1, -1], [5, 6, 2, -1]]
    assert out.lengths.tolist() == [2, 3]


def test_masked_mean_ignores_masked_nan_and_handles_dim():
    x = torch.tensor([[1.0, 3.0, float("nan")], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    # (1 + 3 + 4) / 3 entries
    assert masked_mean(x, mask).item() == pytest.approx(8 / 3)
    assert masked_mean(x, mask, dim=1).tolist() == [2.0, 4.0]
    # an all-masked row gives 0, not nan
    assert masked_mean(x, torch.zeros_like(mask), dim=1).tolist() == [0.0, 0.0]


def test_masked_var_matches_torch_var_on_selected_entries():
    torch.manual_seed(0)
    x = torch.randn(4, 7)
    mask = torch.rand(4, 7) > 0.4
    assert masked_var(x, mask).item() == pytest.approx(x[mask].var().item(), rel=1e-5)
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(
        x[mask].var(unbiased=False).item(), rel=1e-5
    )
    with pytest.raises(ValueError):
        masked_var(x, torch.zeros_like(mask))


def test_masked_whiten_gives_mean_zero_std_one_on_masked_entries():
    torch.manual_seed(0)
    x = 3.0 + 5.0 * torch.randn(6, 9)
    mask = torch.rand(6, 9) > 0.3
    white = masked_whiten(x, mask)
    assert white[mask].mean().item() == pytest.approx(0.0, abs=1e-5)
    assert white[mask].std().item() == pytest.approx(1.0, abs=1e-5)
    assert (white[~mask] == 0).all()
    # shift_mean=False keeps the mean and only rescales
    scaled = masked_whiten(x, mask, shift_mean=False)
    assert scaled[mask].mean().item() == pytest.approx(x[mask].mean().item(), rel=1e-5)
    assert scaled[mask].std().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logprobs_from_logits_matches_log_softmax_gather(dtype):
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11).to(dtype)
    labels = torch.randint(0, 11, (3, 5))
    log_softmax = torch.log_softmax(logits.float(), dim=-1)
    expected = log_softmax.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    got = logprobs_from_logits(logits, labels)
    assert got.shape == (3, 5)
    assert got.dtype == dtype
    atol = 5e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(got.float(), expected, atol=atol, rtol=0)


def test_entropy_from_logits_uniform_and_against_categorical():
    # uniform over 4 tokens: entropy log 4
    assert entropy_from_logits(torch.zeros(1, 1, 4)).item() == pytest.approx(math.log(4))
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7)
    expected = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(entropy_from_logits(logits), expected)
