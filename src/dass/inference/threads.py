"""Threads for the inference engine: one team of workers, torch single-threaded inside each.

Why not torch's and numba's own thread pools: both are OpenMP pools (two different libgomp copies),
and an OpenMP worker spins for milliseconds after each parallel region. On a small CPU, alternating
torch ops and numba kernels then has each pool's spinning workers stealing the cores the other pool
needs: measured on a 2-core machine, the same forward took 1-10 s instead of 0.4 s (unless
``OMP_WAIT_POLICY=PASSIVE`` is set before torch is imported, which a library cannot rely on).

So the engine runs its own team: the calling thread plus ``threads - 1`` Python workers that wait on
a queue (sleeping, not spinning). Each phase of a block is split into disjoint parts (rows, columns
or channels) that the team runs at once; torch ops (GIL released, MKL sequential) and numba kernels
(``nogil``) run truly in parallel. torch is set to one thread for the duration (and restored).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch

__all__ = ["Team", "engine_threads", "split_range"]


def _worker_init() -> None:
    torch.set_num_threads(1)


def _run_inference(fn: Callable[..., Any], args: Sequence[Any]) -> Any:
    with torch.inference_mode():
        return fn(*args)


class Team:
    """The calling thread plus ``size - 1`` worker threads running parts of one phase at once."""

    def __init__(self, size: int) -> None:
        self.size = max(1, int(size))
        self._pool = (ThreadPoolExecutor(max_workers=self.size - 1, thread_name_prefix="dass-infer",
                                         initializer=_worker_init) if self.size > 1 else None)

    def run(self, fn: Callable[..., Any], parts: Sequence[Sequence[Any]]) -> None:
        """Call ``fn(*part)`` for every part (at most ``size`` of them), the first on this thread.

        Returns when all are done; re-raises the first exception.
        """
        if not parts:
            return
        if len(parts) > self.size:
            raise ValueError(f"{len(parts)} parts for a team of {self.size}")
        futures = [self._pool.submit(_run_inference, fn, part) for part in parts[1:]] if self._pool else []
        try:
            fn(*parts[0])
        finally:
            errors = []
            for future in futures:
                try:
                    future.result()
                except BaseException as error:  # noqa: BLE001 - collected and re-raised below
                    errors.append(error)
        if errors:
            raise errors[0]


_TEAMS: dict[int, Team] = {}
_TEAMS_LOCK = threading.Lock()


def team_of(size: int) -> Team:
    """The shared team of ``size`` threads (created on first use)."""
    with _TEAMS_LOCK:
        if size not in _TEAMS:
            _TEAMS[size] = Team(size)
        return _TEAMS[size]


@contextmanager
def engine_threads(threads: int | None = None) -> Iterator[Team]:
    """Yield a team of ``threads`` (default: ``torch.get_num_threads()``); torch runs single-threaded inside."""
    size = torch.get_num_threads() if threads is None else int(threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            yield team_of(max(1, size))
    finally:
        torch.set_num_threads(previous)


def split_range(lo: int, hi: int, parts: int, align: int = 1) -> list[tuple[int, int]]:
    """Split ``[lo, hi)`` into at most ``parts`` non-empty contiguous ranges (boundaries on ``align``)."""
    total = hi - lo
    if total <= 0:
        return []
    units = -(-total // align)
    parts = max(1, min(parts, units))
    bounds = [lo + min(total, align * ((units * i) // parts)) for i in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
