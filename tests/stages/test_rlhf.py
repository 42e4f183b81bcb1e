"""PPO stage on tiny models: what moves, what stays frozen, the first step, exact resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from posttrain.config import ConfigError, RLHFConfig, load_config
from posttrain.data import DataError
from posttrain.stages.common import StageError

REPO = Path(__file__).resolve().parents[2]


def build_tiny_reward_model(folder: Path, base_dir: Path, seed: int = 1) -> Path:
    """A reward-model checkpoint in the layout `posttrain rm` writes: a SEQ_CLS LoRA adapter with the head in
    modules_to_save, reward_head.safetensors, the tokenizer and posttrain.json."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from posttrain.models import write_metadata

    torch.manual_seed(seed)
    base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1)
    model = get_peft_model(base, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)  # a reward adapter that is not the identity
    model.save_pretrained(folder)
    score = model.base_model.model.score
    head = score.modules_to_save["default"] if hasattr(score, "modules_to_save") else score
    save_file({"weight": head.weight.detach().clone().contiguous()}, str(folder / "reward_head.safetensors"))
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(folder)
    write_metadata(folder, stage="rm", base_model=str(base_dir))
    return folder


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory, tiny_model_dir):
    return build_tiny_reward_model(tmp_path_factory.mktemp("tiny-rm"), tiny_model_dir)


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    questions = ["Name a fruit.", "What is two plus two?", "Say hello.", "Pick a colour.", "Count to three.",
                 "What is the capital of France?", "Give me a word.", "How are you?"]
    path.write_text("\n".join(json.dumps({"prompt": [{"role": "user", "content": q}]}) for q in questions) + "\n")
    return path


def ppo_config(model, rm, prompts, output, **overrides) -> RLHFConfig:
    values = {"model": str(model), "reward_model": str(rm), "prompts": str(prompts), "output": str(output),
              "rollout.batch_size": 4, "rollout.max_new_tokens": 6, "ppo.minibatch_size": 2, "ppo.steps": 2,
              "ppo.epochs": 1, "ppo.save_steps": 0, "ppo.lr": 1e-3, "lora.r": 4, "lora.alpha": 8}
    values.update(overrides)
    return load_config(RLHFConfig, None, values)


def roles_for(config, critic=True):
    from posttrain.stages.rlhf_roles import load_roles

    return load_roles(config, torch.device("cpu"), critic=critic)


def adapter_state(roles, name):
    from posttrain.models import belongs_to

    return {n: p.detach().clone() for n, p in roles.model.named_parameters() if belongs_to(n, name)}


def test_policy_and_critic_move_while_base_reference_and_reward_stay(tiny_model_dir, tiny_rm, prompts_file, tmp_path):
    from posttrain.stages.rlhf import run_rlhf

    config = ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "ppo", **{"ppo.steps": 3})
    torch.manual_seed(config.ppo.seed)  # run_rlhf seeds the same way, so the fresh policy adapter starts identical
    start = roles_for(config)
    before = {name: adapter_state(start, name) for name in ("policy", "critic", "reward")}
    before["base"] = {n: p.detach().clone() for n, p in start.model.named_parameters() if "lora_" not in n}
    before["value_head"] = start.value_head.weight.detach().clone()
    del start

    snapshots = {}

    def on_step(roles, record):
        snapshots["last"] = {name: adapter_state(roles, name) for name in ("policy", "critic", "reward")}
        snapshots["last"]["base"] = {n: p.detach().clone() for n, p in roles.model.named_parameters() if "lora_" not in n}
        snapshots["last"]["value_head"] = roles.value_head.weight.detach().clone()

    run_rlhf(config, on_step=on_step)
    after = snapshots["last"]
    assert any(not torch.equal(before["policy"][k], after["policy"][k]) for k in before["policy"]), "policy did not train"
    assert any(not torch.equal(before["critic"][k], after["critic"][k]) for k in before["critic"]), "critic did not train"
    assert not torch.equal(before["value_head"], after["value_head"]), "value head did not train"
    assert all(torch.equal(before["reward"][k], after["reward"][k]) for k in before["reward"]), "reward adapter changed"
    assert all(torch.equal(before["base"][k], after["base"][k]) for k in before["base"]), "base weights changed"
    # the critic starts as a copy of the reward model
    for key, value in before["critic"].items():
        assert torch.equal(value, before["reward"][key.replace(".critic.", ".reward.")])
    # the output is a chat checkpoint: a plain adapter folder with metrics, plots and samples
    out = tmp_path / "ppo"
    for name in ("adapter_config.json", "adapter_model.safetensors", "metrics.json", "rl.png", "samples.md", "posttrain.json"):
        assert (out / name).is_file(), name
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["step"] for h in history] == [1, 2, 3]
    for key in ("reward_mean", "kl", "beta", "entropy", "clip_frac", "approx_kl", "value_loss", "explained_variance",
                "response_length", "hit_length_limit"):
        assert key in history[0], key


@pytest.mark.parametrize("critic", ["separate", "shared"])
def test_the_value_loss_trains_the_policy_adapter_only_with_a_shared_critic(tiny_model_dir, tiny_rm, prompts_file,
                                                                             tmp_path, critic):
    """A shared critic (--ppo.critic shared) is a value head on the policy's hidden states: there is no critic
    adapter, the head trains, and the value loss's gradient reaches the policy's adapter, so the value loss's weight
    changes the policy's first update; with a separate critic it cannot. The head is clipped in the critic's group
    either way (one clip over head and policy was measured and lost)."""
    from posttrain.stages.rlhf import run_rlhf
    from posttrain.stages.rlhf_roles import load_head

    policies, seen = [], []

    def on_step(roles, record):
        policies.append(adapter_state(roles, "policy"))
        groups = {name: {id(p) for p in params} for name, params in roles.parameter_groups().items()}
        head_group = [name for name, ids in groups.items() if id(roles.value_head.weight) in ids]
        seen.append(([n for n, _ in roles.model.named_parameters() if ".critic." in n], roles.value_head.weight.detach().clone(),
                     record["value_loss"], head_group))

    for vf_coef in (0.0, 1.0):
        run_rlhf(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / f"vf{vf_coef}", **{
            "ppo.steps": 1, "ppo.critic": critic, "ppo.vf_coef": vf_coef}), on_step=on_step)
    critic_params, head, value_loss, head_group = seen[1]
    assert bool(critic_params) == (critic == "separate")
    assert head_group == ["critic"]
    # both start from the reward model's head (it shares the base); the value loss moved it
    start = load_head(Path(tiny_rm), head.shape[1]).weight
    assert value_loss > 0 and not torch.equal(head, start)
    same = all(torch.equal(policies[0][k], policies[1][k]) for k in policies[0])
    assert same == (critic == "separate")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_first_step_has_zero_kl(tiny_model_dir, tiny_rm, prompts_file, tmp_path, precision):
    """At step 1 the policy is the reference: the KL is exactly 0, with the base stored in bf16 too (policy and
    reference log-probs take the same path). The ratio before the first update is tested where it can fail, with
    several minibatches scored apart from their training passes (test_rlhf_loop.py)."""
    from posttrain.stages.rlhf import run_rlhf

    records = []
    config = ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "ppo",
                        **{"ppo.steps": 1, "ppo.minibatch_size": 4, "precision": precision})
    dtypes = []
    run_rlhf(config, on_step=lambda roles, record: (records.append(record), dtypes.append(roles.model.get_base_model().dtype)))
    assert dtypes == [torch.float32 if precision == "fp32" else torch.bfloat16]
    assert records[0]["kl"] == 0.0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_plan_counts_the_fp32_output_layer_the_stage_makes(tiny_model_dir, tiny_rm, prompts_file, tmp_path, precision):
    """With a bf16 base the log-probs come from fp32 logits through an fp32 copy of the output layer: `posttrain
    plan rlhf` counts that copy at the size the stage allocates, and none with an fp32 base."""
    from posttrain.footprint import read_shape
    from posttrain.plan import _rlhf
    from posttrain.stages.rlhf import run_rlhf

    config = ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "ppo", **{"ppo.steps": 1, "precision": precision})
    made = []
    run_rlhf(config, on_step=lambda roles, record: made.append(roles._head_fp32))
    items, _, _ = _rlhf(read_shape(str(tiny_model_dir)), config, "cpu", False, None)
    planned = items.get("output layer in fp32 (the log-probs' logits)", 0)
    actual = 0 if made[0] is None else made[0].numel() * made[0].element_size()
    assert planned == actual and (actual > 0) == (precision == "bf16")


def test_rollouts_fold_the_policy_into_the_weights_without_touching_them(tiny_model_dir, tiny_rm, prompts_file, tmp_path):
    """Sampling runs on base weights with the policy's LoRA delta folded in: the same function as the unmerged
    adapter, and the base tensors are back as they were afterwards."""
    from posttrain.generation import encode_prompts
    from posttrain.stages.rlhf_roles import POLICY

    roles = roles_for(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "ppo", precision="fp32"))
    with torch.no_grad():
        for name, param in roles.model.named_parameters():
            if ".policy." in name and "lora_B" in name:
                param.normal_(0, 0.5)  # a policy that differs from the base
    before = {n: p.detach().clone() for n, p in roles.model.named_parameters()}
    query, mask, _ = encode_prompts(roles.tokenizer, ["Name a fruit.", "Say hello to me."], 32, torch.device("cpu"))

    def logits():
        return roles.model(input_ids=query, attention_mask=mask).logits

    with torch.no_grad():
        with roles._merged_policy():
            folded = logits()
        with roles.role(POLICY):
            adapter = logits()
        with roles.role(None):
            base = logits()
    assert torch.allclose(folded, adapter, atol=1e-5)
    assert not torch.allclose(folded, base, atol=1e-3)
    assert all(torch.equal(before[n], p) for n, p in roles.model.named_parameters())
    response, logprobs = roles.rollout(query, mask, 4, temperature=1.0)
    assert response.shape[0] == 2 and logprobs.shape == response.shape


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_roles_in_one_batched_pass_match_one_pass_per_role(tiny_model_dir, tiny_rm, prompts_file, tmp_path, precision):
    """Stacking the rows once per role (policy, adapters off, critic) in one pass gives each role the hidden
    states a pass of its own gives, to the bit, and the same gradients for policy and critic."""
    from posttrain.generation import encode_prompts
    from posttrain.stages.rlhf_roles import CRITIC, POLICY

    roles = roles_for(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "ppo", precision=precision))
    assert roles._rows is not None  # plain LoRA: the row-block forward is in charge
    with torch.no_grad():
        for name, param in roles.model.named_parameters():
            if ".policy." in name and "lora_B" in name:
                param.normal_(0, 0.5)  # a policy that differs from the base
    ids, mask, _ = encode_prompts(roles.tokenizer, ["Name a fruit.", "Say hello to me, please."], 32, torch.device("cpu"))
    names = [POLICY, None, CRITIC]
    with torch.no_grad():
        together = roles.hidden(names, ids, mask)
        alone = [roles.hidden([name], ids, mask)[0] for name in names]
    for joint, single in zip(together, alone):
        assert torch.equal(joint, single)
    assert not torch.equal(together[0], together[1]) and not torch.equal(together[1], together[2])

    def grads(hiddens):
        policy, critic = hiddens
        (policy.float().pow(2).mean() + roles.value_head(critic.float()).mean()).backward()
        out = {n: p.grad.clone() for n, p in roles.model.named_parameters() if p.grad is not None}
        roles.model.zero_grad(set_to_none=True)
        roles.value_head.zero_grad(set_to_none=True)
        return out

    joint = grads(roles.hidden([POLICY, CRITIC], ids, mask))
    separate = grads((roles.hidden([POLICY], ids, mask)[0], roles.hidden([CRITIC], ids, mask)[0]))
    assert joint.keys() == separate.keys()
    assert any(".policy." in n for n in joint) and any(".critic." in n for n in joint)
    assert not any(".reward." in n or ".reference." in n for n in joint)
    tolerance = 1e-5 if precision == "fp32" else 2e-2
    for name in joint:
        assert torch.allclose(joint[name], separate[name], rtol=tolerance, atol=tolerance * joint[name].abs().max()), name


def test_policy_with_new_token_rows_switches_roles_through_peft(tmp_path, real_tokenizer_dir, prompts_file):
    """An SFT adapter on a base without a chat template trains two new token rows, which the row-block LoRA
    forward does not handle: roles switch through peft, rollouts sample from the unfolded adapter, and PPO
    still starts at KL 0 and moves the policy."""
    from transformers import AutoTokenizer

    from conftest import build_tiny_model
    from posttrain.chat import ChatConfig, run_chat
    from posttrain.config import RewardConfig, SFTConfig
    from posttrain.stages.reward import run_reward
    from posttrain.stages.rlhf import run_rlhf
    from posttrain.stages.sft import run_sft
    from test_models import build_base_tokenizer

    raw = AutoTokenizer.from_pretrained(build_base_tokenizer(tmp_path / "tokenizer", real_tokenizer_dir))
    base_dir = build_tiny_model(tmp_path / "base", raw, chat_template=False)
    sft_dir = run_sft(load_config(SFTConfig, None, {
        "model": str(base_dir), "data": str(REPO / "data_samples/sft_messages.jsonl"),
        "output": str(tmp_path / "sft"), "max_steps": 2, "lr": 1e-2, "lora.r": 4, "max_length": 64}))
    rm = run_reward(load_config(RewardConfig, None, {  # on the same base: it installs the same two tokens
        "model": str(base_dir), "data": str(REPO / "data_samples/preferences.jsonl"), "output": str(tmp_path / "rm"),
        "max_steps": 2, "lora.r": 4, "max_length": 64, "train.eval_split": 0.1}))
    records, policies, row_adapters = [], [], []

    def on_step(roles, record):
        records.append(record)
        policies.append(adapter_state(roles, "policy"))
        row_adapters.append(roles._rows)

    out = run_rlhf(ppo_config(sft_dir, rm, prompts_file, tmp_path / "ppo"), on_step=on_step)
    assert row_adapters == [None, None]
    assert records[0]["kl"] == 0.0
    assert any(not torch.equal(policies[0][k], policies[1][k]) for k in policies[0] if "lora_" in k)
    (rows,) = [k for k in policies[0] if k.endswith("trainable_tokens_delta.policy")]
    assert not torch.equal(policies[0][rows], policies[1][rows])  # the policy's new token rows train too
    assert isinstance(run_chat(ChatConfig(model=str(out), prompt="Hello", max_new_tokens=4, temperature=0.0)), str)


def test_policy_from_sft_adapter_keeps_a_frozen_reference_copy(tiny_model_dir, tiny_rm, prompts_file, tmp_path):
    """Starting from an SFT adapter: the reference is a frozen copy of it, so KL is 0 at the first step."""
    from posttrain.config import SFTConfig
    from posttrain.stages.rlhf import run_rlhf
    from posttrain.stages.sft import run_sft

    sft_dir = run_sft(load_config(SFTConfig, None, {
        "model": str(tiny_model_dir), "data": str(REPO / "data_samples/sft_messages.jsonl"),
        "output": str(tmp_path / "sft"), "max_steps": 2, "lr": 1e-2, "lora.r": 4, "max_length": 64}))
    records, references = [], []

    def on_step(roles, record):
        records.append(record)
        references.append(adapter_state(roles, "reference"))

    run_rlhf(ppo_config(sft_dir, tiny_rm, prompts_file, tmp_path / "ppo", **{"ppo.minibatch_size": 4}), on_step=on_step)
    assert records[0]["kl"] == 0.0
    assert records[1]["kl"] != 0.0  # the policy moved away from the frozen reference
    assert all(torch.equal(references[0][k], references[1][k]) for k in references[0])


@pytest.mark.parametrize("critic", ["separate", "shared", "first-layer"])
def test_resume_after_a_kill_ends_with_the_same_weights(tiny_model_dir, tiny_rm, prompts_file, tmp_path, critic):
    """Also with a critic in a pass of its own over the first layer ("first-layer": the reward model reads the
    first of the tiny base's 2 layers, so the critic made from it does too)."""
    import shutil

    from safetensors.torch import load_file

    from posttrain.stages.rlhf import run_rlhf

    if critic == "first-layer":
        tiny_rm = shutil.copytree(tiny_rm, tmp_path / "rm-first-layer")
        meta = json.loads((tiny_rm / "posttrain.json").read_text())
        (tiny_rm / "posttrain.json").write_text(json.dumps({**meta, "reward_layers": 1}))
    settings = {"ppo.steps": 4, "ppo.save_steps": 2, "ppo.epochs": 2, "ppo.adaptive_kl": True, "ppo.normalize_rewards": True,
                "ppo.critic": "separate" if critic == "first-layer" else critic}
    run_rlhf(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "straight", **settings))
    run_rlhf(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "killed", **settings), halt_after_step=3)
    # the halted run left checkpoints but no finished output
    assert not (tmp_path / "killed" / "posttrain.json").exists()
    run_rlhf(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "killed", **settings, resume=True))
    straight = load_file(str(tmp_path / "straight" / "adapter_model.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "adapter_model.safetensors"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    heads = [load_file(str(tmp_path / run / "critic" / "value_head.safetensors")) for run in ("straight", "killed")]
    start = load_file(str(Path(tiny_rm) / "reward_head.safetensors"))["weight"].float()
    assert not torch.equal(heads[0]["weight"], start), "the value head did not train"
    assert torch.equal(heads[0]["weight"], heads[1]["weight"])
    assert (tmp_path / "straight" / "critic" / "adapter_model.safetensors").is_file() == (critic != "shared")
    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())["history"]
    b = json.loads((tmp_path / "killed" / "metrics.json").read_text())["history"]
    assert [h["reward_mean"] for h in a] == [h["reward_mean"] for h in b]


def test_bad_inputs_give_clear_errors(tiny_model_dir, tiny_rm, prompts_file, tmp_path):
    from transformers import AutoTokenizer

    from posttrain.stages.rlhf import run_rlhf

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        run_rlhf(ppo_config(tiny_model_dir, tiny_rm, empty, tmp_path / "a"))
    with pytest.raises(ConfigError, match="max_new_tokens"):
        run_rlhf(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "b", **{"rollout.max_new_tokens": 0}))
    with pytest.raises(ConfigError, match="minibatch_size"):
        run_rlhf(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "c", **{"ppo.minibatch_size": 3}))
    with pytest.raises(StageError, match="not a reward-model checkpoint"):
        run_rlhf(ppo_config(tiny_model_dir, tiny_model_dir, prompts_file, tmp_path / "d"))
    # a reward model whose tokenizer differs from the policy's on the same base
    mismatched = build_tiny_reward_model(tmp_path / "rm-mismatched", tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(mismatched)
    tokenizer.add_tokens(["<extra-token>"])
    tokenizer.save_pretrained(mismatched)
    with pytest.raises(StageError, match="different tokenizer"):
        run_rlhf(ppo_config(tiny_model_dir, mismatched, prompts_file, tmp_path / "e"))


def run_two_processes(model, rm, prompts, output, mode="ppo"):
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(Path(__file__).with_name("ppo_two_processes.py")),
               str(model), str(rm), str(prompts), str(output), mode]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((output / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_two_processes_shard_rollouts_and_all_reduce_gradients(tiny_model_dir, tiny_rm, prompts_file, tmp_path):
    """2 CPU processes (gloo): each samples different prompts, and both end with the same policy weights."""
    ranks = run_two_processes(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "two")
    assert ranks[0]["policy"] == ranks[1]["policy"]
    assert ranks[0]["prompts"] != ranks[1]["prompts"]
    assert (tmp_path / "two" / "posttrain.json").is_file()


def test_two_processes_keep_each_prompts_group_on_one_process(tiny_model_dir, tiny_rm, prompts_file, tmp_path):
    """GRPO under 2 processes: every encoded batch is whole groups of the same prompt, the ranks' prompts differ,
    and the ranks end with the same policy."""
    ranks = run_two_processes(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "grpo", "grpo")
    assert ranks[0]["policy"] == ranks[1]["policy"]
    for rank in ranks:
        training = [batch for batch in rank["prompts"] if len(batch) == 6]  # 2 prompts x 3 responses
        assert len(training) == 2
        for batch in training:
            assert [len(set(batch[i:i + 3])) for i in (0, 3)] == [1, 1]
    assert ranks[0]["prompts"] != ranks[1]["prompts"]


def test_two_processes_train_what_one_process_trains_on_the_same_global_batch(tiny_model_dir, tiny_rm, prompts_file, tmp_path):
    """2 processes with 2 responses each against 1 process with 4, one minibatch an epoch: the same prompts (one
    stream), the same draws per response (fixed by step and global row), whitening and the logged reward spread
    over the whole batch, and each process's loss weighted by its share of the step's tokens, so DDP's average is
    the one process's token mean (stages/rlhf_steps.minibatch_weights). What is left is the
    order of floating-point sums (in fp32: a bf16 base rounds products of different batch shapes differently, and
    Adam's normalisation magnifies that in near-zero gradients), so the adapters agree to 1e-5, not to the bit."""
    from safetensors.torch import load_file

    from posttrain.stages.rlhf import run_rlhf

    run_two_processes(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "two", "global")
    run_rlhf(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "one", **{
        "rollout.batch_size": 4, "ppo.minibatch_size": 4, "ppo.epochs": 1, "rollout.max_new_tokens": 4, "ppo.steps": 2,
        "precision": "fp32"}))
    for name in ("adapter_model.safetensors", "critic/adapter_model.safetensors", "critic/value_head.safetensors"):
        one, two = load_file(str(tmp_path / "one" / name)), load_file(str(tmp_path / "two" / name))
        assert one.keys() == two.keys()
        moved = [k for k in one if "lora_B" in k or "weight" in k]
        assert moved and all(torch.allclose(one[k], two[k], atol=1e-5, rtol=1e-4) for k in one), name
    a = json.loads((tmp_path / "one" / "metrics.json").read_text())["history"]
    b = json.loads((tmp_path / "two" / "metrics.json").read_text())["history"]
    for key in ("reward_mean", "reward_std"):
        assert [h[key] for h in a] == pytest.approx([h[key] for h in b], abs=1e-5), key


def test_a_nan_on_one_process_stops_every_process_with_the_message(tiny_model_dir, tiny_rm, prompts_file, tmp_path):
    """Rank 1's rewards turn NaN: both ranks agree before raising, so neither hangs in the next collective, and
    both end with the message naming the process."""
    ranks = run_two_processes(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "nan", "nan")
    for rank in ranks:
        assert rank["error"] and "NaN or infinite at step 1 (on process 1)" in rank["error"]


def test_minibatch_views_drop_only_columns_that_are_padding_in_every_row():
    from posttrain.stages.rollout import Rollout

    # three rows, prompt width 4 (left-padded), response width 5 (right-padded):
    # row 0: prompt of 2, response of 3; row 1: prompt of 3, response of 1; row 2: prompt of 4, response of 5
    prompt_mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]])
    response_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    ids = torch.arange(27).view(3, 9)
    rollout = Rollout(ids[:, :4], prompt_mask, ids[:, 4:], response_mask, response_mask.sum(1), torch.ones(3, dtype=torch.bool),
                      torch.zeros(3, 5), [{}] * 3, advantages=torch.arange(15.0).view(3, 5))
    view = rollout.rows(torch.tensor([0, 1]))
    # rows 0 and 1: the first prompt column is padding in both, and responses end by column 3
    assert (view.context, view.width) == (3, 3)
    assert view.ids.tolist() == [[1, 2, 3, 4, 5, 6], [10, 11, 12, 13, 14, 15]]
    assert view.mask.tolist() == [[True, True, True], [True, False, False]]
    assert view.advantages.tolist() == [[0, 1, 2], [5, 6, 7]] and view.values is None
    full = torch.zeros(3, 5)
    view.scatter(full, torch.ones(2, 3))
    assert full.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]]
    # with row 2 in the minibatch nothing can be dropped
    whole = rollout.rows(torch.tensor([2, 0]))
    assert (whole.context, whole.width, whole.ids.shape) == (4, 5, (2, 9))
