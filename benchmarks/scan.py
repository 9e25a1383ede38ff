"""Benchmark the fast selective scan against the float64 reference and a torch.clone of its inputs.

DASS shapes: batch 1, K = 4 directions, C = 96 channels, N = 1, L = H*W time steps.
For each L it reports (median of --repeats runs, numba warmed up first):
  fast fwd   : dass.ops.selective_scan under torch.inference_mode
  clone      : torch.clone of u, delta, B and C (the memory traffic of just touching the inputs)
  fwd+bwd    : forward + backward of the fast scan (up to --backward-max-length)
  reference  : dass.ops.selective_scan_ref, float64 loop over time (up to --ref-max-length)
and the ratios fast/clone (goal <= 3) and reference/fast (goal >= 100 at L = 8192), by wall-clock
time and, because the machine may be shared, also by process CPU time (cpu ref/fast).

    python3 benchmarks/scan.py                      # writes results/scan.txt
    python3 benchmarks/scan.py --lengths 8192 --repeats 3 --output -
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
from typing import Callable

import torch
from _common import wall_and_cpu_times, write_table


def median_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall-clock and median process CPU time (all threads) of fn(), in seconds."""
    walls, cpus = wall_and_cpu_times(fn, repeats)
    return statistics.median(walls), statistics.median(cpus)


def make_inputs(length: int, groups: int, channels: int, state: int, seed: int = 0) -> dict:
    """DASS-like inputs: A = -1 (A_logs = 0), D = 1, delta_bias from the VMamba dt init."""
    gen = torch.Generator().manual_seed(seed)
    rows = groups * channels
    dt = torch.exp(torch.rand(rows, generator=gen) * (torch.log(torch.tensor(0.1)) - torch.log(torch.tensor(1e-3)))
                   + torch.log(torch.tensor(1e-3)))
    return {
        "u": torch.randn(1, rows, length, generator=gen),
        "delta": torch.randn(1, rows, length, generator=gen) * 0.1,
        "A": -torch.ones(rows, state),
        "B": torch.randn(1, groups, state, length, generator=gen),
        "C": torch.randn(1, groups, state, length, generator=gen),
        "D": torch.ones(rows),
        "delta_bias": dt + torch.log(-torch.expm1(-dt)),  # inverse softplus
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[8192, 65536, 1048576])
    parser.add_argument("--groups", type=int, default=4, help="K, scan directions")
    parser.add_argument("--channels", type=int, default=96, help="C, channels per direction")
    parser.add_argument("--state", type=int, default=1, help="N, state size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ref-max-length", type=int, default=65536)
    parser.add_argument("--backward-max-length", type=int, default=65536)
    parser.add_argument("--output", default="results/scan.txt", help="'-' for stdout only")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (the numba kernels follow it); default: torch's")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    from dass.ops import selective_scan, selective_scan_ref

    lines = [
        f"# torch {torch.__version__}, torch threads {torch.get_num_threads()}, "
        f"cpus {os.cpu_count()}, batch 1, K={args.groups}, C={args.channels}, N={args.state}, "
        f"median of {args.repeats}",
        f"{'L':>9} {'fast fwd ms':>12} {'clone ms':>10} {'fast/clone':>10} "
        f"{'fwd+bwd ms':>11} {'ref ms':>10} {'ref/fast':>9} {'cpu ref/fast':>13}",
    ]
    print("\n".join(lines), flush=True)
    # Warm up on a small problem, forward and backward: numba compiles or loads its cache, and
    # torch imports what backward(gradient) needs on its first call (~0.5 s).
    warm = make_inputs(64, args.groups, 2, args.state)
    for tensor in warm.values():
        tensor.requires_grad_(True)
    warm_y = selective_scan(**warm)
    warm_y.backward(torch.ones_like(warm_y))

    for length in args.lengths:
        inputs = make_inputs(length, args.groups, args.channels, args.state)
        with torch.inference_mode():
            fast, fast_cpu = median_seconds(lambda: selective_scan(**inputs), args.repeats)
        clone, _ = median_seconds(
            lambda: [inputs[name].clone() for name in ("u", "delta", "B", "C")], args.repeats
        )
        backward = float("nan")
        if length <= args.backward_max_length:
            leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
            grad_y = torch.randn_like(inputs["u"])

            def forward_backward() -> None:
                selective_scan(**leaves).backward(grad_y)

            backward, _ = median_seconds(forward_backward, max(1, args.repeats // 2))
            del leaves, grad_y
        reference = reference_cpu = float("nan")
        if length <= args.ref_max_length:
            with torch.inference_mode():
                reference, reference_cpu = median_seconds(
                    lambda: selective_scan_ref(**inputs), 3 if length <= 8192 else 1
                )
        line = (
            f"{length:>9} {fast * 1e3:>12.2f} {clone * 1e3:>10.2f} {fast / clone:>10.2f} "
            f"{backward * 1e3:>11.2f} {reference * 1e3:>10.1f} {reference / fast:>9.1f} "
            f"{reference_cpu / fast_cpu:>13.1f}"
        )
        print(line, flush=True)
        lines.append(line)
        del inputs
    lines.append("# goals: fast/clone <= 3 at every L; ref/fast >= 100 at L = 8192 (nan: not run)")
    print(lines[-1])

    command = "python3 " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    write_table([command, *lines], args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
