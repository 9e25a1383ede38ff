"""Dataset normalisation statistics: the mean and standard deviation of the log-mel fbank.

The models take ``(fbank − mean) / (2·std)``; the recipes use per-dataset ``mean`` / ``std``
(AudioSet −4.268 / 4.569, Speech Commands −6.846 / 5.565, ...). :func:`fbank_statistics` computes
them for any source :func:`dass.data.unlabelled.list_audio_files` reads (a datafile, a list, a
directory): the pooled mean and standard deviation over every (frame, bin) cell of every clip's
un-normalised fbank (cut to ``max_length`` frames, without padding), accumulated in float64.

AST's own script averages per-batch means and per-batch standard deviations of padded batches,
which gives slightly different numbers (padding counts as zeros; the mean of stds is not the
pooled std); the pooled statistics here do not depend on the batch size or the padding.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..errors import DassError

__all__ = ["fbank_statistics"]


def fbank_statistics(
    source: str | os.PathLike,
    *,
    max_length: int | None = None,
    max_clips: int | None = None,
    sample_rate: int = 16000,
    num_mel_bins: int = 128,
    progress: bool = False,
) -> dict[str, float]:
    """``{"mean", "std", "clips", "frames"}`` of the fbank of ``source``'s clips (the first ``max_clips``)."""
    from tqdm import tqdm

    from ..audio import load_audio
    from ..features import FeatureExtractor
    from .unlabelled import list_audio_files

    files = list_audio_files(source)
    if max_clips is not None:
        if max_clips < 1:
            raise DassError(f"max_clips must be >= 1, got {max_clips}")
        files = files[:max_clips]
    if max_length is not None and max_length < 1:
        raise DassError(f"max_length must be >= 1 frame, got {max_length}")
    extractor = FeatureExtractor(sampling_rate=sample_rate, num_mel_bins=num_mel_bins, max_length=None)
    total, total_sq, cells, frames = 0.0, 0.0, 0, 0
    for path in tqdm(files, unit="clip", desc="norm-stats", disable=not progress):
        fbank = extractor.extract(load_audio(path, sample_rate))[:max_length].numpy().astype(np.float64)
        total += float(fbank.sum())
        total_sq += float(np.square(fbank).sum())
        cells += fbank.size
        frames += fbank.shape[0]
    mean = total / cells
    variance = max(0.0, total_sq / cells - mean * mean)
    return {"mean": mean, "std": math.sqrt(variance), "clips": len(files), "frames": frames}
