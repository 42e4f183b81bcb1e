"""What trades speed or precision for memory: a quantized base (QLoRA, through bitsandbytes) and gradient
checkpointing. ``posttrain plan`` (plan.py) says how much each saves before anything loads."""

from __future__ import annotations

import contextlib
import importlib.util
from typing import Callable

import torch


QUANTIZATIONS = ("none", "4bit", "8bit")


def check_quantization(quantization: str, device: torch.device | None = None) -> None:
    """Refuse a quantized base where it cannot run: bitsandbytes' 4-bit and 8-bit kernels need CUDA and the
    bitsandbytes package. One message saying what is missing and what to do instead."""
    from posttrain.models import ModelError

    if quantization == "none":
        return
    if quantization not in QUANTIZATIONS:
        raise ModelError(f"--quantization {quantization!r}: choose one of {', '.join(QUANTIZATIONS)}.")
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" or not torch.cuda.is_available():
        raise ModelError(f"--quantization {quantization} needs a CUDA GPU (bitsandbytes' kernels run only there) and "
                         f"this run is on {device.type}; use --quantization none here, or run on a machine with a GPU.")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError(f"--quantization {quantization} needs the bitsandbytes package: pip install bitsandbytes "
                         "(or use --quantization none).")


def quantization_config(quantization: str, compute_dtype: torch.dtype):
    """The transformers BitsAndBytesConfig of QLoRA (Dettmers et al. 2023): NF4 weights with double quantization
    and products in ``compute_dtype`` (bf16 where the GPU has it); or LLM.int8() for "8bit". None for "none".

    The 4-bit weights are stored in ``compute_dtype`` containers (bnb_4bit_quant_storage), so FSDP, which
    shards tensors of one dtype per unit, can shard them beside the adapters' and norms' floats."""
    if quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_quant_storage=compute_dtype)


def placement(device: torch.device, dtype: torch.dtype, quantization: str) -> dict:
    """from_pretrained keywords: a plain base is built in ``dtype`` (and moved afterwards); a quantized one is
    quantized as it loads, straight onto ``device``, the GPU of this process (never cuda:0 for every rank)."""
    if quantization == "none":
        return {"dtype": dtype}
    check_quantization(quantization, device)
    return {"dtype": dtype, "quantization_config": quantization_config(quantization, dtype),
            "device_map": {"": device.index if device.index is not None else torch.cuda.current_device()}}


def enable_gradient_checkpointing(model: torch.nn.Module, recompute_context: Callable[[], contextlib.AbstractContextManager] | None = None,
                                  in_eval_mode: bool = False) -> None:
    """Recompute each decoder layer's activations in the backward pass instead of keeping them (non-reentrant
    torch.utils.checkpoint, which needs no input that requires grad, so a frozen embedding under LoRA is fine).

    ``recompute_context``: called at each layer's forward; the layer's recomputation in the backward pass runs
    inside the context manager it returns. State that is not a tensor (which adapter is active, which row block
    gets which adapter) must be put back that way, or the recomputation runs other weights than the forward did.
    ``in_eval_mode``: checkpoint in eval mode too (transformers checkpoints only in training mode; a loop that
    keeps the model in eval mode to skip dropout, as the RL stage does, needs this).
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    kwargs: dict = {"use_reentrant": False}
    if recompute_context is not None:
        kwargs["context_fn"] = lambda: (contextlib.nullcontext(), recompute_context())
    transformer = model.get_base_model() if hasattr(model, "get_base_model") else model
    transformer.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    transformer.config.use_cache = False
    if in_eval_mode:
        for layer in transformer.modules():
            if isinstance(layer, GradientCheckpointingLayer):
                # the layer's own flag is what transformers reads; its submodules (dropout) keep eval mode
                layer.register_forward_pre_hook(_checkpointing_on)
                layer.register_forward_hook(_checkpointing_restored)


def _checkpointing_on(layer: torch.nn.Module, args) -> None:
    layer.__dict__["_posttrain_was_training"] = layer.training
    layer.training = True


def _checkpointing_restored(layer: torch.nn.Module, args, output) -> None:
    layer.training = layer.__dict__.pop("_posttrain_was_training", layer.training)
