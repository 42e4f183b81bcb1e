"""The alignment tax: k-shot multiple-choice capability of the base model and of each post-training stage.

    python bench/alignment_tax.py                                  # train short SFT, RM, DPO and PPO runs, then score all
    python bench/alignment_tax.py --sft runs/sft --dpo runs/dpo --ppo runs/ppo   # score existing checkpoints instead
    python bench/alignment_tax.py --sft runs/sft --rm runs/rm      # reuse some stages, train the others

Training runs the project's own commands (``python -m posttrain.cli sft|rm|dpo|rlhf``) with short runs
(``--sft-steps 30 --rm-steps 20 --dpo-steps 20 --ppo-steps 10`` by default; ``--sft-steps -1`` is a full epoch):
SFT on data_samples/sft_messages.jsonl; a reward model on data_samples/preferences.jsonl; DPO continuing the
SFT adapter on the same pairs; PPO from the SFT adapter against the reward model on data_samples/prompts.jsonl. DPO and PPO both start from
SFT, so "DPO" and "PPO" below are SFT+DPO and SFT+PPO. Every model is then scored on the same questions
(posttrain.capability_report.score_model, as ``posttrain eval --benchmark`` scores them) and compared with
the base by a paired bootstrap.

Writes bench/results/alignment_tax.json (every subject, every model, the commands, the times) and prints the
Markdown table that README.md shows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SAMPLES = REPO / "data_samples"


def train_commands(args, out: Path) -> dict[str, list[str]]:
    """The ``posttrain`` command of each stage to train (the PPO settings are the README's PPO demo's)."""
    sft, rm = args.sft or str(out / "sft"), args.rm or str(out / "rm")
    return {
        "sft": ["sft", "--model", args.base, "--data", str(SAMPLES / "sft_messages.jsonl"), "--output", str(out / "sft"),
                "--epochs", "1", "--max-steps", str(args.sft_steps), "--train.max_length", "256"],
        "rm": ["rm", "--model", args.base, "--data", str(SAMPLES / "preferences.jsonl"), "--output", str(out / "rm"),
               "--max-steps", str(args.rm_steps), "--train.max_length", "256"],
        "dpo": ["dpo", "--model", sft, "--data", str(SAMPLES / "preferences.jsonl"), "--output", str(out / "dpo"),
                "--max-steps", str(args.dpo_steps), "--train.max_length", "256", "--train.eval_steps", str(args.dpo_steps)],
        "ppo": ["rlhf", "--model", sft, "--reward-model", rm, "--prompts", str(SAMPLES / "prompts.jsonl"),
                "--output", str(out / "ppo"), "--ppo.steps", str(args.ppo_steps), "--rollout.batch_size", "8",
                "--ppo.minibatch_size", "4", "--rollout.max_new_tokens", "64", "--ppo.adaptive_kl", "true",
                "--ppo.target_kl", "2", "--ppo.kl_coef", "0.1", "--ppo.lr", "2e-4", "--ppo.save_steps", "0"],
    }


def train(args, out: Path) -> tuple[dict[str, str], dict[str, dict]]:
    """Checkpoint folder of each stage (given, or trained now) and how each trained one was made."""
    commands = train_commands(args, out)
    given = {"sft": args.sft, "rm": args.rm, "dpo": args.dpo, "ppo": args.ppo}
    folders, runs = {}, {}
    for stage in ("sft", "rm", "dpo", "ppo"):
        if given[stage]:
            folders[stage] = given[stage]
            continue
        command = [sys.executable, "-m", "posttrain.cli", *commands[stage]]
        print(f"[alignment tax] training {stage}: posttrain {' '.join(commands[stage])}", flush=True)
        started = time.time()
        subprocess.run(command, check=True, cwd=REPO)
        runs[stage] = {"command": "posttrain " + " ".join(commands[stage]), "seconds": round(time.time() - started, 1)}
        folders[stage] = str(out / stage)
    return folders, runs


def cell(diff: dict) -> str:
    low, high = diff["ci95"]
    return f"{diff['diff']:+.3f} [{low:+.3f}, {high:+.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="smollm2-135m-instruct")
    parser.add_argument("--sft", default="", help="an existing SFT checkpoint (else one is trained)")
    parser.add_argument("--rm", default="", help="an existing reward model for PPO (else one is trained)")
    parser.add_argument("--dpo", default="", help="an existing DPO checkpoint (else one is trained from the SFT one)")
    parser.add_argument("--ppo", default="", help="an existing PPO checkpoint (else one is trained from the SFT one)")
    parser.add_argument("--out", default=str(REPO / "runs" / "alignment-tax"), help="where trained checkpoints go")
    parser.add_argument("--benchmark", default=str(SAMPLES / "multiple_choice.jsonl"))
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--max-questions", type=int, default=0, help="0: every scored question")
    parser.add_argument("--mc-format", default="cloze", choices=["cloze", "letters"])
    parser.add_argument("--sft-steps", type=int, default=30, help="-1: one epoch (57 steps)")
    parser.add_argument("--rm-steps", type=int, default=20)
    parser.add_argument("--dpo-steps", type=int, default=20)
    parser.add_argument("--ppo-steps", type=int, default=10)
    parser.add_argument("--results", default=str(HERE / "results" / "alignment_tax.json"))
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from posttrain.capability import load_benchmark, summarise
    from posttrain.capability_report import benchmark_dtype, comparison, score_model

    benchmark = load_benchmark(args.benchmark, args.shots, max_questions=args.max_questions)  # bad rows fail first
    load_before = os.getloadavg()[0]
    folders, runs = train(args, Path(args.out))
    models = {"base": args.base, "SFT": folders["sft"], "DPO": folders["dpo"], "PPO": folders["ppo"]}
    scores, seconds = {}, {}
    for label, name in models.items():
        started = time.time()
        scores[label] = score_model(name, benchmark, args.mc_format, label=label)
        seconds[label] = round(time.time() - started, 1)
    summaries = {label: summarise(s) for label, s in scores.items()}
    versus_base = {label: comparison(scores[label], scores["base"]) for label in models if label != "base"}
    versus_sft = {label: comparison(scores[label], scores["SFT"]) for label in ("DPO", "PPO")}

    lines = ["| model | checkpoint | acc | acc_norm | acc − base [95% CI] | acc_norm − base [95% CI] |", "|---|---|---|---|---|---|"]
    for label, name in models.items():
        stats = summaries[label]
        diffs = [cell(versus_base[label][m]) for m in ("acc", "acc_norm")] if label != "base" else ["—", "—"]
        lines.append(f"| {label} | `{Path(name).name if label != 'base' else name}` | {stats['acc']:.3f} | "
                     f"{stats['acc_norm']:.3f} | {' | '.join(diffs)} |")
    subjects = list(summaries["base"]["subjects"])
    per_subject = ["| subject | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    per_subject += [f"| {s} | " + " | ".join(f"{summaries[label]['subjects'][s]['acc']:.2f}" for label in models) + " |"
                    for s in subjects]
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "benchmark": args.benchmark, "shots": args.shots, "format": args.mc_format, "questions": summaries["base"]["questions"],
        "shots_from": benchmark.shots_from, "chance": summaries["base"]["chance"], "dtype": str(benchmark_dtype("auto")),
        "models": models, "training": runs, "scoring_seconds": seconds, "summaries": summaries,
        "versus_base": versus_base, "versus_sft": versus_sft,
        "load_average_1m_before_after": [load_before, os.getloadavg()[0]],
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "table": lines, "per_subject_acc": per_subject,
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(lines) + "\n\n" + "\n".join(per_subject))
    print(f"\nchance {result['chance']:.3f}; DPO vs SFT acc {cell(versus_sft['DPO']['acc'])}, PPO vs SFT acc "
          f"{cell(versus_sft['PPO']['acc'])}; results in {args.results}")


if __name__ == "__main__":
    main()
