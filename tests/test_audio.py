"""load_audio / save_audio: formats, inputs, channel averaging, resampling and every bad input."""

from __future__ import annotations

import io
import math

import av
import numpy as np
import pytest
import soundfile
import torch

from dass.audio import load_audio, resample, save_audio
from dass.errors import AudioError, ConfigError


def sine(frequency: float, sample_rate: int, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    return (amplitude * np.sin(2 * math.pi * frequency * t)).astype(np.float32)


def dominant_frequency(waveform: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
    return float(np.argmax(spectrum) * sample_rate / len(waveform))


def encode_with_pyav(path, samples: np.ndarray, sample_rate: int, container_format: str, codec: str) -> None:
    """Encode ``samples`` ``(channels, samples)`` float32 with PyAV itself (no ffmpeg binary)."""
    layout = "stereo" if samples.shape[0] == 2 else "mono"
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=sample_rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


# --------------------------------------------------------------------------------------- formats
@pytest.mark.parametrize("suffix, tolerance", [(".wav", 1 / 32768), (".flac", 1 / 32768), (".ogg", 0.05),
                                               (".mp3", 0.05)])
def test_soundfile_formats_from_path_bytes_and_file_object(tmp_path, suffix: str, tolerance: float) -> None:
    signal = sine(440.0, 16000)
    path = tmp_path / f"tone{suffix}"
    soundfile.write(path, signal, 16000)
    for source in (path, str(path), path.read_bytes(), open(path, "rb")):
        waveform = load_audio(source)
        if hasattr(source, "close"):
            source.close()
        assert waveform.dtype == torch.float32 and waveform.dim() == 1
        if suffix in (".wav", ".flac"):  # lossless: sample-exact up to 16-bit quantisation
            assert waveform.shape == (16000,)
            assert np.abs(waveform.numpy() - signal).max() <= tolerance
        else:  # lossy codecs may add encoder delay; the tone stays
            assert abs(waveform.shape[0] - 16000) <= 2000
            assert abs(dominant_frequency(waveform.numpy(), 16000) - 440.0) <= 2.0
            assert abs(float(waveform.abs().max()) - 0.5) <= tolerance * 4


@pytest.mark.parametrize("suffix, container_format, codec, rate", [(".m4a", "mp4", "aac", 44100),
                                                                    (".webm", "webm", "libopus", 48000)])
def test_containers_decoded_with_pyav(tmp_path, suffix: str, container_format: str, codec: str, rate: int) -> None:
    left, right = sine(440.0, rate), sine(440.0, rate, amplitude=0.3)
    path = tmp_path / f"tone{suffix}"
    encode_with_pyav(path, np.stack([left, right]), rate, container_format, codec)
    with pytest.raises(soundfile.LibsndfileError):  # libsndfile cannot read it: this really is PyAV's job
        soundfile.info(str(path))
    for source in (path, path.read_bytes()):  # bytes: libsndfile is tried first, PyAV is the fallback
        waveform = load_audio(source).numpy()
        assert abs(waveform.shape[0] - 16000) <= 1200  # codec priming / padding, at most ~70 ms
        assert abs(dominant_frequency(waveform, 16000) - 440.0) <= 2.0
        steady = waveform[4000:12000]
        assert abs(np.abs(steady).max() - 0.4) <= 0.03  # mean of the 0.5 and 0.3 channels


def test_stereo_channels_are_averaged(tmp_path) -> None:
    left, right = sine(300.0, 16000), sine(1100.0, 16000, amplitude=0.25)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path).numpy(), (left + right) / 2, atol=1e-7)


def test_resampling_44k1_to_16k_keeps_length_and_frequency(tmp_path) -> None:
    path = tmp_path / "tone44k1.wav"
    soundfile.write(path, sine(1000.0, 44100, seconds=2.0), 44100, subtype="FLOAT")
    waveform = load_audio(path).numpy()
    assert waveform.shape == (32000,)
    assert dominant_frequency(waveform, 16000) == pytest.approx(1000.0, abs=0.5)
    assert np.abs(waveform[1000:-1000]).max() == pytest.approx(0.5, abs=5e-3)
    assert load_audio(path, sample_rate=22050).shape == (44100,)


def test_resampling_8k_doubles_the_length() -> None:
    upsampled = resample(sine(440.0, 8000), 8000, 16000)
    assert upsampled.shape == (16000,) and upsampled.dtype == torch.float32
    assert dominant_frequency(upsampled.numpy(), 16000) == pytest.approx(440.0, abs=0.5)


def test_silent_audio_is_valid(tmp_path) -> None:
    path = tmp_path / "silence.flac"
    soundfile.write(path, np.zeros(8000, dtype=np.float32), 16000)
    waveform = load_audio(path)
    assert waveform.shape == (8000,) and torch.all(waveform == 0)


def test_save_audio_round_trip_is_atomic(tmp_path) -> None:
    signal = sine(440.0, 16000)
    save_audio(tmp_path / "exact.wav", torch.from_numpy(signal), 16000, subtype="FLOAT")
    assert torch.equal(load_audio(tmp_path / "exact.wav"), torch.from_numpy(signal))
    save_audio(tmp_path / "sub" / "pcm.flac", np.stack([signal, signal]), 16000)
    assert soundfile.info(str(tmp_path / "sub" / "pcm.flac")).channels == 2
    assert np.abs(load_audio(tmp_path / "sub" / "pcm.flac").numpy() - signal).max() <= 1 / 32768
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["exact.wav", "pcm.flac"]


# ------------------------------------------------------------------------------------ bad inputs
def write_wav(path, samples: np.ndarray, sample_rate: int = 16000, subtype: str = "FLOAT"):
    soundfile.write(path, samples, sample_rate, subtype=subtype)
    return path


def test_missing_file(tmp_path) -> None:
    with pytest.raises(AudioError, match=r"nothere\.wav: no such file$"):
        load_audio(tmp_path / "nothere.wav")


def test_directory(tmp_path) -> None:
    with pytest.raises(AudioError, match=r": is a directory, not an audio file$"):
        load_audio(tmp_path)


def test_empty_file_and_empty_bytes(tmp_path) -> None:
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav: empty file \(0 bytes\)$"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioError, match=r"^<bytes \(0 bytes\)>: empty input \(0 bytes\)$"):
        load_audio(b"")
    with pytest.raises(AudioError, match=r"^<BytesIO object>: empty input \(0 bytes\)$"):
        load_audio(io.BytesIO())


def test_zero_samples(tmp_path) -> None:
    path = write_wav(tmp_path / "nosamples.wav", np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioError, match=r"nosamples\.wav: contains no audio samples \(empty\)$"):
        load_audio(path)


def test_shorter_than_one_frame(tmp_path) -> None:
    path = write_wav(tmp_path / "short.wav", np.zeros(399, dtype=np.float32))
    with pytest.raises(AudioError, match=r"short\.wav: too short: 399 samples at 16000 Hz \(24\.9 ms\); "
                                         r"need at least 400 samples \(one 25 ms frame\)$"):
        load_audio(path)
    assert load_audio(write_wav(tmp_path / "ok.wav", np.zeros(400, dtype=np.float32))).shape == (400,)
    # 1000 samples at 44.1 kHz are 363 at 16 kHz: too short after resampling.
    path = write_wav(tmp_path / "short44k1.wav", np.zeros(1000, dtype=np.float32), 44100)
    with pytest.raises(AudioError, match=r"short44k1\.wav: too short: 363 samples at 16000 Hz"):
        load_audio(path)


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_samples(tmp_path, bad_value: float) -> None:
    samples = np.zeros(1600, dtype=np.float32)
    samples[[10, 20]] = bad_value
    path = write_wav(tmp_path / "bad.wav", samples)
    with pytest.raises(AudioError, match=r"bad\.wav: contains NaN or infinite samples \(2 of 1600\)$"):
        load_audio(path)
    with pytest.raises(AudioError, match=r"^<bytes \(\d+ bytes\)>: contains NaN or infinite samples"):
        load_audio(path.read_bytes())


@pytest.mark.parametrize("source, type_name", [(torch.zeros(16000), "Tensor"), (3, "int"),
                                               (np.zeros(16000, dtype=np.float32), "ndarray"), (None, "NoneType")])
def test_wrong_source_type(source, type_name: str) -> None:
    with pytest.raises(AudioError, match=rf"load_audio expects a path, bytes or a binary file object, "
                                         rf"got {type_name}$"):
        load_audio(source)


def test_text_mode_file_object(tmp_path) -> None:
    path = write_wav(tmp_path / "tone.wav", sine(440.0, 16000))
    with open(path, encoding="latin-1") as text_file:
        with pytest.raises(AudioError, match=r"tone\.wav: file object must be opened in binary mode \('rb'\)"):
            load_audio(text_file)


def test_unknown_format(tmp_path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not audio samples\n" * 20)
    with pytest.raises(AudioError, match=r"notes\.txt: cannot decode audio: unknown or unsupported format, or a "
                                         r"corrupt file \(PyAV: .*; libsndfile: .*Format not recognised"):
        load_audio(path)
    with pytest.raises(AudioError, match=r"^<bytes \(\d+ bytes\)>: cannot decode audio: unknown or unsupported"):
        load_audio(path.read_bytes())


def test_corrupt_file(tmp_path) -> None:
    path = write_wav(tmp_path / "tone.wav", sine(440.0, 16000), subtype="PCM_16")
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(path.read_bytes()[:30])  # header cut before the data chunk
    with pytest.raises(AudioError, match=r"truncated\.wav: cannot decode audio: unknown or unsupported format, "
                                         r"or a corrupt file \(libsndfile: .*; PyAV: .*\)$"):
        load_audio(truncated)


def test_bad_sample_rate() -> None:
    with pytest.raises(ConfigError, match=r"sample_rate must be a positive integer \(Hz\), got 0"):
        load_audio(b"RIFF", sample_rate=0)
    with pytest.raises(ConfigError, match=r"sample_rate must be a positive integer \(Hz\), got 16000\.0"):
        load_audio(b"RIFF", sample_rate=16000.0)


def test_save_audio_bad_inputs(tmp_path) -> None:
    with pytest.raises(AudioError, match=r"out\.mp3: cannot save audio with suffix '\.mp3'; use \.wav or \.flac"):
        save_audio(tmp_path / "out.mp3", np.zeros(100, dtype=np.float32))
    with pytest.raises(AudioError, match=r"out\.wav: save_audio expects a float tensor/array in \[-1, 1\], "
                                         r"got int16"):
        save_audio(tmp_path / "out.wav", np.zeros(100, dtype=np.int16))
    with pytest.raises(AudioError, match=r"out\.wav: waveform contains NaN or infinite samples"):
        save_audio(tmp_path / "out.wav", np.full(100, np.nan, dtype=np.float32))
    assert not list(tmp_path.iterdir())
