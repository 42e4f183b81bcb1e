"""`posttrain plan`: the arithmetic of each part on hand-worked numbers, the per-layer activation count against the
tensors autograd really keeps on a tiny model, and the command itself. (Its estimate against measured peak memory of
real runs of the default model is bench/plan_check.py; the figures are in the README.)"""

from __future__ import annotations

import json

import pytest
import torch

from posttrain.footprint import Shape, base_bytes, layer_bytes, read_shape

# the tiny test model's shape (conftest.build_tiny_model): 2 layers, hidden 32, MLP 64, 4 heads of 8, 2 KV heads
TINY = Shape(layers=2, hidden=32, intermediate=64, heads=4, kv_heads=2, head_dim=8, vocab=49152, tied=True)


def test_parameter_counts_by_hand(tiny_model_dir):
    assert read_shape(str(tiny_model_dir)) == TINY
    # per layer: q 32x32 + k, v 32x16 + o 32x32 + gate, up, down 32x64 = 1024 + 1024 + 1024 + 6144 = 9216
    assert TINY.linear_params == 2 * 9216
    # embedding 49152 x 32 (the head is tied), 2 norms a layer and the final one: 5 x 32
    assert TINY.other_params == 49152 * 32 + 5 * 32
    from transformers import AutoModelForCausalLM

    assert TINY.params == sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters())
    # LoRA r=4 on every linear: r x (in + out) = 4 x (64 + 48 + 48 + 64 + 96 + 96 + 96) = 2048 a layer
    assert TINY.lora_params(4, "all-linear") == 2 * 2048
    assert TINY.lora_params(4, "q_proj,v_proj") == 2 * 4 * (64 + 48)


def test_base_bytes_by_dtype_and_quantization():
    linear, other = TINY.linear_params, TINY.other_params
    assert base_bytes(TINY, 4, "none") == 4 * (linear + other)
    assert base_bytes(TINY, 2, "8bit") == linear + 2 * other  # int8 weights, embeddings and norms in bf16
    # NF4 with double quantization: 4.127 bits a weight (Dettmers et al. 2023): 18432 x 4.127 / 8 = 9508.6
    assert base_bytes(TINY, 2, "4bit") == 9508 + 2 * other


def test_layer_bytes_by_hand():
    # CPU fp32, dropout on: norms 2x32x4 = 256; each of 7 adapters a dropout output and a float mask of its input,
    # 8 bytes an element: (32 x 6 + 64) x 8 = 2048; sdpa q, out 2 x 32 and k, v 2 x 16, x4 = 384, + 4 lse x 4 = 16;
    # MLP 3 x 64 x 4 = 768; LoRA A outputs 7 x 4 x 4 = 112
    assert layer_bytes(TINY, "all-linear", 4, act=4, lora_copies=True, mask=4, attention="sdpa", seq=10) == \
        256 + 2048 + 384 + 16 + 768 + 112
    # shared inputs (no dropout): attention input 32 and MLP input 32 and the MLP product 64 (o_proj reads sdpa's
    # output itself), x4 = 512
    assert layer_bytes(TINY, "all-linear", 4, act=4, lora_copies=False, mask=0, attention="sdpa", seq=10) == \
        256 + 512 + 384 + 16 + 768 + 112
    # eager attention at seq 10, bf16: q and repeated k, v 3 x 32 x 2 = 192, scores 4 x 10 x (4 + 2) = 240; the
    # o_proj input is its own tensor now: shared inputs (32 + 32 + 32 + 64) x 2 = 320
    assert layer_bytes(TINY, "all-linear", 4, act=2, lora_copies=False, mask=0, attention="eager", seq=10) == \
        256 + 320 + 192 + 240 + 3 * 64 * 2 + 7 * 4 * 2


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_layer_bytes_match_the_tensors_autograd_keeps(tiny_model_dir, dropout):
    """Every tensor the forward saves for the backward pass, counted once per storage, on the tiny model with LoRA
    (fp32 on the CPU, as the TRL stages train there): the second layer's share equals layer_bytes."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear")).train()
    body = model.get_base_model().model
    tokens = 3 * 24
    ids = torch.randint(0, 1000, (3, 24))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def saved_bytes(layers: int) -> int:
        seen: dict[int, int] = {}

        def pack(t):
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                seen[storage.data_ptr()] = storage.nbytes()
            return t

        body.layers = all_layers[:layers]
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            body(input_ids=ids, attention_mask=torch.ones_like(ids))
        return sum(seen.values())

    all_layers = body.layers
    second_layer = saved_bytes(2) - saved_bytes(1)
    expected = layer_bytes(TINY, "all-linear", 4, act=4, lora_copies=dropout > 0, mask=4 if dropout else 0,
                           attention="sdpa", seq=24)
    # the per-token logsumexp and RMSNorm statistics are padded by their kernels: within 2%
    assert second_layer == pytest.approx(tokens * expected, rel=0.02)


def test_plan_command_prints_every_part_and_the_advice_when_it_will_not_fit(tiny_model_dir, capsys):
    from posttrain.cli import main

    assert main(["plan", "sft", "--model", str(tiny_model_dir), "--device", "cpu", "--memory", "0.01"]) == 0
    out = capsys.readouterr().out
    for part in ("runtime", "base weights (fp32)", "adapters (fp32)", "adapter gradients + AdamW",
                 "activations (4 rows x 512 tokens, checkpointing off)", "logits (posttrain.lm_head chunks)"):
        assert part in out
    assert "will not fit" in out and "--gradient_checkpointing true" in out and "--train.max_length 256" in out


def test_plan_for_rlhf_reads_the_longest_prompt_and_counts_every_role(tiny_model_dir, tmp_path, capsys):
    from posttrain.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n" + json.dumps({"prompt": "a much longer prompt " * 5}) + "\n")
    assert main(["plan", "rlhf", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--device", "cuda",
                 "--memory", "80"]) == 0
    out = capsys.readouterr().out
    assert "roles policy, critic:" in out and "fits" in out
    assert "the longest in --prompts" in out


def test_plan_for_a_shared_critic_counts_the_policys_rows_alone(tiny_model_dir, tmp_path, capsys):
    """A shared critic has no adapter and no rows of its own in the training pass: the plan counts half the
    activation rows, one trained adapter, and names a value head instead of a critic."""
    from posttrain.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n")
    outs = []
    for critic in ("separate", "shared"):
        assert main(["plan", "rlhf", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--device", "cuda",
                     "--memory", "80", "--ppo.critic", critic]) == 0
        outs.append(capsys.readouterr().out)
    assert "activations (8 rows" in outs[0] and "activations (4 rows" in outs[1]
    assert "roles policy, critic:" in outs[0] and "roles policy, value head:" in outs[1]


def test_plan_refuses_what_it_cannot_plan(capsys):
    from posttrain.cli import main

    assert main(["plan", "chat"]) == 2
    assert "not a training stage" in capsys.readouterr().err
    assert main(["plan", "sft", "--engine", "megatron"]) == 2
    assert "--engine" in capsys.readouterr().err


def test_auto_checkpointing_is_off_on_a_cpu_and_forced_values_win(monkeypatch):
    from posttrain.config import RLHFConfig, SFTConfig, load_config
    from posttrain.plan import checkpointing_wanted

    assert not checkpointing_wanted("sft", load_config(SFTConfig))
    assert checkpointing_wanted("sft", load_config(SFTConfig, None, {"gradient_checkpointing": "true"}))
    assert checkpointing_wanted("rlhf", load_config(RLHFConfig, None, {"gradient_checkpointing": "true"}))
    assert not checkpointing_wanted("rlhf", load_config(RLHFConfig))


def test_on_a_cpu_the_plan_counts_the_lean_heads_chunks_unless_the_head_is_soft_capped(tiny_model_dir, tmp_path, capsys):
    # posttrain.lm_head answers TRL's fused head on a CPU only for a plain head product (footprint.plain_head)
    import json

    from posttrain.cli import main

    capped = tmp_path / "capped"
    capped.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    (capped / "config.json").write_text(json.dumps({**config, "final_logit_softcapping": 30.0}))
    for model, part in ((tiny_model_dir, "logits (posttrain.lm_head chunks)"), (capped, "logits (fused LM head tiles)")):
        assert main(["plan", "dpo", "--model", str(model), "--device", "cpu"]) == 0
        assert part in capsys.readouterr().out


def test_plan_for_a_reward_model_of_fewer_layers_counts_the_kept_layers_alone(tiny_model_dir):
    """`posttrain rm --layers 1` on a 2-layer base never loads the second layer: its weights, LoRA and activations
    are out of the plan (measured by bench/plan_check.py: +110% over the real peak while the plan counted them)."""
    from dataclasses import replace

    from posttrain.config import RewardConfig, load_config
    from posttrain.plan import estimate

    def items(layers: int) -> dict[str, float]:
        config = load_config(RewardConfig, None, {"model": str(tiny_model_dir), "layers": layers})
        return estimate("rm", config, "cpu", runtime=0, capacity=2**40).items

    shape = read_shape(str(tiny_model_dir))
    assert shape.layers == 2
    cut, every = items(1), items(0)
    assert cut["base weights (fp32)"] == base_bytes(replace(shape, layers=1), 4, "none") < every["base weights (fp32)"]
    (part,) = [name for name in every if name.startswith("activations")]
    assert cut[part] == pytest.approx(every[part] / 2)
    assert cut["adapter gradients + AdamW"] == pytest.approx(every["adapter gradients + AdamW"] / 2)
    assert items(5) == every  # more layers than the base has: all of them


def test_plan_for_a_critic_from_a_cut_reward_model_counts_its_own_short_pass(tiny_model_dir, tmp_path):
    """A critic made from a reward model of the first N layers runs a pass of its own over those N and trains only
    their LoRA: the plan counts the policy's rows over every layer plus the critic's over N, not a stacked pass."""
    from posttrain.config import RLHFConfig, load_config
    from posttrain.models import write_metadata
    from posttrain.plan import estimate

    rm = tmp_path / "rm"
    rm.mkdir()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n")

    def items(reward_layers: int, base: str = str(tiny_model_dir)) -> dict[str, float]:
        write_metadata(rm, stage="rm", base_model=base, reward_layers=reward_layers)
        config = load_config(RLHFConfig, None, {"model": str(tiny_model_dir), "reward_model": str(rm),
                                                "prompts": str(prompts)})
        return estimate("rlhf", config, "cpu", runtime=0, capacity=2**40).items

    stacked, cut = items(0), items(1)
    (stacked_part,) = [name for name in stacked if name.startswith("activations")]
    (cut_part,) = [name for name in cut if name.startswith("activations")]
    assert stacked_part.startswith("activations (8 rows") and cut_part.startswith("activations (4 rows")
    assert "and 4 over the critic's 1 layers" in cut_part
    # the policy's 4 rows over 2 layers and the critic's 4 over 1: three quarters of 8 rows over 2 layers
    assert cut[cut_part] == pytest.approx(stacked[stacked_part] * 3 / 4)
    # policy LoRA on 2 layers, critic LoRA on 1: 3 layers' worth of gradients and AdamW state, against 4
    assert cut["adapter gradients + AdamW"] == pytest.approx(stacked["adapter gradients + AdamW"] * 3 / 4)
    assert cut["adapters (fp32)"] == stacked["adapters (fp32)"]
    # a reward model on another base makes no critic: the critic starts fresh over every layer, stacked
    assert items(1, base=str(tmp_path / "another-base")) == stacked
