"""Where the RL stage's rewards come from: a reward model and/or reward functions, weighted.

Every source scores the same decoded responses. A reward model reads them through the one function that builds
its input in training and in `posttrain score` too (reward_model.reward_model_input); reward functions are called
as TRL calls them (posttrain.rewards). Each source's score is logged on its own; the reward is their weighted sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from posttrain.config import ConfigError, RLHFConfig
from posttrain.rewards import RewardFunction, load_reward_function
from posttrain.stages.reward_model import pad_right, pool, reward_model_rows


@dataclass
class Responses:
    """What every reward source reads: one entry per response."""

    prompts: list  # the prompt (text or messages) of each response
    rows: list[dict[str, Any]]  # the prompt rows, with their other columns
    texts: list[str]  # the responses, decoded without their stop token
    ids: list[list[int]]  # the responses' token ids
    step: int
    max_steps: int


def decode_responses(tokenizer, response: torch.Tensor, lengths: torch.Tensor, has_stop: torch.Tensor) -> tuple[list[str], list[list[int]]]:
    """Texts (without the stop token) and token ids of sampled responses."""
    ids = [r[:n].tolist() for r, n in zip(response, lengths.tolist())]
    texts = [tokenizer.decode(i[:-1] if stopped else i, skip_special_tokens=True) for i, stopped in zip(ids, has_stop.tolist())]
    return texts, ids


class RewardModelSource:
    """A ``posttrain rm`` checkpoint: its adapter and head on the shared base, or a separate model on its own base."""

    name = "reward_model"

    def __init__(self, roles):
        self.roles = roles

    @torch.no_grad()
    def __call__(self, batch: Responses) -> torch.Tensor:
        roles = self.roles
        if roles.separate_reward is not None:
            return torch.tensor(roles.separate_reward.score(batch.prompts, batch.texts), device=roles.device)
        from posttrain.stages.rlhf_roles import REWARD

        rows, starts = reward_model_rows(roles.tokenizer, batch.prompts, batch.texts)
        ids, mask = pad_right(rows, roles.tokenizer.pad_token_id, roles.device)
        # the columns before the earliest response start are prompt in every row: a group's rows share them
        (hidden,) = roles.hidden([REWARD], ids, mask, roles.reward_layers, context=min(starts, default=0))
        return roles.reward_head(pool(hidden.float(), mask, roles.reward_pooling, torch.tensor(starts))).squeeze(-1)


class FunctionSource:
    """A reward function (see posttrain.rewards), given the prompt rows' other columns."""

    def __init__(self, fn: RewardFunction, name: str, device: torch.device):
        self.fn, self.name, self.device = fn, name, device

    def __call__(self, batch: Responses) -> torch.Tensor:
        conversational = bool(batch.prompts) and isinstance(batch.prompts[0], list)
        completions = [[{"role": "assistant", "content": t}] for t in batch.texts] if conversational else batch.texts
        columns = {k: [row.get(k) for row in batch.rows] for k in batch.rows[0] if k != "prompt"} if batch.rows else {}
        values = self.fn(batch.prompts, completions, batch.ids, columns, batch.step, batch.max_steps)
        return torch.tensor(values, dtype=torch.float32, device=self.device)


@dataclass
class RewardSources:
    """The weighted reward sources of a run."""

    sources: list[Callable[[Responses], torch.Tensor]]
    weights: list[float]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    def __call__(self, batch: Responses) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """({source name: (B,) score}, (B,) weighted sum)."""
        scores = {s.name: s(batch) for s in self.sources}
        total = sum(w * scores[s.name] for s, w in zip(self.sources, self.weights))
        return scores, total


def load_reward_functions(config: RLHFConfig, columns: set[str], source: str) -> list[RewardFunction]:
    """The run's reward functions, imported and checked against the prompt file's columns before any model loads."""
    functions = [load_reward_function(spec) for spec in config.reward_fn.split(",") if spec.strip()]
    for fn in functions:
        fn.check_columns(columns, source)
    return functions


def source_weights(config: RLHFConfig, count: int) -> list[float]:
    if not config.reward_weights.strip():
        return [1.0] * count
    try:
        weights = [float(w) for w in config.reward_weights.split(",")]
    except ValueError:
        raise ConfigError(f"--reward-weights {config.reward_weights!r}: expected comma-separated numbers.") from None
    if len(weights) != count:
        order = (["the reward model"] if config.reward_model else []) + [f.strip() for f in config.reward_fn.split(",") if f.strip()]
        raise ConfigError(f"--reward-weights has {len(weights)} weights for {count} reward sources ({', '.join(order)}); "
                          "give one weight per source, in that order.")
    return weights


def reward_sources(config: RLHFConfig, roles, functions: list[RewardFunction]) -> RewardSources:
    sources: list[Any] = [RewardModelSource(roles)] if config.reward_model else []
    taken = {s.name for s in sources}
    for fn in functions:
        name, n = fn.name, 2
        while name in taken:  # the same function twice, or one called reward_model
            name, n = f"{fn.name}_{n}", n + 1
        taken.add(name)
        sources.append(FunctionSource(fn, name, roles.device))
    return RewardSources(sources, source_weights(config, len(sources)))
