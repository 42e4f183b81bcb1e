"""Benchmark: the lean training pass with what rows share run once, against whole rows.

    python bench/sft_prefix.py                   # SFT and DPO on data_samples/, 20 steps a run, 2 rounds
    python bench/sft_prefix.py --stages sft --steps 30 --rounds 3 --modes tree prefix whole

Every row of a chat batch begins with the same tokens where the data repeats a system prompt (and SmolLM2's
template writes its default one, 24 tokens, before every conversation), and DPO's chosen and rejected rows share
their prompt. The lean pass of SFT and DPO on a CPU (posttrain.lm_head) packs the batch's prefix tree into one
row when that pays (posttrain.prefix_tree, mode "tree", the default), else runs the columns every row shares once
and continues every row from their KV cache when that saves at least generation.LEAST_SAVED_TOKENS tokens (mode
"prefix": the tree switched off), else whole rows (mode "whole": both off). For each stage and data set (the
sample data as it is, and the same rows behind an 85-token system prompt) this runs the real stage for --steps
optimizer steps in each mode, interleaved, each run its own process on one thread, and reports the training
seconds and the final loss of each (the loss differs only by rounding). Writes bench/results/sft_prefix[-TAG].json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

SYSTEM = ("You are a friendly assistant for a community learning centre. Answer in plain words that a twelve-year-old "
          "can follow, keep every answer short, avoid jargon and lists, never give medical or legal advice, and if a "
          "question is unsafe, say so politely. Write in a warm, encouraging tone, assume the reader is curious but new "
          "to the topic, and prefer one clear example over many details.")
DATA = {"sft": "data_samples/sft_messages.jsonl", "dpo": "data_samples/preferences.jsonl"}


def with_system(path: Path, out: Path) -> Path:
    """The rows of ``path`` with SYSTEM as their first message."""
    rows = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        key = "messages" if "messages" in row else "prompt"
        row[key] = [{"role": "system", "content": SYSTEM}] + row[key]
        rows.append(json.dumps(row))
    out.write_text("\n".join(rows) + "\n")
    return out


def worker(args) -> None:
    import torch

    torch.set_num_threads(1)
    from posttrain import generation
    from posttrain.config import DPOConfig, SFTConfig, load_config

    from posttrain import prefix_tree

    if args.mode != "tree":
        prefix_tree.LEAST_SAVED_SHARE = 2.0  # tree_pays reads it at each call: never
    if args.mode == "whole":
        generation.LEAST_SAVED_TOKENS = 10**9  # common_prefix reads it at each call
    stage = __import__(f"posttrain.stages.{args.worker}", fromlist=["run_trainer"])
    run_trainer = stage.run_trainer

    def timed(trainer, output, resume_from):
        trainer.args.max_steps = args.steps
        start = time.perf_counter()
        result = run_trainer(trainer, output, resume_from)
        print("RESULT " + json.dumps({"seconds": time.perf_counter() - start, "loss": result.training_loss}))
        return result

    stage.run_trainer = timed
    config_cls = SFTConfig if args.worker == "sft" else DPOConfig
    run = stage.run_sft if args.worker == "sft" else stage.run_dpo
    run(load_config(config_cls, None, {"data": args.data, "output": tempfile.mkdtemp(), "train.seed": 0}))


def least_saved_tokens() -> int:
    sys.path.insert(0, str(REPO))
    from posttrain.generation import LEAST_SAVED_TOKENS

    return LEAST_SAVED_TOKENS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", default=["sft", "dpo"], choices=["sft", "dpo"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    parser.add_argument("--data", default="", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="tree", help=argparse.SUPPRESS)
    parser.add_argument("--modes", nargs="+", default=["tree", "whole"], choices=["tree", "prefix", "whole"])
    parser.add_argument("--tag", default="", help="names the results file")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    folder = Path(tempfile.mkdtemp())
    cases = []
    for stage in args.stages:
        plain = REPO / DATA[stage]
        cases += [(stage, "sample data", plain), (stage, "85-token system prompt", with_system(plain, folder / f"{stage}.jsonl"))]
    runs: dict = {}
    for round_ in range(args.rounds):
        for stage, label, data in cases:
            for mode in args.modes:
                out = subprocess.run([sys.executable, __file__, "--worker", stage, "--data", str(data), "--mode", mode,
                                      "--steps", str(args.steps)], capture_output=True, text=True,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})
                line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
                if line is None:
                    sys.exit(f"{stage} {label} mode={mode} failed:\n{out.stderr[-3000:]}")
                result = json.loads(line[7:])
                runs.setdefault(f"{stage} | {label} | {mode}", []).append(result)
                print(stage, label, mode, f"{result['seconds']:.1f} s", f"loss {result['loss']:.4f}")
    summary = {}
    for stage, label, _ in cases:
        seconds = {mode: statistics.median(r["seconds"] for r in runs[f"{stage} | {label} | {mode}"]) for mode in args.modes}
        row = {f"{mode}_s": s for mode, s in seconds.items()}
        if "whole" in seconds:
            row.update({f"{mode}_ratio": s / seconds["whole"] for mode, s in seconds.items() if mode != "whole"})
        summary[f"{stage} | {label}"] = row
        print(f"{stage:4} {label:24} " + "  ".join(f"{k} {v:.2f}" for k, v in row.items()))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / f"results/sft_prefix{'-' + args.tag if args.tag else ''}.json").write_text(json.dumps(
        {"date": time.strftime("%Y-%m-%d"), "steps": args.steps, "rounds": args.rounds, "threads": 1, "modes": args.modes,
         "least_saved_tokens": least_saved_tokens(), "summary": summary, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
