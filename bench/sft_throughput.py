"""Benchmark: SFT training throughput (tokens/s) on the default model, and that rate as a share of the
machine's fp32 matmul rate measured in the same run.

    python bench/sft_throughput.py                     # default model, 10 optimizer steps
    python bench/sft_throughput.py --steps 20 --batch-size 8 --max-length 256

Training runs through the real stage (posttrain.stages.sft.run_sft) with logging every step; the first step
is warm-up and is not counted. Tokens are the real (unpadded) tokens TRL counts in each batch.

Model FLOPs per token (Kaplan et al. 2020; Chinchilla appendix F): a forward pass costs 2N; the backward pass
costs 2N for the activation gradients and another 2N for the weight gradients, which LoRA skips for the frozen
base. So 6N for full fine-tuning and 4N for LoRA (the adapters' own FLOPs are ignored), where N is the
non-embedding parameters plus the output layer (the embedding lookup is not a matmul; the output projection is).
Attention-score FLOPs (quadratic in length) are left out, as in the 6N rule.

Writes bench/results/sft_throughput.json and prints a small table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def matmul_flops(size: int = 1024, seconds: float = 3.0) -> float:
    """Best fp32 FLOP/s of a (size x size) @ (size x size) matmul over several timed bursts."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):  # warm-up: thread pool, caches
        a @ b
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start, reps = time.perf_counter(), 5
        for _ in range(reps):
            a @ b
        best = max(best, reps * 2 * size**3 / (time.perf_counter() - start))
    return best


def flop_parameters(model) -> dict[str, int]:
    """N for the 6N / 4N rule: every parameter except the input embedding, plus the output layer once."""
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters())  # a tied head shares the embedding's storage: counted once
    tied = head.data_ptr() == embedding.data_ptr()
    non_embedding = total - embedding.numel() - (0 if tied else head.numel())
    return {"total": total, "non_embedding": non_embedding, "output_layer": head.numel(),
            "N": non_embedding + head.numel(), "tied_output_layer": tied}


def run(args) -> dict:
    import torch

    from posttrain.config import SFTConfig, load_config
    from posttrain.models import load_base_model
    from posttrain.report import MetricsRecorder
    from posttrain.stages import sft

    if args.threads:
        torch.set_num_threads(args.threads)

    class TimedRecorder(MetricsRecorder):
        """Stamps each per-step log line with the wall clock."""

        def on_log(self, args_, state, control, logs=None, **kwargs):
            super().on_log(args_, state, control, logs=logs, **kwargs)
            if logs and "num_tokens" in logs and "loss" in logs:
                self.history[-1]["wall"] = time.perf_counter()
                timed.append(self.history[-1])

    timed: list[dict] = []
    load_before = os.getloadavg()[0]
    params = flop_parameters(load_base_model(args.model, dtype=torch.float32, device=torch.device("cpu")))
    peak = matmul_flops(args.matmul_size, args.matmul_seconds)

    sft.MetricsRecorder = TimedRecorder  # the stage builds its recorder by this name
    with tempfile.TemporaryDirectory() as output:
        config = load_config(SFTConfig, None, {
            "model": args.model, "data": args.data, "output": output, "lora.r": args.lora_r, "lora.alpha": 2 * args.lora_r,
            "train.max_steps": args.steps + 1, "train.batch_size": args.batch_size, "train.max_length": args.max_length,
            "train.logging_steps": 1, "train.save_steps": 0, "packing": args.packing})
        started = time.perf_counter()
        sft.run_sft(config)
        total_seconds = time.perf_counter() - started
    peak_after = matmul_flops(args.matmul_size, args.matmul_seconds)  # the machine may have got busier meanwhile

    counted = timed[1:]  # the first step is warm-up
    tokens = timed[-1]["num_tokens"] - timed[0]["num_tokens"]
    seconds = timed[-1]["wall"] - timed[0]["wall"]
    tokens_per_s = tokens / seconds
    lora_flops = 4 * params["N"] * tokens_per_s
    matmul_rate = max(peak, peak_after)
    return {
        "model": args.model, "steps_timed": len(counted), "batch_size": args.batch_size, "max_length": args.max_length,
        "packing": args.packing, "lora_r": args.lora_r, "tokens_timed": int(tokens), "seconds_timed": seconds,
        "tokens_per_s": tokens_per_s, "seconds_per_step": seconds / len(counted),
        "params": params, "flops_per_token_lora": 4 * params["N"], "flops_per_token_full": 6 * params["N"],
        "achieved_flops_lora": lora_flops,
        "matmul_flops_fp32": matmul_rate, "matmul_flops_fp32_before": peak, "matmul_flops_fp32_after": peak_after,
        "matmul_size": args.matmul_size, "fraction_of_matmul": lora_flops / matmul_rate,
        "wall_seconds_total": total_seconds, "threads": torch.get_num_threads(),
        "load_average_1m_before_after": [load_before, os.getloadavg()[0]],  # other work on the machine slows both rates
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "cuda": torch.cuda.is_available()},
    }


def print_table(result: dict) -> None:
    rows = [
        ("model", result["model"]),
        ("N (non-embedding + output layer)", f"{result['params']['N'] / 1e6:.1f}M"),
        ("batch x max_length", f"{result['batch_size']} x {result['max_length']}" + (" (packed)" if result["packing"] else "")),
        ("steps timed (after 1 warm-up)", result["steps_timed"]),
        ("seconds per step", f"{result['seconds_per_step']:.2f}"),
        ("training tokens/s", f"{result['tokens_per_s']:.0f}"),
        ("LoRA FLOP/s (4N per token)", f"{result['achieved_flops_lora'] / 1e9:.1f} GFLOP/s"),
        (f"fp32 matmul rate ({result['matmul_size']}^2)", f"{result['matmul_flops_fp32'] / 1e9:.1f} GFLOP/s"),
        ("share of matmul rate", f"{100 * result['fraction_of_matmul']:.1f}%"),
        ("threads", result["threads"]),
        ("load average (1 min) before / after", " / ".join(f"{x:.1f}" for x in result["load_average_1m_before_after"])),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", default=str(REPO / "data_samples" / "sft_messages.jsonl"))
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps (one more runs as warm-up)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--packing", action="store_true")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--matmul-size", type=int, default=1024)
    parser.add_argument("--matmul-seconds", type=float, default=3.0)
    parser.add_argument("--output", default=str(HERE / "results" / "sft_throughput.json"))
    args = parser.parse_args()

    result = run(args)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print()
    print_table(result)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
