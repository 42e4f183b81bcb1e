"""Turning reward-model scores into per-token PPO rewards.

References:
    Ziegler et al., "Fine-Tuning Language Models from Human Preferences" (2019),
    https://arxiv.org/abs/1909.08593, eq. (2): R(x, y) = r(x, y) - beta * log(pi(y|x) / rho(y|x)).
    Huang et al., "The N+ Implementation Details of RLHF with PPO" (2024),
    https://arxiv.org/abs/2403.17031 (score at the last token, EOS penalty).
    Chan, Golub, LeVeque, "Updating Formulae and a Pairwise Algorithm for Computing
    Sample Variances" (1979) for merging running moments.
"""

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from posttrain.rl.masking import first_true_indices


class PerTokenRewards(NamedTuple):
    """Output of `per_token_rewards`.

    rewards:            (batch, response_len); KL penalty on each token plus the score
                        at the last response token; 0 on padding.
    non_score_rewards:  (batch, response_len); the KL-penalty part alone, for logging.
    """

    rewards: Tensor
    non_score_rewards: Tensor


def per_token_rewards(
    scores: Tensor, kl: Tensor, kl_coef: float | Tensor, response_mask: Tensor
) -> PerTokenRewards:
    """KL-penalised rewards: -kl_coef * kl on every response token, score on the last one.

    The last response token is the last True of each mask row (the stop token when the
    response has one). A row whose mask is all False receives nothing.

    Args:
        scores: (batch,) reward-model scores of the whole response.
        kl: (batch, response_len) per-token KL estimate, e.g. `kl_penalty(..., "k1")`.
        kl_coef: the KL coefficient beta (a float or a () tensor).
        response_mask: (batch, response_len) bool.

    Returns:
        PerTokenRewards(rewards, non_score_rewards), both (batch, response_len).
    """
    mask = response_mask.bool()
    non_score_rewards = torch.where(mask, -kl_coef * kl, 0)
    response_len = mask.size(-1)
    last_index = response_len - 1 - first_true_indices(mask.flip(-1))  # -1 for empty rows
    is_last = torch.arange(response_len, device=mask.device).unsqueeze(0) == last_index.unsqueeze(1)
    rewards = non_score_rewards + torch.where(is_last, scores.to(kl.dtype).unsqueeze(1), 0)
    return PerTokenRewards(rewards=rewards, non_score_rewards=non_score_rewards)


def no_eos_penalty(scores: Tensor, has_stop: Tensor, penalty: float) -> Tensor:
    """Replace the score of responses that never emitted a stop token by `penalty`.

    Truncated responses are not finished answers; giving them a fixed low score
    (e.g. -1) stops the policy from learning to ramble (N+ details, "EOS trick").

    Args:
        scores: (batch,).
        has_stop: (batch,) bool, e.g. `truncate_after_stop(...).has_stop`.
        penalty: the score given to responses without a stop token.

    Returns:
        (batch,).
    """
    return torch.where(has_stop.bool(), scores, torch.full_like(scores, penalty))


class RunningMoments:
    """Running mean and standard deviation of every value ever passed to `update`.

    Batches are merged with Chan et al.'s pairwise formula, in float64 on the host, so
    the result matches torch.mean / torch.std over the concatenated batches and can be
    saved and restored exactly with state_dict / load_state_dict.
    """

    def __init__(self) -> None:
        self.mean = 0.0
        self.m2 = 0.0  # sum of squared deviations from the mean
        self.count = 0

    @property
    def var(self) -> float:
        """Unbiased variance; 0 until two values have been seen."""
        return self.m2 / (self.count - 1) if self.count > 1 else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def update(self, x: Tensor) -> tuple[float, float]:
        """Fold a batch into the running moments.

        Args:
            x: any shape; all entries are treated as samples.

        Returns:
            (mean, unbiased std) of this batch alone (std is 0 for a single value).
        """
        x = x.detach().to(dtype=torch.float64).flatten()
        n = x.numel()
        if n == 0:
            return 0.0, 0.0
        batch_mean = x.mean().item()
        batch_m2 = ((x - batch_mean) ** 2).sum().item()
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta**2 * self.count * n / total
        self.count = total
        return batch_mean, math.sqrt(batch_m2 / (n - 1)) if n > 1 else 0.0

    def normalize(self, x: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
        """(x - mean) / std with the running moments; shift_mean=False only rescales."""
        centred = x - self.mean if shift_mean else x
        return centred / (self.std + eps)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "m2": self.m2, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean = float(state["mean"])
        self.m2 = float(state["m2"])
        self.count = int(state["count"])
