"""Stage configuration: nested dataclasses, loaded from YAML and dotted command-line overrides.

Every field carries a one-line ``doc`` in its metadata; ``posttrain <stage> --help`` prints them.
Unknown keys are an error that names the key and the nearest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A bad configuration key or value; the message says where and how to fix it."""


@dataclass(frozen=True)
class Range:
    """The values a number setting accepts: ``low``/``high`` bounds (open or closed) and ``special`` values
    allowed outside them (``-1`` meaning "not set"). Checked when the config is parsed; --help prints it."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    special: tuple = ()

    def __contains__(self, value: float) -> bool:
        if value in self.special:
            return True
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {low}"
        elif self.high is not None:
            text = f"{'<' if self.high_open else '<='} {high}"
        else:
            text = "a finite number"
        return text + "".join(f", or {_number(v)}" for v in self.special)


def _number(value: float | None) -> str:
    return str(value) if isinstance(value, int) or value is None else f"{value:g}"


AT_LEAST_1 = Range(1)  # sizes and counts
NON_NEGATIVE = Range(0)  # coefficients, and counts where 0 switches a feature off
POSITIVE = Range(0, low_open=True)  # rates, temperatures, scales
SHARE = Range(0, 1)  # fractions
SEED = Range(0, 2**32 - 1)  # numpy's seeds are unsigned 32-bit


def doc(default: Any, text: str, valid: Range | None = None, required: bool = False, **kwargs) -> Any:
    """A dataclass field with a default, a one-line description, for numbers the range it accepts, and whether
    the stage refuses to start without it (--help marks those)."""
    metadata = {"doc": text, **({"range": valid} if valid is not None else {}), **({"required": True} if required else {})}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata, **kwargs)
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return field(default_factory=default, metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


# ---------------------------------------------------------------------------------------------
# Sections shared by the stages
# ---------------------------------------------------------------------------------------------


@dataclass
class LoraSection:
    r: int = doc(16, "LoRA rank.", valid=AT_LEAST_1)
    alpha: int = doc(32, "LoRA scaling numerator (the update is scaled by alpha / r).", valid=POSITIVE)
    dropout: float = doc(0.0, "Dropout on the input of the adapter SFT, RM or DPO trains (a continued adapter too, "
                              "whatever it was saved with); 0 (peft's default) builds none. No other dropout runs: the "
                              "base model's and the reference's stay off, and the RL stage trains without any (its "
                              "sampling and training log-probs must agree). 0 since 2026-12-06: 0.05 cost SFT a fifth "
                              "of its time on a CPU for the same held-out style share (bench/quality.py, 3 seeds); "
                              "the RM and DPO stages had run without it, TRL having switched it off.",
                         valid=Range(0, 1, high_open=True))
    target_modules: str = doc("all-linear", "Modules that get adapters: 'all-linear' or a comma list, e.g. 'q_proj,v_proj'.")


@dataclass
class TrainSection:
    lr: float = doc(2e-4, "Peak learning rate (AdamW).", valid=POSITIVE)
    epochs: float = doc(1.0, "Passes over the training data (ignored when max_steps > 0).", valid=POSITIVE)
    max_steps: int = doc(-1, "Stop after this many optimizer steps; -1 means use epochs.", valid=Range(1, special=(-1,)))
    min_steps: int = doc(0, "At least this many optimizer steps: on a data set too small for them in `epochs` passes, "
                            "the passes are raised until they make this many (0: epochs alone decide; ignored when "
                            "max_steps > 0).", valid=NON_NEGATIVE)
    batch_size: int = doc(4, "Examples per device per forward pass.", valid=AT_LEAST_1)
    grad_accum: int = doc(1, "Forward passes accumulated per optimizer step.", valid=AT_LEAST_1)
    max_length: int = doc(512, "Longest tokenised example; longer rows are truncated and counted.", valid=AT_LEAST_1)
    warmup_ratio: float = doc(0.03, "Share of steps spent warming the learning rate up.", valid=SHARE)
    scheduler: str = doc("cosine", "Learning-rate schedule (any transformers scheduler name).")
    weight_decay: float = doc(0.0, "AdamW weight decay.", valid=NON_NEGATIVE)
    max_grad_norm: float = doc(1.0, "Gradient clipping norm (0: no clipping).", valid=NON_NEGATIVE)
    seed: int = doc(42, "Random seed for data order, dropout and initialisation.", valid=SEED)
    logging_steps: int = doc(5, "Log metrics every N optimizer steps.", valid=AT_LEAST_1)
    save_steps: int = doc(0, "Save a resumable checkpoint every N steps; 0 saves none mid-run.", valid=NON_NEGATIVE)
    eval_split: float = doc(0.0, "Share of the data held out for evaluation (0 disables).", valid=Range(0, 1, high_open=True))
    eval_steps: int = doc(0, "Evaluate every N steps (0: only at the end, when eval_split > 0).", valid=NON_NEGATIVE)
    gradient_checkpointing: Literal["auto", "true", "false"] = doc(
        "auto", "Recompute activations in the backward pass instead of keeping them. 'auto': off on a CPU (it only costs "
                "time there); on a GPU, on when the run is large, i.e. `posttrain plan` puts it above 80% of the GPU's "
                "memory without checkpointing; 'true' or 'false' force it.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = doc(
        "auto", "'auto': bf16 on a GPU that has it; on a CPU fp32 weights, with the SFT, RM and DPO forward passes under "
                "bf16 autocast where the CPU has AVX512-BF16 or AMX; 'bf16', 'fp16' or 'fp32' force one.")
    quantization: Literal["none", "4bit", "8bit"] = doc(
        "none", "Load the frozen base quantized through bitsandbytes (CUDA only): '4bit' is QLoRA (NF4, double "
                "quantization, bf16 products), '8bit' LLM.int8(); the adapters stay in float32.")
    extra: dict[str, Any] = doc({}, "Fields of the stage's TRL config that posttrain does not model, passed to it as they "
                                    "are (--train.extra.optim adamw_torch_fused); a name TRL's config lacks is refused.")




Tracker = Literal["auto", "tensorboard", "wandb", "trackio", "none"]


def _data_split() -> Any:
    return doc("", "Split of a hub dataset or a datasets folder to read (default: 'train', else its only split).")


def _data_subset() -> Any:
    return doc("", "Subset (configuration) of a hub dataset, e.g. 'main'.")


def _data_columns() -> Any:
    return doc({}, "Columns named otherwise in the data, as posttrain's name=the data's column "
                   "(--data_columns prompt=question,completion=answer).")


def _chat_template() -> Any:
    return doc("", "Chat template to use instead of the model's: a Jinja file, a built-in name (chatml), or a model "
                   "(folder or hub id) whose template to take. It is saved with the checkpoint's tokenizer.")


def _push_to_hub() -> Any:
    return doc("", "Upload the finished output folder (model card, adapter, tokenizer, metrics) to this hub repo "
                   "(org/name); needs a token (`hf auth login` or HF_TOKEN). Same as `posttrain push OUTPUT REPO`.")


def _report_to() -> Any:
    return doc("auto", "Where to log training metrics: tensorboard (event files in <output>/logs), wandb, trackio or none; "
                       "'auto' is tensorboard when it is installed, else none.")


# ---------------------------------------------------------------------------------------------
# Stage configs
# ---------------------------------------------------------------------------------------------


def _train(text: str = "Optimisation settings.", **overrides) -> Any:
    """A TrainSection field whose defaults suit a particular stage."""
    return field(default_factory=lambda: TrainSection(**overrides), metadata={"doc": text})


@dataclass
class SFTConfig:
    model: str = doc("smollm2-135m-instruct", "Base model: a local folder, a hub id, or the alias 'smollm2-135m-instruct'.")
    data: str = doc("", "Training data: .jsonl, .json, .parquet, a datasets folder or a hub dataset org/name (see README: "
                        "Data formats).", required=True)
    output: str = doc("", "Checkpoint folder to write.", required=True)
    data_split: str = _data_split()
    data_subset: str = _data_subset()
    data_columns: dict[str, str] = _data_columns()
    chat_template: str = _chat_template()
    eval_data: str = doc("", "Optional separate evaluation file (overrides train.eval_split).")
    resume: bool = doc(False, "Continue from the newest checkpoint under the output folder.")
    report_to: Tracker = _report_to()
    push_to_hub: str = _push_to_hub()
    loss_on: Literal["assistant", "all"] = doc("assistant", "Train on assistant tokens only, or on the full sequence.")
    packing: bool = doc(False, "Pack several examples per row (padding-free, faster on long data).")
    lora: LoraSection = doc(LoraSection, "LoRA adapter settings.")
    train: TrainSection = _train("Optimisation settings; defaults chosen with bench/quality.py: lr 3e-4 at batch 4 for "
                                 "one epoch and at least 100 optimizer steps (a few hundred rows get 2 passes).",
                                 lr=3e-4, min_steps=100)


@dataclass
class RewardConfig:
    model: str = doc("smollm2-135m-instruct", "Base model or SFT checkpoint to build the reward model on.")
    data: str = doc("", "Preference pairs: prompt/chosen/rejected rows, a file or a hub dataset org/name (see README: "
                        "Data formats).", required=True)
    output: str = doc("", "Checkpoint folder to write.", required=True)
    data_split: str = _data_split()
    data_subset: str = _data_subset()
    data_columns: dict[str, str] = _data_columns()
    chat_template: str = _chat_template()
    resume: bool = doc(False, "Continue from the newest checkpoint under the output folder.")
    report_to: Tracker = _report_to()
    push_to_hub: str = _push_to_hub()
    pooling: Literal["mean", "response", "last"] = doc(
        "response", "Which hidden state the scalar head reads: 'response' (the mean over the response's tokens, i.e. "
                    "the mean of its per-token rewards), 'mean' (the mean over every token of prompt + response) or "
                    "'last' (the last token, as TRL does). The checkpoint records it; `posttrain score` and the RL "
                    "stage read rewards the same way. Chosen with bench/quality.py (held-out accuracy, 3 seeds, "
                    "2026-12-04): 'response' 0.95/0.91/0.91 readability and 0.71/0.79/0.74 sentiment, 'mean' "
                    "0.93/0.91/0.91 and 0.71/0.79/0.67; 'last' was below 'mean' on sentiment by 0.08-0.18 "
                    "(2026-12-02). A repeated sentence raises a 'response' reward less (bench/rm_length_probe.py).")
    layers: int = doc(10, "How many of the base's decoder layers the reward model runs: the head reads the first N "
                          "layers' states (through the base's final norm) and the layers above are dropped, so a "
                          "training step, `posttrain score`, the RL stage's reward pass and a critic made from the "
                          "reward model cost about N/total of a whole pass. 0 (or at least the base's count) runs them "
                          "all. The checkpoint records it. Chosen with bench/quality.py (2026-12-07, 2 draws of the "
                          "tasks, 3 seeds; README: Quality on data we did not write): 10 of the default model's 30 "
                          "layers gave a mean held-out accuracy of 0.846 against 0.845 (readability higher on every "
                          "seed, sentiment lower on 2 of 6) in a third of the time (0.40 of TRL's), and PPO against "
                          "them won 0.78-0.92 over the base in two thirds of the time.", valid=NON_NEGATIVE)
    lora: LoraSection = doc(LoraSection, "LoRA adapter settings for the body; the scalar head trains in full.")
    train: TrainSection = _train("Optimisation settings; defaults chosen with bench/quality.py: lr 3e-4 (LoRA-sized) at "
                                 "batch 4 for one epoch and at least 120 optimizer steps (a few hundred pairs get 3 "
                                 "passes), not TRL's 2 epochs at 1e-4.",
                                 lr=3e-4, epochs=1.0, min_steps=120, batch_size=4, eval_split=0.1, max_length=384)


@dataclass
class ScoreConfig:
    model: str = doc("", "A reward-model checkpoint folder (from `posttrain rm`).", required=True)
    data: str = doc("", "Rows to score (prompt/completion or messages), or preference pairs for accuracy.", required=True)
    output: str = doc("", "Where to write the scored rows (.jsonl); default: <data>.scored.jsonl.")
    batch_size: int = doc(8, "Rows per forward pass.", valid=AT_LEAST_1)
    max_length: int = doc(512, "Longest tokenised row; longer rows are cut from the left and counted.", valid=AT_LEAST_1)


@dataclass
class DPOConfig:
    model: str = doc("smollm2-135m-instruct", "Base model, or an SFT checkpoint (its adapter is the start and the reference).")
    data: str = doc("", "Preference pairs: prompt/chosen/rejected rows, a file or a hub dataset org/name (see README: "
                        "Data formats).", required=True)
    output: str = doc("", "Checkpoint folder to write.", required=True)
    data_split: str = _data_split()
    data_subset: str = _data_subset()
    data_columns: dict[str, str] = _data_columns()
    chat_template: str = _chat_template()
    resume: bool = doc(False, "Continue from the newest checkpoint under the output folder.")
    report_to: Tracker = _report_to()
    push_to_hub: str = _push_to_hub()
    beta: float = doc(0.1, "Strength of the implicit KL leash to the reference.", valid=POSITIVE)
    loss_type: str = doc("sigmoid", "DPO loss variant by TRL name: sigmoid, ipo, hinge, robust, ...")
    label_smoothing: float = doc(0.0, "Assumed share of flipped labels (robust / cDPO losses).", valid=Range(0, 0.5))
    precompute_ref: bool = doc(True, "Compute the reference's log-probs of every pair once, in one pass before "
                                     "training, instead of a reference forward in every step (TRL's "
                                     "precompute_ref_log_probs): the same losses, steps about a third shorter on a CPU. "
                                     "One process only: under FSDP and DeepSpeed the model is placed only when "
                                     "training starts, and TRL 1.16's precomputing works on a single process.")
    lora: LoraSection = doc(LoraSection, "LoRA adapter settings (from an SFT adapter, its rank, alpha and modules; "
                                         "the dropout is this one's).")
    train: TrainSection = _train("Optimisation settings; defaults chosen with bench/quality.py: lr 5e-4 (LoRA-sized) at "
                                 "batch 4 for one epoch and at least 100 optimizer steps (a few hundred pairs get 2-3 "
                                 "passes), not TRL's 3 epochs at 5e-5; 2e-4 left a weak preference (sentiment) at 0.67 "
                                 "win-rate where 5e-4 reached 0.90.",
                                 lr=5e-4, epochs=1.0, min_steps=100, batch_size=4, eval_split=0.1, max_length=384,
                                 eval_steps=20)


@dataclass
class RolloutSection:
    batch_size: int = doc(8, "Responses sampled per step (per process): batch_size / group_size prompts, group_size "
                             "responses to each, so every algorithm spends the same budget a step.", valid=AT_LEAST_1)
    group_size: int = doc(0, "Responses sampled per prompt; 0 picks the algorithm's default (ppo and reinforce_pp 1, "
                             "grpo and rloo 4). Group baselines (grpo, rloo) need at least 2.", valid=NON_NEGATIVE)
    max_new_tokens: int = doc(48, "Longest response in tokens.", valid=AT_LEAST_1)
    max_prompt_length: int = doc(256, "Longest prompt in tokens; longer prompts are cut from the left and counted.", valid=AT_LEAST_1)
    temperature: float = doc(0.7, "Sampling temperature for rollouts.", valid=POSITIVE)
    top_p: float = doc(1.0, "Nucleus sampling for rollouts. Must stay 1.0: the PPO ratio and KL use log-probs of the "
                            "full distribution, which a nucleus cut would make wrong.", valid=Range(0, 1, low_open=True))
    penalise_no_eos: bool = doc(False, "Give responses that hit max_new_tokens without a stop token the score "
                                       "no_eos_penalty instead of their reward (off by default, as TRL's missing_eos_penalty: "
                                       "where most responses run longer than max_new_tokens it replaces every score and "
                                       "leaves nothing to learn from); false switches this off.")
    no_eos_penalty: float = doc(-1.0, "The score that replaces the reward of a response that never stopped (when "
                                      "penalise_no_eos). It is a replacement, not a subtraction: 0 makes unfinished "
                                      "responses score 0, which rewards running to the length limit when most scores "
                                      "are negative.", valid=Range())


@dataclass
class PPOSection:
    steps: int = doc(40, "Steps (each: rollout, score, advantages, optimisation epochs).", valid=AT_LEAST_1)
    lr: float = doc(2e-4, "Learning rate for the policy and critic adapters (LoRA-sized: 3e-5 left the policy where it "
                          "started in 40 steps, README: Quality on data we did not write).", valid=POSITIVE)
    weight_decay: float = doc(0.0, "AdamW weight decay on the trained adapters, value head and new token rows.",
                              valid=NON_NEGATIVE)
    epochs: int = doc(2, "Optimisation passes over each rollout batch.", valid=AT_LEAST_1)
    minibatch_size: int = doc(4, "Responses per optimizer minibatch.", valid=AT_LEAST_1)
    micro_batch_size: int = doc(0, "Responses per forward and backward pass: a minibatch runs in passes of this many, "
                                   "accumulated into its one optimizer step (the same update as one pass, each token "
                                   "weighed the same). 0: passes of 2 with an fp32 base (a CPU without bf16 units: "
                                   "31% less peak memory for 2% more time), one pass with a bf16 base (there passes "
                                   "of 2 were 9-26% slower for 17% less memory; bench/rl_step_profile.py, "
                                   "2026-12-07).", valid=NON_NEGATIVE)
    grad_accum: int = doc(1, "Minibatches accumulated per optimizer step; an epoch always ends with a step "
                             "(its last group may be shorter).", valid=AT_LEAST_1)
    clip_eps: float = doc(0.2, "PPO ratio clip range.", valid=POSITIVE)
    value_clip_eps: float = doc(0.2, "Clip range for the value-function update.", valid=POSITIVE)
    critic: Literal["separate", "shared"] = doc(
        "separate", "PPO's critic: separate (its own LoRA adapter, run beside the policy as a second block of every "
                    "pass) or shared (a value head on the policy's hidden states, as TRL's old PPOTrainer and "
                    "LLaMA-Factory do: no pass of its own, and the value loss, weighted by vf_coef, also trains the "
                    "policy's adapter). Shared took 0.66x the time a step and 0.7x the memory, but won less on the "
                    "quality tasks (0.67/0.72 against 0.90/0.74; README: Online RL).")
    vf_coef: float = doc(0.1, "Weight of the value loss.", valid=NON_NEGATIVE)
    entropy_coef: float = doc(0.0, "Weight of the entropy bonus.", valid=NON_NEGATIVE)
    max_grad_norm: float = doc(1.0, "Gradient clipping norm, applied separately to the policy (with a shared critic, including "
                               "the value loss's gradient on its adapter) and to the critic (its adapter, if any, and "
                               "the value head).",
                               valid=POSITIVE)
    target_approx_kl: float = doc(0.0, "Stop an epoch early when approx-KL(old||new) passes this (0 disables).", valid=NON_NEGATIVE)
    gamma: float = doc(1.0, "Discount for GAE and REINFORCE++ returns.", valid=SHARE)
    lam: float = doc(0.95, "GAE lambda.", valid=SHARE)
    whiten_advantages: bool = doc(True, "Normalise PPO's (GAE) and RLOO's advantages over the batch.")
    scale_rewards: bool = doc(True, "GRPO: divide each group's centred rewards by its std; false is Dr. GRPO.")
    loss_aggregation: Literal["token_mean", "sequence_mean", "token_sum"] = doc(
        "token_mean", "How the per-token policy loss is reduced: token_mean (every token weighs the same), "
                      "sequence_mean (original GRPO), token_sum (sum / max_new_tokens per response: Dr. GRPO).")
    kl_in: Literal["auto", "reward", "loss"] = doc(
        "auto", "Where the KL leash to the reference acts: in the reward (-beta*KL per token, PPO style) or in the "
                "loss (beta*k3, GRPO style); auto is loss for grpo and reward otherwise.")
    kl_coef: float = doc(0.05, "Initial beta of the KL penalty to the reference.", valid=NON_NEGATIVE)
    kl_estimator: Literal["k1", "k3"] = doc("k1", "Per-token KL estimator in the reward.")
    adaptive_kl: bool = doc(False, "Adapt beta toward target_kl (Ziegler et al. 2019).")
    target_kl: float = doc(2.0, "Target KL per response (nats) for the adaptive controller.", valid=POSITIVE)
    kl_horizon: int = doc(100, "Rollouts over which the adaptive beta moves: each step changes it by at most "
                               "0.2 x rollouts/horizon. Ziegler et al. used 10000 with batches of 512; 100 suits batches of 8.", valid=AT_LEAST_1)
    normalize_rewards: bool = doc(True, "Normalise scores with running mean/std before the KL penalty, so kl_coef "
                                        "means the same whatever the reward model's scale.")
    reward_clip: float = doc(0.0, "Clip scores to [-c, c] (0 disables).", valid=NON_NEGATIVE)
    save_steps: int = doc(10, "Save a resumable checkpoint every N steps (0: only at the end).", valid=NON_NEGATIVE)
    seed: int = doc(42, "Random seed for prompt order, sampling and initialisation.", valid=SEED)


@dataclass
class EvalSection:
    every: int = doc(0, "Every N steps, score greedy responses to the held-out prompts with every reward source "
                        "(0: only when eval_prompts or share is set, then every 10 steps).", valid=NON_NEGATIVE)
    share: float = doc(0.0, "Share of --prompts held out for evaluation when --eval_prompts is not given.",
                       valid=Range(0, 1, high_open=True))
    max_prompts: int = doc(32, "Held-out prompts scored at each evaluation (at most).", valid=AT_LEAST_1)


@dataclass
class StopSection:
    kl_above: float = doc(0.0, "End the run when the KL to the reference (nats/response) passes this (0: never).",
                          valid=NON_NEGATIVE)
    truncated_share_above: float = doc(0.0, "End the run when this share of responses hits the length limit (0: never).",
                                       valid=SHARE)
    eval_reward_drops: int = doc(0, "End the run after this many evaluations in a row below the best held-out "
                                    "reward (0: never). The best policy is kept in <output>/best.", valid=NON_NEGATIVE)


@dataclass
class RLHFConfig:
    model: str = doc("smollm2-135m-instruct", "SFT checkpoint or model to start the policy from.")
    algo: Literal["ppo", "grpo", "rloo", "reinforce_pp"] = doc(
        "ppo", "Online RL algorithm: ppo (critic + GAE), grpo (group-normalised), rloo (leave-one-out baseline), "
               "reinforce_pp (REINFORCE++: batch-normalised returns). Only ppo trains a critic.")
    reward_model: str = doc("", "Reward-model checkpoint folder (from `posttrain rm`); optional when reward_fn is given.")
    reward_fn: str = doc("", "Reward function(s), comma-separated: module:function or path/to/file.py:function, called "
                             "as TRL calls reward functions (prompts=, completions=, the prompt rows' other columns).")
    reward_weights: str = doc("", "Comma-separated weights of the reward sources: the reward model first (if any), "
                                  "then each reward_fn in order (default: 1 each).")
    prompts: str = doc("", "Prompts: a .jsonl/.json/.parquet file, a datasets folder or a hub dataset org/name, rows with "
                           "'prompt' (text or messages) and any columns reward functions read.", required=True)
    eval_prompts: str = doc("", "Held-out prompts scored every eval.every steps, read like --prompts (see eval.share for a "
                                "split instead).")
    data_split: str = doc("", "Split of a hub dataset or datasets folder given as --prompts (default: 'train', else its "
                              "only split); --eval_prompts of the same dataset reads the split named by eval_split.")
    eval_split: str = doc("", "Split for --eval_prompts when it is a hub dataset or datasets folder (default as data_split).")
    data_subset: str = _data_subset()
    data_columns: dict[str, str] = _data_columns()
    output: str = doc("", "Checkpoint folder to write.", required=True)
    resume: bool = doc(False, "Continue exactly from the newest checkpoint under the output folder.")
    report_to: Tracker = _report_to()
    push_to_hub: str = _push_to_hub()
    precision: Literal["auto", "bf16", "fp32"] = doc(
        "auto", "Storage of the shared frozen base: 'auto' is bf16 on a GPU or CPU with fast bf16 (AVX512-BF16/AMX), "
                "else fp32. Adapters, heads and optimizer state are always fp32.")
    quantization: Literal["none", "4bit", "8bit"] = doc(
        "none", "Load the shared frozen base quantized through bitsandbytes (CUDA only): '4bit' is QLoRA (NF4, double "
                "quantization, products in bf16), '8bit' LLM.int8(); adapters and heads stay in float32.")
    gradient_checkpointing: Literal["auto", "true", "false"] = doc(
        "auto", "Recompute each layer's activations in the backward pass instead of keeping them. 'auto': off on a CPU "
                "(it only costs time there); on a GPU, on when `posttrain plan rlhf` puts the run above 80% of the GPU's "
                "memory without it; 'true' or 'false' force it.")
    lora: LoraSection = doc(LoraSection, "LoRA settings for the policy (and critic) adapters when starting fresh.")
    rollout: RolloutSection = doc(RolloutSection, "How responses are sampled.")
    ppo: PPOSection = doc(PPOSection, "The optimisation (PPO-clip epochs for every algorithm).")
    eval: EvalSection = doc(EvalSection, "Held-out evaluation during training.")
    stop: StopSection = doc(StopSection, "Early stops.")


@dataclass
class EvalConfig:
    model: str = doc("", "The checkpoint or model to evaluate.", required=True)
    baseline: str = doc("", "The checkpoint or model to compare against (optional).")
    prompts: str = doc("", "Prompt file for generation (rows with 'prompt').")
    reward_model: str = doc("", "Reward-model checkpoint that judges responses.")
    reward_fn: str = doc("", "Reward function(s) that also judge responses (module:function or file.py:function, "
                             "comma-separated, called as in rlhf): each model's mean score, and the win-rate.")
    data: str = doc("", "Preference pairs: also report pairwise accuracy of the model (implicit reward) or reward model.")
    output: str = doc("", "Folder for the evaluation report (default: next to the model).")
    max_prompts: int = doc(64, "Evaluate on at most this many prompts (and at most this many pairs with --data).", valid=AT_LEAST_1)
    max_new_tokens: int = doc(64, "Longest response in tokens.", valid=AT_LEAST_1)
    temperature: float = doc(0.0, "Sampling temperature (0: greedy, deterministic).", valid=NON_NEGATIVE)
    top_p: float = doc(1.0, "Nucleus sampling: keep the smallest token set with this much probability.", valid=Range(0, 1, low_open=True))
    top_k: int = doc(0, "Keep only the k most likely tokens (0 disables).", valid=NON_NEGATIVE)
    repetition_penalty: float = doc(1.0, "Penalty on tokens already generated (1.0 disables).", valid=POSITIVE)
    stop: str = doc("", "Comma-separated stop strings: a response ends before the first of them.")
    seed: int = doc(0, "Random seed.", valid=SEED)
    benchmark: str = doc("", "Multiple-choice rows (question, choices, answer, subject) for k-shot capability (README: Capability).")
    benchmark_dev: str = doc("", "File of dev rows for the shots (default: the benchmark's split 'dev' rows, else the first k of each subject).")
    shots: int = doc(5, "Solved dev questions of the same subject before each question (--benchmark and --lm_eval).", valid=NON_NEGATIVE)
    mc_format: Literal["cloze", "letters"] = doc("cloze", "Score each choice's text ('cloze'), or list the choices as A., B., ... and score the letter ('letters', MMLU's layout).")
    mc_precision: Literal["auto", "bf16", "fp32"] = doc("auto", "Weights for capability scoring: 'auto' is bf16 where bf16 products are fast (GPU, CPU with AVX512-BF16/AMX), else fp32.")
    max_questions: int = doc(0, "Score at most this many benchmark questions, taken in turn from each subject (0: all); also lm-eval's limit per task.", valid=NON_NEGATIVE)
    lm_eval: str = doc("", "Comma-separated lm-evaluation-harness tasks to run on the model too (needs pip install 'posttrain[lm_eval]' and its datasets).")


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def field_docs(cls: type, prefix: str = "", defaults: Any = None) -> list[tuple[str, str, Any]]:
    """(dotted name, doc, default) for every leaf field of a config dataclass. A section's defaults are the
    stage's own (RewardConfig's train.lr, not TrainSection's)."""
    rows = []
    hints = _resolved_hints(cls)
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        if defaults is not None:
            default = getattr(defaults, f.name)
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(field_docs(hints[f.name], name + ".", default))
        else:
            rows.append((name, f.metadata.get("doc", ""), default))
    return rows


def field_ranges(cls: type, prefix: str = "") -> dict[str, Range]:
    """The :class:`Range` of every number field that has one, by dotted name."""
    ranges = {}
    hints = _resolved_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            ranges.update(field_ranges(hints[f.name], f"{prefix}{f.name}."))
        elif "range" in f.metadata:
            ranges[prefix + f.name] = f.metadata["range"]
    return ranges


def field_kinds(cls: type, prefix: str = "") -> dict[str, tuple[Any, dict]]:
    """(type, metadata) of every leaf field by dotted name, for --help: required fields, Literal choices."""
    kinds = {}
    hints = _resolved_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            kinds.update(field_kinds(hints[f.name], f"{prefix}{f.name}."))
        else:
            kinds[prefix + f.name] = (hints[f.name], dict(f.metadata))
    return kinds


def section_docs(cls: type) -> dict[str, str]:
    """The one-line doc of each top-level section of a config dataclass, by name (e.g. 'train')."""
    hints = _resolved_hints(cls)
    return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}


def _resolved_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _nearest(key: str, options: list[str], aliases: dict | None = None) -> str:
    """The hint for an unknown key: the closest valid key, or the key an alias close to it stands for."""
    aliases = aliases or {}
    close = difflib.get_close_matches(key, [*options, *aliases], n=1, cutoff=0.4)
    if not close:
        return ""
    return f" Did you mean '{aliases[close[0]].key if close[0] in aliases else close[0]}'?"


def _is_mapping(tp: Any) -> bool:
    return tp is dict or typing.get_origin(tp) is dict


def _mapping(value: Any, where: str) -> dict:
    """A mapping setting's value: a YAML mapping, or ``name=value,name=value`` on the command line."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, str):
        pairs = [p for p in value.split(",") if p.strip()]
        if all("=" in p for p in pairs):
            return {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in pairs)}
    raise ConfigError(f"{where}: expected name=value pairs (a=b,c=d) or a mapping, got {value!r}.")


def _set_entry(mapping: dict, parts: list[str], value: Any, where: str) -> None:
    """Set ``value`` at the dotted path ``parts`` inside a mapping setting (``train.extra.lr_scheduler_kwargs.min_lr``)."""
    for part in parts[:-1]:
        mapping = mapping.setdefault(part, {})
        if not isinstance(mapping, dict):
            raise ConfigError(f"{where}: '{part}' holds a value, not names.")
    if isinstance(value, dict) and not value:
        mapping.setdefault(parts[-1], {})  # a YAML section header: its entries follow
    else:
        mapping[parts[-1]] = value


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    optional = origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)
    if value is None and not optional:
        raise ConfigError(f"{where}: has no value; give one (or leave the key out for its default).")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool) and str(value).lower() in allowed:  # YAML reads `true` as a bool
            value = str(value).lower()
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}.")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, args[0], where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}.")
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected {'a number' if tp is float else 'a whole number'}, got {value!r}.")
        try:
            number = float(value) if tp is float else int(str(value), 0) if isinstance(value, str) else value
        except ValueError:
            raise ConfigError(f"{where}: expected {'a number' if tp is float else 'a whole number'}, got {value!r}.") from None
        if tp is int and isinstance(number, float):
            if not number.is_integer():
                raise ConfigError(f"{where}: expected a whole number, got {value!r}.")
            number = int(number)
        return tp(number)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a single value, got {value!r}.")
        return str(value)
    return value


def _checked(value: Any, section: Any, name: str, where: str) -> Any:
    """``value`` when it lies in the field's range (see :class:`Range`); else an error naming the range."""
    valid = next(f for f in dataclasses.fields(section) if f.name == name).metadata.get("range")
    if valid is not None and isinstance(value, (int, float)) and value not in valid:
        raise ConfigError(f"{where}: {value!r} is out of range; it must be {valid}.")
    return value


def _apply(obj: Any, key: str, value: Any, where: str) -> None:
    """Set a dotted ``key`` on a nested config dataclass, checking the name and the type."""
    parts = key.replace("-", "_").split(".")
    target = obj
    for depth, part in enumerate(parts):
        hints = _resolved_hints(type(target))
        names = [f.name for f in dataclasses.fields(target)]
        if part not in names:
            from posttrain.config_aliases import aliases

            valid = [name for name, _, _ in field_docs(type(obj))]
            section = f" ({'.'.join(parts[:depth])} has {', '.join(names)}.)" if depth else ""
            raise ConfigError(f"{where}: unknown key '{key}'.{_nearest(key, valid, aliases(type(obj)))}{section}")
        if _is_mapping(hints[part]):
            rest = parts[depth + 1:]
            if rest:
                _set_entry(getattr(target, part), rest, value, f"{where}: {key}")
            else:
                getattr(target, part).update(_mapping(value, f"{where}: {key}"))
            return
        if depth == len(parts) - 1:
            if dataclasses.is_dataclass(hints[part]):
                if not isinstance(value, dict):
                    raise ConfigError(f"{where}: '{key}' is a section; give it keys, e.g. {key}.{dataclasses.fields(hints[part])[0].name}.")
                for sub_key, sub_value in value.items():
                    _apply(obj, f"{key}.{sub_key}", sub_value, where)
            else:
                setattr(target, part, _checked(_coerce(value, hints[part], f"{where}: {key}"), target, part, f"{where}: {key}"))
        else:
            if not dataclasses.is_dataclass(hints[part]):
                raise ConfigError(f"{where}: '{'.'.join(parts[:depth + 1])}' has no sub-keys.")
            target = getattr(target, part)


def _yaml_items(path: Path) -> list[tuple[str, Any, int]]:
    """(dotted key, value, line) of every setting in a YAML mapping, each with the line its own key is on:
    ``lora:`` then ``  r: 8`` gives ``("lora.r", 8, 2)``."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file (byte {err.start + 1} is not UTF-8); a config file is YAML text.") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise yaml_error(path, err) from None
    if data is None:
        return []
    if not isinstance(data, dict) or node is None or not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level.")
    items: list[tuple[str, Any, int]] = []

    def walk(mapping: dict, mapping_node: yaml.MappingNode, prefix: str) -> None:
        seen: dict[str, int] = {}
        for key_node, value_node in mapping_node.value:
            key, line = key_node.value, key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"{path}, line {line}: '{prefix}{key}' is given twice (first on line {seen[key]}); keep one.")
            seen[key] = line
            value = mapping.get(key_node.value) if key in mapping else mapping.get(_scalar(key_node))
            if isinstance(value, dict) and value and isinstance(value_node, yaml.MappingNode):
                items.append((f"{prefix}{key}", {}, line))  # the section itself: an unknown one is reported on its own line
                walk(value, value_node, f"{prefix}{key}.")
            else:
                items.append((f"{prefix}{key}", value, line))

    walk(data, node, "")
    return items


def yaml_error(path: Path, err: yaml.YAMLError) -> ConfigError:
    """A YAML syntax error as one line with the line it is on (PyYAML's own message spans several)."""
    mark, context, context_mark = (getattr(err, name, None) for name in ("problem_mark", "context", "context_mark"))
    where = f"{path}, line {mark.line + 1}" if mark else str(path)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    near = f" ({context} on line {context_mark.line + 1})" if context and context_mark else ""
    return ConfigError(f"{where}: not valid YAML: {problem}{near}.")


def _scalar(node: yaml.Node) -> Any:
    """A key as safe_load reads it (``1`` is an int, ``true`` a bool), to find its value in the loaded mapping."""
    return yaml.safe_load(yaml.serialize(node))


def _route(config: Any, key: str, value: Any, where: str) -> tuple[str, Any]:
    """posttrain's key and value for a key as typed: its own; an alias's target (config_aliases.py); or, for a
    top-level name posttrain does not know that the stage's TRL config has, ``train.extra.NAME``."""
    from posttrain import config_aliases

    name = key.replace("-", "_")
    if "." in name or hasattr(config, name):
        return name, value
    try:
        target, converted = config_aliases.resolve(type(config), name, value)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    if target != name:
        return target, converted
    if hasattr(config, "train") and name in config_aliases.trl_fields(type(config)):
        return f"train.extra.{name}", value
    return name, value


def apply_mapping(config: Any, mapping: dict[str, Any], where: str, lines: dict[str, int] | None = None) -> Any:
    """Apply a (possibly nested) mapping of keys to a config; ``where`` names the source in errors."""
    for key, value in mapping.items():
        line = (lines or {}).get(key)
        place = f"{where}, line {line}" if line else where
        _apply(config, *_route(config, key, value, place), place)
    return config


def load_config(cls: type, config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Any:
    """Build a ``cls`` config: defaults, then a YAML file, then dotted overrides (``{'lora.r': 8}``)."""
    config = cls()
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} {'is a folder' if path.is_dir() else 'does not exist'}; "
                              "--config takes a YAML file.")
        for key, value, line in _yaml_items(path):
            _apply(config, *_route(config, key, value, f"{path}, line {line}"), f"{path}, line {line}")
    for key, value in (overrides or {}).items():
        _apply(config, *_route(config, key, value, f"--{key}"), f"--{key}")
    return config


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def require(config: Any, *names: str) -> None:
    """Fail with the flag to pass when a required top-level field is empty."""
    for name in names:
        if not getattr(config, name):
            raise ConfigError(f"missing --{name.replace('_', '-')}: {_field_doc(type(config), name)}")


def _field_doc(cls: type, name: str) -> str:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("doc", "")
    return ""
