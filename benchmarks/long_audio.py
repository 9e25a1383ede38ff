"""DASS-small on hours of audio in one exact pass: wall time, peak memory, cost per audio-hour.

For each length (default 10 min, 1 h and 2.5 h = 900 000 frames) a fresh child process (so that
peak memories do not mix) with random DASS-small weights:

1. writes a synthetic 16 kHz 16-bit WAV of that length (noise with tones and bursts; not timed),
2. computes its normalised fbank with dass.inference.file_features (block by block: only the
   features and one block of audio in memory),
3. runs dass.inference.predict on all of it at once (exact tiling, --tile-frames per tile),

and reports the feature and model seconds, total wall time, seconds per audio-hour, the child's
peak RSS (ru_maxrss), its RSS after loading the model and a warm-up run over three tiles (base: Python,
torch, the model, compiled kernels, the tile workspace), the engine's tile workspace (ws: a constant, set by the tile size), the
growth of the peak per added audio-hour from the previous row (dGB/dh: the linear part, mostly
the stage-1 and stage-2 maps and the features) and whether the logits are finite. ``--allocators system tcmalloc`` runs each
length with glibc malloc and with tcmalloc (LD_PRELOAD) to compare.
Goals: 2.5 h in <= 8 GB peak RSS and <= 15 min; per-hour time and memory within 10 % across lengths.

    python3 benchmarks/long_audio.py                          # writes results/long_audio.txt
    python3 benchmarks/long_audio.py --minutes 10 --allocators system tcmalloc --output -
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time

from _common import write_table

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4"
SAMPLE_RATE = 16000


def write_wav(path: str, seconds: float, seed: int = 0) -> None:
    """A synthetic recording: pink-ish noise at -30 dBFS, a 440 Hz tone every 60 s, a loud burst every 7 min."""
    import numpy as np
    import soundfile

    rng = np.random.default_rng(seed)
    total = int(seconds * SAMPLE_RATE)
    block = 60 * SAMPLE_RATE
    with soundfile.SoundFile(path, "w", SAMPLE_RATE, 1, subtype="PCM_16") as handle:
        for start in range(0, total, block):
            n = min(block, total - start)
            t = (start + np.arange(n)) / SAMPLE_RATE
            noise = np.cumsum(rng.standard_normal(n)) * 0.001
            noise -= noise.mean()
            signal = 0.03 * rng.standard_normal(n) + noise
            signal += np.where((t % 60) < 5, 0.2 * np.sin(2 * np.pi * 440 * t), 0.0)
            signal += np.where((t % 420) < 2, 0.5 * rng.standard_normal(n), 0.0)
            handle.write(np.clip(signal, -1, 1).astype(np.float32))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    from dass.inference import engine_for, file_features, predict
    from dass.models.dass import dass_small

    torch.manual_seed(0)
    model = dass_small().eval()
    # warm-up on two tiles and a bit: loads the compiled kernels, builds the engine and grows its tile
    # workspace to full size, one-time costs that would otherwise land on the shortest row only
    predict(model, torch.randn(2 * args.tile_frames + 1, 128), tile_frames=args.tile_frames)
    base = _rss_bytes()
    seconds = args.minutes[0] * 60
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "long.wav")
        write_wav(path, seconds)
        start = time.perf_counter()
        features = file_features(path, progress=args.progress)
        middle = time.perf_counter()
        logits = predict(model, features, tile_frames=args.tile_frames, progress=args.progress)
        end = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"frames": int(features.shape[0]), "features_s": middle - start, "model_s": end - middle,
                      "total_s": end - start, "peak_bytes": peak, "base_bytes": base,
                      "workspace_bytes": engine_for(model).workspace.nbytes(), "finite": bool(torch.isfinite(logits).all())}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 60, 150])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tile-frames", type=int, default=None, help="frames per tile (default: predict's)")
    parser.add_argument("--allocators", nargs="+", default=["system"], choices=["system", "tcmalloc"])
    parser.add_argument("--progress", action="store_true", help="show the progress bars (children's stderr)")
    parser.add_argument("--output", default="results/long_audio.txt", help="file for the table, or - for stdout only")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    if args.tile_frames is None:
        from dass.inference import DEFAULT_TILE_FRAMES

        args.tile_frames = DEFAULT_TILE_FRAMES

    command = "python3 " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    lines = [command,
             f"# threads {args.threads}, tile {args.tile_frames} frames, {os.cpu_count()} CPUs, "
             f"load average at start {os.getloadavg()[0]:.2f}; each row a fresh process (random DASS-small weights)",
             f"{'audio':>8} {'frames':>8} {'allocator':>9} {'features s':>10} {'model s':>9} {'total s':>9} "
             f"{'s/audio-h':>9} {'peak GB':>8} {'base GB':>8} {'ws GB':>6} {'dGB/dh':>7} {'finite':>6}"]
    print("\n".join(lines), flush=True)
    previous: dict[str, tuple[float, float]] = {}  # allocator -> (hours, peak GB) of the last row
    for minutes in args.minutes:
        for allocator in args.allocators:
            env = dict(os.environ)
            if allocator == "tcmalloc":
                if not os.path.exists(TCMALLOC):
                    print(f"# {TCMALLOC} missing (apt-get install libgoogle-perftools4): skipped", flush=True)
                    continue
                env["LD_PRELOAD"] = TCMALLOC
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "--minutes", str(minutes),
                   "--threads", str(args.threads), "--tile-frames", str(args.tile_frames)]
            if args.progress:
                cmd.append("--progress")
            done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
            if done.returncode != 0:
                line = f"{minutes:7.0f}m {'':>8} {allocator:>9} failed with exit code {done.returncode}"
            else:
                r = json.loads(done.stdout.strip().splitlines()[-1])
                hours, peak = minutes / 60, r["peak_bytes"] / 1e9
                slope = ""
                if allocator in previous:
                    slope = f"{(peak - previous[allocator][1]) / (hours - previous[allocator][0]):7.2f}"
                previous[allocator] = (hours, peak)
                line = (f"{minutes:7.0f}m {r['frames']:8d} {allocator:>9} {r['features_s']:10.1f} {r['model_s']:9.1f} "
                        f"{r['total_s']:9.1f} {r['total_s'] / hours:9.0f} {peak:8.2f} "
                        f"{r['base_bytes'] / 1e9:8.2f} {r['workspace_bytes'] / 1e9:6.2f} {slope:>7} "
                        f"{str(r['finite']):>6}")
            print(line, flush=True)
            lines.append(line)
    lines.append("# goals: 2.5 h <= 8 GB peak and <= 15 min (900 s) total; s/audio-h within 10 % across lengths")
    lines.append(f"# load average at end {os.getloadavg()[0]:.2f}")
    print(lines[-2])
    write_table(lines, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
