"""Every role of the RL stage on one copy of the base weights.

    policy     LoRA adapter "policy" (from the SFT adapter when given one), trainable
    reference  the starting policy, frozen: a frozen copy "reference" of the SFT adapter, or adapters off
    critic     (PPO only) LoRA adapter "critic" + a value head, initialised from the reward model, trainable; or, with
               ``--ppo.critic shared``, a value head alone on the policy's hidden states (no adapter, no pass of its own)
    reward     LoRA adapter "reward" + the reward head, frozen (when a reward model is given)

A reward model that reads the first N decoder layers (``posttrain rm --layers``) runs over those N alone, and so does
a critic made from it, in a pass of its own (Roles.critic_layers); a critic over every layer shares the policy's.

:func:`load_roles` loads the base once (through posttrain.models.load_model) and puts the roles on it;
:class:`Roles` runs them. A forward pass runs its rows through one role's adapter, or stacks the same rows once
per role and runs each block through its own adapter (rlhf_lora.py), so policy and critic train from one pass.
Heads read the transformer body's last hidden state, so no role pays for the vocabulary projection it does not use.
If the reward model was trained on a different base, it is loaded separately and scores decoded text.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from posttrain.attention import attention_for
from posttrain.config import LoraSection, RLHFConfig
from posttrain.generation import (
    SharedPrompts,
    hidden_sharing_prompts,
    kv_cache_shareable,
    packed_weight,
    position_ids,
    sample,
    shared_prompts,
    swapped_weights,
)
from posttrain.memory import enable_gradient_checkpointing
from posttrain.models import (
    adapter_base,
    belongs_to,
    frozen_base_dtype,
    first_layers,
    is_adapter_folder,
    layer_index,
    load_model,
    lora_config,
    read_metadata,
    resolve_model,
    stop_token_ids,
)
from posttrain.rl import logprobs_from_logits, entropy_from_logits
from posttrain.stages.common import StageError, log
from posttrain.stages.rlhf_lora import RowAdapters, blocks
from posttrain.stages.rollout import Minibatch

POLICY, REFERENCE, CRITIC, REWARD = "policy", "reference", "critic", "reward"


def load_lora_weights(model, folder: Path, name: str, trainable: bool) -> None:
    """Add the LoRA weights saved in ``folder`` to ``model`` as adapter ``name``, with the new-token embedding
    rows it trained, if any.

    Works across task types: the LoRA matrices of a sequence-classification reward model land on the
    same transformer layers of a causal-LM PeftModel; heads are loaded separately.
    """
    from peft import LoraConfig, set_peft_model_state_dict
    from safetensors.torch import load_file

    saved = json.loads((folder / "adapter_config.json").read_text())
    config = LoraConfig(
        r=saved["r"], lora_alpha=saved["lora_alpha"], lora_dropout=0.0, target_modules=saved["target_modules"],
        bias=saved.get("bias", "none"), use_rslora=saved.get("use_rslora", False), task_type="CAUSAL_LM",
        trainable_token_indices=saved.get("trainable_token_indices"),
    )
    model.add_adapter(name, config)
    state = {k: v for k, v in load_file(str(folder / "adapter_model.safetensors")).items()
             if "lora_" in k or "trainable_tokens" in k}
    try:
        result = set_peft_model_state_dict(model, state, adapter_name=name)
    except KeyError as missing:
        raise StageError(f"{folder}: the adapter has no weights for {missing} that the model's other adapters have "
                         "(new token rows); train the reward model and the policy from the same base or SFT "
                         "checkpoint.") from None
    missing = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if missing:
        raise StageError(f"{folder}: {len(missing)} LoRA tensors do not fit the model (e.g. {missing[0]}); "
                         "was it trained on a different base model?")
    for param_name, param in model.named_parameters():
        if belongs_to(param_name, name):
            param.requires_grad_(trainable)


def load_head(folder: Path, hidden_size: int) -> nn.Linear:
    """The scalar head a reward-model checkpoint saved in reward_head.safetensors."""
    from safetensors.torch import load_file

    file = folder / "reward_head.safetensors"
    if not file.is_file():
        raise StageError(f"{folder} has no reward_head.safetensors: is it a reward-model checkpoint from `posttrain rm`?")
    state = load_file(str(file))
    head = nn.Linear(hidden_size, 1, bias="bias" in state)
    if state["weight"].shape != head.weight.shape:
        raise StageError(f"{folder}: the reward head has shape {tuple(state['weight'].shape)}, the policy's hidden size is {hidden_size}; "
                         "the reward model was trained on a different base.")
    head.load_state_dict(state)
    return head.float()


def zero_head(hidden_size: int) -> nn.Linear:
    """A scalar head that predicts 0 everywhere: the value head where no reward model's head can seed it."""
    head = nn.Linear(hidden_size, 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


class Roles(nn.Module):
    """The shared base with its adapters and heads; the trainable parts are the policy and, for PPO, the critic
    and its value head. Built by :func:`load_roles`."""

    def __init__(self, model, tokenizer, base_name: str, reference_adapter: str | None, value_head: nn.Module | None,
                 device: torch.device, dtype: torch.dtype, critic: str = "separate", critic_layers: int = 0):
        super().__init__()
        self.model, self.tokenizer, self.base_name = model, tokenizer, base_name
        self.reference_adapter = reference_adapter  # None: the reference is the base with adapters off
        self.value_head = value_head
        self.has_critic = value_head is not None
        # the critic's own LoRA adapter, run as a second row block beside the policy's; without it (a shared critic)
        # the value head reads the policy's hidden states, and the value loss trains the policy's adapter too
        self.critic_adapter = self.has_critic and critic == "separate"
        # how many decoder layers the critic adapter runs (0: all): a critic made from a reward model that reads the
        # first N layers (``posttrain rm --layers``) reads the same N, in a pass of its own that costs N/total of one
        self.critic_layers = critic_layers if self.critic_adapter else 0
        self.device, self.dtype = device, dtype
        self.reward_head: nn.Module | None = None  # the reward model's head, when it shares this base
        self.reward_pooling = "last"  # which hidden states that head reads (reward_model.pool)
        self.reward_layers = 0  # how many decoder layers it reads (0: all)
        self.separate_reward = None  # a RewardModel on another base, when it does not
        self._attention = model.get_base_model().config._attn_implementation
        # rows that share a prompt (a group's responses) run it once, see SharedPrompts; off under gradient
        # checkpointing, whose recomputed layers would write the prompt's KV cache a second time, and for caches
        # with linear-attention or recurrent state
        self.share_prompts = kv_cache_shareable(model.get_base_model().config)
        self._trainable = (POLICY, CRITIC) if self.critic_adapter else (POLICY,)
        # each adapter parameter with whether it trains, decided once (the role switches of _peft_role re-apply it)
        self._lora_params = [(p, self._trains(n)) for n, p in model.named_parameters()
                             if "lora_" in n or "trainable_tokens" in n]
        self._restore_trainable()
        from peft.tuners.tuners_utils import BaseTunerLayer
        from peft.utils.other import AuxiliaryTrainingWrapper

        self._tuner_layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
        # adapters by row blocks (several roles in one pass) where every adapter layer is plain LoRA; else
        # peft's own forward, one role at a time
        auxiliary = any(isinstance(m, AuxiliaryTrainingWrapper) for m in model.modules())
        plain = not auxiliary and RowAdapters.supports(self._tuner_layers)
        self._rows = RowAdapters(self._tuner_layers, POLICY) if plain else None
        if self.dtype == torch.bfloat16:
            # every adapter forward runs under bf16 autocast (see _hidden), so peft's cast of each LoRA input
            # to the adapters' fp32 would only add an activation-sized copy there and back
            for module in self._tuner_layers:
                module.cast_input_dtype_enabled = False
        self.model.eval()  # no dropout anywhere: rollout and training log-probs must agree
        self._packed_head = None  # the frozen vocabulary projection, packed for decoding at the first rollout
        self._head_fp32: torch.Tensor | None = None  # and in fp32 for training log-probs (see logprobs)
        self.stop_ids = stop_token_ids(self.tokenizer)

    # -- helpers ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def role(self, name: str | None) -> Iterator[None]:
        """Run the block with adapter ``name`` active (None: adapters off)."""
        if self._rows is None:
            with self._peft_role(name):
                yield
        else:
            with self._rows.use(blocks([name])):
                yield

    @contextlib.contextmanager
    def _peft_role(self, name: str | None) -> Iterator[None]:
        if name is None:
            with self.model.disable_adapter():
                yield
        else:
            self.model.set_adapter(name)
            self._restore_trainable()
            yield

    def recompute_context(self):
        """A context manager that puts back the adapters in force now, for a layer's recomputation in the backward
        pass (gradient checkpointing), which runs after the forward's own context has ended."""
        if self._rows is not None:
            return self._rows.use(list(self._rows.plan))
        return self._peft_role(self.model.active_adapter)

    def _restore_trainable(self) -> None:
        """peft's set_adapter makes only the active adapter trainable, which would cut the gradient of a policy
        graph built before the critic's turn; trainability is ours to keep: policy and critic, nothing else."""
        for param, trains in self._lora_params:
            param.requires_grad_(trains)

    def _trains(self, param_name: str) -> bool:
        """Whether a LoRA parameter is trained: the policy's, and the critic's on the layers the critic runs."""
        if belongs_to(param_name, CRITIC):
            return CRITIC in self._trainable and (not self.critic_layers or layer_index(param_name) < self.critic_layers)
        return any(belongs_to(param_name, name) for name in self._trainable)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The trained parameters by role, each clipped on its own: "policy" (its LoRA and new token rows) and, with
        a critic, "critic" (its LoRA, if it has one, and the value head). A shared critic's value loss also reaches
        the policy's LoRA through the shared pass, and that share is clipped with the policy. One clip over the head
        and the policy (TRL's PPOTrainer clips every parameter together) was measured and not taken: the head's
        gradient took most of the joint norm, the policy's steps shrank (KL 7.1 and 4.0 against 11.1 and 9.2) and it
        won 0.708 and 0.583 against 0.917 and 0.542 (draw 1, seed 0, README: Online RL)."""
        groups = {POLICY: [p for n, p in self.model.named_parameters() if belongs_to(n, POLICY)]}
        if self.has_critic:
            groups[CRITIC] = [p for n, p in self.model.named_parameters() if belongs_to(n, CRITIC) and self._trains(n)]
            groups[CRITIC] += list(self.value_head.parameters())
        return groups

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for group in self.parameter_groups().values() for p in group]

    def _set_attention(self, implementation: str) -> None:
        causal_lm = self.model.get_base_model()
        if causal_lm.config._attn_implementation != implementation:
            causal_lm.set_attn_implementation(implementation)

    @property
    def _critic_stacked(self) -> bool:
        """Whether the critic adapter runs as a second row block of the policy's pass (a critic over every layer),
        rather than in a pass of its own over its first ``critic_layers`` layers."""
        return self.critic_adapter and not self.critic_layers

    def _hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: int = 0,
                shared: SharedPrompts | None = None, row_blocks=None) -> torch.Tensor:
        """The body's last hidden states (through its final norm) of a pass over its first ``layers`` decoder
        layers (0: all). With ``shared``, each run of rows with the same prompt runs it once (see SharedPrompts;
        ``row_blocks(rows)``: the row-block plan for that many rows per role, for stacked roles)."""
        causal_lm = self.model.get_base_model()
        # for short sequences, eager attention's backward is cheaper on a CPU than the fused kernel's (about 12%
        # of a training pass at 70 tokens); longer ones keep SDPA's linear memory. Scoring passes take the same
        # kernel as training passes, so old and new log-probs of unchanged weights agree to the last bit.
        self._set_attention(attention_for(self.device.type, input_ids.shape[1], self._attention))
        body = causal_lm.base_model
        # with a bf16 base, autocast runs the fp32 adapters' products in bf16 too (their weights and gradients
        # stay fp32): about 20% off a training pass on a CPU, and no fp32 copies of the activations
        with self._autocast(), first_layers(body, layers):
            if shared is None:
                return body(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids(attention_mask), use_cache=False).last_hidden_state
            # each distinct prompt once, its KV cache kept (with its graph)
            return hidden_sharing_prompts(body, input_ids, attention_mask, shared, row_blocks)

    # -- the role forwards -------------------------------------------------------------------------

    def rollout(self, query: torch.Tensor, query_mask: torch.Tensor, max_new_tokens: int, temperature: float,
                uniforms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampled responses (batch, response_len) of the policy and the log-probs of their tokens under the
        weights that drew them; see posttrain.generation.sample (``uniforms``: each row's draws)."""
        self._set_attention(self._attention)  # the same kernel every step, so a resumed run samples alike
        with self._merged_policy(), self._autocast():
            return sample(self.model, self.tokenizer, query, query_mask, max_new_tokens, temperature, with_logprobs=True,
                          uniforms=uniforms)

    def _autocast(self):
        if self.dtype != torch.bfloat16:
            return contextlib.nullcontext()  # (not every device type has an autocast, even a disabled one)
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    @contextlib.contextmanager
    def _merged_policy(self) -> Iterator[None]:
        """The policy with its LoRA deltas folded into temporary copies of the base weights, adapters off.

        Decoding is a few rows per step, where the unmerged adapter's extra small products cost about a third
        of the step. The base tensors are only swapped out, never written, so they cannot drift; the copies
        (on a CPU in bf16, prepacked for oneDNN: see swapped_weights) are freed when the block ends. Log-probs
        for PPO are recomputed by the training forward (unmerged), so the rounding of the merged weights only
        touches which tokens are drawn. Plain LoRA layers (the ones the row-block forward takes, see rlhf_lora)
        fold; otherwise (DoRA, new token rows) sampling runs through the unmerged adapter.
        """
        if self._rows is None:
            with self.role(POLICY):
                yield
            return
        layers = [m for m in self._tuner_layers if POLICY in m.lora_A]

        def weights():
            for layer in layers:
                base = layer.base_layer.weight
                with torch.no_grad():  # W + scale * B @ A in the base's dtype, rounded once
                    weight = torch.addmm(base, layer.lora_B[POLICY].weight.to(base.dtype), layer.lora_A[POLICY].weight.to(base.dtype),
                                         alpha=layer.scaling[POLICY])
                yield layer.base_layer, weight
            head = self.model.get_base_model().get_output_embeddings()
            if self._packed_head is None:  # frozen: packed once per run
                self._packed_head = packed_weight(head.weight)
            if self._packed_head is not None:
                yield head, self._packed_head

        with swapped_weights(weights()), self.role(None):
            yield

    def hidden(self, roles: list[str | None], input_ids, attention_mask, layers: int = 0,
               context: int = 0) -> tuple[torch.Tensor, ...]:
        """The body's last hidden states of the same rows under each role in ``roles``, from one batched pass over
        the first ``layers`` decoder layers (0: all; the reward model's and the critic's count, see Roles).

        The rows are stacked once per role and each block runs through its own adapter (see rlhf_lora), so
        the base's products run once over all of them. Each row's numbers are the same as from a pass of that
        role alone: rows do not mix in any product. ``context``: the prompt's columns; consecutive rows with the
        same prompt then run it once (SharedPrompts)."""
        stacked = self._rows is not None and len(roles) > 1
        shared = shared_prompts(input_ids, attention_mask, context if self.share_prompts else 0,
                                copies=len(roles) if stacked else 1)
        if not stacked:
            out = []
            for name in roles:
                with self.role(name):
                    out.append(self._hidden(input_ids, attention_mask, layers, shared))
            return tuple(out)
        n = len(input_ids)
        with self._rows.use(blocks(roles, n)):
            hidden = self._hidden(input_ids.repeat(len(roles), 1), attention_mask.repeat(len(roles), 1), layers, shared,
                                  row_blocks=lambda rows: self._rows.use(blocks(roles, rows)))
        return hidden.split(n)

    def logprobs(self, role: str | None, hidden: torch.Tensor, input_ids, context_len: int, temperature: float,
                 with_entropy: bool = False, entropy_grad: bool = True):
        """Log-probs (batch, response_len) of the response tokens from the hidden states of ``role`` (policy or
        reference); the vocabulary projection runs as that role too (its new-token rows, if any).

        ``with_entropy`` also returns the entropy at each position; ``entropy_grad=False`` computes it as a
        statistic only (no graph through the softmax over the vocabulary)."""
        hidden = hidden[:, context_len - 1:-1]
        # a 2-D product: a sliced 3-D input makes the vocabulary projection a batched matmul that copies the
        # weight per row (10x slower on CPU in bf16)
        flat = hidden.reshape(-1, hidden.shape[-1])
        head = self.model.get_base_model().get_output_embeddings()
        if self.dtype != torch.float32 and type(head) is nn.Linear:
            # fp32 logits from the half-precision hidden states: rounded to bf16, logits of typical size move in
            # steps of 0.06-0.125, measured as 0.017 nats of noise on each token's log-prob and 2.5% on the PPO
            # ratio (bench/rl_precision.py). The frozen weight's fp32 copy is made once.
            if self._head_fp32 is None:
                self._head_fp32 = head.weight.detach().float()
            logits = F.linear(flat.float(), self._head_fp32, None if head.bias is None else head.bias.float())
        else:  # fp32 already, or a head with trained token rows: run it as the role
            with self.role(role):
                logits = head(flat)
        logits = logits.float().view(*hidden.shape[:2], -1) / temperature
        logprobs = logprobs_from_logits(logits, input_ids[:, context_len:])
        if not with_entropy:
            return logprobs
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            return logprobs, entropy_from_logits(logits)

    def values(self, hidden: torch.Tensor, context_len: int) -> torch.Tensor:
        """Critic values (batch, response_len) from the critic's hidden states: V of the state before each response token."""
        return self.value_head(hidden[:, context_len - 1:-1].float()).squeeze(-1)

    def forward(self, batch: Minibatch, temperature: float, entropy_grad: bool = False, with_entropy: bool = True):
        """The training forward of a minibatch: policy log-probs and entropy (None without ``with_entropy``), and
        critic values (None without a critic), (rows, width) each, from one shared pass, with graphs when grad is
        enabled. A shared critic's values come from the policy's own hidden states.

        Scoring calls it too (under no_grad) with the minibatch views the first epoch trains on, so the old
        log-probs of a row are computed exactly as its first training pass computes them."""
        names = [POLICY, CRITIC] if self._critic_stacked else [POLICY]
        hidden = self.hidden(names, batch.ids, batch.attn, context=batch.context)
        logprobs, entropy = self.logprobs(POLICY, hidden[0], batch.ids, batch.context, temperature,
                                          with_entropy=True, entropy_grad=entropy_grad) if with_entropy else \
            (self.logprobs(POLICY, hidden[0], batch.ids, batch.context, temperature), None)
        values = self.values(self._critic_hidden(hidden, batch), batch.context) if self.has_critic else None
        return logprobs, entropy, values

    def _critic_hidden(self, hidden: tuple[torch.Tensor, ...], batch: Minibatch) -> torch.Tensor:
        """The states the value head reads: the critic's block of a stacked pass, its own pass over its first
        ``critic_layers`` layers, or (a shared critic) the policy's."""
        if self.critic_adapter and self.critic_layers:
            return self.hidden([CRITIC], batch.ids, batch.attn, self.critic_layers, context=batch.context)[0]
        return hidden[-1]

    # The base's products are not the same to the bit for a row in a pass of n rows and in a pass of 2n (measured
    # on this CPU in bf16: up to 0.4 nats on a token's log-prob), though they are wherever the row sits in a pass of
    # a given size. So the scoring passes have the training pass's number of row blocks: policy and critic train
    # in one stacked pass (2 blocks), so policy and reference are scored in one too; a policy alone (no critic, a
    # shared one, or a critic in a short pass of its own) is scored alone. Then the old log-probs are the first
    # epoch's training log-probs to the bit (the PPO ratio is 1 before the first update) and, at the first step, the
    # reference's too (KL 0).

    @torch.no_grad()
    def score(self, batch: Minibatch, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(old policy log-probs, reference log-probs, critic values or None) of a minibatch view, (rows, width) each."""
        ref = self.reference_adapter
        if self._critic_stacked:
            policy, reference = self.hidden([POLICY, ref], batch.ids, batch.attn, context=batch.context)
            (critic,) = self.hidden([CRITIC], batch.ids, batch.attn, context=batch.context)  # values need no bitwise match
        else:
            (policy,) = self.hidden([POLICY], batch.ids, batch.attn, context=batch.context)
            (reference,) = self.hidden([ref], batch.ids, batch.attn, context=batch.context)
            critic = self._critic_hidden((policy,), batch)  # its own short pass, or a shared critic's: the policy's
        values = self.values(critic, batch.context) if self.has_critic else None
        return (self.logprobs(POLICY, policy, batch.ids, batch.context, temperature),
                self.logprobs(ref, reference, batch.ids, batch.context, temperature), values)

    @torch.no_grad()
    def reference_logprobs(self, batch: Minibatch, temperature: float) -> torch.Tensor:
        """Reference log-probs (rows, width) of a view whose policy log-probs came from a training pass: from a pass
        with as many row blocks as that one (see above), beside the critic when there is one."""
        names = [self.reference_adapter, CRITIC] if self._critic_stacked else [self.reference_adapter]
        hidden = self.hidden(names, batch.ids, batch.attn, context=batch.context)[0]
        return self.logprobs(self.reference_adapter, hidden, batch.ids, batch.context, temperature)


def same_base(a: str, b: str) -> bool:
    try:
        return Path(resolve_model(a)).resolve() == Path(resolve_model(b)).resolve()
    except Exception:  # noqa: BLE001 - unresolvable names compare as given
        return a == b


def load_roles(config: RLHFConfig, device: torch.device, critic: bool) -> Roles:
    """Load the base once and put every role on it: policy, reference, the reward model (when it shares the base)
    and, with ``critic``, the critic and value head (from the reward model when there is one, else fresh; with
    ``ppo.critic`` shared, the value head alone, on the policy's hidden states).

    A quantized base (``--quantization``, QLoRA) has bitsandbytes layers: the row-block forward and the folded
    rollout weights need plain linear layers, so roles then switch through peft and rollouts run the unfolded
    adapter (see Roles)."""
    from posttrain.plan import checkpointing_wanted

    dtype = frozen_base_dtype(device, config.precision)
    rm_folder = Path(config.reward_model) if config.reward_model else None
    if rm_folder is not None and (not is_adapter_folder(rm_folder) or read_metadata(rm_folder).get("stage") not in ("rm", "reward")):
        raise StageError(f"--reward-model {rm_folder} is not a reward-model checkpoint (run `posttrain rm` to make one).")

    # 1. the base model, once, and the policy adapter on it; the reference is its starting point
    if is_adapter_folder(config.model):
        loaded = load_model(config.model, dtype=dtype, device=device, adapter_name=POLICY, trainable=True,
                            quantization=config.quantization)
        load_lora_weights(loaded.model, Path(config.model), REFERENCE, trainable=False)
        reference = REFERENCE
        log(f"policy and reference start from the adapter in {config.model}")
    else:
        fresh = LoraSection(**{**vars(config.lora), "dropout": 0.0})
        loaded = load_model(config.model, dtype=dtype, device=device, adapter_name=POLICY, fresh=fresh,
                            quantization=config.quantization)
        reference = None  # adapters off
        log("policy is a fresh LoRA adapter; the reference is the base model (adapters off)")
    model, tokenizer = loaded.model, loaded.tokenizer
    hidden = model.get_base_model().config.hidden_size
    log(f"base weights in {str(dtype).removeprefix('torch.')}; adapters, heads and optimizer in float32")

    # 2. reward model and critic: on the shared base when the reward model was trained on it
    rm_on_base = rm_folder is not None and same_base(adapter_base(rm_folder), loaded.base_model)
    from posttrain.stages.reward_model import checkpoint_layers

    total_layers = model.get_base_model().config.num_hidden_layers
    rm_layers = checkpoint_layers(rm_folder) if rm_on_base else 0
    rm_layers = rm_layers if rm_layers < total_layers else 0  # 0: every layer
    critic_adapter = critic and config.ppo.critic == "separate"
    value_head = None
    if critic and not critic_adapter:
        # as the separate critic's head: from the reward model's head where it shares the base (it then reads the
        # policy's hidden states where it was trained on the reward adapter's), else at zero. Measured (draw 0, seed 0,
        # README: Online RL): 0.667 and 0.719 win-rate against the separate critic's 0.896 and 0.740, in 0.64 of its
        # time; from zero 0.719 and 0.500; the head alone trained (the hidden states detached) 0.812 and 0.594. A
        # reward model of fewer layers read other states than the policy's last ones: its head does not carry over.
        from_rm = rm_on_base and not rm_layers
        value_head = (load_head(rm_folder, hidden) if from_rm else zero_head(hidden)).to(device)
        log("the critic is a value head on the policy's hidden states (--ppo.critic shared): no adapter of its own")
    if rm_on_base:
        _check_tokenizer(rm_folder, tokenizer)
        load_lora_weights(model, rm_folder, REWARD, trainable=False)
        if critic_adapter:
            load_lora_weights(model, rm_folder, CRITIC, trainable=True)
            # the reward model's head predicts raw scores where the returns are normalised (value loss 7-11 at step
            # 1), yet starting it at zero, the scale-correct choice, won less over 4 task-seeds (0.78 against 0.81
            # mean win-rate; 0.76 with GAE lambda 1 too): its per-token scores act as a dense reward. README, Online RL
            value_head = load_head(rm_folder, hidden).to(device)
        log(f"the reward model shares the base weights (adapter '{REWARD}' from {rm_folder})"
            + (f"; the critic starts from it (adapter '{CRITIC}')" if critic_adapter else ""))
    elif critic_adapter:
        model.add_adapter(CRITIC, lora_config(LoraSection(**{**vars(config.lora), "dropout": 0.0})))
        value_head = zero_head(hidden).to(device)
    roles = Roles(model, tokenizer, loaded.base_model, reference, value_head, device, dtype, config.ppo.critic,
                  critic_layers=rm_layers)  # 0 without a reward model on this base; unused without a critic adapter
    if checkpointing_wanted("rlhf", config):
        # the model stays in eval mode (no dropout), and a layer's recomputation in the backward pass must run the
        # adapters its forward ran: recompute_context puts them back
        enable_gradient_checkpointing(model, recompute_context=roles.recompute_context, in_eval_mode=True)
        roles.share_prompts = False
        log("gradient checkpointing: activations are recomputed in the backward pass")
    if rm_on_base:
        from posttrain.stages.reward_model import checkpoint_pooling

        roles.reward_head = load_head(rm_folder, hidden).to(device).requires_grad_(False)
        roles.reward_pooling = checkpoint_pooling(rm_folder)
        roles.reward_layers = rm_layers
        if rm_layers:
            log(f"the reward model reads the first {rm_layers} of {total_layers} layers"
                + (", and so does the critic made from it (a pass of its own)" if critic_adapter else ""))
    elif rm_folder is not None:
        from posttrain.stages.reward_model import load_reward_model

        log(f"the reward model was trained on {adapter_base(rm_folder)}, not {loaded.base_model}: loading it separately "
            "(a second copy of weights) and scoring responses from text")
        roles.separate_reward = load_reward_model(rm_folder, device=device)
    return roles


def _check_tokenizer(rm_folder: Path, tokenizer) -> None:
    from transformers import AutoTokenizer

    rm_tokenizer = AutoTokenizer.from_pretrained(rm_folder)
    if rm_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise StageError(f"the reward model in {rm_folder} uses a different tokenizer ({len(rm_tokenizer)} tokens) from the "
                         f"policy ({len(tokenizer)} tokens) on the same base; train the reward model from the same "
                         "base or SFT checkpoint as the policy.")
