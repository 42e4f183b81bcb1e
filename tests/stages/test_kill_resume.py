"""kill -9 anywhere, then --resume: every stage ends with the adapter weights of an uninterrupted run, bit for bit.

Each stage runs through ``posttrain.cli.main`` in real processes that are killed with SIGKILL: once in the
middle of writing a checkpoint (POSTTRAIN_TEST_KILL_AT=checkpoint-N: after the weights and optimizer state,
before the file that completes the checkpoint) and once between checkpoints; SFT once more halfway through
moving its finished files in. The killed folder is refused by chat, merge, eval (score for a reward model),
``--model`` and a pipeline; a resume with a changed setting is refused; the last resume ends bit-identical to
the uninterrupted run.

The processes are forked from one server that has imported torch, transformers and TRL once (about 7 s saved per
process), and every run, the uninterrupted one included, runs in one such process with one thread, so the
numbers cannot differ by thread count.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from posttrain.cli import main

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data_samples"
PRELOAD = ["torch", "transformers", "trl", "peft", "posttrain.cli", "posttrain.stages.sft", "posttrain.stages.reward",
           "posttrain.stages.dpo", "posttrain.stages.rlhf", "posttrain.chat", "posttrain.evaluate"]


def _child(argv: list[str], env: dict[str, str], log: str) -> None:
    """One posttrain process: the command line ``argv`` with ``env`` set, its output in ``log``."""
    handle = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(handle, 1)
    os.dup2(handle, 2)
    os.environ.update(env)
    torch.set_num_threads(1)
    code = main(argv)
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Processes:
    """Starts posttrain commands in processes forked from a preloaded server; kills them on request."""

    def __init__(self, folder: Path):
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)
        self.folder, self.count = folder, 0

    def start(self, argv: list[str], kill_at: str = ""):
        self.count += 1
        log = self.folder / f"run{self.count}.log"
        process = self.context.Process(target=_child, args=(argv, {"POSTTRAIN_TEST_KILL_AT": kill_at} if kill_at else {}, str(log)))
        process.start()
        process.log = log
        return process

    def run(self, argv: list[str], kill_at: str = "", kill_when=None) -> tuple[int, str]:
        """Run to the end, or until ``kill_at`` kills it, or until ``kill_when()`` holds and the test kills it."""
        process = self.start(argv, kill_at)
        return self.finish(process, kill_when)

    @staticmethod
    def finish(process, kill_when=None) -> tuple[int, str]:
        deadline = time.time() + 600
        while process.is_alive() and time.time() < deadline:
            if kill_when is not None and kill_when():
                os.kill(process.pid, signal.SIGKILL)
            process.join(0.02)
        if process.is_alive():
            process.kill()
        process.join()
        return process.exitcode, process.log.read_text()


@pytest.fixture(scope="module")
def processes(tmp_path_factory):
    return Processes(tmp_path_factory.mktemp("logs"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model_dir):
    from test_rlhf import build_tiny_reward_model

    folder = tmp_path_factory.mktemp("inputs")
    (folder / "sft.jsonl").write_text("\n".join((SAMPLES / "sft_messages.jsonl").read_text().splitlines()[:8]) + "\n")
    (folder / "prefs.jsonl").write_text("\n".join((SAMPLES / "preferences.jsonl").read_text().splitlines()[:8]) + "\n")
    questions = ["Name a fruit.", "Say hello.", "Pick a colour.", "Count to three."]
    (folder / "prompts.jsonl").write_text("".join(json.dumps({"prompt": [{"role": "user", "content": q}]}) + "\n" for q in questions))
    return {"model": str(tiny_model_dir), "dir": folder, "rm": str(build_tiny_reward_model(folder / "rm", tiny_model_dir))}


# The command line of each stage: 4 steps (3 for PPO), a checkpoint every 2 (every step for PPO), a learning rate
# high enough that every step moves the adapter a long way.
TRL_SETTINGS = ["--max-steps", "4", "--save-steps", "2", "--batch-size", "2", "--lr", "1e-2", "--lora.r", "4",
                "--lora.alpha", "8", "--train.logging_steps", "1", "--train.eval_split", "0"]


def stage_command(stage: str, inputs: dict, output: Path) -> list[str]:
    data = str(inputs["dir"] / ("sft.jsonl" if stage == "sft" else "prefs.jsonl"))
    if stage == "rlhf":
        return ["rlhf", "--model", inputs["model"], "--reward-model", inputs["rm"], "--prompts", str(inputs["dir"] / "prompts.jsonl"),
                "--output", str(output), "--ppo.steps", "3", "--ppo.save_steps", "1", "--rollout.batch_size", "2",
                "--ppo.minibatch_size", "2", "--ppo.epochs", "1", "--rollout.max_new_tokens", "4", "--ppo.lr", "1e-2",
                "--lora.r", "4", "--lora.alpha", "8"]
    longest = "64" if stage == "sft" else "96"  # the reward model leaves out pairs that do not fit: these fit
    return [stage, "--model", inputs["model"], "--data", data, "--output", str(output), "--max-length", longest, *TRL_SETTINGS]


def refused(argv: list[str], capsys) -> str:
    """What a refused command prints: one error line (exit 2, no traceback) after any log lines."""
    capsys.readouterr()
    assert main(argv) == 2
    printed = capsys.readouterr()
    assert "Traceback" not in printed.err and printed.err.count("posttrain: error: ") == 1, printed.err
    return printed.out + printed.err


def check_refused_everywhere(stage: str, folder: Path, inputs: dict, capsys, tmp_path: Path) -> None:
    prompts, prefs = str(inputs["dir"] / "prompts.jsonl"), str(inputs["dir"] / "prefs.jsonl")
    commands = [["merge", str(folder), "--output", str(tmp_path / "merged")],
                ["eval", "--model", str(folder), "--data", prefs],
                ["dpo", "--model", str(folder), "--data", prefs, "--output", str(tmp_path / "next")]]
    commands.append(["score", str(folder), "--data", prefs] if stage == "rm" else ["chat", str(folder), "--prompt", "Hi"])
    for argv in commands:
        err = refused(argv, capsys)
        assert f"{folder} is a run that did not finish" in err and "--resume" in err, (argv, err)
    pipeline = tmp_path / "next.yaml"
    pipeline.write_text(f"output: {tmp_path / 'pipe'}\nstages:\n  dpo:\n    kind: dpo\n    model: {folder}\n    data: {prefs}\n")
    err = refused(["pipeline", str(pipeline), "--dry-run"], capsys)
    assert f"{pipeline}, line 5" in err and "did not finish" in err


def adapter(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo", "rlhf"])
def test_killed_twice_then_resumed_ends_bit_identical(stage, processes, inputs, tmp_path, capsys):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    command = stage_command(stage, inputs, killed)
    reference = processes.start(stage_command(stage, inputs, straight))  # runs alongside the killed one

    # 1. killed in the middle of writing a checkpoint: TRL's checkpoint-4 lacks trainer_state.json, PPO's step 2
    #    is still a temporary folder
    code, log = processes.run(command, kill_at="checkpoint-2" if stage == "rlhf" else "checkpoint-4")
    assert code == -signal.SIGKILL, log
    if stage == "rlhf":
        assert [p.name for p in (killed / "checkpoints").iterdir() if p.name.startswith(".step-000002.")], "no partial write"
    else:
        assert not (killed / "checkpoints" / "checkpoint-4" / "trainer_state.json").exists()
        assert (killed / "checkpoints" / "checkpoint-4" / "optimizer.pt").is_file()
    check_refused_everywhere(stage, killed, inputs, capsys, tmp_path)

    # 2. a resume with another learning rate is refused, naming the key, before any model loads
    lr = "--ppo.lr" if stage == "rlhf" else "--lr"
    err = refused([*command, "--resume", lr, "0.5"], capsys)
    key = "ppo.lr" if stage == "rlhf" else "train.lr"
    assert f"{key}: saved 0.01, now 0.5" in err and "start fresh" in err
    assert f"taking over {killed / 'posttrain.lock'}: the run that held it" in err  # the killed run's lock

    # 3. resumed, and killed again between checkpoints (PPO: by the test, once step 2's checkpoint is in place)
    if stage == "rlhf":
        code, log = processes.run([*command, "--resume"], kill_when=lambda: (killed / "checkpoints" / "step-000002").is_dir())
        assert "a checkpoint whose write was cut short" in log, log
    else:
        code, log = processes.run([*command, "--resume"], kill_at="step-3")
        assert "checkpoint-4 is incomplete (it has no trainer_state.json" in log and "set aside as incomplete-checkpoint-4" in log, log
        assert "resuming from" in log and "checkpoint-2" in log
    assert code == -signal.SIGKILL, log

    # 4. SFT: resumed, and killed halfway through moving the finished files in: some are there, posttrain.json is not
    if stage == "sft":
        code, log = processes.run([*command, "--resume"], kill_at="final-move")
        assert code == -signal.SIGKILL, log
        assert (killed / ".writing").is_dir() and not (killed / "posttrain.json").exists()
        assert any((killed / name).exists() for name in ("adapter_model.safetensors", "adapter_config.json", "README.md"))
        for argv in (["chat", str(killed), "--prompt", "Hi"], ["merge", str(killed), "--output", str(tmp_path / "m")]):
            assert f"{killed} is a run that did not finish" in refused(argv, capsys)

    # 5. resumed to the end: the same adapter as the uninterrupted run, to the bit
    code, log = processes.run([*command, "--resume"])
    assert code == 0, log
    code, reference_log = processes.finish(reference)
    assert code == 0, reference_log
    expected, resumed = adapter(straight), adapter(killed)
    assert expected.keys() == resumed.keys()
    moved = [k for k in expected if "lora_B" in k and expected[k].abs().sum() > 0]
    assert moved, "the adapter did not train"
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    assert (killed / "posttrain.json").is_file() and not (killed / ".writing").exists()
    assert main(["merge", str(killed), "--output", str(tmp_path / "merged")]) == 0

