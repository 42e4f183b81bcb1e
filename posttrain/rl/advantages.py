"""Generalised advantage estimation over response tokens.

References:
    Schulman et al., "High-Dimensional Continuous Control Using Generalized Advantage
    Estimation" (2016), https://arxiv.org/abs/1506.02438, eq. (16).
    Huang et al., "The N Implementation Details of RLHF with PPO" (2022),
    https://iclr-blog-track.github.io/2022/03/25/ppo-implementation-details/
"""

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from posttrain.rl.masking import masked_whiten


class GAE(NamedTuple):
    """Output of `compute_gae`; both (batch, response_len), detached, 0 on masked tokens.

    advantages: A_t = sum_l (gamma * lam)^l * delta_{t+l}.
    returns:    A_t + V_t, the critic's regression target.
    """

    advantages: Tensor
    returns: Tensor


def compute_gae(
    values: Tensor, rewards: Tensor, response_mask: Tensor, gamma: float, lam: float
) -> GAE:
    """GAE(gamma, lambda), vectorised over the batch, a reverse loop over time.

        delta_t = r_t + gamma * V_{t+1} - V_t
        A_t     = delta_t + gamma * lam * A_{t+1}

    Only tokens where `response_mask` is True are time steps. The step after a row's last
    unmasked token is terminal (V = 0, A = 0), so nothing the critic says about padding
    reaches the response. A masked token inside a row is skipped: the step before it
    bootstraps from the next unmasked token. Masked tokens get advantage and return 0.

    Args:
        values: (batch, response_len), critic values V_t of the state before token t.
        rewards: (batch, response_len), e.g. `per_token_rewards(...).rewards`.
        response_mask: (batch, response_len) bool.
        gamma: discount (1.0 in InstructGPT-style PPO).
        lam: GAE lambda (0.95 in the N details).

    Returns:
        GAE(advantages, returns), both (batch, response_len).
    """
    mask = response_mask.bool()
    values = torch.where(mask, values.detach(), 0)
    rewards = torch.where(mask, rewards.detach(), 0)
    batch, response_len = values.shape
    next_value = values.new_zeros(batch)
    next_advantage = values.new_zeros(batch)
    advantages_reversed = []
    for t in reversed(range(response_len)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        step = mask[:, t]
        # A masked token is not a step: carry the next step's value and advantage past it.
        next_value = torch.where(step, values[:, t], next_value)
        next_advantage = torch.where(step, advantage, next_advantage)
        advantages_reversed.append(torch.where(step, advantage, 0))
    advantages = torch.stack(advantages_reversed[::-1], dim=1)
    returns = torch.where(mask, advantages + values, 0)
    return GAE(advantages=advantages, returns=returns)


def whiten_advantages(advantages: Tensor, response_mask: Tensor, moments=None) -> Tensor:
    """Advantages normalised to mean 0, std 1 over the response tokens (N details, "advantage
    whitening"); masked tokens are 0. ``moments``: see `masked_whiten` (the whole batch's, across processes).

    Args:
        advantages: (batch, response_len).
        response_mask: (batch, response_len) bool.

    Returns:
        (batch, response_len).
    """
    return masked_whiten(advantages, response_mask, shift_mean=True, moments=moments)


# ---------------------------------------------------------------------------------------------
# Critic-free estimators. Rows come in groups of `group_size` consecutive responses to the same
# prompt (rows g*K .. g*K+K-1 are group g), as the rollout samples them.
# ---------------------------------------------------------------------------------------------


def _groups(sequence_rewards: Tensor, group_size: int) -> Tensor:
    if group_size < 1 or sequence_rewards.numel() % group_size:
        raise ValueError(f"{sequence_rewards.numel()} rows do not split into groups of {group_size}")
    return sequence_rewards.view(-1, group_size)


def group_normalized_advantages(sequence_rewards: Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> Tensor:
    """GRPO's advantage: each response's reward minus its group's mean, divided by the group's std.

        A_i = (r_i - mean_g(r)) / (std_g(r) + eps)      (std: unbiased, as TRL computes it)

    Shao et al., "DeepSeekMath" (2024), https://arxiv.org/abs/2402.03300, section 4.1.2 (outcome supervision).
    ``scale=False`` is Dr. GRPO (Liu et al., "Understanding R1-Zero-Like Training", 2025,
    https://arxiv.org/abs/2503.20783): dividing by the std weights groups by how easy the prompt is.

    Args:
        sequence_rewards: (batch,), batch = groups * group_size.
        group_size: responses per prompt (>= 2 for a non-zero advantage).

    Returns:
        (batch,).
    """
    groups = _groups(sequence_rewards, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    if scale:
        std = groups.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(groups[:, :1])
        centred = centred / (std + eps)
    return centred.reshape(-1)


def leave_one_out_advantages(sequence_rewards: Tensor, group_size: int) -> Tensor:
    """RLOO's advantage: each response's reward minus the mean reward of the other responses to its prompt.

        A_i = r_i - (sum_g(r) - r_i) / (K - 1)

    Kool et al., "Buy 4 REINFORCE Samples, Get a Baseline for Free!" (2019); Ahmadian et al., "Back to Basics:
    Revisiting REINFORCE Style Optimization for Learning from Human Feedback in LLMs" (2024),
    https://arxiv.org/abs/2402.14740, eq. (7).

    Args:
        sequence_rewards: (batch,), batch = groups * group_size, group_size >= 2.

    Returns:
        (batch,).
    """
    if group_size < 2:
        raise ValueError("RLOO needs at least 2 responses per prompt (--rollout.group_size >= 2)")
    groups = _groups(sequence_rewards, group_size)
    others = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    return (groups - others).reshape(-1)


def discounted_returns(rewards: Tensor, response_mask: Tensor, gamma: float = 1.0) -> Tensor:
    """Reward-to-go at every response token, G_t = sum_{s >= t} gamma^(s - t) r_s; 0 on masked tokens.

    Args:
        rewards: (batch, response_len), e.g. `per_token_rewards(...).rewards`.
        response_mask: (batch, response_len) bool.

    Returns:
        (batch, response_len).
    """
    mask = response_mask.bool()
    rewards = torch.where(mask, rewards.detach(), 0)
    running = rewards.new_zeros(rewards.shape[0])
    out = []
    for t in reversed(range(rewards.shape[1])):
        running = torch.where(mask[:, t], rewards[:, t] + gamma * running, running)
        out.append(torch.where(mask[:, t], running, 0))
    return torch.stack(out[::-1], dim=1)


class AdvantageInputs(NamedTuple):
    """What an advantage estimator may read; shapes (batch, response_len) unless noted.

    rewards:  per-token rewards: the score at the last response token, minus beta * KL at every token when the KL
              is in the reward (see `per_token_rewards`); their row sum is the sequence reward.
    values:   critic values, or None for the critic-free estimators.
    mask:     response mask, bool.
    group_size, gamma, lam, whiten, scale_rewards: the estimators' settings.
    moments:  (x, mask) -> (mean, unbiased var) over the whole batch, when it is spread over processes (None: this
              batch's own); used by the batch-wide normalisations (GAE and RLOO whitening, REINFORCE++).
    """

    rewards: Tensor
    values: Tensor | None
    mask: Tensor
    group_size: int
    gamma: float = 1.0
    lam: float = 0.95
    whiten: bool = True
    scale_rewards: bool = True
    moments: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None


def _broadcast(sequence_advantages: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask.bool(), sequence_advantages.unsqueeze(1), 0)


def _gae(x: AdvantageInputs) -> GAE:
    """PPO: GAE from the critic's values, whitened over the batch."""
    out = compute_gae(x.values, x.rewards, x.mask, x.gamma, x.lam)
    return GAE(whiten_advantages(out.advantages, x.mask, x.moments) if x.whiten else out.advantages, out.returns)


def _grpo(x: AdvantageInputs) -> GAE:
    """GRPO: the sequence reward normalised within its group, the same at every token."""
    advantages = _broadcast(group_normalized_advantages(x.rewards.sum(1), x.group_size, x.scale_rewards), x.mask)
    return GAE(advantages, advantages)


def _rloo(x: AdvantageInputs) -> GAE:
    """RLOO: the sequence reward minus the leave-one-out mean of its group, the same at every token; whitened over
    the responses (each response counts once, as TRL's RLOO normalises), not over tokens: a token-weighted mean
    would let a long response's advantage shift every other one, and could turn a response that beat its
    baseline into one that is pushed down."""
    sequence = leave_one_out_advantages(x.rewards.sum(1), x.group_size)
    if x.whiten:
        rows = x.mask.bool().any(dim=1, keepdim=True)
        sequence = masked_whiten(sequence.unsqueeze(1), rows, shift_mean=True, moments=x.moments).squeeze(1)
    advantages = _broadcast(sequence, x.mask)
    return GAE(advantages, advantages)


def _reinforce_pp(x: AdvantageInputs) -> GAE:
    """REINFORCE++: the reward-to-go at each token (KL penalty included), normalised over the whole batch.

    Hu, "REINFORCE++: A Simple and Efficient Approach for Aligning Large Language Models" (2025),
    https://arxiv.org/abs/2501.03262, section 3 (token-level KL penalty, global advantage normalisation).
    """
    returns = discounted_returns(x.rewards, x.mask, x.gamma)
    return GAE(whiten_advantages(returns, x.mask, x.moments), returns)


ADVANTAGE_ESTIMATORS = {"gae": _gae, "grpo": _grpo, "rloo": _rloo, "reinforce_pp": _reinforce_pp}


def estimate_advantages(estimator: str, inputs: AdvantageInputs) -> GAE:
    """Advantages (and the critic's returns, for GAE) by the estimator named in ``ADVANTAGE_ESTIMATORS``."""
    if estimator not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {estimator!r}; choose from {sorted(ADVANTAGE_ESTIMATORS)}")
    return ADVANTAGE_ESTIMATORS[estimator](inputs)
