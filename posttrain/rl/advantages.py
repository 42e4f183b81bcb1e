"""Generalised advantage estimation over response tokens.

References:
    Schulman et al., "High-Dimensional Continuous Control Using Generalized Advantage
    Estimation" (2016), https://arxiv.org/abs/1506.02438, eq. (16).
    Huang et al., "The N Implementation Details of RLHF with PPO" (2022),
    https://iclr-blog-track.github.io/2022/03/25/ppo-implementation-details/
"""

from typing import NamedTuple

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


def whiten_advantages(advantages: Tensor, response_mask: Tensor) -> Tensor:
    """Advantages normalised to mean 0, std 1 over the response tokens (N details, "advantage
    whitening"); masked tokens are 0.

    Args:
        advantages: (batch, response_len).
        response_mask: (batch, response_len) bool.

    Returns:
        (batch, response_len).
    """
    return masked_whiten(advantages, response_mask, shift_mean=True)
