"""Helpers shared by the benchmark scripts (run as ``python3 benchmarks/NAME.py``)."""

from __future__ import annotations

import os
import statistics
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


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: dict[str, int],
                      block: int = 1) -> dict[str, dict]:
    """Median wall-clock and CPU seconds (and the best wall-clock) of each function, in interleaved rounds.

    Each function runs ``repeats[name]`` times, spread evenly over the rounds, so that all of them see
    the same machine load: this machine's speed drifts by up to 1.5x over minutes, and timing each
    function in its own block of runs made the ratios depend on which one ran in a slow minute.
    With ``block`` > 1 a function runs up to ``block`` times in a row within a round (steady state:
    a fresh multi-MB output is then usually memory glibc has just freed, not new pages).
    """
    rounds = max(-(-count // block) for count in repeats.values())
    walls: dict[str, list[float]] = {name: [] for name in fns}
    cpus: dict[str, list[float]] = {name: [] for name in fns}
    for round_index in range(rounds):
        for name, fn in fns.items():
            due = (round_index + 1) * repeats[name] // rounds - round_index * repeats[name] // rounds
            wall, cpu = wall_and_cpu_times(fn, due)
            walls[name] += wall
            cpus[name] += cpu
    return {name: {"wall": statistics.median(walls[name]), "cpu": statistics.median(cpus[name]),
                   "best": min(walls[name]), "runs": len(walls[name])} for name in fns}


def write_table(lines: list[str], output: str) -> None:
    """Write the table to ``output`` atomically (``-``: nowhere, it was printed already)."""
    if output == "-":
        return
    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    tmp = output + ".tmp"
    with open(tmp, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(tmp, output)
