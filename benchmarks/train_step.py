"""Benchmark one CPU training step (forward + backward + Adam step) of the recipe models.

Models: ``dass_tiny`` (recipes/synth_dass_tiny*.yaml) and ``ast_tiny`` with depth 6
(recipes/synth_ast_tiny.yaml), 59 classes, batch ``--batch`` clips of ``--frames`` frames x 128 bins,
drop-path 0.1, BCE loss via ``dass.train.losses.distillation_loss`` as in ``dass.train.trainer``.
Each step is what the trainer does per batch: model(features) -> loss -> zero_grad -> backward ->
Adam step.

  baseline : the original implementation: DASS layers under ``dass.models.dass.reference_ops()``
             (permute LayerNorm, 1x1 convs through conv2d, einsum projections, autograd through the
             cross-scan copies) and PyTorch's default per-parameter Adam loop on CPU;
  optimised: the default DASS layers and Adam(foreach=True), as the trainer now runs.

Baseline and optimised steps alternate (same process, same weights), and the table reports the median
seconds per clip and the ratio baseline / optimised, by wall-clock time and by process CPU time (the
sum over threads; on a shared, loaded machine wall time mostly measures the other jobs, while CPU
time with --threads 1 is close to the work itself). Also measured: the teacher forward of live KD
(AST), which the KD student run adds to each step, and the evaluation cost: the optimised model's
forward in eval mode under no_grad ("eval/teacher fwd").

    python3 benchmarks/train_step.py                     # writes results/train_step.txt
    python3 benchmarks/train_step.py --batch 4 --repeats 2 --output -
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from typing import Callable

import torch
from _common import write_table

NUM_CLASSES = 59  # the dass synth corpus


def build(name: str) -> torch.nn.Module:
    from dass.models import create_model

    if name == "ast_tiny_d6":
        return create_model("ast_tiny", num_classes=NUM_CLASSES, depth=6, input_tdim=1024, drop_path_rate=0.1)
    return create_model(name, num_classes=NUM_CLASSES, drop_path_rate=0.1)


def make_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, features: torch.Tensor,
              targets: torch.Tensor, reference: bool) -> Callable[[], float]:
    """One trainer step; returns the loss."""
    from dass.models.dass import reference_ops
    from dass.train.losses import distillation_loss

    def step() -> float:
        model.train()
        if reference:
            with reference_ops():
                logits = model(features)
        else:
            logits = model(features)
        loss = distillation_loss(logits.float(), targets, None, 0.0)
        optimizer.zero_grad(set_to_none=True)
        if reference:
            with reference_ops():
                loss.backward()
        else:
            loss.backward()
        optimizer.step()
        return loss.item()

    return step


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall-clock seconds, process CPU seconds over all threads) of fn()."""
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - start_cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=12, help="clips per step (default 12, the recipes')")
    parser.add_argument("--frames", type=int, default=1024, help="frames per clip (default 1024 = 10 s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per variant (median; default 3)")
    parser.add_argument("--threads", default="1,2",
                        help="comma-separated torch/numba thread counts, one table each (default 1,2)")
    parser.add_argument("--models", default="dass_tiny,ast_tiny_d6", help="comma-separated (default: both)")
    parser.add_argument("--output", default="results/train_step.txt", help="table file, or - for stdout only")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    features = torch.randn(args.batch, args.frames, 128)
    targets = torch.rand(args.batch, NUM_CLASSES)
    lines = [f"# python3 benchmarks/train_step.py {shlex.join(sys.argv[1:] if argv is None else argv)}".rstrip()]
    print(lines[0], flush=True)
    current_threads = 0
    for threads, name in [(int(t), n) for t in args.threads.split(",") for n in args.models.split(",")]:
        if threads != current_threads:
            torch.set_num_threads(threads)
            current_threads = threads
            header = [
                f"# batch {args.batch} x {args.frames} frames x 128 bins, {threads} thread(s), median of "
                f"{args.repeats} steps, loadavg {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; seconds per clip",
                f"{'model':<12} {'step':<22} {'base wall':>9} {'opt wall':>9} {'ratio':>6} {'base cpu':>9} "
                f"{'opt cpu':>9} {'ratio':>6}",
            ]
            lines += header
            print("\n".join(header), flush=True)
        torch.manual_seed(0)
        model = build(name)
        variants = {
            "baseline": (torch.optim.Adam(model.parameters(), lr=1e-4, foreach=False), True),
            "optimised": (torch.optim.Adam(model.parameters(), lr=1e-4, foreach=True), False),
        }
        steps = {key: make_step(model, opt, features, targets, ref) for key, (opt, ref) in variants.items()}
        times: dict[str, list[tuple[float, float]]] = {key: [] for key in steps}
        for key in steps:  # warm-up: numba compilation / cache load, allocator, optimizer state
            steps[key]()
        for _ in range(args.repeats):
            for key in steps:
                times[key].append(timed(steps[key]))
        (bw, bc), (ow, oc) = (
            tuple(statistics.median(t[i] for t in times[key]) / args.batch for i in (0, 1))
            for key in ("baseline", "optimised")
        )
        row = f"{name:<12} {'fwd+bwd+Adam (train)':<22} {bw:9.3f} {ow:9.3f} {bw / ow:6.2f} {bc:9.3f} {oc:9.3f} {bc / oc:6.2f}"
        lines.append(row)
        print(row, flush=True)
        # evaluation cost (and, for the AST, the live-KD teacher cost added to every student step):
        # the optimised model in eval mode without gradients
        model.eval()
        with torch.no_grad():
            model(features)
            runs = [timed(lambda: model(features)) for _ in range(args.repeats)]
        ew, ec = (statistics.median(r[i] for r in runs) / args.batch for i in (0, 1))
        row = f"{name:<12} {'eval/teacher fwd':<22} {'-':>9} {ew:9.3f} {'-':>6} {'-':>9} {ec:9.3f} {'-':>6}"
        lines.append(row)
        print(row, flush=True)
    write_table(lines, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
