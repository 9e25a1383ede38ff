"""Synthetic speech for ``dass synth``: random sentences spoken by espeak-ng voices.

Voices are a language plus a voice variant (``en+f3``, ``de+m2``, ...), split into the voices used for
the train/eval clips and *held-out* voices used only for the NIAH babble haystacks. Sentences are drawn
from small per-language word lists (English sentences follow a simple grammar, other languages are
word salad, which is fine for babble and for a speech detector).
"""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import soundfile
import soxr

from ..errors import DassError

# espeak-ng variants (files in espeak-ng-data/voices/!v), by gender; the last ones are held out.
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "adam", "Andy", "benjamin", "david", "john", "max", "paul",
                 "robert", "Michael")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "Alicia", "Andrea", "Annie", "aunty", "belinda", "steph")
HELDOUT_MALE_VARIANTS = ("m6", "m7", "m8", "edward", "gustave", "Hugo", "norbert", "victor")
HELDOUT_FEMALE_VARIANTS = ("f5", "linda", "steph2", "steph3", "anika", "grandma")
LANGUAGES = ("en", "en", "en-us", "en-us", "en-gb-scotland", "de", "fr-fr", "es", "it")
HELDOUT_LANGUAGES = ("en-029", "en-gb-x-rp", "nl", "pt", "pl")

_EN_DETERMINERS = ("the", "a", "this", "that", "every", "one", "my", "our", "their", "some")
_EN_ADJECTIVES = ("old", "new", "small", "large", "quiet", "loud", "green", "red", "bright", "dark", "happy",
                  "tired", "early", "late", "warm", "cold", "strange", "simple", "heavy", "light", "quick",
                  "slow", "careful", "famous", "local", "empty", "busy", "gentle", "sharp", "wooden")
_EN_NOUNS = ("dog", "river", "teacher", "window", "train", "garden", "city", "doctor", "letter", "mountain",
             "kitchen", "student", "music", "engine", "market", "bridge", "child", "story", "village",
             "computer", "bottle", "forest", "street", "painter", "question", "morning", "island", "table",
             "radio", "machine", "friend", "window", "boat", "winter", "paper", "farmer", "song", "road",
             "office", "picture", "neighbour", "evening", "coffee", "station", "museum", "bicycle")
_EN_VERBS = ("sees", "finds", "carries", "opens", "follows", "remembers", "builds", "paints", "watches",
             "answers", "visits", "cleans", "moves", "closes", "brings", "explains", "describes", "likes",
             "repairs", "counts", "hears", "leaves", "reads", "sells", "needs", "takes", "wants")
_EN_PREPOSITIONS = ("near", "behind", "under", "beside", "across", "inside", "after", "before", "without")
_EN_OPENERS = ("", "", "", "yesterday", "today", "tomorrow", "sometimes", "in the morning", "after lunch",
               "as usual", "once again", "of course", "by the way", "last week")

_OTHER_WORDS = {
    "de": ("der", "die", "das", "und", "ist", "nicht", "ein", "eine", "Haus", "Stadt", "Wasser", "gehen",
           "kommen", "heute", "morgen", "sehr", "gut", "klein", "groß", "Zeit", "Jahr", "Kind", "Straße",
           "Fenster", "Arbeit", "machen", "sagen", "sehen", "wir", "sie", "immer", "schon", "noch", "Buch"),
    "fr-fr": ("le", "la", "les", "et", "est", "pas", "un", "une", "maison", "ville", "eau", "aller",
              "venir", "aujourd'hui", "demain", "très", "bon", "petit", "grand", "temps", "année", "enfant",
              "rue", "fenêtre", "travail", "faire", "dire", "voir", "nous", "elle", "toujours", "encore"),
    "es": ("el", "la", "los", "y", "es", "no", "un", "una", "casa", "ciudad", "agua", "ir", "venir", "hoy",
           "mañana", "muy", "bueno", "pequeño", "grande", "tiempo", "año", "niño", "calle", "ventana",
           "trabajo", "hacer", "decir", "ver", "nosotros", "ella", "siempre", "todavía", "libro"),
    "it": ("il", "la", "gli", "e", "è", "non", "un", "una", "casa", "città", "acqua", "andare", "venire",
           "oggi", "domani", "molto", "buono", "piccolo", "grande", "tempo", "anno", "bambino", "strada",
           "finestra", "lavoro", "fare", "dire", "vedere", "noi", "lei", "sempre", "ancora", "libro"),
}


def espeak_available() -> str | None:
    """None when espeak-ng is installed, else what is missing."""
    return None if shutil.which("espeak-ng") else "the 'espeak-ng' program (Debian package espeak-ng)"


def _pick(rng: np.random.Generator, words: tuple[str, ...]) -> str:
    return words[int(rng.integers(len(words)))]


def _english_noun_phrase(rng: np.random.Generator) -> str:
    adjective = f"{_pick(rng, _EN_ADJECTIVES)} " if rng.random() < 0.5 else ""
    return f"{_pick(rng, _EN_DETERMINERS)} {adjective}{_pick(rng, _EN_NOUNS)}"


def random_sentence(rng: np.random.Generator, language: str) -> str:
    """A random sentence for ``language`` (English grammar for ``en*``, word salad otherwise)."""
    if language.startswith("en") or language not in _OTHER_WORDS:
        words = [_pick(rng, _EN_OPENERS), _english_noun_phrase(rng), _pick(rng, _EN_VERBS),
                 _english_noun_phrase(rng)]
        if rng.random() < 0.6:
            words += [_pick(rng, _EN_PREPOSITIONS), _english_noun_phrase(rng)]
        sentence = " ".join(w for w in words if w)
        return sentence[0].upper() + sentence[1:] + ("?" if rng.random() < 0.15 else ".")
    vocabulary = _OTHER_WORDS[language]
    words = [_pick(rng, vocabulary) for _ in range(int(rng.integers(5, 13)))]
    return " ".join(words).capitalize() + "."


def speak(text: str, voice: str, speed_wpm: int, pitch: int, sample_rate: int) -> np.ndarray:
    """Speak ``text`` with espeak-ng; mono float32 ``(samples,)`` at ``sample_rate``."""
    command = ["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), "--stdout", text]
    result = subprocess.run(command, capture_output=True)
    if result.returncode != 0 or not result.stdout:
        raise DassError(f"espeak-ng failed for voice {voice!r} (exit {result.returncode}): "
                        f"{result.stderr.decode(errors='replace').strip()[-300:]}")
    audio, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    return soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32)


def random_voice(rng: np.random.Generator, gender: str, heldout: bool = False) -> str:
    """An espeak-ng voice ``language+variant`` of ``gender`` ('male' or 'female')."""
    if gender == "male":
        variants = HELDOUT_MALE_VARIANTS if heldout else MALE_VARIANTS
    elif gender == "female":
        variants = HELDOUT_FEMALE_VARIANTS if heldout else FEMALE_VARIANTS
    else:
        raise DassError(f"gender must be 'male' or 'female', got {gender!r}")
    language = _pick(rng, HELDOUT_LANGUAGES if heldout else LANGUAGES)
    return f"{language}+{_pick(rng, variants)}"


def talker(rng: np.random.Generator, gender: str, num_samples: int, sample_rate: int,
           heldout: bool = False) -> np.ndarray:
    """One voice speaking random sentences with short pauses, filling ``(num_samples,)`` (float32)."""
    voice = random_voice(rng, gender, heldout)
    language = voice.split("+")[0]
    speed = int(rng.integers(130, 200))
    pitch = int(rng.integers(25, 75))
    out = np.zeros(num_samples, dtype=np.float32)
    position = 0
    while position < num_samples:
        utterance = speak(random_sentence(rng, language), voice, speed, pitch, sample_rate)
        end = min(num_samples, position + len(utterance))
        out[position:end] = utterance[: end - position]
        position = end + int(rng.uniform(0.15, 0.8) * sample_rate)
    return out


def babble(rng: np.random.Generator, num_samples: int, sample_rate: int, heldout: bool = False,
           min_voices: int = 4, max_voices: int = 7) -> np.ndarray:
    """Hubbub: ``min_voices``..``max_voices`` talkers of both genders, each starting at a random point of
    its own stream, mixed at similar levels; float32 ``(num_samples,)``."""
    num_voices = int(rng.integers(min_voices, max_voices + 1))
    out = np.zeros(num_samples, dtype=np.float64)
    for k in range(num_voices):
        gender = "male" if (k + int(rng.integers(2))) % 2 else "female"
        lead_in = int(rng.uniform(0, 2.0) * sample_rate)
        stream = talker(rng, gender, num_samples + lead_in, sample_rate, heldout)[lead_in:]
        rms = np.sqrt(np.mean(stream.astype(np.float64) ** 2)) + 1e-9
        out += stream / rms * 10 ** (rng.uniform(-4, 0) / 20)
    return out.astype(np.float32)
