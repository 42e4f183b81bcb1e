"""Running a TRL Trainer (SFT, reward model, DPO) so that nothing is lost: resume takes the newest complete
checkpoint with the saved run's settings, the output folder stops looking finished when training starts,
NaN/inf stops the run before it spoils the weights, a full disk is one message, and a test-only hook kills
the process at a chosen point."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from posttrain.config import to_dict
from posttrain.run_folder import CHECKPOINTS, METADATA_FILE
from posttrain.stages.common import (
    DISK_FULL,
    INCOMPLETE,
    KILL_AT,
    StageError,
    check_start,
    checkpoint_folders,
    kill_point,
    log,
    process_count,
    run_settings,
    save_run_settings,
)
from posttrain.tracking import point_trainer_logs

def incomplete_reason(folder: Path) -> str | None:
    """Why a TRL ``checkpoint-N`` folder cannot be resumed from, or None when it is complete.

    The Trainer writes the weights, optimizer, scheduler and RNG states, then ``trainer_state.json`` last; a kill
    or a full disk during the write leaves it without that file, or with a file cut short. Every file must be
    present and load: JSON parses, safetensors read, torch's zip files pass their checksums (never unpickled).
    """
    import zipfile

    from safetensors import safe_open

    state = folder / "trainer_state.json"
    if not state.is_file():
        return "it has no trainer_state.json, which the Trainer writes last"
    weights = [n for n in ("adapter_model.safetensors", "model.safetensors") if (folder / n).is_file()]
    missing = [n for n in ("optimizer.pt", "scheduler.pt") if not (folder / n).is_file()] + ([] if weights else ["adapter_model.safetensors"])
    if missing:
        return f"it has no {', '.join(missing)}"
    for file in sorted(folder.iterdir()):
        try:
            if file.suffix == ".json":
                json.loads(file.read_text())
            elif file.suffix == ".safetensors":
                with safe_open(str(file), "pt") as tensors:
                    for key in tensors.keys():
                        tensors.get_tensor(key)
            elif file.suffix in (".pt", ".pth", ".bin"):
                with zipfile.ZipFile(file) as archive:
                    if archive.testzip() is not None:
                        raise ValueError("a checksum does not match")
        except Exception as err:  # noqa: BLE001 - any failure to read means the write was cut short
            return f"{file.name} does not load ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    step = json.loads(state.read_text()).get("global_step")
    if f"checkpoint-{step}" != folder.name:
        return f"its trainer_state.json is for step {step}"
    return None


def _step(folder: Path) -> int:
    tail = folder.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def newest_complete_checkpoint(output: Path) -> Path | None:
    for folder in sorted(checkpoint_folders(output), key=_step, reverse=True):
        if folder.name.startswith("checkpoint-") and incomplete_reason(folder) is None:
            return folder
    return None


def resume_point(config: Any) -> str | None:
    """The checkpoint a stage's TRL trainer resumes from (None for a fresh start), checked before any model loads.

    ``config.resume`` takes the newest *complete* checkpoint under ``config.output``; incomplete ones newer than
    it are moved aside (renamed ``incomplete-checkpoint-N``) with a message naming them, so the trainer's own
    checkpoint rotation never counts them. A fresh start saves the run's settings (see common.py: run_settings)
    under checkpoints/; a resume is refused when they differ (common.py: check_start).
    """
    output = Path(config.output)
    check_start(output, config)  # settings compared before anything is moved
    if not config.resume:
        if int(os.environ.get("RANK", "0")) == 0:
            save_run_settings(output, run_settings(to_dict(config), process_count()))
        return None
    chosen, cut_short = None, []
    for folder in sorted(checkpoint_folders(output), key=_step, reverse=True):
        reason = incomplete_reason(folder)
        if reason is None:
            chosen = folder
            break
        cut_short.append((folder, reason))
    if chosen is None:
        raise StageError(f"--resume: no complete checkpoint under {output / CHECKPOINTS} "
                         f"({'; '.join(f'{p.name}: {why}' for p, why in cut_short)}). "
                         f"Start fresh: run without --resume after removing {output / CHECKPOINTS}.")
    for folder, reason in cut_short if int(os.environ.get("RANK", "0")) == 0 else []:
        target = folder.with_name(INCOMPLETE + folder.name)
        for number in range(2, 1000):
            if not target.exists():
                break
            target = folder.with_name(f"{INCOMPLETE}{folder.name}-{number}")
        os.replace(folder, target)
        log(f"{folder} is incomplete ({reason}): set aside as {target.name}")
    log(f"resuming from {chosen}")
    return str(chosen)


# ---------------------------------------------------------------------------------------------
# Training with guards
# ---------------------------------------------------------------------------------------------


class RunGuard(TrainerCallback):
    """Marks the output folder unfinished when training starts; checks the gradient before every optimizer step."""

    def __init__(self, output: Path):
        self.output = output

    def on_train_begin(self, args, state, control, **kwargs):
        # the folder's old finished model (if any) is being replaced: chat, merge, eval must not take it meanwhile
        if state.is_world_process_zero:
            (self.output / METADATA_FILE).unlink(missing_ok=True)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        # a NaN/inf loss makes every gradient NaN/inf, so this one check covers the loss and its gradient
        grads = [p.grad for p in model.parameters() if p.grad is not None] if model is not None else []
        if grads and not torch.stack([g.isfinite().all() for g in grads]).all():
            step = state.global_step + 1
            last = newest_complete_checkpoint(self.output)
            kept = f"The last good checkpoint is {last} (kept). " if last else "No checkpoint was saved yet (--train.save_steps N saves some). "
            raise StageError(f"the loss or its gradient became NaN or infinite at step {step}; the run stopped before "
                             f"that step changed the weights. {kept}Lower --train.lr (now {args.learning_rate:g}), keep "
                             f"--train.max_grad_norm above 0 (now {args.max_grad_norm:g}), or train in fp32 "
                             "(--train.precision fp32), and start a new run with another --output: --resume continues "
                             "only with the saved settings.")

    def on_step_end(self, args, state, control, **kwargs):
        kill_point(f"step-{state.global_step}")


def _kill_during_checkpoint_writes(trainer) -> None:
    """Test-only (POSTTRAIN_TEST_KILL_AT=checkpoint-N): die inside the write of checkpoint-N, after its weights,
    optimizer, scheduler and RNG states and before trainer_state.json, the file the Trainer writes last."""
    save_rng_state = trainer._save_rng_state

    def save_then_maybe_die(output_dir):
        save_rng_state(output_dir)
        kill_point(Path(output_dir).name)

    trainer._save_rng_state = save_then_maybe_die


def run_trainer(trainer, output: Path, resume_from: str | None):
    """``trainer.train`` with the guards on; a full disk during a save is one message (the previous checkpoint
    is intact: the Trainer deletes old checkpoints only after a new one is written)."""
    trainer.add_callback(RunGuard(output))
    point_trainer_logs(trainer, output)
    if os.environ.get(KILL_AT, "").startswith("checkpoint-"):
        _kill_during_checkpoint_writes(trainer)
    try:
        return trainer.train(resume_from_checkpoint=resume_from)
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        last = newest_complete_checkpoint(output)
        raise StageError(f"the disk is full: a write under {output} failed ({err.strerror}). "
                         + (f"The last complete checkpoint, {last}, is intact; free some space and run again with --resume."
                            if last else "No complete checkpoint was saved yet; free some space and start again.")) from None
