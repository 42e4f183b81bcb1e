"""Where an online-RL step's time goes, by the model calls of posttrain's loop, for PPO and a critic-free algorithm on
the same batch: what the critic costs, and how many passes through the body a step makes.

    python bench/rl_step_profile.py                    # PPO and REINFORCE++ (no critic), this CPU's precision
    python bench/rl_step_profile.py --cpu avx2         # oneDNN/ATen limited to AVX2: the fp32 base of a CPU
                                                       # without bf16 units, as bench/ppo_vs_trl.py --cpu avx2
    python bench/rl_step_profile.py --algos ppo --set ppo.minibatch_size=2 --set ppo.grad_accum=2 --tag micro2
                                                       # other settings (here: the same optimizer steps in passes of 2)

The batch is bench/ppo_vs_trl.py's (8 responses of 32 tokens, 2 epochs x 2 minibatches, LoRA r=16, the reward model
made or found as there); one thread by default here (--threads), as the README's ppo_vs_trl runs used. Each algorithm runs in its own process; the first step is warm-up and
the rest are averaged; each run's peak memory is its own VmHWM (bench/peak_memory.py). Every call of the roles' passes (Roles.hidden, .forward, .score, .reference_logprobs,
.rollout) and every backward is timed: nested calls count in each (a forward's hidden pass is in both). Writes
bench/results/rl_step_profile[_avx2][-TAG].json.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

TIMED = ("rollout", "hidden", "forward", "score", "reference_logprobs")


def worker(args) -> None:
    """One run in this process; prints RESULT with the phases and the per-call times of the steps after the first."""
    import torch

    from posttrain.config import RLHFConfig, load_config
    from posttrain.stages import rlhf_roles
    from posttrain.stages.rlhf import run_rlhf

    torch.set_num_threads(args.threads)
    totals: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter = collections.Counter()

    def timed(name, fn):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            started = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                totals[name] += time.perf_counter() - started
                calls[name] += 1
        return wrapper

    for method in TIMED:
        setattr(rlhf_roles.Roles, method, timed(method, getattr(rlhf_roles.Roles, method)))
    torch.Tensor.backward = timed("backward", torch.Tensor.backward)
    steps = []

    def on_step(roles, record):
        steps.append({k: record[k] for k in ("rollout_seconds", "score_seconds", "optimise_seconds", "step_seconds")})
        if len(steps) == 1:  # the warm-up step is not counted
            totals.clear()
            calls.clear()

    config = load_config(RLHFConfig, None, {
        "model": args.model, "reward_model": args.reward_model, "prompts": args.prompts_file, "algo": args.worker,
        "output": tempfile.mkdtemp(), "rollout.batch_size": 8, "rollout.max_new_tokens": 32, "rollout.temperature": 0.7,
        "ppo.minibatch_size": 4, "ppo.epochs": 2, "ppo.steps": args.steps, "ppo.save_steps": 0, "lora.r": 16,
        "lora.alpha": 32, **dict(item.split("=", 1) for item in args.set)})
    run_rlhf(config, on_step=on_step)
    from peak_memory import peak_mib

    counted = len(steps) - 1
    print("RESULT " + json.dumps({
        "algo": args.worker, "steps": steps, "peak_rss_mib": peak_mib(), "settings": args.set,
        "step_seconds": sum(s["step_seconds"] for s in steps[1:]) / counted,
        "phases": {k: sum(s[k] for s in steps[1:]) / counted for k in ("rollout_seconds", "score_seconds", "optimise_seconds")},
        "calls": {name: {"seconds_per_step": totals[name] / counted, "calls_per_step": calls[name] / counted}
                  for name in sorted(totals, key=totals.get, reverse=True)}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--reward-model", default="")
    parser.add_argument("--algos", default="ppo,reinforce_pp")
    parser.add_argument("--steps", type=int, default=3, help="steps per run (the first is warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpu", choices=["native", "avx2"], default="native")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a posttrain rlhf setting for every run")
    parser.add_argument("--tag", default="", help="names the results file")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    parser.add_argument("--prompts-file", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first is warm-up)")
    if args.worker:
        return worker(args)
    from ppo_vs_trl import AVX2_ENV, cpu_description, default_reward_model
    from workers import run_worker

    if args.cpu == "avx2":
        os.environ.update(AVX2_ENV)  # every worker inherits it before torch loads
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    reward_model = args.reward_model or default_reward_model(args.model, env)
    rows = [json.loads(line) for line in (REPO / "data_samples/prompts.jsonl").read_text().splitlines()]
    prompts = Path(tempfile.mkdtemp()) / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": r["prompt"]}) + "\n" for r in (rows * 4)[:8 * args.steps]))
    results = {}
    for algo in args.algos.split(","):
        results[algo] = run_worker([sys.executable, __file__, "--worker", algo, "--model", args.model, "--reward-model",
                                    reward_model, "--prompts-file", str(prompts), "--steps", str(args.steps),
                                    "--threads", str(args.threads), *(f"--set={item}" for item in args.set)], env)
        r = results[algo]
        print(f"{algo}: {r['step_seconds']:.2f} s a step, peak {r['peak_rss_mib']:.0f} MiB; " + ", ".join(f"{k} {v:.2f}" for k, v in r["phases"].items()))
        for name, c in r["calls"].items():
            print(f"    {name:<20} {c['seconds_per_step']:7.2f} s a step in {c['calls_per_step']:.0f} calls")
    name = "rl_step_profile" + ("" if args.cpu == "native" else f"_{args.cpu}") + (f"-{args.tag}" if args.tag else "")
    out = HERE / "results" / f"{name}.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "cpu": cpu_description(), "settings": vars(args),
                               "results": results}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
