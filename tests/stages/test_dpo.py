"""DPO stage on a tiny random Llama: what trains, what the reference is, the checkpoint, bad data."""

from __future__ import annotations

import json

import pytest
import torch

from posttrain.cli import main
from posttrain.config import ConfigError, DPOConfig, LoraSection, SFTConfig, TrainSection
from posttrain.stages.dpo import build_dpo_trainer, loss_types, reference_kl, reference_mode, run_dpo, token_kl


def dpo_config(model, data, output, **train) -> DPOConfig:
    defaults = dict(max_steps=2, batch_size=2, eval_split=0.0, logging_steps=1, lr=1e-3, eval_steps=0)
    return DPOConfig(model=str(model), data=str(data), output=str(output), lora=LoraSection(r=8, alpha=16, dropout=0.0),
                     train=TrainSection(**{**defaults, **train}))


def completion_logps(model, batch) -> torch.Tensor:
    """Summed log-probs of the completion tokens, from plain logits (batch,)."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    logps = torch.log_softmax(logits.float(), -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return (logps * batch["completion_mask"][:, 1:]).sum(-1)


def reference_logps(trainer, batch) -> torch.Tensor:
    chosen, rejected = trainer.compute_ref_log_probs(trainer.model, batch)
    return torch.cat([chosen, rejected])


@pytest.fixture(scope="module")
def sft_dir(tiny_model_dir, tmp_path_factory):
    """An SFT adapter trained 2 steps at a high learning rate, so it differs clearly from the base."""
    from pathlib import Path

    from posttrain.stages.sft import run_sft

    samples = Path(__file__).resolve().parents[2] / "data_samples"
    out = tmp_path_factory.mktemp("sft") / "sft"
    return run_sft(SFTConfig(model=str(tiny_model_dir), data=str(samples / "sft_messages.jsonl"), output=str(out),
                             lora=LoraSection(r=4, alpha=8, dropout=0.0), train=TrainSection(max_steps=2, lr=2e-2, batch_size=2)))


def test_loss_types_by_name():
    assert loss_types("ipo") == ["ipo"]
    assert loss_types("sigmoid, sft") == ["sigmoid", "sft"]
    with pytest.raises(ConfigError, match="Did you mean 'hinge'"):
        loss_types("hinj")


def test_token_kl_by_hand():
    # p = (1/2, 1/2), q = (1/4, 3/4): KL = 1/2 log 2 + 1/2 log(2/3) = 1/2 log(4/3) per position; two positions
    # unmasked, one masked out
    p = torch.log(torch.tensor([[[0.5, 0.5]] * 3]))
    q = torch.log(torch.tensor([[[0.25, 0.75]] * 3]))
    kl = token_kl(p, q, torch.tensor([[1, 1, 0]]))
    assert kl.item() == pytest.approx(torch.log(torch.tensor(4 / 3)).item())
    assert token_kl(p, p, torch.ones(1, 3)).item() == pytest.approx(0.0, abs=1e-7)


def test_dpo_moves_only_adapter_weights(tiny_model_dir, tmp_path, samples):
    setup = build_dpo_trainer(dpo_config(tiny_model_dir, samples / "preferences_plain.jsonl", tmp_path / "dpo", max_steps=3))
    model = setup.trainer.model
    assert "ref" not in model.peft_config  # a fresh adapter: the reference is the base with adapters off
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    setup.trainer.train()
    after = dict(model.named_parameters())
    moved = [n for n in before if not torch.equal(before[n], after[n].detach())]
    assert moved and all("lora_" in n for n in moved)
    assert any("lora_B" in n for n in moved)
    assert all(not p.requires_grad for n, p in after.items() if "lora_" not in n)


def test_reference_is_the_starting_policy_from_a_plain_model(tiny_model_dir, tmp_path, samples):
    # fp32 (not the CPU's bf16 autocast): the trainer's reference pass and this test's own pass must be bit-comparable
    setup = build_dpo_trainer(dpo_config(tiny_model_dir, samples / "preferences.jsonl", tmp_path / "dpo", precision="fp32"))
    trainer = setup.trainer
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model.eval()
    torch.testing.assert_close(reference_logps(trainer, batch), completion_logps(model, batch))


def test_dpo_from_an_sft_adapter(sft_dir, tiny_model_dir, tmp_path, samples):
    from safetensors.torch import load_file

    setup = build_dpo_trainer(dpo_config(sft_dir, samples / "preferences_implicit.jsonl", tmp_path / "dpo", max_steps=3,
                                         precision="fp32"))  # comparable with this test's own passes, as above
    trainer, model = setup.trainer, setup.trainer.model
    assert setup.base_name == str(tiny_model_dir)
    assert set(model.peft_config) == {"default", "ref"} and model.active_adapter == "default"

    # step 0: the reference is the SFT policy, not the base model
    batch = next(iter(trainer.get_train_dataloader()))
    model.eval()
    policy = completion_logps(model, batch)
    torch.testing.assert_close(reference_logps(trainer, batch), policy)
    with model.disable_adapter():
        base = completion_logps(model, batch)
    assert not torch.allclose(base, policy, atol=1e-3)
    with reference_mode(model):
        torch.testing.assert_close(completion_logps(model, batch), policy)
    assert all(not p.requires_grad for n, p in model.named_parameters() if ".ref." in n)
    assert any(p.requires_grad for n, p in model.named_parameters() if ".default." in n)

    # training moves the SFT adapter in place and leaves the reference and the base alone
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    moved = [n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert moved and all(".default." in n for n in moved)
    assert reference_kl(model, []) == 0.0

    # the saved checkpoint is the whole policy: the SFT adapter plus DPO, not a fresh adapter, without the reference
    folder = run_dpo(dpo_config(sft_dir, samples / "preferences_implicit.jsonl", tmp_path / "saved", max_steps=2,
                                lr=1e-4, eval_split=0.25, eval_steps=1))
    assert not (folder / "ref").exists()
    saved, start = load_file(str(folder / "adapter_model.safetensors")), load_file(str(sft_dir / "adapter_model.safetensors"))
    assert set(saved) == set(start)
    assert all(torch.allclose(saved[k], start[k], atol=1e-2) for k in start)
    assert any(not torch.equal(saved[k], start[k]) for k in start)
    meta = json.loads((folder / "posttrain.json").read_text())
    assert meta["stage"] == "dpo" and meta["base_model"] == str(tiny_model_dir) and meta["started_from"] == str(sft_dir)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert "eval_rewards_accuracies" in metrics["final"] and metrics["final"]["eval_kl"] >= -1e-5
    assert (folder / "dpo.png").is_file() and (folder / "README.md").is_file()


def test_precomputed_reference_log_probs_are_the_reference_and_train_the_same(tiny_model_dir, tmp_path, samples):
    # fp32: the precomputing pass (batches in data order) and the in-step one (shuffled batches) are comparable
    def build(precompute: bool, folder: str):
        config = dpo_config(tiny_model_dir, samples / "preferences.jsonl", tmp_path / folder, max_steps=3, lr=5e-3,
                            precision="fp32", warmup_ratio=0.0)
        config.precompute_ref = precompute
        return build_dpo_trainer(config).trainer

    ahead = build(True, "precomputed")
    assert ahead.precompute_ref_logps and {"ref_chosen_logps", "ref_rejected_logps"} <= set(ahead.train_dataset.column_names)
    ahead.train()
    # after training, each batch still carries the reference's log-probs (adapters off), not the trained policy's
    batch = next(iter(ahead.get_train_dataloader()))
    stored = torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]])
    torch.testing.assert_close(stored, reference_logps(ahead, batch), rtol=0, atol=1e-4)
    assert not torch.allclose(stored, completion_logps(ahead.model.eval(), batch), atol=1e-2)

    each_step = build(False, "each-step")
    assert "ref_chosen_logps" not in each_step.train_dataset.column_names
    each_step.train()
    losses = [[h["loss"] for h in t.state.log_history if "loss" in h] for t in (ahead, each_step)]
    assert len(losses[0]) == 3 and losses[0] == pytest.approx(losses[1], abs=1e-5)
    trained = [{n: p.detach() for n, p in t.model.named_parameters() if "lora_B" in n} for t in (ahead, each_step)]
    assert max(v.abs().max().item() for v in trained[0].values()) > 1e-3
    assert all(torch.allclose(trained[0][n], trained[1][n], atol=1e-5) for n in trained[0])


def test_on_the_cpu_neither_the_precompute_nor_training_runs_trls_fused_head(tiny_model_dir, tmp_path, samples, monkeypatch,
                                                                             kernels):
    # TRL's head projects every position with about ten passes over each logits tile where it has no Triton
    # kernel; the stage answers its calls with posttrain.lm_head (tests/test_lm_head.py: the same values). The
    # rows are short, so every pass, the precomputed reference's too, runs eager attention (tests/test_attention.py)
    import trl.trainer.utils as trl_utils

    def trl_head(*args):
        raise AssertionError("TRL's fused head ran on the CPU")

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", trl_head)
    trainer = build_dpo_trainer(dpo_config(tiny_model_dir, samples / "preferences.jsonl", tmp_path / "dpo")).trainer
    assert trainer.precompute_ref_logps and "ref_chosen_logps" in trainer.train_dataset.column_names
    assert kernels["eager"] > 0 and not kernels["sdpa"]  # the reference's pass, in the constructor
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    kernels.clear()
    trainer.train()
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters() if n in before)
    assert kernels["eager"] > 0 and not kernels["sdpa"]


def test_precompute_ref_takes_trls_name_and_is_off_where_the_launch_cannot(tiny_model_dir, tmp_path, samples, monkeypatch):
    from posttrain.config import load_config
    from posttrain.stages import dpo

    config = load_config(DPOConfig, None, {"data": "x.jsonl", "output": "out", "precompute_ref_log_probs": "false"})
    assert config.precompute_ref is False
    monkeypatch.setattr(dpo, "reference_each_step", lambda args: "FSDP places the model only when training starts")
    setup = build_dpo_trainer(dpo_config(tiny_model_dir, samples / "preferences_plain.jsonl", tmp_path / "dpo"))
    assert not setup.trainer.precompute_ref_logps
    assert "ref_chosen_logps" not in setup.trainer.train_dataset.column_names


@pytest.mark.parametrize("row, problem", [
    ({"prompt": "Hi", "chosen": "Same answer.", "rejected": "Same answer."}, "identical"),
    ({"prompt": "Hi", "rejected": "An answer."}, "missing field 'chosen'"),
    ({"prompt": "Hi", "chosen": "", "rejected": "No."}, "field 'chosen' is empty"),
])
def test_bad_preference_rows_name_file_and_line(tiny_model_dir, tmp_path, capsys, row, problem):
    good = {"prompt": "Hello", "chosen": "Hello! How can I help?", "rejected": "Go away."}
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [good, row, good]))
    assert main(["dpo", "--model", str(tiny_model_dir), "--data", str(data), "--output", str(tmp_path / "dpo")]) == 2
    err = capsys.readouterr().err
    assert f"{data}, line 2" in err and problem in err


def test_unknown_loss_type_is_a_config_error(tiny_model_dir, tmp_path, samples, capsys):
    assert main(["dpo", "--model", str(tiny_model_dir), "--data", str(samples / "preferences_plain.jsonl"),
                 "--output", str(tmp_path / "dpo"), "--loss-type", "sigmoidd"]) == 2
    assert "Did you mean 'sigmoid'" in capsys.readouterr().err
