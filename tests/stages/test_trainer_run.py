"""Running a TRL trainer so that nothing is lost: which checkpoints count as complete, what resume sets aside,
NaN/inf stops the run before it touches the weights (sft, rm, dpo), and a full disk during a save keeps the
previous checkpoint. Tiny random models, a few steps each."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch

from posttrain.config import DPOConfig, RewardConfig, SFTConfig, load_config
from posttrain.stages.common import StageError
from posttrain.stages.trainer_run import incomplete_reason, newest_complete_checkpoint, resume_point

SAMPLES = Path(__file__).resolve().parents[2] / "data_samples"


def settings(stage: str, model, output: Path, **extra) -> dict:
    data = SAMPLES / ("sft_messages.jsonl" if stage == "sft" else "preferences.jsonl")
    return {"model": str(model), "data": str(data), "output": str(output), "train.max_steps": 4, "train.save_steps": 2,
            "train.batch_size": 2, "train.max_length": 96, "train.eval_split": 0, "train.logging_steps": 1,
            "train.lr": 2e-4, "lora.r": 4, "lora.alpha": 8, **extra}


def run(stage: str, model, output: Path, **extra) -> Path:
    from posttrain.stages.dpo import run_dpo
    from posttrain.stages.reward import run_reward
    from posttrain.stages.sft import run_sft

    cls, function = {"sft": (SFTConfig, run_sft), "rm": (RewardConfig, run_reward), "dpo": (DPOConfig, run_dpo)}[stage]
    return function(load_config(cls, None, settings(stage, model, output, **extra)))


@pytest.fixture(scope="module")
def checkpoint(tiny_model_dir, tmp_path_factory) -> Path:
    """A real SFT checkpoint-2, as the Trainer writes it."""
    out = tmp_path_factory.mktemp("sft") / "out"
    run("sft", tiny_model_dir, out, **{"train.max_steps": 2})
    return out / "checkpoints" / "checkpoint-2"


def broken_copy(checkpoint: Path, copy: Path, damage) -> Path:
    shutil.copytree(checkpoint, copy)
    damage(copy)
    return copy


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage, reason", [
    (lambda c: (c / "trainer_state.json").unlink(), "it has no trainer_state.json, which the Trainer writes last"),
    (lambda c: truncate(c / "optimizer.pt"), "optimizer.pt does not load"),
    (lambda c: truncate(c / "adapter_model.safetensors"), "adapter_model.safetensors does not load"),
    (lambda c: truncate(c / "trainer_state.json"), "trainer_state.json does not load"),
    (lambda c: truncate(c / "rng_state.pth"), "rng_state.pth does not load"),
    (lambda c: (c / "scheduler.pt").unlink(), "it has no scheduler.pt"),
    (lambda c: (c / "adapter_model.safetensors").unlink(), "it has no adapter_model.safetensors"),
])
def test_a_checkpoint_is_complete_only_when_every_file_loads(checkpoint, tmp_path, damage, reason):
    assert incomplete_reason(checkpoint) is None
    copy = broken_copy(checkpoint, tmp_path / "checkpoints" / "checkpoint-2", damage)
    assert incomplete_reason(copy).startswith(reason)


def test_resume_takes_the_newest_complete_checkpoint_and_sets_the_rest_aside(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(checkpoint.parent, out / "checkpoints")  # checkpoint-2 and the run's settings
    for step in (4, 6):  # two later writes a kill cut short
        broken_copy(checkpoint, out / "checkpoints" / f"checkpoint-{step}", lambda c: (c / "trainer_state.json").unlink())
    (out / "checkpoints" / "incomplete-checkpoint-6").mkdir()  # set aside by an earlier resume
    config = load_config(SFTConfig, None, {**settings("sft", checkpoint, out, **{"train.max_steps": 2}), "resume": True})
    config.model = json.loads((out / "checkpoints" / "posttrain_run.json").read_text())["model"]
    assert resume_point(config) == str(out / "checkpoints" / "checkpoint-2")
    printed = capsys.readouterr().out
    assert f"{out / 'checkpoints' / 'checkpoint-6'} is incomplete (it has no trainer_state.json" in printed
    assert "set aside as incomplete-checkpoint-6-2" in printed and "set aside as incomplete-checkpoint-4" in printed
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.is_dir()) == [
        "checkpoint-2", "incomplete-checkpoint-4", "incomplete-checkpoint-6", "incomplete-checkpoint-6-2"]

    # nothing complete left: one message naming what was cut short
    truncate(out / "checkpoints" / "checkpoint-2" / "optimizer.pt")
    with pytest.raises(StageError, match="no complete checkpoint under .*checkpoint-2: optimizer.pt does not load"):
        resume_point(config)
    assert newest_complete_checkpoint(out) is None


def test_a_refused_resume_moves_nothing(checkpoint, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(checkpoint.parent, out / "checkpoints")
    broken_copy(checkpoint, out / "checkpoints" / "checkpoint-4", lambda c: (c / "trainer_state.json").unlink())
    saved = json.loads((out / "checkpoints" / "posttrain_run.json").read_text())
    config = load_config(SFTConfig, None, {**settings("sft", saved["model"], out, **{"train.max_steps": 2}),
                                           "resume": True, "train.lr": 0.5})
    with pytest.raises(StageError, match="train.lr: saved 0.0002, now 0.5"):
        resume_point(config)
    assert (out / "checkpoints" / "checkpoint-4").is_dir()


class PoisonAt:
    """A forward hook that makes the model's hidden states NaN from optimizer step ``step`` on, as an overflow would."""

    def __init__(self, step: int):
        self.step, self.state, self.model = step, None, None

    def __call__(self, module, args, output):
        if self.state.global_step + 1 < self.step:
            return output
        return (output[0] * float("nan"), *output[1:]) if isinstance(output, tuple) else output * float("nan")


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo"])
def test_nan_stops_the_run_naming_the_step_and_the_last_good_checkpoint(stage, tiny_model_dir, tmp_path, monkeypatch):
    from posttrain.stages.trainer_run import RunGuard

    poison, on_train_begin = PoisonAt(3), RunGuard.on_train_begin

    def begin_with_poison(self, args, state, control, model=None, **kwargs):
        poison.state, poison.model = state, model
        model.get_base_model().model.layers[0].register_forward_hook(poison)
        return on_train_begin(self, args, state, control, model=model, **kwargs)

    monkeypatch.setattr(RunGuard, "on_train_begin", begin_with_poison)
    out = tmp_path / "out"
    with pytest.raises(StageError) as err:
        run(stage, tiny_model_dir, out)
    message = str(err.value)
    assert "the loss or its gradient became NaN or infinite at step 3" in message
    assert f"The last good checkpoint is {out / 'checkpoints' / 'checkpoint-2'} (kept)" in message
    assert "Lower --train.lr (now 0.0002" in message and "--train.precision fp32" in message
    assert poison.state.global_step == 2  # step 3 never reached the optimizer
    assert all(torch.isfinite(p).all() for p in poison.model.parameters())
    assert incomplete_reason(out / "checkpoints" / "checkpoint-2") is None
    assert not (out / "posttrain.json").exists()


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    import transformers.trainer

    real_save = torch.save

    def save(obj, path, *args, **kwargs):
        if "checkpoint-4" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(transformers.trainer.torch, "save", save)
    out = tmp_path / "out"
    with pytest.raises(StageError, match="the disk is full: a write under .* failed \\(No space left on device\\). The last "
                                         f"complete checkpoint, {out / 'checkpoints' / 'checkpoint-2'}, is intact"):
        run("sft", tiny_model_dir, out)
    assert incomplete_reason(out / "checkpoints" / "checkpoint-2") is None
    assert incomplete_reason(out / "checkpoints" / "checkpoint-4") is not None
    monkeypatch.setattr(transformers.trainer.torch, "save", real_save)  # space freed: the run resumes and finishes
    run("sft", tiny_model_dir, out, resume=True)
    assert (out / "posttrain.json").is_file()
