"""Shared fixtures: tiny random Llama models with the real SmolLM2 tokenizer, saved as folders so every
stage can take them as ``--model``."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data_samples"


def build_tiny_model(folder: Path, tokenizer, seed: int = 0, chat_template: bool = True) -> Path:
    """A 2-layer Llama with hidden size 32 and the real tokenizer's vocabulary, saved to ``folder``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if not chat_template:  # a base model as many ship: no chat template saved with the tokenizer
        for name in ("chat_template.jinja", "chat_template.json"):
            (folder / name).unlink(missing_ok=True)
    return folder


@pytest.fixture(scope="session")
def real_tokenizer_dir():
    """The default model's tokenizer (the GGUF is converted once into the posttrain cache)."""
    from posttrain.models import DEFAULT_MODEL, resolve_model

    return Path(resolve_model(DEFAULT_MODEL))


@pytest.fixture(scope="session")
def tokenizer(real_tokenizer_dir):
    from transformers import AutoTokenizer

    from posttrain.models import prepare_tokenizer

    return prepare_tokenizer(AutoTokenizer.from_pretrained(real_tokenizer_dir))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, real_tokenizer_dir):
    """A saved tiny random model folder with the real tokenizer and its chat template."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-llama")
    return build_tiny_model(folder, AutoTokenizer.from_pretrained(real_tokenizer_dir))


@pytest.fixture()
def samples() -> Path:
    return SAMPLES


@pytest.fixture()
def kernels(monkeypatch):
    """Counts of the attention kernels the tiny Llama's layers call, by name ("sdpa", "eager")."""
    import transformers.models.llama.modeling_llama as llama
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    calls = collections.Counter()
    sdpa, eager = ALL_ATTENTION_FUNCTIONS["sdpa"], llama.eager_attention_forward

    def counted(name, fn):
        def run(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return run

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, "sdpa", counted("sdpa", sdpa))
    monkeypatch.setattr(llama, "eager_attention_forward", counted("eager", eager))
    return calls
