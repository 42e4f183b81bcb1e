"""PPO-based RLHF: the policy optimised against a reward model under a KL leash to the reference.

InstructGPT-style PPO (Ouyang et al. 2022; Ziegler et al. 2019), following the implementation details in
Huang et al., "The N Implementation Details of RLHF with PPO". Every role lives on one copy of the base
weights (see rlhf_roles.py); the math is in posttrain.rl. Runs under ``accelerate launch`` with several
processes: each samples its own share of prompts, and gradients are averaged across processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from posttrain.config import ConfigError, RLHFConfig, require, to_dict
from posttrain.data import load_prompts
from posttrain.generation import encode_prompts
from posttrain.models import resolve_model
from posttrain.report import plot_curves, write_metrics, write_model_card
from posttrain.rl import (
    AdaptiveKLController,
    FixedKLController,
    RunningMoments,
    compute_gae,
    entropy_bonus,
    explained_variance,
    kl_penalty,
    no_eos_penalty,
    per_token_rewards,
    ppo_policy_loss,
    truncate_after_stop,
    value_loss,
    whiten_advantages,
)
from posttrain.stages.common import StageError, finished_checkpoint, log, save_stage_files
from posttrain.stages.rlhf_roles import CRITIC, POLICY, Roles
from posttrain.stages.rlhf_state import checkpoint_dirs, load_checkpoint, rng_state, save_adapter, save_checkpoint, set_rng_state


def check_config(config: RLHFConfig) -> None:
    require(config, "reward_model", "prompts", "output")
    rollout, ppo = config.rollout, config.ppo
    if rollout.max_new_tokens < 1:
        raise ConfigError(f"--rollout.max_new_tokens is {rollout.max_new_tokens}: responses need at least 1 token.")
    if rollout.batch_size < 1 or ppo.minibatch_size < 1 or rollout.batch_size % ppo.minibatch_size:
        raise ConfigError(f"--rollout.batch_size ({rollout.batch_size}) must be a positive multiple of --ppo.minibatch_size "
                          f"({ppo.minibatch_size}).")
    if rollout.temperature <= 0:
        raise ConfigError("--rollout.temperature must be > 0: PPO needs sampled responses.")
    if ppo.steps < 1:
        raise ConfigError("--ppo.steps must be at least 1.")


def prompt_indices(n_prompts: int, cursor: int, count: int, seed: int) -> list[int]:
    """Indices ``cursor .. cursor+count`` of an endless stream of seeded per-epoch permutations."""
    out = []
    for position in range(cursor, cursor + count):
        epoch, offset = divmod(position, n_prompts)
        order = torch.randperm(n_prompts, generator=torch.Generator().manual_seed(seed + epoch))
        out.append(int(order[offset]))
    return out


@dataclass
class RowView:
    """Some rows of a rollout batch without their all-padding columns.

    The batch's prompts are left-padded and its responses right-padded to the longest in the whole batch;
    a minibatch's own longest prompt and response are often shorter, and its forward passes need not pay
    for the rest. ids, attn: (rows, context + width); mask: (rows, width) bool, the response tokens.
    """

    rows: torch.Tensor
    ids: torch.Tensor
    attn: torch.Tensor
    mask: torch.Tensor
    context: int
    width: int

    def scatter(self, into: torch.Tensor, values: torch.Tensor) -> None:
        """Write per-token ``values`` (rows, width) into the batch-shaped ``into`` (batch, response_len)."""
        into[self.rows, :self.width] = values.to(into.dtype)


def view_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor, context: int,
              rows: torch.Tensor) -> RowView:
    first = int(attention_mask[rows, :context].any(0).long().argmax())
    filled = response_mask[rows].any(0).nonzero()
    width = int(filled[-1]) + 1 if len(filled) else 1
    return RowView(rows, input_ids[rows, first:context + width], attention_mask[rows, first:context + width],
                   response_mask[rows, :width], context - first, width)


def policy_and_values(roles: Roles, rows: RowView, temperature: float, entropy_grad: bool):
    """Policy log-probs and entropy, and critic values, of a minibatch's rows from one shared pass, with graphs."""
    policy, critic = roles.hidden([POLICY, CRITIC], rows.ids, rows.attn)
    logprobs, entropy = roles.logprobs(POLICY, policy, rows.ids, rows.context, temperature, with_entropy=True, entropy_grad=entropy_grad)
    return logprobs, entropy, roles.values(critic, rows.context)


def _sync_grads(params: list[torch.nn.Parameter], accelerator) -> None:
    """Average gradients across processes (one flat all-reduce)."""
    if accelerator.num_processes == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset: offset + g.numel()].view_as(g).clone()
        offset += g.numel()


def _mean_across(accelerator, values: dict[str, float]) -> dict[str, float]:
    if accelerator.num_processes == 1:
        return values
    keys = sorted(values)
    reduced = accelerator.reduce(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64), reduction="mean")
    return dict(zip(keys, reduced.tolist()))


def run_rlhf(config: RLHFConfig, halt_after_step: int | None = None, on_step=None) -> Path:
    """Run PPO as ``config`` says; returns the output folder (a chat checkpoint of the policy adapter).

    ``halt_after_step`` stops right after that step's checkpoint, as a kill would (used by the resume test).
    ``on_step(roles, record)`` is called after every step with the models and that step's metrics.
    """
    from accelerate import Accelerator

    check_config(config)
    rollout, ppo = config.rollout, config.ppo
    output = Path(config.output)
    prompts = load_prompts(config.prompts).rows  # validated before any model loads
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    rank, world = accelerator.process_index, accelerator.num_processes
    torch.manual_seed(ppo.seed)  # every process builds identical fresh adapters

    roles = Roles(config, device=accelerator.device)
    torch.manual_seed(ppo.seed + rank)  # and samples its own rollouts
    tokenizer = roles.tokenizer
    params = roles.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=ppo.lr, eps=1e-5, fused=accelerator.device.type in ("cpu", "cuda"))
    minibatches = rollout.batch_size // ppo.minibatch_size
    total_updates = max(1, ppo.steps * ppo.epochs * minibatches // ppo.grad_accum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda update: max(0.0, 1.0 - update / total_updates))
    kl_ctl = (AdaptiveKLController(ppo.kl_coef, ppo.target_kl, ppo.kl_horizon) if ppo.adaptive_kl
              else FixedKLController(ppo.kl_coef))
    moments = RunningMoments()
    history: list[dict] = []
    samples: list[dict] = []
    start_step, cursor = 0, 0

    # resume: adapters, head, optimizer, scheduler, KL controller, normaliser, RNG and prompt position
    if config.resume:
        found = checkpoint_dirs(output)
        if not found:
            raise StageError(f"--resume: no checkpoint under {output / 'checkpoints'}; run without --resume.")
        state = load_checkpoint(found[-1], roles)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        kl_ctl.load_state_dict(state["kl_controller"])
        moments.load_state_dict(state["reward_moments"])
        start_step, cursor, history, samples = state["step"], state["cursor"], state["history"], state["samples"]
        set_rng_state(state["rng"][rank])
        log(f"resumed from {found[-1]} at step {start_step}")

    base_path = resolve_model(roles.base_name)
    progress = tqdm(range(start_step, ppo.steps), initial=start_step, total=ppo.steps, desc="PPO",
                    disable=not accelerator.is_main_process, dynamic_ncols=True)
    for step in progress:
        started = time.time()
        # 1. rollout: sample responses for this process's share of the prompts
        indices = prompt_indices(len(prompts), cursor, rollout.batch_size * world, ppo.seed)
        cursor += rollout.batch_size * world
        batch_prompts = [prompts[i]["prompt"] for i in indices[rank * rollout.batch_size:(rank + 1) * rollout.batch_size]]
        query, query_mask, _ = encode_prompts(tokenizer, batch_prompts, rollout.max_prompt_length, accelerator.device)
        response = roles.rollout(query, query_mask, rollout.max_new_tokens, rollout.temperature, rollout.top_p)
        cut = truncate_after_stop(response, roles.stop_ids, tokenizer.pad_token_id)
        mask = cut.mask
        input_ids = torch.cat([query, cut.ids], dim=1)
        attention_mask = torch.cat([query_mask, mask.long()], dim=1)
        context = query.shape[1]
        rollout_seconds = time.time() - started

        # 2. score: reward model at the last response token; old log-probs, reference log-probs, values.
        # Epoch 1's first minibatch trains on the rollout's own weights, so its training forward gives the old
        # log-probs and values of its rows: those rows are not scored twice. Policy and critic (and, for the
        # scores, the reference) share each batched pass: see Roles.hidden.
        order = torch.randperm(rollout.batch_size)
        first = view_rows(input_ids, attention_mask, mask, context, order[:ppo.minibatch_size])
        logprobs, entropy, values = policy_and_values(roles, first, rollout.temperature, ppo.entropy_coef != 0)
        with torch.no_grad():
            scores = roles.scores(query, query_mask, cut.ids, cut.lengths, batch_prompts)
            raw_scores = scores.clone()
            if rollout.penalise_no_eos:
                scores = no_eos_penalty(scores, cut.has_stop, rollout.no_eos_penalty)
            if ppo.normalize_rewards:
                moments.update(torch.cat(accelerator.gather(scores.unsqueeze(0)).unbind()) if world > 1 else scores)
                scores = moments.normalize(scores)
            if ppo.reward_clip > 0:
                scores = scores.clamp(-ppo.reward_clip, ppo.reward_clip)
            if not torch.isfinite(scores).all():
                _halt_on_nan(output, step, "reward scores")
            old_logprobs, ref_logprobs, old_values = (torch.zeros(mask.shape, device=mask.device) for _ in range(3))
            first.scatter(old_logprobs, logprobs.detach())
            first.scatter(old_values, values.detach())
            # the reference sees each row in the same padded shape as the policy, so at the first step KL is 0 exactly
            (reference,) = roles.hidden([roles.reference_adapter], first.ids, first.attn)
            first.scatter(ref_logprobs, roles.logprobs(roles.reference_adapter, reference, first.ids, first.context, rollout.temperature))
            if rollout.batch_size > ppo.minibatch_size:
                rest = view_rows(input_ids, attention_mask, mask, context, order[ppo.minibatch_size:])
                policy, reference, critic = roles.hidden([POLICY, roles.reference_adapter, CRITIC], rest.ids, rest.attn)
                rest.scatter(old_logprobs, roles.logprobs(POLICY, policy, rest.ids, rest.context, rollout.temperature))
                rest.scatter(ref_logprobs, roles.logprobs(roles.reference_adapter, reference, rest.ids, rest.context, rollout.temperature))
                rest.scatter(old_values, roles.values(critic, rest.context))
            old_logprobs, ref_logprobs, old_values = (t.masked_fill(~mask, 0) for t in (old_logprobs, ref_logprobs, old_values))

            # 3. KL-penalised per-token rewards: -beta * KL at every token, the score at the last one
            kl = kl_penalty(old_logprobs, ref_logprobs, ppo.kl_estimator).masked_fill(~mask, 0)
            beta = kl_ctl.value
            rewards = per_token_rewards(scores, kl, beta, mask)

            # 4. advantages and returns (GAE), advantages whitened
            advantages, returns = compute_gae(old_values, rewards.rewards, mask, ppo.gamma, ppo.lam)
            if ppo.whiten_advantages:
                advantages = whiten_advantages(advantages, mask)
        score_seconds = time.time() - started - rollout_seconds

        # 5. PPO epochs over minibatches
        stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "clip_frac", "value_clip_frac",
                                                         "approx_kl", "entropy", "ratio")}
        stopped_early = False
        for epoch in range(ppo.epochs):
            if epoch:
                order = torch.randperm(rollout.batch_size)
            for number, start in enumerate(range(0, rollout.batch_size, ppo.minibatch_size)):
                mb = first if epoch == number == 0 else view_rows(input_ids, attention_mask, mask, context,
                                                                  order[start:start + ppo.minibatch_size])
                rows, width, m = mb.rows, mb.width, mb.mask
                if mb is not first:
                    logprobs, entropy, values = policy_and_values(roles, mb, rollout.temperature, ppo.entropy_coef != 0)
                pg = ppo_policy_loss(logprobs, old_logprobs[rows, :width], advantages[rows, :width], m, ppo.clip_eps)
                ent = entropy_bonus(entropy, m, ppo.entropy_coef)
                vf = value_loss(values, old_values[rows, :width], returns[rows, :width], m, ppo.value_clip_eps)
                if not torch.isfinite(pg.loss + ent.loss):
                    _halt_on_nan(output, step, "the PPO policy loss")
                if not torch.isfinite(vf.loss):
                    _halt_on_nan(output, step, "the PPO value loss")
                # policy and critic losses touch disjoint parameters: one backward through the shared pass
                ((pg.loss + ent.loss + ppo.vf_coef * vf.loss) / ppo.grad_accum).backward()
                del logprobs, entropy, values
                if (number + 1) % ppo.grad_accum == 0:
                    _sync_grads(params, accelerator)
                    torch.nn.utils.clip_grad_norm_(params, ppo.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                for key, value in (("policy_loss", pg.loss), ("value_loss", vf.loss), ("clip_frac", pg.clip_frac),
                                   ("value_clip_frac", vf.clip_frac), ("approx_kl", pg.approx_kl),
                                   ("entropy", ent.entropy), ("ratio", pg.ratio_mean)):
                    stats[key].append(float(value.detach()))
            epoch_kl = _mean_across(accelerator, {"kl": sum(stats["approx_kl"][-minibatches:]) / minibatches})["kl"]
            if ppo.target_approx_kl > 0 and epoch_kl > ppo.target_approx_kl:
                stopped_early = True
                break

        # 6. KL controller, metrics, samples, checkpoint
        sequence_kl = kl.sum(1)
        step_stats = _mean_across(accelerator, {
            "reward_mean": raw_scores.mean().item(), "reward_std": raw_scores.std().item() if len(raw_scores) > 1 else 0.0,
            "score_used": scores.mean().item(), "kl": sequence_kl.mean().item(),
            "non_score_reward": rewards.non_score_rewards.sum(1).mean().item(),
            "response_length": cut.lengths.float().mean().item(),
            "hit_length_limit": (~cut.has_stop).float().mean().item(),
            "explained_variance": float(explained_variance(old_values, returns, mask).nan_to_num(0.0)),
            **{k: sum(v) / len(v) for k, v in stats.items() if v},
        })
        kl_ctl.update(step_stats["kl"], rollout.batch_size * world)
        record = {"step": step + 1, **step_stats, "beta": beta, "lr": scheduler.get_last_lr()[0],
                  "epoch_stopped_early": float(stopped_early), "rollout_seconds": rollout_seconds,
                  "score_seconds": score_seconds, "optimise_seconds": time.time() - started - rollout_seconds - score_seconds,
                  "step_seconds": time.time() - started}
        history.append(record)
        if step == start_step == 0 or step + 1 == ppo.steps:
            samples.extend(_sample_rows(step + 1, tokenizer, batch_prompts, cut, raw_scores))
        progress.set_postfix(reward=f"{record['reward_mean']:.3f}", kl=f"{record['kl']:.3f}",
                             len=f"{record['response_length']:.1f}", beta=f"{beta:.3f}")

        if on_step is not None:
            on_step(roles, record)
        done = step + 1
        if (ppo.save_steps and done % ppo.save_steps == 0) or done == ppo.steps or done == halt_after_step:
            rngs = [None] * world
            if world > 1:
                import torch.distributed as dist

                dist.all_gather_object(rngs, rng_state())
            else:
                rngs = [rng_state()]
            if accelerator.is_main_process:
                save_checkpoint(output, done, roles, base_path, {
                    "step": done, "cursor": cursor, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "kl_controller": kl_ctl.state_dict(), "reward_moments": moments.state_dict(),
                    "history": history, "samples": samples, "config": to_dict(config),
                }, rngs)
            accelerator.wait_for_everyone()
        if halt_after_step is not None and done == halt_after_step:
            log(f"halting after step {done} as asked")
            return output

    if accelerator.is_main_process:
        _write_final(output, config, roles, base_path, history, samples)
    accelerator.wait_for_everyone()
    return output


def _halt_on_nan(output: Path, step: int, what: str) -> None:
    found = checkpoint_dirs(output)
    keep = f"The last good checkpoint is {found[-1]}; " if found else "No checkpoint was saved yet; "
    raise StageError(f"{what} became NaN or infinite at PPO step {step + 1}. {keep}lower --ppo.lr, raise --ppo.kl_coef, "
                     "or set --ppo.reward_clip, then run again with --resume.")


def _sample_rows(step: int, tokenizer, prompts: list, cut, scores: torch.Tensor) -> list[dict]:
    rows = []
    for prompt, ids, n, stopped, score in zip(prompts, cut.ids, cut.lengths.tolist(), cut.has_stop.tolist(), scores.tolist()):
        text = prompt[-1]["content"] if isinstance(prompt, list) else prompt
        rows.append({"step": step, "prompt": text, "response": tokenizer.decode(ids[:n], skip_special_tokens=True).strip(),
                     "reward": score, "length": n, "stopped": stopped})
    return rows


def _samples_markdown(samples: list[dict]) -> str:
    lines = ["| step | prompt | response | reward | tokens |", "|---|---|---|---|---|"]
    for row in samples:
        cells = [str(row["step"]), row["prompt"], row["response"] + ("" if row["stopped"] else " …(cut)"),
                 f"{row['reward']:.3f}", str(row["length"])]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines)


def _write_final(output: Path, config: RLHFConfig, roles: Roles, base_path: str, history: list[dict], samples: list[dict]) -> None:
    from safetensors.torch import save_file

    first, last = history[0], history[-1]
    window = history[-max(1, len(history) // 5):]
    final = {
        "steps": len(history),
        "reward_first": first["reward_mean"], "reward_last": last["reward_mean"],
        "reward_last_window": sum(h["reward_mean"] for h in window) / len(window),
        "kl_last_window": sum(h["kl"] for h in window) / len(window),
        "response_length_first": first["response_length"], "response_length_last": last["response_length"],
        "hit_length_limit_last": last["hit_length_limit"], "beta_last": last["beta"],
        "seconds_per_step": sum(h["step_seconds"] for h in history) / len(history),
    }
    with finished_checkpoint(output) as folder:
        save_adapter(roles.model, POLICY, folder, base_path)
        save_adapter(roles.model, "critic", folder / "critic", base_path)
        save_file({k: v.detach().cpu() for k, v in roles.value_head.state_dict().items()}, str(folder / "critic" / "value_head.safetensors"))
        roles.tokenizer.save_pretrained(folder)
        write_metrics(folder, final, history, samples=samples)
        plots = [plot_curves(folder / "ppo.png", history, [
            ("reward-model score", ["reward_mean"]), ("KL to reference (nats/response)", ["kl"]),
            ("response length (tokens)", ["response_length"]), ("hit length limit (share)", ["hit_length_limit"]),
        ], "PPO: reward next to KL and length (watch for reward hacking)"),
            plot_curves(folder / "ppo_losses.png", history, [
                ("losses", ["policy_loss", "value_loss"]), ("PPO health", ["clip_frac", "approx_kl"]),
                ("entropy", ["entropy"]), ("critic", ["explained_variance"]), ("beta", ["beta"]),
            ], "PPO optimisation statistics")]
        (folder / "samples.md").write_text("# Sampled responses with their rewards\n\n" + _samples_markdown(samples) + "\n")
        write_model_card(folder, "RLHF (PPO)", roles.base_name, config.prompts, to_dict(config), final,
                         [p for p in plots if p], notes=f"Reward model: `{config.reward_model}`. Samples: samples.md.", output=output)
        save_stage_files(folder, "rlhf", config, roles.base_name, reward_model=config.reward_model)
    log(f"PPO done: reward {final['reward_first']:.3f} -> {final['reward_last_window']:.3f} (last-window mean), "
        f"KL {final['kl_last_window']:.3f}, length {final['response_length_first']:.1f} -> {final['response_length_last']:.1f}; "
        f"saved to {output}")
