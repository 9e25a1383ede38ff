"""Sound event detection: per-class onset / offset events from frame-level class scores, and their export.

The frame scores are a timeline (:func:`dass.inference.predict_timeline` with ``segment_s=0.32``: one
row per 0.32 s step of DASS's final map). For every class, independently:

1. **median filter** over ``median_frames`` frames (odd; the edges repeat the first / last score);
   1 switches it off;
2. **hysteresis threshold**: an event is a maximal run of frames whose (filtered) score is
   ``>= off_threshold`` that contains at least one frame ``>= on_threshold`` (so an event starts
   above ``on`` and lasts until the score falls below ``off``, both ways in time);
3. **minimum gap**: two events of the class separated by less than ``min_gap_s`` seconds become one;
4. **minimum duration**: events shorter than ``min_duration_s`` seconds are dropped.

An event spans its frames: from the start of its first frame to the end of its last one (the
timeline's ``times_s``). Every parameter is one value for all classes or one per class (a sequence by
class index, or a mapping from label or index to value, where the key ``"*"`` sets the value of the
classes not named; without it they keep the default).

Defaults (:data:`DEFAULTS`): ``on_threshold=0.5``, ``off_threshold=0.3``, ``median_frames=3`` (~1 s
at 0.32 s per frame), ``min_duration_s=0.5``, ``min_gap_s=0.5``.

:func:`detect_events` is vectorised with numpy over the frames; :func:`detect_events_reference` is the
same definition written as a plain loop (the tests compare them).

Export formats (:func:`write_events`; each file written atomically):

- ``csv`` / ``jsonl``: ``file, onset_s, offset_s, label, class_index, peak`` (peak: highest filtered
  score inside the event);
- ``tsv``: the DCASE / sed_eval event list, tab-separated with a header ``filename onset offset
  event_label`` (``filename`` only when the events carry a file);
- ``audacity``: an Audacity label track, ``start<TAB>end<TAB>label`` per line, no header
  (File > Import > Labels);
- ``raven``: a Raven selection table, ``Selection  View  Channel  Begin Time (s)  End Time (s)
  Low Freq (Hz)  High Freq (Hz)  Annotation  Score`` (tab-separated; view ``Spectrogram 1``, channel 1,
  the band 0 Hz to the model's Nyquist frequency, 8000 Hz).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError

__all__ = [
    "DEFAULTS",
    "EVENT_FORMATS",
    "Event",
    "EventParams",
    "detect_events",
    "detect_events_reference",
    "event_file_suffix",
    "format_events_text",
    "median_filter",
    "write_events",
]

PerClass = float | int | Sequence[float] | Mapping[Any, float]


@dataclass(frozen=True)
class EventParams:
    """Event-detection settings; each may be a single value or one per class (see the module docstring)."""

    on_threshold: PerClass = 0.5
    off_threshold: PerClass = 0.3
    median_frames: PerClass = 3
    min_duration_s: PerClass = 0.5
    min_gap_s: PerClass = 0.5


DEFAULTS = EventParams()


@dataclass(frozen=True)
class Event:
    """One detected event: ``[onset_s, offset_s)`` of class ``class_index`` (``label``), ``peak`` score."""

    onset_s: float
    offset_s: float
    label: str
    class_index: int
    peak: float
    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------- parameters


def _per_class(name: str, value: PerClass, default: float, labels: Sequence[str]) -> np.ndarray:
    """Expand one parameter to ``(classes,)`` float64 values."""
    classes = len(labels)
    if isinstance(value, Mapping):
        out = np.full(classes, float(value.get("*", default)))
        by_label = {label: i for i, label in enumerate(labels)}
        for key, v in value.items():
            if key == "*":
                continue
            index = by_label.get(key, key if isinstance(key, (int, np.integer)) else None)
            if index is None or not 0 <= int(index) < classes:
                raise ConfigError(f"{name}: unknown class {key!r} (labels: {', '.join(labels[:8])}...)")
            out[int(index)] = float(v)
        return out
    if isinstance(value, (str, bytes)):
        raise ConfigError(f"{name} must be a number, a sequence or a mapping, got {value!r}")
    if isinstance(value, (Sequence, np.ndarray)):
        out = np.asarray(value, dtype=np.float64)
        if out.shape != (classes,):
            raise ConfigError(f"{name}: {out.size} values for {classes} classes")
        return out
    return np.full(classes, float(value))


def _resolve(params: EventParams, labels: Sequence[str]) -> dict[str, np.ndarray]:
    values = {name: _per_class(name, getattr(params, name), getattr(DEFAULTS, name), labels)
              for name in ("on_threshold", "off_threshold", "median_frames", "min_duration_s", "min_gap_s")}
    on, off = values["on_threshold"], values["off_threshold"]
    if not (np.all((0 <= on) & (on <= 1)) and np.all((0 <= off) & (off <= 1))):
        raise ConfigError("event thresholds must be probabilities in [0, 1]")
    if np.any(off > on):
        raise ConfigError("off_threshold must be <= on_threshold (hysteresis)")
    median = values["median_frames"]
    if np.any(median < 1) or np.any(median % 2 != 1):
        raise ConfigError(f"median_frames must be odd and >= 1, got {sorted(set(median.tolist()))}")
    if np.any(values["min_duration_s"] < 0) or np.any(values["min_gap_s"] < 0):
        raise ConfigError("min_duration_s and min_gap_s must be >= 0 seconds")
    return values


def _check_inputs(times_s: Any, scores: Any, labels: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    times = np.asarray(times_s, dtype=np.float64)
    probs = np.asarray(scores, dtype=np.float64)
    if probs.ndim != 2 or times.shape != (probs.shape[0], 2):
        raise ConfigError(f"expected times_s (frames, 2) and scores (frames, classes), got {times.shape} and "
                          f"{probs.shape}")
    if not np.isfinite(probs).all():
        raise ConfigError("frame scores contain NaN or infinite values")
    names = list(labels) if labels is not None else [f"class_{i}" for i in range(probs.shape[1])]
    if len(names) != probs.shape[1]:
        raise ConfigError(f"{len(names)} label names for {probs.shape[1]} classes")
    return times, probs, names


# ------------------------------------------------------------------------------- reference (loops)


def detect_events_reference(times_s: Any, scores: Any, labels: Sequence[str] | None = None,
                            params: EventParams = DEFAULTS, file: str | None = None) -> list[Event]:
    """The definition of :func:`detect_events` as plain Python loops (slow; for tests and reading)."""
    times, probs, names = _check_inputs(times_s, scores, labels)
    p = _resolve(params, names)
    frames = probs.shape[0]
    events: list[Event] = []
    for c in range(probs.shape[1]):
        half = int(p["median_frames"][c]) // 2
        filtered = []
        for t in range(frames):
            window = [probs[min(max(t + k, 0), frames - 1), c] for k in range(-half, half + 1)]
            filtered.append(sorted(window)[half])
        runs = []  # [first, last] frames of each run >= off that reaches on
        t = 0
        while t < frames:
            if filtered[t] >= p["off_threshold"][c]:
                first = t
                while t + 1 < frames and filtered[t + 1] >= p["off_threshold"][c]:
                    t += 1
                if max(filtered[first:t + 1]) >= p["on_threshold"][c]:
                    runs.append([first, t])
            t += 1
        merged: list[list[int]] = []
        for run in runs:
            if merged and times[run[0], 0] - times[merged[-1][1], 1] < p["min_gap_s"][c]:
                merged[-1][1] = run[1]
            else:
                merged.append(run)
        for first, last in merged:
            onset, offset = float(times[first, 0]), float(times[last, 1])
            if offset - onset >= p["min_duration_s"][c]:
                events.append(Event(onset, offset, names[c], c, float(max(filtered[first:last + 1])), file))
    return sorted(events, key=lambda e: (e.onset_s, e.class_index))


# ---------------------------------------------------------------------------------- fast (numpy)


def median_filter(scores: np.ndarray, window: int) -> np.ndarray:
    """Running median over axis 0 of ``scores (frames, classes)``, odd ``window``, edges repeated."""
    if window <= 1:
        return scores
    half = window // 2
    padded = np.concatenate([np.repeat(scores[:1], half, axis=0), scores, np.repeat(scores[-1:], half, axis=0)])
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, window, axis=0), axis=-1)


def detect_events(times_s: Any, scores: Any, labels: Sequence[str] | None = None,
                  params: EventParams = DEFAULTS, file: str | None = None) -> list[Event]:
    """Events of every class from frame scores.

    Args:
        times_s: ``(frames, 2)`` start / end of each frame in seconds (increasing).
        scores: ``(frames, classes)`` probabilities in [0, 1].
        labels: class names (default ``class_<i>``). params: see :class:`EventParams`.
        file: stored in each event (for tables of many files).

    Returns events sorted by onset, then class index.
    """
    times, probs, names = _check_inputs(times_s, scores, labels)
    p = _resolve(params, names)
    events: list[Event] = []
    if probs.shape[0] == 0:
        return events
    filtered = np.empty_like(probs)
    for window in np.unique(p["median_frames"]).astype(int):
        columns = p["median_frames"] == window
        filtered[:, columns] = median_filter(probs[:, columns], int(window))
    above = filtered >= p["off_threshold"]  # (frames, classes)
    edges = np.diff(np.pad(above, ((1, 1), (0, 0))).astype(np.int8), axis=0)
    for c in np.flatnonzero(above.any(axis=0)):
        starts = np.flatnonzero(edges[:, c] == 1)
        lasts = np.flatnonzero(edges[:, c] == -1) - 1
        # max over each run [start, last]: reduceat over the bounds start, last + 1, start', ... (every other)
        column = np.append(filtered[:, c], -np.inf)
        peaks = np.maximum.reduceat(column, np.stack([starts, lasts + 1], axis=1).ravel())[::2]
        keep = peaks >= p["on_threshold"][c]
        starts, lasts, peaks = starts[keep], lasts[keep], peaks[keep]
        if not len(starts):
            continue
        onsets, offsets = times[starts, 0], times[lasts, 1]
        join = onsets[1:] - offsets[:-1] < p["min_gap_s"][c]  # gap to the previous event too short
        group = np.concatenate([[0], np.cumsum(~join)])
        for g in range(group[-1] + 1):
            members = np.flatnonzero(group == g)
            onset, offset = float(onsets[members[0]]), float(offsets[members[-1]])
            if offset - onset >= p["min_duration_s"][c]:
                events.append(Event(onset, offset, names[c], int(c), float(peaks[members].max()), file))
    return sorted(events, key=lambda e: (e.onset_s, e.class_index))


# ------------------------------------------------------------------------------------------ output

EVENT_FORMATS = ("csv", "jsonl", "tsv", "audacity", "raven")
_SUFFIXES = {"csv": ".events.csv", "jsonl": ".events.jsonl", "tsv": ".events.tsv", "audacity": ".labels.txt",
             "raven": ".selections.txt"}
RAVEN_COLUMNS = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                 "High Freq (Hz)", "Annotation", "Score")
CSV_COLUMNS = ("file", "onset_s", "offset_s", "label", "class_index", "peak")


def event_file_suffix(fmt: str) -> str:
    """The file-name ending of an event format (``.events.csv``, ``.labels.txt``, ``.selections.txt``, ...)."""
    if fmt not in _SUFFIXES:
        raise ConfigError(f"unknown event format {fmt!r} (choose from {', '.join(EVENT_FORMATS)})")
    return _SUFFIXES[fmt]


def _as_event(event: Event | Mapping[str, Any]) -> Event:
    return event if isinstance(event, Event) else Event(**{k: event[k] for k in Event.__dataclass_fields__
                                                           if k in event})


def events_text(events: Iterable[Event | Mapping[str, Any]], fmt: str, nyquist_hz: float = 8000.0) -> str:
    """The contents of an event file of format ``fmt`` (see the module docstring)."""
    rows = [_as_event(e) for e in events]
    buffer = io.StringIO(newline="")
    if fmt == "jsonl":
        for e in rows:
            buffer.write(json.dumps({k: getattr(e, k) for k in CSV_COLUMNS}, ensure_ascii=False) + "\n")
        return buffer.getvalue()
    if fmt == "csv":
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for e in rows:
            writer.writerow([e.file or "", f"{e.onset_s:.3f}", f"{e.offset_s:.3f}", e.label, e.class_index,
                             f"{e.peak:.5f}"])
        return buffer.getvalue()
    for e in rows:  # the tab-separated formats: a tab or newline inside a label would break a column
        if any(ch in e.label for ch in "\t\r\n") or any(ch in (e.file or "") for ch in "\t\r\n"):
            raise ConfigError(f"label or file name {e.label!r} contains a tab or newline: cannot write {fmt}")
    if fmt == "tsv":
        with_file = any(e.file for e in rows)
        buffer.write(("filename\t" if with_file else "") + "onset\toffset\tevent_label\n")
        for e in rows:
            buffer.write((f"{e.file or ''}\t" if with_file else "") + f"{e.onset_s:.3f}\t{e.offset_s:.3f}\t{e.label}\n")
        return buffer.getvalue()
    if fmt == "audacity":
        for e in rows:
            buffer.write(f"{e.onset_s:.6f}\t{e.offset_s:.6f}\t{e.label}\n")
        return buffer.getvalue()
    if fmt == "raven":
        buffer.write("\t".join(RAVEN_COLUMNS) + "\n")
        for i, e in enumerate(rows, start=1):
            buffer.write(f"{i}\tSpectrogram 1\t1\t{e.onset_s:.6f}\t{e.offset_s:.6f}\t0.0\t{nyquist_hz:.1f}\t"
                         f"{e.label}\t{e.peak:.5f}\n")
        return buffer.getvalue()
    raise ConfigError(f"unknown event format {fmt!r} (choose from {', '.join(EVENT_FORMATS)})")


def write_events(path: str | os.PathLike, events: Iterable[Event | Mapping[str, Any]], fmt: str | None = None,
                 nyquist_hz: float = 8000.0) -> Path:
    """Write events to ``path`` atomically in ``fmt`` (default: from the name's ending); returns the path."""
    from .batch.store import atomic_write_text

    target = Path(path)
    if fmt is None:
        name = target.name.lower()
        fmt = next((f for f, suffix in _SUFFIXES.items() if name.endswith(suffix)), None)
        fmt = fmt or {".csv": "csv", ".jsonl": "jsonl", ".tsv": "tsv", ".txt": "audacity"}.get(target.suffix.lower())
        if fmt is None:
            raise ConfigError(f"{target}: cannot tell the event format from the name; pass fmt "
                              f"({', '.join(EVENT_FORMATS)})")
    atomic_write_text(target, events_text(events, fmt, nyquist_hz))
    return target


def format_events_text(events: Sequence[Event | Mapping[str, Any]], indent: str = "  ") -> str:
    """A readable event list: one line per event, ``  12.16-15.04 s  ( 2.88 s)  0.912  Siren``."""
    rows = [_as_event(e) for e in events]
    if not rows:
        return f"{indent}(no events)"
    width = max(len(f"{e.offset_s:.2f}") for e in rows)
    return "\n".join(f"{indent}{e.onset_s:>{width}.2f}-{e.offset_s:<{width}.2f} s  ({e.offset_s - e.onset_s:6.2f} s)  "
                     f"{e.peak:.3f}  {e.label}" for e in rows)
