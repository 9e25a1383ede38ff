"""The work of a batch job: decode + features (:func:`prepare`, in worker processes), the model on
batches of clips of one length (:class:`Tagger`), and the local engine that overlaps the two
(:func:`run_local`).

Batching: consecutive files whose (padded) features have the same number of frames, which is every
clip of up to 10.24 s with the default ``min_frames=1024``, go through the model together, up to
``batch_size`` at a time. Clips are never padded further to make a batch (that would change their
scores); a file of another length starts a new batch. The rows equal those of one-by-one calls
(tests: 1e-5). With events, each file runs on its own (its timeline is computed in the same pass).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, DassError
from ..events import EventParams
from .store import score_columns

__all__ = ["EVENT_FRAME_S", "Prepared", "TagOptions", "Tagger", "pad_features", "prepare", "run_local"]

EVENT_FRAME_S = 0.32  # events are found on the finest timeline: one row per final-map column of DASS


@dataclass(frozen=True)
class TagOptions:
    """What a job computes per file (the same for every engine).

    ``min_frames`` / ``max_frames``: pad shorter files with zeros (before normalisation) to
    ``min_frames``, use only the first ``max_frames`` (as ``dass tag``). ``top_k`` / ``threshold``:
    the ``top`` list of a row. ``events``: event settings, or None for no events.
    ``batch_size``: clips per model call. ``precision``: see :func:`dass.inference.engine_for`.
    """

    min_frames: int = 1024
    max_frames: int | None = None
    top_k: int = 5
    threshold: float | None = None
    events: EventParams | None = None
    batch_size: int = 8
    precision: str = "float32"

    def check(self) -> None:
        if self.min_frames < 0:
            raise ConfigError(f"min_frames must be >= 0, got {self.min_frames}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0, got {self.top_k}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold must be a probability in [0, 1], got {self.threshold}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class Prepared:
    """One file ready for the model: ``features (T, F)`` float32 normalised (padded), or an ``error``."""

    file: str
    features: np.ndarray | None = None
    audio_frames: int = 0
    duration_s: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def pad_features(features: Any, min_frames: int, max_frames: int | None = None) -> tuple[Any, int]:
    """Normalised features ``(T, F)`` cut to ``max_frames`` and zero-padded (zeros before normalisation,
    as :class:`dass.features.FeatureExtractor` pads) to ``min_frames``; returns them and the audio frames kept."""
    import torch

    from ..features import AUDIOSET_MEAN, AUDIOSET_STD, normalize

    if max_frames is not None:
        features = features[:max_frames]
    audio_frames = int(features.shape[0])
    length = max(audio_frames, min_frames)
    if max_frames is not None:
        length = min(length, max_frames)
    if length > audio_frames:
        pad = normalize(torch.zeros(length - audio_frames, features.shape[1]), AUDIOSET_MEAN, AUDIOSET_STD)
        features = torch.cat([features, pad])
    return features, audio_frames


def prepare(path: str, min_frames: int = 1024, max_frames: int | None = None, progress: bool = False) -> Prepared:
    """Decode one file and compute its normalised features (any failure becomes ``Prepared.error``).

    The features are :func:`dass.inference.streaming.file_features` (block by block), cut to
    ``max_frames`` and zero-padded (before normalisation) to ``min_frames``, as ``dass tag`` does.
    """
    try:
        from ..inference.streaming import audio_duration, file_features

        duration = audio_duration(path)
        features, audio_frames = pad_features(file_features(path, progress=progress), min_frames, max_frames)
        if duration is None:  # a container libsndfile cannot read: the span the frames cover
            duration = (audio_frames - 1) * 0.01 + 0.025
        return Prepared(path, features.numpy(), audio_frames, float(duration))
    except DassError as e:
        return Prepared(path, error=str(e))
    except Exception as e:  # noqa: BLE001 - a decoder's own failure on one file must not end the job
        return Prepared(path, error=f"{path}: {type(e).__name__}: {e}")


def _error_row(file: str, message: str) -> dict[str, Any]:
    return {"file": file, "status": "error", "error": " ".join(str(message).split()), "duration_s": None,
            "frames": None, "model_frames": None, "top": None, "events": None, "scores": None}


class Tagger:
    """A model and a job's options: :class:`Prepared` clips in, result rows out (see the module docstring)."""

    def __init__(self, model: Any, names: Sequence[str | None] | None, options: TagOptions, device: Any = "cpu") -> None:
        import torch

        options.check()
        self.model = model.eval()
        self.num_classes = int(model.config.num_classes)
        self.names = list(names) if names else None
        self.columns = score_columns(self.names, self.num_classes)
        self.options = options
        self.device = torch.device(device)
        self.is_dass = getattr(model, "model_type", None) == "dass"
        if options.events is not None and not self.is_dass:
            raise ConfigError(f"events need a DASS model (its timeline), got {type(model).__name__}")

    # -- the model ------------------------------------------------------------------------------------

    def probabilities(self, batch: Any) -> Any:
        """Sigmoid probabilities ``(B, classes)`` of features ``(B, T, F)``."""
        import torch

        if self.is_dass and self.device.type == "cpu":
            from ..inference import predict

            return torch.sigmoid(predict(self.model, batch, precision=self.options.precision))
        with torch.inference_mode():
            return torch.sigmoid(self.model(batch.to(self.device)).float()).cpu()

    def row(self, item: Prepared, probabilities: Any, events: list[dict[str, Any]] | None) -> dict[str, Any]:
        """The result row of one clip from its probabilities ``(classes,)`` (and events)."""
        from ..commands.tag import top_classes

        top = top_classes(probabilities, self.names, self.options.top_k, self.options.threshold)
        return {"file": item.file, "status": "ok", "error": None, "duration_s": round(item.duration_s, 3),
                "frames": item.audio_frames, "model_frames": int(item.features.shape[0]),
                "top": [{**t, "probability": round(t["probability"], 6)} for t in top], "events": events,
                "scores": [round(float(p), 6) for p in probabilities.tolist()]}

    def timeline(self, item: Prepared, progress: bool = False) -> tuple[Any, Any, Any]:
        """``(clip probabilities (classes,), times_s (S, 2), scores (S, classes))`` of one clip on the 0.32 s
        timeline, from one pass; only the file's own audio (frames starting in the zero padding are
        dropped, the last one ends with the audio)."""
        import torch

        from ..inference import predict_with_timeline

        clip, times_s, scores = predict_with_timeline(self.model, torch.from_numpy(item.features), EVENT_FRAME_S,
                                                      progress=progress, precision=self.options.precision)
        end_s = item.audio_frames * 0.01
        keep = times_s[:, 0] < end_s
        return clip[0], times_s[keep].clamp(max=end_s), scores[keep]

    def events(self, times_s: Any, scores: Any) -> list[dict[str, Any]]:
        """The events (as row dicts) of a timeline, with the job's settings."""
        from ..events import detect_events

        return [_event_dict(e) for e in detect_events(times_s, scores, self.columns, self.options.events)]

    def _with_events(self, item: Prepared) -> dict[str, Any]:
        clip, times_s, scores = self.timeline(item)
        return self.row(item, clip, self.events(times_s, scores))

    def tag(self, items: Sequence[Prepared]) -> list[dict[str, Any]]:
        """Rows of clips that share one length (one model call); a failing batch is retried clip by clip."""
        import torch

        if self.options.events is not None:
            return [self._guarded(self._with_events, item) for item in items]
        try:
            probs = self.probabilities(torch.from_numpy(np.stack([item.features for item in items])))
        except DassError as e:
            if len(items) == 1:
                return [_error_row(items[0].file, str(e))]
            return [row for item in items for row in self.tag([item])]
        return [self.row(item, p, None) for item, p in zip(items, probs)]

    @staticmethod
    def _guarded(fn: Any, item: Prepared) -> dict[str, Any]:
        try:
            return fn(item)
        except DassError as e:
            return _error_row(item.file, str(e))

    def run(self, prepared: Iterable[Prepared]) -> Iterator[dict[str, Any]]:
        """Rows in input order; consecutive clips of one length are batched (up to ``batch_size``)."""
        pending: list[Prepared] = []
        for item in prepared:
            if pending and (item.error is not None or len(pending) >= self.options.batch_size
                            or item.features.shape != pending[0].features.shape):
                yield from self.tag(pending)
                pending = []
            if item.error is not None:
                yield _error_row(item.file, item.error)
            else:
                pending.append(item)
        if pending:
            yield from self.tag(pending)


def _event_dict(event: Any) -> dict[str, Any]:
    return {"onset_s": round(event.onset_s, 3), "offset_s": round(event.offset_s, 3), "label": event.label,
            "class_index": event.class_index, "peak": round(event.peak, 6)}


# ------------------------------------------------------------------------------------ local engine


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _prefetched(paths: Sequence[str], workers: int, options: TagOptions, window: int) -> Iterator[Prepared]:
    """:func:`prepare` of every path in ``workers`` processes, at most ``window`` files ahead, in order.

    A worker that dies (a decoder crashing on a corrupt file) fails only its own file: the pool is
    restarted, the file is tried once more on its own, and recorded as failed if it kills a worker again.
    """
    context = multiprocessing.get_context("spawn")  # torch and numba thread pools do not survive fork

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init)

    pool = new_pool()
    futures: dict[int, Future] = {}
    submitted = 0
    try:
        for index, path in enumerate(paths):
            while submitted < len(paths) and submitted < index + window:
                futures[submitted] = pool.submit(prepare, paths[submitted], options.min_frames, options.max_frames)
                submitted += 1
            try:
                yield futures.pop(index).result()
                continue
            except BrokenProcessPool:
                pass
            pool.shutdown(wait=True, cancel_futures=True)
            pool = new_pool()
            try:
                item = pool.submit(prepare, path, options.min_frames, options.max_frames).result()
            except BrokenProcessPool:
                item = Prepared(path, error=f"{path}: the decoder crashed (its worker process died)")
                pool.shutdown(wait=True, cancel_futures=True)
                pool = new_pool()
            for later in list(futures):  # resubmit what the broken pool held
                futures[later] = pool.submit(prepare, paths[later], options.min_frames, options.max_frames)
            yield item
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def run_local(paths: Sequence[str], tagger: Tagger, workers: int = 1) -> Iterator[dict[str, Any]]:
    """Rows of ``paths`` in order: decoding in ``workers`` processes (0: in this one) while the model runs here."""
    options = tagger.options
    if workers < 0:
        raise ConfigError(f"workers must be >= 0, got {workers}")
    if workers == 0:
        prepared: Iterable[Prepared] = (prepare(p, options.min_frames, options.max_frames) for p in paths)
    else:
        prepared = _prefetched(paths, workers, options, window=max(2 * workers, options.batch_size + workers))
    yield from tagger.run(prepared)


def default_workers() -> int:
    """Decoder processes by default: one per core beyond the model's, at least 1, at most 4."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))

