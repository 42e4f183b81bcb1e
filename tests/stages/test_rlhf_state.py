"""PPO checkpoints: the trainer state goes to safetensors + JSON and comes back with the same keys, types and
values (optimizer, scheduler, RNG states included); nothing is ever unpickled; a write a kill cut short is cleaned
up; a full disk keeps the previous checkpoint."""

from __future__ import annotations

import errno
import json
import math
import pickle
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from posttrain.stages.common import StageError
from posttrain.stages.rlhf_state import checkpoint_dirs, decode_state, encode_state, load_checkpoint, rng_state, save_checkpoint, set_rng_state


def trainer_state() -> dict:
    """A state shaped like the PPO loop's after one optimizer step: AdamW, a LambdaLR schedule, controllers, history."""
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    optimizer = torch.optim.AdamW(params, lr=1e-3, eps=1e-5, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda update: max(0.0, 1.0 - update / 10))
    sum(p.square().sum() for p in params).backward()
    optimizer.step()
    scheduler.step()
    return {"step": 2, "cursor": 16, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "kl_controller": {"value": 0.05, "target": 2.0, "horizon": 100.0},
            "reward_moments": {"mean": 0.25, "m2": 1.5, "count": 16},
            "history": [{"step": 1, "reward_mean": 0.1, "explained_variance": float("nan")}],
            "samples": [{"step": 1, "prompt": "Hi", "response": "Hello", "reward": 0.3, "length": 2, "stopped": True}],
            "config": {"prompts": "p.jsonl", "ppo": {"lr": 1e-3, "steps": 4}}}


def assert_same(a, b, where="state"):
    """Same type and value all the way down (tensors: dtype, shape and bits; nan equals nan)."""
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.device == b.device and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, where


def test_the_state_round_trips_through_json_and_safetensors_with_its_types(tmp_path):
    from safetensors.torch import load_file, save_file

    state = {**trainer_state(), "rng": [rng_state(), rng_state()]}
    tensors: dict = {}
    text = json.dumps(encode_state(state, tensors))
    save_file(tensors, str(tmp_path / "state.safetensors"))
    back = decode_state(json.loads(text), load_file(str(tmp_path / "state.safetensors")))
    assert_same(state, back)
    assert set(back["optimizer"]["state"]) == {0, 1}  # integer keys stay integers
    assert isinstance(back["optimizer"]["param_groups"][0]["betas"], tuple)
    # the RNG states drive the same numbers
    set_rng_state(back["rng"][0])
    drawn = (torch.rand(3), random.random(), np.random.rand())
    set_rng_state(state["rng"][0])
    assert_same(drawn, (torch.rand(3), random.random(), np.random.rand()))
    with pytest.raises(TypeError, match="cannot store state.bad, a object"):
        encode_state({"bad": object()}, {})


@pytest.fixture()
def roles(tiny_model_dir):
    """What save_checkpoint needs of the PPO roles: a model with 'policy' and 'critic' adapters, and a value head."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=2, target_modules="all-linear"),
                           adapter_name="policy")
    model.add_adapter("critic", LoraConfig(r=2, target_modules="all-linear"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_()
    return SimpleNamespace(model=model, value_head=torch.nn.Linear(32, 1), has_critic=True, critic_adapter=True)


def test_save_then_load_gives_back_the_loops_state_and_no_pickle(roles, tmp_path):
    state, rngs = trainer_state(), [rng_state()]
    folder = save_checkpoint(tmp_path, 2, roles, "base", state, rngs)
    assert folder == tmp_path / "checkpoints" / "step-000002"
    assert not [p for p in folder.rglob("*") if p.suffix in (".pt", ".pth", ".bin", ".pkl")]
    saved = {n: p.detach().clone() for n, p in roles.model.named_parameters() if "lora_" in n}
    with torch.no_grad():
        for param in roles.model.parameters():
            param.zero_()
    back = load_checkpoint(folder, roles)
    assert_same({**state, "rng": rngs}, back)
    for name, param in roles.model.named_parameters():
        if "lora_" in name:
            assert torch.equal(param, saved[name]), name
    assert json.loads((tmp_path / "checkpoints" / "posttrain_run.json").read_text())["ppo.lr"] == 1e-3


def test_a_write_cut_short_is_removed_and_a_full_disk_keeps_the_previous_checkpoint(roles, tmp_path, monkeypatch, capsys):
    save_checkpoint(tmp_path, 1, roles, "base", trainer_state(), [rng_state()])
    partial = tmp_path / "checkpoints" / ".step-000002.k1ll3d"
    (partial / "policy").mkdir(parents=True)
    assert checkpoint_dirs(tmp_path) == [tmp_path / "checkpoints" / "step-000001"]

    from safetensors import torch as safetensors_torch

    original = safetensors_torch.save_file

    def full_disk(tensors, path, *args, **kwargs):
        if "state.safetensors" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(tensors, path, *args, **kwargs)

    monkeypatch.setattr(safetensors_torch, "save_file", full_disk)
    with pytest.raises(StageError, match="the disk is full: writing .*step-000002 failed \\(No space left on device\\). The previous "
                                         "checkpoint, .*step-000001, is intact; free some space and run again with --resume"):
        save_checkpoint(tmp_path, 2, roles, "base", trainer_state(), [rng_state()])
    assert f"removed {partial}: a checkpoint whose write was cut short" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["posttrain_run.json", "step-000001"]


def test_an_old_pickled_state_is_never_loaded(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (Path.write_text, (tmp_path / "ran", "code ran"))

    old = tmp_path / "checkpoints" / "step-000004"
    old.mkdir(parents=True)
    (old / "state.pt").write_bytes(pickle.dumps(Payload()))
    assert checkpoint_dirs(tmp_path) == []
    assert "an older posttrain wrote its state as a pickle (state.pt), which is never loaded" in capsys.readouterr().out
    assert not (tmp_path / "ran").exists()
