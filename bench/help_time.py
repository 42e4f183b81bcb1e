"""How long `posttrain --help` and `posttrain COMMAND --help` take, each in a fresh Python process, and whether
they import torch (they must not: help should answer at once).

    python bench/help_time.py              # 5 runs of each, the median and the slowest
    python bench/help_time.py --runs 11

Runs ``python -c "import sys; from posttrain.cli import main; ..."`` (what the ``posttrain`` script does) from
this checkout, so the worktree's posttrain is the one timed. Writes bench/results/help_time.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [[], ["sft"], ["rm"], ["dpo"], ["rlhf"], ["score"], ["eval"], ["chat"], ["merge"], ["plan"], ["pipeline"]]
# the entry point's own work, then a report of the heavy libraries the process loaded
CODE = ("import sys\nfrom posttrain.cli import main\ncode = main(sys.argv[1:])\n"
        "print('\\nLOADED', [m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets') if m in sys.modules],"
        " file=sys.stderr)\nsys.exit(code)")


def one_run(argv: list[str]) -> tuple[float, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CODE, *argv, "--help"], capture_output=True, text=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"posttrain {' '.join(argv)} --help failed:\n{out.stderr}")
    loaded = eval(out.stderr.rsplit("LOADED", 1)[1].strip())  # the list printed above
    return seconds, loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for argv in COMMANDS:
        times, loaded = [], set()
        for _ in range(args.runs):
            seconds, heavy = one_run(argv)
            times.append(seconds)
            loaded.update(heavy)
        rows.append({"command": " ".join(["posttrain", *argv, "--help"]), "median_s": statistics.median(times),
                     "max_s": max(times), "heavy_imports": sorted(loaded)})
        print(f"{rows[-1]['command']:<32} median {rows[-1]['median_s']:.3f} s  max {rows[-1]['max_s']:.3f} s  "
              f"imports {', '.join(rows[-1]['heavy_imports']) or 'none of torch/transformers/trl/peft/datasets'}")
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "python": sys.version.split()[0], "runs": args.runs, "rows": rows}
    out = REPO / "bench" / "results" / "help_time.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"slowest median {max(r['median_s'] for r in rows):.3f} s; written to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
