"""KL penalty estimators and KL-coefficient controllers.

References:
    J. Schulman, "Approximating KL Divergence" (2020), http://joschu.net/blog/kl-approx.html
    Ziegler et al., "Fine-Tuning Language Models from Human Preferences" (2019),
    https://arxiv.org/abs/1909.08593, section 2.2 (adaptive KL coefficient).
"""

from typing import Any, Callable

import torch
from torch import Tensor


def _k1(log_ratio: Tensor) -> Tensor:
    # log p/q: unbiased, but negative on some samples.
    return log_ratio


def _k3(log_ratio: Tensor) -> Tensor:
    # (r - 1) - log r with r = q/p = exp(-log_ratio); unbiased and >= 0 on every sample,
    # because log r <= r - 1. expm1 keeps precision when r is close to 1.
    return torch.expm1(-log_ratio) + log_ratio


KL_ESTIMATORS: dict[str, Callable[[Tensor], Tensor]] = {"k1": _k1, "k3": _k3}


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k1") -> Tensor:
    """Per-token estimate of KL(policy || reference) from tokens sampled by the policy.

    With p = policy and q = reference probabilities of the sampled token (Schulman's blog):
        k1 = log p - log q
        k3 = (r - 1) - log r,  r = q / p = exp(ref_logprobs - logprobs)
    Both are unbiased for the KL when the tokens come from p; k3 has lower variance and
    is never negative. InstructGPT-style PPO penalises rewards with k1.

    Args:
        logprobs: (batch, response_len), policy log-probs of the sampled tokens.
        ref_logprobs: (batch, response_len), reference log-probs of the same tokens.
        estimator: "k1" or "k3".

    Returns:
        (batch, response_len). Padding positions are not masked here.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; choose from {sorted(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[estimator](logprobs - ref_logprobs)


class AdaptiveKLController:
    """KL coefficient that tracks a target KL (Ziegler et al. 2019, eq. in section 2.2).

        e_t    = clip(KL_t / target - 1, -0.2, 0.2)
        beta  <- beta * (1 + e_t * n_steps / horizon)

    `current_kl` is the mean per-sequence KL (summed over response tokens, averaged over
    the batch) and `n_steps` the number of samples (episodes) in the batch that produced it.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        if target <= 0 or horizon <= 0:
            raise ValueError("AdaptiveKLController: target and horizon must be positive")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float | Tensor, n_steps: int) -> None:
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = float(state["horizon"])


class FixedKLController:
    """Constant KL coefficient with the same interface as `AdaptiveKLController`."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float | Tensor, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])
