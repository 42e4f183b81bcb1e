"""Which attention kernel a forward pass takes on a CPU.

For short sequences, eager attention (two matmuls and a softmax) is cheaper on a CPU than the fused SDPA kernel,
mostly in the backward pass: on the default model, a DPO-shaped training step of 8 rows of up to 86 tokens took
1.04 s against 1.29 s with SDPA (``bench/lm_head.py``; two threads, bf16 autocast, 2026-12-05). Its memory grows
with the square of the length, so longer sequences keep SDPA. The RL stage picks its kernel itself per pass (stages/rlhf_roles.py); the
stages on TRL's trainers (SFT, reward model, DPO) get it from :func:`eager_attention_when_short`.
"""

from __future__ import annotations

EAGER_ATTENTION_MAX_LEN = 256  # tokens (prompt + response, or a whole row) up to which a CPU pass runs eager


def attention_for(device_type: str, length: int, default: str) -> str:
    """The kernel for a pass over rows ``length`` tokens wide on ``device_type`` ("cpu", "cuda", ...): eager on a
    CPU up to EAGER_ATTENTION_MAX_LEN, else ``default`` (the model's own, usually "sdpa")."""
    return "eager" if device_type == "cpu" and length <= EAGER_ATTENTION_MAX_LEN else default


def _rows(args: tuple, kwargs: dict):
    """The pass's (batch, width, ...) input: the attention mask first, which spans the cached tokens too (generate's
    decoding steps), so one generation keeps one kernel."""
    import torch

    for tensor in [kwargs.get(key) for key in ("attention_mask", "input_ids", "inputs_embeds")] + list(args[:1]):
        if isinstance(tensor, torch.Tensor) and tensor.dim() >= 2:
            return tensor
    return None


def eager_attention_when_short(model) -> bool:
    """Make every forward pass of ``model`` (a peft model, a causal LM or a sequence classifier on a transformers
    decoder) choose its attention kernel with :func:`attention_for` from its rows' width.

    The choice is made on the decoder body, which every head's forward and TRL's fused LM head call, so the
    trainer's passes and the reference's alike take it; off the CPU every pass keeps the model's kernel. Nothing is
    installed on a model that cannot switch its kernel or that runs another kernel than SDPA or eager (flash, flex,
    a hub kernel: the user's choice), or twice. Returns whether the switch is installed.
    """
    outer = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(outer, "base_model", None)
    if body is None or not hasattr(body, "set_attn_implementation") or not body._can_set_attn_implementation():
        return False
    if getattr(body, "_posttrain_attention_switch", False):
        return True
    default = body.config._attn_implementation
    if default not in ("sdpa", "eager"):
        return False

    def choose(module, args, kwargs):
        rows = _rows(args, kwargs)
        if rows is not None:
            wanted = attention_for(rows.device.type, rows.shape[1], default)
            if module.config._attn_implementation != wanted:
                module.set_attn_implementation(wanted)

    body.register_forward_pre_hook(choose, with_kwargs=True)
    body._posttrain_attention_switch = True
    return True
