"""How many CPU threads torch may use: the CPUs this process may run on, not the machine's.

torch's default is the machine's core count. In a container with a CPU quota, under a Slurm
allocation, or beside other busy processes, that oversubscribes the CPUs: threads wait for each
other at every operation (docs/speed.md: a small run took 91 s with 2 threads and 14 s with one
while other processes shared the CPU). fsa takes the smaller of the CPUs in its affinity mask and
its cgroup quota, unless OMP_NUM_THREADS or the `threads` option says otherwise.
"""

import math
import os
from pathlib import Path

CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def cgroup_cpus() -> float | None:
    """The cgroup's CPU quota in CPUs (quota / period), or None where there is none or it cannot be read."""
    try:
        if CGROUP_V2.exists():
            quota, period = CGROUP_V2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota_file, period_file = CGROUP_V1
        if quota_file.exists():
            quota = int(quota_file.read_text())
            return None if quota <= 0 else quota / int(period_file.read_text())
    except (OSError, ValueError):
        return None
    return None


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity mask, capped by the cgroup quota (rounded up)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpus()
    return max(1, min(available, math.ceil(quota))) if quota else max(1, available)


def chosen_threads(option: int | None) -> tuple[int, str]:
    """torch's thread count and why: the `threads` option, else OMP_NUM_THREADS, else the usable CPUs."""
    if option is not None:
        return option, "threads option"
    from_environment = os.environ.get("OMP_NUM_THREADS", "").strip()
    if from_environment.isdigit() and int(from_environment) > 0:
        return int(from_environment), "OMP_NUM_THREADS"
    return usable_cpus(), "CPUs this process may use"
