"""A trained reward model: loading a ``posttrain rm`` checkpoint and reading the reward of a sequence.

The checkpoint ``posttrain rm`` writes:

    adapter_config.json, adapter_model.safetensors  a peft SEQ_CLS adapter: LoRA on the transformer's linear layers,
                                                    the head (``score``) in modules_to_save
    reward_head.safetensors                         the head alone: "weight" (1, hidden) and "bias" when it has one
    tokenizer files, posttrain.json                 stage "rm", base_model, reward_pooling, reward_layers,
                                                    reward_mean/reward_std on held-out pairs

The reward model runs the first ``reward_layers`` decoder layers of its base (then the base's final norm): the layers
above were dropped before the adapter was made (``posttrain rm --layers``; 0 or absent: all of them).
``PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=1,
num_hidden_layers=reward_layers), folder)`` loads it (its own forward reads the last token, which is this reward
only for ``reward_pooling`` "last"); the PPO stage
instead puts the LoRA matrices on its own copy of the base as one more adapter and reads the head from
reward_head.safetensors, so the reward model costs no second copy of the base weights.

The reward of a prompt + response is the head applied to one pooled hidden state (see :func:`pool`): the mean
over the response's tokens ("response", the default), over every token of the rendering ("mean") or the last
token's ("last", what TRL and transformers' sequence classifiers read; checkpoints without ``reward_pooling`` are
read so), in training, in ``score`` and in the RL stage alike. The means generalised better than the last token from
small preference sets, and the response's alone pays less for length (README: Quality on data we did not write).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from posttrain.data import encode_response, paired_prompt, render_prompt
from posttrain.models import ModelError, is_adapter_folder, load_model
from posttrain.padding import pad

HEAD_FILE = "reward_head.safetensors"
HEAD_NAMES = ("score", "classifier")  # what transformers calls the head of a sequence-classification model
POOLINGS = ("mean", "response", "last")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str,
         response_start: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, hidden) features the reward head reads, from right-padded (batch, seq_len, hidden) states.

    "last": the state of each row's last attended token. "mean": the mean over its attended tokens, prompt and
    response, in float32 (a bf16 sum over hundreds of tokens would round): the head is linear, so this is the mean
    of per-token rewards. Under causal attention the prompt's states do not depend on the response, so within a
    pair they cancel up to the weight the lengths give them, and the mean does not grow with length the way a sum
    would. "response": the mean over the response's tokens alone, the positions from ``response_start`` (batch,)
    on (see :func:`reward_model_rows`): no prompt states to dilute the response's, and no weight that changes with
    the response's length.
    """
    if pooling == "last":
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        last = (positions * attention_mask.long()).argmax(-1)
        return hidden[torch.arange(len(last), device=hidden.device), last]
    if pooling == "mean":
        return _masked_mean(hidden, attention_mask.bool())
    if pooling == "response":
        if response_start is None:
            raise ValueError("reward pooling 'response' needs each row's response_start")
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        return _masked_mean(hidden, attention_mask.bool() & (positions >= response_start.to(hidden.device)[:, None]))
    raise ValueError(f"unknown reward pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(batch, hidden) float32 mean of ``hidden`` (batch, seq_len, hidden) over the positions ``mask`` keeps."""
    weights = mask.float().unsqueeze(-1)
    return (hidden.float() * weights).sum(1) / weights.sum(1).clamp(min=1)


def checkpoint_pooling(folder: str | Path) -> str:
    """How a reward-model checkpoint reads its reward ("last" for checkpoints written before the choice existed)."""
    from posttrain.models import read_metadata

    pooling = read_metadata(folder).get("reward_pooling", "last")
    if pooling not in POOLINGS:
        raise ModelError(f"{folder}/posttrain.json: reward_pooling {pooling!r} is not one of {', '.join(POOLINGS)}.")
    return pooling


def checkpoint_layers(folder: str | Path) -> int:
    """How many decoder layers a reward-model checkpoint runs (0, for checkpoints written before the choice existed:
    all of them)."""
    from posttrain.models import read_metadata

    layers = read_metadata(folder).get("reward_layers", 0)
    if not isinstance(layers, int) or layers < 0:
        raise ModelError(f"{folder}/posttrain.json: reward_layers {layers!r} is not a count of layers.")
    return layers


def body_and_head(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(transformer body, scalar head) of a sequence-classification model, with or without peft around it."""
    seqcls = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(seqcls, seqcls.base_model_prefix)
    for name in HEAD_NAMES:
        if hasattr(seqcls, name):
            return body, getattr(seqcls, name)
    raise ModelError(f"{type(seqcls).__name__} has no scalar head named {' or '.join(HEAD_NAMES)}.")


def running_head(head: torch.nn.Module) -> torch.nn.Module:
    """The module that computes the reward: under peft's ``modules_to_save`` wrapper, the active adapter's trained
    copy (the wrapper's first parameters are the untouched original's, which can differ in dtype), else ``head``."""
    if hasattr(head, "modules_to_save"):
        active = head.active_adapter
        return head.modules_to_save[active if isinstance(active, str) else active[0]]
    return head


def head_in_fp32(model) -> None:
    """Keep the scalar head in float32, whatever the body's dtype (bf16 on a GPU; TRL's trainers also cast every
    trainable parameter of a quantized, QLoRA, model to bf16, the head included): rewards are read from the head's
    output and compared by their differences, which bf16 rounds to ~1% of their size (see :func:`sequence_rewards`).
    Training, ``posttrain score`` and the RL stage (which loads the head from its file in fp32) so read the same
    head. Parameters DeepSpeed ZeRO-3 has partitioned are left to it: their ``.data`` is a placeholder."""
    for param in running_head(body_and_head(model)[1]).parameters():
        if not hasattr(param, "ds_id"):
            param.data = param.data.float()


def sequence_rewards(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, pooling: str,
                     response_start: torch.Tensor | None = None) -> torch.Tensor:
    """Reward (batch,) of each row: the head on its pooled hidden state (see :func:`pool`).

    Args:
        model: a sequence-classification model (a PeftModel with the reward adapter active, or plain).
        input_ids: (batch, seq_len), right-padded.
        attention_mask: (batch, seq_len), 1 on real tokens.
        pooling: "mean", "response" or "last".
        response_start: (batch,) where each row's response begins; "response" pooling reads it.
    """
    body, head = body_and_head(model)
    hidden = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    final = pool(hidden, attention_mask, pooling, response_start)
    # the scalar head outside any autocast, in its own dtype: rewards are compared by their differences, which a
    # bf16 head would round to ~1% of their size
    with torch.autocast(device_type=final.device.type, enabled=False):
        return head(final.to(next(running_head(head).parameters()).dtype)).squeeze(-1).float()


def reward_model_input(tokenizer, prompt, response) -> list[int]:
    """The token ids a reward model reads for a prompt and a response: in training (`posttrain rm`), in
    `posttrain score` and in the RL stage alike, so a reward model is never scored on a text it was not trained on.

    Conversational prompts: the chat template over prompt + response (ending with the template's end-of-turn
    tokens). Plain text: prompt + response as one text, with the tokenizer's own special tokens (its BOS, where it
    adds one) and no EOS. The reward is read from these tokens (see :func:`pool`).
    """
    return encode_response(tokenizer, prompt, response)


def response_start(tokenizer, prompt, response, ids: list[int]) -> int:
    """Where the response begins in ``ids`` (the :func:`reward_model_input` of prompt and response): the length of
    the prefix ``ids`` shares with the prompt rendered alone (a chat prompt with the template's generation prompt),
    so a token the tokenizer merged across the boundary counts as the response's; at least one token is left."""
    head = paired_prompt(prompt, response)
    prefix = tokenizer(render_prompt(tokenizer, head), add_special_tokens=isinstance(head, str))["input_ids"]
    shared = next((i for i, (a, b) in enumerate(zip(prefix, ids)) if a != b), min(len(prefix), len(ids)))
    return min(shared, len(ids) - 1)


def reward_model_rows(tokenizer, prompts: list, responses: list) -> tuple[list[list[int]], list[int]]:
    """The :func:`reward_model_input` of each prompt and response, and where each row's response begins."""
    rows = [reward_model_input(tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)]
    return rows, [response_start(tokenizer, p, r, ids) for p, r, ids in zip(prompts, responses, rows)]


def pad_right(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Reward-model rows padded on the right (pooling reads the real tokens from the mask), on ``device``."""
    ids, mask = pad(rows, pad_id, "right")
    return ids.to(device), mask.to(device)


@torch.no_grad()
def score_ids(model, rows: list[list[int]], starts: list[int], pad_id: int, batch_size: int, progress: str = "", *,
              pooling: str) -> list[float]:
    """The reward of each row of token ids whose response begins at ``starts``, read as ``pooling`` says (see
    :func:`pool`); ``progress`` names a progress bar over the batches (none when empty)."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    scores: list[float] = []
    for start in tqdm(range(0, len(rows), batch_size), desc=progress, disable=not progress, unit="batch", leave=False):
        ids, mask = pad_right(rows[start:start + batch_size], pad_id, device)
        scores.extend(sequence_rewards(model, ids, mask, pooling, torch.tensor(starts[start:start + batch_size])).tolist())
    return scores


@dataclass
class RewardModel:
    """A trained reward model, in eval mode: the peft sequence-classification model, its tokenizer, its base, and
    how it pools the hidden states its head reads."""

    model: Any
    tokenizer: Any
    base_model: str
    pooling: str = "last"

    def encode(self, prompts: list, responses: list, max_length: int = 512) -> tuple[list[list[int]], list[int], int]:
        """Token ids of each prompt + response, cut from the left to ``max_length``; where each response begins in
        them; and how many rows were cut."""
        rows, starts = reward_model_rows(self.tokenizer, prompts, responses)
        cut = 0
        for i, ids in enumerate(rows):
            if len(ids) > max_length:  # keep the end: the response, where the reward is read
                rows[i], starts[i], cut = ids[-max_length:], max(0, starts[i] - (len(ids) - max_length)), cut + 1
        return rows, starts, cut

    def score(self, prompts: list, responses: list, batch_size: int = 8, max_length: int = 512,
              progress: str = "") -> list[float]:
        """Rewards of responses to prompts (chat message lists or strings)."""
        rows, starts, _ = self.encode(prompts, responses, max_length)
        if not rows:
            return []
        return score_ids(self.model, rows, starts, self.tokenizer.pad_token_id, batch_size, progress, pooling=self.pooling)


def load_reward_model(folder: str | Path, device: torch.device | None = None, dtype: torch.dtype | None = None) -> RewardModel:
    """Load a ``posttrain rm`` checkpoint on its base model, in eval mode."""
    folder = Path(folder)
    if not is_adapter_folder(folder) or not (folder / HEAD_FILE).is_file():
        raise ModelError(f"{folder} is not a reward-model checkpoint (it needs adapter_config.json and {HEAD_FILE}); "
                         "make one with `posttrain rm`.")
    loaded = load_model(str(folder), task="seq_cls", dtype=dtype, device=device, layers=checkpoint_layers(folder))
    head_in_fp32(loaded.model)
    loaded.model.eval()
    return RewardModel(loaded.model, loaded.tokenizer, loaded.base_model, checkpoint_pooling(folder))
