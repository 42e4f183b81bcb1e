"""Under the CPU's bf16 autocast, SFT and DPO store the frozen base's Linear weights in bf16
(stages.common.frozen_linears_in_bf16): the same losses and adapter as with fp32 weights cast by autocast."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from posttrain.config import DPOConfig, LoraSection, SFTConfig, TrainSection
from posttrain.stages import common, dpo, sft


@pytest.fixture()
def cpu_autocast(monkeypatch):
    """precision 'auto' trains fp32 weights under bf16 autocast here, whatever this CPU's bf16 support."""
    import posttrain.stages.trl_args as trl_args

    monkeypatch.setattr(trl_args, "cpu_has_fast_bf16", lambda: True)


def record_dtypes(monkeypatch, module):
    """The dtypes of the frozen base Linear weights (not the output layer) once the stage has set its model up."""
    seen: list[set] = []
    real = common.frozen_linears_in_bf16

    def recording(model, args):
        changed = real(model, args)
        seen.append({m.weight.dtype for m in model.modules()
                     if type(m) is torch.nn.Linear and not m.weight.requires_grad and m.out_features < 1000})
        return changed

    monkeypatch.setattr(module, "frozen_linears_in_bf16", recording)
    return seen


def run(stage: str, model, samples, output):
    lora = LoraSection(r=4, alpha=8)
    if stage == "sft":
        train = TrainSection(max_steps=4, batch_size=2, lr=1e-2, logging_steps=1, save_steps=0, eval_split=0.25,
                             eval_steps=2)
        return sft.run_sft(SFTConfig(model=str(model), data=str(samples / "sft_messages.jsonl"), output=str(output),
                                     lora=lora, train=train))
    train = TrainSection(max_steps=4, batch_size=2, lr=1e-2, logging_steps=1, save_steps=0, eval_split=0.25, eval_steps=2)
    return dpo.run_dpo(DPOConfig(model=str(model), data=str(samples / "preferences.jsonl"), output=str(output),
                                 lora=lora, train=train))


def history(output):
    return json.loads((output / "metrics.json").read_text())["history"]


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_a_bf16_base_trains_as_autocast_on_fp32_weights(stage, tiny_model_dir, samples, tmp_path, monkeypatch,
                                                        cpu_autocast):
    module = sft if stage == "sft" else dpo
    seen = record_dtypes(monkeypatch, module)
    stored = run(stage, tiny_model_dir, samples, tmp_path / "bf16")
    assert seen and seen[-1] == {torch.bfloat16}

    monkeypatch.setattr(module, "frozen_linears_in_bf16", lambda model, args: 0)  # fp32 weights, cast by autocast
    cast = run(stage, tiny_model_dir, samples, tmp_path / "fp32")

    def numbers(output, key):
        return [row[key] for row in history(output) if key in row]

    for key in ("loss", "eval_loss") + (("eval_kl",) if stage == "dpo" else ()):
        assert numbers(stored, key), key
        assert numbers(stored, key) == numbers(cast, key), key  # the same products, to the bit
    a, b = load_file(str(stored / "adapter_model.safetensors")), load_file(str(cast / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], torch.zeros_like(a[k])) for k in a if "lora_B" in k)  # it trained


def test_only_frozen_fp32_linears_off_the_vocabulary_change(tiny_model_dir):
    from types import SimpleNamespace

    from posttrain.models import attach_adapter, load_model

    model = attach_adapter(load_model(str(tiny_model_dir)).model, lora=LoraSection(r=4, alpha=8))
    args = SimpleNamespace(bf16=True, device=torch.device("cpu"))
    changed = common.frozen_linears_in_bf16(model, args)
    frozen = [m for m in model.modules() if type(m) is torch.nn.Linear and not m.weight.requires_grad]
    assert changed == len(frozen) - 1 > 0  # every frozen Linear but the output layer
    assert model.get_output_embeddings().weight.dtype == torch.float32
    assert model.get_input_embeddings().weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if p.requires_grad)  # the adapters
    assert common.frozen_linears_in_bf16(model, args) == 0  # again: nothing left to change
    assert common.frozen_linears_in_bf16(model, SimpleNamespace(bf16=False, device=torch.device("cpu"))) == 0
