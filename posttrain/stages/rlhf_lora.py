"""Several LoRA adapters in one forward pass: each block of batch rows runs through its own adapter.

PPO runs the same rows through the policy and the critic (and, to score them, the reference). Stacked into
one batch, the base weights' products and every per-layer step run once over all the rows, and only the
adapters' small products are per block. peft has mixed-adapter batches (``adapter_names=``) for inference;
this is the same idea for training as well, with each block a contiguous run of rows (split and joined, no
gathers, so the backward pass joins the blocks' gradients in one copy) and each adapter's scale and sum fused
into the product that adds it: ``result + s * (x A^T) B^T`` is one
``addmm``.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

Plan = list[tuple[int, str | None]]  # (rows, adapter name or None for the base alone) per block, in row order


class RowAdapters:
    """Takes over the forward of plain LoRA linear layers; :meth:`use` says which adapter each row block gets.

    Only for layers without variants (DoRA), biases on the adapter or transposed weights, in eval mode (the
    adapters' dropout is skipped): :meth:`supports` checks the first three; the caller keeps the model in
    eval mode.
    """

    def __init__(self, layers: list[nn.Module], default: str | None):
        self.plan: Plan = [(-1, default)]  # one block: all rows
        for layer in layers:
            layer.forward = functools.partial(_forward, layer, self)

    @staticmethod
    def supports(layers: list[nn.Module]) -> bool:
        from peft.tuners.lora import Linear as LoraLinear

        return bool(layers) and all(
            isinstance(m, LoraLinear) and not m.fan_in_fan_out and not m.merged and not getattr(m, "lora_variant", None)
            and not any(m.lora_bias.values()) for m in layers)

    @contextlib.contextmanager
    def use(self, plan: Plan) -> Iterator[None]:
        previous, self.plan = self.plan, plan
        try:
            yield
        finally:
            self.plan = previous


def blocks(names: list[str | None], rows: int = -1) -> Plan:
    """The plan for ``rows`` rows repeated once per adapter in ``names`` (one name: all rows, however many)."""
    return [(rows, name) for name in names]


def _forward(layer, adapters: RowAdapters, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    result = layer.base_layer(x, *args, **kwargs)
    plan = adapters.plan
    if len(plan) == 1:
        name = plan[0][1]
        return _add_lora(layer, name, x, result) if name in layer.lora_A else result
    sizes = [rows for rows, _ in plan]
    return torch.cat([_add_lora(layer, name, x_block, block) if name in layer.lora_A else block
                      for (_, name), x_block, block in zip(plan, x.split(sizes), result.split(sizes))])


def _add_lora(layer, name: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
    a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
    if x.dtype != a.dtype and not torch.is_autocast_enabled(x.device.type):
        a, b = a.to(x.dtype), b.to(x.dtype)
    h = F.linear(x, a)
    out = torch.addmm(result.reshape(-1, result.shape[-1]), h.reshape(-1, h.shape[-1]), b.t(), alpha=layer.scaling[name])
    return out.view(result.shape)
