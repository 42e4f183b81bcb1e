"""`posttrain --help` and `posttrain COMMAND --help`: quick (no torch), required flags marked, Literal choices and
the Hugging Face / TRL aliases listed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from posttrain.cli import main
from posttrain.commands import COMMANDS

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv", [[], *([name] for name in COMMANDS)])
def test_help_does_not_import_torch(argv):
    code = ("import sys\nfrom posttrain.cli import main\nassert main(sys.argv[1:]) == 0\n"
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, *argv, "--help"], capture_output=True, text=True, cwd=REPO,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"  # none of the heavy libraries


def _option(text: str, key: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"  --{key} "))


def test_help_marks_required_flags_lists_choices_and_aliases(capsys):
    assert main(["sft", "--help"]) == 0
    text = capsys.readouterr().out
    assert _option(text, "data").endswith("(required) [also --dataset_name]")
    assert _option(text, "output").endswith("(required) [also --output_dir]")
    assert "(required)" not in _option(text, "model") and "(default: 'smollm2-135m-instruct')" in _option(text, "model")
    assert "one of assistant, all" in _option(text, "loss_on")
    assert "one of auto, tensorboard, wandb, trackio, none" in _option(text, "report_to")
    assert _option(text, "train.lr").endswith("[also --lr, --learning_rate]")
    assert _option(text, "train.batch_size").endswith("[also --batch_size, --per_device_train_batch_size]")

    assert main(["rlhf", "--help"]) == 0
    text = capsys.readouterr().out
    assert "(required)" in _option(text, "prompts") and "--beta" in _option(text, "ppo.kl_coef")
    assert "one of ppo, grpo, rloo, reinforce_pp" in _option(text, "algo")
