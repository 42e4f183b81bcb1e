"""The RL loop's mechanics on tiny models: optimizer steps and gradient accumulation, the PPO ratio before the
first update, collectives on the accelerator's device, one reward-model input everywhere, stop tokens, settings
that are refused, and one gradient clip per role."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from posttrain.config import ConfigError
from test_rlhf import ppo_config, prompts_file, tiny_rm  # noqa: F401 (the fixtures, shared with test_rlhf)

REPO = Path(__file__).resolve().parents[2]


def leftover_gradients(roles) -> list[str]:
    return [n for n, p in roles.named_parameters() if p.grad is not None]


@pytest.mark.parametrize("minibatches,grad_accum", [(3, 2), (2, 4)])
def test_every_epoch_ends_with_an_optimizer_step_and_the_schedule_reaches_zero(
        tiny_model_dir, tiny_rm, prompts_file, tmp_path, minibatches, grad_accum):
    """3 minibatches with grad_accum 2: steps after minibatches 2 and 3 (the shorter last group), so no gradient
    leaks into the next epoch or rollout. 2 minibatches with grad_accum 4: one step per epoch, not none. The
    linear decay's total counts exactly these steps, so the learning rate is 0 after the last one."""
    from posttrain.stages.rlhf import run_rlhf

    records, leftovers = [], []

    def on_step(roles, record):
        records.append(record)
        leftovers.append(leftover_gradients(roles))

    run_rlhf(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "ppo", **{
        "rollout.batch_size": 2 * minibatches, "ppo.minibatch_size": 2, "ppo.grad_accum": grad_accum,
        "ppo.epochs": 2, "ppo.steps": 2}), on_step=on_step)
    per_epoch = -(-minibatches // grad_accum)
    assert [r["optimizer_steps"] for r in records] == [2 * per_epoch] * 2
    assert leftovers == [[], []], "gradients were left over after the step"
    assert records[0]["lr"] > 0 and records[-1]["lr"] == 0.0


class _Other:
    """A stand-in collective: this process and ``world - 1`` others with ``other_tokens`` tokens on each."""

    def __init__(self, world: int, other_tokens: float):
        self.world, self.other_tokens = world, other_tokens

    def mean(self, values):
        return {k: (v + (self.world - 1) * self.other_tokens) / self.world for k, v in values.items()}


@pytest.mark.parametrize("aggregation,world,expected", [
    # one process, 6 + 2 response tokens in the step: every token's gradient is -A / 8
    ("token_mean", 1, [-1 / 8] * 8),
    # another process holds 24 tokens, so the step has 32; DDP halves each process's gradient afterwards, so here
    # every token gets -A * 2 / 32 (the whole step: -1 / 32 a token)
    ("token_mean", 2, [-1 / 16] * 8),
    # sequence_mean weighs rows: each of the 4 rows gets 1/4, shared among its own tokens
    ("sequence_mean", 1, [-1 / 4 / 5] * 5 + [-1 / 4] * 3),
])
def test_accumulated_minibatches_weigh_each_token_as_the_aggregation_says(aggregation, world, expected):
    """Two minibatches accumulated into one optimizer step, the first with 6 response tokens (5 + 1), the second
    with 2 (1 + 1), advantage 1 everywhere and the ratio 1: the gradient of the policy loss on each token's
    log-prob is -1 / (the step's tokens) under token_mean, wherever the token falls. Dividing each minibatch's own
    token mean by the number of minibatches, as the loop did, gave the first minibatch's tokens -1/12 and the
    second's -1/4."""
    from posttrain.config import RLHFConfig
    from posttrain.stages.rlhf_steps import Forward, update
    from posttrain.stages.rollout import Rollout

    lengths = torch.tensor([5, 1, 1, 1])
    mask = torch.arange(5)[None, :] < lengths[:, None]
    zeros = torch.zeros(4, 5)
    rollout = Rollout(query=torch.ones(4, 2, dtype=torch.long), query_mask=torch.ones(4, 2, dtype=torch.long),
                      response=torch.ones(4, 5, dtype=torch.long), mask=mask, lengths=lengths, has_stop=lengths < 5,
                      sampled_logprobs=zeros, prompts=[{}] * 4, order=torch.arange(4), old_logprobs=zeros,
                      ref_logprobs=zeros, advantages=mask.float(), returns=zeros)
    theta = torch.zeros(4, 5, requires_grad=True)  # the log-prob of every token (old log-probs are 0: ratio 1)
    grads = []

    class Optim:
        pass_size, passes_per_step = 2, 2  # minibatches of 2 (one pass each), 2 to an optimizer step

        def model(self, mb, temperature, entropy_grad=False):
            return theta[mb.rows, :mb.width], torch.zeros(len(mb.rows), mb.width), None

        def syncing(self, last):
            import contextlib
            return contextlib.nullcontext()

        def backward(self, loss):
            loss.backward()

        def step(self):
            grads.append(theta.grad.clone())
            theta.grad = None
            return {}

    class Guard:
        def check_finite(self, *args):
            pass

    config = RLHFConfig()
    config.ppo.epochs, config.ppo.minibatch_size, config.ppo.grad_accum = 1, 2, 2
    config.ppo.loss_aggregation, config.rollout.max_new_tokens = aggregation, 5
    optim = Optim()
    first = Forward(*optim.model(rollout.rows(torch.arange(2)), 1.0))
    update(rollout, first, optim, config, False, 0.0, _Other(world, 24.0), Guard())
    assert len(grads) == 1
    assert grads[0][mask].tolist() == pytest.approx(expected)
    assert not grads[0][~mask].any()


@pytest.mark.parametrize("precision, critic, algo", [("fp32", "separate", "ppo"), ("bf16", "separate", "ppo"),
                                                     ("bf16", "shared", "ppo"), ("bf16", "separate", "grpo")])
def test_ratio_is_one_before_the_first_update_with_several_minibatches_and_epochs(
        tiny_model_dir, tiny_rm, prompts_file, tmp_path, precision, critic, algo):
    """Old log-probs come from the scoring passes, new ones from the training passes. With 4 minibatches accumulated
    into one optimizer step, every minibatch of the first epoch is scored before any update: there the ratio must
    be exactly 1, clip fraction and approx-KL exactly 0, at every step (not only the first) and in bf16 too; for
    GRPO (groups of 4 whose prompt runs once, in minibatches of 2) as well. The second epoch runs after an update,
    so its ratio moves: the statistic is live."""
    from posttrain.stages.rlhf import run_rlhf

    records = []
    run_rlhf(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "ppo", **{
        "rollout.batch_size": 8, "ppo.minibatch_size": 2, "ppo.grad_accum": 4, "ppo.epochs": 2, "ppo.steps": 2,
        "ppo.lr": 5e-2, "precision": precision, "ppo.critic": critic, "algo": algo,
        "rollout.group_size": 4 if algo == "grpo" else 0}), on_step=lambda roles, record: records.append(record))
    for record in records:
        assert record["ratio_before_update"] == pytest.approx(1.0, abs=1e-6)
        assert record["clip_frac_before_update"] == 0.0
        assert record["approx_kl_before_update"] == pytest.approx(0.0, abs=1e-7)
        assert record["ratio"] != pytest.approx(1.0, abs=1e-6), "the second epoch's ratio should move"
    assert records[0]["kl"] == 0.0


class StandInAccelerator:
    """Two processes' collectives on one process: records every tensor handed to a collective; each other
    process is a copy of this one."""

    def __init__(self, device):
        self.device, self.num_processes, self.process_index, self.is_main_process = device, 2, 0, True
        self.seen: list[tuple[str, torch.device, torch.dtype]] = []

    def reduce(self, tensor, reduction="mean"):
        self.seen.append(("reduce", tensor.device, tensor.dtype))
        return tensor * self.num_processes if reduction == "sum" else tensor.clone()

    def gather(self, tensor):
        self.seen.append(("gather", tensor.device, tensor.dtype))
        return torch.cat([tensor, tensor])

    def wait_for_everyone(self):
        pass

    def prepare(self, *objects):  # a stand-in has no engine to wrap with: what a single process would get
        return objects

    def backward(self, loss):
        loss.backward()

    def no_sync(self, model):
        import contextlib

        return contextlib.nullcontext()

    def clip_grad_norm_(self, params, max_norm):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)


def test_collectives_put_their_tensors_on_the_accelerators_device():
    """NCCL reduces only tensors on the GPU. With a stand-in accelerator on torch's lazy device (a device that is not
    the CPU, as a GPU is not), every tensor the loop's collectives hand over must be on that device."""
    lazy = pytest.importorskip("torch._lazy.ts_backend")
    lazy.init()
    from posttrain.stages.rlhf_monitor import Collective

    device = torch.device("lazy")
    accelerator = StandInAccelerator(device)
    collective = Collective(accelerator)
    assert collective.mean({"a": 1.0, "b": 3.0}) == {"a": 1.0, "b": 3.0}
    assert collective.flags(True) == [True, True]
    collective.gather(torch.ones(3))  # a CPU tensor from the caller is moved first
    mean, var = collective.masked_moments(torch.arange(4.0).view(2, 2), torch.tensor([[True, True], [True, False]]))
    # the masked 0, 1, 2 on each of the two processes: mean 1, unbiased variance (1 + 0 + 1) * 2 / (6 - 1)
    assert mean.item() == pytest.approx(1.0) and var.item() == pytest.approx(0.8)
    assert {kind for kind, _, _ in accelerator.seen} == {"reduce", "gather"}
    assert all(d.type == "lazy" for _, d, _ in accelerator.seen), accelerator.seen


def test_the_stage_hands_every_collective_to_the_accelerator(tiny_model_dir, tiny_rm, prompts_file, tmp_path):
    """The whole stage under a 2-process stand-in: every collective (metrics, NaN agreement, reward normalisation,
    whitening statistics) goes through the accelerator, with tensors on its device and of a dtype every backend
    reduces (no float64). (Gradients are averaged by the engine accelerate wraps the module in.)"""
    from posttrain.stages.rlhf import run_rlhf

    accelerator = StandInAccelerator(torch.device("cpu"))
    run_rlhf(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "ppo", **{"ppo.normalize_rewards": True}),
             accelerator=accelerator)
    assert len(accelerator.seen) > 10
    assert {kind for kind, _, _ in accelerator.seen} == {"reduce", "gather"}
    assert all(d == accelerator.device and dtype != torch.float64 for _, d, dtype in accelerator.seen)
    assert (tmp_path / "ppo" / "posttrain.json").is_file()


@pytest.mark.parametrize("engine", ["FSDP", "DEEPSPEED"])
def test_a_sharded_launch_is_refused_before_a_model_loads(tiny_model_dir, tiny_rm, prompts_file, tmp_path, engine):
    """Rollouts need the whole policy on every process; under FSDP or ZeRO the stage says so and names the launch
    that works, instead of failing somewhere in generation."""
    from accelerate.utils import DistributedType

    from posttrain.stages.common import StageError
    from posttrain.stages.rlhf import run_rlhf

    accelerator = StandInAccelerator(torch.device("cpu"))
    accelerator.distributed_type = DistributedType[engine]
    with pytest.raises(StageError, match=f"does not run under {engine}.*configs/accelerate/ddp.yaml"):
        run_rlhf(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "ppo"), accelerator=accelerator)
    assert not accelerator.seen, "a collective ran: the stage got past the check"
    assert not (tmp_path / "ppo" / "posttrain.json").exists()


@pytest.mark.parametrize("pooling,layers", [("mean", 0), ("response", 0), ("last", 0), ("response", 1)])
@pytest.mark.parametrize("prompt", ["Name a fruit.", [{"role": "user", "content": "Name a fruit."}]])
def test_the_reward_model_reads_the_same_input_in_training_scoring_and_rl(tiny_model_dir, prompts_file, tmp_path, prompt,
                                                                         pooling, layers):
    """One function builds the reward model's input, and the checkpoint says how its hidden states are pooled and
    how many layers it reads (``layers`` 1 of the tiny base's 2): the score of a prompt and response is the same in
    the reward-model stage's own tokenisation, in `posttrain score`, and in the RL stage's reward source (the
    reward adapter on the policy's whole base, run over that many layers)."""
    from posttrain.config import RewardConfig, ScoreConfig, load_config
    from posttrain.stages.reward import run_reward, tokenise_pairs
    from posttrain.stages.reward_model import load_reward_model, score_ids
    from posttrain.stages.rlhf_rewards import RewardModelSource, Responses
    from posttrain.stages.rlhf_roles import load_roles
    from posttrain.stages.score import run_score

    response = "An apple, crisp and sweet."
    pairs = tmp_path / "pairs.jsonl"
    rejected = "No." if isinstance(prompt, str) else [{"role": "assistant", "content": "No."}]
    chosen = response if isinstance(prompt, str) else [{"role": "assistant", "content": response}]
    pairs.write_text("".join(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}) + "\n" for _ in range(4)))
    rm_dir = run_reward(load_config(RewardConfig, None, {"model": str(tiny_model_dir), "data": str(pairs),
                                                           "output": str(tmp_path / "rm"), "max_steps": 2, "lora.r": 4,
                                                           "train.eval_split": 0.0, "pooling": pooling,
                                                           "layers": layers}))
    rm = load_reward_model(rm_dir)
    # 1. the reward-model stage's tokenisation of the pair, scored by the trained model
    ids, _ = tokenise_pairs([{"prompt": prompt, "chosen": chosen, "rejected": rejected}], rm.tokenizer, 384)
    assert rm.pooling == pooling
    trained = score_ids(rm.model, ids.chosen, ids.chosen_start, rm.tokenizer.pad_token_id, 1, pooling=pooling)[0]
    # 2. posttrain score on a prompt/completion row
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": prompt, "completion": chosen}) + "\n")
    run_score(ScoreConfig(model=str(rm_dir), data=str(rows), output=str(tmp_path / "scored.jsonl")))
    scored = json.loads((tmp_path / "scored.jsonl").read_text())["reward"]
    # 3. the RL stage: the reward adapter and head on the policy's shared base, scoring the decoded response
    roles = load_roles(ppo_config(tiny_model_dir, rm_dir, prompts_file, tmp_path / "ppo", precision="fp32"),
                       torch.device("cpu"), critic=False)
    rl = RewardModelSource(roles)(Responses([prompt], [{"prompt": prompt}], [response], [[]], 1, 1)).item()
    assert roles.reward_layers == layers
    assert trained == pytest.approx(scored, abs=1e-5)
    assert rl == pytest.approx(trained, abs=1e-4)


def test_a_critic_made_from_a_reward_model_of_the_first_layers_runs_those_layers_alone(tiny_model_dir, prompts_file,
                                                                                      tmp_path):
    """A reward model that reads the first layer of the tiny base's 2 makes a critic that reads the same layer, in a
    pass of its own: at the start its values are the reward model's per-token rewards (the same adapter and head on
    the same states), its trained parameters are that layer's LoRA and the head, and the policy trains alone in its
    pass. A shared critic cannot read those states from the policy's last ones: its head starts at zero."""
    from posttrain.config import RewardConfig, load_config
    from posttrain.stages.reward import run_reward
    from posttrain.stages.reward_model import body_and_head, load_reward_model, reward_model_rows
    from posttrain.stages.rlhf_roles import CRITIC, POLICY, load_roles
    from posttrain.stages.rollout import Minibatch

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": "Name a fruit.", "chosen": "An apple.", "rejected": "No."}) + "\n"
                             for _ in range(4)))
    rm_dir = run_reward(load_config(RewardConfig, None, {"model": str(tiny_model_dir), "data": str(pairs),
                                                           "output": str(tmp_path / "rm"), "max_steps": 2, "lora.r": 4,
                                                           "train.eval_split": 0.0, "layers": 1,
                                                           # named modules: the critic adapter then has layer 1's LoRA too
                                                           "lora.target_modules": "q_proj,v_proj"}))
    roles = load_roles(ppo_config(tiny_model_dir, rm_dir, prompts_file, tmp_path / "ppo", precision="fp32"),
                       torch.device("cpu"), critic=True)
    assert roles.critic_layers == 1
    names = {id(p): n for n, p in roles.model.named_parameters()}
    critic = [names[id(p)] for p in roles.parameter_groups()[CRITIC] if id(p) in names]
    layer1 = [p for n, p in roles.model.named_parameters() if ".layers.1." in n and ".critic." in n]
    assert layer1 and not any(p.requires_grad for p in layer1)
    assert critic and all(".layers.0." in n for n in critic)  # not layer 1's LoRA, which the critic does not run

    rm = load_reward_model(rm_dir)
    (row,), (start,) = reward_model_rows(rm.tokenizer, ["Name a fruit."], ["An apple, crisp and sweet."])
    ids = torch.tensor([row])
    batch = Minibatch(torch.tensor([0]), ids, torch.ones_like(ids), torch.ones(1, len(row) - start, dtype=torch.bool),
                      start, len(row) - start)
    passes = []
    hidden = roles.hidden
    roles.hidden = lambda names, *args, **kwargs: passes.append((list(names), args[2:] + tuple(kwargs.values()))) or \
        hidden(names, *args, **kwargs)
    with torch.no_grad():
        _, _, values = roles.forward(batch, temperature=1.0)
        body, head = body_and_head(rm.model)
        states = body(input_ids=ids).last_hidden_state
        expected = head(states[:, start - 1:-1]).squeeze(-1)
    assert passes == [([POLICY], (start,)), ([CRITIC], (1, start))]
    torch.testing.assert_close(values, expected, atol=1e-4, rtol=1e-4)

    shared = load_roles(ppo_config(tiny_model_dir, rm_dir, prompts_file, tmp_path / "ppo2", precision="fp32",
                                   **{"ppo.critic": "shared"}), torch.device("cpu"), critic=True)
    assert shared.critic_layers == 0 and shared.reward_layers == 1
    assert all(p.abs().sum() == 0 for p in shared.value_head.parameters())


def test_no_eos_penalty_help_says_what_it_does():
    from posttrain.config import RLHFConfig, field_docs

    docs = {key: text for key, text, _ in field_docs(RLHFConfig)}
    assert "disable" not in docs["rollout.no_eos_penalty"]
    assert "replaces" in docs["rollout.no_eos_penalty"] and "penalise_no_eos" in docs["rollout.no_eos_penalty"]
    assert "false switches this off" in docs["rollout.penalise_no_eos"]


@pytest.mark.parametrize("penalise", [True, False])
def test_responses_cut_at_the_length_limit_are_named_at_the_first_step(
        tiny_model_dir, tiny_rm, prompts_file, tmp_path, capsys, penalise):
    """A tiny random model never says its stop token, so every response reaches max_new_tokens: the run says so
    once, and with penalise_no_eos (every score replaced by the penalty) names the switch that gives the signal back."""
    from posttrain.stages.rlhf import run_rlhf

    records = []
    run_rlhf(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "ppo", **{
        "ppo.steps": 2, "rollout.penalise_no_eos": penalise, "ppo.normalize_rewards": False}),
        on_step=lambda roles, record: records.append(record))
    assert [r["hit_length_limit"] for r in records] == [1.0, 1.0]
    err = capsys.readouterr()
    warnings = [line for line in (err.out + err.err).splitlines() if "reached --rollout.max_new_tokens" in line]
    assert len(warnings) == 1, warnings
    assert ("--rollout.penalise_no_eos false" in warnings[0]) == penalise
    if penalise:  # the penalty really replaced every score: nothing left to learn from
        assert all(r["score_used"] == -1.0 for r in records)


def test_rl_default_keeps_the_scores_of_cut_responses():
    from posttrain.config import RLHFConfig

    assert RLHFConfig().rollout.penalise_no_eos is False


def test_settings_the_rl_stage_refuses(tiny_model_dir, tiny_rm, prompts_file, tmp_path):
    from posttrain.stages.rlhf import run_rlhf

    with pytest.raises(ConfigError, match="top_p"):
        run_rlhf(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "a", **{"rollout.top_p": 0.9}))
    with pytest.raises(ConfigError, match="group_size must be at least 2"):
        run_rlhf(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "b", algo="grpo", **{"rollout.group_size": 1}))
    with pytest.raises(ConfigError, match="multiple of --rollout.group_size"):
        run_rlhf(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "c", algo="rloo",
                            **{"rollout.batch_size": 6, "rollout.group_size": 4}))
    with pytest.raises(ConfigError, match="minibatch_size"):
        run_rlhf(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "c", algo="rloo",
                            **{"rollout.batch_size": 6, "rollout.group_size": 2, "ppo.minibatch_size": 4}))
    with pytest.raises(ConfigError, match="missing a reward"):
        run_rlhf(ppo_config(tiny_model_dir, "", prompts_file, tmp_path / "d"))


def test_policy_and_critic_are_clipped_separately_and_not_decayed():
    """A huge critic gradient must not shrink the policy's step (one joint clip would scale the policy's
    gradient by the critic's norm); AdamW's default weight decay (0.01) must not pull the adapters to zero."""
    from types import SimpleNamespace

    from posttrain.config import RLHFConfig
    from posttrain.stages.rlhf_steps import Optimisation

    policy, critic = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(4))
    roles = SimpleNamespace(parameter_groups=lambda: {"policy": [policy], "critic": [critic]}, dtype=torch.float32)
    config = RLHFConfig()
    config.ppo.max_grad_norm = 1.0
    optim = Optimisation(roles, config, 1, StandInAccelerator(torch.device("cpu")))
    assert all(group["weight_decay"] == 0.0 for group in optim.optimizer.param_groups)
    policy.grad, critic.grad = torch.full((4,), 0.25), torch.full((4,), 500.0)  # norms 0.5 and 1000
    seen = {}
    original = optim.optimizer.step

    def step():
        seen["policy"], seen["critic"] = policy.grad.norm().item(), critic.grad.norm().item()
        original()

    optim.optimizer.step = step
    norms = optim.step()
    assert norms == {"grad_norm_policy": pytest.approx(0.5), "grad_norm_critic": pytest.approx(1000.0)}
    assert seen["policy"] == pytest.approx(0.5) and seen["critic"] == pytest.approx(1.0, rel=1e-4)


CHAT_TEMPLATES = {
    "chatml": ("<|im_end|>", "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                             "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
    "llama3": ("<|eot_id|>", "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                             "{{ m['content'] | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
                             "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"),
    "gemma": ("<end_of_turn>", "{{ bos_token }}{% for m in messages %}<start_of_turn>"
                               "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] | trim }}"
                               "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"),
}


@pytest.mark.parametrize("template", sorted(CHAT_TEMPLATES))
def test_stop_tokens_come_from_the_chat_template(real_tokenizer_dir, template):
    """Responses end at the template's own end-of-turn token (Llama 3's <|eot_id|>, Gemma's <end_of_turn>), not
    only at EOS and ChatML's <|im_end|>."""
    from transformers import AutoTokenizer

    from posttrain.models import stop_token_ids

    end, text = CHAT_TEMPLATES[template]
    tokenizer = AutoTokenizer.from_pretrained(real_tokenizer_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
                                                                "<end_of_turn>", "<start_of_turn>"]})
    tokenizer.chat_template = text
    tokenizer.eos_token = "<|endoftext|>"
    stops = stop_token_ids(tokenizer)
    assert tokenizer.convert_tokens_to_ids(end) in stops
    assert tokenizer.eos_token_id in stops
    others = {t for t, _ in CHAT_TEMPLATES.values()} - {end}
    assert not {tokenizer.convert_tokens_to_ids(t) for t in others} & set(stops)


def test_training_log_probs_come_from_fp32_logits_with_a_bf16_base(tiny_model_dir, tiny_rm, prompts_file, tmp_path):
    """With the base in bf16, the vocabulary projection still runs in fp32 (bf16 logits move in steps of up to
    0.125 at typical sizes): the stage's log-probs equal an fp32 projection of the same hidden states, and not the
    bf16-rounded one."""
    from posttrain.generation import encode_prompts
    from posttrain.rl import logprobs_from_logits
    from posttrain.stages.rlhf_roles import POLICY, load_roles

    roles = load_roles(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "ppo", precision="bf16"),
                       torch.device("cpu"), critic=True)
    ids, _, _ = encode_prompts(roles.tokenizer, ["Name a fruit, please, and say why you like it."], 64, torch.device("cpu"))
    attn = torch.ones_like(ids)
    with torch.no_grad():
        (hidden,) = roles.hidden([POLICY], ids, attn)
        hidden = hidden * 40  # logits of the size a trained model has (the tiny random model's are near 0)
        ours = roles.logprobs(POLICY, hidden, ids, 3, 1.0)
        weight = roles.model.get_base_model().get_output_embeddings().weight
        fp32 = logprobs_from_logits(torch.nn.functional.linear(hidden[:, 2:-1].float(), weight.float()), ids[:, 3:])
        bf16 = logprobs_from_logits(torch.nn.functional.linear(hidden[:, 2:-1], weight).float(), ids[:, 3:])
    assert roles.model.get_base_model().dtype == torch.bfloat16
    torch.testing.assert_close(ours, fp32, rtol=0, atol=1e-4)
    assert (ours - bf16).abs().max() > 1e-3


def test_gradient_checkpointing_trains_the_same_weights(tiny_model_dir, tiny_rm, prompts_file, tmp_path):
    """With activations recomputed in the backward pass (the model in eval mode, policy and critic rows stacked
    in one pass, the first minibatch's graph kept across the scoring passes), the run ends with the weights of the
    run that keeps them: the recomputation runs the adapters its forward ran."""
    from safetensors.torch import load_file

    from posttrain.stages.rlhf import run_rlhf

    settings = {"precision": "fp32", "ppo.epochs": 2, "rollout.batch_size": 4, "ppo.minibatch_size": 2}
    run_rlhf(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "kept", **settings))
    run_rlhf(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "recomputed", gradient_checkpointing="true",
                        **settings))
    for name in ("adapter_model.safetensors", "critic/adapter_model.safetensors"):
        kept, recomputed = load_file(str(tmp_path / "kept" / name)), load_file(str(tmp_path / "recomputed" / name))
        assert all(torch.allclose(kept[k], recomputed[k], atol=1e-6) for k in kept), name
        assert any(not torch.equal(kept[k], torch.zeros_like(kept[k])) for k in kept if "lora_B" in k)


def test_minibatches_in_passes_of_two_train_the_same_weights_as_one_pass(tiny_model_dir, tiny_rm, prompts_file, tmp_path):
    """--ppo.micro_batch_size splits a minibatch of 4 responses into forward/backward passes of 2 accumulated into the
    same optimizer step (each token weighed the same): the adapters end where one pass a minibatch takes them, up to
    the order of floating-point sums (fp32), and the optimizer makes as many steps."""
    from safetensors.torch import load_file

    from posttrain.stages.rlhf import run_rlhf

    records = {}
    for micro in (4, 2):
        records[micro] = []
        run_rlhf(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / f"micro{micro}", **{
            "rollout.batch_size": 8, "ppo.minibatch_size": 4, "ppo.micro_batch_size": micro, "ppo.epochs": 2,
            "precision": "fp32"}), on_step=lambda roles, record, micro=micro: records[micro].append(record))
    assert [r["optimizer_steps"] for r in records[2]] == [r["optimizer_steps"] for r in records[4]] == [4.0, 4.0]
    for name in ("adapter_model.safetensors", "critic/adapter_model.safetensors", "critic/value_head.safetensors"):
        one, two = load_file(str(tmp_path / "micro4" / name)), load_file(str(tmp_path / "micro2" / name))
        assert all(torch.allclose(one[k], two[k], atol=1e-5, rtol=1e-4) for k in one), name
    start = load_file(str(tmp_path / "micro4" / "adapter_model.safetensors"))
    assert any(k for k in start if "lora_B" in k and start[k].abs().sum() > 0), "the policy did not train"


def test_micro_batches_must_divide_the_minibatch(tiny_model_dir, tiny_rm, prompts_file, tmp_path):
    from posttrain.stages.rlhf import run_rlhf
    from posttrain.stages.rlhf_steps import pass_size

    # 0: passes of 2 where the base is fp32 and they divide the minibatch; one pass with a bf16 base
    assert [pass_size(m, 0, fp32_base=True) for m in (1, 2, 3, 4, 8)] == [1, 2, 3, 2, 2]
    assert [pass_size(m, 0, fp32_base=False) for m in (1, 2, 3, 4, 8)] == [1, 2, 3, 4, 8]
    assert pass_size(4, 2, fp32_base=False) == 2
    with pytest.raises(ConfigError, match=r"--ppo.minibatch_size \(4\) must be a multiple of --ppo.micro_batch_size \(3\)"):
        run_rlhf(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "ppo", **{
            "rollout.batch_size": 8, "ppo.minibatch_size": 4, "ppo.micro_batch_size": 3}))


def _grouped_minibatch(roles, prompts: list[str], group: int, response_len: int = 5):
    """A minibatch of ``group`` consecutive responses to each prompt (left-padded prompts, random responses)."""
    from posttrain.stages.rlhf_steps import encode_prompts
    from posttrain.stages.rollout import Rollout

    rows = [{"prompt": p} for p in prompts for _ in range(group)]
    query, query_mask, _ = encode_prompts(roles.tokenizer, [r["prompt"] for r in rows], 64, roles.device)
    generator = torch.Generator().manual_seed(0)
    response = torch.randint(10, 1000, (len(rows), response_len), generator=generator)
    mask = torch.ones_like(response, dtype=torch.bool)
    mask[1, 3:] = False  # one shorter response
    rollout = Rollout(query, query_mask, response, mask, mask.sum(1), torch.ones(len(rows), dtype=torch.bool),
                      torch.zeros(response.shape), rows, group)
    return rollout, rollout.rows(torch.arange(len(rows)))


@pytest.mark.parametrize("critic", ["none", "stacked"])
def test_a_groups_prompt_runs_once_with_the_numbers_and_gradients_of_whole_rows(tiny_model_dir, tiny_rm, prompts_file,
                                                                                 tmp_path, critic):
    """Consecutive responses to one prompt run the prompt once and continue from its keys and values: the body sees
    each prompt's tokens once, and log-probs, values and the policy's gradients are those of passes over the whole
    rows (fp32, to summation order). With a stacked critic the prompt pass keeps one row block per role."""
    from posttrain.stages.rlhf_roles import POLICY, load_roles

    roles = load_roles(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "ppo", precision="fp32"),
                       torch.device("cpu"), critic=critic == "stacked")
    assert roles._critic_stacked == (critic == "stacked")
    _, batch = _grouped_minibatch(roles, ["Name a fruit.", "What is the capital of France, in one word?"], group=3)
    seen = []
    embed = roles.model.get_base_model().get_input_embeddings()
    hook = embed.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape)))

    def run(share: bool):
        roles.share_prompts = share
        seen.clear()
        roles.zero_grad(set_to_none=True)
        logprobs, _, values = roles.forward(batch, temperature=1.0, with_entropy=False)
        loss = logprobs.masked_fill(~batch.mask, 0).sum() + (0 if values is None else values.masked_fill(~batch.mask, 0).sum())
        loss.backward()
        grads = {n: p.grad.clone() for n, p in roles.named_parameters() if p.grad is not None}
        return logprobs.detach(), None if values is None else values.detach(), grads, list(seen)

    plain, shared = run(False), run(True)
    hook.remove()
    blocks = 2 if critic == "stacked" else 1
    width = batch.ids.shape[1]
    assert plain[3] == [(6 * blocks, width)]
    # two prompts once per role block, then every row's response columns
    assert shared[3] == [(2 * blocks, batch.context), (6 * blocks, width - batch.context)]
    torch.testing.assert_close(shared[0], plain[0], rtol=1e-5, atol=1e-5)
    if critic == "stacked":
        torch.testing.assert_close(shared[1], plain[1], rtol=1e-5, atol=1e-5)
    assert plain[2].keys() == shared[2].keys() and any(POLICY in name for name in plain[2])
    if critic == "stacked":  # the critic's LoRA and the value head are compared too
        assert any(".critic." in name for name in plain[2]) and any("value_head" in name for name in plain[2])
    for name, grad in plain[2].items():
        torch.testing.assert_close(shared[2][name], grad, rtol=1e-4, atol=1e-6)


def test_minibatches_keep_a_groups_responses_together_and_rows_alone_are_shuffled_as_before():
    from posttrain.stages.rollout import Rollout

    def rollout(rows: int, group: int) -> Rollout:
        ids = torch.zeros(rows, 2, dtype=torch.long)
        return Rollout(ids, torch.ones_like(ids), ids, ids.bool(), ids.sum(1), ids[:, 0].bool(), ids.float(),
                       [{}] * rows, group)

    torch.manual_seed(3)
    order = rollout(12, 4).shuffled()
    assert sorted(order.tolist()) == list(range(12))
    for start in range(0, 12, 4):  # each group whole, its rows in order, the groups shuffled
        assert order[start:start + 4].tolist() == list(range(int(order[start]), int(order[start]) + 4))
    assert order.tolist() != list(range(12))
    torch.manual_seed(3)
    single = rollout(12, 1).shuffled()
    torch.manual_seed(3)
    assert single.tolist() == torch.randperm(12).tolist()


def test_the_reward_model_scores_a_groups_responses_with_the_prompt_run_once(tiny_model_dir, tiny_rm, prompts_file,
                                                                            tmp_path):
    """The RL stage's reward pass runs the columns every row's prompt covers once per group of responses to one
    prompt, and scores each response as a pass over its whole row does (fp32)."""
    from posttrain.stages.rlhf_rewards import RewardModelSource, Responses
    from posttrain.stages.rlhf_roles import load_roles

    roles = load_roles(ppo_config(tiny_model_dir, tiny_rm, prompts_file, tmp_path / "ppo", precision="fp32"),
                       torch.device("cpu"), critic=False)
    prompts = [[{"role": "user", "content": q}] for q in ("Name a fruit.", "Say hello, please.") for _ in range(3)]
    texts = ["An apple.", "A pear, ripe.", "Plums", "Hello!", "Hi there, friend.", "Hey"]
    batch = Responses(prompts, [{"prompt": p} for p in prompts], texts, [[]] * 6, 1, 1)
    seen = []
    hook = roles.model.get_base_model().get_input_embeddings().register_forward_hook(
        lambda module, args, out: seen.append(len(args[0])))
    shared = RewardModelSource(roles)(batch)
    shared_calls, seen[:] = list(seen), []
    roles.share_prompts = False
    whole = RewardModelSource(roles)(batch)
    hook.remove()
    assert shared_calls == [2, 6] and seen == [6]
    torch.testing.assert_close(shared, whole, rtol=1e-5, atol=1e-5)
    assert len(set(whole.tolist())) == 6
