"""CPU threads of the network forwards: how many, and how a thread waits for work, so that a run does not
collapse when other programs share the cores.

With one thread per core and another program running, every parallel region ends at a barrier that waits
for the thread the kernel has taken off its core; the small bundled model has thousands of tiny regions,
so a restoration that takes seconds alone took minutes beside one busy process (docs/speed-details.md, "On a busy
machine"). The rule (`choose`): the cores this process may use (CPU affinity, capped by a cgroup CPU
quota) minus those running other programs' work when the run starts (the running count of /proc/loadavg,
less this process), never below 1; threads that wait sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE
for OpenMP, no spinning for onnxruntime), so a waiting thread hands its core to whoever needs it.

A count given explicitly wins, then the user's own OMP_NUM_THREADS; a wait policy the user set is kept.
This module imports no torch: `prepare_environment` must run before torch (and with it the OpenMP
runtime, which reads its variables once, when it loads) is imported.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import MutableMapping
from dataclasses import dataclass

AUTO = 0  # `threads` 0: the rule
WAIT_POLICY = "PASSIVE"


@dataclass(frozen=True)
class ThreadChoice:
    """threads: the count to use; usable: cores this process may use; busy: of those, running other work
    (None: unknown); source: "auto", "given" or "OMP_NUM_THREADS"."""

    threads: int
    usable: int
    busy: int | None
    source: str

    def line(self, env: MutableMapping[str, str] | None = None) -> str:
        """One short line for the start of a run."""
        env = os.environ if env is None else env
        if self.source == "auto":
            why = f"{self.usable} usable core(s), {'?' if self.busy is None else self.busy} busy with other work"
        else:
            why = "`threads`" if self.source == "given" else "OMP_NUM_THREADS"
        wait = env.get("OMP_WAIT_POLICY", "default").lower()
        return f"CPU threads: {self.threads} ({why}; idle threads wait {wait})"


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota (containers)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(n, quota) if quota else n)


def cgroup_cpu_quota(path: str = "/sys/fs/cgroup/cpu.max") -> int | None:
    """Whole cores of the cgroup v2 CPU quota ("max" or unreadable: None), rounded up."""
    try:
        with open(path) as f:
            quota, period = f.read().split()[:2]
        if quota == "max":
            return None
        return max(1, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        return None


def running_others(samples: int = 5, interval: float = 0.02, path: str = "/proc/loadavg") -> int | None:
    """Threads of other programs running or waiting for a core now: the median, over `samples` readings
    `interval` seconds apart, of the running count in /proc/loadavg less 1 (the reading thread itself);
    None where it cannot be read (not Linux). The 1-minute load average would lag a program started
    seconds ago by most of a minute; the running count does not."""
    counts = []
    for i in range(samples):
        try:
            with open(path) as f:
                running = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None
        counts.append(max(0, running - 1))
        if i + 1 < samples:
            time.sleep(interval)
    return sorted(counts)[len(counts) // 2]


def auto_threads(usable: int, busy: int | None) -> int:
    """The rule: usable cores less busy ones, never below 1 (busy unknown: all usable cores)."""
    return max(1, usable - (busy or 0))


def choose(requested: int | None = AUTO, env: MutableMapping[str, str] | None = None) -> ThreadChoice:
    """The thread count of a run: `requested` when > 0, else a valid OMP_NUM_THREADS in `env` (the user's
    own), else the rule (`auto_threads` over `usable_cores` and `running_others`)."""
    env = os.environ if env is None else env
    usable = usable_cores()
    if requested:
        return ThreadChoice(int(requested), usable, None, "given")
    own = env.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if own.isdigit() and int(own) > 0:
        return ThreadChoice(int(own), usable, None, "OMP_NUM_THREADS")
    busy = running_others()
    return ThreadChoice(auto_threads(usable, busy), usable, busy, "auto")


def prepare_environment(env: MutableMapping[str, str] | None = None) -> bool:
    """Idle OpenMP threads sleep rather than spin (OMP_WAIT_POLICY=PASSIVE), unless the user set a policy.
    It can only take effect before the OpenMP runtime loads, with torch: in a process that has imported torch
    already (a program calling the CLI in process) the environment is left as it is, so that what the run
    says and what onnxruntime follows (`passive`) is the policy in force. Returns whether it set the policy."""
    env = os.environ if env is None else env
    if "OMP_WAIT_POLICY" in env or "torch" in sys.modules:
        return False
    env["OMP_WAIT_POLICY"] = WAIT_POLICY
    return True


def passive(env: MutableMapping[str, str] | None = None) -> bool:
    """Whether threads should wait passively (the OpenMP policy in force says so): onnxruntime follows it."""
    env = os.environ if env is None else env
    return env.get("OMP_WAIT_POLICY", "").strip().upper() == WAIT_POLICY


__all__ = ["AUTO", "ThreadChoice", "auto_threads", "cgroup_cpu_quota", "choose", "passive", "prepare_environment",
           "running_others", "usable_cores"]
