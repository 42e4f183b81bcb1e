"""Does a reward model pay for length? The reward of a response against the same response with its last sentence
said once more.

A policy trained against a reward model finds whatever raises the reward; repeating a sentence is the cheapest way to
run longer (pipelines/rlhf.yaml's PPO answers ran to the length limit, several repeating their last sentence). For
each reward model and each held-out response of its task, this scores the response and the response with its last
sentence repeated, and reports the mean change and the share of responses whose reward rose.

    python bench/rm_length_probe.py --pairs runs/quality/full/tasks/sentiment/prefs_heldout.jsonl RM_FOLDER ...

Prints a table and writes bench/results/rm_length_probe.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def repeat_last_sentence(text: str) -> str:
    """``text`` with its last sentence said once more (the whole text when it has one sentence)."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]
    return text.rstrip() + " " + (sentences[-1] if sentences else text.strip())


def content(response) -> str:
    return response if isinstance(response, str) else response[-1]["content"]


def probe(folder: str, rows: list[dict]) -> dict:
    from posttrain.stages.reward_model import load_reward_model

    rm = load_reward_model(folder, dtype=torch.float32)
    prompts = [r["prompt"] for r in rows]
    plain = [content(r[side]) for r in rows for side in ("chosen", "rejected")]
    twice = [repeat_last_sentence(t) for t in plain]
    doubled = [p for p in prompts for _ in range(2)]
    with torch.no_grad():
        before, after = rm.score(doubled, plain), rm.score(doubled, twice)
    gains = [a - b for a, b in zip(after, before)]
    spread = torch.tensor(before).std().item()
    return {"folder": folder, "pooling": rm.pooling, "responses": len(gains),
            "mean_gain": sum(gains) / len(gains), "mean_gain_in_reward_std": sum(gains) / len(gains) / spread,
            "share_rising": sum(g > 0 for g in gains) / len(gains)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", help="posttrain rm checkpoints")
    parser.add_argument("--pairs", required=True, help="preference pairs (jsonl) whose responses are scored")
    parser.add_argument("--out", default=str(RESULTS / "rm_length_probe.json"))
    args = parser.parse_args()
    rows = [json.loads(line) for line in Path(args.pairs).read_text().splitlines() if line.strip()]
    results = {"date": time.strftime("%Y-%m-%d"), "pairs": args.pairs, "models": []}
    print(f"{'pooling':9s} {'mean gain':>10s} {'in reward std':>14s} {'share rising':>13s}  folder")
    for folder in args.folders:
        row = probe(folder, rows)
        results["models"].append(row)
        print(f"{row['pooling']:9s} {row['mean_gain']:10.3f} {row['mean_gain_in_reward_std']:14.3f} "
              f"{row['share_rising']:13.2f}  {folder}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
