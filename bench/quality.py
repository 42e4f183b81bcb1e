"""Quality on data we did not write: posttrain's defaults against plain TRL 1.16, on tasks built from the
default model's own samples and judged by scorers from other PyPI packages (bench/quality_tasks.py).

    python bench/quality.py --seeds 0              # full run, one seed, both tasks (see the README for the time)
    python bench/quality.py --seeds 0 1 2          # what the README's table reports
    python bench/quality.py --seeds 0 --jobs 2     # the two tasks side by side, one process (and core) each
    python bench/quality.py --quick                # smoke run: tiny data, a few steps per stage, minutes

Per task (readability, sentiment) and seed, interleaved so machine noise hits both alike:
    posttrain sft | TRL sft    held-out share of answers in the task's style
    posttrain rm  | TRL rm     held-out pairwise accuracy
    posttrain dpo | TRL dpo    win-rate by the judge over the base model on held-out prompts, mean length
    posttrain rlhf             PPO from the base against the posttrain reward model above, judged the same way
posttrain runs are `python -m posttrain.cli STAGE` with only data, output and seed (its defaults otherwise);
TRL runs are bench/quality_trl.py (the issue's common settings). Each run is its own process, timed by the
wall clock. Built tasks and checkpoints are cached under runs/quality/ (a finished run is not repeated);
results go to bench/results/quality*.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

import quality_eval as ev  # noqa: E402
from quality_tasks import Sizes, build_tasks, judges, read_jsonl  # noqa: E402

FULL = Sizes(train_prompts=200, heldout_prompts=48, samples=4, max_new_tokens=48)
QUICK = Sizes(train_prompts=32, heldout_prompts=16, samples=4, max_new_tokens=48)
BASE = "smollm2-135m-instruct"
STAGES = ("sft", "rm", "dpo", "ppo")
GOALS = {"sft": 0.9, "rm": 0.9, "dpo": 0.75, "ppo": 0.75}


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
               platform.processor())
    from posttrain.models import cpu_bf16_units, cpu_has_fast_bf16

    bf16 = (f"with {' and '.join(cpu_bf16_units(cpuinfo))} (a bf16 base)" if cpu_has_fast_bf16()
            else "without bf16 matrix units (an fp32 base)")
    return f"{os.cpu_count()}-core {cpu} {bf16}, no GPU; load average {os.getloadavg()[0]:.1f} at the start"


# ---------------------------------------------------------------------------------------------
# One training run: a subprocess, timed
# ---------------------------------------------------------------------------------------------


def train_command(impl: str, stage: str, task: Path, output: Path, seed: int, rm: Path | None,
                  quick: bool, extra: str) -> list[str]:
    python = [sys.executable]
    if impl == "trl":
        data = task / ("sft_train.jsonl" if stage == "sft" else "prefs_train.jsonl")
        command = python + [str(HERE / "quality_trl.py"), stage, "--data", str(data), "--output", str(output),
                            "--seed", str(seed)]
        return command + (["--max-steps", "3"] if quick else [])
    cli = python + ["-m", "posttrain.cli"]
    if stage == "ppo":
        command = cli + ["rlhf", "--model", BASE, "--reward-model", str(rm), "--prompts",
                         str(task.parent / "prompts_train.jsonl"), "--output", str(output), "--ppo.seed", str(seed)]
        command += ["--ppo.steps", "2", "--ppo.save_steps", "0"] if quick else []
    else:
        data = task / ("sft_train.jsonl" if stage == "sft" else "prefs_train.jsonl")
        command = cli + [stage, "--data", str(data), "--output", str(output), "--seed", str(seed)]
        command += ["--max-steps", "3"] if quick else []
    return command + shlex.split(extra)


def train(command: list[str], output: Path) -> float:
    """Run one training process (logging to output.log); its wall time in seconds."""
    output.parent.mkdir(parents=True, exist_ok=True)
    log = output.with_suffix(".log")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    print(f"quality: {' '.join(command[1:])}", flush=True)
    started = time.time()
    with log.open("w") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    seconds = time.time() - started
    if result.returncode != 0 or not ev.folder_ok(output):
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise SystemExit(f"quality: run failed ({seconds:.0f} s), log {log}:\n{tail}")
    return seconds


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


class Task:
    """A built task's files and judge, and the base model's answers to its held-out prompts (computed once)."""

    def __init__(self, folder: Path, judge, sizes: Sizes, base_cache: dict):
        self.folder, self.judge, self.sizes = folder, judge, sizes
        self.heldout = [r["prompt"] for r in read_jsonl(folder.parent / "prompts_heldout.jsonl")]
        self.heldout_pairs = read_jsonl(folder / "prefs_heldout.jsonl")
        saved = folder.parent / "base_answers.json"  # greedy, so the same in every run of the harness
        if "texts" not in base_cache and saved.is_file():
            base_cache.update(json.loads(saved.read_text()))
        if "texts" not in base_cache:
            base_cache["texts"], base_cache["lengths"] = ev.generate(BASE, self.heldout, sizes.max_new_tokens)
            saved.write_text(json.dumps(base_cache))
        self.base_texts, self.base_lengths = base_cache["texts"], base_cache["lengths"]
        self.base_scores = [judge.score(t) for t in self.base_texts]

    def base_metrics(self) -> dict:
        return {"style_share": ev.style_share(self.base_texts, self.judge.check),
                "mean_score": sum(self.base_scores) / len(self.base_scores),
                "mean_length": sum(self.base_lengths) / len(self.base_lengths),
                "examples": ev.examples(self.heldout, self.base_texts)}

    def measure(self, impl: str, stage: str, output: Path) -> dict:
        if stage == "rm":
            score = ev.trl_rm_accuracy if impl == "trl" else ev.posttrain_rm_accuracy
            return {"heldout_accuracy": score(str(output), self.heldout_pairs), "heldout_pairs": len(self.heldout_pairs)}
        texts, lengths = ev.generate(str(output), self.heldout, self.sizes.max_new_tokens)
        metrics = {"examples": ev.examples(self.heldout, texts)}
        if stage == "sft":
            metrics["style_share"] = ev.style_share(texts, self.judge.check)
            metrics["mean_length"] = sum(lengths) / len(lengths)
        else:
            metrics.update(ev.judged(texts, lengths, self.judge.score, self.base_scores, self.base_lengths))
        return metrics


def steps_of(output: Path) -> int | None:
    for name in ("metrics.json", "trl_result.json"):
        path = output / name
        if path.is_file():
            data = json.loads(path.read_text())
            final = data.get("final", data)
            for key in ("steps", "ppo_steps"):
                if key in final:
                    return final[key]
    return None


def run_all(args) -> dict:
    sizes = QUICK if args.quick else FULL
    root = Path(args.cache) / (("quick" if args.quick else "full") + (f"-draw{args.draw}" if args.draw else ""))
    tasks_dir = build_tasks(root / "tasks", sizes, seed=args.draw)
    meta = json.loads((tasks_dir / "tasks.json").read_text())
    results = {"date": str(date.today()), "machine": machine(), "sizes": sizes.__dict__, "tasks": meta["tasks"],
               "seeds": args.seeds, "extra_args": args.extra, "tag": args.tag, "draw": args.draw, "base": {}, "runs": []}
    base_cache: dict = {}
    for judge in judges():
        if args.tasks and judge.name not in args.tasks:
            continue
        task = Task(tasks_dir / judge.name, judge, sizes, base_cache)
        results["base"][judge.name] = task.base_metrics()
        for seed in args.seeds:
            for stage in args.stages:
                for impl in ("posttrain", "trl"):
                    if impl not in args.impls or (impl == "trl" and stage == "ppo"):
                        continue
                    extra = " ".join(e.split(":", 1)[1] for e in args.extra if e.split(":", 1)[0] == stage)
                    # TRL's runs do not change with posttrain's settings: every tag shares them
                    group = "trl" if impl == "trl" else args.tag or "default"
                    run_dir = root / "runs" / group / judge.name / f"{impl}-{stage}-s{seed}"
                    done = run_dir.with_suffix(".json")
                    if done.is_file() and not args.rerun:
                        record = json.loads(done.read_text())
                    elif args.report:
                        continue
                    else:
                        rm = root / "runs" / (args.tag or "default") / judge.name / f"posttrain-rm-s{seed}"
                        if stage == "ppo" and not ev.folder_ok(rm):
                            raise SystemExit(f"quality: PPO needs the posttrain reward model {rm}; include the rm stage")
                        command = train_command(impl, stage, task.folder, run_dir, seed, rm, args.quick, extra)
                        seconds = train(command, run_dir)
                        record = {"task": judge.name, "seed": seed, "stage": stage, "impl": impl, "wall_s": round(seconds, 1),
                                  "steps": steps_of(run_dir), "extra_args": extra,
                                  **task.measure(impl, stage, run_dir)}
                        done.write_text(json.dumps(record, indent=1))
                    results["runs"].append(record)
                    print("quality: " + json.dumps({k: v for k, v in record.items() if k != "examples"}), flush=True)
    return results


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

HEADLINE = {"sft": "style_share", "rm": "heldout_accuracy", "dpo": "win_rate", "ppo": "win_rate"}
WHAT = {"sft": "held-out style share", "rm": "held-out pairwise accuracy", "dpo": "win-rate over base",
        "ppo": "win-rate over base"}


def table(results: dict) -> str:
    """Markdown: one row per task, stage and seed, posttrain beside TRL, with wall times and the goals."""
    runs = {(r["task"], r["stage"], r["seed"], r["impl"]): r for r in results["runs"]}
    lines = ["| task | stage: metric (goal) | seed | posttrain | TRL | posttrain time | TRL time | time ratio | goal met "
             "| beats TRL in ≤ ½ its time |", "|---|---|---|---|---|---|---|---|---|---|"]

    def shown(run: dict, stage: str) -> str:
        value = f"{run[HEADLINE[stage]]:.3f}"
        return value + (f" (length ×{run['length_ratio']:.2f})" if stage in ("dpo", "ppo") else "")

    for (task, stage, seed, impl), ours in runs.items():
        if impl != "posttrain":
            continue
        trl, key = runs.get((task, stage, seed, "trl")), HEADLINE[stage]
        met = ours[key] >= GOALS[stage] and (stage not in ("dpo", "ppo") or ours["length_ratio"] <= 1.5)
        beats = ("yes" if ours[key] > trl[key] and ours["wall_s"] <= 0.5 * trl["wall_s"] else "no") if trl else \
            ("no TRL stage" if stage == "ppo" else "not run")
        trl_time, ratio = (f"{trl['wall_s']:.0f} s", f"{ours['wall_s'] / trl['wall_s']:.2f}") if trl else ("—", "—")
        lines.append(f"| {task} | {stage}: {WHAT[stage]} (≥ {GOALS[stage]}) | {seed} | {shown(ours, stage)} | "
                     f"{shown(trl, stage) if trl else '—'} | {ours['wall_s']:.0f} s | {trl_time} | {ratio} | "
                     f"{'yes' if met else 'no'} | {beats} |")
    base = [f"- base model on {t}: style share {b['style_share']:.3f}, mean judge score {b['mean_score']:.3f}, "
            f"mean length {b['mean_length']:.1f} tokens" for t, b in results["base"].items()]
    tasks = [f"- {t}: {m['pairs']} training pairs, {m['heldout_pairs']} held-out pairs, {m['sft_rows']} SFT rows "
             f"(style: {m['style']})" for t, m in results["tasks"].items()]
    return "\n".join([f"{results['date']}, {results['machine']}", "", *tasks, *base, "", *lines, ""])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--quick", action="store_true", help="tiny data and 3 steps a stage: a smoke run")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--tasks", nargs="+", help="only these tasks (readability, sentiment)")
    parser.add_argument("--impls", nargs="+", choices=("posttrain", "trl"), default=["posttrain", "trl"])
    parser.add_argument("--extra", action="append", default=[], metavar="STAGE:FLAGS",
                        help="extra posttrain flags for a stage, for trying settings (e.g. 'rm:--lr 3e-4'); "
                             "use with --tag, the defaults' figures are runs without it")
    parser.add_argument("--tag", default="", help="names this set of runs (cache folder and results file)")
    parser.add_argument("--cache", default=str(REPO / "runs" / "quality"))
    parser.add_argument("--draw", type=int, default=0,
                        help="which draw of the tasks: the seed of the prompts' order and of the base model's samples; "
                             "another number builds tasks the defaults were not chosen on (cached apart, under "
                             "full-drawN/); the same number can still give another draw on another kind of CPU")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per process (also for the runs): on a shared 2-core machine one thread "
                             "each keeps a run from stalling on cores other jobs hold; 0 leaves torch's default")
    parser.add_argument("--report", action="store_true", help="train nothing: report the finished runs in the cache")
    parser.add_argument("--rerun", action="store_true", help="train again even where a finished run is cached")
    parser.add_argument("--jobs", type=int, default=1,
                        help="run the tasks side by side, one process each (at most one per task); with --threads 1 "
                             "on a 2-core machine, --jobs 2 about halves the wall time")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(args.threads)  # read by the runs' processes as they start
        import torch

        torch.set_num_threads(args.threads)

    if args.jobs > 1 and not args.report:
        run_side_by_side(args, argv)
        # every run is cached now, trained again where --rerun asked: the report below gathers them
        args.report, args.rerun = True, False
    results = run_all(args)
    name = ("quality" + ("-quick" if args.quick else "") + (f"-draw{args.draw}" if args.draw else "")
            + (f"-{args.tag}" if args.tag else ""))
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    report = table(results)
    (out / f"{name}.md").write_text(report)
    print(report)


def run_side_by_side(args, argv: list[str]) -> None:
    """Train each task in its own child process of this script, ``args.jobs`` at a time.

    The tasks and the base model's answers are built first, here, so the children only read them."""
    run_all(argparse.Namespace(**{**vars(args), "report": True}))
    tasks = args.tasks or [judge.name for judge in judges()]
    pending, running = list(tasks), []
    while pending or running:
        while pending and len(running) < args.jobs:
            task = pending.pop(0)
            # the last --tasks and --jobs on a command line win: each child trains its own task alone
            child = subprocess.Popen([sys.executable, __file__, *argv, "--tasks", task, "--jobs", "1"])
            running.append((task, child))
        time.sleep(1)
        for task, child in [r for r in running if r[1].poll() is not None]:
            running.remove((task, child))
            if child.returncode:
                for _, other in running:
                    other.terminate()
                raise SystemExit(f"quality: the {task} task's process failed (exit {child.returncode}); "
                                 f"its log is above, finished runs stay cached")


if __name__ == "__main__":
    main()
