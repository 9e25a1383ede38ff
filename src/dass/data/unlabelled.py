"""Unlabelled audio for self-supervised pretraining and dataset statistics.

A *source* of unlabelled audio is one of

* a directory: every audio file below it (recursively, by suffix, hidden entries skipped), sorted;
* a text file (``.txt`` / ``.lst`` / ``.list``): one path per line (relative paths are resolved
  against the list's folder; blank lines and lines starting with ``#`` are skipped);
* an AST JSON datafile (``.json``, ``{"data": [{"wav": ...}, ...]}``): its ``wav`` entries, the
  labels ignored.

:func:`list_audio_files` turns a source into absolute paths; :class:`UnlabelledAudio` serves them as
log-mel features cut or zero-padded to ``max_length`` frames from the start (as AST's loader does),
normalised, with the feature cache of :class:`dass.data.dataset.AudioTaggingDataset`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DassError
from ..features import AUDIOSET_MEAN, AUDIOSET_STD, FeatureExtractor
from .dataset import AudioTaggingDataset, Clip

__all__ = ["LIST_SUFFIXES", "UnlabelledAudio", "list_audio_files", "split_files"]

LIST_SUFFIXES = (".txt", ".lst", ".list")


def list_audio_files(source: str | os.PathLike, check_files: bool = True) -> list[str]:
    """Absolute paths of the audio files of ``source`` (a directory, a text list or a JSON datafile),
    collected by :mod:`dass.batch.collect` (the file collection ``dass tag`` batch jobs use).

    Raises :class:`DassError` naming the source when it does not exist, holds no audio, or (with
    ``check_files``) lists a file that does not exist.
    """
    from ..batch.collect import AUDIO_SUFFIXES, datafile_paths, list_file_paths, scan_folder

    path = Path(source).expanduser()
    if path.is_dir():
        files = [os.path.abspath(f) for f in scan_folder(path)]
        if not files:
            raise DassError(f"{path}: no audio files below this directory (suffixes: {', '.join(AUDIO_SUFFIXES)})")
        return files
    if not path.is_file():
        raise DassError(f"{path}: no such directory, file list or datafile")
    if path.suffix.lower() == ".json":
        files = datafile_paths(path)
    elif path.suffix.lower() in LIST_SUFFIXES:
        files = list_file_paths(path)
    else:
        raise DassError(
            f"{path}: expected a directory of audio files, a text list ({', '.join(LIST_SUFFIXES)}) "
            "or an AST JSON datafile (.json)"
        )
    if not files:
        raise DassError(f"{path}: lists no audio files")
    if check_files:
        for i, file in enumerate(files):
            if not os.path.isfile(file):
                raise DassError(f"{path}: entry {i}: audio file not found: {file}")
    return files


def split_files(files: list[str], held_out: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(kept, held_out)``: ``held_out`` files chosen by a permutation seeded with ``seed`` (the rest kept,
    both in their original order). Leaves at least one file on each side."""
    if len(files) < 2:
        raise DassError(f"need at least 2 audio files to hold some out for validation, got {len(files)}")
    count = min(max(1, held_out), len(files) - 1)
    chosen = set(np.random.default_rng(seed).permutation(len(files))[:count].tolist())
    return ([f for i, f in enumerate(files) if i not in chosen], [f for i, f in enumerate(files) if i in chosen])


class UnlabelledAudio(AudioTaggingDataset):
    """Audio files as normalised features ``(max_length, F)`` (cut or zero-padded at the end).

    ``item_transform(features, rng, index) -> dict`` (optional) adds per-item fields (e.g. the
    pretraining masks) drawn from the item's generator; an item requested as ``(index, sample_seed)``
    (what :class:`dass.train.distributed.EpochSampler` yields) uses ``numpy.random.default_rng(sample_seed)``.
    Items: ``{"features": (T, F), "index": int, ...}``. The feature cache (``cache_dir``) is the one
    of :class:`~dass.data.dataset.AudioTaggingDataset` (shares its files).
    """

    def __init__(
        self,
        files: list[str],
        *,
        max_length: int = 1024,
        sample_rate: int = 16000,
        num_mel_bins: int = 128,
        cache_dir: str | os.PathLike | None = None,
        mean: float = AUDIOSET_MEAN,
        std: float = AUDIOSET_STD,
        item_transform: Callable[[torch.Tensor, np.random.Generator, int], dict[str, Any]] | None = None,
    ) -> None:
        # The parent's constructor reads a labelled datafile; set up the parts fbank() uses instead.
        if not files:
            raise DassError("no audio files given")
        self.datafile = None
        self.labels, self.num_classes = [], 0
        self.clips = [Clip(path=f, wav=f, label_indices=()) for f in files]
        self.max_length = int(max_length)
        self.mixup, self.freqm, self.timem = 0.0, 0, 0
        self.extractor = FeatureExtractor(
            sampling_rate=sample_rate, num_mel_bins=num_mel_bins, max_length=max_length, mean=mean, std=std
        )
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.item_transform = item_transform

    @property
    def files(self) -> list[str]:
        return [clip.path for clip in self.clips]

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(item, (tuple, list)):
            index, rng = int(item[0]), np.random.default_rng(int(item[1]))
        else:
            index, rng = int(item), np.random.default_rng()
        fbank = self.fbank(index)
        features = fbank.new_zeros(self.max_length, fbank.shape[1])
        features[: fbank.shape[0]] = fbank
        fe = self.extractor
        features = (features - fe.mean) / (2 * fe.std)
        out: dict[str, Any] = {"features": features, "index": index}
        if self.item_transform is not None:
            out.update(self.item_transform(features, rng, index))
        return out
