"""Batched sampling with a KV cache: rollouts for PPO, responses for evaluation and reports."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from posttrain.data import render_prompt
from posttrain.models import stop_token_ids


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
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, e in enumerate(encoded):
        ids[row, width - len(e):] = torch.tensor(e)
        mask[row, width - len(e):] = 1
    return ids.to(device), mask.to(device), cut


@torch.no_grad()
def sample(model, tokenizer, query: torch.Tensor, query_mask: torch.Tensor, max_new_tokens: int,
           temperature: float = 1.0, top_p: float = 1.0, generator_seed: int | None = None) -> torch.Tensor:
    """Sample responses for left-padded queries; returns (batch, response_len) ids, padded after each stop.

    ``temperature`` 0 decodes greedily. Responses shorter than the longest are padded with pad_token_id.
    """
    if generator_seed is not None:
        torch.manual_seed(generator_seed)
    sampling = temperature > 0
    output = model.generate(
        input_ids=query,
        attention_mask=query_mask,
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        do_sample=sampling,
        temperature=temperature if sampling else None,
        top_p=top_p if sampling else None,
        top_k=0 if sampling else None,
        eos_token_id=stop_token_ids(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )
    return output[:, query.shape[1]:]


def generate_texts(model, tokenizer, prompts: list, max_new_tokens: int = 64, temperature: float = 0.0,
                   top_p: float = 1.0, batch_size: int = 8, max_prompt_length: int = 512) -> list[str]:
    """Responses (decoded, special tokens removed) for prompts given as chat messages or text."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        query, mask, _ = encode_prompts(tokenizer, chunk, max_prompt_length, device)
        response = sample(model, tokenizer, query, mask, max_new_tokens, temperature, top_p)
        texts.extend(tokenizer.decode(r, skip_special_tokens=True).strip() for r in response)
    model.train(was_training)
    return texts
