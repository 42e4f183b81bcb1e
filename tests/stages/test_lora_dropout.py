"""--lora.dropout is what every TRL stage trains with: TRL's reward and DPO trainers switch dropout off by
default, which left a set dropout silently unused there; the default (0) builds none."""

from __future__ import annotations

import json

import pytest
import torch

from posttrain.config import DPOConfig, LoraSection, RewardConfig, SFTConfig, TrainSection


@pytest.fixture()
def dropout_calls(monkeypatch):
    """(p, share of the input's entries it zeroed) for each dropout that ran in training mode."""
    calls: list[tuple[float, float]] = []
    forward = torch.nn.Dropout.forward

    def recording(self, x):
        out = forward(self, x)
        if self.training:
            calls.append((self.p, ((out == 0) & (x != 0)).float().mean().item()))
        return out

    monkeypatch.setattr(torch.nn.Dropout, "forward", recording)
    return calls


def stage_run(stage: str, model, samples, output, dropout: float):
    lora = LoraSection(r=4, alpha=8, dropout=dropout)
    train = TrainSection(max_steps=1, batch_size=2, eval_split=0.0, logging_steps=1, save_steps=0)
    if stage == "sft":
        from posttrain.stages.sft import run_sft

        return run_sft(SFTConfig(model=str(model), data=str(samples / "sft_messages.jsonl"), output=str(output),
                                 lora=lora, train=train))
    if stage == "rm":
        from posttrain.stages.reward import run_reward

        return run_reward(RewardConfig(model=str(model), data=str(samples / "preferences.jsonl"), output=str(output),
                                       lora=lora, train=train))
    from posttrain.stages.dpo import run_dpo

    return run_dpo(DPOConfig(model=str(model), data=str(samples / "preferences.jsonl"), output=str(output), lora=lora,
                             train=train))


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo"])
def test_a_set_lora_dropout_drops_inputs_in_training(stage, tiny_model_dir, samples, tmp_path, dropout_calls):
    out = stage_run(stage, tiny_model_dir, samples, tmp_path / stage, dropout=0.5)
    assert dropout_calls, f"{stage}: no dropout ran in training"
    assert {p for p, _ in dropout_calls} == {0.5}
    zeroed = sum(share for _, share in dropout_calls) / len(dropout_calls)
    assert 0.4 < zeroed < 0.6  # about half of each LoRA input dropped
    assert json.loads((out / "adapter_config.json").read_text())["lora_dropout"] == 0.5


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo"])
def test_the_default_lora_dropout_builds_none(stage, tiny_model_dir, samples, tmp_path, dropout_calls):
    assert LoraSection().dropout == 0.0
    stage_run(stage, tiny_model_dir, samples, tmp_path / stage, dropout=LoraSection().dropout)
    assert not [p for p, _ in dropout_calls if p > 0]


@pytest.fixture(scope="module")
def adapter_saved_with_dropout(tiny_model_dir, tmp_path_factory):
    """An SFT adapter saved with dropout 0.5 (as adapters saved before dropout defaulted to 0 carry 0.05)."""
    from pathlib import Path

    samples = Path(__file__).resolve().parents[2] / "data_samples"
    return stage_run("sft", tiny_model_dir, samples, tmp_path_factory.mktemp("sft") / "sft", dropout=0.5)


@pytest.mark.parametrize("stage, dropout", [("sft", 0.0), ("dpo", 0.0), ("rm", 0.0), ("dpo", 0.3), ("sft", 0.3)])
def test_a_continued_adapter_trains_with_the_dropout_set_and_the_reference_with_none(
        stage, dropout, adapter_saved_with_dropout, samples, tmp_path, dropout_calls):
    out = stage_run(stage, adapter_saved_with_dropout, samples, tmp_path / stage, dropout=dropout)
    # the saved 0.5 never runs: not in the trained adapter, not in DPO's reference (a frozen copy of the SFT adapter)
    assert {p for p, _ in dropout_calls if p > 0} == ({dropout} if dropout else set())
    assert json.loads((out / "adapter_config.json").read_text())["lora_dropout"] == dropout
