"""Time the LM head of posttrain's DPO and SFT stages on the CPU against TRL's, on the default model, and a whole
training step with each head and each attention kernel.

    python bench/lm_head.py                 # 4 DPO pairs (8 rows), 10 rounds

TRL 1.16's DPOTrainer and SFTTrainer get per-token log-probs from a fused LM head
(``trl.trainer.utils.add_fused_lm_head``); without a Triton device it projects every position and folds each
vocabulary tile with torch ops. The stages answer the same call with ``posttrain.lm_head.use_lean_lm_head``,
which projects the completion's positions only. Both run on the same batch: pairs from
``data_samples/preferences.jsonl`` under the chat template, the model in fp32 under bf16 autocast where the CPU
has bf16 products (as the stages run), else fp32.

Hidden states come from one forward of the default model; only the heads are timed, forward and backward (to the
hidden states) separately, the two sides alternating, with their agreement. Then a whole training step (forward
and backward through the model with a fresh LoRA adapter, r=16 on all linear layers, as the stages train) is timed
three ways, alternating: TRL's head with SDPA attention (the stages before posttrain.lm_head), the lean head with
SDPA, and the lean head with eager attention for these short rows (the stages now; see posttrain.attention).
Writes bench/results/lm_head.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def batch(tokenizer, pairs: int):
    """ids, attention mask and labels (-100 on prompt and padding) of ``pairs`` chosen and rejected rows."""
    from posttrain.data import encode_response, load_preferences, render_prompt

    rows = load_preferences(str(REPO / "data_samples/preferences.jsonl")).rows[:pairs]
    seqs = []
    for key in ("chosen", "rejected"):
        for row in rows:
            prompt = tokenizer(render_prompt(tokenizer, row["prompt"]), add_special_tokens=False)["input_ids"]
            whole = encode_response(tokenizer, row["prompt"], row[key])
            seqs.append((prompt, whole[len(prompt):]))
    width = max(len(p) + len(r) for p, r in seqs)
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id)
    labels = torch.full((len(seqs), width), -100)
    for i, (p, r) in enumerate(seqs):
        ids[i, :len(p) + len(r)] = torch.tensor(p + r)
        labels[i, len(p):len(p) + len(r)] = torch.tensor(r)
    return ids, (labels != -100) | (torch.arange(width) < torch.tensor([len(p) for p, _ in seqs])[:, None]), labels


def timed(hidden: torch.Tensor, head) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """Forward and backward seconds of ``head(leaf) -> log-probs`` on a fresh leaf of ``hidden``, with its results."""
    leaf = hidden.detach().clone().requires_grad_(True)
    start = time.perf_counter()
    logprobs = head(leaf)
    middle = time.perf_counter()
    logprobs.sum().backward()
    end = time.perf_counter()
    return middle - start, end - middle, logprobs.detach().float(), leaf.grad.float()


def compare(sides: dict, hidden: torch.Tensor, rounds: int) -> dict:
    """Median forward/backward seconds of each side (interleaved), time ratio second/first, and their agreement."""
    times = {name: {"forward": [], "backward": []} for name in sides}
    last = {}
    for _ in range(rounds):
        for name, head in sides.items():
            forward, backward, logprobs, grad = timed(hidden, head)
            times[name]["forward"].append(forward)
            times[name]["backward"].append(backward)
            last[name] = (logprobs, grad)
    (before, ours) = list(sides)
    (lp_a, g_a), (lp_b, g_b) = last[before], last[ours]
    median = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
    total = {name: m["forward"] + m["backward"] for name, m in median.items()}
    return {"median_s": median, "time_ratio": total[ours] / total[before],
            "logprob_abs_diff_mean": float((lp_a - lp_b).abs().mean()),
            "logprob_abs_diff_max": float((lp_a - lp_b).abs().max()),
            "grad_rel_diff": float((g_a - g_b).norm() / g_a.norm())}


def training_steps(folder, ids, attention, labels, bf16: bool, rounds: int) -> dict:
    """Median seconds of one forward and backward pass of the whole model, three ways, and their losses."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from posttrain.attention import eager_attention_when_short
    from posttrain.lm_head import LEAN_OUTPUTS, use_lean_lm_head

    def build(lean: bool, eager: bool):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa")
        add_fused_lm_head(model, outputs=LEAN_OUTPUTS)
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
        if lean:
            assert use_lean_lm_head(model)
        if eager:
            assert eager_attention_when_short(model)
        return model

    sides = {"trl head, sdpa": build(False, False), "lean head, sdpa": build(True, False),
             "lean head, eager": build(True, True)}
    times, losses = {name: [] for name in sides}, {}
    for _ in range(rounds + 1):  # the first round warms up
        for name, model in sides.items():
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(input_ids=ids, attention_mask=attention, labels=labels, fused_lm_head=True)
            out.log_probs.sum().backward()
            times[name].append(time.perf_counter() - start)
            losses[name] = float(out.log_probs.detach().sum())
    median = {name: statistics.median(t[1:]) for name, t in times.items()}
    first = median["trl head, sdpa"]
    return {"median_s": median, "time_ratio": {name: m / first for name, m in median.items()},
            "sum_logprob": losses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_outputs import BaseModelOutputWithPast
    from trl.trainer.utils import add_fused_lm_head

    from posttrain.lm_head import LEAN_OUTPUTS, use_lean_lm_head
    from posttrain.models import DEFAULT_MODEL, cpu_has_fast_bf16, resolve_model

    folder = resolve_model(DEFAULT_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    bf16 = cpu_has_fast_bf16()
    ids, attention, labels = batch(tokenizer, args.pairs)
    result = {"date": time.strftime("%Y-%m-%d"), "cpu": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "rows": len(ids), "positions": int(ids.numel() - len(ids)),
              "completion_positions": int((labels[:, 1:] != -100).sum())}

    # TRL's fused head against the lean one, as the DPO stage runs them
    models = {}
    for name in ("trl", "posttrain"):
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).requires_grad_(False)
        add_fused_lm_head(model, outputs=LEAN_OUTPUTS)  # as DPOTrainer adds it
        if name == "posttrain":
            assert use_lean_lm_head(model)
        models[name] = model
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        hidden = models["trl"].model(input_ids=ids, attention_mask=attention).last_hidden_state

    def fused(model):
        def head(leaf):
            # the backbone's forward returns the given hidden states, so only the head is timed
            model.model.forward = lambda *a, **k: BaseModelOutputWithPast(last_hidden_state=leaf)
            try:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    return model(input_ids=ids, attention_mask=attention, labels=labels, fused_lm_head=True).log_probs
            finally:
                del model.model.forward
        return head

    result["dpo_sft"] = {"precision": "bf16 autocast" if bf16 else "fp32",
                         **compare({name: fused(m) for name, m in models.items()}, hidden, args.rounds)}
    print(json.dumps(result["dpo_sft"], indent=1), flush=True)
    result["step"] = {"precision": "bf16 autocast" if bf16 else "fp32",
                      **training_steps(folder, ids, attention, labels, bf16, args.rounds)}
    print(json.dumps(result["step"], indent=1), flush=True)

    out = HERE / "results" / "lm_head.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
