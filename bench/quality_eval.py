"""How bench/quality.py measures a trained checkpoint on held-out prompts and pairs.

    SFT       share of greedy answers to held-out prompts that pass the task's style checker
    RM        pairwise accuracy on held-out pairs (chosen scored strictly above rejected), each reward model
              scored the way its own library reads it
    DPO, PPO  win-rate by the judge of greedy answers against the base model's on the same held-out prompts
              (a tie counts half), and mean answer length in tokens
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Callable

import torch

EVAL_BATCH = 16


def generate(model: str, prompts: list, max_new_tokens: int) -> tuple[list[str], list[int]]:
    """Greedy answers of a model or adapter folder (posttrain's or TRL's) and their lengths in tokens.

    In bf16, for every model alike: on this CPU (AVX512-BF16) it decodes about twice as fast as fp32."""
    from posttrain.generation import generate_texts
    from posttrain.models import load_for_inference

    loaded = load_for_inference(model, dtype=torch.bfloat16)
    texts = generate_texts(loaded.model, loaded.tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=0.0,
                           batch_size=EVAL_BATCH)
    lengths = [len(loaded.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    del loaded
    gc.collect()
    return texts, lengths


def style_share(texts: list[str], check: Callable[[str], bool]) -> float:
    return sum(map(check, texts)) / len(texts)


def win_rate(policy: list[float], base: list[float]) -> float:
    return sum(1.0 if p > b else 0.5 if p == b else 0.0 for p, b in zip(policy, base, strict=True)) / len(policy)


def accuracy(chosen: list[float], rejected: list[float]) -> float:
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(chosen)


def posttrain_rm_accuracy(folder: str, pairs: list[dict]) -> float:
    """As `posttrain score` reads it: the head on the chat rendering's hidden states, pooled as the checkpoint says."""
    from posttrain.stages.reward_model import load_reward_model

    rm = load_reward_model(folder, dtype=torch.float32)
    prompts = [p["prompt"] for p in pairs]
    with torch.no_grad():
        chosen = rm.score(prompts, [p["chosen"] for p in pairs], batch_size=EVAL_BATCH)
        rejected = rm.score(prompts, [p["rejected"] for p in pairs], batch_size=EVAL_BATCH)
    del rm
    gc.collect()
    return accuracy(chosen, rejected)


def trl_rm_accuracy(folder: str, pairs: list[dict]) -> float:
    """As a TRL user reads it: AutoModelForSequenceClassification with the adapter, on the chat-template text
    of prompt + response, one sequence at a time (so no padding decides where the score is read)."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from posttrain.models import adapter_base

    tokenizer = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForSequenceClassification.from_pretrained(adapter_base(folder), num_labels=1, dtype=torch.float32)
    base.config.pad_token_id = tokenizer.pad_token_id
    model = PeftModel.from_pretrained(base, folder).eval()

    def reward(prompt, response) -> float:
        ids = tokenizer.apply_chat_template(prompt + response, tokenize=True, return_dict=True, return_tensors="pt")
        return model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).logits[0, 0].item()

    with torch.no_grad():
        chosen = [reward(p["prompt"], p["chosen"]) for p in pairs]
        rejected = [reward(p["prompt"], p["rejected"]) for p in pairs]
    del model, base
    gc.collect()
    return accuracy(chosen, rejected)


def judged(texts: list[str], lengths: list[int], judge: Callable[[str], float], base_scores: list[float],
           base_lengths: list[int]) -> dict[str, float]:
    scores = [judge(t) for t in texts]
    mean_length, base_length = sum(lengths) / len(lengths), sum(base_lengths) / len(base_lengths)
    return {"win_rate": win_rate(scores, base_scores), "mean_score": sum(scores) / len(scores),
            "base_mean_score": sum(base_scores) / len(base_scores), "mean_length": mean_length,
            "base_mean_length": base_length, "length_ratio": mean_length / base_length}


def examples(prompts: list, texts: list[str], count: int = 3) -> list[dict[str, str]]:
    return [{"prompt": p[-1]["content"] if isinstance(p, list) else p, "response": t} for p, t in zip(prompts[:count], texts)]


def folder_ok(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()
