"""The output folder of a run: one writer at a time (a lock with the process id, taken over from a dead process),
a folder that cannot be written fails at once, an unfinished run is refused as a model, a resume must find a
checkpoint and the saved run's settings, a fresh start never mixes its checkpoints with an earlier run's, and a
full disk while writing the final files keeps the checkpoints.

Every refusal here comes before any model loads: the commands name a model that does not exist, which would be
the error if a model were loaded first."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from posttrain.cli import main
from posttrain.models import ModelError
from posttrain.run_folder import check_finished
from posttrain.stages.common import (
    StageError,
    check_resume_settings,
    finished_checkpoint,
    output_lock,
    run_settings,
)

SAMPLES = Path(__file__).resolve().parents[2] / "data_samples"
NO_MODEL = "/nonexistent/model"  # loading it would fail with a different message


def user_error(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("posttrain: error: ") == 1, err
    return err


def sft(output: Path, *extra: str) -> list[str]:
    return ["sft", "--model", NO_MODEL, "--data", str(SAMPLES / "sft_messages.jsonl"), "--output", str(output), *extra]


def hold_lock_in_another_process(folder: Path) -> subprocess.Popen:
    """A process that holds ``folder``'s lock as output_lock does (flock + a record with its pid) until killed."""
    code = ("import fcntl, json, os, sys, time\n"
            f"f = open({str(folder / 'posttrain.lock')!r}, 'a+')\n"
            "fcntl.flock(f, fcntl.LOCK_EX)\n"
            "f.write(json.dumps({'pid': os.getpid(), 'command': 'posttrain sft --output busy'})); f.flush()\n"
            "print('locked', flush=True)\ntime.sleep(600)\n")
    folder.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_folder_another_run_holds_is_refused_by_every_stage_and_by_chat(tmp_path, capsys):
    busy = tmp_path / "busy"
    holder = hold_lock_in_another_process(busy)
    try:
        for argv in (sft(busy), ["rm", "--model", NO_MODEL, "--data", str(SAMPLES / "preferences.jsonl"), "--output", str(busy)],
                     ["dpo", "--model", NO_MODEL, "--data", str(SAMPLES / "preferences.jsonl"), "--output", str(busy)],
                     ["rlhf", "--model", NO_MODEL, "--reward-model", NO_MODEL, "--prompts", str(SAMPLES / "prompts.jsonl"),
                      "--output", str(busy)]):
            err = user_error(argv, capsys)
            assert f"{busy} is being written by another posttrain run (process {holder.pid}: posttrain sft --output busy)" in err
        with pytest.raises(ModelError, match=f"still being written by a posttrain run \\(process {holder.pid}"):
            check_finished(busy)
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its lock is taken over, with a message
    with output_lock(busy, "posttrain sft --output busy --resume"):
        assert json.loads((busy / "posttrain.lock").read_text())["command"] == "posttrain sft --output busy --resume"
    assert f"taking over {busy / 'posttrain.lock'}: the run that held it (process {holder.pid}) is no longer running" in capsys.readouterr().out
    assert not (busy / "posttrain.lock").exists()  # released


def test_one_process_cannot_take_a_folder_twice(tmp_path):
    with output_lock(tmp_path / "out"):
        with pytest.raises(StageError, match="is being written by another posttrain run"):
            with output_lock(tmp_path / "out"):
                pass


def test_a_folder_that_cannot_be_written_fails_first(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    err = user_error(sft(blocker / "out"), capsys)
    assert f"cannot write to the output folder {blocker / 'out'}" in err and "Choose a folder you can write" in err
    import os

    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "read-only"
        locked.mkdir(mode=0o555)
        assert "cannot write to the output folder" in user_error(sft(locked), capsys)


def test_resume_without_a_checkpoint_and_a_fresh_start_over_one(tmp_path, capsys):
    out = tmp_path / "out"
    err = user_error(sft(out, "--resume"), capsys)
    assert f"--resume: no checkpoint under {out / 'checkpoints'}" in err and "Run without --resume" in err
    assert not out.exists()  # nothing left behind
    (out / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    err = user_error(sft(out), capsys)
    assert f"{out / 'checkpoints'} holds the checkpoints of a run that did not finish (checkpoint-2)" in err
    assert "Continue it with --resume, or start fresh" in err


def test_resume_with_other_settings_names_each_key(tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text((SAMPLES / "sft_messages.jsonl").read_text())
    out = tmp_path / "out"
    (out / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    from posttrain.config import SFTConfig, load_config, to_dict

    saved = load_config(SFTConfig, None, {"model": NO_MODEL, "data": str(data), "output": str(out), "lr": "1e-3"})
    (out / "checkpoints" / "posttrain_run.json").write_text(json.dumps(run_settings(to_dict(saved))))
    data.write_text(data.read_text() + data.read_text())  # the data changed too
    err = user_error(["sft", "--model", NO_MODEL, "--data", str(data), "--output", str(out), "--resume", "--lr", "2e-4",
                      "--batch-size", "2", "--save-steps", "5"], capsys)
    assert f"--resume: the run saved in {out / 'checkpoints'} had other settings" in err
    assert "  train.lr: saved 0.001, now 0.0002\n" in err and "  train.batch_size: saved 4, now 2\n" in err
    assert "  data (content sha256): saved " in err
    assert "save_steps" not in err  # how often to save is free to change
    assert "start fresh with these: run without --resume" in err


def test_settings_comparison_ignores_what_only_one_side_records():
    saved = {"train.lr": 1e-3, "old_setting": 1, "train.logging_steps": 5}
    check_resume_settings(saved, {"train.lr": 1e-3, "new_setting": 2, "train.logging_steps": 1}, Path("out/checkpoints"))
    with pytest.raises(StageError, match="processes: saved 1, now 2"):
        check_resume_settings({"processes": 1}, {"processes": 2}, Path("out/checkpoints/step-000002"))


def test_a_run_saved_before_a_setting_existed_is_compared_with_what_it_used():
    """A reward-model run saved before --pooling existed read the last token: resuming it under the new default
    (mean) is refused, resuming it with --pooling last is not, and stages without the key are untouched."""
    saved = {"train.lr": 3e-4}
    with pytest.raises(StageError, match="pooling: saved 'last', now 'mean'"):
        check_resume_settings(saved, {"train.lr": 3e-4, "pooling": "mean"}, Path("out/checkpoints"))
    check_resume_settings(saved, {"train.lr": 3e-4, "pooling": "last"}, Path("out/checkpoints"))
    check_resume_settings(saved, {"train.lr": 3e-4}, Path("out/checkpoints"))
    check_resume_settings({**saved, "pooling": "mean"}, {"train.lr": 3e-4, "pooling": "mean"}, Path("out/checkpoints"))
    # an RL run saved before --ppo.critic existed trained a critic adapter: resuming it as a shared critic is refused
    with pytest.raises(StageError, match="ppo.critic: saved 'separate', now 'shared'"):
        check_resume_settings({"ppo.lr": 2e-4}, {"ppo.lr": 2e-4, "ppo.critic": "shared"}, Path("out/checkpoints"))
    check_resume_settings({"ppo.lr": 2e-4}, {"ppo.lr": 2e-4, "ppo.critic": "separate"}, Path("out/checkpoints"))


@pytest.mark.parametrize("leftover", ["lock", "checkpoints", ".writing", "posttrain_config.yaml"])
def test_an_unfinished_run_folder_is_refused_and_a_finished_one_taken(tmp_path, leftover):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    if leftover == "lock":
        (folder / "posttrain.lock").write_text(json.dumps({"pid": 1, "command": "posttrain sft --data d.jsonl --output run"}))
    elif leftover == "posttrain_config.yaml":
        (folder / leftover).write_text("data: d.jsonl\n")
    else:
        (folder / leftover).mkdir()
    with pytest.raises(ModelError) as err:
        check_finished(folder)
    message = str(err.value)
    assert f"{folder} is a run that did not finish" in message and "--resume" in message
    if leftover == "lock":  # the command that started it, ready to resume
        assert "run `posttrain sft --data d.jsonl --output run --resume`" in message
    (folder / "posttrain.json").write_text("{}")
    check_finished(folder)  # finished: posttrain.json is written last


def test_folders_posttrain_did_not_write_are_models(tmp_path):
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "config.json").write_text("{}")
    check_finished(tmp_path / "merged")
    check_finished(tmp_path / "missing")


def test_a_full_disk_while_writing_the_final_files_keeps_the_checkpoints(tmp_path):
    out = tmp_path / "out"
    (out / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    (out / "posttrain.json").write_text("{}")  # from an earlier finished run in this folder
    with pytest.raises(StageError, match="the disk is full: writing the final files .* Its checkpoints are intact; free some space"):
        with finished_checkpoint(out) as folder:
            (folder / "adapter_model.safetensors").write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert (out / "checkpoints" / "checkpoint-4").is_dir() and not (out / ".writing").exists()
    assert not (out / "adapter_model.safetensors").exists()
    with pytest.raises(ModelError, match="did not finish"):
        check_finished(out)


def test_the_lock_is_released_when_the_stage_fails(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "keep").mkdir(parents=True)
    user_error(sft(out), capsys)  # the model does not exist
    assert not (out / "posttrain.lock").exists()
    started = time.time()
    with output_lock(out):
        assert time.time() - started < 5
