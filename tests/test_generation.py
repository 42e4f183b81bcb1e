"""The rollout sampler: the draw follows the distribution, nucleus filtering, greedy decoding, stops."""

from __future__ import annotations

import pytest
import torch

from posttrain.generation import encode_prompts, next_token, sample


def test_draws_follow_the_softmax_and_skip_zero_probability_tokens():
    torch.manual_seed(0)
    # probabilities 0.1, 0.2, 0.7 and 0 (a -inf logit); temperature 1 keeps them
    logits = torch.tensor([0.1, 0.2, 0.7, 0.0]).log().expand(20000, 4)
    draws = next_token(logits, temperature=1.0)
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    assert freq[:3].tolist() == pytest.approx([0.1, 0.2, 0.7], abs=0.015)
    assert freq[3] == 0


def test_temperature_sharpens_and_top_p_cuts_the_tail():
    torch.manual_seed(0)
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().expand(20000, 4)
    # temperature 0.5 squares the probabilities before renormalising: 0.25 / (0.25+0.09+0.0225+0.0025) = 0.685
    cold = torch.bincount(next_token(logits, temperature=0.5), minlength=4).float() / 20000
    assert cold[0] == pytest.approx(0.25 / 0.365, abs=0.015)
    # top_p 0.7: 0.5 alone is short of 0.7, 0.5+0.3 reaches it; the last two tokens are never drawn
    nucleus = torch.bincount(next_token(logits, temperature=1.0, top_p=0.7), minlength=4).float() / 20000
    assert nucleus[2:].sum() == 0
    assert nucleus[0] == pytest.approx(0.5 / 0.8, abs=0.015)
    assert next_token(logits[:2], temperature=0.0).tolist() == [0, 0]


def test_greedy_sampling_matches_transformers_generate(tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    from posttrain.models import stop_token_ids

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts = [[{"role": "user", "content": "Say hello."}], [{"role": "user", "content": "What is two plus two, please?"}]]
    query, mask, _ = encode_prompts(tokenizer, prompts, 64, torch.device("cpu"))
    ours = sample(model, tokenizer, query, mask, max_new_tokens=12, temperature=0.0)
    theirs = model.generate(input_ids=query, attention_mask=mask, max_new_tokens=12, do_sample=False,
                            eos_token_id=stop_token_ids(tokenizer), pad_token_id=tokenizer.pad_token_id)[:, query.shape[1]:]
    assert torch.equal(ours, theirs[:, : ours.shape[1]])


def test_a_groups_prompt_is_prefilled_once_and_samples_what_whole_rows_would(tiny_model_dir, tokenizer, monkeypatch):
    """Rows that repeat a prompt (a group's responses, consecutive) prefill it once: the body's first call sees
    each distinct prompt once; every row's tokens and log-probs are those of prefilling every row."""
    from transformers import AutoModelForCausalLM

    import posttrain.generation as generation

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts = [[{"role": "user", "content": q}] for q in ("Say hello.", "What is two plus two, please?") for _ in range(3)]
    query, mask, _ = encode_prompts(tokenizer, prompts, 64, torch.device("cpu"))
    uniforms = torch.rand(len(prompts), 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    calls = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: calls.append(tuple(args[0].shape)))
    shared = sample(model, tokenizer, query, mask, max_new_tokens=8, temperature=1.0, with_logprobs=True, uniforms=uniforms)
    first_shared = calls[0]
    calls.clear()
    monkeypatch.setattr(generation, "shared_prompts", lambda *args, **kwargs: None)
    whole = sample(model, tokenizer, query, mask, max_new_tokens=8, temperature=1.0, with_logprobs=True, uniforms=uniforms)
    hook.remove()
    assert first_shared == (2, query.shape[1]) and calls[0] == (6, query.shape[1])
    assert torch.equal(shared[0], whole[0])
    torch.testing.assert_close(shared[1], whole[1], rtol=1e-5, atol=1e-5)
    assert not torch.equal(shared[0][0], shared[0][1])  # the group's rows drew their own responses


def test_only_attention_caches_are_shared_between_rows():
    """Rows continue from another row's prompt only where the cache holds keys and values (full or sliding-window
    attention) and positions rotate alike in every pass; a model with linear-attention layers (state updated in
    place) or dynamic rotary scaling runs whole rows."""
    from transformers import LlamaConfig, MistralConfig, Qwen3NextConfig

    from posttrain.generation import kv_cache_shareable

    assert kv_cache_shareable(LlamaConfig(num_hidden_layers=2))
    assert kv_cache_shareable(MistralConfig(num_hidden_layers=2, sliding_window=16))
    assert not kv_cache_shareable(Qwen3NextConfig(num_hidden_layers=4))
    # frequencies that follow each call's longest position would rotate a prompt's own pass as a short sequence
    assert kv_cache_shareable(LlamaConfig(num_hidden_layers=2, rope_scaling={"rope_type": "linear", "factor": 2.0}))
    assert not kv_cache_shareable(LlamaConfig(num_hidden_layers=2, rope_scaling={"rope_type": "dynamic", "factor": 2.0}))


def test_rows_are_padded_after_their_stop_token(tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    stop = tokenizer.eos_token_id
    with torch.no_grad():  # make the stop token overwhelmingly likely, so every row ends at its first token
        model.lm_head.bias = torch.nn.Parameter(torch.zeros(model.config.vocab_size))
        model.lm_head.bias[stop] = 1e4
    query, mask, _ = encode_prompts(tokenizer, ["a", "longer prompt here"], 16, torch.device("cpu"))
    out = sample(model, tokenizer, query, mask, max_new_tokens=5, temperature=1.0)
    assert out.shape == (2, 1)  # the loop ends once every row has stopped
    assert out[:, 0].tolist() == [stop, stop]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_swapped_weights_compute_with_the_new_weight_and_leave_the_layer_as_it_was(dtype):
    """Inside the block a layer multiplies by the weight handed in (bf16 on a CPU: prepacked for oneDNN, with
    the same result to the bit as the plain product); afterwards its own weight and forward are back."""
    from posttrain.generation import packed_weight, swapped_weights

    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 48).to(dtype)
    own = layer.weight.detach().clone()
    new = torch.randn(48, 64, dtype=dtype)
    x = torch.randn(8, 3, 64, dtype=dtype)
    with torch.no_grad(), swapped_weights([(layer, new)]):
        inside = layer(x)
    assert torch.equal(inside, torch.nn.functional.linear(x, new, layer.bias))
    assert torch.equal(layer.weight, own) and "forward" not in vars(layer)
    assert torch.equal(layer(x), torch.nn.functional.linear(x, own, layer.bias))
    if dtype == torch.bfloat16 and packed_weight(new) is None:
        pytest.skip("this CPU's oneDNN has no bf16 product: the plain swap above was the path taken")
    assert (packed_weight(new) is not None) == (dtype == torch.bfloat16)


def test_large_fp32_weights_are_prepacked_on_x86_and_compute_the_same_product(monkeypatch):
    """fp32 weights of PACKED_FP32_MIN_ROWS outputs or more go to oneDNN prepacked on an x86 CPU (decoding's
    products in about 0.6-0.8 of the plain time); the product agrees with the plain one to fp32 summation order.
    Smaller ones, and every fp32 weight on another machine, are swapped in plain."""
    import platform

    from posttrain.generation import PACKED_FP32_MIN_ROWS, packed_weight, swapped_weights

    torch.manual_seed(0)
    layer = torch.nn.Linear(64, PACKED_FP32_MIN_ROWS)
    new = torch.randn(PACKED_FP32_MIN_ROWS, 64)
    x = torch.randn(8, 1, 64)
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        pytest.skip("not an x86 CPU with oneDNN: fp32 weights are swapped in plain here")
    assert packed_weight(new) is not None
    assert packed_weight(new[:-1]) is None  # one row short of the threshold
    with torch.no_grad(), swapped_weights([(layer, new)]):
        assert "forward" in vars(layer)  # the packed product, not the plain swap
        inside = layer(x)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, torch.nn.functional.linear(x, new, layer.bias), rtol=1e-5, atol=1e-5)
    assert "forward" not in vars(layer)
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    assert packed_weight(new) is None


def test_the_padder_pads_either_side_with_its_mask():
    from posttrain.padding import pad

    # rows of 3, 1 and 2 tokens: width 3; the mask is 1 exactly where a row's own tokens sit
    ids, mask = pad([[5, 6, 7], [8], [9, 10]], 0, "left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 9, 10]] and mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    ids, mask = pad([[5, 6, 7], [8], [9, 10]], 2)
    assert ids.tolist() == [[5, 6, 7], [8, 2, 2], [9, 10, 2]] and mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert ids.dtype == mask.dtype == torch.long


@pytest.fixture(scope="module")
def tiny_loaded(tmp_path_factory, real_tokenizer_dir):
    """A tiny random model (seed 7) whose greedy answers are words, repeated: 'InterestingInteresting...'."""
    from transformers import AutoTokenizer

    from conftest import build_tiny_model
    from posttrain.models import load_for_inference

    folder = build_tiny_model(tmp_path_factory.mktemp("tiny-7"), AutoTokenizer.from_pretrained(real_tokenizer_dir), seed=7)
    return load_for_inference(str(folder), device=torch.device("cpu"))


PROMPTS = [[{"role": "user", "content": "Name a fruit."}], [{"role": "user", "content": "Say hello to me, please."}]]


def test_eval_generation_through_transformers_matches_the_rollout_sampler_when_greedy(tiny_loaded):
    from posttrain.generation import generate_texts

    model, tokenizer = tiny_loaded.model, tiny_loaded.tokenizer
    texts = generate_texts(model, tokenizer, PROMPTS, max_new_tokens=8)
    query, mask, _ = encode_prompts(tokenizer, PROMPTS, 512, torch.device("cpu"))
    ours = [tokenizer.decode(r, skip_special_tokens=True).strip() for r in sample(model, tokenizer, query, mask, 8, 0.0)]
    assert texts == ours and all(texts)  # one greedy answer, whichever path drew it


def test_eval_generation_takes_chats_flags_and_stop_strings(tiny_loaded):
    from posttrain.generation import generate_texts

    model, tokenizer = tiny_loaded.model, tiny_loaded.tokenizer
    greedy = generate_texts(model, tokenizer, PROMPTS, max_new_tokens=12)
    penalised = generate_texts(model, tokenizer, PROMPTS, max_new_tokens=12, repetition_penalty=50.0)
    assert penalised != greedy
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in penalised]
    assert all(len(set(row)) == len(row) for row in ids)  # a huge penalty: no token twice
    assert greedy[0].startswith("InterestingInteresting")
    cut = generate_texts(model, tokenizer, PROMPTS[:1], max_new_tokens=12, stop=["estingInt"])
    assert cut == ["Inter"]  # ends before the first stop string
    torch.manual_seed(0)
    top1 = generate_texts(model, tokenizer, PROMPTS, max_new_tokens=8, temperature=1.0, top_k=1)
    assert top1 == generate_texts(model, tokenizer, PROMPTS, max_new_tokens=8)  # top-k 1 sampling is greedy
