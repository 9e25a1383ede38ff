"""Fast, exact CPU inference for DASS on inputs of any length.

- :func:`predict`: logits for normalised features ``(T, F)`` or ``(B, T, F)``, seconds or hours long.
- :func:`predict_timeline`: per-segment class probabilities (where in a recording an event is).
- :func:`file_features`: normalised fbank features of an audio file, computed chunk by chunk.
- :class:`~dass.inference.fast.FastDASS`: the engine (channels-last, fused numba kernels, own
  thread team); :class:`~dass.inference.tiled.TiledForward`: the tiled forward for long inputs.

The model itself (``dass.models.dass.DASS``) stays the readable reference and training path; the
engine reads its parameters and computes the same function (tests: 1e-4 relative or better).

Example::

    from dass.inference import predict, predict_timeline, file_features
    feats = file_features("recording.flac")            # (T, 128), any length
    logits = predict(model, feats, progress=True)      # (1, classes)
    times_s, probs = predict_timeline(model, feats, segment_s=1.0)
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

from ..errors import AudioError, ConfigError
from .fast import FastDASS
from .tiled import DEFAULT_TILE_FRAMES, TiledForward

__all__ = [
    "DEFAULT_TILE_FRAMES",
    "FastDASS",
    "TiledForward",
    "engine_for",
    "file_features",
    "forward_features",
    "predict",
    "predict_timeline",
    "predict_with_timeline",
]

_ENGINES: "weakref.WeakKeyDictionary[Any, dict[str, tuple[tuple, FastDASS]]]" = weakref.WeakKeyDictionary()


def _weights_key(model: torch.nn.Module) -> tuple:
    return tuple((p.data_ptr(), p._version, p.dtype) for p in model.parameters())


def engine_for(model: torch.nn.Module, precision: str = "float32") -> FastDASS:
    """The (cached) :class:`FastDASS` engine of a DASS model; rebuilt when its weights change.

    ``precision``: ``"float32"`` (exact) or ``"bfloat16"`` (the large GEMMs in bfloat16: faster on
    CPUs with AMX / AVX512-BF16, logits within ~1e-2 relative; see benchmarks/inference.py).
    """
    if getattr(model, "model_type", None) != "dass":
        raise ConfigError(f"fast inference needs a DASS model, got {type(model).__name__}")
    key = _weights_key(model)
    per_model = _ENGINES.setdefault(model, {})
    cached = per_model.get(precision)
    if cached is None or cached[0] != key:
        cached = (key, FastDASS(model, precision=precision))
        per_model[precision] = cached
    return cached[1]


def _as_batch(features: torch.Tensor) -> torch.Tensor:
    if not isinstance(features, torch.Tensor):
        raise AudioError(f"features must be a tensor (T, F) or (B, T, F), got {type(features).__name__}")
    if features.dim() == 2:
        features = features.unsqueeze(0)
    if features.dim() != 3 or features.shape[1] < 1 or features.shape[2] < 1:
        raise AudioError(f"features must have shape (T, F) or (B, T, F), got {tuple(features.shape)}")
    if not features.is_floating_point():
        raise AudioError(f"features must be floating point, got {features.dtype}")
    if not bool(torch.isfinite(features).all()):
        raise AudioError("features contain NaN or infinite values")
    return features.detach().to(device="cpu", dtype=torch.float32)


def forward_features(model: torch.nn.Module, features: torch.Tensor, tile_frames: int | None = DEFAULT_TILE_FRAMES,
                     progress: bool = False, precision: str = "float32") -> torch.Tensor:
    """Final map ``(B, C, H', W')`` (as ``model.forward_features``) for features of any length."""
    engine = engine_for(model, precision)
    runner = TiledForward(engine, tile_frames, progress)
    maps = [runner.features(clip) for clip in _as_batch(features)]
    return torch.stack([m.permute(2, 1, 0) for m in maps])


def predict(model: torch.nn.Module, features: torch.Tensor, tile_frames: int | None = DEFAULT_TILE_FRAMES,
            progress: bool = False, precision: str = "float32") -> torch.Tensor:
    """Logits ``(B, classes)`` of normalised features ``(T, F)`` or ``(B, T, F)``, any T.

    Equal to ``model.eval()(features)`` up to float32 rounding; inputs longer than ``tile_frames``
    run tile by tile with exact scan-state chaining (memory grows with T only through one stage's
    map: ~3 KB per frame for DASS-small). ``progress`` shows a tqdm bar on stderr. ``precision``:
    see :func:`engine_for`.
    """
    feature_map = forward_features(model, features, tile_frames, progress, precision)
    return engine_for(model, precision).head(feature_map)


def predict_timeline(model: torch.nn.Module, features: torch.Tensor, segment_s: float = 1.0,
                     tile_frames: int | None = DEFAULT_TILE_FRAMES, progress: bool = False,
                     probabilities: bool = True, precision: str = "float32") -> tuple[torch.Tensor, torch.Tensor]:
    """Class scores over time for one clip's normalised features ``(T, F)`` (or ``(1, T, F)``).

    Segments are runs of final-map columns (0.32 s each) of about ``segment_s`` seconds; each is
    pooled by the mean and scored by the model's head (see :mod:`dass.inference.timeline`).

    Returns:
        ``times_s (segments, 2)``: start and end of each segment in seconds;
        ``scores (segments, classes)``: sigmoid probabilities (or logits if not ``probabilities``).
    """
    _, times_s, scores = predict_with_timeline(model, features, segment_s, tile_frames, progress,
                                               probabilities, precision)
    return times_s, scores


def predict_with_timeline(model: torch.nn.Module, features: torch.Tensor, segment_s: float = 1.0,
                          tile_frames: int | None = DEFAULT_TILE_FRAMES, progress: bool = False,
                          probabilities: bool = True, precision: str = "float32",
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`predict` and :func:`predict_timeline` of one clip from a single forward pass.

    Returns ``(clip scores (1, classes), times_s (segments, 2), segment scores (segments, classes))``;
    scores are probabilities, or logits if not ``probabilities``.
    """
    from .timeline import segment_bounds, segment_logits, steps_per_segment

    batch = _as_batch(features)
    if batch.shape[0] != 1:
        raise AudioError(f"a timeline is computed for one clip at a time, got a batch of {batch.shape[0]}")
    steps = steps_per_segment(segment_s)
    feature_map = forward_features(model, batch, tile_frames, progress, precision)  # (1, C, H', W')
    step_features = feature_map[0].mean(dim=1).T  # (W', C)
    head = model.classifier.head
    with torch.inference_mode():
        clip = engine_for(model, precision).head(feature_map)
        segments = segment_logits(step_features.to(device=head.weight.device, dtype=head.weight.dtype), head,
                                  steps).to(device="cpu", dtype=torch.float32)
    times_s = segment_bounds(batch.shape[1], step_features.shape[0], steps)
    if probabilities:
        clip, segments = torch.sigmoid(clip), torch.sigmoid(segments)
    return clip, times_s, segments


def file_features(path: Any, **kwargs: Any) -> torch.Tensor:
    """Normalised fbank features ``(T, 128)`` of an audio file, decoded and computed in chunks.

    See :func:`dass.inference.streaming.file_features` for the options.
    """
    from .streaming import file_features as _file_features

    return _file_features(path, **kwargs)
