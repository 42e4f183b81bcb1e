"""posttrain: SFT, reward modelling, PPO-based RLHF and DPO with LoRA adapters."""

from posttrain.models import (
    DEFAULT_MODEL,
    adapters_disabled,
    attach_adapter,
    list_adapters,
    load_base_model,
    load_for_inference,
    load_tokenizer,
    merge_and_save,
    use_adapter,
)

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
