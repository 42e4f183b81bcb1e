"""Masking, masked statistics and token log-probabilities.

Everything here is a pure function of tensors. A "response mask" is a bool tensor
of shape (batch, response_len) that is True on tokens the policy produced and that
count for the loss (up to and including the first stop token), False on padding.

References:
    Huang et al., "The N Implementation Details of RLHF with PPO" (ICLR blog track, 2022),
    https://iclr-blog-track.github.io/2022/03/25/ppo-implementation-details/
    Huang et al., "The N+ Implementation Details of RLHF with PPO: A Case Study on
    TL;DR Summarization" (2024), https://arxiv.org/abs/2403.17031
"""

from typing import NamedTuple, Sequence

import torch
from torch import Tensor


def first_true_indices(bools: Tensor) -> Tensor:
    """Index of the first True in each row, or the row length when a row has none.

    Args:
        bools: (batch, seq_len) bool.

    Returns:
        (batch,) long.
    """
    row_len = bools.size(-1)
    positions = torch.arange(row_len, device=bools.device)
    # False entries are pushed past the end, so the min is the first True or row_len.
    candidates = torch.where(bools, positions, row_len)
    return candidates.min(dim=-1).values


class TruncatedResponse(NamedTuple):
    """Output of `truncate_after_stop`.

    ids:      (batch, response_len) long; tokens after the first stop token are pad.
    mask:     (batch, response_len) bool; True up to and including the first stop token.
    lengths:  (batch,) long; number of True entries of `mask` in each row.
    has_stop: (batch,) bool; whether the row contained a stop token at all.
    """

    ids: Tensor
    mask: Tensor
    lengths: Tensor
    has_stop: Tensor


def truncate_after_stop(
    response_ids: Tensor, stop_token_ids: int | Sequence[int], pad_token_id: int
) -> TruncatedResponse:
    """Cut each sampled response at its first stop token (N+ details, "truncate_response").

    The stop token itself is kept and stays in the mask: the policy chose to emit it, so
    its log-probability is part of the action. A row without a stop token keeps all of
    its tokens (length = response_len) and has `has_stop` False, which the caller may
    punish with `rewards.no_eos_penalty`.

    Args:
        response_ids: (batch, response_len) long, the generated tokens (without the query).
        stop_token_ids: one id or several ids (e.g. eos and an end-of-turn token).
        pad_token_id: id written after the stop token.

    Returns:
        TruncatedResponse(ids, mask, lengths, has_stop), shapes as documented there.
    """
    stops = torch.as_tensor(stop_token_ids, device=response_ids.device).reshape(-1)
    is_stop = torch.isin(response_ids, stops)
    response_len = response_ids.size(-1)
    first_stop = first_true_indices(is_stop)  # response_len when there is no stop token
    has_stop = first_stop < response_len
    lengths = torch.clamp(first_stop + 1, max=response_len)
    positions = torch.arange(response_len, device=response_ids.device)
    mask = positions.unsqueeze(0) < lengths.unsqueeze(1)
    ids = torch.where(mask, response_ids, pad_token_id)
    return TruncatedResponse(ids=ids, mask=mask, lengths=lengths, has_stop=has_stop)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `x` over the entries where `mask` is True.

    Masked-out entries are ignored even when they hold nan or inf. Where no entry is
    unmasked the result is 0 (not nan), so an empty row cannot poison a batch mean.

    Args:
        x: (batch, seq_len) or any shape.
        mask: same shape as `x`, bool (a 0/1 float mask also works).
        dim: reduce over this dim only; None reduces over everything.

    Returns:
        () when dim is None, otherwise `x`'s shape without `dim`.
    """
    mask = mask.bool()
    total = torch.where(mask, x, 0).sum(dim=dim)
    count = mask.sum(dim=dim).clamp(min=1)
    return total / count


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of `x` over the entries where `mask` is True (all of them pooled).

    Args:
        x: (batch, seq_len) or any shape.
        mask: same shape as `x`, bool.
        unbiased: apply Bessel's correction n / (n - 1); skipped when n == 1.

    Returns:
        () tensor.

    Raises:
        ValueError: if `mask` has no True entry.
    """
    mask = mask.bool()
    n = mask.sum()
    if n == 0:
        raise ValueError("masked_var: the mask selects no entries")
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8, moments=None) -> Tensor:
    """Normalise the masked entries of `x` to mean 0 and (unbiased) std 1.

    With shift_mean=False the mean is added back, so only the scale changes; this is how
    rewards are whitened in lm-human-preferences (N details, "reward normalization").
    Masked-out entries of the result are 0.

    Args:
        x: (batch, seq_len), e.g. advantages.
        mask: (batch, seq_len) bool.
        shift_mean: subtract the masked mean.
        eps: added to the variance before the square root.
        moments: a function (x, mask) -> (mean, unbiased var) to use instead of this batch's own, e.g. the
            moments over every process's batch; None uses `masked_mean` and `masked_var` of `x`.

    Returns:
        (batch, seq_len).
    """
    mask = mask.bool()
    mean, var = moments(x, mask) if moments is not None else (masked_mean(x, mask), masked_var(x, mask, unbiased=True))
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, 0)


def logprobs_from_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """Log-probability of each label under softmax(logits), without a full log_softmax.

    `log_softmax(logits).gather(labels)` would materialise a second (batch, seq_len, vocab)
    tensor; here only the chosen logit and the per-position logsumexp are kept, one batch
    row at a time. Half-precision logits go through log_softmax row by row instead, since
    logit - logsumexp loses precision in bf16/fp16.

    Divide `logits` by the sampling temperature before calling, so the log-probabilities
    match the distribution the response was sampled from (N+ details, "temperature").
    Logits at position t predict token t + 1: shift them before calling.

    Args:
        logits: (batch, seq_len, vocab).
        labels: (batch, seq_len) long.

    Returns:
        (batch, seq_len), in `logits`' dtype.
    """
    labels = labels.unsqueeze(-1)
    if logits.dtype in (torch.float32, torch.float64):
        chosen = torch.gather(logits, dim=-1, index=labels).squeeze(-1)
        logsumexp = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
        return chosen - logsumexp
    rows = [
        torch.gather(torch.log_softmax(row, dim=-1), dim=-1, index=row_labels).squeeze(-1)
        for row, row_labels in zip(logits, labels)
    ]
    return torch.stack(rows)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) at each position: logsumexp(z) - sum_i p_i z_i.

    Args:
        logits: (batch, seq_len, vocab).

    Returns:
        (batch, seq_len).
    """
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)
