"""The NIAH evaluation set: needles (normalised 10 s fbanks), their waveforms' RMS and 0/1 targets."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Iterable, Sequence

import torch

from ..errors import ConfigError
from .haystack import NEEDLE_FRAMES, waveform_rms


@dataclasses.dataclass
class NiahEvalSet:
    """Clips to hide in haystacks.

    Attributes:
        needles: ``(N, 1024, bins)`` normalised fbank of each clip (padded / cut to 1024 frames).
        needle_rms: ``(N,)`` float64 RMS of each clip's mean-removed waveform (the SNR reference).
        targets: ``(N, classes)`` 0/1 labels.
        names: ``N`` clip names (file paths) for messages.
    """

    needles: torch.Tensor
    needle_rms: torch.Tensor
    targets: torch.Tensor
    names: list[str]

    def __post_init__(self) -> None:
        n = self.needles.shape[0]
        if self.needles.dim() != 3 or self.needles.shape[1] != NEEDLE_FRAMES:
            raise ConfigError(f"needles must be (N, {NEEDLE_FRAMES}, bins), got {tuple(self.needles.shape)}")
        if tuple(self.needle_rms.shape) != (n,) or self.targets.dim() != 2 or self.targets.shape[0] != n \
                or len(self.names) != n:
            raise ConfigError(f"eval set: {n} needles but needle_rms {tuple(self.needle_rms.shape)}, "
                              f"targets {tuple(self.targets.shape)}, {len(self.names)} names")
        if n == 0:
            raise ConfigError("eval set is empty")

    def __len__(self) -> int:
        return self.needles.shape[0]

    @property
    def num_classes(self) -> int:
        return self.targets.shape[1]

    def fingerprint(self) -> str:
        """SHA-256 of the needles, their RMS and the targets: identifies the eval set in a results folder."""
        digest = hashlib.sha256()
        for tensor in (self.needles, self.needle_rms, self.targets):
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    @classmethod
    def from_waveforms(cls, waveforms: Iterable[torch.Tensor], targets: torch.Tensor,
                       names: Sequence[str] | None = None, mean: float | None = None,
                       std: float | None = None) -> "NiahEvalSet":
        """Needles from 16 kHz mono waveforms ``(samples,)`` with :class:`dass.features.FeatureExtractor`."""
        from ..features import AUDIOSET_MEAN, AUDIOSET_STD, FeatureExtractor

        extractor = FeatureExtractor(max_length=NEEDLE_FRAMES, mean=AUDIOSET_MEAN if mean is None else mean,
                                     std=AUDIOSET_STD if std is None else std)
        needles, rms = [], []
        for waveform in waveforms:  # one at a time: ``waveforms`` may be a generator
            needles.append(extractor(waveform.to(torch.float32))["input_values"])
            rms.append(waveform_rms(waveform))
        names = list(names) if names is not None else [f"clip{i}" for i in range(len(needles))]
        return cls(torch.cat(needles), torch.tensor(rms, dtype=torch.float64),
                   torch.as_tensor(targets, dtype=torch.float32), names)

    @classmethod
    def from_dataset(cls, dataset, max_clips: int | None = None) -> "NiahEvalSet":
        """Needles of the first ``max_clips`` clips of a :class:`dass.data.dataset.AudioTaggingDataset`
        (its waveforms, targets and normalisation constants; no augmentation)."""
        count = len(dataset) if max_clips is None else min(len(dataset), max_clips)
        if count < 1:
            raise ConfigError(f"max_clips must be >= 1, got {max_clips}")
        waveforms = (dataset.waveform(i) for i in range(count))
        targets = torch.stack([dataset.targets(i) for i in range(count)])
        names = [dataset.clips[i].path for i in range(count)]
        return cls.from_waveforms(waveforms, targets, names, dataset.extractor.mean, dataset.extractor.std)


def load_eval_set(datafile: str | os.PathLike, label_csv: str | os.PathLike | None = None,
                  max_clips: int | None = None, mean: float | None = None,
                  std: float | None = None) -> NiahEvalSet:
    """The first ``max_clips`` clips of an AST JSON datafile (``{"data": [{"wav", "labels"}, ...]}``,
    relative paths resolved against its folder) with its ``class_labels_indices.csv`` (default: the
    one beside the datafile), read with :mod:`dass.data.dataset`."""
    from ..data.dataset import AudioTaggingDataset

    if max_clips is not None and max_clips < 1:
        raise ConfigError(f"max_clips must be >= 1, got {max_clips}")
    datafile = Path(datafile)
    if label_csv is None and not (datafile.parent / "class_labels_indices.csv").is_file():
        raise ConfigError(f"{datafile}: no class_labels_indices.csv beside it; pass the label file (--labels)")
    dataset = AudioTaggingDataset(datafile, label_csv, **{k: v for k, v in (("mean", mean), ("std", std))
                                                          if v is not None})
    return NiahEvalSet.from_dataset(dataset, max_clips)
