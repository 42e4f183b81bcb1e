"""Online RL: PPO, GRPO, RLOO and REINFORCE++ on one loop, against reward models and reward functions.

PPO follows InstructGPT (Ouyang et al. 2022; Ziegler et al. 2019) and "The N Implementation Details of RLHF
with PPO" (Huang et al.); the critic-free algorithms replace the critic's GAE with a baseline from the other
responses to the same prompt (GRPO, RLOO) or from the batch (REINFORCE++): see posttrain.rl.advantages. Every
algorithm updates the policy with PPO-clip epochs. Every role lives on one copy of the base weights
(rlhf_roles.py). Runs under ``accelerate launch``: each process samples its own prompts (a prompt's group stays
on one process), the trained module is prepared by accelerate (DDP averages the gradients), and batch-wide
statistics (advantage whitening, reward normalisation, metrics) are taken over every process's rows.

One step, as the loop below reads:
    1. rollout     sample group_size responses to each of this process's prompts       (collect_rollouts)
    2. score       every reward source; old and reference log-probs, critic values      (score)
    3. rewards     the KL to the reference, in the per-token reward or kept for the loss (advantages)
    4. advantages  the algorithm's estimator: GAE, group-normalised, leave-one-out, ... (advantages)
    5. update      PPO-clip epochs over minibatches                                     (update)
    6. log         metrics, held-out evaluation, early stops, checkpoint   (log_step, evaluate, save)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from posttrain.config import ConfigError, RLHFConfig, require, to_dict
from posttrain.data import load_prompts, split_holdout
from posttrain.models import resolve_model
from posttrain.rl import AdaptiveKLController, FixedKLController, RunningMoments, explained_variance, masked_mean
from posttrain.stages.common import StageError, check_start, log, sharding
from posttrain.stages.rlhf_monitor import Collective, Guard, HeldOut, Stops, evaluate_heldout
from posttrain.stages.rlhf_report import sample_rows, save_best, write_final
from posttrain.stages.rlhf_rewards import load_reward_functions, reward_sources, source_weights
from posttrain.stages.rlhf_roles import load_roles
from posttrain.stages.rlhf_state import checkpoint_dirs, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from posttrain.stages.rlhf_steps import (Optimisation, advantages, collect_rollouts, pass_size, score, update,
                                         updates_per_step)
from posttrain.tracking import accelerator_settings, log_metrics, start_tracking, stop_tracking


@dataclass(frozen=True)
class Algorithm:
    """What an ``--algo`` name sets: its advantage estimator (posttrain.rl.ADVANTAGE_ESTIMATORS), whether it
    trains a critic, its responses per prompt, and where its KL leash acts by default."""

    estimator: str
    critic: bool
    group_size: int
    kl_in: str


ALGORITHMS = {
    "ppo": Algorithm("gae", critic=True, group_size=1, kl_in="reward"),
    "grpo": Algorithm("grpo", critic=False, group_size=4, kl_in="loss"),
    "rloo": Algorithm("rloo", critic=False, group_size=4, kl_in="reward"),
    "reinforce_pp": Algorithm("reinforce_pp", critic=False, group_size=1, kl_in="reward"),
}


@dataclass(frozen=True)
class Plan:
    """A run's algorithm with its settings resolved: group size, KL placement, responses per process and step."""

    algo: Algorithm
    group_size: int
    kl_in_loss: bool
    responses: int

    @property
    def prompts(self) -> int:
        """Prompts per process and step: the same number of responses whatever the algorithm (the same budget)."""
        return self.responses // self.group_size


def check_config(config: RLHFConfig) -> Plan:
    require(config, "prompts", "output")
    if not config.reward_model and not config.reward_fn.strip():
        raise ConfigError("missing a reward: pass --reward-model (a `posttrain rm` checkpoint) and/or --reward-fn "
                          "module:function.")
    rollout, ppo = config.rollout, config.ppo
    algo = ALGORITHMS[config.algo]
    group = rollout.group_size or algo.group_size
    if rollout.max_new_tokens < 1:
        raise ConfigError(f"--rollout.max_new_tokens is {rollout.max_new_tokens}: responses need at least 1 token.")
    if rollout.temperature <= 0:
        raise ConfigError("--rollout.temperature must be > 0: online RL needs sampled responses.")
    if rollout.top_p != 1.0:
        raise ConfigError(f"--rollout.top_p is {rollout.top_p}: the RL stage samples from the full distribution (the ratio "
                          "and KL are computed over it, and a nucleus cut would make them wrong); leave it at 1.0 and "
                          "lower --rollout.temperature to sample more conservatively.")
    if algo.estimator in ("grpo", "rloo") and group < 2:
        raise ConfigError(f"--algo {config.algo} compares responses to the same prompt: --rollout.group_size must be at "
                          f"least 2 (it is {group}).")
    responses = rollout.batch_size
    if responses < 1 or responses % group:
        raise ConfigError(f"--rollout.batch_size ({responses} responses a step) must be a positive multiple of "
                          f"--rollout.group_size ({group} responses to each prompt).")
    if ppo.minibatch_size < 1 or responses % ppo.minibatch_size:
        raise ConfigError(f"--rollout.batch_size ({responses} responses a step) must be a positive multiple of "
                          f"--ppo.minibatch_size ({ppo.minibatch_size}).")
    if ppo.micro_batch_size and ppo.minibatch_size % pass_size(ppo.minibatch_size, ppo.micro_batch_size, False):
        raise ConfigError(f"--ppo.minibatch_size ({ppo.minibatch_size}) must be a multiple of --ppo.micro_batch_size "
                          f"({ppo.micro_batch_size}), the responses of one forward pass; 0 picks the pass size from "
                          "the base's precision.")
    if ppo.grad_accum < 1 or ppo.epochs < 1 or ppo.steps < 1:
        raise ConfigError("--ppo.grad_accum, --ppo.epochs and --ppo.steps must be at least 1.")
    kl_in = algo.kl_in if ppo.kl_in == "auto" else ppo.kl_in
    return Plan(algo, group, kl_in == "loss", responses)


def prompt_indices(n_prompts: int, cursor: int, count: int, seed: int) -> list[int]:
    """Indices ``cursor .. cursor+count`` of an endless stream of seeded per-epoch permutations."""
    out = []
    for position in range(cursor, cursor + count):
        epoch, offset = divmod(position, n_prompts)
        order = torch.randperm(n_prompts, generator=torch.Generator().manual_seed(seed + epoch))
        out.append(int(order[offset]))
    return out


@dataclass
class RunState:
    """Everything of a run besides weights and optimizer that a resume restores."""

    kl_ctl: AdaptiveKLController | FixedKLController
    stops: Stops
    moments: RunningMoments = field(default_factory=RunningMoments)
    step: int = 0
    cursor: int = 0
    history: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    start_eval: dict | None = None  # the held-out evaluation of the starting policy (step 0)

    def state_dict(self) -> dict:
        return {"step": self.step, "cursor": self.cursor, "kl_controller": self.kl_ctl.state_dict(),
                "reward_moments": self.moments.state_dict(), "stops": self.stops.state_dict(),
                "history": self.history, "samples": self.samples, "start_eval": self.start_eval}

    def load_state_dict(self, state: dict) -> None:
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.moments.load_state_dict(state["reward_moments"])
        self.stops.load_state_dict(state.get("stops", {}))
        self.step, self.cursor, self.history, self.samples = state["step"], state["cursor"], state["history"], state["samples"]
        self.start_eval = state.get("start_eval")


def new_run_state(config: RLHFConfig) -> RunState:
    ppo, stop = config.ppo, config.stop
    kl_ctl = AdaptiveKLController(ppo.kl_coef, ppo.target_kl, ppo.kl_horizon) if ppo.adaptive_kl else FixedKLController(ppo.kl_coef)
    return RunState(kl_ctl, Stops(stop.kl_above, stop.truncated_share_above, stop.eval_reward_drops))


def held_out_prompts(config: RLHFConfig, rows: list[dict]) -> tuple[list[dict], HeldOut]:
    """(training prompt rows, held-out prompts): --eval_prompts, or a --eval.share split of --prompts."""
    if config.eval_prompts:
        same = config.eval_prompts == config.prompts  # the subset and columns are --prompts' dataset's
        held = load_prompts(config.eval_prompts, config.eval_split, config.data_subset if same else "",
                            config.data_columns if same else None).rows
    elif config.eval.share > 0:
        rows, held = split_holdout(rows, config.eval.share, config.ppo.seed)
    else:
        held = []
    return rows, HeldOut(held[:config.eval.max_prompts], config.eval.every or (10 if held else 0))


def refuse_sharded(accelerator) -> None:
    """The RL stage runs data parallel: every process holds the whole model. Under FSDP or DeepSpeed the rollouts
    would sample from sharded weights, which the stage does not gather yet, so it stops before loading anything."""
    kind = sharding(accelerator)
    if kind:
        raise StageError(f"posttrain rlhf does not run under {kind} yet (its rollouts would sample from sharded "
                         "weights): launch it data parallel, `accelerate launch --config_file configs/accelerate/ddp.yaml "
                         "-m posttrain.cli rlhf ...`; where the base does not fit on one GPU, --quantization 4bit (QLoRA) "
                         "makes it about a quarter of its bf16 size.")


@dataclass
class Session:
    """What every step of a run uses and none changes: the processes, the models, the reward sources, the
    optimisation and the prompts (built once by ``start``)."""

    config: RLHFConfig
    plan: Plan
    output: Path
    accelerator: object
    collective: Collective
    roles: object
    sources: object
    optim: Optimisation
    guard: Guard
    base_path: str
    prompts: list[dict]
    heldout: HeldOut

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def run_rlhf(config: RLHFConfig, halt_after_step: int | None = None, on_step=None, accelerator=None) -> Path:
    """Run the online-RL stage as ``config`` says; returns the output folder (a chat checkpoint of the policy).

    ``halt_after_step`` stops right after that step's checkpoint, as a kill would (used by the resume test).
    ``on_step(roles, record)`` is called after every step with the models and that step's metrics.
    ``accelerator``: an ``accelerate.Accelerator`` to run under (default: a new one).
    """
    s, run = start(config, accelerator)
    plan, roles, rank, world = s.plan, s.roles, s.accelerator.process_index, s.collective.world
    if s.heldout.rows and not config.resume:  # the starting point of the held-out curve, and the first "best"
        run.start_eval = evaluate(s, run, 0)
        log(f"held-out reward of the starting policy: {run.start_eval['eval_reward']:.3f} on {len(s.heldout.rows)} prompts")
        log_metrics(s.accelerator, run.start_eval)

    progress = tqdm(range(run.step, config.ppo.steps), initial=run.step, total=config.ppo.steps, desc=config.algo.upper(),
                    disable=not s.main, dynamic_ncols=True)
    first_step = run.step
    for step in progress:
        started, s.guard.step = time.time(), step
        # 1. rollout: this process's share of the step's prompts, group_size responses to each
        indices = prompt_indices(len(s.prompts), run.cursor, plan.prompts * world, config.ppo.seed)
        run.cursor += plan.prompts * world
        mine = [s.prompts[i] for i in indices[rank * plan.prompts:(rank + 1) * plan.prompts]]
        rollout, prompts_cut = collect_rollouts(roles, mine, config, plan.group_size, step, rank, world)
        timings = {"rollout_seconds": time.time() - started}
        # 2. score: rewards, old and reference log-probs, values (the first minibatch's training forward included)
        first = score(rollout, roles, s.optim, s.sources, config, run.moments, s.collective, s.guard, step)
        s.guard.check_finite(torch.stack([rollout.raw_scores, rollout.scores]), "the reward scores")  # raw: before a penalty hides it
        # 3-4. KL-penalised per-token rewards and advantages by the algorithm's estimator
        beta = run.kl_ctl.value
        advantages(rollout, config, plan.algo.estimator, plan.kl_in_loss, beta, s.collective.masked_moments)
        timings["score_seconds"] = time.time() - started - timings["rollout_seconds"]
        # 5. PPO-clip epochs
        stats = update(rollout, first, s.optim, config, plan.kl_in_loss, beta, s.collective, s.guard)
        del first
        timings["optimise_seconds"] = time.time() - started - sum(timings.values())
        # 6. metrics, held-out evaluation, early stops, checkpoint
        record = log_step(step, rollout, stats, beta, prompts_cut, run, s.optim, s.collective, plan, timings, started)
        if step == first_step and s.main:
            warn_if_cut(record, config)
        if s.heldout.due(step + 1, config.ppo.steps):
            record.update(evaluate(s, run, step + 1))
            if s.main:
                start_reward = (run.start_eval or {}).get("eval_reward", float("nan"))
                log(f"step {step + 1}: held-out reward {record['eval_reward']:.3f} (start {start_reward:.3f})")
        if step == 0 or step + 1 == config.ppo.steps:
            run.samples.extend(sample_rows(step + 1, roles.tokenizer, rollout))
        progress.set_postfix(reward=f"{record['reward_mean']:.3f}", kl=f"{record['kl']:.3f}",
                             len=f"{record['response_length']:.1f}", beta=f"{beta:.3f}")
        log_metrics(s.accelerator, record)
        if on_step is not None:
            on_step(roles, record)
        reason = run.stops.observe_step(record)
        done = run.step = step + 1
        if (config.ppo.save_steps and done % config.ppo.save_steps == 0) or done in (config.ppo.steps, halt_after_step) or reason:
            save(s, run, done)
        if halt_after_step is not None and done == halt_after_step:
            log(f"halting after step {done} as asked")
            stop_tracking(s.accelerator)
            return s.output
        if reason:
            log(f"stopping after step {done}: {reason}")
            break

    if s.main:
        best = run.stops.state_dict() if s.heldout.rows and math.isfinite(run.stops.best) else None
        write_final(s.output, config, roles, s.base_path, run.history, run.samples, run.stops.reason, best, run.start_eval)
    stop_tracking(s.accelerator)
    s.accelerator.wait_for_everyone()
    return s.output


def start(config: RLHFConfig, accelerator=None) -> tuple[Session, RunState]:
    """Check the settings, the prompts and the reward functions before any model loads, then load the roles and
    the optimisation under ``accelerator`` (default: a new one), and the run's state: fresh, or --resume's."""
    plan = check_config(config)
    output = Path(config.output)
    check_start(output, config)  # --resume needs a checkpoint of the same settings; a fresh start an empty folder
    table = load_prompts(config.prompts, config.data_split, config.data_subset, config.data_columns)
    functions = load_reward_functions(config, set().union(*(r.keys() for r in table.rows)), config.prompts)
    source_weights(config, int(bool(config.reward_model)) + len(functions))  # a wrong count fails now, not after loading
    prompts, heldout = held_out_prompts(config, table.rows)
    if accelerator is None:
        accelerator = new_accelerator(config, output)
    refuse_sharded(accelerator)
    start_tracking(accelerator, config)  # --report_to: the rows of metrics.json, step by step
    rank = accelerator.process_index
    torch.manual_seed(config.ppo.seed)  # every process builds identical fresh adapters
    if not plan.algo.critic and config.ppo.critic != "separate":
        log(f"--ppo.critic {config.ppo.critic} has no effect with --algo {config.algo}, which trains no critic")
    roles = load_roles(config, accelerator.device, critic=plan.algo.critic)
    torch.manual_seed(config.ppo.seed + rank)  # and samples its own rollouts
    sources = reward_sources(config, roles, functions)
    optim = Optimisation(roles, config, updates_per_step(config, plan.responses), accelerator)
    run = new_run_state(config)
    if config.resume:
        found = checkpoint_dirs(output)
        if not found:
            raise StageError(f"--resume: no checkpoint under {output / 'checkpoints'}; run without --resume.")
        state = load_checkpoint(found[-1], roles)
        optim.load_state_dict(state)
        run.load_state_dict(state)
        set_rng_state(state["rng"][rank])
        log(f"resumed from {found[-1]} at step {run.step}")
    collective = Collective(accelerator)
    log(f"{config.algo}: {plan.prompts} prompts x {plan.group_size} responses per process and step, "
        f"{collective.world} process(es); KL in the {'loss' if plan.kl_in_loss else 'reward'}; "
        f"rewards: {', '.join(sources.names)}")
    session = Session(config, plan, output, accelerator, collective, roles, sources, optim,
                      Guard(collective, output, checkpoint_dirs), resolve_model(roles.base_name), prompts, heldout)
    return session, run


def new_accelerator(config: RLHFConfig, output: Path):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

    # a TRL stage run earlier in this process (a pipeline, the Python API) leaves accelerate's state set to its
    # mixed precision (bf16 autocast on a GPU, or a CPU with bf16 products), which Accelerator() would inherit
    # and wrap the policy's forward in: start from the launch's settings, as transformers' TrainingArguments
    # does; the RL loop picks each role's precision itself (rlhf_roles)
    AcceleratorState._reset_state()
    # buffers (rotary tables) are the same everywhere: no broadcast at every forward
    return Accelerator(cpu=not torch.cuda.is_available(),
                       kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
                       **accelerator_settings(config.report_to, output))


def evaluate(s: Session, run: RunState, done: int) -> dict[str, float]:
    """The held-out evaluation after ``done`` steps (0: the starting policy); the best policy so far goes to
    <output>/best."""
    record = {"step": done, **evaluate_heldout(s.roles, s.sources, s.heldout.rows, s.config, done - 1, s.collective)}
    if run.stops.observe_eval(record) and s.main:
        save_best(s.output, s.config, s.roles, s.base_path, record)
    return record


def save(s: Session, run: RunState, done: int) -> None:
    """A checkpoint after ``done`` steps: weights, optimizer, run state and every process's random state."""
    rngs = s.collective.objects(rng_state())
    if s.main:
        save_checkpoint(s.output, done, s.roles, s.base_path, {**run.state_dict(), **s.optim.state_dict(),
                                                               "config": to_dict(s.config)}, rngs)
    s.accelerator.wait_for_everyone()


def warn_if_cut(record: dict, config: RLHFConfig) -> None:
    """Say so when most of the first step's responses ran into the length limit: the reward model then judges cut
    texts, and with penalise_no_eos every one of them scores the same penalty, which leaves nothing to learn."""
    share, rollout = record["hit_length_limit"], config.rollout
    if share <= 0.5:
        return
    hint = (f"with --rollout.penalise_no_eos each of them scores {rollout.no_eos_penalty:g} whatever it says; raise "
            "--rollout.max_new_tokens or set --rollout.penalise_no_eos false" if rollout.penalise_no_eos else
            "the reward sources judge cut responses; raise --rollout.max_new_tokens if answers need more room")
    log(f"warning: {share:.0%} of the first step's responses reached --rollout.max_new_tokens "
        f"({rollout.max_new_tokens}) without a stop token: {hint}.")


def log_step(step: int, rollout, stats: dict[str, float], beta: float, prompts_cut: int, run: RunState, optim, collective,
             plan: Plan, timings: dict[str, float], started: float) -> dict:
    """The step's metrics, averaged over processes, into the history; the KL controller takes the step's KL."""
    raw, mask = rollout.raw_scores, rollout.mask
    sequence_kl = rollout.kl.sum(1)
    rows = torch.ones_like(raw, dtype=torch.bool)[None]
    _, reward_var = collective.masked_moments(raw.float()[None], rows)  # over every process's rows, not a mean of stds
    local = {
        "reward_mean": raw.mean().item(), "reward_std": reward_var.sqrt().item(),
        "score_used": rollout.scores.mean().item(), "kl": sequence_kl.mean().item(),
        "non_score_reward": (-beta * sequence_kl).mean().item(),
        "response_length": rollout.lengths.float().mean().item(),
        "hit_length_limit": (~rollout.has_stop).float().mean().item(),
        # the policy that samples (folded weights) against the training forward's (unfolded): ~0 when they agree
        "rollout_logprob_gap": masked_mean((rollout.sampled_logprobs - rollout.old_logprobs).abs(), mask).item(),
        "prompts_cut": float(prompts_cut),
        **{f"reward/{name}": values.float().mean().item() for name, values in rollout.source_scores.items()},
        **stats,
    }
    if rollout.values is not None:
        local["explained_variance"] = float(explained_variance(rollout.values, rollout.returns, mask).nan_to_num(0.0))
    step_stats = collective.mean(local)
    run.kl_ctl.update(step_stats["kl"], plan.responses * collective.world)
    record = {"step": step + 1, **step_stats, "beta": beta, "lr": optim.scheduler.get_last_lr()[0], **timings,
              "step_seconds": time.time() - started}
    run.history.append(record)
    return record
