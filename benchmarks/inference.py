"""DASS-small inference speed vs Hugging Face's AST-base, and vs our plain model.forward.

Same process, same number of threads, batch 1, random weights, random normalised features of
10 s, 60 s and 300 s (998, 5998 and 29998 frames). For every length and model:

  s/clip   median wall-clock seconds of --repeats runs after one warm-up run; the models are timed
           in rounds (one run of each per round), so that every ratio compares the same minutes
           of this noisy machine
  cpu s    median process CPU seconds (all threads) of the same runs
  peak MB  highest resident set size of the process sampled every 2 ms during the model's warm-up
           run, and (+MB) its increase over the RSS before that run

Models: "DASS fast" = dass.inference.predict (the default path: channels-last engine, exact tiling
above 16384 frames, so at 300 s); "DASS bf16" = the same with precision="bfloat16" (the large GEMMs in bfloat16,
AMX on this CPU; not exact: logits within ~1e-2 relative); "DASS plain" = DASS.forward under inference_mode (the readable reference);
"AST-base" = transformers' ASTForAudioClassification(ASTConfig(max_length=T)) (12 layers, width 768,
16x16 patches with stride 10: 12 x 99 = 1188 tokens at 10 s, quadratic attention), skipped above
--ast-max-seconds. Ratios of AST and of DASS plain to each DASS row (goals: DASS fast >= 6x faster
than AST at 10 s, >= 15x at 60 s).

    python3 benchmarks/inference.py                       # writes results/inference.txt
    python3 benchmarks/inference.py --seconds 10 --repeats 5 --output -
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4 python3 benchmarks/inference.py --output results/inference_tcmalloc.txt
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import threading
from typing import Callable

import torch
from _common import interleaved_times, write_table

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


class PeakRSS:
    """Sample the process RSS every ``interval`` seconds in a thread; ``peak`` is the highest seen."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def peak_rss(fn: Callable[[], object]) -> dict:
    """Run ``fn`` once (its warm-up run) with the RSS sampled; peak and increase over the RSS before."""
    before = rss_bytes()
    with PeakRSS() as peak:
        fn()
    return {"peak": peak.peak, "delta": peak.peak - before}


def build_ast(frames: int):
    from transformers import ASTConfig, ASTForAudioClassification

    torch.manual_seed(0)
    config = ASTConfig(max_length=frames, num_mel_bins=128, num_labels=527)
    return ASTForAudioClassification(config).eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[10, 60, 300])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ast-max-seconds", type=float, default=60.0,
                        help="skip AST above this length (300 s = 36 000 tokens: ~50 TFLOP per clip)")
    parser.add_argument("--plain-max-seconds", type=float, default=300.0, help="skip DASS.forward above this")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 row")
    parser.add_argument("--slow-repeats", type=int, default=1,
                        help="repeats for runs expected to take more than 10 s (AST at 60 s, plain at 300 s)")
    parser.add_argument("--output", default="results/inference.txt", help="file for the table, or - for stdout only")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    from dass.features import num_frames
    from dass.inference import predict
    from dass.models.dass import dass_small

    torch.manual_seed(0)
    dass = dass_small().eval()
    command = "python3 " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    lines = [command,
             f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
             f"threads {args.threads}, LD_PRELOAD={os.environ.get('LD_PRELOAD', '') or '-'}, "
             f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '-')}, load average at start "
             f"{os.getloadavg()[0]:.2f}",
             "# batch 1, random weights, random features; median of the timed runs after one warm-up run; "
             "models timed in interleaved rounds",
             f"{'length':>8} {'model':<12} {'s/clip':>9} {'cpu s':>9} {'peak MB':>9} {'(+MB)':>8} "
             f"{'AST/this':>9} {'plain/this':>10}"]
    print("\n".join(lines), flush=True)
    for seconds in args.seconds:
        frames = num_frames(int(seconds * 16000))
        features = torch.randn(1, frames, 128, generator=torch.Generator().manual_seed(1))
        fns: dict[str, Callable[[], object]] = {"DASS fast": lambda: predict(dass, features)}
        repeats = {"DASS fast": args.repeats}
        if not args.no_bf16:
            fns["DASS bf16"] = lambda: predict(dass, features, precision="bfloat16")
            repeats["DASS bf16"] = args.repeats
        if seconds <= args.plain_max_seconds:
            fns["DASS plain"] = lambda: dass(features)
            repeats["DASS plain"] = args.slow_repeats if seconds > 60 else args.repeats
        with torch.inference_mode():
            # memory first (each model's warm-up run), DASS before the AST weights exist
            memory = {name: peak_rss(fn) for name, fn in fns.items()}
            ast = None
            if seconds <= args.ast_max_seconds:
                ast = build_ast(frames)
                fns["AST-base"] = lambda: ast(input_values=features).logits
                repeats["AST-base"] = args.slow_repeats if seconds > 30 else args.repeats
                memory["AST-base"] = peak_rss(fns["AST-base"])
            results = interleaved_times(fns, repeats)
        for name in results:
            results[name].update(memory[name])
        del ast, fns
        for name, r in results.items():
            mine = r["wall"]
            ratio_ast = f"{results['AST-base']['wall'] / mine:8.1f}x" if name.startswith("DASS") and "AST-base" in results else ""
            ratio_plain = f"{results['DASS plain']['wall'] / mine:9.1f}x" if name.startswith("DASS") and "DASS plain" in results else ""
            line = (f"{seconds:7.0f}s {name:<12} {r['wall']:9.3f} {r['cpu']:9.3f} {r['peak'] / 2**20:9.0f} "
                    f"{r['delta'] / 2**20:8.0f} {ratio_ast:>9} {ratio_plain:>10}")
            print(line, flush=True)
            lines.append(line)
    goals = "# goals: DASS fast >= 6x faster than AST-base at 10 s, >= 15x at 60 s"
    print(goals)
    lines.append(goals)
    lines.append(f"# load average at end {os.getloadavg()[0]:.2f}")
    write_table(lines, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
