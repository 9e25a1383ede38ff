"""The sound sources of ``dass synth`` and the AudioSet classes each one is labelled with.

A source is one kind of event (``piano``, ``speech_female``, ``siren``, ...) made by one backend:

* ``fluidsynth``: sampled instruments and GM sound effects (:mod:`dass.data.synth_midi`),
* ``espeak``: speech and babble (:mod:`dass.data.synth_speech`),
* ``procedural``: numpy tones and noises (:mod:`dass.data.synth_procedural`), always available.

Labels are the leaf class plus its obvious AudioSet ancestors among :data:`dass.data.labels.SYNTH_CLASSES`
(e.g. ``Piano`` + ``Keyboard (musical)`` + ``Musical instrument`` + ``Music``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .labels import SYNTH_CLASS_BY_NAME
from .synth_midi import Instrument
from .synth_procedural import PROCEDURAL_GENERATORS

BACKENDS = ("procedural", "fluidsynth", "espeak")

MUSIC = ("Music", "Musical instrument")
KEYBOARD = ("Keyboard (musical)",) + MUSIC
GUITAR = ("Guitar", "Plucked string instrument") + MUSIC
PLUCKED = ("Plucked string instrument",) + MUSIC
BOWED = ("Bowed string instrument",) + MUSIC
BRASS = ("Brass instrument",) + MUSIC
WOODWIND = ("Wind instrument, woodwind instrument",) + MUSIC
PERCUSSION = ("Percussion",) + MUSIC


@dataclass(frozen=True)
class Source:
    """A kind of sound event: its backend, labels (AudioSet display names) and duration range (s)."""

    name: str
    backend: str
    labels: tuple[str, ...]
    min_duration_s: float = 2.0
    max_duration_s: float = 10.0
    instrument: Instrument | None = None  # fluidsynth sources only


def _fs(name: str, labels: tuple[str, ...], programs: tuple[int, ...], style: str, low: int = 48,
        high: int = 84, min_s: float = 2.0, max_s: float = 10.0) -> Source:
    return Source(name, "fluidsynth", labels, min_s, max_s, Instrument(programs, style, low, high))


_SOURCE_LIST: tuple[Source, ...] = (
    # --- FluidSynth: General MIDI programs (0-based) of the FluidR3 soundfont
    _fs("piano", ("Piano",) + KEYBOARD, (0, 1), "chords", 36, 96),
    _fs("organ", ("Organ",) + KEYBOARD, (16, 17, 18, 19), "chords", 36, 84),
    _fs("synthesizer", ("Synthesizer",) + KEYBOARD, (80, 81, 88, 90), "arpeggio", 48, 84),
    _fs("acoustic_guitar", ("Acoustic guitar",) + GUITAR, (24, 25), "strum", 40, 76),
    _fs("electric_guitar", ("Electric guitar",) + GUITAR, (26, 27, 29, 30), "melody", 40, 84),
    _fs("bass_guitar", ("Bass guitar",) + GUITAR, (33, 34, 35), "bass", 28, 52),
    _fs("banjo", ("Banjo",) + PLUCKED, (105,), "arpeggio", 48, 79),
    _fs("sitar", ("Sitar",) + PLUCKED, (104,), "melody", 48, 79),
    _fs("harp", ("Harp",) + MUSIC, (46,), "arpeggio", 36, 91),
    _fs("violin", ("Violin, fiddle",) + BOWED, (40, 110), "melody", 55, 96),
    _fs("string_section", ("String section",) + BOWED, (48, 49), "chords", 43, 84),
    _fs("trumpet", ("Trumpet",) + BRASS, (56,), "melody", 55, 82),
    _fs("french_horn", ("French horn",) + BRASS, (60,), "melody", 41, 72),
    _fs("flute", ("Flute",) + WOODWIND, (73,), "melody", 60, 96),
    _fs("clarinet", ("Clarinet",) + WOODWIND, (71,), "melody", 50, 89),
    _fs("saxophone", ("Saxophone",) + WOODWIND, (64, 65, 66), "melody", 49, 80),
    _fs("marimba", ("Marimba, xylophone",) + PERCUSSION, (12, 13), "melody", 48, 96),
    _fs("steelpan", ("Steelpan",) + PERCUSSION, (114,), "melody", 55, 84),
    _fs("accordion", ("Accordion",) + MUSIC, (21, 23), "chords", 48, 84),
    _fs("harmonica", ("Harmonica",) + MUSIC, (22,), "melody", 60, 84),
    _fs("bagpipes", ("Bagpipes",) + MUSIC, (109,), "melody", 60, 77),
    _fs("choir", ("Choir", "Music"), (52, 53), "chords", 48, 79),
    _fs("drum_kit", ("Drum kit",) + PERCUSSION, (0,), "drums"),
    # GM sound effects
    _fs("breathing", ("Breathing",), (121,), "sfx_breath", min_s=3.0),
    _fs("waves", ("Waves, surf",), (122,), "sfx_long", min_s=3.0),
    _fs("bird", ("Chirp, tweet", "Bird"), (123,), "sfx_tweet"),
    _fs("telephone_ring", ("Telephone bell ringing", "Telephone"), (124,), "sfx_ring", min_s=3.0),
    _fs("helicopter", ("Helicopter",), (125,), "sfx_long", min_s=3.0),
    _fs("applause", ("Applause",), (126,), "sfx_long", min_s=3.0),
    _fs("gunshot", ("Gunshot, gunfire",), (127,), "sfx_shots", min_s=1.0, max_s=6.0),
    # --- espeak-ng speech
    Source("speech_male", "espeak", ("Speech", "Male speech, man speaking"), 2.0, 10.0),
    Source("speech_female", "espeak", ("Speech", "Female speech, woman speaking"), 2.0, 10.0),
    Source("babble", "espeak", ("Hubbub, speech noise, speech babble", "Speech"), 4.0, 10.0),
    # --- procedural
    Source("sine_wave", "procedural", ("Sine wave",), 1.0, 10.0),
    Source("white_noise", "procedural", ("White noise", "Noise"), 1.0, 10.0),
    Source("pink_noise", "procedural", ("Pink noise", "Noise"), 1.0, 10.0),
    Source("chirp_tone", "procedural", ("Chirp tone",), 1.0, 10.0),
    Source("beep", "procedural", ("Beep, bleep",), 1.0, 8.0),
    Source("siren", "procedural", ("Siren",), 3.0, 10.0),
    Source("dial_tone", "procedural", ("Dial tone", "Telephone"), 2.0, 10.0),
    Source("busy_signal", "procedural", ("Busy signal", "Telephone"), 2.0, 10.0),
    Source("dtmf", "procedural", ("Telephone dialing, DTMF", "Telephone"), 1.5, 8.0),
    Source("mains_hum", "procedural", ("Mains hum",), 2.0, 10.0),
    Source("clicking", "procedural", ("Clicking",), 2.0, 10.0),
    Source("tick_tock", "procedural", ("Tick-tock",), 3.0, 10.0),
    Source("bell", "procedural", ("Bell",), 2.0, 10.0),
)

#: Every source by name, in a fixed order (the order of the balanced sampling cycle).
SOURCES: dict[str, Source] = {s.name: s for s in _SOURCE_LIST}


def _check_table() -> None:
    """Import-time sanity check of the table (a typo in a class name must not produce a silent gap)."""
    for source in _SOURCE_LIST:
        unknown = [label for label in source.labels if label not in SYNTH_CLASS_BY_NAME]
        if unknown:
            raise AssertionError(f"source {source.name}: labels {unknown} are not in SYNTH_CLASSES")
        if source.backend == "procedural" and source.name not in PROCEDURAL_GENERATORS:
            raise AssertionError(f"procedural source {source.name} has no generator")


_check_table()


def sources_for_backends(backends: tuple[str, ...] | list[str]) -> list[Source]:
    """The sources made by ``backends``, in table order."""
    return [s for s in _SOURCE_LIST if s.backend in backends]
