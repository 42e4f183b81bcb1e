"""PPO policy and value losses, entropy bonus, and the pairwise reward-model loss.

Each loss returns a NamedTuple: the differentiable `loss` first, then detached statistics
that the training loop logs as they are.

References:
    Schulman et al., "Proximal Policy Optimization Algorithms" (2017),
    https://arxiv.org/abs/1707.06347, eq. (7) (clipped surrogate).
    Huang et al., "The N Implementation Details of RLHF with PPO" (2022),
    https://iclr-blog-track.github.io/2022/03/25/ppo-implementation-details/ (value clipping).
    Ouyang et al., "Training language models to follow instructions with human feedback"
    (2022), https://arxiv.org/abs/2203.02155, eq. (1) (pairwise reward-model loss).
    J. Schulman, "Approximating KL Divergence" (2020), http://joschu.net/blog/kl-approx.html
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from posttrain.rl.kl import kl_penalty
from posttrain.rl.masking import masked_mean, masked_var


class PolicyLossOutput(NamedTuple):
    """loss: () differentiable. clip_frac: () share of tokens where the clipped term was used.
    approx_kl: () k3 estimate of KL(old || new). ratio_mean: () mean of pi_new / pi_old."""

    loss: Tensor
    clip_frac: Tensor
    approx_kl: Tensor
    ratio_mean: Tensor


def _token_mean(x: Tensor, mask: Tensor, max_len: int | None) -> Tensor:
    # every unmasked token of the batch weighs the same (N details; DAPO's "token-level" loss); across the
    # minibatches and processes of one optimizer step, the loop weighs each minibatch by its tokens
    # (stages/rlhf_steps.minibatch_weights)
    return masked_mean(x, mask)


def _sequence_mean(x: Tensor, mask: Tensor, max_len: int | None) -> Tensor:
    # each response's tokens averaged, then the responses averaged (the original GRPO objective)
    rows = mask.bool().any(dim=1)
    return masked_mean(x, mask, dim=1)[rows].mean() if rows.any() else x.sum() * 0


def _token_sum(x: Tensor, mask: Tensor, max_len: int | None) -> Tensor:
    # tokens summed and divided by a constant, rows x the longest allowed response (Dr. GRPO): no length bias
    return torch.where(mask.bool(), x, 0).sum() / (x.shape[0] * (max_len or x.shape[1]))


LOSS_AGGREGATIONS = {"token_mean": _token_mean, "sequence_mean": _sequence_mean, "token_sum": _token_sum}


def aggregate(x: Tensor, mask: Tensor, aggregation: str = "token_mean", max_len: int | None = None) -> Tensor:
    """Reduce a per-token loss (batch, response_len) to () by a rule in ``LOSS_AGGREGATIONS``.

    token_mean: mean over every unmasked token; sequence_mean: mean over responses of their token mean;
    token_sum: sum over unmasked tokens / (batch * max_len), with ``max_len`` the longest possible response.
    """
    if aggregation not in LOSS_AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {aggregation!r}; choose from {sorted(LOSS_AGGREGATIONS)}")
    return LOSS_AGGREGATIONS[aggregation](x, mask, max_len)


def ppo_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_eps: float,
    aggregation: str = "token_mean", max_len: int | None = None,
) -> PolicyLossOutput:
    """Clipped surrogate objective, as a loss to minimise:

        ratio = exp(logprobs - old_logprobs)
        loss  = agg_t max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - eps, 1 + eps))

    reduced over the unmasked tokens by ``aggregation`` (see `aggregate`; the default is the token-level mean
    of the N details). The statistics are token-level means whatever the aggregation.

    Args:
        logprobs: (batch, response_len), current policy, with gradient.
        old_logprobs: (batch, response_len), policy that sampled the rollout (detached).
        advantages: (batch, response_len), detached.
        mask: (batch, response_len) bool.
        clip_eps: PPO clip range epsilon (0.2 in the N details).
        aggregation, max_len: see `aggregate`.

    Returns:
        PolicyLossOutput(loss, clip_frac, approx_kl, ratio_mean), all ().
    """
    old_logprobs = old_logprobs.detach()
    advantages = advantages.detach()
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = aggregate(torch.maximum(unclipped, clipped), mask, aggregation, max_len)
    with torch.no_grad():
        clip_frac = masked_mean((clipped > unclipped).float(), mask)
        # Samples came from the old policy, so KL(old || new) is estimated with old as "p".
        approx_kl = masked_mean(kl_penalty(old_logprobs, logprobs.detach(), "k3"), mask)
        ratio_mean = masked_mean(ratio.detach(), mask)
    return PolicyLossOutput(
        loss=loss, clip_frac=clip_frac, approx_kl=approx_kl, ratio_mean=ratio_mean
    )


class KLLossOutput(NamedTuple):
    """loss: () differentiable, kl_coef * aggregated k3. kl: () detached token-mean k3 estimate."""

    loss: Tensor
    kl: Tensor


def kl_loss(
    logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, kl_coef: float,
    aggregation: str = "token_mean", max_len: int | None = None,
) -> KLLossOutput:
    """The KL leash as a loss term (GRPO style) instead of a reward penalty:

        k3_t = exp(ref_t - logp_t) - (ref_t - logp_t) - 1 >= 0,   loss = kl_coef * agg_t k3_t

    k3 is Schulman's unbiased, non-negative estimator of KL(policy || reference) from the policy's own samples
    (Shao et al., DeepSeekMath 2024, eq. (4)). Its value is that KL; its gradient, with the samples held fixed as
    a loss holds them, is not: E_policy[(1 - ref/policy) grad log policy] = grad KL(reference || policy), the
    forward KL. Both pull the policy toward the reference; the KL in the reward (``kl_in="reward"``) is the one
    whose policy gradient follows KL(policy || reference).

    Args:
        logprobs: (batch, response_len), current policy, with gradient.
        ref_logprobs: (batch, response_len), reference (detached).
        mask: (batch, response_len) bool.
        kl_coef: beta.
        aggregation, max_len: see `aggregate`.

    Returns:
        KLLossOutput(loss, kl), both ().
    """
    k3 = kl_penalty(logprobs, ref_logprobs.detach(), "k3")
    return KLLossOutput(loss=kl_coef * aggregate(k3, mask, aggregation, max_len), kl=masked_mean(k3.detach(), mask))


class ValueLossOutput(NamedTuple):
    """loss: () differentiable. clip_frac: () share of tokens where the clipped error was larger."""

    loss: Tensor
    clip_frac: Tensor


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_eps_value: float
) -> ValueLossOutput:
    """Clipped value loss (N details, "value function clipping"):

        v_clipped = old_values + clip(values - old_values, -eps, eps)
        loss      = 0.5 * mean_t max((values - R)^2, (v_clipped - R)^2)

    Args:
        values: (batch, response_len), current critic, with gradient.
        old_values: (batch, response_len), critic values at rollout time (detached).
        returns: (batch, response_len), `compute_gae(...).returns`.
        mask: (batch, response_len) bool.
        clip_eps_value: how far the new value may move from the old one (0.2 in the N details).

    Returns:
        ValueLossOutput(loss, clip_frac), both ().
    """
    old_values = old_values.detach()
    returns = returns.detach()
    values_clipped = old_values + torch.clamp(values - old_values, -clip_eps_value, clip_eps_value)
    unclipped_error = (values - returns) ** 2
    clipped_error = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    with torch.no_grad():
        clip_frac = masked_mean((clipped_error > unclipped_error).float(), mask)
    return ValueLossOutput(loss=loss, clip_frac=clip_frac)


class EntropyBonusOutput(NamedTuple):
    """loss: () differentiable, -entropy_coef * mean entropy. entropy: () detached mean entropy."""

    loss: Tensor
    entropy: Tensor


def entropy_bonus(entropy: Tensor, mask: Tensor, entropy_coef: float) -> EntropyBonusOutput:
    """Entropy bonus to add to the policy loss; with entropy_coef = 0 it is only a statistic.

    Args:
        entropy: (batch, response_len), e.g. `entropy_from_logits(logits)`.
        mask: (batch, response_len) bool.
        entropy_coef: weight of the bonus.

    Returns:
        EntropyBonusOutput(loss, entropy), both ().
    """
    mean_entropy = masked_mean(entropy, mask)
    return EntropyBonusOutput(loss=-entropy_coef * mean_entropy, entropy=mean_entropy.detach())


@torch.no_grad()
def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """1 - Var(R - V) / Var(R) over unmasked tokens: 1 is a perfect critic, 0 predicts the
    mean, below 0 is worse than the mean. nan when the returns have no variance.

    Args:
        values: (batch, response_len).
        returns: (batch, response_len).
        mask: (batch, response_len) bool.

    Returns:
        () detached.
    """
    var_returns = masked_var(returns, mask, unbiased=False)
    var_residual = masked_var(returns - values, mask, unbiased=False)
    if var_returns == 0:
        return torch.full_like(var_returns, float("nan"))
    return 1.0 - var_residual / var_returns


class PairwiseLossOutput(NamedTuple):
    """loss: () differentiable. accuracy: () share of pairs with chosen > rejected (ties count
    as wrong). reward_margin: () mean of chosen - rejected."""

    loss: Tensor
    accuracy: Tensor
    reward_margin: Tensor


def bradley_terry_loss(
    chosen_rewards: Tensor, rejected_rewards: Tensor, margin: Tensor | float | None = None
) -> PairwiseLossOutput:
    """Pairwise reward-model loss: -log sigmoid(r_chosen - r_rejected - margin), batch mean.

    The margin (Llama 2 style) asks the reward gap to exceed it on pairs rated far apart.

    Args:
        chosen_rewards: (batch,) scalar rewards of the preferred responses.
        rejected_rewards: (batch,) scalar rewards of the other responses.
        margin: None, a float, or (batch,).

    Returns:
        PairwiseLossOutput(loss, accuracy, reward_margin), all ().
    """
    diff = chosen_rewards - rejected_rewards
    logits = diff if margin is None else diff - margin
    loss = -F.logsigmoid(logits).mean()
    with torch.no_grad():
        accuracy = (diff > 0).float().mean()
        reward_margin = diff.detach().mean()
    return PairwiseLossOutput(loss=loss, accuracy=accuracy, reward_margin=reward_margin)
