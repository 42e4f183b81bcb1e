"""Supervised fine-tuning of a LoRA adapter on conversations, on TRL's SFTTrainer."""

from __future__ import annotations

import math
from pathlib import Path

from datasets import Dataset

from posttrain.config import SFTConfig, require, to_dict
from posttrain.data import load_sft, split_holdout, tokenise_sft
from posttrain.data_hub import data_options
from posttrain.lm_head import use_lean_lm_head
from posttrain.memory import check_quantization
from posttrain.models import model_tokenizer
from posttrain.report import MetricsRecorder, plot_curves, write_metrics, write_model_card
from posttrain.stages.common import (
    frozen_linears_in_bf16,
    gradient_checkpointing,
    load_trainable,
    log,
    loss_span,
    report_trainable,
    save_stage_files,
    stage_tail,
    train_lora_dropout,
    trainer_placement,
)
from posttrain.stages.trl_args import trl_config
from posttrain.stages.trainer_run import resume_point, run_trainer
from posttrain.templates import with_chat_template


def run_sft(config: SFTConfig) -> Path:
    """Train an SFT adapter as ``config`` says; returns the checkpoint folder."""
    import trl

    require(config, "data", "output")
    output = Path(config.output)
    train = config.train

    # 1. read and validate the data (and find the checkpoint to resume) before any model is loaded
    check_quantization(train.quantization)
    table = load_sft(config.data, **data_options(config))
    eval_table = load_sft(config.eval_data, columns=config.data_columns) if config.eval_data else None
    resume_from = resume_point(config)

    # 2. tokenise ourselves so the assistant mask works with any incremental template and cuts are counted
    tokenizer = with_chat_template(model_tokenizer(config.model), config.chat_template)
    tokenised = tokenise_sft(table.rows, tokenizer, train.max_length, config.loss_on, table.source, table.places)
    rows = tokenised.rows
    if eval_table is not None:
        held = tokenise_sft(eval_table.rows, tokenizer, train.max_length, config.loss_on, eval_table.source,
                            eval_table.places).rows
    else:
        rows, held = split_holdout(rows, train.eval_split, train.seed)
    if tokenised.truncated or tokenised.dropped:
        log(f"{tokenised.truncated} of {len(table)} rows were longer than train.max_length={train.max_length} and were cut; "
            f"{tokenised.dropped} of them kept no assistant token and were left out. Raise --train.max_length to keep them.")
    log(f"{len(rows)} training rows, {len(held)} held out")

    # 3. the trainer's settings first (accelerate's process state), then the model with a LoRA adapter where the
    # trainer expects it (seeded first: LoRA A starts random)
    # packed, the trainer sees about as many rows as the tokens fill max_length-long rows
    sequences = math.ceil(sum(len(row["input_ids"]) for row in rows) / train.max_length) if config.packing else len(rows)
    args = trl_config(trl.SFTConfig, config, has_eval=bool(held), checkpointing=gradient_checkpointing("sft", config),
                      rows=sequences,
                      packing=config.packing, padding_free=config.packing, completion_only_loss=False,
                      assistant_only_loss=False)
    device, dtype = trainer_placement(args, train)
    model, _, base_name = load_trainable(config.model, config.lora, seed=train.seed, device=device, dtype=dtype,
                                         quantization=train.quantization)
    params = report_trainable(model)
    recorder = MetricsRecorder()
    trainer = trl.SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        eval_dataset=Dataset.from_list(held) if held else None,
        processing_class=tokenizer,
        callbacks=[recorder],
    )
    use_lean_lm_head(trainer.model, ("log_probs", "entropy", "is_top1"))  # where TRL's fused head has no kernel
    frozen_linears_in_bf16(trainer.model, args)  # the products autocast would cast to bf16 anyway
    train_lora_dropout(trainer.model, "default", config.lora.dropout)

    # 4. train
    result = run_trainer(trainer, output, resume_from)
    final = {"train_loss": result.training_loss, "steps": result.global_step, **params,
             "rows": len(table), "rows_truncated": tokenised.truncated, "rows_dropped": tokenised.dropped}
    final.update(loss_span(recorder.history))
    if held:
        evaluation = trainer.evaluate()
        recorder.history.append({"step": result.global_step, **evaluation})
        final["eval_loss"] = evaluation["eval_loss"]
        final["eval_perplexity"] = math.exp(min(evaluation["eval_loss"], 50))

    # 5. save: adapter, tokenizer, config, metrics, plot, model card
    with stage_tail(trainer, output, tokenizer) as folder:
        if folder is not None:
            write_metrics(folder, final, recorder.history)
            plot = plot_curves(folder / "loss.png", recorder.history,
                               [("loss", ["loss", "eval_loss"]), ("learning rate", ["learning_rate"])], f"SFT of {base_name}")
            write_model_card(folder, "SFT", base_name, config.data, to_dict(config), final, [plot] if plot else [],
                             output=output)
            save_stage_files(folder, "sft", config, base_name)
    log(f"saved the SFT adapter to {output} (final loss {final.get('last_loss', float('nan')):.4f})")
    return output
