"""Benchmark: `posttrain plan`'s memory estimate against the measured peak memory of real CPU runs.

    python bench/plan_check.py                  # sft, rm, dpo and rlhf on the default model, a few steps each
    python bench/plan_check.py --stages sft dpo

Each stage runs in its own process through the CLI (``posttrain.cli.main``), on data built so that every batch
is as long as the plan assumes (rows cut to train.max_length; preference pairs just under it; prompts that ask
for long answers, so responses run to rollout.max_new_tokens). The measured figure is the worker's own peak
resident memory (VmHWM, bench/peak_memory.py), which is what `posttrain plan` estimates on a CPU. The rlhf run
uses the rm run's checkpoint as its reward model, so every role (policy, reference, critic, reward) is an
adapter on the one base.

Writes bench/results/plan_check.json and prints a table; exits 1 when an estimate is off by more than 25%.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TOLERANCE = 0.25
FILLER = ("Start with the basics and build from there, one small step at a time, checking each result before "
          "moving on, and write down what worked so the next attempt is easier. ")

# the settings each stage runs with; the plan is made from the same flags
STAGES = {
    "sft": ["--train.max_length", "256", "--train.batch_size", "4", "--train.max_steps", "3", "--train.logging_steps", "1"],
    "rm": ["--train.max_length", "256", "--train.batch_size", "2", "--train.max_steps", "3", "--train.eval_split", "0",
           "--train.logging_steps", "1"],
    "dpo": ["--train.max_length", "256", "--train.batch_size", "2", "--train.max_steps", "3", "--train.eval_split", "0",
            "--train.logging_steps", "1"],
    "rlhf": ["--rollout.batch_size", "8", "--ppo.minibatch_size", "4", "--rollout.max_new_tokens", "48", "--ppo.steps", "2",
             "--ppo.save_steps", "0"],
}


def worker(argv: list[str], result: Path) -> None:
    """Run one CLI command in this process and write its peak memory to ``result``."""
    sys.path.insert(0, str(HERE))
    from peak_memory import peak_mib

    from posttrain.cli import main

    started = time.time()
    code = main(argv)
    result.write_text(json.dumps({"code": code, "peak_mib": peak_mib(), "seconds": time.time() - started}))


def build_data(folder: Path, tokenizer) -> dict[str, Path]:
    """Data whose every batch is as long as the plan assumes."""
    topics = ["a vegetable garden", "a bicycle", "bread at home", "a new language", "a small business", "a marathon",
              "a bookshelf", "the guitar", "a budget", "a science fair project", "chess", "a podcast"]

    def long_text(topic: str, words: int) -> str:
        return f"Here is how to approach {topic}. " + (FILLER * (words // len(FILLER.split()) + 1))

    def cut_to(prompt: list, text: str, tokens: int) -> str:
        """The longest prefix of ``text`` (by words) whose prompt + response renders to at most ``tokens`` tokens."""
        from posttrain.data import encode_response

        words = text.split()
        lo, hi = 1, len(words)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(encode_response(tokenizer, prompt, [{"role": "assistant", "content": " ".join(words[:mid])}])) <= tokens:
                lo = mid
            else:
                hi = mid - 1
        return " ".join(words[:lo])

    files = {}
    sft = [{"messages": [{"role": "user", "content": f"How do I start {t}?"},
                         {"role": "assistant", "content": long_text(t, 400)}]} for t in topics]
    prefs = []
    for t in topics:
        prompt = [{"role": "user", "content": f"How do I start {t}?"}]
        chosen = cut_to(prompt, long_text(t, 400), 254)
        rejected = cut_to(prompt, "I would not bother. " + long_text(t, 400), 254)
        prefs.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                      "rejected": [{"role": "assistant", "content": rejected}]})
    long_prefs = [{"prompt": p["prompt"], "chosen": [{"role": "assistant", "content": long_text(t, 400)}],
                   "rejected": [{"role": "assistant", "content": "No. " + long_text(t, 400)}]} for p, t in zip(prefs, topics)]
    prompts = [{"prompt": [{"role": "user", "content": f"Write a long, detailed, step-by-step guide to starting {t}, "
                                                        "with at least ten numbered steps."}]} for t in topics]
    for name, rows in (("sft", sft), ("rm", prefs), ("dpo", long_prefs), ("prompts", prompts)):
        files[name] = folder / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[1:], Path(args.worker[0]))
        return 0

    from posttrain.models import load_tokenizer
    from posttrain.plan import plan_stage

    tokenizer = load_tokenizer(args.model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="plan-check-") as tmp:
        tmp = Path(tmp)
        files = build_data(tmp, tokenizer)
        for stage in args.stages:
            flags = ["--model", args.model, "--output", str(tmp / stage)] + STAGES[stage]
            if stage == "rlhf":
                flags += ["--prompts", str(files["prompts"]), "--reward-model", str(tmp / "rm")]
            else:
                flags += ["--data", str(files[stage])]
            result = tmp / f"{stage}.result.json"
            env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
            subprocess.run([sys.executable, __file__, "--worker", str(result), stage, *flags], check=True, env=env)
            measured = json.loads(result.read_text())
            if measured["code"] != 0:
                raise SystemExit(f"{stage} failed (exit {measured['code']})")
            plan = plan_stage(stage, flags, device="cpu")
            estimate = plan.total / 2**20
            error = estimate / measured["peak_mib"] - 1
            rows.append({"stage": stage, "flags": STAGES[stage], "measured_mib": round(measured["peak_mib"]),
                         "estimate_mib": round(estimate), "error": round(error, 3), "seconds": round(measured["seconds"]),
                         "items": {k: round(v / 2**20, 1) for k, v in plan.items.items()}})
            print(f"{stage:5} measured {measured['peak_mib']:7.0f} MiB  planned {estimate:7.0f} MiB  ({100 * error:+.1f}%)",
                  flush=True)
    out = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count(), "tolerance": TOLERANCE, "runs": rows}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "plan_check.json").write_text(json.dumps(out, indent=2) + "\n")
    print("\n| stage | measured peak (VmHWM) | planned | error |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['measured_mib']} MiB | {r['estimate_mib']} MiB | {100 * r['error']:+.1f}% |")
    return 0 if all(abs(r["error"]) <= TOLERANCE for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
