"""Benchmark the fast selective scan against the float64 reference and a torch.clone of its inputs.

DASS shapes: batch 1, K = 4 directions, C = 96 channels, N = 1, L = H*W time steps.
For each L it reports medians (numba warmed up first) of
  fast fwd   : dass.ops.selective_scan under torch.inference_mode (--repeats runs)
  clone      : torch.clone of u, delta, B and C (the memory traffic of just touching the inputs)
  fwd+bwd    : forward + backward of the fast scan (up to --backward-max-length)
  reference  : dass.ops.selective_scan_ref, float64 loop over time (up to --ref-max-length; 3 runs
               at L <= 8192, else 1)
(each length measured --passes times, minutes apart, with a summary of the ratios by pass)
and the ratios fast/clone (goal <= 3) and reference/fast (goal >= 100 at L = 8192), by median
wall-clock time, by best wall-clock time (best ref/fast: the runs least disturbed by other load on
a shared machine) and by median process CPU time (cpu ref/fast). The runs of
one L are interleaved in rounds (--block fast runs, --block clones, a reference run, ...) so that
every ratio compares runs made under the same machine load. Within a block the fast scan runs as it
would in a loop: its 12.6 MB output (L = 8192) then reuses memory glibc has just freed; a strict
alternation with the clones (--block 1) makes glibc hand back fresh pages each time, and their page
faults cost 1-5 ms on this VM (as much as the scan itself, and the same for any fresh tensor).

    python3 benchmarks/scan.py                      # writes results/scan.txt
    python3 benchmarks/scan.py --lengths 8192 --repeats 3 --output -
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys

import torch
from _common import interleaved_times, wall_and_cpu_times, write_table


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
    parser.add_argument("--repeats", type=int, default=15, help="runs of the fast scan and the clone")
    parser.add_argument("--block", type=int, default=5,
                        help="consecutive runs of one function within a round (1: strict alternation)")
    parser.add_argument("--passes", type=int, default=3,
                        help="measure every length this many times, minutes apart (the machine drifts)")
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
        f"medians of {args.repeats} runs interleaved in blocks of {args.block} (reference: 3 or 1)",
        f"{'L':>9} {'fast fwd ms':>12} {'clone ms':>10} {'fast/clone':>10} "
        f"{'fwd+bwd ms':>11} {'ref ms':>10} {'ref/fast':>9} {'best ref/fast':>14} {'cpu ref/fast':>13}",
    ]
    print("\n".join(lines), flush=True)
    # Warm up on a small problem, forward and backward: numba compiles or loads its cache, and
    # torch imports what backward(gradient) needs on its first call (~0.5 s).
    warm = make_inputs(64, args.groups, 2, args.state)
    for tensor in warm.values():
        tensor.requires_grad_(True)
    warm_y = selective_scan(**warm)
    warm_y.backward(torch.ones_like(warm_y))

    ratios: dict[int, list[tuple[float, float]]] = {length: [] for length in args.lengths}
    for pass_index in range(args.passes):
        if args.passes > 1:
            lines.append(f"# pass {pass_index + 1} of {args.passes}")
            print(lines[-1], flush=True)
        for length in args.lengths:
            inputs = make_inputs(length, args.groups, args.channels, args.state)

            def fast() -> None:
                with torch.inference_mode():
                    selective_scan(**inputs)

            def reference() -> None:
                with torch.inference_mode():
                    selective_scan_ref(**inputs)

            fns = {"fast": fast, "clone": lambda: [inputs[name].clone() for name in ("u", "delta", "B", "C")]}
            repeats = {"fast": args.repeats, "clone": args.repeats}
            if length <= args.ref_max_length:
                fns["reference"] = reference
                repeats["reference"] = 3 if length <= 8192 else 1
            times = interleaved_times(fns, repeats, block=args.block)
            backward = float("nan")
            if length <= args.backward_max_length:
                leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
                grad_y = torch.randn_like(inputs["u"])

                def forward_backward() -> None:
                    selective_scan(**leaves).backward(grad_y)

                walls, _ = wall_and_cpu_times(forward_backward, max(1, args.repeats // 3))
                backward = statistics.median(walls)
                del leaves, grad_y
            fast_wall, fast_cpu = times["fast"]["wall"], times["fast"]["cpu"]
            reference = times.get("reference", {"wall": float("nan"), "cpu": float("nan"), "best": float("nan")})
            line = (
                f"{length:>9} {fast_wall * 1e3:>12.2f} {times['clone']['wall'] * 1e3:>10.2f} "
                f"{fast_wall / times['clone']['wall']:>10.2f} {backward * 1e3:>11.2f} "
                f"{reference['wall'] * 1e3:>10.1f} {reference['wall'] / fast_wall:>9.1f} "
                f"{reference['best'] / times['fast']['best']:>14.1f} {reference['cpu'] / fast_cpu:>13.1f}"
            )
            print(line, flush=True)
            lines.append(line)
            if "reference" in times:
                ratios[length].append((reference["wall"] / fast_wall, reference["best"] / times["fast"]["best"]))
            del inputs
    for length, values in ratios.items():
        if values and args.passes > 1:
            lines.append(f"# L = {length}: ref/fast by pass {', '.join(f'{r:.1f}' for r, _ in values)} "
                         f"(median {statistics.median(r for r, _ in values):.1f}); best ref/fast by pass "
                         f"{', '.join(f'{b:.1f}' for _, b in values)}")
            print(lines[-1])
    lines.append("# goals: fast/clone <= 3 at every L; ref/fast >= 100 at L = 8192 (nan: not run)")
    print(lines[-1])

    command = "python3 " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    write_table([command, *lines], args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
