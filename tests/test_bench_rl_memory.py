"""bench/rl_memory_phases.py: each wrapped step's samples are counted to that step, entry and peak."""

import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from rl_memory_phases import PhaseMemory  # noqa: E402


def test_a_phase_that_holds_a_large_buffer_peaks_above_its_entry_and_the_others_do_not():
    def hold(mib):
        buffer = bytearray(mib * 2**20)  # zero-filled: resident once written
        buffer[::4096] = b"x" * len(buffer[::4096])
        time.sleep(0.2)
        return len(buffer)

    loop = SimpleNamespace(big=lambda: hold(300), small=lambda: time.sleep(0.2))
    memory = PhaseMemory(interval=0.002)
    memory.track(loop, names=("small", "big"))
    loop.small()
    loop.big()
    loop.small()
    memory.stop()
    assert memory.peak["big, step 1"] - memory.entry["big, step 1"] > 250
    assert memory.peak["small, step 1"] - memory.entry["small, step 1"] < 50
    assert "small, step 2" in memory.peak  # a later call is its own row
