"""Sampled instruments for ``dass synth``: random MIDI phrases rendered by the FluidSynth CLI.

* :func:`write_midi` is a minimal Standard MIDI File (format 0) writer; 1 tick = 1 ms.
* :func:`make_phrase` draws a phrase (melody, chords, arpeggios, bass line, drum groove or a GM
  sound-effect pattern) for an :class:`Instrument`.
* :func:`render_segments` renders many phrases with one ``fluidsynth`` process (start-up, mostly
  loading the 148 MB soundfont, costs more than rendering a clip): phrases are laid out one after the
  other with silent gaps (every voice has died away before the next phrase) and sliced out again.
  FluidSynth is deterministic for a given MIDI file, but a phrase's samples differ slightly (~1e-3)
  with its position in the file (sub-block event timing), so a reproducible build must render the same
  sequence of phrases together (:mod:`dass.data.synth` uses fixed chunks of clips).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from ..errors import DassError

SOUNDFONT_PATH = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
#: FluidSynth renders at this rate; phrases are resampled to the corpus rate with soxr.
RENDER_RATE = 32000
TICKS_PER_QUARTER = 500
TEMPO_US_PER_QUARTER = 500_000  # with 500 ticks per quarter: 1 tick = 1 ms
GAP_MS = 4000  # silence between phrases: every release tail has ended by then
GRID_MS = 4  # phrase starts are multiples of this (64 samples at 16 kHz, 128 at 32 kHz)
DRUM_CHANNEL = 9


@dataclass(frozen=True)
class Note:
    """A MIDI note: start and length in ms (relative to the phrase), pitch 0-127, velocity 1-127."""

    start_ms: int
    length_ms: int
    pitch: int
    velocity: int


@dataclass(frozen=True)
class Phrase:
    """Notes for one program (``drums``: a GM drum kit on channel 10), ``duration_ms`` long."""

    program: int
    notes: tuple[Note, ...]
    duration_ms: int
    drums: bool = False


@dataclass(frozen=True)
class Instrument:
    """How to play a source: GM programs to pick from, phrase style and pitch range (MIDI notes)."""

    programs: tuple[int, ...]
    style: str  # melody | chords | arpeggio | strum | bass | drums | sfx_*
    low: int = 48
    high: int = 84


def _vlq(value: int) -> bytes:
    """MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def write_midi(path: str | Path, phrases: list[tuple[int, Phrase]]) -> None:
    """Write ``(start_ms, phrase)`` pairs as a format-0 MIDI file (1 tick = 1 ms).

    Each phrase sets its program at its start and silences its channel (all notes off, all sound off,
    reset controllers) at its end.
    """
    events: list[tuple[int, int, bytes]] = []  # (tick, order, message); order keeps offs before ons
    for start_ms, phrase in phrases:
        channel = DRUM_CHANNEL if phrase.drums else 0
        events.append((start_ms, 0, bytes([0xB0 | channel, 121, 0])))
        events.append((start_ms, 1, bytes([0xC0 | channel, phrase.program])))
        events.append((start_ms, 2, bytes([0xB0 | channel, 7, 110])))
        for note in phrase.notes:
            on = start_ms + note.start_ms
            off = min(on + max(note.length_ms, 1), start_ms + phrase.duration_ms)
            if off <= on:
                continue
            events.append((on, 4, bytes([0x90 | channel, note.pitch, note.velocity])))
            events.append((off, 3, bytes([0x80 | channel, note.pitch, 0])))
        end = start_ms + phrase.duration_ms
        events.append((end, 5, bytes([0xB0 | channel, 123, 0])))  # all notes off
        events.append((end + GAP_MS // 2, 5, bytes([0xB0 | channel, 120, 0])))  # all sound off
    events.sort(key=lambda e: (e[0], e[1]))
    track = bytearray(_vlq(0) + b"\xff\x51\x03" + TEMPO_US_PER_QUARTER.to_bytes(3, "big"))
    last_tick = 0
    for tick, _, message in events:
        track += _vlq(tick - last_tick) + message
        last_tick = tick
    track += _vlq(GAP_MS) + b"\xff\x2f\x00"  # end of track after the last gap
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_QUARTER)
    Path(path).write_bytes(header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track))


def fluidsynth_available() -> str | None:
    """None when FluidSynth and the FluidR3 GM soundfont are installed, else what is missing."""
    missing = []
    if shutil.which("fluidsynth") is None:
        missing.append("the 'fluidsynth' program (Debian package fluidsynth)")
    if not SOUNDFONT_PATH.is_file():
        missing.append(f"the soundfont {SOUNDFONT_PATH} (Debian package fluid-soundfont-gm)")
    return " and ".join(missing) or None


def render_segments(phrases: list[Phrase], sample_rate: int) -> list[np.ndarray]:
    """Render ``phrases`` with one FluidSynth run; returns one mono float32 ``(duration * sample_rate,)``
    waveform per phrase (reverb and chorus off, rendered at :data:`RENDER_RATE`, resampled with soxr)."""
    if not phrases:
        return []
    layout: list[tuple[int, Phrase]] = []
    position = 0
    for phrase in phrases:
        layout.append((position, phrase))
        position += -(-(phrase.duration_ms + GAP_MS) // GRID_MS) * GRID_MS
    with tempfile.TemporaryDirectory(prefix="dass-fluidsynth-") as tmp:
        midi_path, wav_path = Path(tmp) / "phrases.mid", Path(tmp) / "phrases.wav"
        write_midi(midi_path, layout)
        command = ["fluidsynth", "-n", "-i", "-q", "-R", "0", "-C", "0", "-g", "0.4",
                   "-r", str(RENDER_RATE), "-T", "wav", "-O", "float", "-F", str(wav_path),
                   str(SOUNDFONT_PATH), str(midi_path)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not wav_path.is_file():
            raise DassError(f"fluidsynth failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")
        audio, rate = soundfile.read(str(wav_path), dtype="float32", always_2d=True)
    if rate != RENDER_RATE:
        raise DassError(f"fluidsynth wrote {rate} Hz audio, expected {RENDER_RATE} Hz")
    mono = audio.mean(axis=1)
    out = []
    for start_ms, phrase in layout:
        start = start_ms * RENDER_RATE // 1000
        length = phrase.duration_ms * RENDER_RATE // 1000
        segment = np.zeros(length, dtype=np.float32)
        piece = mono[start: start + length]
        segment[: len(piece)] = piece
        resampled = soxr.resample(segment, RENDER_RATE, sample_rate, quality="HQ").astype(np.float32)
        want = phrase.duration_ms * sample_rate // 1000
        out.append(np.pad(resampled, (0, max(0, want - len(resampled))))[:want])
    return out


# ----------------------------------------------------------------------------------------------
# Phrase generation
# ----------------------------------------------------------------------------------------------

_SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "pentatonic": (0, 2, 4, 7, 9),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
}
# GM drum kits in FluidR3 (bank 128 programs) and drum notes.
_DRUM_KITS = (0, 8, 16, 24, 25, 32, 40, 48)
_KICK, _SNARE, _CLOSED_HAT, _OPEN_HAT, _CRASH, _RIDE = 36, 38, 42, 46, 49, 51
_TOMS = (41, 43, 45, 47, 48, 50)


def _scale_notes(rng: np.random.Generator, low: int, high: int) -> np.ndarray:
    """All MIDI notes in [low, high] of a random key and scale."""
    root = int(rng.integers(12))
    steps = _SCALES[list(_SCALES)[rng.integers(len(_SCALES))]]
    notes = [p for p in range(low, high + 1) if (p - root) % 12 in steps]
    return np.array(notes)


def _beat_ms(rng: np.random.Generator) -> int:
    return int(60000 / rng.uniform(70, 150))


def _melody(rng: np.random.Generator, inst: Instrument, duration_ms: int, legato: bool) -> list[Note]:
    notes_in_key = _scale_notes(rng, inst.low, inst.high)
    beat = _beat_ms(rng)
    lengths = np.array([0.25, 0.5, 0.5, 1.0, 1.0, 1.5, 2.0]) * beat
    idx = int(rng.integers(len(notes_in_key) // 4, 3 * len(notes_in_key) // 4 + 1))
    notes, t = [], 0
    while t < duration_ms:
        length = int(lengths[rng.integers(len(lengths))])
        idx = int(np.clip(idx + rng.integers(-3, 4), 0, len(notes_in_key) - 1))
        if rng.random() < 0.12 and t > 0:  # rest
            t += length
            continue
        sounding = length if legato else int(length * rng.uniform(0.5, 0.95))
        notes.append(Note(t, sounding, int(notes_in_key[idx]), int(rng.integers(60, 115))))
        t += length
    return notes


def _chords(rng: np.random.Generator, inst: Instrument, duration_ms: int, style: str) -> list[Note]:
    notes_in_key = _scale_notes(rng, inst.low, inst.high)
    beat = _beat_ms(rng)
    bar = 4 * beat
    notes, t = [], 0
    while t < duration_ms:
        root = int(rng.integers(0, max(1, len(notes_in_key) - 5)))
        chord = [int(notes_in_key[min(root + k, len(notes_in_key) - 1)]) for k in (0, 2, 4)]
        if rng.random() < 0.5 and root + 7 < len(notes_in_key):
            chord.append(int(notes_in_key[root + 7]))
        velocity = int(rng.integers(55, 110))
        if style == "chords":  # block chords, one to four per bar
            per_bar = int(rng.choice([1, 2, 4]))
            for k in range(per_bar):
                for pitch in chord:
                    notes.append(Note(t + k * bar // per_bar, bar // per_bar, pitch, velocity))
        elif style == "strum":  # guitar strums: chord notes a few ms apart, on beats
            for k in range(4):
                if rng.random() < 0.8:
                    for j, pitch in enumerate(chord):
                        notes.append(Note(t + k * beat + 12 * j, beat, pitch, velocity))
        else:  # arpeggio
            step = beat // int(rng.choice([2, 4]))
            pattern = chord + chord[-2:0:-1]
            for k in range(bar // step):
                notes.append(Note(t + k * step, step * 2, pattern[k % len(pattern)], velocity))
        t += bar
    if style in ("chords", "arpeggio") and rng.random() < 0.5:  # a melody on top
        top = Instrument(inst.programs, "melody", max(inst.low, inst.high - 24), inst.high)
        notes += _melody(rng, top, duration_ms, legato=False)
    return notes


def _bass(rng: np.random.Generator, inst: Instrument, duration_ms: int) -> list[Note]:
    notes_in_key = _scale_notes(rng, inst.low, inst.high)
    beat = _beat_ms(rng)
    notes, t = [], 0
    root = int(rng.integers(len(notes_in_key)))
    while t < duration_ms:
        if rng.random() < 0.3:
            root = int(rng.integers(len(notes_in_key)))
        step = beat // int(rng.choice([1, 2]))
        pitch = notes_in_key[min(root + int(rng.choice([0, 0, 2, 4])), len(notes_in_key) - 1)]
        notes.append(Note(t, int(step * 0.9), int(pitch), int(rng.integers(70, 120))))
        t += step
    return notes


def _drums(rng: np.random.Generator, duration_ms: int) -> list[Note]:
    beat = _beat_ms(rng)
    eighth = beat // 2
    hat = _RIDE if rng.random() < 0.3 else _CLOSED_HAT
    notes = [Note(0, 200, _CRASH, 100)] if rng.random() < 0.6 else []
    t, k = 0, 0
    while t < duration_ms:
        position = k % 8
        if position in (0, 4) or (position == 5 and rng.random() < 0.4):
            notes.append(Note(t, 100, _KICK, int(rng.integers(90, 127))))
        if position in (2, 6):
            notes.append(Note(t, 100, _SNARE, int(rng.integers(80, 120))))
        notes.append(Note(t, 80, _OPEN_HAT if rng.random() < 0.08 else hat, int(rng.integers(50, 90))))
        if position == 7 and rng.random() < 0.25:  # fill
            for j, tom in enumerate(rng.choice(_TOMS, size=3)):
                notes.append(Note(t + j * eighth // 3, 100, int(tom), int(rng.integers(80, 120))))
        t += eighth
        k += 1
    return notes


def _sfx(rng: np.random.Generator, style: str, duration_ms: int) -> list[Note]:
    """GM sound-effect programs: note patterns that sound like the effect."""
    notes: list[Note] = []
    if style in ("sfx_long",):  # seashore, helicopter, applause: one or two long notes
        pitch = int(rng.integers(55, 72))
        notes.append(Note(0, duration_ms, pitch, int(rng.integers(90, 127))))
        return notes
    t = 0
    while t < duration_ms:
        if style == "sfx_shots":  # gunshots: single shots and bursts
            for _ in range(int(rng.choice([1, 1, 2, 3, 5]))):
                notes.append(Note(t, 400, int(rng.integers(48, 72)), int(rng.integers(90, 127))))
                t += int(rng.uniform(90, 200))
            t += int(rng.uniform(300, 2000))
        elif style == "sfx_ring":  # telephone: ring 1-2 s, pause 1-3 s
            notes.append(Note(t, int(rng.uniform(1000, 2000)), int(rng.integers(60, 76)), 110))
            t += int(rng.uniform(2000, 4500))
        elif style == "sfx_tweet":  # bird: short calls in phrases
            for _ in range(int(rng.integers(1, 6))):
                length = int(rng.uniform(80, 400))
                notes.append(Note(t, length, int(rng.integers(60, 90)), int(rng.integers(70, 120))))
                t += length + int(rng.uniform(20, 200))
            t += int(rng.uniform(200, 1500))
        elif style == "sfx_breath":  # breathing: in/out of 0.8-2 s
            length = int(rng.uniform(800, 2000))
            notes.append(Note(t, length, int(rng.integers(55, 70)), int(rng.integers(70, 120))))
            t += length + int(rng.uniform(200, 1200))
        else:
            raise DassError(f"unknown sound-effect style {style!r}")
    return notes


def make_phrase(rng: np.random.Generator, inst: Instrument, duration_ms: int) -> Phrase:
    """Draw a random phrase for ``inst`` lasting ``duration_ms``."""
    program = int(inst.programs[rng.integers(len(inst.programs))])
    if inst.style == "drums":
        return Phrase(int(_DRUM_KITS[rng.integers(len(_DRUM_KITS))]), tuple(_drums(rng, duration_ms)),
                      duration_ms, drums=True)
    if inst.style == "melody":
        notes = _melody(rng, inst, duration_ms, legato=rng.random() < 0.5)
    elif inst.style in ("chords", "arpeggio", "strum"):
        notes = _chords(rng, inst, duration_ms, inst.style)
    elif inst.style == "bass":
        notes = _bass(rng, inst, duration_ms)
    elif inst.style.startswith("sfx_"):
        notes = _sfx(rng, inst.style, duration_ms)
    else:
        raise DassError(f"unknown phrase style {inst.style!r}")
    notes = [n for n in notes if n.start_ms < duration_ms]
    if not notes:  # never an empty phrase: the event must be audible
        notes = [Note(0, duration_ms, (inst.low + inst.high) // 2, 100)]
    return Phrase(program, tuple(notes), duration_ms)
