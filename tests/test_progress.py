"""Progress bars where eval, score and the pipeline's sample table wait on a model: generation and scoring show
one over their batches when given a name, and none otherwise (the RL loop calls the same functions, bar-free)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from posttrain.models import load_for_inference

    return load_for_inference(str(tiny_model_dir), device=torch.device("cpu"))


def test_generation_shows_a_bar_over_its_batches_when_named(tiny, capsys):
    from posttrain.generation import generate_texts

    prompts = [[{"role": "user", "content": f"Say {i}."}] for i in range(3)]
    texts = generate_texts(tiny.model, tiny.tokenizer, prompts, max_new_tokens=2, batch_size=1, progress="generating")
    bar = capsys.readouterr().err
    assert len(texts) == 3 and "generating:" in bar and "/3 [" in bar and "batch" in bar  # 3 batches of one
    generate_texts(tiny.model, tiny.tokenizer, prompts, max_new_tokens=2, batch_size=1)
    assert "/3 [" not in capsys.readouterr().err


def test_log_probs_for_eval_show_a_bar_when_named(tiny, capsys):
    from posttrain.evaluate import response_logprobs

    values = response_logprobs(tiny.model, tiny.tokenizer, ["Hi", "Yo"], [" there", " you"], batch_size=1,
                               progress="log-probs of chosen responses")
    assert len(values) == 2 and "log-probs of chosen responses" in capsys.readouterr().err
