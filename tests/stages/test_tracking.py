"""--report_to: TensorBoard for real. The TRL stages log through transformers' callback, the RL loop through
accelerate's trackers; either way the event files sit in <output>/logs and hold the per-step metrics of
metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posttrain.config import ConfigError, RLHFConfig, SFTConfig, load_config

SAMPLES = Path(__file__).resolve().parents[2] / "data_samples"

pytest.importorskip("tensorboard")


def scalars(logs: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in the event files under ``logs`` (any run folder below it), as (step, value) pairs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(logs.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events.parent))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return {tag: sorted(set(points)) for tag, points in found.items()}


def test_sft_writes_the_loss_to_tensorboard(tiny_model_dir, tmp_path):
    from posttrain.stages.sft import run_sft

    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join((SAMPLES / "sft_messages.jsonl").read_text().splitlines()[:4]) + "\n")
    output = tmp_path / "out"
    config = load_config(SFTConfig, None, {"model": str(tiny_model_dir), "data": str(rows), "output": str(output),
                                           "report_to": "tensorboard", "max_steps": "3", "batch_size": "2",
                                           "max_length": "128", "train.logging_steps": "1"})
    run_sft(config)
    logged = scalars(output / "logs")
    history = json.loads((output / "metrics.json").read_text())["history"]
    expected = [(h["step"], h["loss"]) for h in history if "loss" in h]
    assert len(expected) == 3
    assert [step for step, _ in logged["train/loss"]] == [step for step, _ in expected]
    assert [value for _, value in logged["train/loss"]] == pytest.approx([value for _, value in expected], rel=1e-5)
    assert not list((output / "checkpoints").rglob("events.out.tfevents.*"))  # not among the checkpoints


def test_the_rl_loop_writes_its_step_records_to_tensorboard(tiny_model_dir, tmp_path):
    from posttrain.stages.rlhf import run_rlhf

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": [{"role": "user", "content": q}]})
                                 for q in ["Say hello.", "Name a fruit.", "Pick a colour.", "Count to three."]) + "\n")
    output = tmp_path / "rl"
    config = load_config(RLHFConfig, None, {
        "model": str(tiny_model_dir), "reward_fn": "posttrain.rewards:answer_format", "prompts": str(prompts),
        "output": str(output), "report_to": "tensorboard", "algo": "grpo", "rollout.batch_size": "4",
        "rollout.group_size": "2", "rollout.max_new_tokens": "4", "ppo.minibatch_size": "2", "ppo.steps": "2",
        "ppo.epochs": "1", "ppo.save_steps": "0", "lora.r": "2", "lora.alpha": "4"})
    run_rlhf(config)
    logged = scalars(output / "logs")
    history = json.loads((output / "metrics.json").read_text())["history"]
    assert [h["step"] for h in history] == [1, 2]
    columns = {k for h in history for k, v in h.items() if isinstance(v, (int, float)) and k != "step"}
    assert {"reward_mean", "kl", "response_length", "lr"} <= columns
    for key in columns:  # every numeric column of metrics.json, at every step, with its value
        assert logged[key] == [(h["step"], pytest.approx(h[key], rel=1e-5, abs=1e-6)) for h in history if key in h], key


def test_report_to_auto_is_tensorboard_when_installed_and_a_missing_tracker_is_refused(monkeypatch, tmp_path, capsys):
    import importlib.util

    from posttrain.cli import main
    from posttrain.tracking import resolve_report_to

    assert resolve_report_to("auto") == "tensorboard"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("tensorboard", "wandb") else real(name, *a))
    assert resolve_report_to("auto") == "none"
    with pytest.raises(ConfigError, match=r"--report_to wandb: the wandb package is not installed; pip install wandb"):
        resolve_report_to("wandb")
    # refused before the data is read
    code = main(["sft", "--data", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "out"), "--report_to", "wandb"])
    error = capsys.readouterr().err
    assert code == 2 and "wandb package is not installed" in error and "missing.jsonl" not in error


@pytest.mark.parametrize("cls, trl_name", [("DPOConfig", "DPOConfig"), ("RewardConfig", "RewardConfig")])
def test_dpo_and_reward_model_hand_the_tracker_to_their_trl_config(cls, trl_name, tmp_path):
    import trl

    import posttrain.config as configs
    from posttrain.stages.trl_args import trl_config

    config = load_config(getattr(configs, cls), None, {"output": str(tmp_path / "run-7"), "report_to": "tensorboard"})
    args = trl_config(getattr(trl, trl_name), config, has_eval=False)
    assert args.report_to == ["tensorboard"] and args.run_name == "run-7"
    config = load_config(getattr(configs, cls), None, {"output": str(tmp_path / "run-7"), "report_to": "none"})
    assert trl_config(getattr(trl, trl_name), config, has_eval=False).report_to in ([], ["none"], "none")
