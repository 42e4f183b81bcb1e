"""Which attention kernel a forward pass takes on a CPU.

For short sequences, eager attention (two matmuls and a softmax) is cheaper on a CPU than the fused SDPA kernel,
mostly in the backward pass: on the default model, a DPO-shaped training step of 8 rows of up to 86 tokens took
1.04 s against 1.29 s with SDPA (``bench/lm_head.py``; two threads, bf16 autocast, 2026-12-05). Its memory grows
with the square of the length, so longer sequences keep SDPA. The RL stage picks its kernel itself per pass
(stages/rlhf_roles.py); the stages on TRL's trainers (SFT, reward model, DPO) get it from
:func:`eager_attention_when_short`.
"""

from __future__ import annotations

EAGER_ATTENTION_MAX_LEN = 256  # tokens (prompt + response, or a whole row) up to which a CPU pass runs eager


def attention_for(device_type: str, length: int, default: str) -> str:
    """The kernel for a pass over rows ``length`` tokens wide on ``device_type`` ("cpu", "cuda", ...): eager on a
    CPU up to EAGER_ATTENTION_MAX_LEN, else ``default`` (the model's own, usually "sdpa")."""
    return "eager" if device_type == "cpu" and length <= EAGER_ATTENTION_MAX_LEN else default


def _rows(args: tuple, kwargs: dict):
    """The pass's (batch, width, ...) input, or None where the kernel must stay as it is: a mask prepared for one
    kernel (4-D, or one per layer type) would be read wrongly by the other. A 2-D attention mask is read first: it
    spans the cached tokens too, so a generation's decoding steps take the kernel of their whole width."""
    import torch

    mask = kwargs.get("attention_mask")
    if mask is not None:
        return mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
    for tensor in [kwargs.get(key) for key in ("input_ids", "inputs_embeds")] + list(args[:1]):
        if isinstance(tensor, torch.Tensor) and tensor.dim() >= 2:
            return tensor
    return None


def eager_attention_when_short(model) -> bool:
    """Make every forward pass of ``model`` (a peft model, a causal LM or a sequence classifier on a transformers
    decoder) choose its attention kernel with :func:`attention_for` from its rows' width.

    The choice is made on the decoder body, which every head's forward and TRL's fused LM head call, so the
    trainer's passes and the reference's alike take it; off the CPU every pass keeps the model's kernel. The switch
    only ever moves the model's own kernel to eager and back: a kernel set after it is installed stays. Nothing is
    installed on a model that cannot switch its kernel, that runs another kernel than SDPA or eager (flash, flex, a
    hub kernel: the user's choice), or whose config has sub-models (a vision tower would be switched by the text's
    width), or twice. Returns whether the switch is installed.
    """
    outer = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(outer, "base_model", None)
    if (body is None or not hasattr(body, "set_attn_implementation") or not body._can_set_attn_implementation()
            or body.config.sub_configs):
        return False
    if getattr(body, "_posttrain_attention_switch", False):
        return True
    default = body.config._attn_implementation
    if default not in ("sdpa", "eager"):
        return False

    switched = False  # whether the model runs eager because of this hook

    def choose(module, args, kwargs):
        nonlocal switched
        rows = _rows(args, kwargs)
        if rows is None:
            return
        current = module.config._attn_implementation
        wanted = attention_for(rows.device.type, rows.shape[1], default)
        if wanted == "eager" and current == default != "eager":
            module.set_attn_implementation("eager")
            switched = True
        elif wanted != "eager" and switched and current == "eager":
            module.set_attn_implementation(default)
            switched = False

    body.register_forward_pre_hook(choose, with_kwargs=True)
    body._posttrain_attention_switch = True
    return True
