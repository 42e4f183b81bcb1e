"""Benchmark: posttrain's PPO against trl 1.12.0's experimental PPOTrainer, on the same model, prompts,
batch size and lengths, interleaved in one session.

    python bench/ppo_vs_trl.py                      # default model, 4 PPO steps per run, 2 rounds
    python bench/ppo_vs_trl.py --steps 6 --rounds 3

    python bench/ppo_vs_trl.py --cpu avx2           # as on a CPU without AVX512-BF16/AMX (oneDNN and ATen
                                                    # limited to AVX2; posttrain's base then stays fp32)
    python bench/ppo_vs_trl.py --variant separate:ppo.critic=separate --tag critics
                                                    # one more posttrain run per round, with other settings

trl 1.12.0 (the last release with PPO) is installed by this script into its own virtualenv
(bench/.venv-trl112) with the same torch. Each run is a separate process and reports its own peak resident
memory (VmHWM, which exec resets; see bench/peak_memory.py); the reward model the runs score with is made in a
subprocess too, so the parent stays small. Runs are interleaved (ours, trl full, trl peft, ours, ...) so machine
noise hits all three alike. The first PPO step of each run is warm-up and is not counted.
Writes bench/results/ppo_vs_trl[_avx2][-TAG].json (with the CPU's bf16 capability and the precision each side used)
and prints a table of medians and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TRL_VENV = HERE / ".venv-trl112"
sys.path.insert(0, str(HERE))
from peak_memory import peak_mib  # noqa: E402
from workers import run_worker  # noqa: E402

# What `--cpu avx2` sets for every worker: oneDNN and ATen kernels limited to AVX2, as on a CPU without bf16 units
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def ensure_trl_venv() -> Path:
    python = TRL_VENV / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", "import trl.experimental.ppo"], capture_output=True).returncode == 0:
        return python
    print(f"installing trl 1.12.0 into {TRL_VENV} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    import torch

    subprocess.run(pip + [f"torch=={torch.__version__.split('+')[0]}"], check=True)
    subprocess.run(pip + ["trl==1.12.0", "transformers>=5,<6", "peft", "accelerate", "datasets"], check=True)
    return python


def ours_worker(args) -> None:
    """One run of posttrain's PPO in this process; prints the RESULT line."""
    import torch

    from posttrain.config import RLHFConfig, load_config
    from posttrain.stages.rlhf import run_rlhf

    if args.threads:
        torch.set_num_threads(args.threads)
    seconds = []
    settings = dict(item.split("=", 1) for item in args.set)
    config = load_config(RLHFConfig, None, {**settings, **shared_settings(args, tempfile.mkdtemp())})
    lengths, phases = [], []

    def on_step(roles, record):
        seconds.append(record["step_seconds"])
        lengths.append(record["response_length"])
        phases.append({k: round(record[k], 2) for k in ("rollout_seconds", "score_seconds", "optimise_seconds")})

    from posttrain.models import frozen_base_dtype

    run_rlhf(config, on_step=on_step)
    precision = str(frozen_base_dtype(torch.device("cpu"), "auto")).removeprefix("torch.")
    print("RESULT " + json.dumps({"impl": "posttrain", "settings": settings, "step_seconds": seconds, "peak_rss_mib": peak_mib(), "response_length": lengths,
                                  "phases": phases, "precision": f"base {precision}, adapters fp32"}))


def default_reward_model(model: str, env: dict) -> str:
    """A reward-model checkpoint to score with: runs/rm-default when the README's `posttrain rm` made one,
    else a 2-step one made here, in a subprocess (its scores do not matter for timing)."""
    made = REPO / "runs" / "rm-default"
    if (made / "posttrain.json").is_file():
        return str(made)
    folder = HERE / "results" / "rm-2-steps"
    if not (folder / "posttrain.json").is_file():
        subprocess.run([sys.executable, "-m", "posttrain.cli", "rm", "--model", model, "--data",
                        str(REPO / "data_samples/preferences.jsonl"), "--output", str(folder), "--max-steps", "2",
                        "--train.eval_split", "0.05"], check=True, env=env)
    return str(folder)


def shared_settings(args, output: str) -> dict:
    """What every implementation runs alike, from the script's own flags (a variant may not change them)."""
    return {"model": args.model, "reward_model": args.reward_model, "prompts": args.prompts_file, "output": output,
            "rollout.batch_size": args.batch_size, "rollout.max_new_tokens": args.response_length,
            "rollout.temperature": 0.7, "ppo.minibatch_size": args.batch_size // args.minibatches,
            "ppo.epochs": args.epochs, "ppo.steps": args.steps, "ppo.save_steps": 0, "lora.r": args.lora_r,
            "lora.alpha": 2 * args.lora_r}


def check_variants(args) -> None:
    """Refuse, before any run, a --variant that is malformed or changes a setting every implementation shares (under
    any spelling or alias: both configs are loaded and compared)."""
    from posttrain.config import ConfigError, RLHFConfig, load_config, to_dict

    fixed = shared_settings(args, "out")
    for variant in args.variant:
        name, _, items = variant.partition(":")
        pairs = [item.split("=", 1) for item in items.split(",") if item]
        if not name or not pairs or any(len(pair) != 2 for pair in pairs):
            raise SystemExit(f"--variant {variant!r}: write NAME:KEY=VALUE[,KEY=VALUE], e.g. shared:ppo.critic=shared")
        try:
            tried = to_dict(load_config(RLHFConfig, None, {**fixed, **dict(pairs)}))
        except ConfigError as err:
            raise SystemExit(f"--variant {variant!r}: {err}") from None
        base = to_dict(load_config(RLHFConfig, None, fixed))
        changed = [key for key in fixed if _get(tried, key) != _get(base, key)]
        if changed:
            raise SystemExit(f"--variant {variant!r} changes {', '.join(changed)}, which the benchmark sets for every "
                             "implementation alike: use its own flags (--batch-size, --response-length, --epochs, "
                             "--minibatches, --steps, --lora-r, --model).")


def _get(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def cpu_description() -> dict:
    from posttrain.models import cpu_has_fast_bf16

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown") if Path("/proc/cpuinfo").is_file() else "unknown"
    return {"model": model, "cores": os.cpu_count(), "fast_bf16": cpu_has_fast_bf16(),
            "isa_limit": os.environ.get("ONEDNN_MAX_CPU_ISA", "none")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--reward-model", default="")
    parser.add_argument("--steps", type=int, default=4, help="PPO steps per run (the first is warm-up)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--minibatches", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    parser.add_argument("--impls", default="posttrain,trl-full,trl-peft")
    parser.add_argument("--cpu", choices=["native", "avx2"], default="native",
                        help="avx2: limit oneDNN/ATen to AVX2 in every worker, as on a CPU without bf16 units")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                        help="another posttrain run in each round, named posttrain-NAME, with these rlhf settings")
    parser.add_argument("--tag", default="", help="names the results file")
    parser.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)  # a worker's settings
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    parser.add_argument("--prompts-file", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "ours":
        return ours_worker(args)
    if args.cpu == "avx2":
        os.environ.update(AVX2_ENV)  # before anything reads it: this process's cpu_has_fast_bf16, and every worker
    check_variants(args)

    from posttrain.data import load_prompts
    from posttrain.models import resolve_model

    model_dir = resolve_model(args.model)
    prompts = [row["prompt"] for row in load_prompts(REPO / "data_samples/prompts.jsonl").rows]
    prompts = (prompts * 4)[: args.batch_size * args.steps]
    scratch = Path(tempfile.mkdtemp())
    (scratch / "prompts.json").write_text(json.dumps(prompts))
    (scratch / "prompts.jsonl").write_text("\n".join(json.dumps({"prompt": p}) for p in prompts) + "\n")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    reward_model = args.reward_model or default_reward_model(args.model, env)
    trl_python = ensure_trl_venv() if any(i.startswith("trl") for i in args.impls.split(",")) else None
    common = ["--steps", str(args.steps), "--batch-size", str(args.batch_size), "--minibatches", str(args.minibatches),
              "--epochs", str(args.epochs), "--response-length", str(args.response_length), "--lora-r", str(args.lora_r),
              "--threads", str(args.threads)]
    commands = {
        "posttrain": [sys.executable, __file__, "--worker", "ours", "--model", model_dir, "--reward-model", reward_model,
                      "--prompts-file", str(scratch / "prompts.jsonl"), *common],
        "trl-full": [str(trl_python), str(HERE / "trl_ppo_worker.py"), "--model", model_dir, "--prompts", str(scratch / "prompts.json"),
                     "--layout", "full", *common],
        "trl-peft": [str(trl_python), str(HERE / "trl_ppo_worker.py"), "--model", model_dir, "--prompts", str(scratch / "prompts.json"),
                     "--layout", "peft", *common],
    }
    for variant in args.variant:
        name, _, settings = variant.partition(":")
        commands[f"posttrain-{name}"] = commands["posttrain"] + [f"--set={item}" for item in settings.split(",") if item]
    results: dict[str, list[dict]] = {name: [] for name in args.impls.split(",") + [f"posttrain-{v.partition(':')[0]}" for v in args.variant]}
    for round_number in range(args.rounds):
        for name in results:
            print(f"round {round_number + 1}/{args.rounds}: {name} ...", flush=True)
            results[name].append(run_worker(commands[name], env))
            print(f"  {results[name][-1]['step_seconds']} {results[name][-1].get('phases', '')}", flush=True)

    summary = {}
    for name, runs in results.items():
        steps = [s for r in runs for s in r["step_seconds"][1:]]  # drop each run's warm-up step
        summary[name] = {"median_step_seconds": statistics.median(steps), "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
                         "precision": runs[0].get("precision", ""), "runs": runs}
    print(f"\nPPO step on {args.model}: batch {args.batch_size}, {args.response_length} new tokens, "
          f"{args.epochs} epochs x {args.minibatches} minibatches, LoRA r={args.lora_r}, {args.rounds} interleaved rounds")
    ours = [name for name in summary if name.startswith("posttrain")]
    print(f"{'implementation':<20}{'s/step':>10}{'peak MiB':>12}" + "".join(f"{'time, memory ratio of ' + o:>40}" for o in ours))
    for name, s in summary.items():
        ratios = {o: (summary[o]["median_step_seconds"] / s["median_step_seconds"], summary[o]["peak_rss_mib"] / s["peak_rss_mib"])
                  for o in ours}
        s["ratios"] = {o: {"time": t, "memory": m} for o, (t, m) in ratios.items()}
        if "posttrain" in ratios:  # the defaults' ratios, as before variants
            s["posttrain_time_ratio"], s["posttrain_memory_ratio"] = ratios["posttrain"]
        print(f"{name:<20}{s['median_step_seconds']:>10.2f}{s['peak_rss_mib']:>12.0f}"
              + "".join(f"{f'{t:.2f}, {m:.2f}':>40}" for t, m in ratios.values()))
    out = HERE / "results" / ("ppo_vs_trl" + ("" if args.cpu == "native" else f"_{args.cpu}") + (f"-{args.tag}" if args.tag else "") + ".json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"settings": vars(args), "cpu": cpu_description(), "summary": summary}, indent=2) + "\n")
    print(f"\nratios are each posttrain run's / that implementation's (lower is better); written to {out}")


if __name__ == "__main__":
    main()
