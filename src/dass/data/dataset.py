"""Audio-tagging datasets in the AST format: a JSON datafile plus ``class_labels_indices.csv``.

Datafile (SPEC §6)::

    {"data": [{"wav": "clips/a.flac", "labels": "/m/09x0r,/m/05zppz"}, ...]}

Relative ``wav`` paths are resolved against the JSON file's folder. ``labels`` are comma-separated
ontology ids (``mid``) of the labels file.

One item = one clip: decode (:func:`dass.audio.load_audio`), log-mel fbank
(:class:`dass.features.FeatureExtractor`), pad with zeros / cut to ``max_length`` frames,
SpecAugment, normalise. Training augmentation follows AST's data loader:

* **mixup** with probability ``mixup``: a second clip drawn uniformly from the dataset,
  λ ~ Beta(10, 10); both waveforms mean-removed, the second cut/zero-padded to the first's length,
  ``λ·w1 + (1 − λ)·w2`` (mean-removed again) is featurised; targets ``λ·y1 + (1 − λ)·y2``.
* **SpecAugment**: one frequency mask of width ⌊u·freqm⌋ and one time mask of width ⌊u·timem⌋
  (torchaudio's ``FrequencyMasking``/``TimeMasking`` sampling). As in AST the masks are applied to
  the log-mel values *before* normalisation (masked cells hold 0, like the padding).

Randomness: an item requested as ``(index, sample_seed)`` (what :class:`dass.train.sampler.EpochSampler`
yields) draws its augmentation from ``numpy.random.default_rng(sample_seed)``, so a run is identical
whatever the number of processes and workers, and after a resume. A plain ``int`` index draws fresh
entropy.

Feature cache (``cache_dir``): the un-normalised fbank of each *un-mixed* clip (cut to ``max_length``)
is stored as ``.npy`` (written to a temporary file, then renamed) under a key made of the clip's
absolute path, size, modification time and the feature settings; later epochs read it instead of
decoding. Mixed clips are decoded again (mixing happens on waveforms).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DassError
from ..features import AUDIOSET_MEAN, AUDIOSET_STD, FeatureExtractor
from .labels import LabelInfo, read_class_labels_csv

__all__ = ["Clip", "AudioTaggingDataset", "datafile_entries", "read_datafile", "class_balanced_weights",
           "spec_augment_mask"]


@dataclass(frozen=True)
class Clip:
    """One datafile entry: ``path`` is the resolved absolute audio path (also the cache / teacher-logit
    key), ``wav`` the string as written in the datafile, ``label_indices`` the class indices."""

    path: str
    wav: str
    label_indices: tuple[int, ...]


def datafile_entries(datafile: str | os.PathLike) -> list[Any]:
    """The ``data`` list of an AST JSON datafile (not empty; entries unchecked). Raises :class:`DassError`."""
    datafile = Path(datafile)
    try:
        content = json.loads(datafile.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DassError(f"{datafile}: no such datafile") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DassError(f"{datafile}: cannot read the JSON datafile ({e})") from None
    entries = content.get("data") if isinstance(content, dict) else None
    if not isinstance(entries, list):
        raise DassError(f"{datafile}: expected a JSON object {{\"data\": [{{\"wav\": ..., \"labels\": ...}}, ...]}}")
    if not entries:
        raise DassError(f"{datafile}: the datafile lists no clips")
    return entries


def read_datafile(datafile: str | os.PathLike, labels: list[LabelInfo], label_csv: str | os.PathLike = "",
                  check_files: bool = True) -> list[Clip]:
    """Parse an AST JSON datafile against ``labels``. Raises :class:`DassError` naming the file and entry."""
    datafile = Path(datafile)
    entries = datafile_entries(datafile)
    by_mid = {label.mid: label.index for label in labels}
    base = datafile.resolve().parent
    clips = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("wav"), str) or not isinstance(entry.get("labels"), str):
            raise DassError(f"{datafile}: entry {i}: expected {{\"wav\": str, \"labels\": str}}, got {entry!r}")
        wav = entry["wav"]
        path = os.path.normpath(wav if os.path.isabs(wav) else os.path.join(base, wav))
        if check_files and not os.path.isfile(path):
            raise DassError(f"{datafile}: entry {i}: audio file not found: {path}")
        indices = []
        for mid in (m.strip() for m in entry["labels"].split(",")):
            if not mid:
                continue
            if mid not in by_mid:
                raise DassError(f"{datafile}: entry {i} ({wav}): unknown label {mid!r} (not in {label_csv or 'the labels file'})")
            indices.append(by_mid[mid])
        clips.append(Clip(path=path, wav=wav, label_indices=tuple(sorted(set(indices)))))
    return clips


def class_balanced_weights(clips: list[Clip], num_classes: int) -> np.ndarray:
    """Sampling weight per clip (SPEC §6): ``Σ over its labels of 1000 / (label count + 0.01)``, ``(N,)``."""
    counts = np.zeros(num_classes, dtype=np.float64)
    for clip in clips:
        counts[list(clip.label_indices)] += 1
    label_weight = 1000.0 / (counts + 0.01)
    return np.array([label_weight[list(c.label_indices)].sum() for c in clips], dtype=np.float64)


def spec_augment_mask(rng: np.random.Generator, size: int, max_width: int) -> tuple[int, int]:
    """One mask ``[start, end)`` along an axis of ``size``, sampled as torchaudio's ``mask_along_axis``:
    width ⌊u1·max_width⌋, start ⌊u2·(size − u1·max_width)⌋."""
    if max_width <= 0:
        return 0, 0
    value = rng.random() * max_width
    start = int(rng.random() * (size - value)) if size > value else 0
    return start, start + int(value)


class AudioTaggingDataset(Dataset):
    """Clips of an AST JSON datafile as ``{"features": (T, F), "targets": (C,), "index", "mix_index",
    "mix_lambda"}`` (``mix_index == index`` and ``mix_lambda == 1`` for un-mixed clips).

    Args:
        datafile: the JSON datafile. label_csv: ``class_labels_indices.csv`` (default: the one next to
        the datafile). max_length: frames per item (pad/cut). mixup, freqm, timem: augmentation (0 = off).
        cache_dir: feature cache folder or None. mean, std: normalisation constants.
    """

    def __init__(self, datafile: str | os.PathLike, label_csv: str | os.PathLike | None = None, *,
                 max_length: int = 1024, sample_rate: int = 16000, num_mel_bins: int = 128,
                 mixup: float = 0.0, freqm: int = 0, timem: int = 0, cache_dir: str | os.PathLike | None = None,
                 mean: float = AUDIOSET_MEAN, std: float = AUDIOSET_STD) -> None:
        self.datafile = Path(datafile)
        if label_csv is None:
            label_csv = self.datafile.parent / "class_labels_indices.csv"
        self.label_csv = Path(label_csv)
        self.labels = read_class_labels_csv(self.label_csv)
        self.clips = read_datafile(self.datafile, self.labels, self.label_csv)
        self.num_classes = len(self.labels)
        self.max_length = int(max_length)
        self.mixup, self.freqm, self.timem = float(mixup), int(freqm), int(timem)
        self.extractor = FeatureExtractor(sampling_rate=sample_rate, num_mel_bins=num_mel_bins,
                                          max_length=max_length, mean=mean, std=std)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def display_names(self) -> list[str]:
        return [label.display_name for label in self.labels]

    def targets(self, index: int) -> torch.Tensor:
        """Multi-hot ``(C,)`` float32 target of clip ``index``."""
        y = torch.zeros(self.num_classes)
        y[list(self.clips[index].label_indices)] = 1.0
        return y

    def sample_weights(self) -> np.ndarray:
        """Class-balanced sampling weights ``(N,)`` (see :func:`class_balanced_weights`)."""
        return class_balanced_weights(self.clips, self.num_classes)

    # -- decoding and caching -------------------------------------------------------------------------

    def waveform(self, index: int) -> torch.Tensor:
        from ..audio import load_audio

        return load_audio(self.clips[index].path, self.extractor.sampling_rate)

    def _cache_path(self, clip: Clip) -> Path:
        assert self.cache_dir is not None
        st = os.stat(clip.path)
        fe = self.extractor
        key = f"{clip.path}|{st.st_size}|{st.st_mtime_ns}|{fe.sampling_rate}|{fe.num_mel_bins}|{self.max_length}"
        digest = hashlib.sha1(key.encode()).hexdigest()
        return self.cache_dir / digest[:2] / f"{digest}.npy"

    def fbank(self, index: int) -> torch.Tensor:
        """Un-normalised, un-padded log-mel of clip ``index`` cut to ``max_length``: ``(frames, F)``."""
        if self.cache_dir is not None:
            path = self._cache_path(self.clips[index])
            if path.exists():
                try:
                    return torch.from_numpy(np.load(path))
                except (OSError, ValueError):
                    pass  # a damaged cache entry is recomputed below
        fbank = self.extractor.extract(self.waveform(index))[: self.max_length].contiguous()
        if self.cache_dir is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    np.save(f, fbank.numpy())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return fbank

    def _mixed_fbank(self, index: int, other: int, lam: float) -> torch.Tensor:
        w1, w2 = self.waveform(index), self.waveform(other)
        w1, w2 = w1 - w1.mean(), w2 - w2.mean()
        if w2.shape[0] >= w1.shape[0]:
            w2 = w2[: w1.shape[0]]
        else:
            w2 = torch.nn.functional.pad(w2, (0, w1.shape[0] - w2.shape[0]))
        mixed = lam * w1 + (1.0 - lam) * w2
        return self.extractor.extract(mixed - mixed.mean())[: self.max_length]

    # -- items ----------------------------------------------------------------------------------------

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(item, (tuple, list)):
            index, sample_seed = int(item[0]), int(item[1])
            rng = np.random.default_rng(sample_seed)
        else:
            index, rng = int(item), np.random.default_rng()
        other, lam = index, 1.0
        if self.mixup > 0 and rng.random() < self.mixup:
            other, lam = int(rng.integers(len(self.clips))), float(rng.beta(10, 10))
        fbank = self.fbank(index) if other == index and lam == 1.0 else self._mixed_fbank(index, other, lam)
        features = fbank.new_zeros(self.max_length, fbank.shape[1])
        features[: fbank.shape[0]] = fbank
        if self.freqm > 0:
            start, end = spec_augment_mask(rng, features.shape[1], self.freqm)
            features[:, start:end] = 0.0
        if self.timem > 0:
            start, end = spec_augment_mask(rng, features.shape[0], self.timem)
            features[start:end, :] = 0.0
        fe = self.extractor
        features = (features - fe.mean) / (2 * fe.std)
        targets = self.targets(index)
        if other != index or lam != 1.0:
            targets = lam * targets + (1.0 - lam) * self.targets(other)
        return {"features": features, "targets": targets, "index": index, "mix_index": other, "mix_lambda": lam}
