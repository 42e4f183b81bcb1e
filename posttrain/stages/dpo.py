"""Direct preference optimisation of a LoRA adapter, on TRL's DPOTrainer.

The reference never costs a second copy of the weights:
    plain model    a fresh adapter "default" is trained; the reference is the base with adapters off
    SFT adapter    the SFT adapter is trained in place as "default"; TRL keeps a frozen copy of it as adapter
                   "ref", the reference. The saved adapter is the whole policy (SFT + DPO).
"""

from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import trl
from datasets import Dataset
from transformers import TrainerCallback

from posttrain.attention import eager_attention_when_short
from posttrain.config import ConfigError, DPOConfig, require, to_dict
from posttrain.data import count_over_length, encode_response, load_preferences, render_prompt, split_holdout
from posttrain.data_hub import data_options
from posttrain.lm_head import LEAN_OUTPUTS, use_lean_lm_head
from posttrain.memory import check_quantization
from posttrain.models import is_adapter_folder, load_model, lora_config, model_tokenizer
from posttrain.padding import pad
from posttrain.report import MetricsRecorder, plot_curves, write_metrics, write_model_card
from posttrain.stages.common import (
    StageError,
    frozen_linears_in_bf16,
    gradient_checkpointing,
    load_trainable,
    log,
    loss_span,
    report_trainable,
    save_stage_files,
    sharding,
    stage_tail,
    train_lora_dropout,
    trainer_placement,
)
from posttrain.stages.trl_args import trl_config
from posttrain.stages.trainer_run import resume_point, run_trainer
from posttrain.templates import with_chat_template

# The losses trl.DPOTrainer (1.16) implements, by the names it takes; a comma list combines them (e.g. MPO).
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
POLICY_ADAPTER, REFERENCE_ADAPTER = "default", "ref"  # the names TRL gives them
KL_ROWS = 16  # held-out pairs the KL to the reference is measured on at each evaluation


def loss_types(name: str) -> list[str]:
    names = [n.strip() for n in name.split(",") if n.strip()]
    for n in names or [name]:
        if n not in DPO_LOSSES:
            close = difflib.get_close_matches(n, DPO_LOSSES, n=1)
            raise ConfigError(f"--loss-type: '{n}' is not a DPO loss TRL offers." + (f" Did you mean '{close[0]}'?" if close else "")
                              + f" Choose from {', '.join(DPO_LOSSES)}, or a comma list to combine them.")
    return names


# ---------------------------------------------------------------------------------------------
# The KL the policy has moved from its reference
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def reference_mode(model):
    """Run the block as the reference: the frozen "ref" adapter when there is one, else adapters off."""
    if REFERENCE_ADAPTER in getattr(model, "peft_config", {}):
        model.set_adapter(REFERENCE_ADAPTER)
        try:
            yield
        finally:
            model.set_adapter(POLICY_ADAPTER)
            # peft's set_adapter marks only the active adapter trainable; the policy must stay the trainable one
            for name, param in model.named_parameters():
                if f".{REFERENCE_ADAPTER}." in name:
                    param.requires_grad_(False)
    else:
        with model.disable_adapter():
            yield


@dataclass
class KLBatch:
    input_ids: torch.Tensor  # (batch, seq_len), right-padded
    attention_mask: torch.Tensor  # (batch, seq_len)
    response_mask: torch.Tensor  # (batch, seq_len - 1): 1 where the next token belongs to the response


def kl_batches(examples: list[dict[str, Any]], tokenizer, max_length: int, batch_size: int = 4) -> list[KLBatch]:
    """Held-out prompt + chosen sequences with a mask over the response tokens."""
    rows = []
    for e in examples:
        ids = encode_response(tokenizer, e["prompt"], e["chosen"], tokenizer.eos_token or "")[:max_length]
        prompt = render_prompt(tokenizer, e["prompt"])
        start = len(tokenizer(prompt, add_special_tokens=isinstance(e["prompt"], str))["input_ids"])
        if start < len(ids):
            rows.append((ids, start))
    batches = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        input_ids, attention = pad([ids for ids, _ in chunk], tokenizer.pad_token_id)
        response = torch.zeros((len(chunk), input_ids.shape[1] - 1), dtype=torch.long)
        for j, (ids, start) in enumerate(chunk):
            response[j, start - 1: len(ids) - 1] = 1  # logits at position t predict token t + 1
        batches.append(KLBatch(input_ids, attention, response))
    return batches


def token_kl(policy_logits: torch.Tensor, reference_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Exact KL(policy || reference) over the vocabulary at each masked position, summed per row.

    Args:
        policy_logits, reference_logits: (batch, positions, vocab).
        mask: (batch, positions), 1 on the response positions.

    Returns:
        (batch,) nats per response.
    """
    logp = torch.log_softmax(policy_logits.float(), -1)
    logq = torch.log_softmax(reference_logits.float(), -1)
    per_token = (logp.exp() * (logp - logq)).sum(-1)
    return (per_token * mask).sum(-1)


@torch.no_grad()
def reference_kl(model, batches: list[KLBatch]) -> float:
    """Mean KL(policy || reference) per held-out response (nats), from the full next-token distributions."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, rows = 0.0, 0
    for batch in batches:
        ids, mask, response = batch.input_ids.to(device), batch.attention_mask.to(device), batch.response_mask.to(device)
        policy = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        with reference_mode(model):
            reference = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        total += token_kl(policy, reference, response).sum().item()
        rows += len(ids)
    model.train(was_training)
    return total / max(rows, 1)


class ReferenceKLCallback(TrainerCallback):
    """Adds ``eval_kl`` (KL to the reference on held-out responses) to the history at each evaluation."""

    def __init__(self, batches: list[KLBatch], recorder: MetricsRecorder):
        self.batches, self.recorder = batches, recorder

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if self.batches and model is not None:
            self.recorder.history.append({"step": state.global_step, "eval_kl": reference_kl(model, self.batches)})


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------


def reference_each_step(args) -> str:
    """Why the launch of ``args`` cannot precompute the reference's log-probs ('' when it can)."""
    kind = sharding(args.distributed_state)
    if kind:  # the precomputing pass runs in the trainer's constructor
        return f"{kind} places the model only when training starts"
    if args.world_size > 1:
        return ("TRL 1.16 keeps the precomputed log-probs in a temporary file that each process names differently, "
                "so they run on one process only")
    return ""


class DPOTrainer(trl.DPOTrainer):
    """TRL's DPOTrainer, with its fused LM head answered by `posttrain.lm_head` where TRL has no kernel for it,
    eager attention for short rows on a CPU (`posttrain.attention`), and there, under bf16 autocast, the frozen base's
    Linear weights stored in bf16 (stages.common.frozen_linears_in_bf16).

    All three are installed on the model TRL wrapped, before the reference's log-probs are precomputed (a pass TRL makes
    in its constructor), and again, to the same effect, after construction for runs that compute them in every step.
    """

    def __init__(self, *args, lora_dropout: float = 0.0, **kwargs):
        self.lora_dropout = lora_dropout  # read by lean_passes, which TRL's constructor reaches
        super().__init__(*args, **kwargs)

    def _precompute_ref_logps(self, *args, **kwargs):
        self.lean_passes()
        return super()._precompute_ref_logps(*args, **kwargs)

    def lean_passes(self) -> None:
        use_lean_lm_head(self.model, LEAN_OUTPUTS + (("log_sum_sq_probs",) if self.use_weighting else ()))
        eager_attention_when_short(self.model)
        frozen_linears_in_bf16(self.model, self.args)
        train_lora_dropout(self.model, POLICY_ADAPTER, self.lora_dropout)  # the reference's passes stay without


@dataclass
class DPOSetup:
    trainer: trl.DPOTrainer
    tokenizer: Any
    base_name: str
    reference: str  # what the reference is, in words
    recorder: MetricsRecorder
    counts: dict[str, Any]
    resume_from: str | None = None  # the checkpoint to resume from


def build_dpo_trainer(config: DPOConfig) -> DPOSetup:
    """Data, policy, reference and trainer of the DPO stage, ready for ``trainer.train()``."""
    require(config, "data", "output")
    train = config.train
    losses = loss_types(config.loss_type)

    # 1. read and validate the data (and find the checkpoint to resume) before any model is loaded
    check_quantization(train.quantization)
    table = load_preferences(config.data, **data_options(config))
    rows = [{k: e[k] for k in ("prompt", "chosen", "rejected")} for e in table.rows]
    if "margin" in table.rows[0]:
        log("the data has per-pair margins; DPO does not use them (they are for `posttrain rm`)")
    train_rows, held_rows = split_holdout(rows, train.eval_split, train.seed)
    resume_from = resume_point(config)

    # 2. count what max_length cuts, with the chat template TRL will apply
    tokenizer = with_chat_template(model_tokenizer(config.model), config.chat_template)
    eos = tokenizer.eos_token or ""
    over = count_over_length(rows, tokenizer, train.max_length, plain_suffix=eos)
    prompt_full = sum(
        1 for e in rows
        if len(tokenizer(render_prompt(tokenizer, e["prompt"]), add_special_tokens=isinstance(e["prompt"], str))["input_ids"]) >= train.max_length
    )
    if over:
        log(f"{over} of {len(rows)} pairs are longer than train.max_length={train.max_length} tokens: their responses are cut "
            f"at the end{f', and {prompt_full} whose prompt alone fills it are left out' if prompt_full else ''}. "
            "Raise --train.max_length to keep them whole.")
    if prompt_full >= len(train_rows):
        raise StageError(f"every prompt fills train.max_length={train.max_length}; raise --train.max_length.")

    # 3. the trainer's settings first (accelerate's process state), then policy and reference on one copy of the
    # base weights, built where the trainer expects them
    args = trl_config(trl.DPOConfig, config, has_eval=bool(held_rows), rows=len(train_rows),
                      checkpointing=gradient_checkpointing("dpo", config),
                      beta=config.beta, loss_type=losses, label_smoothing=config.label_smoothing,
                      precompute_ref_log_probs=config.precompute_ref)
    reason = args.precompute_ref_log_probs and reference_each_step(args)
    if reason:
        args.precompute_ref_log_probs = False
        log(f"the reference's log-probs are computed in every step, not once before training: {reason}")
    device, dtype = trainer_placement(args, train)
    if is_adapter_folder(config.model):
        model, _, base_name = load_trainable(config.model, config.lora, adapter_name=POLICY_ADAPTER, device=device,
                                             dtype=dtype, quantization=train.quantization)
        peft_config = None  # TRL copies the trained-on adapter into a frozen "ref" adapter: the SFT policy
        reference = f"the SFT adapter from {config.model} (frozen copy '{REFERENCE_ADAPTER}')"
    else:
        # trainable: a quantized base is readied for the adapter TRL puts on it
        loaded = load_model(config.model, device=device, dtype=dtype, trainable=True, quantization=train.quantization)
        model, base_name = loaded.model, loaded.base_model
        peft_config = lora_config(config.lora, new_token_ids=loaded.new_token_ids)  # TRL wraps it in a fresh adapter
        reference = "the base model (adapters off)"
    log(f"{len(train_rows)} training pairs, {len(held_rows)} held out; loss {'+'.join(losses)}, beta {config.beta}; "
        f"reference: {reference}")

    recorder = MetricsRecorder()
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(held_rows) if held_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[recorder],
        lora_dropout=config.lora.dropout,
    )
    trainer.lean_passes()
    if held_rows:
        trainer.add_callback(ReferenceKLCallback(kl_batches(held_rows[:KL_ROWS], tokenizer, train.max_length), recorder))
    counts = {"pairs": len(rows), "pairs_over_max_length": over, "pairs_prompt_fills_max_length": prompt_full,
              "train_pairs": len(train_rows), "heldout_pairs": len(held_rows)}
    return DPOSetup(trainer, tokenizer, base_name, reference, recorder, counts, resume_from)


def run_dpo(config: DPOConfig) -> Path:
    """Train a DPO adapter as ``config`` says; returns the checkpoint folder."""
    setup = build_dpo_trainer(config)
    output = Path(config.output)
    trainer, recorder = setup.trainer, setup.recorder
    params = report_trainable(trainer.model)

    # 4. train, then a last evaluation on the held-out pairs
    result = run_trainer(trainer, output, setup.resume_from)
    final: dict[str, Any] = {"train_loss": result.training_loss, "steps": result.global_step, **params, **setup.counts}
    final.update(loss_span(recorder.history))
    if setup.counts["heldout_pairs"]:
        evals = [h for h in recorder.history if "eval_loss" in h]
        # the trainer already evaluated at the last step when it fell on an eval_steps boundary
        evaluation = evals[-1] if evals and evals[-1]["step"] == result.global_step else trainer.evaluate()
        for key in ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins", "eval_rewards/chosen", "eval_rewards/rejected"):
            if key in evaluation:
                final[key.replace("/", "_")] = evaluation[key]
        kl = [h["eval_kl"] for h in recorder.history if "eval_kl" in h]
        if kl:
            final["eval_kl"] = kl[-1]
        log(f"held-out reward accuracy {final.get('eval_rewards_accuracies', float('nan')):.3f}, "
            f"margin {final.get('eval_rewards_margins', float('nan')):.3f}, KL to the reference {final.get('eval_kl', float('nan')):.3f} nats/response")

    # 5. save: the policy adapter only (not the frozen reference), tokenizer, config, metrics, plot, model card
    with stage_tail(trainer, output, setup.tokenizer, selected_adapters=[POLICY_ADAPTER]) as folder:
        if folder is not None:
            write_metrics(folder, final, recorder.history)
            plot = plot_curves(folder / "dpo.png", recorder.history, [
                ("loss", ["loss", "eval_loss"]),
                ("reward accuracy", ["rewards/accuracies", "eval_rewards/accuracies"]),
                ("reward margin", ["rewards/margins", "eval_rewards/margins"]),
                ("implicit rewards (held-out)", ["eval_rewards/chosen", "eval_rewards/rejected"]),
                ("KL(policy || reference), nats/response", ["eval_kl"]),
            ], f"DPO of {setup.base_name} ({config.loss_type}, beta {config.beta})")
            write_model_card(folder, "DPO", setup.base_name, config.data, to_dict(config), final, [plot] if plot else [],
                             notes=f"Reference: {setup.reference}. Implicit reward = beta * log(pi / pi_ref) of a response; "
                                   "eval_kl is the exact token-level KL(policy || reference) summed over held-out chosen responses.",
                             usage=[f"posttrain chat {output} --prompt \"Hello!\"", f"posttrain merge {output} --output {output}-merged"])
            save_stage_files(folder, "dpo", config, setup.base_name, reference=setup.reference,
                             started_from=config.model if is_adapter_folder(config.model) else None)
    log(f"saved the DPO adapter to {output}")
    return output
