"""SFT and DPO under `accelerate launch` with 2 CPU processes (gloo) end with the adapter one process trains on the
same global batch: the command a GPU user runs, with the engine that runs on a CPU (data parallel).

Why they must agree: the trainer shards each global batch of 4 rows into 2 x 2 rows in the order of the same seeded
permutation, and averages gradients across the processes. SFT's loss is a mean over tokens, and the rows differ in
length, so the halves hold different token counts: the trainer counts the batch's tokens across processes
(average_tokens_across_devices) so that the averaged gradient is the global token mean. DPO's loss is a mean over
pairs, 2 per process. The ranks run one thread each, so do the 1-process runs.

Tolerance: the two runs add the same terms in a different order (per-process sums, then the all-reduce), which
changes fp32 results by a few units in the last place, about 1e-7 relative. AdamW divides each update by the
gradient's own running magnitude, so relative gradient errors of ~1e-6 move the updates (lr 1e-3, 2 steps) by
~1e-9, and LoRA B starts at 0: atol 1e-6 on the adapter weights is loose for rounding, while a wrong split (a
process seeing the other's rows, or tokens weighted per process) moves weights by ~lr = 1e-3.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SAMPLES = Path(__file__).resolve().parents[2] / "data_samples"


def run(command: list[str], processes: int) -> None:
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29531",
                "-m", "posttrain.cli"] if processes > 1 else [sys.executable, "-m", "posttrain.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run(launcher + command, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]


def adapter(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def assert_same_training(one: Path, two: Path) -> None:
    a, b = adapter(one), adapter(two)
    assert a.keys() == b.keys()
    moved = max(v.abs().max().item() for k, v in a.items() if "lora_B" in k)
    assert moved > 1e-4  # LoRA B left 0: the adapters trained
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-6, f"2 processes differ from 1 by {worst:.3g}"


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_two_processes_train_the_adapter_one_process_trains_on_the_same_global_batch(stage, tiny_model_dir, tmp_path):
    data = SAMPLES / ("sft_messages.jsonl" if stage == "sft" else "preferences.jsonl")
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(data.read_text().splitlines()[:8]) + "\n")  # rows of different lengths
    settings = ["--model", str(tiny_model_dir), "--data", str(rows), "--train.max_steps", "2", "--train.lr", "1e-3",
                "--train.warmup_ratio", "0", "--lora.dropout", "0", "--train.logging_steps", "1",
                "--train.max_length", "128", "--train.eval_split", "0",
                # fp32: under the CPU's bf16 autocast, batches of 4 and of 2 round products differently, and Adam's
                # normalisation turns that into lr-sized steps on near-zero gradients (1e-3 apart)
                "--train.precision", "fp32"]
    run([stage, *settings, "--output", str(tmp_path / "one"), "--train.batch_size", "4"], processes=1)
    run([stage, *settings, "--output", str(tmp_path / "two"), "--train.batch_size", "2"], processes=2)
    assert_same_training(tmp_path / "one", tmp_path / "two")
