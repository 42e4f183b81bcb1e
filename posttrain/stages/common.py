"""What every training stage shares: trainer settings for the machine at hand, loading a model to
train, resuming, and writing the finished checkpoint atomically."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from tqdm.auto import tqdm

from posttrain.config import LoraSection, TrainSection, save_config, to_dict
from posttrain.models import (
    METADATA_FILE,
    adapter_base,
    adapter_tokenizer,
    count_parameters,
    default_device,
    default_dtype,
    expose_head_bias,
    is_adapter_folder,
    load_base_model,
    load_tokenizer,
    lora_config,
    match_vocab,
    write_metadata,
)

CHECKPOINTS = "checkpoints"  # resumable trainer states live here, under the output folder


class StageError(RuntimeError):
    """A stage cannot start or continue; the message says why and what to do."""


def log(message: str) -> None:
    tqdm.write(f"posttrain: {message}")


def gradient_checkpointing(train: TrainSection) -> bool:
    """On by default only with a GPU: on a CPU with a small model it costs several times the throughput."""
    if train.gradient_checkpointing == "auto":
        return torch.cuda.is_available()
    return train.gradient_checkpointing.lower() in ("true", "1", "yes", "on")


def trainer_kwargs(train: TrainSection, output: Path, has_eval: bool) -> dict[str, Any]:
    """Keyword arguments shared by the TRL configs (SFTConfig, RewardConfig, DPOConfig)."""
    dtype = default_dtype(default_device(), train.precision)
    eval_every = train.eval_steps or None
    return dict(
        output_dir=str(output / CHECKPOINTS),
        learning_rate=train.lr,
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.batch_size,
        gradient_accumulation_steps=train.grad_accum,
        warmup_steps=train.warmup_ratio,
        lr_scheduler_type=train.scheduler,
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        seed=train.seed,
        data_seed=train.seed,
        logging_steps=train.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if train.save_steps > 0 else "no",
        save_steps=train.save_steps or 500,
        save_total_limit=2,
        eval_strategy=("steps" if eval_every else "no") if has_eval else "no",
        eval_steps=eval_every,
        gradient_checkpointing=gradient_checkpointing(train),
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        dataloader_num_workers=0,
        max_length=train.max_length,
    )


def trl_config(cls: type, train: TrainSection, output: Path, has_eval: bool, **extra: Any):
    """A TRL config (``trl.RewardConfig``, ``trl.DPOConfig``, ...) from :func:`trainer_kwargs`, keeping only the
    keys ``cls`` knows, plus the stage's own ``extra`` settings."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(cls)}
    shared = {k: v for k, v in trainer_kwargs(train, output, has_eval).items() if k in known and k not in extra}
    return cls(**shared, **extra)


def resume_point(output: Path, resume: bool) -> str | None:
    """The newest resumable checkpoint when ``resume`` is asked for; an error when there is none."""
    if not resume:
        return None
    folder = output / CHECKPOINTS
    found = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])) if folder.is_dir() else []
    if not found:
        raise StageError(f"--resume: no checkpoint under {folder}. Run without --resume, or set train.save_steps so runs save checkpoints.")
    log(f"resuming from {found[-1]}")
    return str(found[-1])


def load_trainable(model_name: str, lora: LoraSection, adapter_name: str = "default", seed: int | None = None):
    """A PeftModel ready to train, its tokenizer and its base model's name.

    A plain model gets a fresh LoRA adapter, initialised from ``seed`` when given (so runs repeat). A posttrain
    adapter checkpoint (for example an SFT output) is loaded on its base with its adapter trainable, so
    training continues from it.
    """
    from peft import PeftModel, get_peft_model
    from transformers import set_seed

    if seed is not None:
        set_seed(seed)
    device = default_device()
    if is_adapter_folder(model_name):
        base_name = adapter_base(model_name)
        tokenizer = adapter_tokenizer(model_name, base_name)
        base = load_base_model(base_name, device=device)
        match_vocab(base, tokenizer)
        model = PeftModel.from_pretrained(base, model_name, adapter_name=adapter_name, is_trainable=True)
        log(f"continuing from the adapter in {model_name} (base: {base_name})")
    else:
        base_name = model_name
        tokenizer = load_tokenizer(model_name)
        base = load_base_model(model_name, device=device)
        new_ids = match_vocab(base, tokenizer)
        if new_ids:
            log(f"{model_name} has no chat template: installed ChatML and {len(new_ids)} new special tokens")
        model = get_peft_model(base, lora_config(lora, new_token_ids=new_ids), adapter_name=adapter_name)
    expose_head_bias(model)  # TRL's fused loss reads lm_head.bias, which peft's trainable-token wrapper hides
    return model, tokenizer, base_name


def report_trainable(model: torch.nn.Module) -> dict[str, int | float]:
    trainable, total = count_parameters(model)
    share = trainable / total if total else 0.0
    log(f"trainable parameters: {trainable:,} of {total:,} ({100 * share:.2f}%)")
    return {"trainable_params": trainable, "total_params": total, "trainable_share": share}


@contextmanager
def finished_checkpoint(output: Path) -> Iterator[Path]:
    """Write a stage's final files into a scratch folder, then move them into ``output``.

    The metadata file that marks a checkpoint as complete is moved last, so a run killed while saving
    never leaves a folder that looks finished.
    """
    output.mkdir(parents=True, exist_ok=True)
    scratch = output / ".writing"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    (output / METADATA_FILE).unlink(missing_ok=True)
    try:
        yield scratch
        items = sorted(scratch.iterdir(), key=lambda p: p.name == METADATA_FILE)
        for item in items:
            target = output / item.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def save_stage_files(folder: Path, stage: str, config: Any, base_model: str, **extra: Any) -> None:
    """The resolved config and the metadata that marks ``folder`` as a finished posttrain checkpoint."""
    save_config(config, folder / "posttrain_config.yaml")
    write_metadata(folder, stage=stage, base_model=base_model, config=to_dict(config), **extra)
