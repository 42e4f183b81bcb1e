"""Reward-model settings side by side: held-out pairwise accuracy per setting, task and seed.

    python bench/rm_sweep.py --tasks runs/quality/full/tasks --seeds 0 1 2 --jobs 2 \\
        --setting default= --setting lr1e-3="--train.lr 1e-3" --out bench/results/rm_sweep.json

Each run is `python -m posttrain.cli rm --data TASK/prefs_train.jsonl --seed S FLAGS` in its own process,
then measured as bench/quality.py measures it (TASK/prefs_heldout.jsonl, read the way `posttrain score`
reads it). `--jobs` runs go at once (on a GPU they share it), each with its share of the CPU cores as torch threads
(`--threads`). The results file is rewritten after every run, so a sweep cut short keeps what finished, and a sweep
into the same file again runs only what is missing; runs go setting by setting, so the first settings finish first.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def measure(folder: str, heldout: str) -> None:
    """In its own process: print the held-out accuracy of one trained reward model."""
    sys.path[:0] = [str(HERE), str(REPO)]
    import quality_eval as ev
    from quality_tasks import read_jsonl

    print(json.dumps({"heldout_accuracy": ev.posttrain_rm_accuracy(folder, read_jsonl(Path(heldout)))}))


def one_run(task: Path, seed: int, name: str, flags: str, work: Path, threads: int) -> dict:
    output = work / name / task.name / f"s{seed}"
    record = {"setting": name, "flags": flags, "task": task.name, "seed": seed, "threads": threads}
    # one share of the cores per run: with --jobs 2 on 2 cores, two runs of 2 threads each were 3-6x slower
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.time()
    train = [sys.executable, "-m", "posttrain.cli", "rm", "--data", str(task / "prefs_train.jsonl"),
             "--output", str(output), "--seed", str(seed), *shlex.split(flags)]
    log = output.parent / f"s{seed}.log"
    output.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        trained = subprocess.run(train, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    record["wall_s"] = round(time.time() - started, 1)
    if trained.returncode:
        record["error"] = "\n".join(log.read_text().splitlines()[-15:])
        return record
    scored = subprocess.run([sys.executable, __file__, "--measure", str(output), str(task / "prefs_heldout.jsonl")],
                            capture_output=True, text=True, env=env, cwd=REPO)
    if scored.returncode:
        record["error"] = scored.stderr[-2000:]
        return record
    record.update(json.loads(scored.stdout.strip().splitlines()[-1]))
    return record


def summary(runs: list[dict]) -> str:
    """Markdown: one row per setting, each task's accuracies by seed and their mean."""
    tasks = sorted({r["task"] for r in runs})
    lines = ["| setting | flags | " + " | ".join(tasks) + " | mean |", "|---|---|" + "---|" * (len(tasks) + 1)]
    for name in dict.fromkeys(r["setting"] for r in runs):
        mine = [r for r in runs if r["setting"] == name]
        cells, every = [], []
        for task in tasks:
            values = [r.get("heldout_accuracy") for r in sorted(mine, key=lambda r: r["seed"]) if r["task"] == task]
            every += [v for v in values if v is not None]
            cells.append(" / ".join("failed" if v is None else f"{v:.3f}" for v in values) or "—")
        mean = f"{sum(every) / len(every):.3f}" if every else "—"
        lines.append(f"| {name} | `{mine[0]['flags'] or '(defaults)'}` | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines) + "\n"


def finished(out: Path, tasks: str) -> list[dict]:
    """The runs an earlier sweep into the same results file finished (on the same tasks): they are not repeated."""
    if not out.is_file():
        return []
    earlier = json.loads(out.read_text())
    return [r for r in earlier.get("runs", []) if "error" not in r] if earlier.get("tasks") == tasks else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=str(REPO / "runs" / "quality" / "full" / "tasks"),
                        help="a bench/quality.py tasks folder (its task folders hold prefs_train/prefs_heldout.jsonl)")
    parser.add_argument("--only", nargs="+", help="only these task folders (e.g. sentiment)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=FLAGS",
                        help="a named set of `posttrain rm` flags ('default=' for none); repeat for each")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per run (default: the machine's cores shared among --jobs)")
    parser.add_argument("--work", default=str(REPO / "runs" / "rm_sweep"), help="where checkpoints and logs go")
    parser.add_argument("--out", default=str(HERE / "results" / "rm_sweep.json"))
    parser.add_argument("--machine", default="", help="what ran it, written into the results")
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return measure(*args.measure)
    settings = [s.split("=", 1) for s in args.setting or ["default="]]
    if any(len(s) != 2 for s in settings):
        raise SystemExit("rm_sweep: each --setting is NAME=FLAGS, e.g. lr1e-3='--train.lr 1e-3' or default=")
    folders = [p for p in sorted(Path(args.tasks).iterdir()) if (p / "prefs_train.jsonl").is_file()]
    folders = [p for p in folders if not args.only or p.name in args.only]
    if not folders:
        raise SystemExit(f"rm_sweep: no task folder with prefs_train.jsonl under {args.tasks}")
    out = Path(args.out)
    runs = finished(out, args.tasks)
    done_keys = {(r["setting"], r["flags"], r["task"], r["seed"]) for r in runs}  # a name given new flags reruns
    plan = [(task, seed, name, flags) for name, flags in settings for task in folders for seed in args.seeds
            if (name, flags, task.name, seed) not in done_keys]
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    results = {"date": str(date.today()), "machine": args.machine, "tasks": args.tasks, "runs": runs}
    print(f"rm_sweep: {len(plan)} runs, {args.jobs} at a time, {threads} thread(s) each"
          + (f"; {len(runs)} finished runs kept from {out}" if runs else ""), flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        for done in as_completed([pool.submit(one_run, *job, Path(args.work), threads) for job in plan]):
            record = done.result()
            runs.append(record)
            print("rm_sweep: " + json.dumps({k: v for k, v in record.items() if k != "error"}), flush=True)
            if "error" in record:
                print(record["error"], flush=True)
            out.write_text(json.dumps(results, indent=1) + "\n")
            out.with_suffix(".md").write_text(summary(runs))
    print(summary(runs))


if __name__ == "__main__":
    main()
