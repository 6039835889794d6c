"""Which CPython build runs the benchmark, and how fast it runs Python on the day.

The gateways and the mock that ``bench/run.py`` starts run on the interpreter that runs it
(``stack.cli()``: its environment's ``costwarden``). Builds differ: the image's
``python:3.11-slim`` is configured with ``--enable-optimizations --with-lto`` (profile-guided
and link-time optimized); a plain ``pyenv install`` is neither, and on one 2-core VM the
gateway's main thread spent 8-43 % more CPU per request on it (five paired rounds) than on
Debian's optimized ``/usr/bin/python3.11`` (docs/benchmarks.md, issue 21). A run's table
names the build and a reading of its speed, so two runs can be told apart by interpreter as
well as by machine.
"""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
import time

_ROUNDS = 5
_STEPS = 400_000
_OPTIMIZATIONS = (("--enable-optimizations", "PGO"), ("--with-lto", "LTO"))


def describe() -> str:
    """``3.11.2 at /usr/bin/python3.11`` plus the optimizations its build says it has."""
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    args = str(sysconfig.get_config_var("CONFIG_ARGS") or "")
    flags = [name for opt, name in _OPTIMIZATIONS if opt in args]
    built = f", configured with {' + '.join(flags)}" if flags else ""
    return f"{platform.python_version()} at {base}{built}"


def reference_ms() -> float:
    """Milliseconds for a fixed piece of pure-Python work (best of 5): calls, dict and list
    operations, attribute reads and string formatting, the mix of a request's handling.
    Lower is faster; it moves with the machine's speed on the day and with the build."""
    best = float("inf")
    for _ in range(_ROUNDS):
        started = time.perf_counter()
        _work(_STEPS)
        best = min(best, time.perf_counter() - started)
    return best * 1000


class _Item:
    __slots__ = ("name", "count")

    def __init__(self, name: str, count: int) -> None:
        self.name = name
        self.count = count


def _work(steps: int) -> int:
    table: dict[str, _Item] = {}
    total = 0
    for i in range(steps):
        key = f"k{i & 255}"
        item = table.get(key)
        if item is None:
            item = table[key] = _Item(key, 0)
        item.count += 1
        pair = [i, item.count]
        pair.append(len(item.name))
        total += sum(pair)
    return total
