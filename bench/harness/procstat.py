"""Server CPU and memory, read from /proc.

CPU is the time on CPU of every thread of every process of a server's tree
(the hub's aiosqlite thread counts): the first field of
``/proc/PID/task/TID/schedstat``, in nanoseconds.  ``utime + stime`` of
``/proc/PID/stat`` says the same in clock ticks (10 ms), too coarse for one
announcement to 1,000 families; it is the fallback where schedstat is missing,
and the check when a thread ended during a measurement (its time then only
shows in ``stat``).  Memory is ``VmRSS`` (now) and ``VmHWM``
(peak since start) of ``/proc/PID/status``; a sampler also keeps the highest
``VmRSS`` it saw while a scenario ran, which is the scenario's peak.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may contain spaces.
    return raw[raw.rindex(")") + 2:].split()


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (scans /proc once)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_ticks_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After the name: state(0) ppid(1) … utime(11) stime(12)
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu_seconds(pid: int) -> float:
    """On-CPU time of every live thread of ``pid`` (ns resolution), or the ticks."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    except PermissionError:
        return cpu_ticks_seconds(pid)
    return total / 1e9 if total else cpu_ticks_seconds(pid)


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return rss, hwm


def pids_named(name: str) -> list[int]:
    """Processes whose command name is ``name`` (for the shared Redis and PostgreSQL)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == name:
                        found.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass
    return found


@dataclass
class Group:
    """A set of processes measured together (one server's tree, or several workers)."""

    roots: list[int]
    pids: list[int] = field(default_factory=list)

    def refresh(self) -> None:
        pids = []
        for root in self.roots:
            pids.append(root)
            pids.extend(children(root))
        self.pids = pids

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids)

    def cpu_ticks(self) -> float:
        return sum(cpu_ticks_seconds(p) for p in self.pids)

    def rss_kib(self) -> int:
        return sum(memory_kib(p)[0] for p in self.pids)

    def hwm_kib(self) -> int:
        return sum(memory_kib(p)[1] for p in self.pids)


class Sampler:
    """Samples a group's RSS every ``interval`` seconds and keeps the peak."""

    def __init__(self, group: Group, interval: float = 0.05) -> None:
        self.group = group
        self.interval = interval
        self.peak_kib = 0
        self._task: asyncio.Task | None = None

    def reset(self) -> None:
        self.peak_kib = self.group.rss_kib()

    async def _run(self) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, self.group.rss_kib())
            await asyncio.sleep(self.interval)

    def start(self) -> "Sampler":
        self.reset()
        self._task = asyncio.ensure_future(self._run())
        return self

    async def stop(self) -> int:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.peak_kib = max(self.peak_kib, self.group.rss_kib())
        return self.peak_kib
