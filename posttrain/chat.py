"""Talk to a model or checkpoint: one-shot replies and an interactive multi-turn loop."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from posttrain.config import AT_LEAST_1, NON_NEGATIVE, POSITIVE, Range, doc

if TYPE_CHECKING:  # torch and the models load when a chat starts, not for `posttrain chat --help`
    from posttrain.models import Loaded


@dataclass
class ChatConfig:
    model: str = doc("smollm2-135m-instruct", "A checkpoint folder (adapter or merged), a model folder, a hub id or the default alias.")
    prompt: str = doc("", "Reply once to this message and exit; without it, chat interactively.")
    system: str = doc("", "An optional system message.")
    max_new_tokens: int = doc(256, "Longest reply in tokens.", valid=AT_LEAST_1)
    temperature: float = doc(0.7, "Sampling temperature; 0 means greedy decoding.", valid=NON_NEGATIVE)
    top_p: float = doc(0.9, "Nucleus sampling: keep the smallest token set with this much probability.", valid=Range(0, 1, low_open=True))
    top_k: int = doc(0, "Keep only the k most likely tokens (0 disables).", valid=NON_NEGATIVE)
    repetition_penalty: float = doc(1.0, "Penalty on tokens already generated (1.0 disables).", valid=POSITIVE)
    seed: int = doc(-1, "Random seed for sampling (-1: not fixed).", valid=Range(0, 2**32 - 1, special=(-1,)))


def reply(loaded: Loaded, messages: list[dict[str, str]], config: ChatConfig) -> str:
    """The assistant's next turn for a conversation."""
    from posttrain.models import stop_token_ids

    tokenizer, model = loaded.tokenizer, loaded.model
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(next(model.parameters()).device)
    sample = config.temperature > 0
    output = model.generate(  # generate runs without autograd
        **inputs,
        max_new_tokens=config.max_new_tokens,
        do_sample=sample,
        temperature=config.temperature if sample else None,
        top_p=config.top_p if sample else None,
        top_k=config.top_k if sample else None,
        repetition_penalty=config.repetition_penalty,
        eos_token_id=stop_token_ids(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def run_chat(config: ChatConfig) -> str | None:
    import torch

    from posttrain.models import load_for_inference

    if config.seed >= 0:
        torch.manual_seed(config.seed)
    loaded = load_for_inference(config.model)
    history = [{"role": "system", "content": config.system}] if config.system else []
    if config.prompt:
        answer = reply(loaded, history + [{"role": "user", "content": config.prompt}], config)
        print(answer)
        return answer
    print(f"Chatting with {config.model}. Commands: /reset clears the history, /exit (or Ctrl-D) quits.", file=sys.stderr)
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return None
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return None
        if line == "/reset":
            history = history[:1] if config.system else []
            continue
        history.append({"role": "user", "content": line})
        answer = reply(loaded, history, config)
        history.append({"role": "assistant", "content": answer})
        print(f"assistant> {answer}")
