"""Time-resolved class scores from DASS's final feature map, and their CSV / JSON / PNG output.

The final map ``(C, H', W')`` has one column per 32 input frames (0.32 s at the 10 ms hop). A
segment of ``k`` columns is scored like a whole clip with mean pooling: the mean of its columns'
features (over frequency and the segment's time steps) goes through the classifier head. With mean
pooling, the clip logits are exactly the column-weighted mean of the per-column logits, so the
timeline and the clip-level answer agree. (The features of a column see far beyond its 0.32 s, as
the scans run over the whole input: the timeline shows where the evidence is strongest, not a
hard segmentation.)
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..errors import ConfigError

__all__ = [
    "FRAMES_PER_STEP",
    "FRAME_SHIFT_S",
    "plot_timeline",
    "segment_bounds",
    "segment_logits",
    "timeline_peaks",
    "write_timeline",
    "write_timeline_csv",
    "write_timeline_json",
]

FRAME_SHIFT_S = 0.01  # fbank hop (10 ms)
FRAMES_PER_STEP = 32  # total stride of DASS: one final-map column per 32 input frames


def steps_per_segment(segment_s: float) -> int:
    """Final-map columns per segment of about ``segment_s`` seconds (at least one)."""
    if not segment_s > 0:
        raise ConfigError(f"segment length must be positive seconds, got {segment_s!r}")
    return max(1, round(segment_s / (FRAMES_PER_STEP * FRAME_SHIFT_S)))


def segment_bounds(num_frames: int, num_steps: int, steps: int) -> torch.Tensor:
    """``(segments, 2)`` start / end times in seconds of segments of ``steps`` columns.

    Column j covers input frames ``[32 j, 32 (j + 1))``; the last segment ends at the input's end.
    """
    starts = torch.arange(0, num_steps, steps, dtype=torch.float64)
    ends = torch.clamp(starts + steps, max=num_steps)
    start_frames = starts * FRAMES_PER_STEP
    end_frames = torch.clamp(ends * FRAMES_PER_STEP, max=num_frames)
    return torch.stack([start_frames, end_frames], dim=1) * FRAME_SHIFT_S


def segment_logits(step_features: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor],
                   steps: int) -> torch.Tensor:
    """Per-segment logits from per-column features ``(W', C)``: mean over each run of ``steps`` columns, then ``head``.

    Returns ``(ceil(W' / steps), classes)``.
    """
    width, channels = step_features.shape
    segments = -(-width // steps)
    padded = step_features.new_zeros(segments * steps, channels)
    padded[:width] = step_features
    counts = torch.full((segments,), float(steps), dtype=step_features.dtype)
    counts[-1] = width - (segments - 1) * steps
    pooled = padded.view(segments, steps, channels).sum(dim=1) / counts[:, None]
    return head(pooled)


def _atomic_write_text(path: Path, write: Callable[[object], None], newline: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _names(labels: Sequence[str] | None, classes: int) -> list[str]:
    if labels is None:
        return [f"class_{i}" for i in range(classes)]
    if len(labels) != classes:
        raise ConfigError(f"{len(labels)} label names for {classes} classes")
    return list(labels)


def write_timeline_csv(path: str | os.PathLike, times_s: torch.Tensor, scores: torch.Tensor,
                       labels: Sequence[str] | None = None, source: str | None = None) -> None:
    """One row per segment: ``[file,] start_s, end_s, <one column per class>`` (written atomically)."""
    names = _names(labels, scores.shape[1])

    def write(handle) -> None:
        writer = csv.writer(handle)
        writer.writerow((["file"] if source is not None else []) + ["start_s", "end_s"] + names)
        for (start, end), row in zip(times_s.tolist(), scores.tolist()):
            prefix = [source] if source is not None else []
            writer.writerow(prefix + [f"{start:.2f}", f"{end:.2f}"] + [f"{p:.5f}" for p in row])

    _atomic_write_text(Path(path), write, newline="")


def write_timeline_json(path: str | os.PathLike, times_s: torch.Tensor, scores: torch.Tensor,
                        labels: Sequence[str] | None = None, source: str | None = None) -> None:
    """``{"file", "labels", "start_s", "end_s", "scores": [[...] per segment]}`` (written atomically)."""
    document = {
        "file": source,
        "labels": _names(labels, scores.shape[1]),
        "start_s": [round(t, 3) for t in times_s[:, 0].tolist()],
        "end_s": [round(t, 3) for t in times_s[:, 1].tolist()],
        "scores": [[round(p, 5) for p in row] for row in scores.tolist()],
    }
    _atomic_write_text(Path(path), lambda handle: json.dump(document, handle))


def plot_timeline(path: str | os.PathLike, times_s: torch.Tensor, scores: torch.Tensor,
                  labels: Sequence[str] | None = None, top_k: int = 10, title: str | None = None) -> list[int]:
    """Heat map (PNG) of the ``top_k`` classes with the highest peak score over time.

    Returns the plotted class indices (highest peak first).
    """
    from ..plotting import pyplot, save_figure

    plt = pyplot()

    names = _names(labels, scores.shape[1])
    k = max(1, min(int(top_k), scores.shape[1]))
    order = torch.argsort(scores.max(dim=0).values, descending=True)[:k].tolist()
    start, end = float(times_s[0, 0]), float(times_s[-1, 1])
    figure, axes = plt.subplots(figsize=(10, 1.0 + 0.35 * k))
    image = axes.imshow(scores[:, order].T.numpy(), aspect="auto", interpolation="nearest", origin="upper",
                        extent=(start, end, k - 0.5, -0.5), vmin=0.0, vmax=1.0, cmap="viridis")
    axes.set_yticks(range(k), [names[i] for i in order])
    axes.set_xlabel("time (s)")
    if title:
        axes.set_title(title)
    figure.colorbar(image, ax=axes, label="probability")
    save_figure(figure, path, dpi=100)
    return order


def write_timeline(path: str | os.PathLike, times_s: torch.Tensor, scores: torch.Tensor,
                   labels: Sequence[str] | None = None, source: str | None = None) -> None:
    """:func:`write_timeline_json` for a ``.json`` path, else :func:`write_timeline_csv`."""
    writer = write_timeline_json if str(path).lower().endswith(".json") else write_timeline_csv
    writer(path, times_s, scores, labels, source)


def timeline_peaks(times_s: torch.Tensor, scores: torch.Tensor, labels: Sequence[str] | None = None,
                   top_k: int = 5) -> list[dict]:
    """The ``top_k`` classes with the highest score in any segment, and where that segment is.

    ``[{"index", "label", "peak", "start_s", "end_s"}, ...]``, highest peak first.
    """
    names = _names(labels, scores.shape[1]) if labels is not None else None
    peaks, where = scores.max(dim=0)
    order = torch.argsort(peaks, descending=True, stable=True)[:max(1, int(top_k))].tolist()
    return [{"index": i, "label": names[i] if names else None, "peak": float(peaks[i]),
             "start_s": round(float(times_s[where[i], 0]), 2), "end_s": round(float(times_s[where[i], 1]), 2)}
            for i in order]
