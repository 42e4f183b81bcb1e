"""Eager attention for short rows on a CPU: which kernel runs, and that it computes what SDPA does."""

from __future__ import annotations

import pytest
import torch

from posttrain import attention
from posttrain.attention import EAGER_ATTENTION_MAX_LEN, attention_for, eager_attention_when_short


def lora_model(folder):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa")
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))


def test_the_kernel_follows_the_device_and_the_width():
    assert attention_for("cpu", EAGER_ATTENTION_MAX_LEN, "sdpa") == "eager"
    assert attention_for("cpu", EAGER_ATTENTION_MAX_LEN + 1, "sdpa") == "sdpa"
    assert attention_for("cuda", 8, "sdpa") == "sdpa"


def test_short_rows_run_eager_long_rows_sdpa_with_the_same_outputs_and_gradients(tiny_model_dir, kernels, monkeypatch):
    monkeypatch.setattr(attention, "EAGER_ATTENTION_MAX_LEN", 16)
    switched, plain = lora_model(tiny_model_dir), lora_model(tiny_model_dir)
    assert eager_attention_when_short(switched) and eager_attention_when_short(switched)  # installs once
    torch.manual_seed(1)
    for width in (12, 20):  # eager, then sdpa again
        ids = torch.randint(10, 1000, (3, width))
        mask = torch.ones_like(ids)
        mask[1, -4:] = 0  # right padding
        mask[2, :5] = 0  # left padding
        results = []
        for model in (switched, plain):
            kernels.clear()
            model.zero_grad()
            logits = model(input_ids=ids, attention_mask=mask).logits
            (logits * mask[..., None]).square().mean().backward()
            grads = [p.grad for p in model.parameters() if p.requires_grad]
            results.append((logits.detach() * mask[..., None], grads, dict(kernels)))
        (logits, grads, ran), (want_logits, want_grads, plain_ran) = results
        assert ran == ({"eager": 2} if width <= 16 else {"sdpa": 2}) and plain_ran == {"sdpa": 2}
        torch.testing.assert_close(logits, want_logits, rtol=1e-5, atol=1e-5)
        for got, want in zip(grads, want_grads):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_packed_rows_keep_their_sequences_apart_under_eager(tiny_model_dir, kernels):
    # padding-free packing (SFT --packing true): one row of two sequences told apart by restarting position ids
    switched, plain = lora_model(tiny_model_dir), lora_model(tiny_model_dir)
    eager_attention_when_short(switched)
    torch.manual_seed(2)
    ids = torch.randint(10, 1000, (1, 14))
    positions = torch.cat([torch.arange(6), torch.arange(8)])[None]
    logits = switched(input_ids=ids, position_ids=positions, use_cache=False).logits  # as TRL's SFT trainer calls it
    assert kernels == {"eager": 2}
    torch.testing.assert_close(logits, plain(input_ids=ids, position_ids=positions, use_cache=False).logits,
                               rtol=1e-5, atol=1e-5)
    # and the second sequence is what it is alone
    alone = plain(input_ids=ids[:, 6:], position_ids=positions[:, 6:], use_cache=False).logits
    torch.testing.assert_close(logits[:, 6:], alone, rtol=1e-5, atol=1e-5)


def test_a_prepared_mask_and_a_kernel_the_user_sets_later_are_left_alone(tiny_model_dir, kernels, monkeypatch):
    monkeypatch.setattr(attention, "EAGER_ATTENTION_MAX_LEN", 16)
    model = lora_model(tiny_model_dir)
    eager_attention_when_short(model)
    ids = torch.randint(10, 1000, (2, 12))
    # a 4-D mask built for SDPA (as generate makes one for a static cache) is read as SDPA reads it
    causal = torch.ones(12, 12, dtype=torch.bool).tril()[None, None].expand(2, 1, 12, 12)
    model(input_ids=ids, attention_mask=causal)
    assert kernels == {"sdpa": 2}
    # a kernel set by hand after the switch is installed stays, even for rows the switch would give SDPA
    model.get_base_model().set_attn_implementation("eager")
    kernels.clear()
    model(input_ids=torch.randint(10, 1000, (2, 20)))
    assert kernels == {"eager": 2}
