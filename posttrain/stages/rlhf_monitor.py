"""What watches an RL run: collectives that keep processes in agreement, the NaN guard, held-out evaluation
with every reward source, and the early stops.

Every collective hands the accelerator tensors on ``accelerator.device``: NCCL (accelerate's backend on GPUs)
reduces only device tensors. A check that can stop the run is agreed across processes before anyone raises, so
no process is left waiting in a collective the others never reach.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from posttrain.generation import encode_prompts
from posttrain.rl import truncate_after_stop
from posttrain.stages.common import StageError
from posttrain.stages.rlhf_rewards import Responses, RewardSources, decode_responses


class Collective:
    """The loop's collectives (identity with one process)."""

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.world = accelerator.num_processes
        self.device = accelerator.device

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each value averaged over processes."""
        if self.world == 1:
            return values
        keys = sorted(values)
        local = torch.tensor([float(values[k]) for k in keys], dtype=torch.float32, device=self.device)
        return dict(zip(keys, self.accelerator.reduce(local, reduction="mean").tolist()))

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's rows of ``tensor``, concatenated."""
        return self.accelerator.gather(tensor.to(self.device).contiguous()) if self.world > 1 else tensor

    def flags(self, flag: bool) -> list[bool]:
        """``flag`` of every process, in rank order."""
        local = torch.tensor([float(flag)], device=self.device)
        return [bool(v) for v in self.gather(local).tolist()]

    def masked_moments(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, unbiased variance) of the masked entries of ``x`` over every process's batch: the whitening
        statistics of the whole batch, so that 2 processes of 4 rows normalise as 1 process of 8 does."""
        mask = mask.bool()
        if self.world == 1:
            from posttrain.rl import masked_mean, masked_var

            return masked_mean(x, mask), masked_var(x, mask, unbiased=True)
        x = x.float()
        local = torch.stack([torch.where(mask, x, 0).sum(), mask.sum().float()]).to(self.device)
        total, count = (self.accelerator.reduce(local, reduction="sum")).to(x.device).unbind()
        mean = total / count.clamp(min=1)
        spread = self.accelerator.reduce(torch.where(mask, (x - mean) ** 2, 0).sum().reshape(1).to(self.device),
                                         reduction="sum").to(x.device)[0]
        return mean, spread / (count - 1).clamp(min=1)

    def objects(self, obj: Any) -> list[Any]:
        """``obj`` of every process (picklable), in rank order."""
        if self.world == 1:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])


class Guard:
    """Stops the run on NaN or inf, on every process at once, naming the last good checkpoint."""

    def __init__(self, collective: Collective, output: Path, checkpoints):
        self.collective, self.output, self.checkpoints = collective, output, checkpoints
        self.step = 0

    def together(self, error: Exception | None) -> None:
        """Raise ``error`` (of this process, or None) on every process once any process has one: a failure on one
        process alone would leave the others waiting in the next collective."""
        if self.collective.world == 1:
            if error is not None:
                raise error
            return
        messages = self.collective.objects(None if error is None else str(error))
        if error is not None:
            raise error
        failed = [(rank, m) for rank, m in enumerate(messages) if m is not None]
        if failed:
            rank, message = failed[0]
            raise StageError(f"process {rank} stopped the run: {message}")

    def check_finite(self, tensor: torch.Tensor, what: str) -> None:
        bad = self.collective.flags(not bool(torch.isfinite(tensor.detach()).all()))
        if any(bad):
            ranks = [str(rank) for rank, b in enumerate(bad) if b]
            where = f" (on process {', '.join(ranks)})" if len(bad) > 1 else ""
            found = self.checkpoints(self.output)
            keep = f"The last good checkpoint is {found[-1]}; " if found else "No checkpoint was saved yet; "
            raise StageError(f"{what} became NaN or infinite at step {self.step + 1}{where}. {keep}lower --ppo.lr, raise "
                             "--ppo.kl_coef, or set --ppo.reward_clip, then start a new run (another --output): "
                             "--resume continues only with the saved settings.")


@torch.no_grad()
def evaluate_heldout(roles, sources: RewardSources, rows: list[dict], config, step: int, collective: Collective) -> dict[str, float]:
    """Greedy responses to the held-out prompts, scored by every reward source; each process takes its share."""
    rank, world = collective.accelerator.process_index, collective.world
    mine = rows[rank::world]
    sums = {f"eval_{name}": 0.0 for name in sources.names} | {"eval_reward": 0.0, "eval_response_length": 0.0,
                                                               "eval_hit_length_limit": 0.0}
    for start in range(0, len(mine), config.rollout.batch_size):  # as many rows a pass as a rollout has
        chunk = mine[start:start + config.rollout.batch_size]
        query, mask, _ = encode_prompts(roles.tokenizer, [r["prompt"] for r in chunk], config.rollout.max_prompt_length, roles.device)
        response, _ = roles.rollout(query, mask, config.rollout.max_new_tokens, temperature=0.0)
        cut = truncate_after_stop(response, roles.stop_ids, roles.tokenizer.pad_token_id)
        texts, ids = decode_responses(roles.tokenizer, cut.ids, cut.lengths, cut.has_stop)
        per_source, total = sources(Responses([r["prompt"] for r in chunk], chunk, texts, ids, step + 1, config.ppo.steps))
        for name, values in per_source.items():
            sums[f"eval_{name}"] += float(values.sum())
        sums["eval_reward"] += float(total.sum())
        sums["eval_response_length"] += float(cut.lengths.float().sum())
        sums["eval_hit_length_limit"] += float((~cut.has_stop).float().sum())
    totals = {k: v * world for k, v in collective.mean({**sums, "count": float(len(mine))}).items()}
    count = max(totals.pop("count"), 1.0)
    return {k: v / count for k, v in totals.items()}


@dataclass
class Stops:
    """The early stops and the best held-out reward so far (resumable)."""

    kl_above: float
    truncated_share_above: float
    eval_reward_drops: int
    best: float = -math.inf
    best_step: int = 0
    drops: int = 0
    reason: str = ""

    def observe_eval(self, record: dict[str, float]) -> bool:
        """Take a held-out evaluation; True when it is the best so far."""
        value = record["eval_reward"]
        if value > self.best:
            self.best, self.best_step, self.drops = value, record["step"], 0
            return True
        self.drops += 1
        if self.eval_reward_drops and self.drops >= self.eval_reward_drops:
            self.reason = (f"the held-out reward fell below its best ({self.best:.3f} at step {self.best_step}) "
                           f"{self.drops} evaluations in a row (--stop.eval_reward_drops {self.eval_reward_drops})")
        return False

    def observe_step(self, record: dict[str, float]) -> str:
        """The reason to stop after this step, or ""."""
        if not self.reason and self.kl_above and record["kl"] > self.kl_above:
            self.reason = f"the KL to the reference reached {record['kl']:.3f} nats (--stop.kl_above {self.kl_above})"
        if not self.reason and self.truncated_share_above and record["hit_length_limit"] > self.truncated_share_above:
            self.reason = (f"{record['hit_length_limit']:.0%} of responses hit the length limit "
                           f"(--stop.truncated_share_above {self.truncated_share_above})")
        return self.reason

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best if math.isfinite(self.best) else None, "best_step": self.best_step, "drops": self.drops}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = -math.inf if state.get("best") is None else float(state["best"])
        self.best_step, self.drops = int(state.get("best_step", 0)), int(state.get("drops", 0))


@dataclass
class HeldOut:
    """Held-out prompts and how often to score them."""

    rows: list[dict] = field(default_factory=list)
    every: int = 0

    def due(self, step: int, last: int) -> bool:
        return bool(self.rows) and self.every > 0 and (step % self.every == 0 or step == last)
