"""The PPO math as small pure torch functions: masking, KL, rewards, GAE, losses."""

from posttrain.rl.advantages import GAE, compute_gae, whiten_advantages
from posttrain.rl.kl import AdaptiveKLController, FixedKLController, KL_ESTIMATORS, kl_penalty
from posttrain.rl.losses import (
    EntropyBonusOutput,
    PairwiseLossOutput,
    PolicyLossOutput,
    ValueLossOutput,
    bradley_terry_loss,
    entropy_bonus,
    explained_variance,
    ppo_policy_loss,
    value_loss,
)
from posttrain.rl.masking import (
    TruncatedResponse,
    entropy_from_logits,
    first_true_indices,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
    truncate_after_stop,
)
from posttrain.rl.rewards import PerTokenRewards, RunningMoments, no_eos_penalty, per_token_rewards

__all__ = [
    "AdaptiveKLController",
    "EntropyBonusOutput",
    "FixedKLController",
    "GAE",
    "KL_ESTIMATORS",
    "PairwiseLossOutput",
    "PerTokenRewards",
    "PolicyLossOutput",
    "RunningMoments",
    "TruncatedResponse",
    "ValueLossOutput",
    "bradley_terry_loss",
    "compute_gae",
    "entropy_bonus",
    "entropy_from_logits",
    "explained_variance",
    "first_true_indices",
    "kl_penalty",
    "logprobs_from_logits",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "no_eos_penalty",
    "per_token_rewards",
    "ppo_policy_loss",
    "truncate_after_stop",
    "value_loss",
    "whiten_advantages",
]
