"""kaldi_fbank against independent references (kaldi-native-fbank, transformers' numpy path, a float64
loop), the AST padding/normalisation numbers, batching, chunking, gradients and bad inputs."""

from __future__ import annotations

import functools
import math

import kaldi_native_fbank as knf
import numpy as np
import pytest
import torch
from transformers.models.audio_spectrogram_transformer import (
    feature_extraction_audio_spectrogram_transformer as hf_ast_features)

from dass.audio import resample, save_audio
from dass.errors import AudioError, ConfigError
from dass.features import (AUDIOSET_MEAN, AUDIOSET_STD, FeatureExtractor, kaldi_fbank, mel_filterbank, normalize,
                           num_frames)

PADDED_VALUE = (0 + 4.2677393) / (2 * 4.5689974)


# ----------------------------------------------------------------------------------------------- signals
def white_noise(sample_rate: int, seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(sample_rate * seconds))).astype(np.float32)


def chirp(sample_rate: int, seconds: float = 1.5) -> np.ndarray:
    """Exponential sweep from 50 Hz to 0.45 * sample_rate."""
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    f0, f1 = 50.0, 0.45 * sample_rate
    k = math.log(f1 / f0) / seconds
    phase = 2 * math.pi * f0 * (np.exp(k * t) - 1) / k
    return (0.5 * np.sin(phase)).astype(np.float32)


def music_like(sample_rate: int, seconds: float = 1.5, seed: int = 1) -> np.ndarray:
    """Notes with 6 harmonics and decaying envelopes over a quiet noise floor."""
    rng = np.random.default_rng(seed)
    n = int(sample_rate * seconds)
    out = 1e-3 * rng.standard_normal(n)
    note_length = int(0.25 * sample_rate)
    t = np.arange(note_length) / sample_rate
    for start in range(0, n - note_length + 1, note_length):
        f0 = 110.0 * 2 ** (rng.integers(0, 36) / 12)
        note = sum(np.sin(2 * math.pi * h * f0 * t) / h for h in range(1, 7) if h * f0 < sample_rate / 2)
        out[start:start + note_length] += 0.3 * np.exp(-6 * t) * note
    return out.astype(np.float32)


def speech_like(sample_rate: int, seconds: float = 1.5) -> np.ndarray:
    """A 120 Hz pulse train through two moving formant resonators (a crude vowel sequence)."""
    n = int(sample_rate * seconds)
    source = np.zeros(n)
    source[:: sample_rate // 120] = 1.0
    out = np.zeros(n)
    for formant_start, formant_end in ((700.0, 300.0), (1200.0, 2300.0)):
        formants = np.linspace(formant_start, formant_end, n)
        r = math.exp(-math.pi * 100.0 / sample_rate)  # 100 Hz bandwidth
        y1 = y2 = 0.0
        for i in range(n):  # two-pole resonator with a slowly moving centre frequency
            a1 = 2 * r * math.cos(2 * math.pi * formants[i] / sample_rate)
            y = source[i] + a1 * y1 - r * r * y2
            out[i] += y
            y2, y1 = y1, y
    out += 1e-3 * np.random.default_rng(2).standard_normal(n)
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def at_16k(signal: np.ndarray, rate: int) -> np.ndarray:
    return resample(signal, rate, 16000).numpy()


SIGNALS = {
    "noise": lambda: white_noise(16000),
    "chirp": lambda: chirp(16000),
    "music": lambda: music_like(16000),
    "speech": lambda: speech_like(16000, seconds=1.0),
    "music_44k1": lambda: at_16k(music_like(44100), 44100),
    "chirp_44k1": lambda: at_16k(chirp(44100), 44100),
    "speech_8k": lambda: at_16k(speech_like(8000, seconds=1.0), 8000),
    "noise_8k": lambda: at_16k(white_noise(8000, seed=3), 8000),
}


@functools.lru_cache(maxsize=None)
def signal_16k(name: str) -> np.ndarray:
    """The named test signal at 16 kHz (computed once per session)."""
    return SIGNALS[name]()


# ------------------------------------------------------------------------------------------- references
def knf_fbank(signal: np.ndarray, num_mel_bins: int) -> np.ndarray:
    """kaldi-native-fbank (C++, Kaldi-exact) with SPEC §1's options."""
    options = knf.FbankOptions()
    options.frame_opts.samp_freq = 16000
    options.frame_opts.dither = 0.0
    options.frame_opts.window_type = "hanning"
    options.frame_opts.snip_edges = True
    options.frame_opts.preemph_coeff = 0.97
    options.frame_opts.remove_dc_offset = True
    options.mel_opts.num_bins = num_mel_bins
    options.mel_opts.low_freq = 20.0
    options.mel_opts.high_freq = 0.0
    options.use_energy = False
    options.htk_compat = True
    options.use_power = True
    options.use_log_fbank = True
    extractor = knf.OnlineFbank(options)
    extractor.accept_waveform(16000, signal.tolist())
    extractor.input_finished()
    return np.stack([np.asarray(extractor.get_frame(i)) for i in range(extractor.num_frames_ready)])


def hf_ast_extractor(monkeypatch: pytest.MonkeyPatch, **kwargs):
    """transformers' ASTFeatureExtractor forced onto its numpy path (the torchaudio one is switched off)."""
    module = hf_ast_features
    monkeypatch.setattr(module, "is_speech_available", lambda: False)
    monkeypatch.delattr(module, "ta_kaldi", raising=False)  # any torchaudio call would now fail
    with pytest.warns(UserWarning, match="mel filter has all zero values"):
        extractor = module.ASTFeatureExtractor(**kwargs)
    assert extractor.mel_filters.shape == (257, extractor.num_mel_bins)  # only the numpy path builds these
    return extractor


@functools.lru_cache(maxsize=None)
def float64_mel_filters(num_mel_bins: int, sample_rate: int = 16000, fft_size: int = 512) -> np.ndarray:
    """Kaldi's triangular mel filters ``(bins, fft_size // 2 + 1)``, one weight at a time in float64."""

    def mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    low, high = mel(20.0), mel(sample_rate / 2)
    step = (high - low) / (num_mel_bins + 1)
    filters = np.zeros((num_mel_bins, fft_size // 2 + 1))
    for m in range(num_mel_bins):
        left, center, right = low + m * step, low + (m + 1) * step, low + (m + 2) * step
        for k in range(fft_size // 2):
            f = mel(k * sample_rate / fft_size)
            if left < f <= center:
                filters[m, k] = (f - left) / (center - left)
            elif center < f < right:
                filters[m, k] = (right - f) / (right - center)
    return filters


def float64_loop_fbank(signal: np.ndarray, num_mel_bins: int, sample_rate: int = 16000) -> np.ndarray:
    """Kaldi's recipe written out frame by frame in float64 (independent of dass.features)."""
    frame_length, shift, fft_size = 400, 160, 512
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame_length) / (frame_length - 1))
    filters = float64_mel_filters(num_mel_bins, sample_rate, fft_size)
    x = signal.astype(np.float64)
    rows = []
    for i in range(1 + (len(x) - frame_length) // shift):
        frame = x[i * shift:i * shift + frame_length].copy()
        frame -= frame.mean()
        frame = frame - 0.97 * np.concatenate([frame[:1], frame[:-1]])
        power = np.abs(np.fft.rfft(frame * window, n=fft_size)) ** 2
        rows.append(np.log(np.maximum(filters @ power, np.finfo(np.float32).eps)))
    return np.array(rows)


# ------------------------------------------------------------------------------------ reference tests
# kaldi-native-fbank works in float32: in bands ~100 dB below a frame's peak (pure tones, the empty upper
# half of an 8 kHz recording) its FFT rounding noise alone moves the log energy by up to 1e-2. dass
# computes in float64, so there it is compared with the exact float64 loop instead.
RELIABLE_LOG_ENERGY = math.log(1e-5)
PURE_TONES = {"chirp", "chirp_44k1"}


@pytest.mark.parametrize("name", list(SIGNALS))
@pytest.mark.parametrize("num_mel_bins", [64, 80])
def test_matches_kaldi_native_fbank(name: str, num_mel_bins: int) -> None:
    signal = signal_16k(name)
    reference = knf_fbank(signal, num_mel_bins)
    exact = float64_loop_fbank(signal, num_mel_bins)
    ours = kaldi_fbank(torch.from_numpy(signal), 16000, num_mel_bins).numpy()
    assert ours.shape == reference.shape == (num_frames(len(signal)), num_mel_bins)
    difference = np.abs(ours - reference)
    assert difference[reference >= RELIABLE_LOG_ENERGY].max() <= 1e-3
    # Anything beyond 1e-3 is kaldi-native-fbank's own float32 error (its distance to the exact result).
    assert np.all(difference <= 1e-3 + np.abs(reference - exact))
    if name not in PURE_TONES:  # signals with a noise floor: the plain criterion holds everywhere
        assert difference.max() <= 1e-3


@pytest.mark.parametrize("name", list(SIGNALS))
def test_matches_transformers_ast_numpy_path(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    signal = signal_16k(name)
    frames = num_frames(len(signal))
    extractor = hf_ast_extractor(monkeypatch, num_mel_bins=128, max_length=frames, do_normalize=False)
    reference = extractor(signal, sampling_rate=16000, return_tensors="np")["input_values"][0]
    ours = kaldi_fbank(torch.from_numpy(signal), 16000, 128).numpy()
    assert ours.shape == reference.shape == (frames, 128)
    assert np.abs(ours - reference).max() <= 2e-3


@pytest.mark.parametrize("name", list(SIGNALS))
def test_matches_float64_loop_reference(name: str) -> None:
    signal = signal_16k(name)
    exact = float64_loop_fbank(signal, 128)
    # Only the float32 rounding of the narrow low mel filters (kept as torchaudio has it) remains.
    assert np.abs(kaldi_fbank(torch.from_numpy(signal), 16000, 128).numpy() - exact).max() <= 3e-4
    float64_in = kaldi_fbank(torch.from_numpy(signal).double(), 16000, 128)
    assert float64_in.dtype == torch.float64
    assert np.abs(float64_in.numpy() - exact).max() <= 3e-4
    fast = np.abs(kaldi_fbank(torch.from_numpy(signal), 16000, 128, compute_dtype=torch.float32).numpy() - exact)
    assert fast[exact >= RELIABLE_LOG_ENERGY].max() <= 1e-3 and fast.max() <= 2e-2


def test_ten_seconds_give_998_frames() -> None:
    assert num_frames(160_000) == 998
    assert num_frames(399) == 0 and num_frames(400) == 1 and num_frames(559) == 1 and num_frames(560) == 2
    assert kaldi_fbank(torch.zeros(160_000)).shape == (998, 128)


def test_mel_filterbank_float32_close_to_float64() -> None:
    f32 = mel_filterbank(16000, 512, 128)
    f64 = mel_filterbank(16000, 512, 128, dtype=torch.float64)
    assert f32.shape == (257, 128) and f32.dtype == torch.float32
    assert torch.all(f64[-1] == 0)  # Nyquist bin unused, as in Kaldi
    assert (f32.double() - f64).abs().max() < 1e-4
    # 128 bins at 16 kHz: the lowest filters fall between FFT bins (why Kaldi refuses), torchaudio keeps them.
    assert int((f64.sum(0) == 0).sum()) >= 1


# -------------------------------------------------------------------------------- batching / chunking
def test_batched_equals_per_item() -> None:
    generator = torch.Generator().manual_seed(0)
    batch = 0.1 * torch.randn(3, 5123, generator=generator)
    batched = kaldi_fbank(batch, 16000, 128)
    assert batched.shape == (3, num_frames(5123), 128)
    for i in range(3):
        torch.testing.assert_close(batched[i], kaldi_fbank(batch[i], 16000, 128), atol=1e-5, rtol=0)
    centred = kaldi_fbank(batch + 0.25, 16000, 128, subtract_mean=True)
    for i in range(3):
        torch.testing.assert_close(centred[i], kaldi_fbank(batch[i] + 0.25, subtract_mean=True), atol=1e-5, rtol=0)
    torch.testing.assert_close(centred, batched, atol=1e-4, rtol=0)  # offsets cancel (per-frame DC removal too)


@pytest.mark.parametrize("chunk_frames", [1, 7, 64])
def test_chunked_equals_unchunked(chunk_frames: int) -> None:
    signal = torch.from_numpy(music_like(16000, seconds=1.37))
    whole = kaldi_fbank(signal, chunk_frames=10_000)
    torch.testing.assert_close(kaldi_fbank(signal, chunk_frames=chunk_frames), whole, atol=1e-5, rtol=0)


def test_gradient_matches_finite_differences() -> None:
    generator = torch.Generator().manual_seed(1)
    signal = (0.1 * torch.randn(400 + 160 * 3 + 37, generator=generator, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: kaldi_fbank(x, 16000, 16, chunk_frames=3), (signal,),
                                    fast_mode=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    batch = torch.from_numpy(np.stack([music_like(16000), white_noise(16000)]))
    gpu = kaldi_fbank(batch.cuda(), chunk_frames=50)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), kaldi_fbank(batch), atol=1e-3, rtol=0)


# ---------------------------------------------------------------------------------- FeatureExtractor
def test_padded_normalised_ten_second_clip() -> None:
    clip = torch.from_numpy(music_like(16000, seconds=10.0))
    values = FeatureExtractor()(clip, sampling_rate=16000, return_tensors="pt")["input_values"]
    assert values.shape == (1, 1024, 128) and values.dtype == torch.float32
    assert torch.all(values[0, 998:] == torch.tensor(PADDED_VALUE, dtype=torch.float32))
    expected = normalize(kaldi_fbank(clip, subtract_mean=True), AUDIOSET_MEAN, AUDIOSET_STD)
    torch.testing.assert_close(values[0, :998], expected, atol=1e-6, rtol=0)
    # the same as subtracting the mean from the waveform first, up to float32 rounding of the samples
    expected = normalize(kaldi_fbank(clip - clip.mean()), AUDIOSET_MEAN, AUDIOSET_STD)
    torch.testing.assert_close(values[0, :998], expected, atol=1e-4, rtol=0)


def test_matches_transformers_ast_extractor_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    signal = speech_like(16000, seconds=1.0)
    signal = signal - signal.mean()  # the Hugging Face extractor does not remove the mean itself
    reference = hf_ast_extractor(monkeypatch)(signal, sampling_rate=16000, return_tensors="np")["input_values"]
    ours = FeatureExtractor()(signal, sampling_rate=16000, return_tensors="np")["input_values"]
    assert ours.shape == reference.shape == (1, 1024, 128)
    assert np.abs(ours - reference).max() <= 2e-3 / (2 * AUDIOSET_STD)


def test_mean_is_removed_from_the_waveform() -> None:
    signal = torch.from_numpy(white_noise(16000, seconds=0.5))
    extractor = FeatureExtractor(max_length=None)
    torch.testing.assert_close(extractor(signal + 0.3)["input_values"], extractor(signal)["input_values"],
                               atol=2e-3, rtol=0)


def test_list_of_different_lengths_pads_to_longest() -> None:
    short, long = white_noise(16000, seconds=0.5), chirp(16000, seconds=1.0)
    extractor = FeatureExtractor(max_length=None, do_normalize=False)
    out = extractor([short, long], return_attention_mask=True)
    frames_short, frames_long = num_frames(len(short)), num_frames(len(long))
    assert out["input_values"].shape == (2, frames_long, 128)
    assert out["attention_mask"].tolist() == [[1] * frames_short + [0] * (frames_long - frames_short),
                                              [1] * frames_long]
    assert torch.all(out["input_values"][0, frames_short:] == 0)
    torch.testing.assert_close(out["input_values"][0, :frames_short], extractor.extract(torch.from_numpy(short)))
    torch.testing.assert_close(out["input_values"][1], extractor.extract(torch.from_numpy(long)))


def test_max_length_cuts_and_batch_tensor_input() -> None:
    batch = torch.from_numpy(np.stack([white_noise(16000, seconds=1.0), chirp(16000, seconds=1.0)]))
    full = FeatureExtractor(max_length=None)(batch)["input_values"]
    cut = FeatureExtractor(max_length=50)(batch)["input_values"]
    assert full.shape == (2, 98, 128) and cut.shape == (2, 50, 128)
    torch.testing.assert_close(cut, full[:, :50])


def test_other_sampling_rate_is_resampled() -> None:
    signal = music_like(44100, seconds=1.0)
    extractor = FeatureExtractor(max_length=None)
    out = extractor(signal, sampling_rate=44100, return_tensors="np")["input_values"]
    expected = extractor(resample(signal, 44100, 16000), sampling_rate=16000)["input_values"].numpy()
    assert out.shape == (1, 98, 128) and isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_silence_is_valid_and_finite() -> None:
    values = FeatureExtractor(max_length=None)(torch.zeros(16000))["input_values"]
    expected = (math.log(np.finfo(np.float32).eps) - AUDIOSET_MEAN) / (2 * AUDIOSET_STD)
    assert torch.isfinite(values).all()
    torch.testing.assert_close(values, torch.full((1, 98, 128), expected), atol=1e-6, rtol=0)


def test_from_file(tmp_path) -> None:
    signal = chirp(16000, seconds=1.0)
    path = tmp_path / "chirp.wav"
    save_audio(path, signal, 16000, subtype="FLOAT")
    extractor = FeatureExtractor()
    torch.testing.assert_close(extractor.from_file(path), extractor(signal)["input_values"])


# -------------------------------------------------------------------------------------------- errors
def test_kaldi_fbank_bad_inputs() -> None:
    with pytest.raises(AudioError, match=r"audio too short: 399 samples at 16000 Hz, need at least 400 "
                                         r"\(one 25 ms frame\)"):
        kaldi_fbank(torch.zeros(399))
    with pytest.raises(AudioError, match="waveform contains NaN or infinite samples"):
        kaldi_fbank(torch.tensor([0.0, float("nan")] * 300))
    with pytest.raises(AudioError, match="waveform contains NaN or infinite samples"):
        kaldi_fbank(torch.tensor([0.0, float("inf")] * 300))
    with pytest.raises(AudioError, match=r"expects float samples in \[-1, 1\], got dtype torch.int16"):
        kaldi_fbank(torch.zeros(1000, dtype=torch.int16))
    with pytest.raises(AudioError, match=r"expects shape \(samples,\) or \(batch, samples\), got \(1, 2, 800\)"):
        kaldi_fbank(torch.zeros(1, 2, 800))
    with pytest.raises(AudioError, match="expects a float tensor .* got str"):
        kaldi_fbank("audio.wav")
    with pytest.raises(ConfigError, match="num_mel_bins must be >= 1, got 0"):
        kaldi_fbank(torch.zeros(800), num_mel_bins=0)
    with pytest.raises(ConfigError, match=r"low_freq < high_freq <= Nyquist \(8000 Hz\)"):
        kaldi_fbank(torch.zeros(800), low_freq=9000.0)


def test_feature_extractor_bad_inputs() -> None:
    extractor = FeatureExtractor()
    with pytest.raises(AudioError, match=r"waveform: expected float samples in \[-1, 1\], got dtype torch.int16"):
        extractor(np.zeros(1600, dtype=np.int16))
    with pytest.raises(AudioError, match="waveform 1: expected a float tensor, numpy array or list of floats, "
                                         "got str"):
        extractor([np.zeros(1600, dtype=np.float32), "b.wav"])
    with pytest.raises(AudioError, match=r"waveform 0: expected shape \(samples,\), got \(2, 1600\)"):
        extractor([np.zeros((2, 1600), dtype=np.float32)])
    with pytest.raises(AudioError, match="audio too short: 100 samples"):
        extractor(np.zeros(100, dtype=np.float32))
    with pytest.raises(ConfigError, match="return_tensors must be 'pt' or 'np', got 'tf'"):
        extractor(np.zeros(1600, dtype=np.float32), return_tensors="tf")
    with pytest.raises(ConfigError, match="max_length must be a positive number of frames or None, got 0"):
        FeatureExtractor(max_length=0)
