"""What every training stage shares: trainer settings for the machine at hand, loading a model to
train, the output folder's lock, resuming (only from a complete checkpoint, only with the saved run's
settings), and writing the finished checkpoint atomically."""

from __future__ import annotations

import errno
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from tqdm.auto import tqdm

from posttrain.atomic import write_atomic
from posttrain.attention import eager_attention_when_short
from posttrain.config import LoraSection, TrainSection, save_config, to_dict
from posttrain.models import (
    METADATA_FILE,
    count_parameters,
    default_dtype,
    expose_head_bias,
    load_model,
    write_metadata,
)
from posttrain.run_folder import CHECKPOINTS, LOCK_FILE, SCRATCH, read_lock

RUN_SETTINGS = "posttrain_run.json"  # under checkpoints/: the settings of the run the checkpoints belong to
INCOMPLETE = "incomplete-"  # prefix of a checkpoint set aside because a kill or a full disk cut its write short
# settings a resumed run may change: they decide what is logged and saved, not what is trained
FREE_ON_RESUME = {"resume", "output", "report_to", "push_to_hub", "train.logging_steps", "train.save_steps", "ppo.save_steps"}
# settings added to posttrain since runs were saved without them: the value those runs used (a default that did not
# change is listed too where the setting decides what a checkpoint holds, as ppo.critic does)
BEFORE_THE_KEY = {"pooling": "last", "ppo.critic": "separate"}
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
KILL_AT = "POSTTRAIN_TEST_KILL_AT"  # test-only: the point at which kill_point() SIGKILLs the process


def kill_point(where: str) -> None:
    """For tests only: kill this process with SIGKILL, as a preemption or the OOM killer would, when
    ``$POSTTRAIN_TEST_KILL_AT`` names ``where``. Points: ``step-N`` (a TRL stage, after optimizer step N),
    ``checkpoint-N`` (inside the write of checkpoint N, before the file that completes it) and ``final-move``
    (halfway through moving a finished run's files into its output folder)."""
    if os.environ.get(KILL_AT) == where:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


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


def sharding(state: Any) -> str:
    """'FSDP' or 'DEEPSPEED' when ``state`` (an Accelerator, or accelerate's process state) shards the model, else ''."""
    kind = getattr(getattr(state, "distributed_type", None), "value", "")
    return kind if kind in ("FSDP", "DEEPSPEED") else ""


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


def train_lora_dropout(model: torch.nn.Module, adapter: str, p: float) -> None:
    """Dropout ``p`` on the input of LoRA adapter ``adapter``, the one a stage trains, and none on any other adapter:
    what ``--lora.dropout`` sets, whatever dropout a continued adapter was saved with and after TRL's reward and
    DPO trainers switched every dropout off (the base model's own and the reference adapter's stay off). The
    adapter's config records ``p``, so the checkpoint says what ran. Calling it again changes nothing."""
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer):
            for name in module.lora_dropout:
                rate = p if name == adapter else 0.0
                current = module.lora_dropout[name]
                if getattr(current, "p", 0.0) != rate:
                    module.lora_dropout[name] = (torch.nn.Dropout(rate) if rate > 0 else torch.nn.Identity()).train(module.training)
    config = getattr(model, "peft_config", {}).get(adapter)
    if config is not None:
        config.lora_dropout = p


def frozen_linears_in_bf16(model: torch.nn.Module, args: Any) -> int:
    """On a CPU that trains fp32 weights under bf16 autocast (the TRL config's ``bf16``, see stages.trl_args), store
    the frozen base's Linear weights and biases in bf16; returns how many layers it changed.

    Autocast casts each of them to bf16 for every product anyway, so the passes compute the same numbers; what goes
    is that cast, of every weight in every forward pass, and the bf16 copy of each that autograd keeps for the
    backward pass (an SFT step of the default model took 11-15% less time, 2026-12-06). Adapters (frozen ones too),
    trained heads, the output layer and the base of a DoRA layer stay as they are, and a sharded model (FSDP,
    DeepSpeed) is left alone. Every pass runs under autocast: accelerate wraps the trained model's forward
    in it, so evaluation and callbacks that call the model (stages.dpo.reference_kl) do too (tested). Calling it
    again changes nothing.
    """
    if not getattr(args, "bf16", False) or args.device.type != "cpu" or sharding(getattr(args, "distributed_state", None)):
        return 0
    from peft.tuners.lora import LoraLayer

    # a weight an embedding shares (a tied output layer) would change the embedding's output too
    shared = {m.weight.data_ptr() for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    output = model.get_output_embeddings()  # cast by posttrain.lm_head itself; wrapped by peft or not
    keep = {id(m) for m in output.modules()} if output is not None else set()
    for layer in model.modules():
        if isinstance(layer, LoraLayer):
            keep |= {id(m) for name in ("lora_A", "lora_B") for m in getattr(layer, name).modules()}  # adapters
            if any(getattr(layer, "use_dora", {}).values()):  # DoRA's norm reads the stored weight itself
                keep.add(id(layer.get_base_layer()))
    changed = 0
    for module in model.modules():
        if (type(module) is torch.nn.Linear and id(module) not in keep and not module.weight.requires_grad
                and module.weight.dtype == torch.float32 and module.weight.data_ptr() not in shared):
            module.to(torch.bfloat16)
            changed += 1
    return changed


# ---------------------------------------------------------------------------------------------
# The output folder: one writer at a time, checkpoints of one run
# ---------------------------------------------------------------------------------------------


@contextmanager
def output_lock(output: Path, command: str = "") -> Iterator[None]:
    """Hold ``output`` for this process while a stage writes it.

    Fails at once, before any model loads, when the folder cannot be created or written, or when another
    running posttrain process holds it. The lock is ``posttrain.lock`` with this process's id and ``command``
    (the command line, so a refused unfinished folder can say how to resume it), under an advisory ``flock``
    that the kernel releases when the holder dies: a lock file left by a killed run is taken over, with a message.
    """
    import fcntl
    import socket
    from datetime import datetime, timezone

    created = not output.exists()
    try:
        output.mkdir(parents=True, exist_ok=True)
        lock = output / LOCK_FILE
        while True:
            handle = open(lock, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                holder = read_lock(output) or {}
                raise StageError(f"{output} is being written by another posttrain run (process {holder.get('pid', '?')}"
                                 f"{': ' + holder['command'] if holder.get('command') else ''}). Wait for it to finish, "
                                 "or choose another --output.") from None
            if lock.exists() and os.stat(lock).st_ino == os.fstat(handle.fileno()).st_ino:
                break  # else the holder removed the file as we opened it: take the lock on a fresh one
            handle.close()
        handle.seek(0)
        stale = handle.read().strip()
        if stale:
            left = read_lock(output) or {}
            log(f"taking over {lock}: the run that held it (process {left.get('pid', '?')}) is no longer running")
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                                 "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}) + "\n")
        handle.flush()
    except OSError as err:
        raise StageError(f"cannot write to the output folder {output} ({err.strerror or err}). Choose a folder you can "
                         "write with --output.") from None
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # before unlocking: a waiting process then takes a fresh file (see above)
        handle.close()
        if created and not any(output.iterdir()):
            output.rmdir()  # a run that stopped before writing anything leaves no folder behind


def checkpoint_folders(output: Path) -> list[Path]:
    """The checkpoint folders under ``output``, whatever their state (not temporary or set-aside ones)."""
    root = output / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", INCOMPLETE)))


def check_start(output: Path, config: Any) -> None:
    """Before a stage reads data or loads a model: ``--report_to`` names an installed tracker, ``--push_to_hub`` a
    hub it can reach, ``train.extra`` fields of the stage's TRL config; ``--resume`` needs a checkpoint, of a run
    with the same settings (those saved in checkpoints/posttrain_run.json); a fresh start must not mix its
    checkpoints with an earlier run's."""
    if hasattr(config, "report_to"):  # a tracker that is not installed fails here, not after the data is read
        from posttrain.tracking import resolve_report_to

        resolve_report_to(config.report_to)
    if getattr(config, "push_to_hub", ""):  # offline or without a token: said now, not after the run trained
        from posttrain.hub import check_push

        check_push(config.push_to_hub)
    train = getattr(config, "train", None)
    if getattr(train, "extra", None):  # a misspelt TRL field fails here, not after the data is read
        from posttrain.config_aliases import trl_config_class
        from posttrain.stages.trl_args import checked_extra

        checked_extra(config, trl_config_class(type(config)))
    found = checkpoint_folders(output)
    if config.resume and not found:
        raise StageError(f"--resume: no checkpoint under {output / CHECKPOINTS}. Run without --resume to start, and set "
                         "save_steps so the run saves checkpoints to resume from.")
    if not config.resume and found:
        status = "a finished run" if (output / METADATA_FILE).is_file() else "a run that did not finish"
        raise StageError(f"{output / CHECKPOINTS} holds the checkpoints of {status} ({', '.join(p.name for p in found)}). "
                         f"Continue it with --resume, or start fresh: choose another --output, or remove {output / CHECKPOINTS} first.")
    record = output / CHECKPOINTS / RUN_SETTINGS
    if config.resume and record.is_file():
        check_resume_settings(json.loads(record.read_text()), run_settings(to_dict(config), process_count()), output / CHECKPOINTS)
    elif config.resume:
        log(f"WARNING: {record} is missing, so this resume cannot check that the settings match the saved run's")


def save_run_settings(output: Path, settings: dict[str, Any]) -> None:
    """Record the settings of the run whose checkpoints are under ``output`` (atomically: a kill keeps the old file)."""
    write_atomic(output / CHECKPOINTS / RUN_SETTINGS, json.dumps(settings, indent=2) + "\n")


def process_count() -> int:
    """Processes in this run (``accelerate launch`` sets WORLD_SIZE), known before any of them starts a model."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def run_settings(config: dict[str, Any], processes: int = 1) -> dict[str, Any]:
    """What a resumed run must share with the run it continues: the resolved config (a ``to_dict``), the
    content hash of each data file, and the process count (it sets the batch each step sees)."""
    from posttrain.lineage import hash_path

    settings = flatten(config)
    for key in ("data", "eval_data", "prompts"):
        if settings.get(key) and Path(settings[key]).exists():
            settings[f"{key} (content sha256)"] = hash_path(settings[key])
    settings["processes"] = processes
    return settings


def check_resume_settings(saved: dict[str, Any], current: dict[str, Any], checkpoint: Path) -> None:
    """Refuse to resume from ``checkpoint`` (a checkpoint folder, or the checkpoints/ folder of a run) when the settings
    differ from the saved run's, naming each differing key and how to start fresh. Both sides come from
    :func:`run_settings`. A run saved before a setting existed is compared as having used its value in
    :data:`BEFORE_THE_KEY`; other keys only one side records (a setting added to posttrain since, with the old
    behaviour as its default) and :data:`FREE_ON_RESUME` are not compared."""
    saved = {**{k: v for k, v in BEFORE_THE_KEY.items() if k in current}, **saved}
    changed = [f"  {key}: saved {saved[key]!r}, now {current[key]!r}"
               for key in sorted(saved.keys() & current.keys() - FREE_ON_RESUME) if saved[key] != current[key]]
    if changed:
        folder = checkpoint if checkpoint.name == CHECKPOINTS else checkpoint.parent
        raise StageError(f"--resume: the run saved in {checkpoint} had other settings, and a resumed run must keep them to "
                         "end as that run would have. Differing:\n" + "\n".join(changed) + "\nResume with the saved "
                         f"settings, or start fresh with these: run without --resume, with another --output or after "
                         f"removing {folder}.")


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted keys: {"train": {"lr": 1}} -> {"train.lr": 1}."""
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def load_trainable(model_name: str, lora: LoraSection, adapter_name: str = "default", seed: int | None = None, *,
                   device: torch.device | None = None, dtype: torch.dtype | None = None, quantization: str = "none"):
    """A PeftModel ready to train, its tokenizer and its base model's name.

    A plain model gets a fresh LoRA adapter, initialised from ``seed`` when given (so runs repeat). A posttrain
    adapter checkpoint (for example an SFT output) is loaded on its base with its adapter trainable, so
    training continues from it. ``device``, ``dtype``: see :func:`trainer_placement`; ``quantization``: the base
    through bitsandbytes (QLoRA). On a CPU its passes over short rows run eager attention (see posttrain.attention).
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
    eager_attention_when_short(model)
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
    (output / METADATA_FILE).unlink(missing_ok=True)  # first: from here on the folder is not a finished run
    scratch = output / SCRATCH
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        yield scratch
        items = sorted(scratch.iterdir(), key=lambda p: p.name == METADATA_FILE)
        for number, item in enumerate(items):
            target = output / item.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(item, target)
            if number == len(items) // 2:
                kill_point("final-move")  # test-only: a kill halfway through the move
    except OSError as err:
        if err.errno in DISK_FULL:
            raise StageError(f"the disk is full: writing the final files of {output} failed ({err.strerror}). Its "
                             f"checkpoints are intact; free some space and run again with --resume.") from None
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def loss_span(history: list[dict[str, Any]]) -> dict[str, float]:
    """``first_loss`` and ``last_loss`` of a run's logged training losses ({} when none was logged)."""
    losses = [h["loss"] for h in history if "loss" in h]
    return {"first_loss": losses[0], "last_loss": losses[-1]} if losses else {}


@contextmanager
def stage_tail(trainer, output: Path, tokenizer, **save_kwargs: Any) -> Iterator[Path | None]:
    """The end of a TRL stage: the trained adapter (gathered on every process: a collective under FSDP and ZeRO-3)
    and the tokenizer go into :func:`finished_checkpoint`'s scratch folder, which the block then fills with the
    stage's own files (metrics, plots, card, stage files) and which moves into ``output`` when it ends. The block
    gets the folder on the main process and None on the others; every process waits for the move."""
    state = gathered_state(trainer)
    if trainer.is_world_process_zero():
        with finished_checkpoint(output) as folder:
            trainer.model.save_pretrained(folder, state_dict=state, **save_kwargs)
            tokenizer.save_pretrained(folder)
            yield folder
    else:
        yield None
    trainer.accelerator.wait_for_everyone()


def save_stage_files(folder: Path, stage: str, config: Any, base_model: str, **extra: Any) -> None:
    """The resolved config and the metadata that marks ``folder`` as a finished posttrain checkpoint."""
    save_config(config, folder / "posttrain_config.yaml")
    write_metadata(folder, stage=stage, base_model=base_model, config=to_dict(config), **extra)
