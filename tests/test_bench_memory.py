"""The benchmarks' peak-memory reading is each worker's own, not its parent's (Linux carries ru_maxrss across
fork and exec, so a small worker of a big parent would report the parent's size)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="VmHWM is Linux's")
def test_a_small_worker_of_a_big_parent_reports_a_small_peak():
    ballast = bytearray(700 * 1024 * 1024)  # the parent grows by 700 MiB
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    probe = (f"import resource, sys; sys.path.insert(0, {str(BENCH)!r}); from peak_memory import peak_mib; "
             "print(peak_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    own, inherited = map(float, subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                               check=True).stdout.split())
    assert own < 100, f"the worker reported {own:.0f} MiB"
    assert inherited > 700  # what ru_maxrss says: the parent's peak, which is why the benchmarks do not use it
    del ballast
