"""Audio input/output: decode any common format to a mono float32 waveform at the model's rate.

* WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF, ... are decoded by libsndfile (``soundfile``);
  containers it cannot read (M4A/AAC, MP4, WebM, MKV, ...) by FFmpeg's libraries through PyAV,
  which is also the fallback whenever libsndfile fails on a file.
* Samples are float32 on libsndfile's scale (integer PCM / 2**(bits - 1), so in [-1, 1]); channels
  are averaged; the rate is converted with soxr (high quality). No float64 copy of the whole file
  is made, so a 2.5 h file needs a few times 576 MB, not more.
* Every problem raises :class:`dass.errors.AudioError` with the file's name and what is wrong.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .errors import AudioError, ConfigError

#: Suffixes libsndfile reads; anything else goes to PyAV first.
SOUNDFILE_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff",
                                ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64"})
#: Frame length of the features (25 ms); shorter audio gives no frame at all.
MIN_DURATION_S = 0.025


def _describe(src: Any) -> str:
    """Name of ``src`` for error messages."""
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"<bytes ({len(src)} bytes)>"
    name = getattr(src, "name", None)
    return str(name) if isinstance(name, (str, os.PathLike)) else f"<{type(src).__name__} object>"


def _open_source(src: Any, name: str) -> tuple[BinaryIO | str, str | None]:
    """Check ``src`` and return something soundfile/PyAV can open, plus the lower-case suffix (or None)."""
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.exists():
            raise AudioError(f"{name}: no such file")
        if path.is_dir():
            raise AudioError(f"{name}: is a directory, not an audio file")
        if path.stat().st_size == 0:
            raise AudioError(f"{name}: empty file (0 bytes)")
        return str(path), path.suffix.lower() or None
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise AudioError(f"{name}: empty input (0 bytes)")
        return io.BytesIO(bytes(src)), None
    if hasattr(src, "read") and hasattr(src, "seek"):
        start = src.tell()
        first = src.read(1)
        if not isinstance(first, bytes):
            raise AudioError(f"{name}: file object must be opened in binary mode ('rb'), "
                             f"it returned {type(first).__name__}")
        if not first:
            raise AudioError(f"{name}: empty input (0 bytes)")
        src.seek(start)
        suffix = Path(str(getattr(src, "name", ""))).suffix.lower() or None
        return src, suffix
    raise AudioError(f"{name}: load_audio expects a path, bytes or a binary file object, "
                     f"got {type(src).__name__}")


def _decode_soundfile(source: BinaryIO | str) -> tuple[np.ndarray, int]:
    """Decode with libsndfile to mono float32 ``(samples,)`` and its sample rate."""
    import soundfile

    with soundfile.SoundFile(source) as audio_file:
        sample_rate = audio_file.samplerate
        data = audio_file.read(dtype="float32", always_2d=True)  # (samples, channels)
    if data.shape[1] == 1:
        return np.ascontiguousarray(data[:, 0]), sample_rate
    return data.mean(axis=1, dtype=np.float32), sample_rate


def _decode_pyav(source: BinaryIO | str) -> tuple[np.ndarray, int]:
    """Decode the first audio stream with PyAV to mono float32 ``(samples,)`` and its sample rate."""
    import av

    with av.open(source, mode="r") as container:
        if not container.streams.audio:
            raise AudioError("no audio stream")
        stream = container.streams.audio[0]
        # Planar float32, same channels and rate: channel averaging is done here, not by FFmpeg's
        # down-mixing matrix (which weights channels differently).
        converter = av.AudioResampler(format="fltp")
        pieces: list[np.ndarray] = []
        sample_rate = stream.codec_context.sample_rate or stream.rate
        for frame in container.decode(stream):
            sample_rate = frame.sample_rate or sample_rate
            for converted in converter.resample(frame):
                planes = converted.to_ndarray()  # (channels, samples) float32
                pieces.append(planes[0].copy() if planes.shape[0] == 1 else planes.mean(axis=0, dtype=np.float32))
        for converted in converter.resample(None):
            planes = converted.to_ndarray()
            pieces.append(planes[0].copy() if planes.shape[0] == 1 else planes.mean(axis=0, dtype=np.float32))
    if not sample_rate:
        raise AudioError("the audio stream has no sample rate")
    data = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    return data.astype(np.float32, copy=False), int(sample_rate)


def _decode(source: BinaryIO | str, suffix: str | None, name: str) -> tuple[np.ndarray, int]:
    """Try the decoder for ``suffix`` first, then the other; raise one AudioError naming both failures."""
    import av
    import soundfile

    soundfile_first = suffix is None or suffix in SOUNDFILE_SUFFIXES
    decoders = [("libsndfile", _decode_soundfile), ("PyAV", _decode_pyav)]
    if not soundfile_first:
        decoders.reverse()
    failures: list[str] = []
    for decoder_name, decoder in decoders:
        if not isinstance(source, str):
            source.seek(0)
        try:
            return decoder(source)
        except AudioError as error:
            failures.append(f"{decoder_name}: {error}")
        except (soundfile.LibsndfileError, av.error.FFmpegError, RuntimeError, ValueError, OSError,
                EOFError) as error:
            detail = str(error).replace(repr(source), name).strip() or type(error).__name__
            failures.append(f"{decoder_name}: {detail}")
    raise AudioError(f"{name}: cannot decode audio: unknown or unsupported format, or a corrupt file "
                     f"({'; '.join(failures)})")


def resample(waveform: np.ndarray | torch.Tensor, orig_rate: int, target_rate: int) -> torch.Tensor:
    """Resample a mono waveform ``(samples,)`` with soxr (high quality); returns float32 ``(samples',)``.

    The output has ``round(samples * target_rate / orig_rate)`` samples.
    """
    import soxr

    if orig_rate <= 0 or target_rate <= 0:
        raise ConfigError(f"sample rates must be positive, got {orig_rate} -> {target_rate}")
    device = waveform.device if isinstance(waveform, torch.Tensor) else torch.device("cpu")
    array = waveform.detach().cpu().numpy() if isinstance(waveform, torch.Tensor) else np.asarray(waveform)
    array = np.ascontiguousarray(array, dtype=np.float32)
    if orig_rate != target_rate:
        array = soxr.resample(array, orig_rate, target_rate, quality="HQ")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)


def load_audio(src: str | os.PathLike | bytes | BinaryIO, sample_rate: int = 16000) -> torch.Tensor:
    """Decode an audio file to a mono float32 waveform ``(samples,)`` at ``sample_rate``.

    Args:
        src: a path, the file's bytes, or a binary file object (e.g. ``open(path, "rb")``).
        sample_rate: output rate in Hz (16 000 for DASS/AST); other rates are converted with soxr.

    Raises:
        AudioError: missing, empty, corrupt or unsupported file; no samples; shorter than one 25 ms
            frame after resampling; NaN/infinite samples; ``src`` of a wrong type.
    """
    name = _describe(src)
    if not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise ConfigError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    source, suffix = _open_source(src, name)
    data, file_rate = _decode(source, suffix, name)
    if data.size == 0:
        raise AudioError(f"{name}: contains no audio samples (empty)")
    if not np.isfinite(data).all():
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise AudioError(f"{name}: contains NaN or infinite samples ({bad} of {data.size})")
    waveform = resample(data, int(file_rate), int(sample_rate))
    min_samples = int(sample_rate * MIN_DURATION_S)
    if waveform.shape[0] < min_samples:
        raise AudioError(
            f"{name}: too short: {waveform.shape[0]} samples at {sample_rate} Hz "
            f"({1000.0 * waveform.shape[0] / sample_rate:.1f} ms); need at least {min_samples} samples "
            f"(one {1000 * MIN_DURATION_S:g} ms frame)")
    return waveform


def save_audio(path: str | os.PathLike, waveform: torch.Tensor | np.ndarray, sample_rate: int = 16000,
               subtype: str | None = None) -> None:
    """Write ``waveform`` ``(samples,)`` or ``(channels, samples)`` in [-1, 1] as WAV or FLAC (by suffix).

    ``subtype`` is soundfile's (default 16-bit PCM; ``"FLOAT"`` keeps WAV samples exact). The file is
    written to a temporary name first and moved into place, so a crash never leaves half a file.
    """
    import soundfile

    target = Path(path)
    formats = {".wav": "WAV", ".flac": "FLAC"}
    file_format = formats.get(target.suffix.lower())
    if file_format is None:
        raise AudioError(f"{target}: cannot save audio with suffix {target.suffix!r}; use .wav or .flac")
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().numpy()
    if not isinstance(waveform, np.ndarray) or not np.issubdtype(waveform.dtype, np.floating):
        raise AudioError(f"{target}: save_audio expects a float tensor/array in [-1, 1], "
                         f"got {getattr(waveform, 'dtype', type(waveform).__name__)}")
    if waveform.ndim not in (1, 2) or waveform.size == 0:
        raise AudioError(f"{target}: save_audio expects shape (samples,) or (channels, samples), "
                         f"got {waveform.shape}")
    if not np.isfinite(waveform).all():
        raise AudioError(f"{target}: waveform contains NaN or infinite samples")
    frames = waveform.T if waveform.ndim == 2 else waveform  # soundfile wants (samples, channels)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    try:
        soundfile.write(temporary, frames, int(sample_rate), subtype=subtype, format=file_format)
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


__all__ = ["load_audio", "resample", "save_audio", "SOUNDFILE_SUFFIXES"]
