"""Where an RL run's resident memory peaks, phase by phase, beside `posttrain plan`'s items.

    python bench/rl_memory_phases.py              # PPO on bench/plan_check.py's data and settings, 2 steps
    python bench/rl_memory_phases.py --algo grpo

bench/plan_check.py compares the plan's total with the run's whole peak (VmHWM); this says which phase holds the
peak and how much each phase adds above its entry: a thread reads VmRSS every 5 ms while the loop's steps
(collect_rollouts, score, advantages, update, save) are wrapped to name the phase and the step it belongs to. The reward model is a 3-step
`posttrain rm` on plan_check's pairs, trained in a subprocess so that this process's peak is the RL run's alone.
Writes bench/results/rl_memory_phases.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

PHASES = ("collect_rollouts", "score", "advantages", "update", "save")


def resident_mib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


class PhaseMemory:
    """Samples VmRSS in a thread; ``track(module)`` wraps the loop's step functions so each sample names its phase."""

    def __init__(self, interval: float = 0.005):
        self.phase, self.interval, self.running = "load", interval, True
        self.peak: dict[str, float] = {}
        self.entry: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while self.running:
            self.peak[self.phase] = max(self.peak.get(self.phase, 0.0), resident_mib())
            time.sleep(self.interval)

    def track(self, module, names=PHASES) -> None:
        for name in names:
            setattr(module, name, self._wrapped(name, getattr(module, name)))

    def _wrapped(self, name: str, function):
        def run(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            label = f"{name}, step {self.calls[name]}"  # each step's call apart: a later one starts from what the
            outer, self.phase = self.phase, label    # earlier steps left resident
            self.entry[label] = resident_mib()
            try:
                return function(*args, **kwargs)
            finally:
                self.phase = outer
        return run

    def stop(self) -> None:
        self.running = False
        self.thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--algo", default="ppo")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    import plan_check
    from posttrain.config import RLHFConfig, load_config
    from posttrain.models import load_tokenizer
    from posttrain.plan import plan_stage

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="rl-memory-") as tmp:
        tmp = Path(tmp)
        files = plan_check.build_data(tmp, load_tokenizer(args.model))
        subprocess.run([sys.executable, "-m", "posttrain.cli", "rm", "--model", args.model, "--output", str(tmp / "rm"),
                        "--data", str(files["rm"]), *plan_check.STAGES["rm"]], check=True, cwd=REPO,
                       stdout=subprocess.DEVNULL)
        flags = ["--model", args.model, "--prompts", str(files["prompts"]), "--reward-model", str(tmp / "rm"),
                 "--output", str(tmp / "rl"), "--algo", args.algo, *plan_check.STAGES["rlhf"]]
        overrides = {flag.lstrip("-"): value for flag, value in zip(flags[::2], flags[1::2])}
        config = load_config(RLHFConfig, None, overrides)
        plan = plan_stage("rlhf", flags, device="cpu")  # before the run: the plan measures this process's runtime

        import posttrain.stages.rlhf as rlhf

        memory = PhaseMemory()
        memory.track(rlhf)
        rlhf.run_rlhf(config)
        memory.stop()
    peak = resident_mib("VmHWM")
    rows = [{"phase": label, "entry_mib": round(memory.entry.get(label, 0)), "peak_mib": round(peak_mib)}
            for label, peak_mib in memory.peak.items()]  # in the order the phases first ran
    result = {"date": date.today().isoformat(), "machine": platform.machine(), "algo": args.algo, "threads": args.threads,
              "flags": ["--algo", args.algo, *plan_check.STAGES["rlhf"]], "vmhwm_mib": round(peak), "planned_mib": round(plan.total / 2**20),
              "planned_items": {k: round(v / 2**20, 1) for k, v in plan.items.items()}, "phases": rows}
    out = HERE / "results" / f"rl_memory_phases{'' if args.algo == 'ppo' else '-' + args.algo}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{args.algo}: peak {peak:.0f} MiB (VmHWM), planned {plan.total / 2**20:.0f} MiB\n")
    print("| phase | resident at its entry | peak within it |\n|---|---|---|")
    for row in rows:
        entry = f"{row['entry_mib']} MiB" if row["phase"] != "load" else "—"
        print(f"| {row['phase']} | {entry} | {row['peak_mib']} MiB |")
    print(f"\n{out}")


if __name__ == "__main__":
    main()
