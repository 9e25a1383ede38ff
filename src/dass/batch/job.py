"""One batch job: :func:`tag` (the engines, the output, the event files, the progress bar) and its :class:`Summary`."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..events import EventParams
from .pipeline import Tagger, TagOptions, default_workers, run_local
from .store import ResultStore

__all__ = ["Summary", "tag"]


@dataclass
class Summary:
    """What one call of :func:`tag` did. ``rows``: this call's rows when there is no output file."""

    files: int
    skipped: int
    tagged: int = 0
    failed: int = 0
    audio_s: float = 0.0
    wall_s: float = 0.0
    output: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def files_per_s(self) -> float:
        return (self.tagged + self.failed) / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def audio_hours_per_hour(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(total=total, desc="tagging", unit="file", file=sys.stderr, disable=not enabled or total == 0,
                mininterval=0.5 if tty else 30.0, dynamic_ncols=tty, smoothing=0.1)


def tag(paths: Sequence[str | os.PathLike], model: Any, output: str | os.PathLike | None = None, *,
        names: Sequence[str | None] | None = None, engine: str = "local", workers: int | None = None,
        batch_size: int = 8, threads: int | None = None, min_frames: int = 1024, max_frames: int | None = None,
        top_k: int = 5, threshold: float | None = None, events: EventParams | bool | None = None,
        events_dir: str | os.PathLike | None = None, events_format: str = "csv",
        ray_address: str | None = None, retry_errors: bool = False, progress: bool = False,
        device: Any = "cpu", precision: str = "float32", on_row: Any = None) -> Summary:
    """Tag every file of ``paths`` with ``model``; one result row per file.

    Args:
        paths: audio files (see :func:`collect_paths` for folders and lists), tagged in this order.
        model: a dass model (DASS runs on the fast engine; others through their forward).
        output: ``.jsonl`` / ``.csv`` / ``.parquet`` result file, appended file by file and resumed:
            files it already holds are skipped (see :mod:`dass.batch.store`). None: rows are returned.
        names: class names (default: the model's config labels).
        engine: ``"local"`` (decoding in ``workers`` processes, the model in this one) or ``"ray"``
            (Ray Data: ``workers`` actors, one model each, ``threads`` CPUs each; ``ray_address``).
        workers: decoder processes (local; 0 = none) or actors (ray). Default: cores - 1 (1..4) / 2.
        batch_size: clips of one length per model call. threads: torch threads for the model.
        min_frames, max_frames, top_k, threshold: as ``dass tag``.
        events: detect sound events (True: :data:`dass.events.DEFAULTS`; or an :class:`EventParams`).
        events_dir / events_format: also write each file's events there (see :mod:`dass.events`).
        retry_errors: tag again the files that an earlier run recorded as failed.
        on_row: called with each new row (e.g. to print it).

    Returns a :class:`Summary`.
    """
    import torch

    if events is True:
        events = EventParams()
    options = TagOptions(min_frames=min_frames, max_frames=max_frames, top_k=top_k, threshold=threshold,
                         events=events or None, batch_size=batch_size, precision=precision)
    if names is None:
        names = list(model.config.labels) if getattr(model.config, "labels", None) else None
    tagger = Tagger(model, names, options, device)  # checks the options
    if engine not in ("local", "ray"):
        raise ConfigError(f"engine must be 'local' or 'ray', got {engine!r}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    if events_dir is not None and options.events is None:
        raise ConfigError("events_dir needs events")
    from ..events import event_file_suffix

    suffix = event_file_suffix(events_format)
    paths = [os.fspath(p) for p in paths]
    store = ResultStore(output, tagger.columns, retry_errors=retry_errors) if output is not None else None
    todo = [p for p in paths if store is None or p not in store.done]
    summary = Summary(files=len(paths), skipped=len(paths) - len(todo),
                      output=None if output is None else os.fspath(output))
    stems = _event_stems(paths) if events_dir is not None else {}
    previous_threads = torch.get_num_threads()
    start = time.perf_counter()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        if engine == "ray":
            from .ray_engine import run_ray

            rows = run_ray(todo, model, tagger.names, options, ray_address, actors=workers or 2,
                           threads=threads or 1)
        else:
            rows = run_local(todo, tagger, default_workers() if workers is None else workers)
        with _progress_bar(len(todo), progress) as bar:
            for row in rows:
                if events_dir is not None and row["status"] == "ok":
                    from ..events import write_events

                    target = os.path.join(events_dir, stems[row["file"]] + suffix)
                    write_events(target, [{**e, "file": row["file"]} for e in row["events"]], events_format)
                if store is not None:
                    store.append(row)
                else:
                    summary.rows.append(row)
                if row["status"] == "ok":
                    summary.tagged += 1
                    summary.audio_s += row["duration_s"]
                else:
                    summary.failed += 1
                if on_row is not None:
                    on_row(row)
                bar.update(1)
                elapsed = time.perf_counter() - start
                bar.set_postfix_str(f"{summary.audio_s / 3600:.2f} audio-h, "
                                    f"{summary.audio_s / max(elapsed, 1e-9):.0f}x real time, {summary.failed} failed",
                                    refresh=False)
        if store is not None:
            store.close()
    finally:
        torch.set_num_threads(previous_threads)
        summary.wall_s = time.perf_counter() - start
    return summary


def _event_stems(paths: Sequence[str]) -> dict[str, str]:
    """A distinct event-file name per input: its path below the inputs' common folder, minus the suffix
    (the same for every run of a job, whatever is left to do)."""
    if not paths:
        return {}
    absolute = [os.path.abspath(p) for p in paths]
    root = os.path.commonpath([os.path.dirname(p) for p in absolute])
    relative = [os.path.relpath(full, root) for full in absolute]
    counts: dict[str, int] = {}
    for name in relative:
        counts[os.path.splitext(name)[0]] = counts.get(os.path.splitext(name)[0], 0) + 1
    # a.wav and a.flac side by side keep their suffixes: a.wav.events.csv, a.flac.events.csv
    return {path: (os.path.splitext(name)[0] if counts[os.path.splitext(name)[0]] == 1 else name)
            for path, name in zip(paths, relative)}
