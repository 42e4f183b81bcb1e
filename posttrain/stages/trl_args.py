"""The TRL config (``trl.SFTConfig``, ``trl.RewardConfig``, ``trl.DPOConfig``) a stage trains with: posttrain's
settings under TRL's names, the stage's own settings, the tracker, and ``train.extra`` passed through as the user
wrote it, checked against the TRL config's fields. Nothing is dropped: a name TRL's config lacks is an error."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from pathlib import Path
from typing import Any

import torch

from posttrain.config import ConfigError, TrainSection
from posttrain.config_aliases import aliases
from posttrain.models import cpu_has_fast_bf16, default_device, default_dtype
from posttrain.run_folder import CHECKPOINTS
from posttrain.stages.common import log
from posttrain.tracking import trainer_settings

# TRL fields posttrain sets its own way (its resume, folder layout, data handling and publishing depend on them),
# and the setting to change instead
PINNED = {
    "output_dir": "--output", "report_to": "--report_to", "run_name": "--output (the run is named after it)",
    "push_to_hub": "--push_to_hub REPO", "hub_model_id": "--push_to_hub REPO",
    "hub_strategy": "--push_to_hub REPO (the finished folder is uploaded once)",
    "eval_strategy": "--train.eval_steps and --train.eval_split", "save_strategy": "--train.save_steps",
    "resume_from_checkpoint": "--resume", "max_length": "--train.max_length", "seed": "--train.seed",
    "max_steps": "--train.max_steps", "save_steps": "--train.save_steps", "gradient_checkpointing": "--train.gradient_checkpointing",
    "dataset_text_field": "--data_columns text=COLUMN", "chat_template_path": "--chat_template",
    "completion_only_loss": "--loss_on", "assistant_only_loss": "--loss_on", "padding_free": "--packing",
    "disable_dropout": "--lora.dropout",
}


def steps_per_epoch(train: TrainSection, rows: int, processes: int | None = None) -> int:
    """Optimizer steps in one pass over ``rows`` training rows, as transformers' Trainer counts them: each process
    gets ceil(rows / (batch * processes)) batches (accelerate's even split), and a last partial accumulation is
    a step of its own."""
    processes = processes or int(os.environ.get("WORLD_SIZE", "1"))
    batches = math.ceil(rows / (train.batch_size * processes))
    return max(math.ceil(batches / train.grad_accum), 1)


def planned_max_steps(train: TrainSection, rows: int, processes: int | None = None) -> int:
    """``train.max_steps``, or on a data set too small to make ``train.min_steps`` optimizer steps in ``epochs``
    passes, exactly ``min_steps`` (the Trainer then makes passes until it has them, the last one cut short): a
    LoRA-sized learning rate needs a number of updates, not a number of passes, and a few hundred rows at batch 4
    give a few dozen (bench/quality.py measured the stages underfitting there). -1: the epochs decide."""
    if train.max_steps > 0 or train.min_steps <= 0 or rows <= 0:
        return train.max_steps
    if train.epochs * steps_per_epoch(train, rows, processes) >= train.min_steps:
        return train.max_steps
    return train.min_steps


def trainer_kwargs(train: TrainSection, output: Path, has_eval: bool, checkpointing: bool = False,
                   rows: int = 0) -> dict[str, Any]:
    """Keyword arguments shared by the TRL configs (SFTConfig, RewardConfig, DPOConfig); ``rows`` is the number of
    training rows (for ``train.min_steps``; 0 leaves the epochs as set)."""
    device = default_device()
    dtype = default_dtype(device, train.precision)
    # 'auto' on a CPU with native bf16 products keeps fp32 weights and runs the forward passes under bf16 autocast,
    # as TRL's configs do by default (their bf16 is on): on the 2-core Xeon of bench/quality.py, DPO's steps took
    # 7 s against 16-20 s in fp32 and the reward model's a third less (README: Quality on data we did not write)
    autocast_bf16 = train.precision == "auto" and device.type == "cpu" and cpu_has_fast_bf16()
    eval_every = train.eval_steps or None
    return dict(
        output_dir=str(output / CHECKPOINTS),
        learning_rate=train.lr,
        num_train_epochs=train.epochs,
        max_steps=planned_max_steps(train, rows),
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.batch_size,
        gradient_accumulation_steps=train.grad_accum,
        warmup_steps=train.warmup_ratio,  # transformers 5 reads a warmup_steps below 1 as a share of the steps
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
        bf16=dtype == torch.bfloat16 or autocast_bf16,
        fp16=dtype == torch.float16,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        max_length=train.max_length,
    )


def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def _types(tp: Any) -> set:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return {t for arg in typing.get_args(tp) for t in _types(arg)}
    return {typing.get_origin(tp) or tp}


def _typed(value: Any, tp: Any, where: str) -> Any:
    """A value given as text on the command line, in the type of the TRL field it sets; YAML values keep the type
    YAML gave them (TRL's own checks judge those)."""
    kinds = _types(tp)
    if isinstance(value, dict) and kinds & {dict, Any}:
        return _leaves(value)
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.lower() in ("none", "null") and type(None) in kinds:
        return None
    if bool in kinds and text.lower() in ("true", "false", "1", "0", "yes", "no"):
        return text.lower() in ("true", "1", "yes")
    for number in (int, float):
        if number in kinds:
            try:
                return number(text)
            except ValueError:
                pass
    if kinds & {dict, list} and text[:1] and text[:1] in "{[":
        import yaml

        return yaml.safe_load(text)
    if kinds & {str, Any} or any(isinstance(k, type) and issubclass(k, str) for k in kinds):
        return value
    raise ConfigError(f"{where}: {value!r} is not a {' or '.join(sorted(getattr(k, '__name__', str(k)) for k in kinds))}.")


def _leaves(mapping: dict) -> dict:
    """A mapping field (``lr_scheduler_kwargs``, ``model_init_kwargs``) set entry by entry on the command line:
    its text values read as YAML scalars, so ``--train.extra.lr_scheduler_kwargs.min_lr 1e-6`` is a number."""
    return {key: _leaves(value) if isinstance(value, dict) else _scalar(value) if isinstance(value, str) else value
            for key, value in mapping.items()}


def _scalar(text: str) -> Any:
    """Text as the YAML scalar it spells, with ``1e-6`` a number (YAML 1.1 wants ``1.0e-6``)."""
    import yaml

    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def pinned(config: Any, stage_settings: dict[str, Any]) -> dict[str, str]:
    """Every TRL field the stage sets from one of posttrain's settings, with the flag that sets it."""
    table = dict(PINNED)
    for name, alias in aliases(type(config)).items():
        table.setdefault(name, f"--{alias.key}")
    for name in stage_settings:
        table.setdefault(name, f"--{name}" if hasattr(config, name) else "posttrain (the stage needs it so)")
    return table


def checked_extra(config: Any, trl_cls: type, stage_settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """``config.train.extra`` as keyword arguments of ``trl_cls``: each name must be a field of it that posttrain does
    not set itself, each text value becomes the field's type. Called before data is read or a model loads."""
    fields, fixed = _fields(trl_cls), pinned(config, stage_settings or {})
    out = {}
    for key, value in config.train.extra.items():
        where = f"train.extra.{key}"
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
            raise ConfigError(f"{where}: TRL's {trl_cls.__name__} has no field '{key}'."
                              + (f" Did you mean '{close[0]}'?" if close else " train.extra passes TRL config fields through."))
        if key in fixed:
            raise ConfigError(f"{where}: posttrain sets {key} itself; use {fixed[key]}.")
        out[key] = _typed(value, fields[key], where)
    return out


def trl_config(cls: type, config: Any, has_eval: bool, checkpointing: bool = False, rows: int = 0,
               **stage_settings: Any):
    """A TRL config (``trl.SFTConfig``, ``trl.RewardConfig``, ``trl.DPOConfig``) from :func:`trainer_kwargs`, the
    tracker of ``--report_to``, the stage's own ``stage_settings`` and ``train.extra``. Make it before the model
    loads (see stages.common.trainer_placement): it sets up accelerate's process state, and under DeepSpeed ZeRO-3
    it is what lets transformers build the model already sharded. ``rows``: the training rows, for
    ``train.min_steps``."""
    output = Path(config.output)
    shared = {**trainer_kwargs(config.train, output, has_eval, checkpointing, rows),
              **trainer_settings(config.report_to, output)}
    steps = shared["max_steps"]
    if steps != config.train.max_steps:  # train.min_steps raised the run
        log(f"{rows} training rows make fewer than train.min_steps={steps} optimizer steps in "
            f"{config.train.epochs:g} epoch(s): training {steps} steps, "
            f"{steps / steps_per_epoch(config.train, rows):.2f} epochs (--train.min_steps 0 keeps the epochs as set)")
    known = _fields(cls)
    if "disable_dropout" in known:
        # TRL's reward and DPO trainers switch every dropout off (the reference passes must not be random); the stage
        # then gives the trained adapter back the dropout --lora.dropout sets (stages.common.train_lora_dropout)
        shared["disable_dropout"] = True
    unknown = sorted(set(shared) - set(known))
    if unknown:  # a TRL release that renamed a field: say so rather than train without the setting
        raise ConfigError(f"TRL's {cls.__name__} (trl {__import__('trl').__version__}) has no field {', '.join(unknown)}, "
                          "which posttrain sets; install the TRL version in posttrain's requirements.")
    extra = checked_extra(config, cls, stage_settings)
    try:
        return cls(**{**shared, **stage_settings, **extra})
    except (TypeError, ValueError) as err:
        if not extra:
            raise
        raise ConfigError(f"train.extra ({', '.join(extra)}): TRL's {cls.__name__} refused the settings: {err}") from None
