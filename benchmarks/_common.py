"""Helpers shared by the benchmark scripts (run as ``python3 benchmarks/NAME.py``)."""

from __future__ import annotations

import os
import time
from typing import Callable


def wall_and_cpu_times(fn: Callable[[], object], repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds (all threads) of ``repeats`` calls of ``fn()``."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls, cpus


def write_table(lines: list[str], output: str) -> None:
    """Write the table to ``output`` atomically (``-``: nowhere, it was printed already)."""
    if output == "-":
        return
    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    tmp = output + ".tmp"
    with open(tmp, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(tmp, output)
