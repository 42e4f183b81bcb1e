"""QLoRA's refusal where it cannot run, and gradient checkpointing as the RL stage needs it (in eval mode, with the
active adapter put back for the recomputation)."""

from __future__ import annotations

import pytest
import torch

from posttrain.config import ConfigError, SFTConfig, load_config


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo"])
def test_quantization_is_refused_with_one_message_on_a_machine_without_cuda(stage, tiny_model_dir, samples, capsys):
    from posttrain.cli import main

    data = samples / ("sft_messages.jsonl" if stage == "sft" else "preferences.jsonl")
    code = main([stage, "--model", str(tiny_model_dir), "--data", str(data), "--output", "/nonexistent/out",
                 "--quantization", "4bit"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "--quantization 4bit needs a CUDA GPU" in err and "--quantization none" in err


def test_quantization_refusal_names_bitsandbytes_when_cuda_is_there_but_it_is_not(monkeypatch):
    import importlib.util

    from posttrain.memory import check_quantization
    from posttrain.models import ModelError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ModelError, match="needs the bitsandbytes package: pip install bitsandbytes"):
        check_quantization("8bit", torch.device("cuda", 0))
    check_quantization("none", torch.device("cpu"))  # nothing to refuse


def test_quantization_config_is_nf4_with_double_quantization_and_bf16_products():
    from posttrain.memory import quantization_config

    nf4 = quantization_config("4bit", torch.bfloat16)
    assert nf4.load_in_4bit and nf4.bnb_4bit_quant_type == "nf4" and nf4.bnb_4bit_use_double_quant
    assert nf4.bnb_4bit_compute_dtype == torch.bfloat16 and nf4.bnb_4bit_quant_storage == torch.bfloat16
    assert quantization_config("8bit", torch.bfloat16).load_in_8bit
    assert quantization_config("none", torch.float32) is None


def test_config_takes_the_new_flags_by_their_short_names_and_refuses_other_values():
    config = load_config(SFTConfig, None, {"quantization": "8bit", "gradient_checkpointing": "true"})
    assert config.train.quantization == "8bit" and config.train.gradient_checkpointing == "true"
    with pytest.raises(ConfigError, match="'maybe' is not one of 'auto', 'true', 'false'"):
        load_config(SFTConfig, None, {"gradient_checkpointing": "maybe"})
    with pytest.raises(ConfigError, match="'2bit' is not one of 'none', '4bit', '8bit'"):
        load_config(SFTConfig, None, {"train.quantization": "2bit"})


def test_yaml_booleans_are_read_as_the_literal_they_spell(tmp_path):
    file = tmp_path / "sft.yaml"
    file.write_text("train:\n  gradient_checkpointing: true\n")
    assert load_config(SFTConfig, file).train.gradient_checkpointing == "true"


def two_adapter_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"), adapter_name="policy")
    model.add_adapter("critic", LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"))
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.requires_grad_(True)
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.05)
    return model.eval()


def use(model, name: str) -> None:
    """Make adapter ``name`` active and keep both trained (peft's set_adapter freezes the inactive one; the RL stage
    puts trainability back the same way, Roles._restore_trainable)."""
    model.base_model.set_adapter(name)
    for param_name, param in model.named_parameters():
        if "lora_" in param_name:
            param.requires_grad_(True)


def policy_grads(model, ids) -> dict[str, torch.Tensor]:
    """The policy's gradients from a pass as the policy, with the critic made active before the backward pass (as
    the RL stage switches roles between forward passes and one backward)."""
    use(model, "policy")
    loss = model(input_ids=ids).logits.float().pow(2).mean()
    use(model, "critic")
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if ".policy." in n and p.grad is not None}
    model.zero_grad()
    return grads


def test_checkpointing_in_eval_mode_recomputes_with_the_adapter_that_ran_the_forward(tiny_model_dir):
    import contextlib

    from posttrain.memory import enable_gradient_checkpointing
    from transformers.modeling_layers import GradientCheckpointingLayer

    ids = torch.randint(0, 1000, (2, 12))
    plain = two_adapter_model(tiny_model_dir)
    expected = policy_grads(plain, ids)

    model = two_adapter_model(tiny_model_dir)
    calls = []
    layer = next(m for m in model.modules() if isinstance(m, GradientCheckpointingLayer))
    mlp_forward = layer.mlp.forward  # counted by wrapping: torch runs no module hooks while it recomputes

    def counted(*args, **kwargs):
        calls.append(1)
        return mlp_forward(*args, **kwargs)

    layer.mlp.forward = counted

    def active_adapter():
        active = model.active_adapter  # read at the forward; the recomputation runs under it again

        @contextlib.contextmanager
        def restore():
            now = model.active_adapter
            use(model, active)
            try:
                yield
            finally:
                use(model, now)
        return restore()

    enable_gradient_checkpointing(model, recompute_context=active_adapter, in_eval_mode=True)
    got = policy_grads(model, ids)
    assert len(calls) == 2  # the forward, and its recomputation in the backward pass: checkpointed in eval mode
    assert not layer.training and not model.training  # no dropout anywhere
    assert got.keys() == expected.keys() and expected
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-7, msg=name)
