"""Normalised fbank features of an audio file of any length, decoded and computed block by block.

For files libsndfile reads (WAV, FLAC, OGG, MP3, ...), the file is read twice in blocks: once for
the waveform's mean (SPEC §1 subtracts it), once to compute the features of each block (channels
averaged, resampled to 16 kHz with a streaming soxr resampler (which gives the same samples as
soxr on the whole waveform), :func:`dass.features.kaldi_fbank`,
:func:`dass.features.normalize`). Only the features ``(T, 128)`` (512 bytes per 10 ms frame) and one
block of audio are in memory; no copy of the whole waveform is made. Other containers (M4A, MP4, ...)
go through :func:`dass.audio.load_audio` (whole file in memory as float32) and the same features.

The result equals ``FeatureExtractor(max_length=None).from_file(path)[0]`` up to float32 rounding
(the mean is summed block by block in float64).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import AudioError, ConfigError
from ..features import AUDIOSET_MEAN, AUDIOSET_STD, frame_sizes, kaldi_fbank, normalize, num_frames

__all__ = ["audio_duration", "file_features"]


def _check_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise AudioError(f"file_features expects a path, got {type(path).__name__}")
    target = Path(path)
    if not target.exists():
        raise AudioError(f"{target}: no such file")
    if target.is_dir():
        raise AudioError(f"{target}: is a directory, not an audio file")
    if target.stat().st_size == 0:
        raise AudioError(f"{target}: empty file (0 bytes)")
    return target


def _mono(block: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(block[:, 0]) if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)


def audio_duration(path: str | os.PathLike) -> float | None:
    """Duration in seconds from the file header (libsndfile), or None if libsndfile cannot read it."""
    import soundfile

    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError):
        return None
    return info.frames / info.samplerate if info.samplerate > 0 else None


def file_features(path: str | os.PathLike, sample_rate: int = 16000, num_mel_bins: int = 128,
                  mean: float = AUDIOSET_MEAN, std: float = AUDIOSET_STD, block_seconds: float = 60.0,
                  progress: bool = False) -> torch.Tensor:
    """Normalised log-mel features ``(T, num_mel_bins)`` float32 of an audio file (see the module docstring).

    Raises :class:`AudioError` (naming the file) for a missing, empty, corrupt, NaN-containing or
    too short (< 25 ms) file.
    """
    import soundfile

    target = _check_path(path)
    if block_seconds <= 0:
        raise ConfigError(f"block_seconds must be positive, got {block_seconds}")
    try:
        handle = soundfile.SoundFile(str(target))
    except (soundfile.LibsndfileError, RuntimeError, OSError):
        handle = None
    if handle is None:  # a container libsndfile does not read: decode it whole
        from ..audio import load_audio

        waveform = load_audio(target, sample_rate)
        return normalize(kaldi_fbank(waveform, sample_rate, num_mel_bins, subtract_mean=True).float(), mean, std)

    with handle:
        file_rate = handle.samplerate
        block = max(1, int(block_seconds * file_rate))
        blocks_total = -(-handle.frames // block) if handle.frames > 0 else None

        def mono_blocks():
            """The channel-averaged waveform at ``sample_rate``, one block at a time."""
            resampler = None
            if file_rate != sample_rate:
                import soxr

                resampler = soxr.ResampleStream(file_rate, sample_rate, 1, dtype="float32", quality="HQ")
            handle.seek(0)
            chunks = handle.blocks(blocksize=block, dtype="float32", always_2d=True)
            previous = None
            for chunk in chunks:  # look one block ahead to tell the resampler which block is last
                if previous is not None:
                    yield previous if resampler is None else resampler.resample_chunk(previous)
                previous = _mono(chunk)
                if not np.isfinite(previous).all():
                    raise AudioError(f"{target}: contains NaN or infinite samples")
            if previous is not None:
                yield previous if resampler is None else resampler.resample_chunk(previous, last=True)

        # Pass 1: the mean of the waveform at the model's rate (what FeatureExtractor subtracts).
        total, count = 0.0, 0
        for mono in mono_blocks():
            total += float(mono.sum(dtype=np.float64))
            count += mono.shape[0]
        if count == 0:
            raise AudioError(f"{target}: contains no audio samples (empty)")
        offset = np.float32(total / count)

        # Pass 2: features, block by block; `pending` holds the samples of the frames still to do.
        from tqdm.auto import tqdm

        _, shift, _ = frame_sizes(sample_rate)
        pieces: list[torch.Tensor] = []
        # At the model's rate the number of frames is known: fill one tensor (no final concatenation).
        total_frames = num_frames(count, sample_rate) if file_rate == sample_rate else None
        out = torch.empty(total_frames, num_mel_bins) if total_frames else None
        done = 0
        pending = np.zeros(0, dtype=np.float32)
        for mono in tqdm(mono_blocks(), total=blocks_total, disable=not progress, file=sys.stderr,
                         unit="block", desc="features", leave=False):
            mono = mono - offset
            pending = np.concatenate([pending, mono]) if pending.size else mono
            frames = num_frames(pending.shape[0], sample_rate)
            if frames > 0:
                fbank = normalize(kaldi_fbank(torch.from_numpy(np.ascontiguousarray(pending)), sample_rate,
                                              num_mel_bins).float(), mean, std)
                if out is not None:
                    out[done:done + frames] = fbank
                else:
                    pieces.append(fbank)
                done += frames
                pending = pending[frames * shift:]
    if done == 0:
        raise AudioError(f"{target}: too short: less than one 25 ms frame of audio at {sample_rate} Hz")
    if out is not None:
        return out
    return torch.cat(pieces) if len(pieces) > 1 else pieces[0]
