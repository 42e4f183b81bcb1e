"""The lean LM head against a plain log_softmax and against TRL's fused head, values and gradients."""

from __future__ import annotations

import pytest
import torch

from posttrain import generation, lm_head, prefix_tree
from posttrain.lm_head import CompactLogProbs, use_lean_lm_head


def test_compact_log_probs_match_a_full_log_softmax_and_its_gradients(monkeypatch):
    monkeypatch.setattr(lm_head, "CHUNK_ELEMENTS", 100)  # vocabulary 40: 2 rows a chunk, so 7 rows take 4 chunks
    torch.manual_seed(0)
    hidden, weight, bias = torch.randn(7, 8), torch.randn(40, 8), torch.randn(40)
    targets = torch.randint(0, 40, (7,))
    targets[0] = (hidden[0] @ weight.t() + bias).argmax()  # one row whose label is the top token
    upstream = torch.randn(7)  # d loss / d log p, different for every row

    def grads(fn):
        leaves = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
        out = fn(*leaves)
        (out[0] * upstream).sum().backward()
        return [o.detach() for o in out], [t.grad for t in leaves]

    def plain(h, w, b):
        logits = h @ w.t() + b
        logp = torch.log_softmax(logits, -1)
        return (logp.gather(-1, targets[:, None]).squeeze(-1), -(logp.exp() * logp).sum(-1), logits.mean(-1),
                logits.argmax(-1) == targets)

    (ours, ours_grads), (want, want_grads) = grads(lambda h, w, b: CompactLogProbs.apply(h, w, b, targets)), grads(plain)
    for got, expected in zip(ours, want):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert ours[3][0] and not ours[3].all()
    for got, expected in zip(ours_grads, want_grads):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.fixture()
def trl_patched(tiny_model_dir):
    """The tiny model with TRL's fused head (as DPOTrainer adds it, fp32, on the CPU) under a random LoRA adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    add_fused_lm_head(model, outputs=lm_head.LEAN_OUTPUTS)
    # init_lora_weights=False: B is random too, so the adapter changes the hidden states and A gets a gradient
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))


def fused_call(model, labels_from: int):
    """Fields and LoRA gradients of one ``fused_lm_head=True`` call: 2 rows, one padded, labels from a position on."""
    torch.manual_seed(1)
    ids = torch.randint(10, 1000, (2, 12))
    attention = torch.ones_like(ids)
    attention[1, -3:] = 0
    labels = ids.masked_fill(attention == 0, -100)
    labels[:, :labels_from] = -100
    model.zero_grad()
    out = model(input_ids=ids, attention_mask=attention, labels=labels, fused_lm_head=True)
    (out.log_probs.sum() + out.loss).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("labels_from", [5, 12])  # 12: every label masked, a batch of prompt only
def test_lean_head_answers_trls_fused_call_as_trls_head_does(trl_patched, monkeypatch, labels_from):
    import trl.trainer.utils as trl_utils

    model = trl_patched
    trl_out, trl_grads = fused_call(model, labels_from)
    with torch.no_grad():
        logits = model(input_ids=torch.arange(10, 16)[None]).logits  # the unfused forward, for generation
    assert use_lean_lm_head(model) and use_lean_lm_head(model)  # installs once; the second call finds it

    def trl_head(*args):
        raise AssertionError("TRL's fused head ran on the CPU")

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", trl_head)
    out, grads = fused_call(model, labels_from)
    for field in ("loss", "log_probs", "entropy", "mean_logits", "is_top1", "label_mask"):
        torch.testing.assert_close(getattr(out, field), getattr(trl_out, field), rtol=1e-5, atol=1e-5, msg=field)
    assert set(grads) == set(trl_grads) and any(g.abs().max() > 0 for g in grads.values()) == (labels_from < 12)
    for name in grads:
        torch.testing.assert_close(grads[name], trl_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=torch.arange(10, 16)[None]).logits, logits)


def _fields_and_grads(model, ids, attention, labels, **extra):
    model.zero_grad()
    out = model(input_ids=ids, attention_mask=attention, labels=labels, fused_lm_head=True, **extra)
    (out.log_probs.sum() + out.loss).backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(got, want):
    (out, grads), (trl_out, trl_grads) = got, want
    for field in ("loss", "log_probs", "entropy", "mean_logits", "is_top1", "label_mask"):
        torch.testing.assert_close(getattr(out, field), getattr(trl_out, field), rtol=1e-5, atol=1e-5, msg=field)
    assert set(grads) == set(trl_grads) and all(g.abs().max() > 0 for g in grads.values())
    for name in grads:
        torch.testing.assert_close(grads[name], trl_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def _body_inputs(model) -> tuple[list, object]:
    seen = []
    body = model.get_base_model().base_model
    return seen, body.embed_tokens.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape)))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_the_lean_head_runs_each_token_rows_share_once_with_the_same_numbers(trl_patched, monkeypatch, attention):
    """A chat template's system prompt opens every row, and DPO's chosen and rejected rows share their prompt: the
    lean pass packs the batch's prefix tree into one row, each shared token once, and returns the fields and LoRA
    gradients of whole rows (fp32), with or without positions, and under gradient checkpointing."""
    import trl.trainer.utils as trl_utils

    model = trl_patched
    model.get_base_model().set_attn_implementation(attention)
    assert model.get_base_model().base_model.config._attn_implementation == attention
    torch.manual_seed(2)
    system = torch.randint(10, 1000, (1, 30)).repeat(4, 1)
    prompts = torch.randint(10, 1000, (2, 10)).repeat_interleave(2, 0)  # rows 0-1 and 2-3 share a prompt (DPO)
    ids = torch.cat([system, prompts, torch.randint(10, 1000, (4, 7))], dim=1)
    ids[1, 40] = ids[0, 40]  # and one more token of the answer
    attention = torch.ones_like(ids)
    attention[1, -2:] = 0
    attention[2, -4:] = 0
    labels = ids.masked_fill(attention == 0, -100)  # the system prompt's own columns are scored too

    want = _fields_and_grads(model, ids, attention, labels)
    assert use_lean_lm_head(model)
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", lambda *a: pytest.fail("TRL's head ran"))
    seen, hook = _body_inputs(model)
    _assert_same(_fields_and_grads(model, ids, attention, labels), want)
    # with the positions TRL's SFT collator can pass (return_position_ids)
    _assert_same(_fields_and_grads(model, ids, attention, labels,
                                   position_ids=torch.arange(ids.shape[1]).repeat(4, 1) * attention), want)
    # a row twice, and a row that is another's beginning: their tokens run once, and their gradients add up
    twice = torch.cat([ids[:3], ids[:1]])
    twice_attention = torch.cat([attention[:3], attention[:1]])
    twice_attention[2, 30:] = 0  # row 2 is now the system prompt alone, the beginning of every other row
    twice_labels = twice.masked_fill(twice_attention == 0, -100)
    hook.remove()
    with monkeypatch.context() as whole_rows:  # the lean head on whole rows (TRL's numbers, tested above)
        whole_rows.setattr(prefix_tree, "LEAST_SAVED_SHARE", 2.0)
        whole_rows.setattr(generation, "LEAST_SAVED_TOKENS", 10**9)
        want_twice = _fields_and_grads(model, twice, twice_attention, twice_labels)
    seen_twice, hook = _body_inputs(model)
    _assert_same(_fields_and_grads(model, twice, twice_attention, twice_labels), want_twice)
    # gradient checkpointing: whole rows (its recomputation would pick the attention kernel afresh)
    model.get_base_model().gradient_checkpointing_enable()
    model.train()
    _assert_same(_fields_and_grads(model, ids, attention, labels), want)
    hook.remove()
    # 30 system tokens, 2 prompts of 10, then the answers: 7, 1 + 4 (one shared token, 2 padded), 3, 7
    assert seen == [(1, 30 + 20 + 7 + 4 + 3 + 7)] * 2
    assert seen_twice == [(1, 30 + 10 + 7 + 4), (4, 47)]


def test_the_lean_head_runs_a_shared_prefix_once_where_the_packed_tree_would_not_pay(trl_patched):
    """Long rows: the packed row's dense attention would cost more than the rows' shared prefix saves, so the
    prefix runs once and every row continues from its KV cache, with the numbers of whole rows (fp32)."""
    model = trl_patched
    torch.manual_seed(3)
    ids = torch.cat([torch.randint(10, 1000, (1, 60)).repeat(3, 1), torch.randint(10, 1000, (3, 200))], dim=1)
    attention = torch.ones_like(ids)
    attention[2, -5:] = 0
    labels = ids.masked_fill(attention == 0, -100)
    want = _fields_and_grads(model, ids, attention, labels)
    assert use_lean_lm_head(model)
    seen, hook = _body_inputs(model)
    _assert_same(_fields_and_grads(model, ids, attention, labels), want)
    hook.remove()
    assert seen == [(1, 60), (3, 200)]


def test_the_lean_head_runs_whole_rows_where_sharing_would_not_pay_or_not_be_the_same_pass(trl_patched):
    from posttrain.stages.common import train_lora_dropout

    model = trl_patched
    assert use_lean_lm_head(model)

    def rows(prefix):
        return torch.cat([torch.randint(10, 1000, (1, prefix)).repeat(3, 1), torch.randint(10, 1000, (3, 5))], dim=1)

    seen, hook = _body_inputs(model)
    ids = rows(1)  # nothing shared but the first token: the tree saves 2 of 18 tokens
    model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids, fused_lm_head=True)
    ids = rows(50)
    packed = torch.arange(55).repeat(3, 1)
    packed[:, 52:] = torch.arange(3)  # a second sequence packed into each row
    model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=packed, labels=ids, fused_lm_head=True)
    holey = torch.ones_like(ids)
    holey[0, 20] = 0  # a row whose tokens are not one run
    model(input_ids=ids, attention_mask=holey, labels=ids, fused_lm_head=True)
    train_lora_dropout(model, "default", 0.1)
    model.train()  # one dropout mask for a shared token of every row would not be whole rows' draws
    model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids, fused_lm_head=True)
    train_lora_dropout(model, "default", 0.0)
    ids = rows(40)  # without dropout the tree pays (the 40 columns' KV pass would save too little)
    model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids, fused_lm_head=True)
    hook.remove()
    assert seen == [(3, 6), (3, 55), (3, 55), (3, 55), (1, 55)]


def test_lean_head_stays_out_where_it_would_not_answer_the_same(trl_patched):
    assert not use_lean_lm_head(trl_patched, lm_head.LEAN_OUTPUTS + ("log_sum_sq_probs",))  # WPO weighting
    trl_patched.get_base_model().config.final_logit_softcapping = 30.0
    assert not use_lean_lm_head(trl_patched)


def test_a_frozen_output_layers_cast_is_kept_until_the_weight_changes():
    import gc

    torch.manual_seed(0)
    weight, hidden, targets = torch.randn(40, 8), torch.randn(5, 8, requires_grad=True), torch.randint(0, 40, (5,))

    def log_probs(w):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return CompactLogProbs.apply(hidden, w, None, targets)[0]

    first = log_probs(weight)
    assert lm_head._cast(weight, torch.bfloat16) is lm_head._cast(weight, torch.bfloat16)  # kept, not cast again
    weight.mul_(-1)  # changed in place: the kept cast is stale
    changed = log_probs(weight)
    assert torch.equal(changed, log_probs(weight.clone())) and not torch.allclose(changed, first)
    changed.sum().backward()  # the backward pass casts the changed weight too
    expected = torch.autograd.grad(log_probs(weight.clone()).sum(), hidden)[0]
    assert torch.equal(hidden.grad, expected)

    trained = torch.randn(40, 8, requires_grad=True)
    assert lm_head._cast(trained, torch.bfloat16) is not lm_head._cast(trained, torch.bfloat16)  # never kept
    lm_head._cast(weight, torch.bfloat16)
    del weight, first, changed  # the graphs of these kept it alive too
    gc.collect()
    assert not lm_head._CAST  # the weight's end drops its cast


def test_a_batch_packs_as_a_prefix_tree_only_where_positions_are_depths_and_attention_is_causal(tiny_model_dir):
    from transformers import AutoConfig

    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 9, 0], [5, 6, 7, 8]])
    right = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]])
    tree = prefix_tree.prefix_tree(ids, right)
    assert tree.ids.tolist() == [[5, 6, 7, 8, 9]] and tree.positions.tolist() == [[0, 1, 2, 3, 2]]
    assert tree.node_of.tolist() == [[0, 1, 2, 3], [0, 1, 4, 0], [0, 1, 2, 3]]
    assert tree.allowed[4].tolist() == [True, True, False, False, True]  # 9 sees 5, 6 and itself, not 7 or 8
    left = right.flip(1)  # left padding: a row's positions would not be its columns
    assert prefix_tree.prefix_tree(ids, left) is None
    assert prefix_tree.prefix_tree(ids, torch.zeros_like(ids)) is None

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config._attn_implementation = "sdpa"
    assert prefix_tree.tree_shareable(config, 100)
    for field, value in (("alibi", True), ("use_bidirectional_attention", True), ("attention_chunk_size", 64),
                         ("sliding_window", 64)):
        changed = AutoConfig.from_pretrained(tiny_model_dir)
        changed._attn_implementation = "sdpa"
        setattr(changed, field, value)
        assert not prefix_tree.tree_shareable(changed, 100), field
        assert prefix_tree.tree_shareable(changed, 64) == (field in ("attention_chunk_size", "sliding_window")), field
    config._attn_implementation = "flash_attention_2"  # a kernel that reads no 4-D mask
    assert not prefix_tree.tree_shareable(config, 100)
