"""``posttrain rm``: a reward model trained on preference pairs. A scalar head on the base model, trained in
full, and a LoRA adapter on the body, trained with the pairwise Bradley-Terry loss on TRL's RewardTrainer.
The checkpoint layout and the reward of a sequence are in reward_model.py; ``posttrain score`` in score.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import trl
from datasets import Dataset

from posttrain.attention import eager_attention_when_short
from posttrain.config import LoraSection, RewardConfig, require, to_dict
from posttrain.data import load_preferences, split_holdout
from posttrain.data_hub import data_options
from posttrain.memory import check_quantization
from posttrain.models import keep_first_layers, layer_index, load_model, lora_config, model_tokenizer
from posttrain.report import MetricsRecorder, plot_curves, plot_histograms, plot_scatter, write_metrics, write_model_card
from posttrain.rl.losses import bradley_terry_loss
from posttrain.stages.common import (
    StageError,
    gradient_checkpointing,
    log,
    loss_span,
    report_trainable,
    save_stage_files,
    stage_tail,
    train_lora_dropout,
    trainer_placement,
)
from posttrain.stages.trl_args import trl_config
from posttrain.stages.reward_model import (
    HEAD_FILE,
    HEAD_NAMES,
    body_and_head,
    head_in_fp32,
    reward_model_rows,
    running_head,
    score_ids,
    sequence_rewards,
)
from posttrain.stages.trainer_run import resume_point, run_trainer
from posttrain.templates import with_chat_template

LENGTH_BIAS_WARNING = 0.5  # |corr(reward, length)| above this is reported as a length-biased reward model


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


class PairwiseRewardTrainer(trl.RewardTrainer):
    """TRL's RewardTrainer with the reward read from the pooled hidden states (``pooling``, see reward_model.pool)
    and the loss from :func:`posttrain.rl.losses.bradley_terry_loss` (with the per-pair margin when the data has one)."""

    def __init__(self, *args, pooling: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.pooling = pooling  # "mean", "response" or "last" (reward_model.pool), the config's
        self.data_collator = PairCollator(self.data_collator)
        head_in_fp32(self.model)  # also undoes TRL's bf16 cast of a quantized model's head; before the optimizer exists

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns += [key for key in PairCollator.STARTS if key not in self._signature_columns]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        # the body under the trainer's mixed precision (bf16 autocast on a CPU with bf16 products; see trl_args), which
        # reading the body directly would bypass
        with self.accelerator.autocast():
            rewards = sequence_rewards(self.accelerator.unwrap_model(model), inputs["input_ids"], inputs["attention_mask"],
                                       self.pooling, inputs.get("response_start"))
        chosen, rejected = rewards.chunk(2)  # TRL's collator stacks all chosen rows, then all rejected
        out = bradley_terry_loss(chosen, rejected, inputs.get("margin"))
        self._metrics[mode]["accuracy"].append(out.accuracy.item())
        self._metrics[mode]["margin"].append(out.reward_margin.item())
        self._metrics[mode]["mean_reward"].append(rewards.detach().mean().item())
        return (out.loss, {"rewards": rewards.detach()}) if return_outputs else out.loss


class PairCollator:
    """TRL's preference collator, plus ``response_start`` (2 * pairs,): where each row's response begins, in the
    collator's order (every chosen row, then every rejected one), for rows that carry their starts (PairIds.rows);
    rows TRL tokenised itself have none, and only "response" pooling needs them (it then names what is missing)."""

    STARTS = ("chosen_start", "rejected_start")

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collate([{k: v for k, v in e.items() if k not in self.STARTS} for e in examples])
        if all(key in examples[0] for key in self.STARTS):
            batch["response_start"] = torch.tensor([e[key] for key in self.STARTS for e in examples])
        return batch


@dataclass
class PairIds:
    """Tokenised preference pairs: prompt + chosen and prompt + rejected ids, where each response begins in them,
    and the response lengths in tokens."""

    chosen: list[list[int]]
    rejected: list[list[int]]
    chosen_start: list[int]
    rejected_start: list[int]
    margins: list[float] | None
    chosen_len: list[int]
    rejected_len: list[int]

    def rows(self) -> list[dict[str, Any]]:
        rows = [{"chosen_ids": c, "rejected_ids": r, "chosen_start": cs, "rejected_start": rs}
                for c, r, cs, rs in zip(self.chosen, self.rejected, self.chosen_start, self.rejected_start)]
        if self.margins is not None:
            for row, margin in zip(rows, self.margins):
                row["margin"] = margin
        return rows


def response_tokens(tokenizer, response) -> int:
    text = response if isinstance(response, str) else "".join(m["content"] for m in response if m["role"] == "assistant")
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def tokenise_pairs(examples: list[dict[str, Any]], tokenizer, max_length: int) -> tuple[PairIds, int]:
    """Pairs as the reward model reads them; pairs past ``max_length`` are left out (TRL's rule) and counted."""
    prompts = [e["prompt"] for e in examples]
    chosen, chosen_start = reward_model_rows(tokenizer, prompts, [e["chosen"] for e in examples])
    rejected, rejected_start = reward_model_rows(tokenizer, prompts, [e["rejected"] for e in examples])
    keep = [i for i in range(len(examples)) if max(len(chosen[i]), len(rejected[i])) <= max_length]
    kept = [examples[i] for i in keep]
    margins = [e["margin"] for e in kept] if kept and "margin" in kept[0] else None
    return PairIds([chosen[i] for i in keep], [rejected[i] for i in keep], [chosen_start[i] for i in keep],
                   [rejected_start[i] for i in keep], margins, [response_tokens(tokenizer, e["chosen"]) for e in kept],
                   [response_tokens(tokenizer, e["rejected"]) for e in kept]), len(examples) - len(keep)


def build_model(model_name: str, lora: LoraSection, seed: int, *, device: torch.device | None = None,
                dtype: torch.dtype | None = None, quantization: str = "none", layers: int = 0):
    """A SEQ_CLS PeftModel ready to train (LoRA on the body, the head in full), its tokenizer, base name, and how
    many decoder layers it runs when ``layers`` cut the body to its first that many (models.keep_first_layers),
    else 0 (all of them).

    A posttrain adapter checkpoint (e.g. an SFT output) as ``model_name`` starts the reward adapter from its
    LoRA weights, on its base, so the reward model still fits the plain base the PPO stage loads. ``device``,
    ``dtype``: see stages.common.trainer_placement; ``quantization``: the base through bitsandbytes (QLoRA).
    """
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import set_seed

    set_seed(seed)  # the head starts random: seed it
    loaded = load_model(model_name, task="seq_cls", attach=False, trainable=True, device=device, dtype=dtype,
                        quantization=quantization)
    total = loaded.model.config.num_hidden_layers
    kept = keep_first_layers(loaded.model, layers)
    if kept:
        log(f"the reward model reads the first {kept} of the base's {total} decoder layers (--layers; 0 reads all)")
    start, base_name, tokenizer = loaded.adapter_path, loaded.base_model, loaded.tokenizer
    if start:
        # the SFT adapter is a causal-LM adapter: the reward adapter gets its LoRA shape and weights, a new head
        saved = json.loads(Path(start, "adapter_config.json").read_text())
        targets = saved["target_modules"]
        lora = LoraSection(r=saved["r"], alpha=saved["lora_alpha"], dropout=lora.dropout,
                           target_modules=targets if isinstance(targets, str) else ",".join(sorted(targets)))
    model = get_peft_model(loaded.model, lora_config(lora, task_type="SEQ_CLS", new_token_ids=loaded.new_token_ids))
    if start:
        # the SFT adapter's LoRA on the layers past the kept ones has nowhere to go
        state = {k: v for k, v in load_file(str(Path(start, "adapter_model.safetensors"))).items()
                 if "lora_" in k and (not kept or layer_index(k) < kept)}
        result = set_peft_model_state_dict(model, {**get_peft_model_state_dict(model), **state})  # the new head stays
        if [k for k in result.unexpected_keys if "lora_" in k]:
            raise StageError(f"the adapter in {start} does not fit {base_name} as a reward model.")
        log(f"reward adapter starts from the LoRA weights in {start} (base: {base_name})")
    lora_on_head = [n for n, _ in model.named_parameters() if "lora_" in n and any(f".{h}." in n for h in HEAD_NAMES)]
    if lora_on_head:
        raise StageError(f"LoRA landed on the reward head ({lora_on_head[0]}); exclude it from --lora.target_modules.")
    eager_attention_when_short(model)
    return model, tokenizer, base_name, kept


def head_state(model) -> dict[str, torch.Tensor]:
    """The trained scalar head alone, as "weight" (1, hidden) and "bias" when it has one."""
    return {k: v.detach().float().cpu().contiguous() for k, v in running_head(body_and_head(model)[1]).state_dict().items()}


@dataclass
class PairStats:
    """Rewards of held-out pairs and what the report says about them."""

    chosen: list[float]
    rejected: list[float]
    chosen_len: list[int]
    rejected_len: list[int]

    def summary(self) -> dict[str, float]:
        diffs = [c - r for c, r in zip(self.chosen, self.rejected)]
        rewards = self.chosen + self.rejected
        mean = sum(rewards) / len(rewards)
        return {
            "accuracy": sum(d > 0 for d in diffs) / len(diffs),
            "mean_margin": sum(diffs) / len(diffs),
            "reward_mean": mean,
            "reward_std": math.sqrt(sum((x - mean) ** 2 for x in rewards) / max(1, len(rewards) - 1)),
            "chosen_mean": sum(self.chosen) / len(self.chosen),
            "rejected_mean": sum(self.rejected) / len(self.rejected),
            # a reward that tracks length is the first thing PPO learns to exploit
            "length_correlation": pearson(rewards, [float(n) for n in self.chosen_len + self.rejected_len]),
            "margin_length_correlation": pearson(diffs, [float(c - r) for c, r in zip(self.chosen_len, self.rejected_len)]),
            "pairs": len(diffs),
        }


def pearson(xs: list[float], ys: list[float]) -> float:
    """Pearson correlation; nan when either side has no spread."""
    n = len(xs)
    if n < 2:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def pair_stats(model, pairs: PairIds, pad_id: int, batch_size: int, pooling: str) -> PairStats:
    was_training = model.training
    model.eval()
    chosen = score_ids(model, pairs.chosen, pairs.chosen_start, pad_id, batch_size, pooling=pooling)
    rejected = score_ids(model, pairs.rejected, pairs.rejected_start, pad_id, batch_size, pooling=pooling)
    model.train(was_training)
    return PairStats(chosen, rejected, pairs.chosen_len, pairs.rejected_len)


@dataclass
class RewardSetup:
    trainer: PairwiseRewardTrainer
    tokenizer: Any
    base_name: str
    train_pairs: PairIds
    held_pairs: PairIds
    recorder: MetricsRecorder
    counts: dict[str, Any]
    resume_from: str | None = None  # the checkpoint to resume from
    layers: int = 0  # how many decoder layers the reward model runs, 0 for all (the checkpoint's reward_layers)


def build_reward_trainer(config: RewardConfig) -> RewardSetup:
    """Data, model and trainer of the reward-model stage, ready for ``trainer.train()``."""
    require(config, "data", "output")
    train = config.train

    # 1. read and validate the data (and find the checkpoint to resume) before any model is loaded
    check_quantization(train.quantization)
    table = load_preferences(config.data, **data_options(config))
    train_rows, held_rows = split_holdout(table.rows, train.eval_split, train.seed)
    resume_from = resume_point(config)

    # 2. tokenise with the chat template ourselves: the same rendering score() and PPO use, cuts counted
    tokenizer = with_chat_template(model_tokenizer(config.model), config.chat_template)
    train_pairs, over_train = tokenise_pairs(train_rows, tokenizer, train.max_length)
    held_pairs, over_held = tokenise_pairs(held_rows, tokenizer, train.max_length)
    over = over_train + over_held
    if over:
        log(f"{over} of {len(table)} pairs were longer than train.max_length={train.max_length} tokens and were left out "
            "(a cut response would be scored on a different text). Raise --train.max_length to keep them.")
    if not train_pairs.chosen:
        raise StageError(f"no training pairs fit in train.max_length={train.max_length}; raise --train.max_length.")
    log(f"{len(train_pairs.chosen)} training pairs, {len(held_pairs.chosen)} held out"
        + (" (with per-pair margins)" if train_pairs.margins is not None else ""))

    # 3. the trainer's settings first (accelerate's process state), then the base model with a scalar head and
    # LoRA on the body, built where the trainer expects it
    args = trl_config(trl.RewardConfig, config, has_eval=bool(held_pairs.chosen), rows=len(train_pairs.chosen),
                      checkpointing=gradient_checkpointing("rm", config))
    device, dtype = trainer_placement(args, train)
    model, _, base_name, layers = build_model(config.model, config.lora, train.seed, device=device, dtype=dtype,
                                              quantization=train.quantization, layers=config.layers)
    recorder = MetricsRecorder()
    trainer = PairwiseRewardTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_pairs.rows()),
        eval_dataset=Dataset.from_list(held_pairs.rows()) if held_pairs.chosen else None,
        processing_class=tokenizer,
        callbacks=[recorder],
        pooling=config.pooling,
    )
    train_lora_dropout(trainer.model, "default", config.lora.dropout)  # after TRL switched every dropout off
    counts = {"pairs": len(table), "pairs_over_max_length": over, "train_pairs": len(train_pairs.chosen),
              "heldout_pairs": len(held_pairs.chosen)}
    return RewardSetup(trainer, tokenizer, base_name, train_pairs, held_pairs, recorder, counts, resume_from, layers)


def run_reward(config: RewardConfig) -> Path:
    """Train a LoRA reward model as ``config`` says; returns the checkpoint folder."""
    setup = build_reward_trainer(config)
    output = Path(config.output)
    trainer, tokenizer, recorder = setup.trainer, setup.tokenizer, setup.recorder
    params = report_trainable(trainer.model)

    # 4. train
    result = run_trainer(trainer, output, setup.resume_from)
    final: dict[str, Any] = {"train_loss": result.training_loss, "steps": result.global_step, **params, **setup.counts}
    final.update(loss_span(recorder.history))

    # 5. held-out report: accuracy, margin, reward distribution, length bias
    evaluated = setup.held_pairs if setup.held_pairs.chosen else setup.train_pairs
    where = "heldout" if setup.held_pairs.chosen else "train"
    stats = pair_stats(trainer.model, evaluated, tokenizer.pad_token_id, config.train.batch_size, config.pooling)
    summary = stats.summary()
    final.update({f"{where}_{k}" if k != "pairs" else f"{where}_pairs": v for k, v in summary.items()})
    recorder.history.append({"step": result.global_step, "eval_accuracy": summary["accuracy"], "eval_margin": summary["mean_margin"]})
    corr = summary["length_correlation"]
    if math.isfinite(corr) and abs(corr) > LENGTH_BIAS_WARNING and summary["pairs"] >= 10:
        log(f"WARNING: the reward correlates with response length (r = {corr:.2f} on {where} responses). PPO against "
            "this reward model will likely learn to change length rather than quality; balance lengths in the data first.")
    log(f"{where} pairwise accuracy {summary['accuracy']:.3f}, mean margin {summary['mean_margin']:.3f}, "
        f"corr(reward, length) {corr:.3f} over {summary['pairs']} pairs")

    # 6. save: adapter with the head, the head alone, tokenizer, config, metrics, plots, model card
    from safetensors.torch import save_file

    with stage_tail(trainer, output, tokenizer) as folder:
        if folder is not None:
            save_file(head_state(trainer.model), str(folder / HEAD_FILE))
            write_metrics(folder, final, recorder.history,
                          rewards={"chosen": stats.chosen, "rejected": stats.rejected,
                                   "chosen_tokens": stats.chosen_len, "rejected_tokens": stats.rejected_len})
            plots = [
                plot_curves(folder / "loss.png", recorder.history,
                            [("loss", ["loss", "eval_loss"]), ("pairwise accuracy", ["accuracy", "eval_accuracy"]),
                             ("reward margin", ["margin", "eval_margin"])], f"Reward model on {setup.base_name}"),
                plot_histograms(folder / "rewards.png", {"chosen": stats.chosen, "rejected": stats.rejected},
                                f"Rewards on {where} pairs (accuracy {summary['accuracy']:.2f})", "reward"),
                plot_scatter(folder / "reward_vs_length.png",
                             {"chosen": (stats.chosen_len, stats.chosen), "rejected": (stats.rejected_len, stats.rejected)},
                             f"Reward against length (r = {corr:.2f})", "response tokens", "reward"),
            ]
            write_model_card(folder, "reward model", setup.base_name, config.data, to_dict(config), final,
                             [p for p in plots if p], usage=[f"posttrain score {output} --data rows.jsonl",
                                                            f"posttrain rlhf --reward-model {output} --prompts prompts.jsonl --output OUT"],
                             notes=READ_ME_LAYOUT)
            save_stage_files(folder, "rm", config, setup.base_name, reward_pooling=config.pooling,
                             reward_layers=setup.layers,
                             reward_mean=summary["reward_mean"],
                             reward_std=summary["reward_std"], length_correlation=corr, evaluated_on=where)
    log(f"saved the reward model to {output}")
    return output


READ_ME_LAYOUT = """## Layout

`adapter_config.json` + `adapter_model.safetensors` are a peft SEQ_CLS adapter: LoRA on the transformer's linear
layers and the scalar head `score` in full (modules_to_save). `reward_head.safetensors` holds the head alone
(`weight` of shape (1, hidden), `bias` if any), for loading the LoRA weights onto another model of the same base.
The reward is the head on the hidden states of the chat-template rendering of prompt + response, pooled as
`reward_pooling` in posttrain.json says: "mean" over every token, "response" over the response's tokens alone, or the
"last" token's. The states are those of the base's first `reward_layers` decoder layers, through its final norm (the
layers above are not part of the reward model): load the base with `num_hidden_layers=reward_layers`."""
