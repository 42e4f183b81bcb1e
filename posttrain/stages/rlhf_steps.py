"""The steps of one RL iteration, in the loop's order: ``collect_rollouts`` -> ``score`` -> ``advantages`` ->
``update``. Each reads and fills the one :class:`~posttrain.stages.rollout.Rollout` of the step; the math is in
posttrain.rl. The loop itself, and the algorithm table that sets which estimator runs, are in rlhf.py.
"""

from __future__ import annotations

import math
import contextlib
from collections import defaultdict
from typing import NamedTuple

import torch

from posttrain.config import RLHFConfig
from posttrain.generation import encode_prompts
from posttrain.rl import (
    AdvantageInputs,
    entropy_bonus,
    estimate_advantages,
    kl_loss,
    kl_penalty,
    no_eos_penalty,
    per_token_rewards,
    ppo_policy_loss,
    truncate_after_stop,
    value_loss,
)
from posttrain.rewards import RewardFunctionError
from posttrain.stages.rlhf_rewards import Responses, RewardSources, decode_responses
from posttrain.stages.rollout import Rollout, minibatch_rows


class Forward(NamedTuple):
    """A minibatch's training forward: (rows, width) policy log-probs and entropy, critic values or None."""

    logprobs: torch.Tensor
    entropy: torch.Tensor
    values: torch.Tensor | None


# ---------------------------------------------------------------------------------------------
# 1. rollout
# ---------------------------------------------------------------------------------------------


def sampling_uniforms(seed: int, step: int, rows: int, world: int, rank: int, max_new_tokens: int) -> torch.Tensor:
    """The numbers this process's responses draw their tokens with, (rows, max_new_tokens) float64.

    Drawn for the whole step's rows of every process from a generator of (seed, step) alone, and cut to this
    process's share: a response's tokens depend on its place in the global batch, not on the process count or
    on what ran before (a resumed run, or 1 process instead of 2, samples the same)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    every = torch.rand(rows * world, max_new_tokens, generator=generator, dtype=torch.float64)
    return every[rank * rows:(rank + 1) * rows]


def collect_rollouts(roles, rows: list[dict], config: RLHFConfig, group_size: int, step: int = 0, rank: int = 0,
                     world: int = 1) -> tuple[Rollout, int]:
    """Sample ``group_size`` responses to each prompt row (a group in consecutive rows); returns the rollout and
    how many prompts were cut to max_prompt_length."""
    rollout = config.rollout
    rows = [row for row in rows for _ in range(group_size)]
    query, query_mask, cut_prompts = encode_prompts(roles.tokenizer, [r["prompt"] for r in rows], rollout.max_prompt_length,
                                                    roles.device)
    uniforms = sampling_uniforms(config.ppo.seed, step, len(rows), world, rank, rollout.max_new_tokens)
    response, sampled = roles.rollout(query, query_mask, rollout.max_new_tokens, rollout.temperature, uniforms)
    cut = truncate_after_stop(response, roles.stop_ids, roles.tokenizer.pad_token_id)
    return Rollout(query, query_mask, cut.ids, cut.mask, cut.lengths, cut.has_stop, sampled.masked_fill(~cut.mask, 0.0),
                   rows, group_size), cut_prompts // group_size


# ---------------------------------------------------------------------------------------------
# 2. score
# ---------------------------------------------------------------------------------------------


def score(rollout: Rollout, roles, optim, sources: RewardSources, config: RLHFConfig, moments, collective, guard,
          step: int) -> Forward:
    """Rewards from every source, and old log-probs, reference log-probs and values of every response.

    The first epoch's minibatch order is fixed here, and every old log-prob and value comes from the same training
    forward, on the same minibatch view, that the first epoch runs: before the first optimizer step, old and new
    log-probs agree to the bit (the PPO ratio is exactly 1). The first minibatch's pass keeps its graph and is
    returned: ``update`` trains on it instead of running it twice (it runs through the trained module, as
    ``update``'s own passes do, and so is the one pass of its optimizer step that syncs gradients only when it is
    the step's last). The other passes need no gradient and run on the roles directly (Roles.score: passes of
    the training pass's shape, so their log-probs match it to the bit).
    """
    temperature, ppo = config.rollout.temperature, config.ppo
    size, per_step = optim.pass_size, optim.passes_per_step
    rollout.order = rollout.shuffled()
    views = [rollout.rows(rows) for rows in minibatch_rows(rollout.order, size)]
    with optim.syncing(last=min(per_step, len(views)) == 1):
        first = Forward(*optim.model(views[0], temperature, entropy_grad=ppo.entropy_coef != 0))
    with torch.no_grad():
        old, ref = (torch.zeros(rollout.mask.shape, device=rollout.mask.device) for _ in range(2))
        values = torch.zeros_like(old) if roles.has_critic else None
        for i, view in enumerate(views):
            if i == 0:  # the training pass above gave this view's old log-probs and values
                view_old, view_values, view_ref = first.logprobs, first.values, roles.reference_logprobs(view, temperature)
            else:
                view_old, view_ref, view_values = roles.score(view, temperature)
            view.scatter(old, view_old.detach())
            view.scatter(ref, view_ref)
            if values is not None:
                view.scatter(values, view_values.detach())
        rollout.old_logprobs, rollout.ref_logprobs = old.masked_fill(~rollout.mask, 0), ref.masked_fill(~rollout.mask, 0)
        rollout.values = values.masked_fill(~rollout.mask, 0) if values is not None else None

        texts, ids = decode_responses(roles.tokenizer, rollout.response, rollout.lengths, rollout.has_stop)
        batch = Responses([r["prompt"] for r in rollout.prompts], rollout.prompts, texts, ids, step + 1, ppo.steps)
        try:
            rollout.source_scores, rollout.raw_scores = sources(batch)
            failure = None
        except RewardFunctionError as err:  # a user's function failed: every process stops, not this one alone
            failure = err
        guard.together(failure)
        scores = rollout.raw_scores
        if config.rollout.penalise_no_eos:
            scores = no_eos_penalty(scores, rollout.has_stop, config.rollout.no_eos_penalty)
        if ppo.normalize_rewards:
            moments.update(collective.gather(scores))
            scores = moments.normalize(scores)
        if ppo.reward_clip > 0:
            scores = scores.clamp(-ppo.reward_clip, ppo.reward_clip)
        rollout.scores = scores
    return first


# ---------------------------------------------------------------------------------------------
# 3-4. KL-penalised rewards and advantages
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def advantages(rollout: Rollout, config: RLHFConfig, estimator: str, kl_in_loss: bool, beta: float, moments=None) -> None:
    """Per-token KL to the reference, per-token rewards (the score at the last token, minus beta * KL at every
    token when the KL is in the reward) and the estimator's advantages (and the critic's returns, for GAE)."""
    ppo, mask = config.ppo, rollout.mask
    rollout.kl = kl_penalty(rollout.old_logprobs, rollout.ref_logprobs, ppo.kl_estimator).masked_fill(~mask, 0)
    rollout.rewards = per_token_rewards(rollout.scores, rollout.kl, 0.0 if kl_in_loss else beta, mask).rewards
    out = estimate_advantages(estimator, AdvantageInputs(rollout.rewards, rollout.values, mask, rollout.group_size,
                                                         ppo.gamma, ppo.lam, ppo.whiten_advantages, ppo.scale_rewards,
                                                         moments))
    rollout.advantages, rollout.returns = out.advantages, out.returns


# ---------------------------------------------------------------------------------------------
# 5. update: PPO-clip epochs
# ---------------------------------------------------------------------------------------------


class Losses(NamedTuple):
    total: torch.Tensor
    stats: dict[str, torch.Tensor]


def minibatch_losses(out: Forward, mb, config: RLHFConfig, kl_in_loss: bool, beta: float) -> Losses:
    """The clipped policy loss (+ entropy bonus, + value loss with a critic, + beta * k3 when the KL is in the loss)."""
    ppo, max_len = config.ppo, config.rollout.max_new_tokens
    pg = ppo_policy_loss(out.logprobs, mb.old_logprobs, mb.advantages, mb.mask, ppo.clip_eps, ppo.loss_aggregation, max_len)
    ent = entropy_bonus(out.entropy, mb.mask, ppo.entropy_coef)
    total = pg.loss + ent.loss
    stats = {"policy_loss": pg.loss, "clip_frac": pg.clip_frac, "approx_kl": pg.approx_kl, "ratio": pg.ratio_mean,
             "entropy": ent.entropy}
    if out.values is not None:
        vf = value_loss(out.values, mb.values, mb.returns, mb.mask, ppo.value_clip_eps)
        total = total + ppo.vf_coef * vf.loss
        stats.update(value_loss=vf.loss, value_clip_frac=vf.clip_frac)
    if kl_in_loss:
        kl = kl_loss(out.logprobs, mb.ref_logprobs, mb.mask, beta, ppo.loss_aggregation, max_len)
        total = total + kl.loss
        stats.update(kl_loss=kl.loss)
    return Losses(total, stats)


class Optimisation:
    """The trained module and AdamW over the policy and (for PPO) the critic, both prepared by accelerate (under
    several processes, DDP averages the gradients), a linear LR decay, and steps that clip each role on its own."""

    def __init__(self, roles, config: RLHFConfig, updates_per_step: int, accelerator):
        ppo = config.ppo
        self.accelerator = accelerator
        self.groups = roles.parameter_groups()
        self.max_grad_norm = ppo.max_grad_norm
        self.pass_size, self.passes_per_step = passes(config, roles.dtype)  # responses per pass, passes per step
        optimizer = torch.optim.AdamW([{"params": params} for params in self.groups.values()], lr=ppo.lr, eps=1e-5,
                                      weight_decay=ppo.weight_decay, fused=accelerator.device.type in ("cpu", "cuda"))
        self.model, self.optimizer = accelerator.prepare(roles, optimizer)
        total = max(1, ppo.steps * updates_per_step)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda update: max(0.0, 1.0 - update / total))

    def syncing(self, last: bool):
        """The context for a training forward: gradients are averaged across processes only in the backward of the
        last minibatch of an optimizer step (DDP reads this when the forward runs)."""
        return contextlib.nullcontext() if last else self.accelerator.no_sync(self.model)

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def step(self) -> dict[str, float]:
        """Clip each role's gradients, step, advance the schedule; returns the gradient norms before clipping."""
        norms = {f"grad_norm_{name}": float(self.accelerator.clip_grad_norm_(params, self.max_grad_norm))
                 for name, params in self.groups.items()}
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norms

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def update(rollout: Rollout, first: Forward, optim: Optimisation, config: RLHFConfig, kl_in_loss: bool, beta: float,
           collective, guard) -> dict[str, float]:
    """PPO-clip epochs over minibatches of the rollout; returns the mean of each statistic.

    A minibatch runs in passes of ``ppo.micro_batch_size`` responses and ``ppo.grad_accum`` minibatches make one
    optimizer step (see `passes`); every epoch ends with one (its last group may be shorter): no gradient is
    carried into the next epoch or rollout. Statistics of the minibatches that run
    before the step's first optimizer step are also kept as ``*_before_update``: there the policy is still the
    one that sampled, so the ratio must be 1 and clip fraction and approx-KL 0.
    """
    ppo, temperature = config.ppo, config.rollout.temperature
    size, per_step = optim.pass_size, optim.passes_per_step
    stats: dict[str, list[float]] = defaultdict(list)
    updated = stopped_early = False
    steps = 0
    for epoch in range(ppo.epochs):
        batches = minibatch_rows(rollout.order if epoch == 0 else rollout.shuffled(), size)
        for start in range(0, len(batches), per_step):
            chunk = [rollout.rows(rows) for rows in batches[start:start + per_step]]
            weights = minibatch_weights(chunk, ppo.loss_aggregation, collective)
            for i, mb in enumerate(chunk):
                # 5a. epoch 1's first minibatch already ran its training forward in `score`, on these same weights
                # (that pass gave its rows' old log-probs): train on its graph instead of a second forward
                reuse = epoch == 0 and start == 0 and i == 0
                with optim.syncing(last=i == len(chunk) - 1):
                    out = first if reuse else Forward(*optim.model(mb, temperature, entropy_grad=ppo.entropy_coef != 0))
                losses = minibatch_losses(out, mb, config, kl_in_loss, beta)
                guard.check_finite(losses.total, "the loss")
                optim.backward(losses.total * weights[i])
                del out
                for key, value in losses.stats.items():
                    stats[key].append(float(value.detach()))
                    if not updated and key in ("ratio", "clip_frac", "approx_kl"):
                        stats[f"{key}_before_update"].append(float(value.detach()))
            for key, value in optim.step().items():
                stats[key].append(value)
            updated, steps = True, steps + 1
        epoch_kl = collective.mean({"kl": sum(stats["approx_kl"][-len(batches):]) / len(batches)})["kl"]
        if ppo.target_approx_kl > 0 and epoch_kl > ppo.target_approx_kl:
            stopped_early = True
            break
    out = {k: sum(v) / len(v) for k, v in stats.items() if v}
    out.update(epoch_stopped_early=float(stopped_early), optimizer_steps=float(steps))
    return out


AUTO_MICRO_BATCH = 2  # an fp32 base only: see pass_size


def pass_size(minibatch_size: int, micro_batch_size: int, fp32_base: bool) -> int:
    """Responses per forward/backward pass: ``micro_batch_size``; for 0, passes of 2 where the base is fp32 and 2
    divides the minibatch, else the whole minibatch in one pass. Measured on the PPO batch of bench/ppo_vs_trl.py
    (bench/rl_step_profile.py, 2026-12-07, idle): with an fp32 base passes of 2 took 28.9 s a step against 28.4 s and
    peaked at 2269 MiB against 3292; with a bf16 base they were 9-26% slower (18.4-21.4 s against 16.9 s) for 17%
    less memory, so a bf16 base keeps one pass."""
    if micro_batch_size:
        return min(micro_batch_size, minibatch_size)
    auto = fp32_base and minibatch_size % AUTO_MICRO_BATCH == 0
    return AUTO_MICRO_BATCH if auto else minibatch_size


def passes(config: RLHFConfig, base_dtype: torch.dtype) -> tuple[int, int]:
    """(responses per forward/backward pass, passes per optimizer step): a minibatch of ``ppo.minibatch_size``
    responses runs in passes of `pass_size`, and ``ppo.grad_accum`` minibatches make an optimizer step. Smaller
    passes keep a smaller graph alive for the same update (`minibatch_weights`)."""
    ppo = config.ppo
    size = pass_size(ppo.minibatch_size, ppo.micro_batch_size, base_dtype == torch.float32)
    return size, ppo.grad_accum * (ppo.minibatch_size // size)


def minibatch_weights(chunk: list, aggregation: str, collective) -> list[float]:
    """Each pass's share of its optimizer step's loss, for the passes of ``chunk`` (one optimizer step).

    token_mean: the pass's response tokens over the step's tokens on every process, times the number of processes
    (DDP averages their gradients), so that every token of the step weighs the same wherever it falls (a pass's
    loss is the mean over its own tokens). Without this, a pass of 2 tokens accumulated with one of 6 gave each of
    its tokens 3 times the weight. The other aggregations weigh rows, and every pass has as many rows:
    1 / passes."""
    if aggregation != "token_mean":
        return [1.0 / len(chunk)] * len(chunk)
    tokens = [float(mb.mask.sum()) for mb in chunk]
    step_tokens = collective.mean({"tokens": sum(tokens)})["tokens"] * collective.world
    return [collective.world * n / max(step_tokens, 1.0) for n in tokens]


def updates_per_step(config: RLHFConfig, responses: int) -> int:
    """Optimizer steps per RL step: per epoch, ceil(minibatches / grad_accum)."""
    return config.ppo.epochs * math.ceil(responses // config.ppo.minibatch_size / config.ppo.grad_accum)
