"""The launcher's side of a benchmark worker: each run is its own process, which prints one ``RESULT {json}`` line
(its step times, its own peak memory from peak_memory.py, ...)."""

from __future__ import annotations

import json
import subprocess
import time


def run_worker(command: list[str], env: dict) -> dict:
    """Run one worker process; its RESULT record with the run's wall time added. A failed run stops the benchmark
    with the command and the end of its stderr."""
    started = time.time()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        raise SystemExit(f"benchmark run failed: {' '.join(command)}\n{result.stderr[-4000:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    out["wall_seconds"] = time.time() - started
    return out
