"""How the stages' default settings reach the TRL trainers."""

from __future__ import annotations

from pathlib import Path

from posttrain.config import TrainSection


def test_help_shows_each_stage_its_own_training_defaults_and_their_rule(capsys):
    from posttrain.cli import print_help
    from posttrain.config import DPOConfig, RewardConfig

    assert RewardConfig().train.lr != TrainSection().lr  # so the first check below tells the two apart
    for command, config in (("rm", RewardConfig()), ("dpo", DPOConfig())):
        print_help(command)
        out = capsys.readouterr().out
        # the stage's own learning rate, not TrainSection's (the SFT default), and the section's doc line
        assert f"--train.lr                       Peak learning rate (AdamW). (default: {config.train.lr!r}; > 0)" in out
        assert "  train: Optimisation settings; defaults chosen with bench/quality.py" in out



def test_min_steps_raises_the_steps_of_a_small_data_set_only():
    from posttrain.stages.trl_args import planned_max_steps, steps_per_epoch

    # 42 rows at batch 4 are 11 batches; 2 accumulated make 6 optimizer steps a pass (the last one a single batch,
    # as transformers' Trainer counts it)
    small = TrainSection(epochs=1.0, min_steps=20, batch_size=4, grad_accum=2)
    assert steps_per_epoch(small, rows=42, processes=1) == 6
    assert planned_max_steps(small, rows=42, processes=1) == 20
    # on 2 processes each has 6 batches, 3 steps a pass
    assert steps_per_epoch(small, rows=42, processes=2) == 3
    # a data set big enough, enough epochs, a max_steps of its own, or min_steps 0 keep the run as set (-1: epochs)
    assert planned_max_steps(small, rows=400, processes=1) == -1
    assert planned_max_steps(TrainSection(epochs=2.0, min_steps=20, batch_size=4), rows=40, processes=1) == -1
    assert planned_max_steps(TrainSection(epochs=1.0, min_steps=20, max_steps=3), rows=42, processes=1) == 3
    assert planned_max_steps(TrainSection(epochs=1.0, min_steps=0), rows=42, processes=1) == -1


def test_an_sft_run_on_a_small_set_makes_min_steps_optimizer_steps(tiny_model_dir, tmp_path, capsys):
    import json

    from posttrain.config import SFTConfig, load_config
    from posttrain.stages.sft import run_sft

    lines = (Path(__file__).resolve().parents[2] / "data_samples" / "sft_messages.jsonl").read_text().splitlines()
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(lines[:7]) + "\n")  # 7 rows at batch 2, 2 accumulated: 2 steps a pass
    steps = {}
    for min_steps in (0, 5):
        config = load_config(SFTConfig, None, {
            "model": str(tiny_model_dir), "data": str(data), "output": str(tmp_path / f"out{min_steps}"),
            "train.epochs": 1, "train.min_steps": min_steps, "train.batch_size": 2, "train.grad_accum": 2,
            "train.max_length": 128})
        output = run_sft(config)
        steps[min_steps] = json.loads((output / "metrics.json").read_text())["final"]["steps"]
    assert steps == {0: 2, 5: 5}
    assert "7 training rows make fewer than train.min_steps=5 optimizer steps in 1 epoch(s): training 5 steps, 2.50 epochs" \
        in capsys.readouterr().out


def test_auto_precision_on_a_cpu_with_bf16_products_trains_fp32_weights_under_bf16_autocast(monkeypatch, tmp_path):
    import torch

    from posttrain.stages import trl_args

    monkeypatch.setattr(trl_args, "default_device", lambda: torch.device("cpu"))
    for fast, precision, autocast in ((True, "auto", True), (False, "auto", False), (True, "fp32", False)):
        monkeypatch.setattr(trl_args, "cpu_has_fast_bf16", lambda fast=fast: fast)
        kwargs = trl_args.trainer_kwargs(TrainSection(precision=precision), tmp_path, has_eval=False)
        assert (kwargs["bf16"], kwargs["fp16"]) == (autocast, False), (fast, precision)
