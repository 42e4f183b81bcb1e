"""Reward-model stage on a tiny random Llama: the loss, learning, the checkpoint layout, scoring, bad data."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from posttrain.cli import main
from posttrain.config import LoraSection, RewardConfig, ScoreConfig, TrainSection
from posttrain.stages import reward as reward_stage
from posttrain.stages.reward import build_reward_trainer, pair_stats, run_reward
from posttrain.stages.reward_model import load_reward_model
from posttrain.stages.score import run_score


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def marker_pairs(n: int, seed: int = 0) -> list[dict]:
    """Pairs a reward model can learn: the chosen answer says "banana" somewhere, the rejected one never does."""
    rng = random.Random(seed)
    words = ["river", "stone", "cloud", "paper", "lamp", "music", "window", "garden", "orbit", "candle"]
    rows = []
    for i in range(n):
        body = rng.sample(words, 5)
        where = rng.randrange(len(body) + 1)
        other = rng.choice(["apple", "table", "green"])
        rows.append({
            "prompt": [{"role": "user", "content": f"Question {i}: name some things."}],
            "chosen": [{"role": "assistant", "content": " ".join(body[:where] + ["banana"] + body[where:])}],
            "rejected": [{"role": "assistant", "content": " ".join(body[:where] + [other] + body[where:])}],
        })
    return rows


def rm_config(model, data, output, pooling="mean", **train) -> RewardConfig:
    defaults = dict(max_steps=2, batch_size=4, eval_split=0.25, logging_steps=1, lr=1e-3)
    return RewardConfig(model=str(model), data=str(data), output=str(output), pooling=pooling,
                        lora=LoraSection(r=8, alpha=16, dropout=0.0), train=TrainSection(**{**defaults, **train}))


def test_reward_loss_is_bradley_terry_with_margin(tiny_model_dir, tmp_path, monkeypatch):
    rows = [{**r, "margin": m} for r, m in zip(marker_pairs(4), [1.0, 0.0, 0.5, 0.0])]
    setup = build_reward_trainer(rm_config(tiny_model_dir, write_jsonl(tmp_path / "p.jsonl", rows), tmp_path / "rm", eval_split=0.0))
    trainer = setup.trainer
    batch = next(iter(trainer.get_train_dataloader()))
    assert "margin" in batch

    # hand-worked: rewards chosen (2, 0), rejected (0, 0), margins (1, 0):
    #   pair 1: -log sigmoid(2 - 0 - 1) = log(1 + e^-1); pair 2: -log sigmoid(0) = log 2; the loss is their mean
    fixed = {"input_ids": batch["input_ids"][[0, 1, 4, 5]], "attention_mask": batch["attention_mask"][[0, 1, 4, 5]],
             "response_start": batch["response_start"][[0, 1, 4, 5]], "margin": torch.tensor([1.0, 0.0])}
    monkeypatch.setattr(reward_stage, "sequence_rewards", lambda model, ids, mask, pooling, starts: torch.tensor([2.0, 0.0, 0.0, 0.0]))
    loss = trainer.compute_loss(trainer.model, dict(fixed))
    assert loss.item() == pytest.approx((math.log1p(math.exp(-1)) + math.log(2)) / 2)
    monkeypatch.undo()

    # and with the model's own rewards, read as the config says (mean pooling here), the trainer's loss is
    # -log sigmoid(r_chosen - r_rejected - margin); the other poolings' rewards give other losses
    trainer.model.eval()
    with torch.no_grad():
        expected = {}
        for pooling in ("mean", "response", "last"):
            with trainer.accelerator.autocast():  # as the trainer reads them
                rewards = reward_stage.sequence_rewards(trainer.model, batch["input_ids"], batch["attention_mask"],
                                                        pooling, batch["response_start"])
            chosen, rejected = rewards.chunk(2)
            expected[pooling] = -torch.nn.functional.logsigmoid(chosen - rejected - batch["margin"]).mean().item()
        loss = trainer.compute_loss(trainer.model, dict(batch)).item()
        trainer.pooling = "response"  # reads where each row's response begins from the collated batch
        response_loss = trainer.compute_loss(trainer.model, dict(batch)).item()
    assert loss == pytest.approx(expected["mean"], rel=1e-5)
    assert loss != pytest.approx(expected["last"], rel=1e-3)
    assert loss != pytest.approx(expected["response"], rel=1e-3)
    assert response_loss == pytest.approx(expected["response"], rel=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "response", "last"])
def test_reward_training_raises_pair_accuracy(tiny_model_dir, tmp_path, pooling, kernels):
    data = write_jsonl(tmp_path / "marker.jsonl", marker_pairs(32))
    setup = build_reward_trainer(rm_config(tiny_model_dir, data, tmp_path / "rm", pooling, max_steps=40, batch_size=8,
                                           eval_split=0.0, lr=3e-3, warmup_ratio=0.0))
    assert setup.trainer.pooling == pooling
    pad = setup.tokenizer.pad_token_id
    before = pair_stats(setup.trainer.model, setup.train_pairs, pad, 16, setup.trainer.pooling).summary()
    kernels.clear()
    setup.trainer.train()
    assert kernels["eager"] > 0 and not kernels["sdpa"]  # short rows on a CPU (tests/test_attention.py)
    after = pair_stats(setup.trainer.model, setup.train_pairs, pad, 16, setup.trainer.pooling).summary()
    assert after["accuracy"] >= 0.9
    assert after["accuracy"] > before["accuracy"]
    # one marker word among ~20 tokens moves a mean of per-token rewards less than the last token's reward
    assert after["mean_margin"] > before["mean_margin"] + (0.5 if pooling == "last" else 0.25)


@pytest.mark.parametrize("pooling", ["mean", "response", "last"])
def test_saved_reward_model_loads_back_and_scores_the_same(tiny_model_dir, tmp_path, pooling):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    data = write_jsonl(tmp_path / "marker.jsonl", marker_pairs(16))
    folder = run_reward(rm_config(tiny_model_dir, data, tmp_path / "rm", pooling, max_steps=3))
    for name in ("adapter_config.json", "adapter_model.safetensors", "reward_head.safetensors", "tokenizer.json",
                 "posttrain.json", "metrics.json", "README.md", "rewards.png", "reward_vs_length.png", "loss.png"):
        assert (folder / name).is_file(), name
    meta = json.loads((folder / "posttrain.json").read_text())
    assert meta["stage"] == "rm" and meta["base_model"] == str(tiny_model_dir) and meta["reward_pooling"] == pooling
    assert math.isfinite(meta["reward_mean"]) and meta["reward_std"] >= 0
    adapter = json.loads((folder / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "score" in adapter["modules_to_save"]
    assert not any("score" in t for t in adapter["target_modules"])  # LoRA only on the transformer's linear layers
    saved = load_file(str(folder / "adapter_model.safetensors"))
    assert not any("score" in k and "lora_" in k for k in saved)
    head = load_file(str(folder / "reward_head.safetensors"))
    assert head["weight"].shape == (1, 32)
    torch.testing.assert_close(head["weight"], saved["base_model.model.score.weight"])

    # the loader reproduces the held-out rewards recorded at the end of training
    metrics = json.loads((folder / "metrics.json").read_text())
    rm = load_reward_model(folder, device=torch.device("cpu"))
    assert not rm.model.training and rm.base_model == str(tiny_model_dir)
    held = [json.loads(line) for line in data.read_text().splitlines()]
    from posttrain.data import split_holdout

    _, held = split_holdout(held, 0.25, 42)
    scores = rm.score([r["prompt"] for r in held], [r["chosen"][0]["content"] for r in held])
    assert scores == pytest.approx(metrics["rewards"]["chosen"], abs=1e-5)

    # the plain peft route of the layout contract reads the last token: the same reward for a "last" checkpoint,
    # and for a "mean" one the head on the mean of the hidden states it returns
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    base.config.pad_token_id = rm.tokenizer.pad_token_id
    plain = PeftModel.from_pretrained(base, str(folder)).eval()
    # (and for a "response" one the head on the mean of the response's hidden states)
    ids, starts, _ = rm.encode([held[0]["prompt"]], [held[0]["chosen"][0]["content"]])
    with torch.no_grad():
        out = plain(input_ids=torch.tensor(ids), output_hidden_states=True)
        means = {"mean": out.hidden_states[-1].mean(1), "response": out.hidden_states[-1][:, starts[0]:].mean(1)}
        read = {"last": out.logits.item(), **{k: plain.get_base_model().score(v).item() for k, v in means.items()}}
    assert read[pooling] == pytest.approx(scores[0], abs=1e-5)
    assert all(value != pytest.approx(scores[0], abs=1e-3) for key, value in read.items() if key != pooling)

    # `posttrain score` on rows writes a reward per row; on pairs it reports the accuracy
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": r["prompt"], "completion": r["chosen"]} for r in held]
                       + [{"messages": held[0]["prompt"] + held[0]["rejected"]}])
    assert main(["score", str(folder), "--data", str(rows)]) == 0
    scored = [json.loads(line) for line in (tmp_path / "rows.scored.jsonl").read_text().splitlines()]
    assert [r["reward"] for r in scored[:-1]] == pytest.approx(scores, abs=1e-5)
    assert "messages" in scored[-1] and isinstance(scored[-1]["reward"], float)
    summary = run_score(ScoreConfig(model=str(folder), data=str(data), output=str(tmp_path / "pairs.jsonl")))
    assert 0.0 <= summary["accuracy"] <= 1.0 and summary["pairs"] == 16
    assert "reward_chosen" in json.loads((tmp_path / "pairs.jsonl").read_text().splitlines()[0])


@pytest.mark.parametrize("pooling", ["mean", "response", "last"])
def test_a_rows_reward_does_not_depend_on_the_padding_its_batch_gives_it(tiny_model_dir, tmp_path, pooling):
    """Rows scored alone and in a batch with longer rows (right-padded) get the same reward."""
    from posttrain.stages.reward_model import score_ids

    data = write_jsonl(tmp_path / "marker.jsonl", marker_pairs(8))
    setup = build_reward_trainer(rm_config(tiny_model_dir, data, tmp_path / "rm", pooling, eval_split=0.0))
    model, pad = setup.trainer.model.eval(), setup.tokenizer.pad_token_id
    rows = setup.train_pairs.chosen[:3] + [setup.train_pairs.chosen[3] + setup.train_pairs.rejected[3]]  # one long row
    starts = setup.train_pairs.chosen_start[:4]
    alone = [score_ids(model, [row], [start], pad, 1, pooling=pooling)[0] for row, start in zip(rows, starts)]
    assert score_ids(model, rows, starts, pad, 4, pooling=pooling) == pytest.approx(alone, abs=1e-5)
    assert len(set(round(a, 4) for a in alone)) > 1


def test_reward_model_starts_from_an_sft_adapter(tiny_model_dir, tmp_path, samples):
    from posttrain.config import SFTConfig
    from posttrain.stages.sft import run_sft

    sft = run_sft(SFTConfig(model=str(tiny_model_dir), data=str(samples / "sft_messages.jsonl"), output=str(tmp_path / "sft"),
                            lora=LoraSection(r=4, alpha=8), train=TrainSection(max_steps=2, lr=1e-2, batch_size=2)))
    model, _, base_name, _ = reward_stage.build_model(str(sft), LoraSection(), seed=0)
    assert base_name == str(tiny_model_dir)
    from safetensors.torch import load_file

    start = load_file(str(sft / "adapter_model.safetensors"))
    params = dict(model.named_parameters())
    key = next(k for k in start if "lora_B" in k)
    name = key.replace(".lora_B.weight", ".lora_B.default.weight")
    assert start[key].abs().sum() > 0
    torch.testing.assert_close(params[name].detach(), start[key])

    # a reward model of the first layer takes that layer's LoRA from the SFT adapter and leaves the rest
    cut, _, _, kept = reward_stage.build_model(str(sft), LoraSection(), seed=0, layers=1)
    cut_params = dict(cut.named_parameters())
    assert kept == 1 and not any(".layers.1." in n for n in cut_params)
    key = next(k for k in start if "lora_B" in k and ".layers.0." in k)
    torch.testing.assert_close(cut_params[key.replace(".lora_B.weight", ".lora_B.default.weight")].detach(), start[key])


@pytest.mark.parametrize("row, problem", [
    ({"prompt": "Hi", "chosen": "Same answer.", "rejected": "Same answer."}, "identical"),
    ({"prompt": "Hi", "chosen": "An answer."}, "missing field 'rejected'"),
    ({"prompt": "Hi", "chosen": "An answer.", "rejected": "   "}, "field 'rejected' is empty"),
    ({"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": ""}],
      "rejected": [{"role": "assistant", "content": "No."}]}, "field 'chosen[0].content' is empty"),
])
def test_bad_preference_rows_name_file_and_line(tiny_model_dir, tmp_path, capsys, row, problem):
    good = {"prompt": "Hello", "chosen": "Hello! How can I help?", "rejected": "Go away."}
    data = write_jsonl(tmp_path / "bad.jsonl", [good, good, row])
    assert main(["rm", "--model", str(tiny_model_dir), "--data", str(data), "--output", str(tmp_path / "rm")]) == 2
    err = capsys.readouterr().err
    assert f"{data}, line 3" in err and problem in err
    assert not (tmp_path / "rm").exists()  # nothing is loaded or written before the data is valid
    assert main(["score", str(tmp_path / "missing-rm"), "--data", str(data)]) == 2
    assert "line 3" in capsys.readouterr().err


def test_reward_body_trains_under_the_trainers_bf16_autocast_and_the_head_in_fp32(tiny_model_dir, tmp_path, monkeypatch):
    from posttrain.stages import trl_args

    data = write_jsonl(tmp_path / "p.jsonl", marker_pairs(8))
    monkeypatch.setattr(trl_args, "cpu_has_fast_bf16", lambda: True)  # as on a CPU with AVX512-BF16 or AMX
    for precision, body_dtype in (("auto", torch.bfloat16), ("fp32", torch.float32)):
        trainer = build_reward_trainer(rm_config(tiny_model_dir, data, tmp_path / precision, eval_split=0.0,
                                                 precision=precision)).trainer
        seen = {}
        named = dict(trainer.model.named_modules())
        body_linear = next(m for n, m in named.items() if n.endswith("q_proj.base_layer"))
        head = next(m for n, m in named.items() if n.endswith("score.modules_to_save.default") or n.endswith(".score"))
        for name, module in (("body", body_linear), ("head", head)):
            module.register_forward_hook(lambda m, i, o, name=name: seen.setdefault(name, o.dtype) and None)
        trainer.compute_loss(trainer.model, dict(next(iter(trainer.get_train_dataloader()))))
        assert seen == {"body": body_dtype, "head": torch.float32}, precision


def test_a_quantized_bases_reward_head_trains_and_scores_in_fp32(tiny_model_dir, tmp_path, monkeypatch):
    """QLoRA: TRL's RewardTrainer casts every trainable parameter of a quantized model to bf16, the head's trained copy
    included, while peft's wrapper keeps the original head in fp32. Found on a GPU (the 4-bit RM failed its first
    step with a dtype mismatch); here the model is marked quantized as bitsandbytes marks it, so TRL takes that path
    on a CPU."""
    from posttrain.stages.reward_model import body_and_head, running_head, sequence_rewards

    build = reward_stage.build_model

    def quantized(*args, **kwargs):
        model, tokenizer, base, layers = build(*args, **kwargs)
        model.is_loaded_in_4bit = True  # what TRL reads to apply its QLoRA cast
        return model, tokenizer, base, layers

    monkeypatch.setattr(reward_stage, "build_model", quantized)
    data = write_jsonl(tmp_path / "p.jsonl", marker_pairs(8))
    trainer = build_reward_trainer(rm_config(tiny_model_dir, data, tmp_path / "rm", eval_split=0.0, precision="fp32")).trainer
    lora = [p for n, p in trainer.model.named_parameters() if "lora_" in n]
    assert {p.dtype for p in lora} == {torch.bfloat16}  # TRL's cast ran
    head = running_head(body_and_head(trainer.model)[1])
    assert {p.dtype for p in head.parameters()} == {torch.float32}  # and the head was given back its fp32
    loss = trainer.compute_loss(trainer.model, dict(next(iter(trainer.get_train_dataloader()))))
    assert torch.isfinite(loss)

    # the head's input follows the module that runs, not the wrapper's original copy
    head.to(torch.bfloat16)
    batch = next(iter(trainer.get_train_dataloader()))
    rewards = sequence_rewards(trainer.model, batch["input_ids"], batch["attention_mask"], "mean")
    assert rewards.dtype == torch.float32 and torch.isfinite(rewards).all()


def test_response_pooling_is_the_mean_over_the_responses_tokens_alone():
    """Hand-worked: one row of prompt states 1, 2, response states 3, 5, then padding (100). "mean" reads
    (1 + 2 + 3 + 5) / 4 = 2.75; "response" reads (3 + 5) / 2 = 4; the padding is read by neither."""
    from posttrain.stages.reward_model import pool

    hidden = torch.tensor([[[1.0], [2.0], [3.0], [5.0], [100.0]]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    assert pool(hidden, mask, "mean").item() == pytest.approx(2.75)
    assert pool(hidden, mask, "response", torch.tensor([2])).item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match="response_start"):
        pool(hidden, mask, "response")


@pytest.mark.parametrize("prompt, response", [
    ([{"role": "user", "content": "Name a fruit."}], [{"role": "assistant", "content": "A ripe banana."}]),
    ([{"role": "user", "content": "Name a fruit."}], "A ripe banana."),
    ("Name a fruit.", [{"role": "assistant", "content": "A ripe banana."}]),
    ("Q: Name a fruit.\nA:", " A ripe banana."),
])
def test_response_start_is_where_the_response_begins(tokenizer, prompt, response):
    """The tokens before response_start render the prompt (the template's assistant header included), the tokens
    from it on the response: for chat and plain prompts, and a plain prompt with a chat response."""
    from posttrain.stages.reward_model import reward_model_rows

    from posttrain.data import render_prompt

    (ids,), (start,) = reward_model_rows(tokenizer, [prompt], [response])
    plain = isinstance(prompt, str) and isinstance(response, str)
    messages = prompt if plain or isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    assert ids[:start] == tokenizer(render_prompt(tokenizer, messages), add_special_tokens=plain)["input_ids"]
    assert tokenizer.decode(ids[start:]).lstrip().startswith("A ripe banana.")


def test_the_pair_collator_puts_each_rows_response_start_in_the_batchs_order(tokenizer):
    """TRL's collator stacks every chosen row, then every rejected one; the starts follow in the same order."""
    from posttrain.stages.reward import PairCollator
    from trl.trainer.reward_trainer import DataCollatorForPreference

    collate = PairCollator(DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id))
    rows = [{"chosen_ids": [1, 2, 3], "rejected_ids": [1, 4], "chosen_start": 1, "rejected_start": 2},
            {"chosen_ids": [5, 6, 7, 8], "rejected_ids": [5, 9, 9], "chosen_start": 3, "rejected_start": 4}]
    batch = collate(rows)
    assert batch["input_ids"][:, 0].tolist() == [1, 5, 1, 5]
    assert batch["response_start"].tolist() == [1, 3, 2, 4]
    assert "response_start" not in collate([{k: v for k, v in r.items() if "start" not in k} for r in rows])


def test_a_loaded_reward_models_head_is_fp32_on_a_bf16_body(tiny_model_dir, tmp_path):
    """`posttrain score` reads the head in fp32 as training and the RL stage do, also where the body loads in bf16
    (a GPU)."""
    from posttrain.stages.reward_model import body_and_head, running_head

    data = write_jsonl(tmp_path / "marker.jsonl", marker_pairs(8))
    folder = run_reward(rm_config(tiny_model_dir, data, tmp_path / "rm", "response", max_steps=1, eval_split=0.0))
    rm = load_reward_model(folder, device=torch.device("cpu"), dtype=torch.bfloat16)
    head = running_head(body_and_head(rm.model)[1])
    assert {p.dtype for p in head.parameters()} == {torch.float32}
    assert rm.model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight.dtype == torch.bfloat16


def test_a_reward_model_of_the_first_layers_reads_their_states_and_loads_back(tiny_model_dir, tmp_path):
    """``--layers 1`` on a 2-layer base: the adapter has LoRA on the first layer alone, the checkpoint says so, the
    loader reads the rewards the stage recorded, and they are the head on the first layer's states through the final
    norm (the layout's plain route: the base loaded with num_hidden_layers=1), not on the whole body's."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    from posttrain.data import split_holdout

    data = write_jsonl(tmp_path / "marker.jsonl", marker_pairs(16))
    config = rm_config(tiny_model_dir, data, tmp_path / "rm", "response", max_steps=3)
    config.layers = 1
    folder = run_reward(config)
    assert json.loads((folder / "posttrain.json").read_text())["reward_layers"] == 1
    saved = load_file(str(folder / "adapter_model.safetensors"))
    assert any(".layers.0." in k for k in saved) and not any(".layers.1." in k for k in saved)

    rm = load_reward_model(folder, device=torch.device("cpu"))
    _, held = split_holdout([json.loads(line) for line in data.read_text().splitlines()], 0.25, 42)
    scores = rm.score([r["prompt"] for r in held], [r["chosen"][0]["content"] for r in held])
    metrics = json.loads((folder / "metrics.json").read_text())
    assert scores == pytest.approx(metrics["rewards"]["chosen"], abs=1e-5)

    ids, starts, _ = rm.encode([held[0]["prompt"]], [held[0]["chosen"][0]["content"]])
    read = {}
    for layers in (1, 2):
        base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1, num_hidden_layers=layers)
        plain = PeftModel.from_pretrained(base, str(folder)).eval()
        with torch.no_grad():
            states = plain(input_ids=torch.tensor(ids), output_hidden_states=True).hidden_states[-1]
            read[layers] = plain.get_base_model().score(states[:, starts[0]:].mean(1)).item()
    assert read[1] == pytest.approx(scores[0], abs=1e-5)
    assert read[2] != pytest.approx(scores[0], abs=1e-3)
