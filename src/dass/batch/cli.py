"""``dass tag`` over collections: the options of :mod:`dass.batch` and the code behind them.

``dass tag`` hands a run to :func:`run` when it tags a collection (a folder, ``--list``,
``--datafile``), writes ``--output``, detects ``--events`` or runs on ``--ray``; otherwise its own
per-file code runs. This module imports nothing heavy at import time (``dass --help`` reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..errors import DassError

__all__ = ["add_arguments", "add_event_arguments", "event_params", "run", "wanted"]

EXAMPLES = """\
archives (many files in one resumable job; see docs/archive.md):
  dass tag recordings/ --output tags.jsonl                # every audio file below recordings/
  dass tag recordings/ --glob '*.flac' --output tags.csv --workers 2 --batch-size 16
  dass tag --list files.txt --output tags.parquet         # one path per line
  dass tag --datafile eval.json --output tags.jsonl       # an AST JSON datafile
  dass tag hour.wav --events                              # a readable event list (onset-offset, label)
  dass tag field/ --events --events-format raven --events-dir raven/ --output tags.jsonl
  dass tag recordings/ --output tags.jsonl --ray          # Ray Data: a local cluster, or --ray ADDRESS
Run the same command again after an interruption: the files the output holds are skipped.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The collection, output, event and engine options of ``dass tag``."""
    jobs = parser.add_argument_group("archives: many files in one job (resumable with --output)")
    jobs.add_argument("--glob", metavar="PATTERN",
                      help="in folders, tag the files whose name or relative path matches PATTERN "
                           "(default: the usual audio suffixes)")
    jobs.add_argument("--list", action="append", default=[], metavar="TXT",
                      help="a text file of audio paths, one per line (relative to its folder); repeatable")
    jobs.add_argument("--datafile", action="append", default=[], metavar="JSON",
                      help="an AST JSON datafile ({\"data\": [{\"wav\": ...}]}); repeatable")
    jobs.add_argument("--output", metavar="FILE",
                      help="append one row per file to FILE.jsonl / .csv / .parquet; a rerun skips the files "
                           "already there")
    jobs.add_argument("--retry-errors", action="store_true",
                      help="with --output: tag again the files an earlier run recorded as failed")
    jobs.add_argument("--workers", type=int, default=None, metavar="N",
                      help="decoder processes (default: cores - 1, 1..4; 0 = decode in the model's process); "
                           "with --ray: model actors (default 2)")
    jobs.add_argument("--batch-size", type=int, default=8, metavar="N",
                      help="clips of the same length per model call (default 8)")
    jobs.add_argument("--threads", type=int, default=None, metavar="N",
                      help="CPU threads of the model (default: torch's; with --ray: per actor, default 1)")
    jobs.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                      help="run on Ray Data: on the cluster at ADDRESS (e.g. auto, ray://head:10001), "
                           "or without ADDRESS on a new local cluster")
    events = parser.add_argument_group("sound events (onset, offset, label; DASS models; see dass.events)")
    events.add_argument("--events", action="store_true",
                        help="detect per-class events on the 0.32 s timeline and list them")
    events.add_argument("--events-format", default="csv",
                        choices=("csv", "jsonl", "tsv", "audacity", "raven"),
                        help="with --events-dir: csv, jsonl, tsv (DCASE / sed_eval), audacity (label track) or "
                             "raven (selection table); default csv")
    events.add_argument("--events-dir", metavar="DIR",
                        help="write each file's events to DIR/<name>.events.csv (.labels.txt, .selections.txt, ...)")
    add_event_arguments(events)


def add_event_arguments(events: Any) -> None:
    """The event-detection settings (``dass tag --events`` and ``dass serve``)."""
    for flag, default, meaning in (("--on-threshold", "0.5", "an event starts where the score reaches P"),
                                   ("--off-threshold", "0.3", "... and lasts while it stays >= P")):
        events.add_argument(flag, action="append", default=[], metavar="P|LABEL=P",
                            help=f"{meaning} (default {default}); LABEL=P for one class; repeatable")
    events.add_argument("--median-frames", type=int, default=3, metavar="N",
                        help="median filter over N frames of 0.32 s (odd; default 3; 1 = off)")
    events.add_argument("--min-duration", type=float, default=0.5, metavar="SECONDS",
                        help="drop events shorter than this (default 0.5)")
    events.add_argument("--min-gap", type=float, default=0.5, metavar="SECONDS",
                        help="join events of a class closer than this (default 0.5)")


def wanted(args: argparse.Namespace) -> bool:
    """Whether this ``dass tag`` run is a batch job (see the module docstring)."""
    return bool(args.output or args.events or args.list or args.datafile or args.ray is not None
                or any(os.path.isdir(f) for f in args.files))


def _per_class_option(flag: str, values: list[str], default: float) -> float | dict[str, float]:
    """``["0.4", "Siren=0.2"]`` -> ``{"*": 0.4, "Siren": 0.2}``; no values -> ``default``."""
    if not values:
        return default
    mapping: dict[str, float] = {}
    for value in values:
        label, _, number = value.rpartition("=")
        try:
            mapping[label or "*"] = float(number)
        except ValueError:
            raise DassError(f"{flag} takes P or LABEL=P, got {value!r}") from None
    return mapping["*"] if list(mapping) == ["*"] else mapping


def event_params(args: argparse.Namespace) -> Any:
    """The :class:`dass.events.EventParams` of the command line."""
    from ..events import EventParams

    return EventParams(on_threshold=_per_class_option("--on-threshold", args.on_threshold, 0.5),
                       off_threshold=_per_class_option("--off-threshold", args.off_threshold, 0.3),
                       median_frames=args.median_frames, min_duration_s=args.min_duration,
                       min_gap_s=args.min_gap)


def _check(args: argparse.Namespace) -> None:
    if args.timeline or args.plot:
        raise DassError("--timeline/--plot tag files one by one; use --events for event lists of a collection, "
                        "or run --timeline without --output/--events/folders")
    if args.retry_errors and not args.output:
        raise DassError("--retry-errors needs --output")
    if args.events_dir and not args.events:
        raise DassError("--events-dir needs --events")
    if args.batch_size < 1:
        raise DassError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.workers is not None and args.workers < 0:
        raise DassError(f"--workers must be >= 0, got {args.workers}")
    if args.threads is not None and args.threads < 1:
        raise DassError(f"--threads must be >= 1, got {args.threads}")


def _print_row(row: dict[str, Any], args: argparse.Namespace) -> None:
    from ..commands.tag import format_text
    from ..events import format_events_text

    if row["status"] != "ok":
        print(f"dass tag: error: {row['error']}", file=sys.stderr)
        return
    text = format_text(row, args.threshold)
    if row.get("events") is not None:
        text += f"\n  events ({len(row['events'])}):\n" + format_events_text(row["events"], indent="    ")
    print(text, flush=True)


def run(args: argparse.Namespace, model: Any, names: list[str] | None, device: Any) -> int:
    """The batch job of a ``dass tag`` command line; exit status 1 if a file failed."""
    from .collect import collect_paths
    from .job import tag

    _check(args)
    paths = collect_paths(args.files, args.glob, args.list, args.datafile)
    if not paths:
        raise DassError("no files to tag (give files, folders, --list or --datafile)")
    to_stdout = args.output is None
    summary = tag(paths, model, args.output, names=names, engine="ray" if args.ray is not None else "local",
                  workers=args.workers, batch_size=args.batch_size, threads=args.threads,
                  min_frames=args.min_frames, max_frames=args.max_frames, top_k=args.top_k, threshold=args.threshold,
                  events=event_params(args) if args.events else None, events_dir=args.events_dir,
                  events_format=args.events_format, ray_address=args.ray or None, retry_errors=args.retry_errors,
                  progress=len(paths) > 1, device=device,
                  on_row=(lambda row: _print_row(row, args)) if to_stdout and not args.json else None)
    if to_stdout and args.json:
        rows = [{k: v for k, v in row.items() if k != "scores"} for row in summary.rows]
        print(json.dumps({"model": str(args.model), "results": rows}, indent=2, ensure_ascii=False))
    if not to_stdout:
        rate = f"{summary.files_per_s:.2f} files/s, {summary.audio_hours_per_hour:.1f} audio-h per hour"
        print(f"dass tag: {summary.tagged} tagged, {summary.failed} failed, {summary.skipped} already in "
              f"{args.output} ({rate})", file=sys.stderr)
    return 1 if summary.failed else 0
