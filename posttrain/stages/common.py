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
    count_parameters,
    default_device,
    default_dtype,
    expose_head_bias,
    load_model,
    write_metadata,
)

CHECKPOINTS = "checkpoints"  # resumable trainer states live here, under the output folder


class StageError(RuntimeError):
    """A stage cannot start or continue; the message says why and what to do."""


def log(message: str) -> None:
    tqdm.write(f"posttrain: {message}")


def gradient_checkpointing(stage: str, config: Any) -> bool:
    """``train.gradient_checkpointing`` resolved for this machine: 'auto' is off on a CPU (there it only costs
    time) and, on a GPU, on exactly when `posttrain plan` says the run needs more than 80% of the GPU's memory
    without it (checkpointing buys memory for about a third more compute, so it is worth it only when needed)."""
    from posttrain.plan import checkpointing_wanted

    return checkpointing_wanted(stage, config)


def trainer_placement(args: Any, train: TrainSection) -> tuple[torch.device, torch.dtype]:
    """Where and in which dtype a TRL stage builds its model, once its TRL config (and with it accelerate's
    process state) exists.

    On the CPU, from where the Trainer moves it to this process's device, or FSDP and DeepSpeed shard it: under
    `accelerate launch` a model moved to ``cuda`` before that would put every process on GPU 0. A quantized base is
    the exception: bitsandbytes quantizes it as it loads, straight onto this process's own GPU (``args.device``).
    The dtype is the one of the device the model will train on.
    """
    dtype = default_dtype(args.device, train.precision)
    return (args.device if train.quantization != "none" else torch.device("cpu")), dtype


def trainer_kwargs(train: TrainSection, output: Path, has_eval: bool, checkpointing: bool = False) -> dict[str, Any]:
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
        gradient_checkpointing=checkpointing,
        # non-reentrant: works with a frozen embedding (LoRA) and with FSDP2; TRL switches to reentrant where
        # DeepSpeed ZeRO-3 with peft needs it
        gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        dataloader_num_workers=0,
        max_length=train.max_length,
    )


def trl_config(cls: type, train: TrainSection, output: Path, has_eval: bool, checkpointing: bool = False, **extra: Any):
    """A TRL config (``trl.RewardConfig``, ``trl.DPOConfig``, ...) from :func:`trainer_kwargs`, keeping only the
    keys ``cls`` knows, plus the stage's own ``extra`` settings. Make it before the model loads (see
    :func:`trainer_placement`): it sets up accelerate's process state, and under DeepSpeed ZeRO-3 it is what lets
    transformers build the model already sharded."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(cls)}
    shared = {k: v for k, v in trainer_kwargs(train, output, has_eval, checkpointing).items() if k in known and k not in extra}
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


def load_trainable(model_name: str, lora: LoraSection, adapter_name: str = "default", seed: int | None = None, *,
                   device: torch.device | None = None, dtype: torch.dtype | None = None, quantization: str = "none"):
    """A PeftModel ready to train, its tokenizer and its base model's name.

    A plain model gets a fresh LoRA adapter, initialised from ``seed`` when given (so runs repeat). A posttrain
    adapter checkpoint (for example an SFT output) is loaded on its base with its adapter trainable, so
    training continues from it. ``device``, ``dtype``: see :func:`trainer_placement`; ``quantization``: the base
    through bitsandbytes (QLoRA).
    """
    from transformers import set_seed

    if seed is not None:
        set_seed(seed)
    loaded = load_model(model_name, adapter_name=adapter_name, trainable=True, fresh=lora, device=device, dtype=dtype,
                        quantization=quantization)
    model, tokenizer, base_name = loaded.model, loaded.tokenizer, loaded.base_model
    if loaded.adapter_path:
        log(f"continuing from the adapter in {model_name} (base: {base_name})")
    elif loaded.new_token_ids:
        log(f"{model_name} has no chat template: installed ChatML and {len(loaded.new_token_ids)} new special tokens")
    expose_head_bias(model)  # TRL's fused loss reads lm_head.bias, which peft's trainable-token wrapper hides
    return model, tokenizer, base_name


def report_trainable(model: torch.nn.Module) -> dict[str, int | float]:
    trainable, total = count_parameters(model)
    share = trainable / total if total else 0.0
    log(f"trainable parameters: {trainable:,} of {total:,} ({100 * share:.2f}%)")
    return {"trainable_params": trainable, "total_params": total, "trainable_share": share}


def gathered_state(trainer) -> dict | None:
    """The trained model's full state dict for saving, gathered from every process's shards: a collective under FSDP
    and DeepSpeed ZeRO-3, so every process calls it; None on all but the main process, which alone writes the
    checkpoint (two processes writing one folder would remove each other's files)."""
    state = trainer.accelerator.get_state_dict(trainer.model)
    return state if trainer.is_world_process_zero() else None


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
