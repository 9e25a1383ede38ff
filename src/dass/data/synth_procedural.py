"""Procedural (numpy-only) sound sources for ``dass synth``: tones, signals and noises.

Every generator has the signature ``generator(rng, num_samples) -> (num_samples,) float32`` at
:data:`SAMPLE_RATE` and uses only ``rng`` for randomness, so the same generator state gives the same
waveform. Levels are arbitrary: the mixer normalises every event.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

SAMPLE_RATE = 16000

ProceduralGenerator = Callable[[np.random.Generator, int], np.ndarray]


def _tone(freqs_hz: np.ndarray | float, num_samples: int, phase: float = 0.0) -> np.ndarray:
    """Sine with (possibly time-varying) frequency ``freqs_hz`` (scalar or ``(num_samples,)``), float64."""
    freqs = np.broadcast_to(np.asarray(freqs_hz, dtype=np.float64), (num_samples,))
    return np.sin(phase + 2 * np.pi * np.cumsum(freqs) / SAMPLE_RATE)


def _gate(num_samples: int, on_s: float, off_s: float, start_s: float = 0.0, ramp_s: float = 0.005) -> np.ndarray:
    """0/1 on-off cadence ``(num_samples,)`` with short linear ramps (no clicks)."""
    t = np.arange(num_samples) / SAMPLE_RATE - start_s
    phase = np.mod(t, on_s + off_s)
    gate = ((phase < on_s) & (t >= 0)).astype(np.float64)
    return _smooth_edges(gate, ramp_s)


def _smooth_edges(gate: np.ndarray, ramp_s: float) -> np.ndarray:
    """Smooth a 0/1 gate with a moving average of ``ramp_s`` seconds."""
    width = max(1, min(len(gate), int(ramp_s * SAMPLE_RATE)))  # a gate shorter than the ramp keeps its length
    kernel = np.ones(width) / width
    return np.convolve(gate, kernel, mode="same")


def _decaying_bursts(num_samples: int, onsets: np.ndarray, burst: np.ndarray) -> np.ndarray:
    """Place copies of ``burst`` at sample positions ``onsets`` (truncated at the end)."""
    out = np.zeros(num_samples)
    for onset in onsets:
        end = min(num_samples, onset + len(burst))
        out[onset:end] += burst[: end - onset]
    return out


def _colored_noise(rng: np.random.Generator, num_samples: int, exponent: float) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.fft.rfftfreq(num_samples, 1 / SAMPLE_RATE)
    freqs[0] = freqs[1] if num_samples > 1 else 1.0
    spectrum *= freqs ** (-exponent / 2)
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n=num_samples)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def sine_wave(rng: np.random.Generator, n: int) -> np.ndarray:
    """One to three steady sine tones in sequence, 80 Hz - 4 kHz."""
    freqs = np.zeros(n)
    cuts = np.sort(rng.integers(0, n, size=rng.integers(0, 3)))
    for start, end in zip(np.r_[0, cuts], np.r_[cuts, n]):
        freqs[start:end] = np.exp(rng.uniform(np.log(80), np.log(4000)))
    return _tone(freqs, n)  # continuous phase: no clicks where the frequency changes


def white_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Gaussian white noise."""
    return rng.standard_normal(n)


def pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Gaussian 1/f noise."""
    return _colored_noise(rng, n, 1.0)


def chirp_tone(rng: np.random.Generator, n: int) -> np.ndarray:
    """Repeated linear or exponential frequency sweeps between 100 Hz and 7 kHz, up or down."""
    sweep_len = int(rng.uniform(0.3, 3.0) * SAMPLE_RATE)
    gap = int(rng.uniform(0.0, 0.5) * SAMPLE_RATE)
    f_lo, f_hi = np.sort(np.exp(rng.uniform(np.log(100), np.log(7000), size=2)))
    f_hi = max(f_hi, 1.5 * f_lo)
    x = np.linspace(0, 1, sweep_len, endpoint=False)
    freqs = f_lo * (f_hi / f_lo) ** x if rng.random() < 0.5 else f_lo + (f_hi - f_lo) * x
    if rng.random() < 0.5:
        freqs = freqs[::-1]
    one = _tone(freqs, sweep_len) * _smooth_edges(np.ones(sweep_len), 0.005)
    period = np.r_[one, np.zeros(gap)]
    return np.resize(period, n)


def beep(rng: np.random.Generator, n: int) -> np.ndarray:
    """Short tone bursts (0.06-0.4 s) at 500 Hz - 3.5 kHz, sine or square-ish, in a regular or random rhythm."""
    freq = float(rng.uniform(500, 3500))
    on_s = float(rng.uniform(0.06, 0.4))
    tone = _tone(freq, n)
    if rng.random() < 0.4:  # buzzy: add odd harmonics
        tone = tone + _tone(3 * freq, n) / 3 + _tone(5 * freq, n) / 5
    if rng.random() < 0.5:
        gate = _gate(n, on_s, float(rng.uniform(0.08, 1.0)))
    else:
        onsets = np.cumsum(rng.uniform(on_s + 0.05, on_s + 1.2, size=64))
        gate = np.zeros(n)
        for onset in (onsets * SAMPLE_RATE).astype(int):
            gate[onset: onset + int(on_s * SAMPLE_RATE)] = 1.0
        gate[: int(0.01 * SAMPLE_RATE)] = 1.0  # always audible from the start of the event
        gate = _smooth_edges(gate, 0.005)
    return tone * gate


def siren(rng: np.random.Generator, n: int) -> np.ndarray:
    """Emergency siren: wail (slow sweep), yelp (fast sweep) or hi-lo (two alternating pitches)."""
    t = np.arange(n) / SAMPLE_RATE
    f_lo = float(rng.uniform(450, 800))
    f_hi = f_lo * float(rng.uniform(1.5, 2.2))
    kind = rng.integers(3)
    if kind == 0:  # wail
        period = rng.uniform(2.0, 6.0)
        freqs = f_lo + (f_hi - f_lo) * (0.5 - 0.5 * np.cos(2 * np.pi * t / period))
    elif kind == 1:  # yelp
        period = rng.uniform(0.15, 0.4)
        freqs = f_lo + (f_hi - f_lo) * np.mod(t / period, 1.0)
    else:  # hi-lo
        period = rng.uniform(0.8, 1.6)
        freqs = np.where(np.mod(t / period, 1.0) < 0.5, f_hi * 0.85, f_lo * 1.1)
    harmonics = rng.uniform(0.1, 0.6, size=3)
    out = _tone(freqs, n)
    for k, amp in enumerate(harmonics, start=2):
        out += amp * _tone(k * freqs, n)
    return out


# Telephone tones of a few national plans: (frequencies Hz, busy cadence on/off s).
_TELEPHONE_PLANS = (
    ((350.0, 440.0), (480.0, 620.0), (0.5, 0.5)),  # North America
    ((425.0,), (425.0,), (0.5, 0.5)),  # much of Europe
    ((350.0, 450.0), (400.0,), (0.375, 0.375)),  # UK
    ((425.0,), (425.0,), (0.25, 0.25)),  # some European networks
)


def dial_tone(rng: np.random.Generator, n: int) -> np.ndarray:
    """Continuous dial tone (350+440 Hz, 425 Hz or 350+450 Hz)."""
    freqs = _TELEPHONE_PLANS[rng.integers(len(_TELEPHONE_PLANS))][0]
    return sum(_tone(f, n, rng.uniform(0, 2 * np.pi)) for f in freqs)


def busy_signal(rng: np.random.Generator, n: int) -> np.ndarray:
    """Busy signal: telephone tone switched on and off in the plan's cadence."""
    _, freqs, (on_s, off_s) = _TELEPHONE_PLANS[rng.integers(len(_TELEPHONE_PLANS))]
    tone = sum(_tone(f, n, rng.uniform(0, 2 * np.pi)) for f in freqs)
    return tone * _gate(n, on_s, off_s)


_DTMF_LOW = (697.0, 770.0, 852.0, 941.0)
_DTMF_HIGH = (1209.0, 1336.0, 1477.0)


def dtmf(rng: np.random.Generator, n: int) -> np.ndarray:
    """Touch-tone dialling: 70-150 ms digit tones (one low + one high frequency), grouped digits."""
    out = np.zeros(n)
    position = 0
    while position < n:
        for _ in range(rng.integers(2, 5)):  # a group of digits
            length = int(rng.uniform(0.07, 0.15) * SAMPLE_RATE)
            end = min(n, position + length)
            pair = _tone(_DTMF_LOW[rng.integers(4)], end - position) + _tone(_DTMF_HIGH[rng.integers(3)], end - position)
            out[position:end] = pair * _smooth_edges(np.ones(end - position), 0.004)
            position = end + int(rng.uniform(0.05, 0.15) * SAMPLE_RATE)
            if position >= n:
                break
        position += int(rng.uniform(0.2, 0.8) * SAMPLE_RATE)
    return out


def mains_hum(rng: np.random.Generator, n: int) -> np.ndarray:
    """Mains hum: 50 or 60 Hz and its harmonics (odd ones stronger), with a little noise."""
    f0 = 50.0 if rng.random() < 0.5 else 60.0
    out = np.zeros(n)
    for k in range(1, 11):
        amp = rng.uniform(0.2, 1.0) / k ** rng.uniform(0.3, 1.0) * (1.0 if k % 2 else rng.uniform(0.1, 0.6))
        out += amp * _tone(k * f0, n, rng.uniform(0, 2 * np.pi))
    return out + 0.01 * rng.standard_normal(n)


def _resonant_click(rng: np.random.Generator, freq: float, decay_s: float) -> np.ndarray:
    """A short click: a decaying resonance at ``freq`` plus a noise transient."""
    length = int(5 * decay_s * SAMPLE_RATE) + 1
    t = np.arange(length) / SAMPLE_RATE
    envelope = np.exp(-t / decay_s)
    return envelope * (np.sin(2 * np.pi * freq * t) + 0.5 * rng.standard_normal(length))


def clicking(rng: np.random.Generator, n: int) -> np.ndarray:
    """Clicks (1-4 ms resonant transients at 1.5-6 kHz), 2-15 per second, regular or irregular."""
    rate = rng.uniform(2, 15)
    if rng.random() < 0.5:
        onsets = np.arange(rng.uniform(0, 0.05), n / SAMPLE_RATE, 1 / rate)
    else:
        onsets = np.cumsum(rng.exponential(1 / rate, size=int(rate * n / SAMPLE_RATE) + 2))
        onsets = np.r_[0.0, onsets]
    onsets = (onsets[onsets < n / SAMPLE_RATE] * SAMPLE_RATE).astype(int)
    click = _resonant_click(rng, rng.uniform(1500, 6000), rng.uniform(0.001, 0.004))
    return _decaying_bursts(n, onsets, click)


def tick_tock(rng: np.random.Generator, n: int) -> np.ndarray:
    """Clock tick-tock: alternating higher 'tick' and lower 'tock' wooden clicks, 0.4-1 s apart."""
    period = rng.uniform(0.4, 1.0)
    tick = _resonant_click(rng, rng.uniform(2500, 4000), 0.006)
    tock = _resonant_click(rng, rng.uniform(1200, 2200), 0.008)
    onsets = (np.arange(rng.uniform(0, 0.1), n / SAMPLE_RATE, period) * SAMPLE_RATE).astype(int)
    return _decaying_bursts(n, onsets[0::2], tick) + _decaying_bursts(n, onsets[1::2], tock)


# Partial ratios of a struck bell (hum, prime, minor third, fifth, nominal, ...).
_BELL_PARTIALS = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.5, 2.67, 3.0, 4.0, 5.33])


def bell(rng: np.random.Generator, n: int) -> np.ndarray:
    """Struck bell: inharmonic partials with exponential decays, struck every 0.6-4 s."""
    f0 = float(np.exp(rng.uniform(np.log(200), np.log(1200))))
    ratios = _BELL_PARTIALS * rng.uniform(0.98, 1.02, size=len(_BELL_PARTIALS))
    ratios = ratios[ratios * f0 < 7500]
    amps = rng.uniform(0.3, 1.0, size=len(ratios))
    strike_len = int(rng.uniform(1.5, 4.0) * SAMPLE_RATE)
    t = np.arange(strike_len) / SAMPLE_RATE
    strike = np.zeros(strike_len)
    for ratio, amp in zip(ratios, amps):
        decay = rng.uniform(0.4, 1.5) / ratio**0.5
        strike += amp * np.exp(-t / decay) * np.sin(2 * np.pi * ratio * f0 * t)
    onsets = np.r_[0.0, np.cumsum(rng.uniform(0.6, 4.0, size=int(n / SAMPLE_RATE / 0.6) + 1))]
    onsets = (onsets[onsets < n / SAMPLE_RATE] * SAMPLE_RATE).astype(int)
    return _decaying_bursts(n, onsets, strike)


def room_tone(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unlabelled low-level background: brownish noise with a slowly varying level."""
    noise = _colored_noise(rng, n, rng.uniform(1.5, 2.0))
    t = np.arange(n) / SAMPLE_RATE
    wobble = 1.0 + 0.3 * np.sin(2 * np.pi * t / rng.uniform(3, 10) + rng.uniform(0, 2 * np.pi))
    return noise * wobble


def noise_haystack(rng: np.random.Generator, n: int) -> np.ndarray:
    """Long stationary-ish noise for NIAH haystacks: a random mix of white, pink and brown noise whose
    spectral balance drifts slowly (every 5-20 s)."""
    exponents = (0.0, 1.0, 2.0)
    layers = [_colored_noise(rng, n, e) for e in exponents]
    t = np.arange(n) / SAMPLE_RATE
    out = np.zeros(n)
    for layer in layers:
        period = rng.uniform(5, 20)
        weight = rng.uniform(0.2, 1.0) * (1 + 0.5 * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)))
        out += weight * layer
    return out


#: Procedural sources by name (the names used in :data:`dass.data.synth_sources.SOURCES`).
PROCEDURAL_GENERATORS: dict[str, ProceduralGenerator] = {
    "sine_wave": sine_wave,
    "white_noise": white_noise,
    "pink_noise": pink_noise,
    "chirp_tone": chirp_tone,
    "beep": beep,
    "siren": siren,
    "dial_tone": dial_tone,
    "busy_signal": busy_signal,
    "dtmf": dtmf,
    "mains_hum": mains_hum,
    "clicking": clicking,
    "tick_tock": tick_tock,
    "bell": bell,
}
