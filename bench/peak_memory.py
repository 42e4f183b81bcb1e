"""A process's own peak resident memory, for benchmark workers.

``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is not that: Linux carries the high-water mark across fork and exec,
so a worker started from a parent that has grown reports the parent's peak. ``VmHWM`` in /proc/self/status belongs
to the process's own address space, which exec replaces: it starts again from the new program. Imported by the
workers of both virtualenvs (posttrain's and trl 1.12's), so it uses the standard library only.
"""

import resource


def peak_mib() -> float:
    """Peak resident memory of this process since its exec, in MiB (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
