"""Benchmark: posttrain's GRPO and RLOO against TRL's GRPOTrainer and RLOOTrainer (the trl in this virtualenv,
1.16), with LoRA, on the same model, prompts, group size, lengths and LoRA rank, interleaved.

    python bench/rl_vs_trl.py                       # default model, 5 steps per run (the first is warm-up), 2 rounds
    python bench/rl_vs_trl.py --steps 6 --rounds 3 --impls posttrain-grpo,trl-grpo
    python bench/rl_vs_trl.py --impls posttrain-grpo,trl-grpo --set ppo.epochs=1 --set ppo.kl_coef=0 --tag trl-work
                                                    # posttrain with settings of its own (here TRL's amount of work)

Each step is one generation batch: --prompts-per-step prompts x --group-size responses of at most --response-length
tokens, scored by the same reward function (posttrain.rewards:answer_format on data_samples/math.jsonl). Beyond
these shared settings each side runs with its own defaults (TRL: its GRPOConfig/RLOOConfig defaults, bf16 on, one
optimisation pass per batch, beta 0 for GRPO so no reference model; posttrain: its rlhf defaults), and gradient
checkpointing is off on the CPU for both. Each run is its own process and reports its own peak resident memory
(VmHWM, bench/peak_memory.py). Writes bench/results/rl_vs_trl.json and prints medians and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from peak_memory import peak_mib  # noqa: E402
from workers import run_worker  # noqa: E402

REWARD = "posttrain.rewards:answer_format"


def prompts_rows(count: int) -> list[dict]:
    rows = [json.loads(line) for line in (REPO / "data_samples/math.jsonl").read_text().splitlines()]
    return (rows * (1 + count // len(rows)))[:count]


def posttrain_worker(args) -> None:
    from posttrain.config import RLHFConfig, load_config
    from posttrain.stages.rlhf import run_rlhf

    prompts = Path(tempfile.mkdtemp()) / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in prompts_rows(args.prompts_per_step * args.steps)))
    seconds, phases = [], []

    def on_step(roles, record):
        seconds.append(record["step_seconds"])
        phases.append({k: round(record[k], 2) for k in ("rollout_seconds", "score_seconds", "optimise_seconds")})

    run_rlhf(load_config(RLHFConfig, None, {
        "model": args.model, "algo": args.worker.removeprefix("posttrain-"), "reward_fn": REWARD, "prompts": str(prompts),
        "output": tempfile.mkdtemp(), "ppo.steps": args.steps, "ppo.save_steps": 0,
        "rollout.batch_size": args.prompts_per_step * args.group_size, "rollout.group_size": args.group_size,
        "rollout.max_new_tokens": args.response_length, "lora.r": args.lora_r, "lora.alpha": 2 * args.lora_r,
        **dict(item.split("=", 1) for item in args.set)}), on_step=on_step)
    print("RESULT " + json.dumps({"impl": args.worker, "step_seconds": seconds, "peak_rss_mib": peak_mib(), "phases": phases}))


def trl_worker(args) -> None:
    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from posttrain.rewards import answer_format

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.marks = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter()) if not self.marks else None

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

    algo = args.worker.removeprefix("trl-")
    config_cls, trainer_cls = (trl.GRPOConfig, trl.GRPOTrainer) if algo == "grpo" else (trl.RLOOConfig, trl.RLOOTrainer)
    tokenizer = AutoTokenizer.from_pretrained(args.model, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    dataset = Dataset.from_list([{"prompt": r["prompt"]} for r in prompts_rows(args.prompts_per_step * args.steps)])
    responses = args.prompts_per_step * args.group_size
    config = config_cls(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=responses, num_generations=args.group_size,
                        max_completion_length=args.response_length, max_steps=args.steps, use_cpu=True,
                        gradient_checkpointing=False, report_to="none", save_strategy="no", logging_steps=1, seed=0,
                        dataloader_num_workers=0)
    timer = StepTimer()
    trainer = trainer_cls(model=model, reward_funcs=[answer_format], args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[timer],
                          peft_config=LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    trainer.train()
    steps = [b - a for a, b in zip(timer.marks, timer.marks[1:])]
    print("RESULT " + json.dumps({"impl": args.worker, "step_seconds": steps, "peak_rss_mib": peak_mib(),
                                  "precision": "fp32 weights" + (", bf16 autocast" if config.bf16 else ""),
                                  "trl": trl.__version__}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=5, help="steps per run (the first is warm-up)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--prompts-per-step", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--impls", default="posttrain-grpo,trl-grpo,posttrain-rloo,trl-rloo")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a posttrain rlhf setting for posttrain's runs (repeatable), e.g. ppo.epochs=1")
    parser.add_argument("--tag", default="", help="writes bench/results/rl_vs_trl-TAG.json instead")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker.startswith("posttrain-"):
        return posttrain_worker(args)
    if args.worker.startswith("trl-"):
        return trl_worker(args)

    from posttrain.models import cpu_has_fast_bf16, resolve_model

    model_dir = resolve_model(args.model)
    shared = ["--model", model_dir, "--steps", str(args.steps), "--prompts-per-step", str(args.prompts_per_step),
              "--group-size", str(args.group_size), "--response-length", str(args.response_length), "--lora-r", str(args.lora_r),
              *[f"--set={item}" for item in args.set]]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    impls = args.impls.split(",")
    results: dict[str, list[dict]] = {name: [] for name in impls}
    for round_number in range(args.rounds):
        for name in impls:
            print(f"round {round_number + 1}/{args.rounds}: {name} ...", flush=True)
            results[name].append(run_worker([sys.executable, __file__, "--worker", name, *shared], env))
            print(f"  {[round(s, 2) for s in results[name][-1]['step_seconds']]}", flush=True)

    summary = {}
    for name, runs in results.items():
        steps = [s for r in runs for s in r["step_seconds"][1:]]  # each run's first step is warm-up
        summary[name] = {"median_step_seconds": statistics.median(steps), "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
                         "runs": runs}
    print(f"\nRL step on {args.model}: {args.prompts_per_step} prompts x {args.group_size} responses, {args.response_length} "
          f"new tokens, LoRA r={args.lora_r}, {args.rounds} interleaved rounds")
    print(f"{'implementation':<16}{'s/step':>10}{'peak MiB':>12}{'time ratio':>12}{'memory ratio':>14}")
    for name, s in summary.items():
        peer = summary.get(name.replace("posttrain-", "trl-")) if name.startswith("posttrain-") else None
        if peer:
            s["time_ratio_vs_trl"] = s["median_step_seconds"] / peer["median_step_seconds"]
            s["memory_ratio_vs_trl"] = s["peak_rss_mib"] / peer["peak_rss_mib"]
        ratios = f"{s['time_ratio_vs_trl']:>12.2f}{s['memory_ratio_vs_trl']:>14.2f}" if peer else ""
        print(f"{name:<16}{s['median_step_seconds']:>10.2f}{s['peak_rss_mib']:>12.0f}{ratios}")
    out = HERE / "results" / f"rl_vs_trl{'-' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps({"settings": vars(args), "cpu_fast_bf16": cpu_has_fast_bf16(), "summary": summary}, indent=2) + "\n")
    print(f"\nratios are posttrain / trl for the same algorithm (lower is better); written to {out}")


if __name__ == "__main__":
    main()
