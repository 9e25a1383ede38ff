"""Tagging an archive in one job (dass.batch) vs a Python loop over predict vs transformers' AST pipeline.

Same process, same files, same run. The corpus (generated once into --data, 16 kHz mono WAV of noise
and tones): --clips files of 10 s and --long files of --long-seconds (default 1 000 x 10 s and
20 x 10 min). Methods, each timed from the file names to the probabilities (decoding included):

  job       dass.batch.tag(paths, model, output=<jsonl>, workers, batch_size): decoding and features
            in --workers processes overlapped with the model, 10 s clips in batches, rows appended
            and fsync-ed per file (the worker start-up is part of its time)
  loop      for each file: dass.inference.file_features + zero padding to 1024 frames + predict
            (what a user writes with the library's own functions)
  pipeline  transformers.pipeline("audio-classification") of a random AST-base folder built here
            (ASTForAudioClassification(ASTConfig()) + ASTFeatureExtractor, save_pretrained), fed the
            waveform decoded by soundfile (its own file decoding needs an ffmpeg binary); 10 s clips only,
            on the first --ast-clips files

The model is a randomly initialised --model (default dass_small, 527 classes): speed does not depend
on the weights. Reported per method and set: files, wall seconds, files/s, audio-hours per wall-hour
and the speed-up over the loop (goals: job >= 2x the loop on 10 s clips, >= 8x the AST pipeline).
The CPU model, the thread counts and the load average before and after are printed: numbers from a
loaded machine are not comparable.

    python3 benchmarks/archive.py                  # the full run, writes results/archive.txt
    python3 benchmarks/archive.py --quick          # 40 x 10 s, 2 x 60 s, AST on 8 clips; prints only
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from _common import write_table


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_corpus(folder: Path, count: int, seconds: float, prefix: str) -> list[str]:
    """``count`` WAV files of ``seconds`` (noise + a tone whose pitch depends on the index); kept if present."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{prefix}{i:05d}.wav"
        if not path.exists():
            rng = np.random.default_rng(i)
            t = np.arange(int(16000 * seconds)) / 16000
            wave = 0.05 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * (150 + 7 * (i % 300)) * t)
            tmp = path.with_suffix(".tmp.wav")
            sf.write(tmp, wave.astype(np.float32), 16000)
            os.replace(tmp, path)
        paths.append(str(path))
    return paths


def time_job(paths: list[str], model, args, out_dir: Path) -> float:
    from dass.batch import tag

    output = out_dir / f"job-{len(paths)}-{time.monotonic_ns()}.jsonl"
    start = time.perf_counter()
    summary = tag(paths, model, output, workers=args.workers, batch_size=args.batch_size, threads=args.threads)
    wall = time.perf_counter() - start
    assert summary.tagged == len(paths), summary
    return wall


def time_loop(paths: list[str], model) -> float:
    from dass.features import AUDIOSET_MEAN, AUDIOSET_STD, normalize
    from dass.inference import file_features, predict

    pad_row = normalize(torch.zeros(1, 128), AUDIOSET_MEAN, AUDIOSET_STD)
    start = time.perf_counter()
    for path in paths:
        features = file_features(path)
        if features.shape[0] < 1024:
            features = torch.cat([features, pad_row.expand(1024 - features.shape[0], 128)])
        torch.sigmoid(predict(model, features))
    return time.perf_counter() - start


def time_ast_pipeline(paths: list[str], folder: Path) -> float:
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, pipeline

    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        ASTForAudioClassification(ASTConfig()).save_pretrained(folder)
        ASTFeatureExtractor().save_pretrained(folder)
    classifier = pipeline("audio-classification", model=str(folder), device="cpu")
    first, _ = sf.read(paths[0], dtype="float32")
    classifier({"raw": first, "sampling_rate": 16000}, top_k=5)  # warm-up (not timed)
    start = time.perf_counter()
    for path in paths:
        wave, rate = sf.read(path, dtype="float32")
        classifier({"raw": wave, "sampling_rate": rate}, top_k=5)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=1000, help="10 s files (default 1000)")
    parser.add_argument("--long", type=int, default=20, help="long files (default 20)")
    parser.add_argument("--long-seconds", type=float, default=600.0, help="length of the long files (default 600)")
    parser.add_argument("--ast-clips", type=int, default=100, help="10 s files for the AST pipeline (default 100)")
    parser.add_argument("--model", default="dass_small", help="dass named config (random weights)")
    parser.add_argument("--workers", type=int, default=None, help="decoder processes of the job (default: cores - 1)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--data", default=None, help="corpus folder (default: a temporary one, deleted)")
    parser.add_argument("--output", default="results/archive.txt", help="table file ('-': only print)")
    parser.add_argument("--quick", action="store_true", help="40 x 10 s, 2 x 60 s, AST on 8 clips; prints only")
    parser.add_argument("--skip-ast", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.clips, args.long, args.long_seconds, args.ast_clips, args.output = 40, 2, 60.0, 8, "-"
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    import dass

    temporary = tempfile.TemporaryDirectory(prefix="dass-archive-bench-")
    data = Path(args.data) if args.data else Path(temporary.name)
    clips = make_corpus(data / "clips", args.clips, 10.0, "clip")
    long_files = make_corpus(data / f"long{int(args.long_seconds)}", args.long, args.long_seconds, "long")
    torch.manual_seed(0)
    model = dass.create_model(args.model, num_classes=527).eval()
    load_before = os.getloadavg()

    results = []  # (set, method, files, wall)
    results.append(("10 s", "job", len(clips), time_job(clips, model, args, data)))
    results.append(("10 s", "loop", len(clips), time_loop(clips, model)))
    if not args.skip_ast:
        ast_paths = clips[: args.ast_clips]
        results.append(("10 s", "AST pipeline", len(ast_paths), time_ast_pipeline(ast_paths, data / "ast_base")))
    long_label = f"{args.long_seconds / 60:g} min"
    if long_files:
        results.append((long_label, "job", len(long_files), time_job(long_files, model, args, data)))
        results.append((long_label, "loop", len(long_files), time_loop(long_files, model)))
    load_after = os.getloadavg()

    seconds = {"10 s": 10.0, long_label: args.long_seconds}
    lines = [
        "$ python3 benchmarks/archive.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        (f"CPU: {cpu_model()}; {os.cpu_count()} logical cores; torch {torch.__version__}, "
         f"{torch.get_num_threads()} threads; job: workers={args.workers if args.workers is not None else 'default'}"
         f" batch_size={args.batch_size}; model {args.model} (random weights, 527 classes)"),
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}",
        "",
        f"{'set':<8} {'method':<14} {'files':>6} {'wall s':>9} {'files/s':>9} {'audio-h/h':>10} {'vs loop':>8}",
    ]
    rate = {(s, m): n / w for s, m, n, w in results}
    for name, method, count, wall in results:
        loop = rate.get((name, "loop"))
        speedup = f"{rate[(name, method)] / loop:7.2f}x" if loop else ""
        lines.append(f"{name:<8} {method:<14} {count:>6} {wall:>9.2f} {count / wall:>9.2f} "
                     f"{count * seconds[name] / wall:>10.1f} {speedup:>8}")
    job, ast = rate.get(("10 s", "job")), rate.get(("10 s", "AST pipeline"))
    if job and ast:
        lines.append(f"\njob / AST pipeline on 10 s clips: {job / ast:.2f}x (goal >= 8x); "
                     f"job / loop: {job / rate[('10 s', 'loop')]:.2f}x (goal >= 2x)")
    print("\n".join(lines))
    write_table(lines, args.output)
    temporary.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
