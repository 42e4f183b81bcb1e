"""posttrain: SFT, reward modelling, PPO-based RLHF and DPO with LoRA adapters."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "adapters_disabled",
    "attach_adapter",
    "list_adapters",
    "load_base_model",
    "load_for_inference",
    "load_tokenizer",
    "merge_and_save",
    "use_adapter",
]


def __getattr__(name: str) -> Any:
    """The adapter API from posttrain.models, imported on first use: the package itself must not import torch, so
    that `posttrain --help` (which imports posttrain.cli, and so this package) answers at once."""
    if name in __all__:
        return getattr(importlib.import_module("posttrain.models"), name)
    raise AttributeError(f"module 'posttrain' has no attribute '{name}'")
