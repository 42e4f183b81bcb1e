"""PPO checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint folder ``checkpoints/step-000010`` holds the policy and critic adapters, the value head,
and ``state.pt``: optimizer, scheduler, KL controller, reward normaliser, the prompt-stream position and
the RNG states of every process. It is written under a temporary name and renamed into place, so a kill
during the write never leaves a folder that looks complete.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posttrain.stages.common import CHECKPOINTS

STEP_PREFIX = "step-"


def save_adapter(model, name: str, folder: Path, base_path: str) -> None:
    """Save adapter ``name`` as a standalone adapter folder (loadable as the default adapter)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors, storages = {}, set()
    for key, tensor in get_peft_model_state_dict(model, adapter_name=name).items():
        tensor = tensor.detach().contiguous().cpu()
        storage = tensor.untyped_storage().data_ptr()
        # tied embeddings (new token rows of a tied input/output embedding) come twice; safetensors stores no aliases
        tensors[key] = tensor.clone() if storage in storages else tensor
        storages.add(storage)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = model.peft_config[name]
    was_inference, config.inference_mode = config.inference_mode, True
    old_base, config.base_model_name_or_path = config.base_model_name_or_path, base_path
    config.save_pretrained(str(folder))
    config.inference_mode, config.base_model_name_or_path = was_inference, old_base


def load_adapter_weights(model, name: str, folder: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")), adapter_name=name)


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dirs(output: Path) -> list[Path]:
    folder = output / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX) and (p / "state.pt").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(STEP_PREFIX):]))


def save_checkpoint(output: Path, step: int, roles, base_path: str, state: dict[str, Any], rng_states: list[dict], keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically and keep only the newest ``keep``."""
    from safetensors.torch import save_file

    root = output / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{STEP_PREFIX}{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        save_adapter(roles.model, "policy", tmp / "policy", base_path)
        if roles.has_critic:
            save_adapter(roles.model, "critic", tmp / "critic", base_path)
            save_file({k: v.detach().cpu() for k, v in roles.value_head.state_dict().items()}, str(tmp / "value_head.safetensors"))
        torch.save({**state, "rng": rng_states}, tmp / "state.pt")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in checkpoint_dirs(output)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(folder: Path, roles) -> dict[str, Any]:
    """Restore adapters and value head in place; returns the saved trainer state (with ``rng``)."""
    from safetensors.torch import load_file

    load_adapter_weights(roles.model, "policy", folder / "policy")
    if roles.has_critic:
        load_adapter_weights(roles.model, "critic", folder / "critic")
        roles.value_head.load_state_dict(load_file(str(folder / "value_head.safetensors")))
    return torch.load(folder / "state.pt", weights_only=False)
