"""SFT stage on tiny models: what trains and what stays frozen, the checkpoint's files, eval, packing, resume,
ChatML on a base model with a grown vocabulary, and one smoke run on the real default model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from posttrain.config import SFTConfig, load_config
from posttrain.stages import sft as sft_stage
from posttrain.stages.common import StageError

SAMPLES = Path(__file__).resolve().parents[2] / "data_samples"


def write_rows(path: Path, count: int, repeat_first: bool = False) -> Path:
    """``count`` rows of sft_messages.jsonl (or the first row ``count`` times: one batch to fit quickly)."""
    lines = (SAMPLES / "sft_messages.jsonl").read_text().splitlines()
    path.write_text("\n".join(lines[:1] * count if repeat_first else lines[:count]) + "\n")
    return path


def sft_config(tmp_path: Path, model: Path | str, data: Path, **overrides) -> SFTConfig:
    settings = {"model": str(model), "data": str(data), "output": str(tmp_path / "out"),
                "train.max_steps": 3, "train.batch_size": 2, "train.max_length": 128, "train.logging_steps": 1}
    return load_config(SFTConfig, None, {**settings, **overrides})


class Spy:
    """Wraps a function of the sft module and keeps what it returned."""

    def __init__(self, monkeypatch, name: str):
        self.original, self.results = getattr(sft_stage, name), []
        monkeypatch.setattr(sft_stage, name, self)

    def __call__(self, *args, **kwargs):
        result = self.original(*args, **kwargs)
        self.results.append(result)
        return result


def test_sft_trains_the_adapter_not_the_base_and_writes_a_full_checkpoint(tiny_model_dir, tmp_path, monkeypatch, capsys,
                                                                         kernels):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = Spy(monkeypatch, "load_trainable")
    data = write_rows(tmp_path / "one.jsonl", 4, repeat_first=True)  # the same batch every step: the loss must fall
    # fp32, not the CPU's bf16 autocast: the trained model in memory is compared exactly with the reloaded adapter
    config = sft_config(tmp_path, tiny_model_dir, data, **{"train.max_steps": 5, "train.lr": 2e-2, "train.precision": "fp32",
                                                           "train.warmup_ratio": 0, "lora.dropout": 0})
    output = sft_stage.run_sft(config)
    model = loaded.results[0][0]
    assert kernels["eager"] > 0 and not kernels["sdpa"]  # short rows on a CPU (tests/test_attention.py)

    # trainable vs frozen: LoRA B starts at zero, so any non-zero B moved; the base weights are bit-identical
    lora_b = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b.values())
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    frozen = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
              for n, p in model.named_parameters() if "lora_" not in n}
    assert frozen.keys() == {k for k in base if k != "lm_head.weight"}  # lm_head is tied to the embeddings
    for name, param in frozen.items():
        assert not param.requires_grad and torch.equal(param.detach(), base[name]), name

    # the loss fell, and each step's loss is in metrics.json
    metrics = json.loads((output / "metrics.json").read_text())
    losses = [h["loss"] for h in metrics["history"] if "loss" in h]
    assert len(losses) == 5 and losses[-1] < losses[0] - 0.05
    assert metrics["final"]["steps"] == 5 and metrics["final"]["rows"] == 4
    assert metrics["final"]["trainable_params"] == sum(p.numel() for p in lora_b.values()) * 2  # A and B match in size here
    printed = capsys.readouterr()
    assert f"trainable parameters: {metrics['final']['trainable_params']:,} of " in printed.out + printed.err
    assert "%)" in printed.out + printed.err

    # the checkpoint: adapter, tokenizer with template, resolved config, metrics, card, plot
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "chat_template.jinja",
                 "posttrain_config.yaml", "metrics.json", "README.md", "loss.png", "posttrain.json"):
        assert (output / name).is_file(), name
    assert (output / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert yaml.safe_load((output / "posttrain_config.yaml").read_text()) == json.loads((output / "posttrain.json").read_text())["config"]
    assert load_config(SFTConfig, output / "posttrain_config.yaml") == config
    assert str(tiny_model_dir) in (output / "README.md").read_text()
    saved = load_file(output / "adapter_model.safetensors")
    trained = {n: p.detach() for n, p in model.named_parameters() if "lora_" in n}
    assert len(saved) == len(trained)
    for name, value in saved.items():
        torch.testing.assert_close(value, trained[name.replace(".weight", ".default.weight")])
    assert AutoTokenizer.from_pretrained(output).chat_template == AutoTokenizer.from_pretrained(tiny_model_dir).chat_template

    # peft loads it on the base, as anyone would
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), output)
    peft_model.eval()
    model.eval()
    ids = torch.tensor([[1, 4093, 198, 19556, 2]])
    with torch.no_grad():
        torch.testing.assert_close(peft_model(input_ids=ids).logits, model(input_ids=ids).logits)


def test_eval_split_and_packing(tiny_model_dir, tmp_path):
    data = write_rows(tmp_path / "rows.jsonl", 16)
    config = sft_config(tmp_path, tiny_model_dir, data, **{"packing": True, "train.eval_split": 0.25, "train.max_steps": 2})
    output = sft_stage.run_sft(config)
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["final"]["steps"] == 2
    assert metrics["final"]["eval_loss"] > 0 and metrics["final"]["eval_loss"] == pytest.approx(
        next(h["eval_loss"] for h in metrics["history"] if "eval_loss" in h))
    assert "eval_loss" in (output / "README.md").read_text()


def test_loss_on_all_trains_every_token_and_cuts_are_counted(tiny_model_dir, tmp_path, monkeypatch, capsys):
    tokenised = Spy(monkeypatch, "tokenise_sft")
    data = write_rows(tmp_path / "rows.jsonl", 8)
    config = sft_config(tmp_path, tiny_model_dir, data, **{"loss_on": "all", "train.max_steps": 1, "train.max_length": 64})
    output = sft_stage.run_sft(config)
    result = tokenised.results[0]
    assert result.rows and all(r["labels"] == r["input_ids"] for r in result.rows)
    assert yaml.safe_load((output / "posttrain_config.yaml").read_text())["loss_on"] == "all"
    # rows longer than max_length are cut, counted in metrics.json and reported
    assert result.truncated > 0 and all(len(r["input_ids"]) <= 64 for r in result.rows)
    assert json.loads((output / "metrics.json").read_text())["final"]["rows_truncated"] == result.truncated
    assert f"{result.truncated} of 8 rows were longer than train.max_length=64" in "".join(capsys.readouterr())


def test_same_seed_same_adapter_and_epochs_set_the_steps(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    data = write_rows(tmp_path / "rows.jsonl", 6)
    weights = []
    for run in ("a", "b"):
        config = sft_config(tmp_path / run, tiny_model_dir, data, **{"train.max_steps": -1, "train.epochs": 1,
                                                                    "train.min_steps": 0, "train.seed": 7})
        output = sft_stage.run_sft(config)
        assert json.loads((output / "metrics.json").read_text())["final"]["steps"] == 3  # 6 rows, batch 2, one epoch
        weights.append(load_file(output / "adapter_model.safetensors"))
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=0, atol=0)


def test_save_steps_then_resume(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from posttrain.stages.trainer_run import RunGuard

    data = write_rows(tmp_path / "rows.jsonl", 12)
    with pytest.raises(StageError, match="no checkpoint under"):
        sft_stage.run_sft(sft_config(tmp_path, tiny_model_dir, data, resume=True))

    def interrupt_after_step_3(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt  # Ctrl-C between checkpoints
    monkeypatch.setattr(RunGuard, "on_step_end", interrupt_after_step_3)
    settings = {"train.max_steps": 4, "train.save_steps": 2}
    with pytest.raises(KeyboardInterrupt):
        sft_stage.run_sft(sft_config(tmp_path, tiny_model_dir, data, **settings))
    first = tmp_path / "out"
    assert (first / "checkpoints" / "checkpoint-2").is_dir() and not (first / "posttrain.json").exists()
    monkeypatch.undo()
    capsys.readouterr()

    output = sft_stage.run_sft(sft_config(tmp_path, tiny_model_dir, data, resume=True, **settings))
    printed = "".join(capsys.readouterr())
    assert f"resuming from {first / 'checkpoints' / 'checkpoint-2'}" in printed
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["final"]["steps"] == 4
    # the history holds the steps logged before the checkpoint as well as after it
    assert [h["step"] for h in metrics["history"] if "loss" in h] == [1, 2, 3, 4]
    assert (output / "checkpoints" / "checkpoint-4").is_dir()


def test_chatml_on_a_base_model_grows_the_vocab_and_survives_chat_and_merge(tmp_path, real_tokenizer_dir, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conftest import build_tiny_model
    from posttrain.chat import ChatConfig, run_chat
    from posttrain.models import CHATML_TEMPLATE, load_for_inference, merge_and_save
    from test_models import build_base_tokenizer

    raw = AutoTokenizer.from_pretrained(build_base_tokenizer(tmp_path / "tokenizer", real_tokenizer_dir))
    old_vocab = len(raw)
    base_dir = build_tiny_model(tmp_path / "base", raw, chat_template=False)
    data = write_rows(tmp_path / "rows.jsonl", 6)
    output = sft_stage.run_sft(sft_config(tmp_path, base_dir, data, **{"train.lr": 1e-2}))
    assert "installed ChatML and 2 new special tokens" in "".join(capsys.readouterr())

    adapter_config = json.loads((output / "adapter_config.json").read_text())
    assert adapter_config["trainable_token_indices"] == {"embed_tokens": [old_vocab, old_vocab + 1]}
    saved_tokenizer = AutoTokenizer.from_pretrained(output)
    assert saved_tokenizer.chat_template == CHATML_TEMPLATE and len(saved_tokenizer) == old_vocab + 2

    answer = run_chat(ChatConfig(model=str(output), prompt="Hello", max_new_tokens=6, temperature=0.8, seed=0))
    assert isinstance(answer, str)

    # merged logits equal the adapter's, on a prompt that uses the two new tokens
    ids = saved_tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                              return_tensors="pt", return_dict=True)["input_ids"]
    assert old_vocab in ids.tolist()[0] and old_vocab + 1 in ids.tolist()[0]
    with torch.no_grad():
        expected = load_for_inference(str(output)).model(input_ids=ids).logits
    merge_and_save(str(output), tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert merged.get_input_embeddings().weight.shape[0] == old_vocab + 2
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-4, rtol=0)
    assert AutoTokenizer.from_pretrained(tmp_path / "merged").chat_template == CHATML_TEMPLATE


@pytest.mark.slow
def test_real_default_model_smoke(tmp_path):
    """A few steps on the real default model: it loads, trains, saves, and answers (about a minute on 2 cores)."""
    from posttrain.chat import ChatConfig, run_chat

    data = write_rows(tmp_path / "rows.jsonl", 8)
    config = sft_config(tmp_path, "smollm2-135m-instruct", data, **{"train.max_steps": 2, "lora.r": 4})
    output = sft_stage.run_sft(config)
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["final"]["steps"] == 2 and 0 < metrics["final"]["train_loss"] < 20
    assert json.loads((output / "posttrain.json").read_text())["base_model"] == "smollm2-135m-instruct"
    answer = run_chat(ChatConfig(model=str(output), prompt="What is the capital of France?", max_new_tokens=12, temperature=0))
    assert answer.strip()


@pytest.mark.parametrize("packing", [False, True])
def test_on_the_cpu_sft_trains_as_with_trls_fused_head_without_running_it(tiny_model_dir, tmp_path, monkeypatch, packing):
    # posttrain.lm_head answers TRL's fused-head calls on the CPU (TRL's own head projects every position there);
    # fp32, same seed and data: the same losses and adapter as with TRL's head
    import trl.trainer.utils as trl_utils

    data = write_rows(tmp_path / "rows.jsonl", 12)

    def run(folder: str):
        config = sft_config(tmp_path, tiny_model_dir, data, **{"packing": packing, "train.lr": 1e-2, "train.precision": "fp32",
                                                               "train.eval_split": 0.25, "output": str(tmp_path / folder)})
        output = sft_stage.run_sft(config)
        metrics = json.loads((output / "metrics.json").read_text())
        losses = [h["loss"] for h in metrics["history"] if "loss" in h] + [metrics["final"]["eval_loss"]]
        from safetensors.torch import load_file

        return losses, load_file(output / "adapter_model.safetensors")

    with monkeypatch.context() as trl_head:
        trl_head.setattr(sft_stage, "use_lean_lm_head", lambda *args: False)
        trl_losses, trl_adapter = run("trl-head")

    def refuse(*args):
        raise AssertionError("TRL's fused head ran on the CPU")

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", refuse)
    losses, adapter = run("lean-head")
    assert len(losses) == 4 and losses == pytest.approx(trl_losses, abs=1e-5)
    assert any(not torch.equal(t, torch.zeros_like(t)) for n, t in adapter.items() if "lora_B" in n)
    # the heads sum in different orders (gradients agree to 1e-5, tests/test_lm_head.py); Adam's normalised steps
    # at lr 1e-2 carry that into the weights at up to ~2e-4 of their size
    for name in adapter:
        torch.testing.assert_close(adapter[name], trl_adapter[name], rtol=1e-3, atol=1e-5)
