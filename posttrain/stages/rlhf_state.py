"""PPO checkpoints: everything needed to continue a run exactly, written atomically, read without unpickling.

A checkpoint folder ``checkpoints/step-000010`` holds the policy and critic adapters, the value head, and the
trainer state: optimizer, scheduler, KL controller, reward normaliser, the prompt-stream position, the history
and the RNG states of every process. The state's tensors go to ``state.safetensors`` and everything else to
``state.json`` (tuples, non-string keys and numpy arrays marked so they load back as the same types), so
loading a checkpoint can never run code, as unpickling can. The folder is written under a temporary name
``.step-000010.*`` and renamed into place: a kill during the write never leaves a folder that looks complete,
and the temporary folder it leaves is removed by the next save or resume.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posttrain.atomic import atomic_folder
from posttrain.models import METADATA_FILE
from posttrain.stages.common import CHECKPOINTS, DISK_FULL, StageError, kill_point, log, run_settings, save_run_settings

STEP_PREFIX = "step-"
STATE_JSON, STATE_TENSORS = "state.json", "state.safetensors"
FORMAT = 1  # of state.json; older checkpoints (state.pt, a pickle) are not read


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


# ---------------------------------------------------------------------------------------------
# The trainer state as JSON plus safetensors
# ---------------------------------------------------------------------------------------------


def encode_state(value: Any, tensors: dict[str, torch.Tensor], where: str = "state") -> Any:
    """``value`` as JSON-ready data; its tensors (and numpy arrays) move into ``tensors`` under numbered keys.

    JSON alone would turn tuples into lists and the optimizer's integer keys into strings, so those are marked
    (``{"__tuple__": [...]}``, ``{"__items__": [[key, value], ...]}``) and :func:`decode_state` restores them.
    """
    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = value.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key, "device": str(value.device)}
    if isinstance(value, np.ndarray):
        key = str(len(tensors))
        tensors[key] = torch.from_numpy(np.ascontiguousarray(value).copy())
        return {"__ndarray__": key}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [encode_state(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [encode_state(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: encode_state(v, tensors, f"{where}.{k}") for k, v in value.items()}
        return {"__items__": [[encode_state(k, tensors, where), encode_state(v, tensors, f"{where}[{k!r}]")]
                              for k, v in value.items()]}
    raise TypeError(f"a PPO checkpoint cannot store {where}, a {type(value).__name__}; store plain data or tensors.")


def decode_state(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`encode_state`."""
    if isinstance(value, list):
        return [decode_state(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        tensor, device = tensors[value["__tensor__"]], value["device"]
        return tensor.to(device) if device.startswith("cuda") and torch.cuda.is_available() else tensor
    if "__ndarray__" in value:
        return tensors[value["__ndarray__"]].numpy()
    if "__tuple__" in value:
        return tuple(decode_state(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {_hashable(decode_state(k, tensors)): decode_state(v, tensors) for k, v in value["__items__"]}
    return {k: decode_state(v, tensors) for k, v in value.items()}


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


# ---------------------------------------------------------------------------------------------
# Checkpoint folders
# ---------------------------------------------------------------------------------------------


def checkpoint_dirs(output: Path) -> list[Path]:
    """Complete checkpoint folders under ``output``, oldest first."""
    folder = output / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        if not (path.is_dir() and path.name.startswith(STEP_PREFIX) and path.name[len(STEP_PREFIX):].isdigit()):
            continue
        if (path / STATE_JSON).is_file() and (path / STATE_TENSORS).is_file():
            found.append(path)
        elif (path / "state.pt").is_file():
            log(f"skipping {path}: an older posttrain wrote its state as a pickle (state.pt), which is never loaded "
                "because unpickling can run code; start the run again to resume it with this version")
    return sorted(found, key=lambda p: int(p.name[len(STEP_PREFIX):]))


def remove_partial_checkpoints(output: Path) -> None:
    """Remove the temporary ``.step-N.*`` folders of checkpoint writes that a kill cut short."""
    root = output / CHECKPOINTS
    for path in sorted(root.glob(f".{STEP_PREFIX}*")) if root.is_dir() else []:
        shutil.rmtree(path, ignore_errors=True)
        log(f"removed {path}: a checkpoint whose write was cut short (the run was stopped while saving it)")


def save_checkpoint(output: Path, step: int, roles, base_path: str, state: dict[str, Any], rng_states: list[dict], keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically and keep only the newest ``keep``.

    ``state["config"]`` (the resolved config as a dict) also goes into the checkpoint's settings, which a resume
    compares with its own (:func:`saved_settings`). A full disk leaves the previous checkpoints as they were.
    """
    from safetensors.torch import save_file

    root = output / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    remove_partial_checkpoints(output)
    (output / METADATA_FILE).unlink(missing_ok=True)  # the folder now holds a run in progress, not a finished one
    final = root / f"{STEP_PREFIX}{step:06d}"
    try:
        with atomic_folder(final) as tmp:  # a kill leaves a hidden scratch folder, removed on the next save or resume
            save_adapter(roles.model, "policy", tmp / "policy", base_path)
            if roles.critic_adapter:
                save_adapter(roles.model, "critic", tmp / "critic", base_path)
            kill_point(f"checkpoint-{step}")  # test-only: a kill in the middle of the write
            if roles.has_critic:
                save_file({k: v.detach().cpu() for k, v in roles.value_head.state_dict().items()},
                          str(tmp / "value_head.safetensors"))
            tensors: dict[str, torch.Tensor] = {}
            settings = run_settings(state.get("config", {}), len(rng_states))
            record = {"format": FORMAT, "state": encode_state({**state, "rng": rng_states}, tensors), "settings": settings}
            save_file(tensors, str(tmp / STATE_TENSORS))
            (tmp / STATE_JSON).write_text(json.dumps(record))  # last: it marks the folder complete
            save_run_settings(output, settings)  # what `--resume` compares with before any model loads
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        previous = checkpoint_dirs(output)
        raise StageError(f"the disk is full: writing {final} failed ({err.strerror}). "
                         + (f"The previous checkpoint, {previous[-1]}, is intact; free some space and run again with --resume."
                            if previous else "No checkpoint was saved before it; free some space and start again.")) from None
    for old in checkpoint_dirs(output)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _read_record(folder: Path) -> dict[str, Any]:
    try:
        record = json.loads((folder / STATE_JSON).read_text())
    except (OSError, ValueError) as err:
        raise StageError(f"{folder / STATE_JSON} does not load ({err}); resume from an older checkpoint by removing "
                         f"{folder}, or start fresh.") from None
    if record.get("format") != FORMAT:
        raise StageError(f"{folder} was written in checkpoint format {record.get('format')!r}, not {FORMAT}; start fresh.")
    return record


def saved_settings(folder: Path) -> dict[str, Any]:
    """The settings of the run that wrote checkpoint ``folder`` (see stages/common.py: run_settings); read from
    JSON alone, so a resume can compare them before any model loads."""
    return _read_record(folder).get("settings", {})


def load_checkpoint(folder: Path, roles) -> dict[str, Any]:
    """Restore adapters and value head in place; returns the saved trainer state (with ``rng``)."""
    from safetensors.torch import load_file

    remove_partial_checkpoints(folder.parent.parent)
    record = _read_record(folder)
    load_adapter_weights(roles.model, "policy", folder / "policy")
    if roles.critic_adapter:
        load_adapter_weights(roles.model, "critic", folder / "critic")
    if roles.has_critic:
        roles.value_head.load_state_dict(load_file(str(folder / "value_head.safetensors")))
    return decode_state(record["state"], load_file(str(folder / STATE_TENSORS)))
