"""``dass norm-stats``: a dataset's fbank mean and standard deviation (the normalisation constants)."""

from __future__ import annotations

import argparse

NAME = "norm-stats"
HELP = "compute a dataset's log-mel fbank mean / std (data.mean, data.std of the recipes)"
DESCRIPTION = """\
Compute the mean and standard deviation of the log-mel fbank over every frame and mel bin of a
dataset's clips (pooled, float64; clips cut to --max-length frames, no padding). The models take
(fbank - mean) / (2 std), so recipes set data.mean / data.std to these values.

SOURCE is an AST JSON datafile, a text list of audio paths or a directory of audio files.

  dass norm-stats data/keywords/train.json
  dass norm-stats data/keywords/train.json --max-length 100 --out data/keywords/norm_stats.json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="DATAFILE", help="AST JSON datafile, text list of audio files, or directory")
    parser.add_argument(
        "--max-length",
        type=int,
        default=None,
        metavar="FRAMES",
        help="cut each clip to this many frames (as training does; default: whole clips)",
    )
    parser.add_argument("--max-clips", type=int, default=None, metavar="N", help="use the first N clips only")
    parser.add_argument("--out", default=None, metavar="JSON", help="also write the statistics to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..data.norm_stats import fbank_statistics
    from ..train.trainer import _atomic_bytes

    stats = fbank_statistics(args.source, max_length=args.max_length, max_clips=args.max_clips, progress=not args.quiet)
    print(f"mean {stats['mean']:.7g}  std {stats['std']:.7g}  ({stats['clips']} clips, {stats['frames']} frames)")
    print(f"recipe overrides: data.mean={stats['mean']:.7g} data.std={stats['std']:.7g}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        _atomic_bytes(
            out,
            (
                json.dumps({**stats, "source": str(args.source), "max_length": args.max_length}, indent=2) + "\n"
            ).encode(),
        )
    return 0
