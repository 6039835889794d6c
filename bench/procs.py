"""Memory and CPU time of the server processes, from /proc: resident set now and at its peak.

A server may fork (workers, helpers), so both figures are sums over the process tree under
the process the benchmark started. For the peak (``VmHWM``, each process's own high-water
mark) the sum is an upper bound: the processes need not have peaked at the same moment.
"""

from __future__ import annotations

from pathlib import Path

_PROC = Path("/proc")


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # The command name may hold spaces and parentheses: the fields follow the last ")".
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _status_kib(pid: int, field: str) -> int:
    try:
        text = (_PROC / str(pid) / "status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def peak_rss_kib(pid: int) -> int:
    """Sum of ``VmHWM`` (peak resident set) over the tree; 0 if the process is gone."""
    return sum(_status_kib(p, "VmHWM") for p in tree(pid))


def rss_kib(pid: int) -> int:
    """Sum of ``VmRSS`` (resident set now) over the tree; 0 if the process is gone."""
    return sum(_status_kib(p, "VmRSS") for p in tree(pid))


def cpu_ticks(pid: int) -> int:
    """utime + stime, in clock ticks, summed over the tree (0 for a process gone meanwhile)."""
    total = 0
    for p in tree(pid):
        try:
            fields = (_PROC / str(p) / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def mib(kib: int) -> str:
    return f"{kib / 1024:,.1f} MiB"
