"""Batched sampling with a KV cache: rollouts for PPO, responses for evaluation and reports."""

from __future__ import annotations

import contextlib
import functools
import platform
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch import nn

from transformers.modeling_outputs import BaseModelOutputWithPast

from posttrain.data import render_prompt
from posttrain.models import stop_token_ids
from posttrain.padding import pad


@dataclass
class Batch:
    """Left-padded prompts and right-padded responses, as token ids.

    query: (batch, query_len) left-padded with pad_token_id; query_mask: (batch, query_len) 1 on real tokens.
    response: (batch, response_len) exactly as sampled (tokens after a stop token are still there; see
    posttrain.rl.truncate_after_stop).
    """

    query: torch.Tensor
    query_mask: torch.Tensor
    response: torch.Tensor


def encode_prompts(tokenizer, prompts: list, max_prompt_length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Tokenise prompts (chat messages or text) left-padded; cut from the left past ``max_prompt_length``.

    Returns (ids, mask, number of prompts cut)."""
    texts = [render_prompt(tokenizer, p) for p in prompts]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    cut = sum(len(e) > max_prompt_length for e in encoded)
    encoded = [e[-max_prompt_length:] for e in encoded]
    ids, mask = pad(encoded, tokenizer.pad_token_id, "left")
    return ids.to(device), mask.to(device), cut


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding: (batch, seq_len), as generation computes them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def next_token(logits: torch.Tensor, temperature: float, top_p: float = 1.0, uniform: torch.Tensor | None = None) -> torch.Tensor:
    """Draw one token per row from softmax(logits / temperature), nucleus-filtered to ``top_p``.

    Args:
        logits: (batch, vocab), float32.
        uniform: (batch,) float64 numbers in [0, 1) to draw with; None draws them from torch's generator.
    Returns:
        (batch,) long. ``temperature`` 0 takes the argmax.

    The draw inverts the cumulative distribution with one uniform number per row; torch.multinomial
    draws an exponential per vocabulary entry, which on a CPU is most of a decoding step's sampling time.
    """
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > top_p  # mass before a token already reaches top_p
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs.masked_fill(outside, 0.0))
    cdf = probs.double().cumsum(-1)
    if uniform is None:
        uniform = torch.rand(len(probs), dtype=torch.float64, device=probs.device)
    draw = uniform.to(device=probs.device, dtype=torch.float64)[:, None] * cdf[:, -1:]
    # side="right": the first entry whose cumulative mass exceeds the draw, so zero-probability tokens never win
    return torch.searchsorted(cdf, draw, right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)


# transformers 5.2x renamed the KV cache argument and output field from past_key_values to cache (the old name
# still works, with a warning on every run); the requirement allows both kinds of 5.x
CACHE = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


def with_cache(cache) -> dict:
    """The forward pass's keyword argument for a KV cache (None: start one), under this transformers' name."""
    return {CACHE: cache}


def cache_of(out):
    """The KV cache a forward pass returned."""
    return getattr(out, CACHE)


@dataclass
class SharedPrompts:
    """Consecutive rows with the same prompt (a group's responses): the prompt runs once per run of rows and
    every row continues from its keys and values, with gradients through them summed over the run.

    A group of K responses to a prompt of P tokens costs P + K x R tokens of a pass instead of K x (P + R): with
    4 responses of 32 tokens to a 45-token prompt, 173 instead of 308. A row's numbers are those of a pass over
    its whole sequence up to the order of sums (the prompt's products run over fewer rows); the RL stage's
    scoring and training passes of a minibatch share prompts alike (rlhf_roles.Roles.hidden), so old and new
    log-probs still agree to the bit, and :func:`sample` runs each distinct prompt once before decoding."""

    context: int  # the prompt's columns
    firsts: torch.Tensor  # the first row of each run, in every stacked copy: the rows the prompt pass runs
    expand: torch.Tensor  # for every row (every copy), its run's index among ``firsts``
    prompts: int  # runs per copy
    rows: int  # rows per copy


def kv_cache_shareable(config) -> bool:
    """Whether every layer of the model's KV cache holds keys and values alone (full or sliding-window attention),
    so that a row can continue from another row's prompt; not linear-attention or recurrent state, which is
    updated in place. Nor rotary embeddings whose frequencies follow the longest position of each call (dynamic
    NTK, LongRoPE): a prompt's own pass would rotate it as a short sequence."""
    from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    rope = getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None) or {}
    if isinstance(rope, dict) and any(isinstance(v, dict) for v in rope.values()):  # per attention kind (Gemma 3)
        kinds = [v.get("rope_type", v.get("type")) for v in rope.values() if isinstance(v, dict)]
    else:
        kinds = [rope.get("rope_type", rope.get("type"))] if isinstance(rope, dict) else []
    if any(kind in ("dynamic", "longrope") for kind in kinds):
        return False

    try:
        layers = DynamicCache(config=config).layers
    except Exception:  # noqa: BLE001 - a cache this transformers cannot lay out: run whole rows
        return False
    return bool(layers) and all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in layers)


def shared_prompts(input_ids: torch.Tensor, attention_mask: torch.Tensor, context: int,
                   copies: int = 1) -> SharedPrompts | None:
    """The runs of consecutive rows whose first ``context`` columns (ids and mask) are the same, for rows stacked
    ``copies`` times (one block per role, see Roles.hidden); None when no two consecutive rows share them."""
    if context <= 0 or len(input_ids) < 2:
        return None
    ids, mask = input_ids[:, :context], attention_mask[:, :context]
    starts = torch.ones(len(ids), dtype=torch.bool, device=ids.device)
    starts[1:] = (ids[1:] != ids[:-1]).any(1) | (mask[1:] != mask[:-1]).any(1)
    if bool(starts.all()):
        return None
    rows, firsts, expand = len(ids), starts.nonzero().squeeze(1), starts.long().cumsum(0) - 1
    prompts = len(firsts)
    return SharedPrompts(context, torch.cat([firsts + copy * rows for copy in range(copies)]),
                         torch.cat([expand + copy * prompts for copy in range(copies)]), prompts, rows)


def prefill_once(body, input_ids: torch.Tensor, attention_mask: torch.Tensor, shared: SharedPrompts):
    """The prompt columns of ``shared`` through ``body`` once per distinct prompt: (their last hidden states for
    every row, the KV cache every row continues from). Gradients, where enabled, sum over each prompt's rows."""
    firsts, mask = shared.firsts, attention_mask[shared.firsts, :shared.context]
    out = body(input_ids=input_ids[firsts, :shared.context], attention_mask=mask, position_ids=position_ids(mask),
               use_cache=True)
    cache = cache_of(out)
    cache.reorder_cache(shared.expand)  # every row reads its prompt's keys and values
    return out.last_hidden_state[shared.expand], cache


def hidden_sharing_prompts(body, input_ids: torch.Tensor, attention_mask: torch.Tensor, shared: SharedPrompts,
                           row_blocks=None) -> torch.Tensor:
    """The body's last hidden states of whole rows, each run of rows in ``shared`` running its prompt once
    (prefill_once) and every row's rest continuing from that prompt's KV cache, whose graph it keeps: a row's
    numbers, and in training its gradients, are those of a pass over the whole row up to the order of sums.
    ``row_blocks(rows)``: a context for a pass over that many rows per stacked copy (see rlhf_roles.Roles)."""
    blocks_of = row_blocks or (lambda rows: contextlib.nullcontext())
    with blocks_of(shared.prompts):
        prompt, cache = prefill_once(body, input_ids, attention_mask, shared)
    c = shared.context
    with blocks_of(shared.rows):
        rest = body(input_ids=input_ids[:, c:], attention_mask=attention_mask,
                    position_ids=position_ids(attention_mask)[:, c:], use_cache=True, **with_cache(cache))
    return torch.cat([prompt, rest.last_hidden_state], dim=1)


# a prefix's own pass costs a forward and backward pass's fixed overhead (its Python, dispatch, autograd nodes):
# on the default model on a CPU the 24-token system prompt of SmolLM2's template, shared by 4 rows (72 tokens
# saved), about broke even, and an 85-token one shared by 4 rows took 0.76 of the time (bench/sft_prefix.py)
LEAST_SAVED_TOKENS = 96


def common_prefix(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SharedPrompts | None:
    """The leading columns that every row of a right-padded batch has alike, as one run of SharedPrompts: a
    system prompt every example repeats (SmolLM2's template writes its default one, 24 tokens, before every
    conversation). None when running them once would save fewer than LEAST_SAVED_TOKENS tokens of the pass
    ((rows - 1) x columns), for fewer than 8 columns (a chat template's opening alone), or when no row goes on
    past them."""
    alike = ((input_ids == input_ids[:1]) & (attention_mask == 1)).all(0)
    context = int(alike.long().cumprod(0).sum())
    if context < 8 or (len(input_ids) - 1) * context < LEAST_SAVED_TOKENS or context >= input_ids.shape[1]:
        return None
    return shared_prompts(input_ids, attention_mask, context)


@torch.no_grad()
def sample(model, tokenizer, query: torch.Tensor, query_mask: torch.Tensor, max_new_tokens: int,
           temperature: float = 1.0, top_p: float = 1.0, generator_seed: int | None = None,
           with_logprobs: bool = False, uniforms: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Sample responses for left-padded queries; returns (batch, response_len) ids, padded after each stop.

    ``temperature`` 0 decodes greedily. Responses shorter than the longest are padded with pad_token_id.
    A plain KV-cache loop over the transformer body: the vocabulary projection runs on each row's last
    position only, consecutive rows with the same prompt prefill it once (SharedPrompts), and the loop ends
    when every row has produced a stop token. ``with_logprobs`` also returns
    (batch, response_len) log-probs of the drawn tokens under softmax(logits / temperature) of the weights that
    drew them (0 after a row's stop), which PPO compares with its training forward's. ``uniforms``
    (batch, max_new_tokens) are the numbers each row draws its tokens with (see :func:`next_token`), so a row's
    sample does not depend on which other rows share its batch.
    """
    if generator_seed is not None:
        torch.manual_seed(generator_seed)
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    body, head = causal_lm.base_model, causal_lm.get_output_embeddings()
    stops = torch.tensor(stop_token_ids(tokenizer), device=query.device)
    mask, ids, positions, cache = query_mask, query, position_ids(query_mask), None
    finished = torch.zeros(len(query), dtype=torch.bool, device=query.device)
    tokens, logprobs = [], []
    # a group's rows: its prompt runs once
    shared = shared_prompts(query, query_mask, query.shape[1]) if kv_cache_shareable(causal_lm.config) else None
    for t in range(max_new_tokens):
        if t == 0 and shared is not None:
            hidden, cache = prefill_once(body, ids, mask, shared)
            last = hidden[:, -1]
        else:
            out = body(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **with_cache(cache))
            cache = cache_of(out)
            last = out.last_hidden_state[:, -1]
        logits = head(last.contiguous()).float()
        token = next_token(logits, temperature, top_p, None if uniforms is None else uniforms[:, t])
        if with_logprobs:
            drawn = torch.log_softmax(logits / max(temperature, 1e-6), dim=-1).gather(-1, token[:, None]).squeeze(-1)
            logprobs.append(drawn.masked_fill(finished, 0.0))
        token = token.masked_fill(finished, tokenizer.pad_token_id)
        tokens.append(token)
        finished |= torch.isin(token, stops)
        if finished.all():
            break
        ids, positions = token[:, None], positions[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
    if with_logprobs:
        return torch.stack(tokens, dim=1), torch.stack(logprobs, dim=1)
    return torch.stack(tokens, dim=1)


DECODE_ROWS = 8  # the row count oneDNN lays packed weights out for: decoding steps are a batch of single tokens


@contextlib.contextmanager
def swapped_weights(weights: Iterable[tuple[nn.Linear, torch.Tensor]]) -> Iterator[None]:
    """Run each linear layer with the weight paired with it inside the block; its own tensor is never written.

    For decoding. On a CPU, bf16 weights are handed to oneDNN prepacked in the layout its small-batch
    kernels read (``torch.ops.mkldnn``, what torch.compile's CPU backend does for frozen weights): a
    decoding step multiplies a few rows by every weight, and there the packed product takes about 60% of
    the plain one's time, with the same result to the bit. On an x86 CPU, so are fp32 weights of at least
    PACKED_FP32_MIN_ROWS outputs (see :func:`packed_weight`). Elsewhere the weight tensors are swapped in.
    ``weights`` may be a generator: each new weight is packed as it comes, so only one extra dense copy
    is alive at a time. A weight that is already packed (see :func:`packed_weight`) is used as it is.
    """
    patched: list[tuple[nn.Linear, object]] = []
    swapped: list[tuple[nn.Parameter, torch.Tensor]] = []
    try:
        for linear, weight in weights:
            packed = weight if weight.is_mkldnn else packed_weight(weight)
            if packed is not None:
                patched.append((linear, linear.__dict__.get("forward")))
                linear.forward = functools.partial(_packed_linear, packed, linear.bias)
            else:
                swapped.append((linear.weight, linear.weight.data))
                linear.weight.data = weight
        yield
    finally:
        for linear, forward in patched:
            del linear.forward
            if forward is not None:
                linear.forward = forward
        for param, data in swapped:
            param.data = data


# fp32 weights with fewer output rows stay plain: measured on the 2-core AMD EPYC limited to AVX2 (2026-12-07, 8
# rows, one thread), oneDNN's packed fp32 product took 0.70-0.83 of MKL's time for 576 x 576 to 1536 x 576 weights
# and 0.57 for the 49152 x 576 output layer, but 1.17 for the 192 x 576 key and value projections
PACKED_FP32_MIN_ROWS = 512


def packed_weight(weight: torch.Tensor) -> torch.Tensor | None:
    """``weight`` prepacked for oneDNN's matmul, or None where that does not apply or is unsupported: bf16 weights,
    and on an x86 CPU fp32 weights of at least PACKED_FP32_MIN_ROWS outputs (their products differ from MKL's
    in the last bits: the packed product sums in another order)."""
    if weight.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return None
    fp32 = (weight.dtype == torch.float32 and weight.shape[0] >= PACKED_FP32_MIN_ROWS
            and platform.machine().lower() in ("x86_64", "amd64"))
    if weight.dtype != torch.bfloat16 and not fp32:
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), DECODE_ROWS)
    except (AttributeError, RuntimeError):  # an older torch, or a CPU oneDNN has no bf16 product for
        return None


def _packed_linear(packed: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x.to(packed.dtype), packed, bias, "none", [], "")


def generate_texts(model, tokenizer, prompts: list, max_new_tokens: int = 64, temperature: float = 0.0,
                   top_p: float = 1.0, top_k: int = 0, repetition_penalty: float = 1.0, stop: list[str] | None = None,
                   batch_size: int = 8, max_prompt_length: int = 512, progress: str = "") -> list[str]:
    """Responses (decoded, special tokens removed) for prompts given as chat messages or text, through transformers'
    ``generate`` with the sampling flags of ``posttrain chat`` (temperature 0 is greedy, top_k 0 and
    repetition_penalty 1 are off); each text ends before the first of the ``stop`` strings. Evaluation and report
    samples use this; the PPO rollouts keep :func:`sample`, which also returns the sampling log-probs they need.
    ``progress`` names a progress bar over the batches (none when empty)."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sampling = temperature > 0
    texts: list[str] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=progress, disable=not progress, unit="batch", leave=False):
        chunk = prompts[start:start + batch_size]
        query, mask, _ = encode_prompts(tokenizer, chunk, max_prompt_length, device)
        output = model.generate(
            input_ids=query, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=sampling,
            temperature=temperature if sampling else None, top_p=top_p if sampling else None,
            top_k=top_k if sampling else None, repetition_penalty=repetition_penalty,
            stop_strings=stop or None, tokenizer=tokenizer if stop else None,
            eos_token_id=stop_token_ids(tokenizer), pad_token_id=tokenizer.pad_token_id)
        for response in output[:, query.shape[1]:]:
            text = tokenizer.decode(response, skip_special_tokens=True)
            for marker in stop or []:
                text = text.split(marker, 1)[0]  # generate stops at a stop string but keeps it
            texts.append(text.strip())
    model.train(was_training)
    return texts
