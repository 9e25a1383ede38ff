"""Haystacks for the Audio Needle-In-A-Haystack benchmark (SPEC §7).

A *needle* is one evaluation clip's normalised fbank, ``(1024, bins)``. A *haystack* of total length
``L`` frames holds the needle unchanged (bit-identical) at frame ``round(p · (L − 1024))`` for a
relative position ``p`` in [0, 1]; the other ``L − 1024`` frames (the *filler*) come from one of:

* ``zeros``   — zeros in the normalised feature domain (the paper's "zero padding");
* ``silence`` — a silent waveform (all zero samples) → fbank → normalise: a realistic long quiet
  recording. Every frame of a silent waveform is the same, so one frame is computed and repeated;
* ``white`` / ``pink`` — Gaussian noise (pink: power ∝ 1/f) at an SNR relative to the needle;
* ``babble`` — recordings (``babble:PATH``; PATH a file, a folder of audio files or a glob) looped
  from a per-clip random offset, at an SNR relative to the needle.

Noise fillers: the waveform is mean-removed and scaled so that ``20·log10(rms_needle / rms_noise)``
is the requested SNR (``rms_needle``: RMS of the needle clip's mean-removed waveform), then turned
into log-mel features with :func:`dass.features.kaldi_fbank` in chunks of at most 400 s and
normalised. White and pink noise are generated independently per chunk, each chunk mean-removed and
scaled to the exact target RMS (the processes are stationary, so this is the same noise); babble is
one continuous looped stream whose mean and RMS are taken over exactly the samples used.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import zlib
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from ..errors import AudioError, ConfigError

NEEDLE_FRAMES = 1024  # a 10 s clip padded/cut to the models' training length
FRAMES_PER_SECOND = 100  # 10 ms frame shift
SAMPLE_RATE = 16000
FRAME_LENGTH = 400  # samples (25 ms)
FRAME_SHIFT = 160  # samples (10 ms)
MAX_CHUNK_SECONDS = 400.0
#: frames per fbank chunk: the largest F whose waveform ((F − 1)·160 + 400 samples) is ≤ 400 s.
CHUNK_FRAMES = int((MAX_CHUNK_SECONDS * SAMPLE_RATE - FRAME_LENGTH) // FRAME_SHIFT) + 1

HAYSTACK_KINDS = ("zeros", "silence", "white", "pink", "babble")
NOISE_KINDS = ("white", "pink", "babble")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".m4a", ".aiff", ".aif")

FbankFn = Callable[[torch.Tensor], torch.Tensor]  # (samples,) -> (frames, bins), normalised


# --------------------------------------------------------------------------------------------------
# Needle placement
# --------------------------------------------------------------------------------------------------


def needle_start(length: int, position: float, needle_frames: int = NEEDLE_FRAMES) -> int:
    """First frame of the needle in a haystack of ``length`` frames: ``round(p · (L − needle))``.

    Halves round up (``floor(x + 0.5)``), so the result does not depend on Python's banker's rounding.
    """
    if not 0.0 <= position <= 1.0:
        raise ConfigError(f"needle position must be in [0, 1], got {position}")
    if length < needle_frames:
        raise ConfigError(f"haystack length {length} frames is shorter than the {needle_frames}-frame needle")
    return int(math.floor(position * (length - needle_frames) + 0.5))


def place_needle(filler: torch.Tensor, needle: torch.Tensor, position: float) -> torch.Tensor:
    """Insert ``needle`` into ``filler`` at relative ``position``.

    Args:
        filler: ``(B, L − N, F)`` frames around the needle (may be an expanded, non-contiguous view).
        needle: ``(B, N, F)`` needles (copied unchanged).
        position: relative position p in [0, 1].

    Returns:
        ``(B, L, F)`` haystacks, on ``needle``'s device and dtype: ``filler[:, :s]``, the needle,
        ``filler[:, s:]`` with ``s = needle_start(L, p, N)``.
    """
    if filler.dim() != 3 or needle.dim() != 3 or filler.shape[0] != needle.shape[0] or filler.shape[2] != needle.shape[2]:
        raise ConfigError(f"place_needle: filler {tuple(filler.shape)} and needle {tuple(needle.shape)} "
                          "must be (B, L - N, F) and (B, N, F)")
    batch, needle_frames, bins = needle.shape
    length = filler.shape[1] + needle_frames
    start = needle_start(length, position, needle_frames)
    out = torch.empty((batch, length, bins), dtype=needle.dtype, device=needle.device)
    out[:, :start] = filler[:, :start]
    out[:, start:start + needle_frames] = needle
    out[:, start + needle_frames:] = filler[:, start:]
    return out


# --------------------------------------------------------------------------------------------------
# Haystack kinds
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HaystackSpec:
    """One haystack kind; ``files`` are the babble recordings (empty for the other kinds)."""

    kind: str
    files: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The name written in the CSV's ``haystack`` column."""
        return self.kind

    @property
    def uses_snr(self) -> bool:
        """True for noise haystacks (scaled to an SNR); zeros and silence have no SNR."""
        return self.kind in NOISE_KINDS


def _expand_audio_paths(pattern: str) -> tuple[str, ...]:
    """Audio files named by ``pattern``: a file, a folder (its audio files, sorted) or a glob."""
    if os.path.isdir(pattern):
        files = sorted(str(p) for p in Path(pattern).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    elif os.path.isfile(pattern):
        files = [pattern]
    else:
        files = sorted(glob.glob(pattern, recursive=True))
    if not files:
        raise ConfigError(f"babble haystack: no audio files found at {pattern!r} "
                          f"(give a file, a folder of {'/'.join(AUDIO_SUFFIXES)} files, or a glob)")
    return tuple(files)


def parse_haystacks(values: str | Sequence[str], default_babble: str | os.PathLike | None = None) -> list[HaystackSpec]:
    """Parse ``--haystack`` values: kinds separated by commas, e.g. ``"zeros,white"``,
    ``["silence", "babble:data/babble"]``. ``babble:PATH`` names recordings (file, folder or glob; no
    commas); plain ``babble`` uses ``default_babble`` (e.g. a ``dass synth`` corpus' haystacks/babble)."""
    items = [values] if isinstance(values, str) else list(values)
    specs: list[HaystackSpec] = []
    for item in items:
        for token in (t.strip() for t in item.split(",")):
            if not token:
                continue
            kind, _, files = token.partition(":")
            kind = kind.strip().lower()
            if kind not in HAYSTACK_KINDS:
                raise ConfigError(f"unknown haystack {token!r}; choose from {', '.join(HAYSTACK_KINDS)} "
                                  "(babble as babble:PATH)")
            if kind == "babble":
                if not files and default_babble is not None and os.path.isdir(default_babble):
                    files = os.fspath(default_babble)
                if not files:
                    raise ConfigError("haystack 'babble' needs recordings: babble:PATH with PATH a file, "
                                      "a folder of audio files (e.g. from `dass synth --haystacks`) or a glob")
                spec = HaystackSpec("babble", _expand_audio_paths(files))
            elif files:
                raise ConfigError(f"haystack {kind!r} takes no files, got {token!r}")
            else:
                spec = HaystackSpec(kind)
            if any(s.name == spec.name for s in specs):
                raise ConfigError(f"haystack {spec.name!r} given twice")
            specs.append(spec)
    if not specs:
        raise ConfigError("no haystack given; choose from " + ", ".join(HAYSTACK_KINDS))
    return specs


# --------------------------------------------------------------------------------------------------
# Noise waveforms
# --------------------------------------------------------------------------------------------------


def chunk_frame_counts(total_frames: int, chunk_frames: int = CHUNK_FRAMES) -> list[int]:
    """Split ``total_frames`` into consecutive chunks of at most ``chunk_frames`` frames."""
    return [min(chunk_frames, total_frames - start) for start in range(0, total_frames, chunk_frames)]


def samples_for_frames(frames: int) -> int:
    """Waveform samples that give exactly ``frames`` Kaldi frames (snip_edges): ``(frames − 1)·160 + 400``."""
    return (frames - 1) * FRAME_SHIFT + FRAME_LENGTH


def noise_rms(needle_rms: float, snr_db: float) -> float:
    """RMS of noise at ``snr_db`` below a signal of RMS ``needle_rms``: ``needle_rms · 10^(−snr/20)``."""
    return float(needle_rms) * 10.0 ** (-float(snr_db) / 20.0)


def waveform_rms(waveform: torch.Tensor) -> float:
    """RMS of the mean-removed waveform ``(samples,)``, in float64."""
    w = waveform.to(torch.float64)
    return float((w - w.mean()).square().mean().sqrt())


def _scaled(waveform: torch.Tensor, target_rms: float) -> torch.Tensor:
    """``waveform`` mean-removed and scaled to RMS ``target_rms`` (float64 in, float32 out)."""
    w = waveform.to(torch.float64)
    w = w - w.mean()
    rms = float(w.square().mean().sqrt())
    if rms == 0.0:
        return torch.zeros_like(w, dtype=torch.float32)
    return (w * (target_rms / rms)).to(torch.float32)


def pink_noise(num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise with power spectral density ∝ 1/f (−3 dB per octave), ``(num_samples,)`` float64.

    Shaped in the frequency domain: complex Gaussian spectrum times ``f^(-1/2)``, DC removed.
    """
    bins = num_samples // 2 + 1
    spectrum = torch.complex(torch.randn(bins, generator=generator, dtype=torch.float64),
                             torch.randn(bins, generator=generator, dtype=torch.float64))
    freqs = torch.arange(bins, dtype=torch.float64)
    freqs[0] = 1.0
    spectrum = spectrum / freqs.sqrt()
    spectrum[0] = 0.0
    return torch.fft.irfft(spectrum, n=num_samples)


class BabblePool:
    """Babble recordings concatenated into one pool ``(P,)`` that is read as an endless loop."""

    def __init__(self, files: Sequence[str], sample_rate: int = SAMPLE_RATE) -> None:
        from ..audio import load_audio

        if not files:
            raise ConfigError("babble haystack: no recordings given")
        self.files = tuple(files)
        self.pool = torch.cat([load_audio(f, sample_rate).to(torch.float32) for f in self.files])
        pool64 = self.pool.to(torch.float64)
        zero = torch.zeros(1, dtype=torch.float64)
        self._cumsum = torch.cat([zero, pool64.cumsum(0)])
        self._cumsq = torch.cat([zero, pool64.square().cumsum(0)])
        if float(self._cumsq[-1]) == 0.0:
            raise AudioError(f"babble recordings are silent: {', '.join(self.files)}")

    def __len__(self) -> int:
        return self.pool.shape[0]

    def _range_sum(self, cumulative: torch.Tensor, offset: int, count: int) -> float:
        """Sum of a per-sample quantity over the looped samples ``[offset, offset + count)``."""
        size = len(self)
        full_loops, rest = divmod(count, size)
        total = full_loops * float(cumulative[-1])
        start = offset % size
        end = start + rest
        if end <= size:
            total += float(cumulative[end] - cumulative[start])
        else:
            total += float(cumulative[-1] - cumulative[start]) + float(cumulative[end - size])
        return total

    def stats(self, offset: int, count: int) -> tuple[float, float]:
        """(mean, RMS about the mean) of the looped samples ``[offset, offset + count)``, exactly."""
        mean = self._range_sum(self._cumsum, offset, count) / count
        mean_square = self._range_sum(self._cumsq, offset, count) / count
        return mean, math.sqrt(max(mean_square - mean * mean, 0.0))

    def read(self, offset: int, count: int) -> torch.Tensor:
        """The looped samples ``[offset, offset + count)``, ``(count,)`` float32."""
        size = len(self)
        index = (torch.arange(count, dtype=torch.int64) + offset) % size
        return self.pool[index]


def clip_seed(seed: int, kind: str, clip_index: int) -> int:
    """A stable per-(kind, clip) seed: the same clip gets the same noise at every SNR and length."""
    return zlib.crc32(f"{seed}/{kind}/{clip_index}".encode()) & 0x7FFFFFFF


def noise_waveform_chunks(kind: str, num_frames: int, target_rms: float, seed: int,
                          babble: BabblePool | None = None,
                          chunk_frames: int = CHUNK_FRAMES) -> Iterator[tuple[int, torch.Tensor]]:
    """The noise waveform behind ``num_frames`` filler frames, in chunks of ≤ ``chunk_frames`` frames.

    Yields ``(frames, waveform)`` with ``waveform`` ``(samples_for_frames(frames),)`` float32,
    mean-removed, at RMS ``target_rms`` (white/pink: each chunk exactly; babble: the whole stream).
    Consecutive babble chunks overlap by 240 samples, exactly as one long waveform's frames do.
    """
    if kind not in NOISE_KINDS:
        raise ConfigError(f"not a noise haystack: {kind!r}")
    generator = torch.Generator().manual_seed(seed)
    counts = chunk_frame_counts(num_frames, chunk_frames)
    if kind == "babble":
        if babble is None:
            raise ConfigError("babble haystack needs its recordings (a BabblePool)")
        offset = int(torch.randint(len(babble), (1,), generator=generator))
        mean, rms = babble.stats(offset, samples_for_frames(num_frames))
        scale = 0.0 if rms == 0.0 else target_rms / rms
        first_frame = 0
        for frames in counts:
            start = offset + first_frame * FRAME_SHIFT
            chunk = babble.read(start, samples_for_frames(frames)).to(torch.float64)
            yield frames, ((chunk - mean) * scale).to(torch.float32)
            first_frame += frames
        return
    for frames in counts:
        n = samples_for_frames(frames)
        raw = torch.randn(n, generator=generator, dtype=torch.float64) if kind == "white" else pink_noise(n, generator)
        yield frames, _scaled(raw, target_rms)


# --------------------------------------------------------------------------------------------------
# Fillers (the haystack without its needle), in the normalised feature domain
# --------------------------------------------------------------------------------------------------


def default_fbank_fn(mean: float | None = None, std: float | None = None,
                     device: torch.device | str = "cpu") -> FbankFn:
    """``waveform (samples,) -> normalised fbank (frames, 128)`` with :mod:`dass.features`, on ``device``."""
    from .. import features

    mean = features.AUDIOSET_MEAN if mean is None else mean
    std = features.AUDIOSET_STD if std is None else std

    def fbank(waveform: torch.Tensor) -> torch.Tensor:
        return features.normalize(features.kaldi_fbank(waveform.to(device), SAMPLE_RATE), mean, std)

    return fbank


class FillerBuilder:
    """Builds the frames around the needle, ``(L − 1024, bins)``, for one haystack kind.

    ``fbank_fn`` maps a mean-removed waveform ``(samples,)`` to normalised features ``(frames, bins)``
    (default: :func:`default_fbank_fn`). Zeros and silence fillers are one frame expanded (no memory);
    noise fillers are computed chunk by chunk into one ``(L − 1024, bins)`` tensor.
    """

    def __init__(self, spec: HaystackSpec, fbank_fn: FbankFn, num_bins: int = 128, seed: int = 0,
                 device: torch.device | str = "cpu", chunk_frames: int = CHUNK_FRAMES) -> None:
        self.spec = spec
        self.fbank_fn = fbank_fn
        self.num_bins = num_bins
        self.seed = seed
        self.device = torch.device(device)
        self.chunk_frames = chunk_frames
        self.babble = BabblePool(spec.files) if spec.kind == "babble" else None
        self._frame: torch.Tensor | None = None
        if spec.kind == "zeros":
            self._frame = torch.zeros(num_bins, device=self.device)
        elif spec.kind == "silence":
            frames = self.fbank_fn(torch.zeros(samples_for_frames(2)))
            if not torch.equal(frames[0], frames[1]):
                raise AssertionError("fbank of silence should be the same for every frame")
            self._frame = frames[0].to(self.device, torch.float32)

    @property
    def is_constant(self) -> bool:
        """True when every filler frame is the same (zeros, silence): cheap to build per batch."""
        return self._frame is not None

    def constant(self, batch: int, num_frames: int) -> torch.Tensor:
        """``(batch, num_frames, bins)`` expanded view of the constant frame (zeros / silence)."""
        assert self._frame is not None
        return self._frame.expand(batch, num_frames, self.num_bins)

    def noise(self, num_frames: int, needle_rms: float, snr_db: float, clip_index: int) -> torch.Tensor:
        """Noise filler ``(num_frames, bins)`` for clip ``clip_index`` at ``snr_db`` re the needle's RMS."""
        out = torch.empty((num_frames, self.num_bins), device=self.device)
        first = 0
        chunks = noise_waveform_chunks(self.spec.kind, num_frames, noise_rms(needle_rms, snr_db),
                                       clip_seed(self.seed, self.spec.kind, clip_index), self.babble,
                                       self.chunk_frames)
        for frames, waveform in chunks:
            features = self.fbank_fn(waveform)
            if tuple(features.shape) != (frames, self.num_bins):
                raise AssertionError(f"fbank gave {tuple(features.shape)} for {frames} frames")
            out[first:first + frames] = features
            first += frames
        return out

