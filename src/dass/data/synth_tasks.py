"""Offline versions of SSAMBA's downstream task families, and an unlabelled pool for pretraining.

``dass synth --task keywords|speakers|tagging|unlabelled OUT_DIR`` writes, in AST's data format
(``{"data": [{"wav": "audio/train/...", "labels": "/kws/yes"}]}`` + ``class_labels_indices.csv``):

* **keywords** (Speech Commands v2 style): the 35 words of :data:`KEYWORDS`, each clip one word
  spoken by espeak-ng (8 English accents x 44 voice variants) or, where installed, a festival voice
  (Debian ``festival`` + ``festvox-kallpc16k``, ``festvox-kdlpc16k``, ``festvox-us-slt-hts``:
  recorded diphones / HTS), at a random rate, pitch and spectral warp (resampling, which moves the
  pitch and the formants together), placed at a random offset in a **1 s, 16 kHz** clip over one of
  four background noises at 5-30 dB SNR (a fifth of the clips nearly clean). Splits train / valid /
  test by **voice**: :data:`VALID_VARIANTS` and :data:`TEST_VARIANTS` (and festival's ked voice)
  never occur in train, so the test split is made of voices never seen in training.
* **speakers** (speaker identification): N synthetic speakers, each a distinct base voice with its
  own rate, pitch and warp (``voice x pitch x speed x formant``), saying random English sentences
  (2-6 s clips, light noise); split **by utterance**: every speaker has utterances in train, valid
  and test.
* **tagging**: the existing ``dass synth`` corpus (multi-label, AudioSet classes), cut into
  ``--seconds`` windows for CPU-sized training; a window's labels are the sources of the events that
  overlap it by at least ``min(0.5 s, half the event)``. Train / valid come from the corpus' train
  clips (the last tenth is valid), test from its eval clips.
* **unlabelled**: a pool of ``--seconds`` clips mixing every source: spoken words and sentences (by
  *training* voices only, so no keyword test voice is heard in pretraining), windows of new tagging
  scenes (another seed), and procedural sounds over noise; plus the audio files of any directory
  given with ``--add`` (listed, not copied). Written as ``unlabelled.json`` (empty labels) and
  ``unlabelled.txt``.

Everything is drawn from generators seeded with ``(seed, task, split, index)``, so the output is the
same for the same seed and installed engines (recorded in ``synth_config.json``; a re-run with other
options refuses the folder), a clip does not depend on how many are built, and existing clips are
skipped (re-run to resume). Clips are rendered in chunks of :data:`CHUNK` by ``workers`` processes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import soxr

from ..errors import DassError
from .labels import LabelInfo, read_class_labels_csv, write_class_labels_csv
from .synth import _check_config, _cpu_seconds, _write_flac, _write_text
from .synth_procedural import PROCEDURAL_GENERATORS, SAMPLE_RATE, room_tone
from .synth_speech import espeak_available, random_sentence, speak

__all__ = [
    "FESTIVAL_VOICES",
    "KEYWORDS",
    "TASKS",
    "TEST_VARIANTS",
    "VALID_VARIANTS",
    "Voice",
    "build_keywords",
    "build_speakers",
    "build_tagging",
    "build_task",
    "build_unlabelled",
    "festival_voices",
    "keyword_voices",
    "speaker_table",
]

TASKS = ("keywords", "speakers", "tagging", "unlabelled")
FORMAT_VERSION = 1
CHUNK = 16
_TASK_IDS = {"keywords": 11, "speakers": 12, "tagging": 13, "unlabelled": 14}
_SPLIT_IDS = {"train": 1, "valid": 2, "test": 3, "pool": 4}

#: The 35 words of Speech Commands v2.
KEYWORDS = (
    "backward",
    "bed",
    "bird",
    "cat",
    "dog",
    "down",
    "eight",
    "five",
    "follow",
    "forward",
    "four",
    "go",
    "happy",
    "house",
    "learn",
    "left",
    "marvin",
    "nine",
    "no",
    "off",
    "on",
    "one",
    "right",
    "seven",
    "sheila",
    "six",
    "stop",
    "three",
    "tree",
    "two",
    "up",
    "visual",
    "wow",
    "yes",
    "zero",
)
#: English espeak-ng languages (accents); every split uses all of them.
ESPEAK_ACCENTS = (
    "en-gb",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
#: espeak-ng voice variants (files in espeak-ng-data/voices/!v) that sound like people.
ESPEAK_VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "adam",
    "Alex",
    "Alicia",
    "Andrea",
    "Andy",
    "Annie",
    "aunty",
    "belinda",
    "benjamin",
    "boris",
    "caleb",
    "david",
    "ed",
    "edward",
    "Gene",
    "grandma",
    "grandpa",
    "Hugo",
    "iven",
    "Jacky",
    "john",
    "linda",
    "Lee",
    "max",
    "Michael",
    "norbert",
    "paul",
    "quincy",
    "robert",
    "steph",
    "victor",
)
#: Held-out variants: the valid and test splits of the keyword task (never in train, never in the pool).
VALID_VARIANTS = ("m4", "f3", "Andy", "grandpa", "max", "steph")
TEST_VARIANTS = ("m7", "f5", "Annie", "boris", "edward", "iven", "linda", "quincy")
#: festival voices (Debian packages) and the keyword split each belongs to.
FESTIVAL_VOICES = {"kal_diphone": "train", "cmu_us_slt_arctic_hts": "train", "ked_diphone": "test"}
NOISE_KINDS = ("white_noise", "pink_noise", "room_tone", "mains_hum")
FESTIVAL_SHARE = 0.2  # keyword clips spoken by a festival voice, where the split has one


@dataclass(frozen=True)
class Voice:
    """A synthetic voice: ``engine`` "espeak" (``name`` = accent+variant) or "festival" (a voice name)."""

    engine: str
    name: str

    def __str__(self) -> str:
        return f"{self.engine}:{self.name}"


# ------------------------------------------------------------------------------------------ engines


_FESTIVAL_CACHE: dict[str, tuple[str, ...]] = {}


def festival_voices() -> tuple[str, ...]:
    """The :data:`FESTIVAL_VOICES` this machine's festival has (empty without festival)."""
    if "voices" not in _FESTIVAL_CACHE:
        found: tuple[str, ...] = ()
        if shutil.which("festival"):
            result = subprocess.run(
                ["festival", "--pipe"], input="(print (voice.list))\n", capture_output=True, text=True, timeout=60
            )
            listed = set(result.stdout.replace("(", " ").replace(")", " ").split())
            found = tuple(v for v in FESTIVAL_VOICES if v in listed)
        _FESTIVAL_CACHE["voices"] = found
    return _FESTIVAL_CACHE["voices"]


def _engines() -> dict[str, Any]:
    """What is installed: ``{"espeak": bool, "festival": [voices]}`` (part of the recorded config)."""
    if espeak_available() is not None:
        raise DassError(f"dass synth --task needs espeak-ng: missing {espeak_available()}")
    return {"espeak": True, "festival": list(festival_voices())}


def keyword_voices(split: str, festival: tuple[str, ...] | list[str] = ()) -> list[Voice]:
    """The voices of a keyword split: train = all variants but the held-out ones; valid / test = theirs."""
    held_out = set(VALID_VARIANTS) | set(TEST_VARIANTS)
    variants = {
        "train": [v for v in ESPEAK_VARIANTS if v not in held_out],
        "valid": list(VALID_VARIANTS),
        "test": list(TEST_VARIANTS),
    }[split]
    voices = [Voice("espeak", f"{accent}+{variant}") for variant in variants for accent in ESPEAK_ACCENTS]
    voices += [Voice("festival", name) for name in festival if FESTIVAL_VOICES[name] == split]
    return voices


@dataclass(frozen=True)
class SpeechItem:
    """One utterance to synthesise: espeak ``rate`` in words/min and ``pitch`` 0-99; festival ``rate`` is a
    duration stretch (``pitch`` unused); ``warp`` > 1 raises pitch and formants and shortens the audio."""

    voice: Voice
    text: str
    rate: float
    pitch: int
    warp: float


def _warp(wave: np.ndarray, factor: float) -> np.ndarray:
    if abs(factor - 1.0) < 1e-6:
        return wave
    return soxr.resample(wave, SAMPLE_RATE, SAMPLE_RATE / factor, quality="HQ").astype(np.float32)


def _festival_batch(items: list[SpeechItem]) -> list[np.ndarray]:
    """Synthesise festival ``items`` in one festival process."""
    with tempfile.TemporaryDirectory(prefix="dass-festival-") as tmp:
        lines = []
        for k, item in enumerate(items):
            text = item.text.replace("\\", " ").replace('"', " ")
            lines += [
                f"(voice_{item.voice.name})",
                f"(Parameter.set 'Duration_Stretch {item.rate:.4f})",
                f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{tmp}/{k}.wav" \'riff)',
            ]
        script = Path(tmp) / "script.scm"
        script.write_text("\n".join(lines) + "\n", encoding="utf-8")
        result = subprocess.run(["festival", "-b", str(script)], capture_output=True, text=True, timeout=600)
        waves = []
        for k in range(len(items)):
            path = Path(tmp) / f"{k}.wav"
            if result.returncode != 0 or not path.exists():
                raise DassError(
                    f"festival failed for voice {items[k].voice.name!r} (exit {result.returncode}): "
                    f"{result.stderr.strip()[-300:]}"
                )
            audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
            waves.append(soxr.resample(audio.mean(axis=1), rate, SAMPLE_RATE, quality="HQ").astype(np.float32))
    return waves


def render_speech(items: list[SpeechItem]) -> list[np.ndarray]:
    """Synthesise ``items`` (16 kHz float32 each); festival items share one process."""
    out: list[np.ndarray | None] = [None] * len(items)
    festival = [k for k, item in enumerate(items) if item.voice.engine == "festival"]
    for k, wave in zip(festival, _festival_batch([items[k] for k in festival]) if festival else []):
        out[k] = wave
    for k, item in enumerate(items):
        if item.voice.engine == "espeak":
            out[k] = speak(item.text, item.voice.name, int(round(item.rate)), int(item.pitch), SAMPLE_RATE)
    return [_warp(w, items[k].warp) for k, w in enumerate(out)]


def trim_silence(wave: np.ndarray, floor_db: float = 40.0, pad_s: float = 0.02) -> np.ndarray:
    """Cut leading and trailing frames (10 ms) more than ``floor_db`` below the loudest, keeping ``pad_s``."""
    frame = SAMPLE_RATE // 100
    usable = len(wave) // frame * frame
    if usable == 0:
        return wave
    energy = np.mean(wave[:usable].astype(np.float64).reshape(-1, frame) ** 2, axis=1)
    active = np.flatnonzero(energy >= energy.max() * 10 ** (-floor_db / 10))
    pad = int(pad_s * SAMPLE_RATE)
    return wave[max(0, active[0] * frame - pad) : min(len(wave), (active[-1] + 1) * frame + pad)]


def background(rng: np.random.Generator, kind: str, num_samples: int) -> np.ndarray:
    """A unit-RMS background of ``kind`` (:data:`NOISE_KINDS`), float64 ``(num_samples,)``."""
    noise = room_tone(rng, num_samples) if kind == "room_tone" else PROCEDURAL_GENERATORS[kind](rng, num_samples)
    if kind == "mains_hum":
        noise = noise / (np.sqrt(np.mean(np.square(noise))) + 1e-12) + 0.3 * rng.standard_normal(num_samples)
    noise = np.asarray(noise, dtype=np.float64)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def _rms(wave: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) + 1e-12


def _finish(mix: np.ndarray, peak_db: float) -> np.ndarray:
    peak = float(np.max(np.abs(mix)))
    if not np.isfinite(peak) or peak <= 0:
        raise DassError("a rendered clip is silent or not finite")
    return (mix * (10 ** (peak_db / 20) / peak)).astype(np.float32)


# ------------------------------------------------------------------------------------------ plans


@dataclass(frozen=True)
class ClipPlan:
    """One clip to render: its file name, label (a class index or None) and what to do."""

    split: str
    index: int
    label: int | None
    kind: str  # "keyword" | "utterance" | "window" | "words" | "scene" | "sound"
    speech: tuple[SpeechItem, ...]
    seed: tuple[int, ...]
    seconds: float
    extra: tuple[Any, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.split}_{self.index:06d}"


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(list(key))


def _espeak_item(rng: np.random.Generator, voice: Voice, text: str, warp_range=(0.92, 1.08)) -> SpeechItem:
    if voice.engine == "festival":
        return SpeechItem(voice, text, float(rng.uniform(0.8, 1.3)), 50, float(rng.uniform(*warp_range)))
    return SpeechItem(
        voice, text, float(rng.uniform(120, 220)), int(rng.integers(20, 81)), float(rng.uniform(*warp_range))
    )


def plan_keyword(seed: int, split: str, index: int, voices: list[Voice]) -> ClipPlan:
    """Keyword clip ``index`` of ``split``: word ``index mod 35`` (balanced classes), a voice of the split."""
    rng = _rng(seed, _TASK_IDS["keywords"], _SPLIT_IDS[split], index)
    word = index % len(KEYWORDS)
    festival = [v for v in voices if v.engine == "festival"]
    espeak = [v for v in voices if v.engine == "espeak"]
    pool = festival if festival and rng.random() < FESTIVAL_SHARE else espeak
    voice = pool[int(rng.integers(len(pool)))]
    item = _espeak_item(rng, voice, KEYWORDS[word])
    return ClipPlan(
        split, index, word, "keyword", (item,), (seed, _TASK_IDS["keywords"], _SPLIT_IDS[split], index), 1.0
    )


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: a base voice with its own rate, pitch and warp."""

    index: int
    voice: Voice
    rate: float
    pitch: int
    warp: float

    @property
    def description(self) -> str:
        rate = f"stretch {self.rate:.2f}" if self.voice.engine == "festival" else f"{self.rate:.0f} wpm"
        pitch = "" if self.voice.engine == "festival" else f" pitch {self.pitch}"
        return f"speaker {self.index:03d} ({self.voice}{pitch}, {rate}, warp {self.warp:.3f})"


def speaker_table(seed: int, count: int, festival: tuple[str, ...] | list[str] = ()) -> list[Speaker]:
    """``count`` speakers with distinct base voices (every accent x variant and festival voice)."""
    pool = [Voice("espeak", f"{a}+{v}") for v in ESPEAK_VARIANTS for a in ESPEAK_ACCENTS]
    pool += [Voice("festival", name) for name in festival]
    if not 1 <= count <= len(pool):
        raise DassError(f"--speakers must be in [1, {len(pool)}] (distinct base voices), got {count}")
    rng = _rng(seed, _TASK_IDS["speakers"], 0)
    chosen = rng.choice(len(pool), size=count, replace=False)
    speakers = []
    for k, v in enumerate(chosen):
        voice = pool[int(v)]
        rate = float(rng.uniform(0.85, 1.25)) if voice.engine == "festival" else float(rng.uniform(130, 200))
        speakers.append(Speaker(k, voice, rate, int(rng.integers(20, 81)), float(rng.uniform(0.9, 1.1))))
    return speakers


def plan_utterance(seed: int, split: str, index: int, speaker: Speaker, utterance: int) -> ClipPlan:
    """Utterance ``utterance`` of ``speaker`` (file index ``index`` in ``split``): 2-6 s of sentences."""
    rng = _rng(seed, _TASK_IDS["speakers"], speaker.index + 1, utterance)
    seconds = float(rng.uniform(2.0, 6.0))
    words_needed = int(seconds * 3.2) + 2  # ~3 words/s: enough text to fill the clip
    sentences, words = [], 0
    while words < words_needed:
        sentence = random_sentence(rng, "en")
        sentences.append(sentence)
        words += len(sentence.split())
    item = SpeechItem(speaker.voice, " ".join(sentences), speaker.rate, speaker.pitch, speaker.warp)
    return ClipPlan(
        split,
        index,
        speaker.index,
        "utterance",
        (item,),
        (seed, _TASK_IDS["speakers"], speaker.index + 1, utterance),
        seconds,
    )


# ---------------------------------------------------------------------------------------- rendering


def _place(
    rng: np.random.Generator, speech: np.ndarray, num_samples: int, snr_db: float, noise_kind: str, peak_db: float
) -> np.ndarray:
    """``speech`` at a random offset in ``num_samples`` over a background at ``snr_db`` (speech RMS)."""
    speech = speech[:num_samples].astype(np.float64)
    offset = int(rng.integers(0, num_samples - len(speech) + 1))
    mix = np.zeros(num_samples)
    mix[offset : offset + len(speech)] = speech / _rms(speech)
    mix += background(rng, noise_kind, num_samples) * 10 ** (-snr_db / 20)
    return _finish(mix, peak_db)


def _render_speech_clip(plan: ClipPlan, wave: np.ndarray) -> np.ndarray:
    rng = _rng(*plan.seed, 7)
    n = int(round(plan.seconds * SAMPLE_RATE))
    noise_kind = NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))]
    if plan.kind == "keyword":
        snr = 45.0 if rng.random() < 0.2 else float(rng.uniform(5, 30))
    else:  # utterances and pool speech: light noise
        snr = float(rng.uniform(15, 40))
    speech = trim_silence(wave) if plan.kind in ("keyword", "words") else wave
    return _place(rng, speech, n, snr, noise_kind, float(rng.uniform(-12, -1)))


def _render_sound(plan: ClipPlan) -> np.ndarray:
    """A procedural sound event over a background (unlabelled pool)."""
    rng = _rng(*plan.seed, 8)
    n = int(round(plan.seconds * SAMPLE_RATE))
    names = sorted(PROCEDURAL_GENERATORS)
    length = int(rng.integers(n // 3, n + 1))
    event = np.asarray(PROCEDURAL_GENERATORS[names[int(rng.integers(len(names)))]](rng, length), dtype=np.float64)
    kind = NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))]
    return _place(rng, event, n, float(rng.uniform(5, 35)), kind, float(rng.uniform(-12, -1)))


def _render_chunk(out_dir: str, plans: list[ClipPlan], wanted: list[bool]) -> int:
    """Render the ``wanted`` clips of a chunk and write them (speech of the whole chunk synthesised together)."""
    out = Path(out_dir)
    todo = [(p, w) for p, w in zip(plans, wanted) if w]
    speech_plans = [p for p, _ in todo if p.speech]
    waves = render_speech([p.speech[0] for p in speech_plans]) if speech_plans else []
    by_name = {p.name: w for p, w in zip(speech_plans, waves)}
    scene_windows = _scene_windows([p for p, _ in todo if p.kind == "scene"])
    for plan, _ in todo:
        if plan.kind == "scene":
            wave = scene_windows[plan.name]
        elif plan.kind == "sound":
            wave = _render_sound(plan)
        else:
            wave = _render_speech_clip(plan, by_name[plan.name])
        path = out / "audio" / plan.split / f"{plan.name}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_flac(path, wave)
    return len(todo)


def _scene_windows(plans: list[ClipPlan]) -> dict[str, np.ndarray]:
    """Pool windows of tagging scenes: ``extra = (scene_seed, scene_index, window_start_s, backends)``."""
    if not plans:
        return {}
    from .synth import plan_clip, render_clips
    from .synth_sources import sources_for_backends

    # FluidSynth's output for a phrase depends slightly on the phrases before it in the same run, so the
    # scenes of a chunk are always rendered from the chunk's first scene up to the last one needed.
    scene_seed, _, _, backends = plans[0].extra
    first = min(p.extra[1] for p in plans) // CHUNK * CHUNK
    last = max(p.extra[1] for p in plans)
    sources = sources_for_backends(tuple(backends))
    rendered = dict(
        zip(
            range(first, last + 1),
            render_clips([plan_clip(scene_seed, "train", k, sources) for k in range(first, last + 1)]),
        )
    )
    out = {}
    for p in plans:
        scene_seed, scene_index, start_s, _ = p.extra
        start = int(round(start_s * SAMPLE_RATE))
        out[p.name] = rendered[scene_index][start : start + int(round(p.seconds * SAMPLE_RATE))]
    return out


def _run_task(task: tuple) -> int:
    function, arguments = task
    return function(*arguments)


def _render_all(
    out: Path, plans: list[ClipPlan], workers: int, progress: bool, chunk_of: Callable[[ClipPlan], Any]
) -> None:
    """Write every missing clip of ``plans``, grouped into chunks by ``chunk_of`` (rendered together)."""
    from tqdm import tqdm

    groups: dict[Any, list[ClipPlan]] = {}
    for plan in plans:
        groups.setdefault(chunk_of(plan), []).append(plan)
    tasks = []
    for key in sorted(groups, key=str):
        chunk = groups[key]
        missing = [not (out / "audio" / p.split / f"{p.name}.flac").exists() for p in chunk]
        if any(missing):
            tasks.append((_render_chunk, (str(out), chunk, missing)))
    total = sum(sum(t[1][2]) for t in tasks)
    with tqdm(total=total, unit="clip", desc="dass synth", disable=not progress, file=sys.stderr) as bar:
        if workers == 1 or len(tasks) <= 1:
            for task in tasks:
                bar.update(_run_task(task))
        else:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for done in pool.imap_unordered(_run_task, tasks):
                    bar.update(done)
                pool.close()
                pool.join()


# -------------------------------------------------------------------------------------- the outputs


class _Options:
    """Adapter for :func:`dass.data.synth._check_config`: the options that determine the audio."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def config(self) -> dict[str, Any]:
        return self.values


def _prepare(out_dir: str | os.PathLike, options: dict[str, Any], workers: int) -> Path:
    if workers < 1:
        raise DassError(f"workers must be >= 1, got {workers}")
    if options.get("seed", 0) < 0:
        raise DassError(f"seed must be >= 0, got {options['seed']}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DassError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    _check_config(out, _Options({"format": FORMAT_VERSION, "sample_rate": SAMPLE_RATE, **options}))
    return out


def _write_split_files(
    out: Path,
    plans_by_split: dict[str, list[ClipPlan]],
    labels: list[LabelInfo],
    extra: Callable[[ClipPlan], dict[str, Any]] | None = None,
) -> None:
    for split, plans in plans_by_split.items():
        data = []
        for plan in plans:
            entry = {
                "wav": f"audio/{plan.split}/{plan.name}.flac",
                "labels": "" if plan.label is None else labels[plan.label].mid,
            }
            if extra is not None:
                entry.update(extra(plan))
            data.append(entry)
        _write_text(out / f"{split}.json", json.dumps({"data": data}, indent=1) + "\n")
    write_class_labels_csv(out / "class_labels_indices.csv", labels)


def _write_stats(
    out: Path,
    task: str,
    options: dict[str, Any],
    plans_by_split: dict[str, list[ClipPlan]],
    labels: list[LabelInfo],
    started: tuple[float, float],
    notes: list[str],
    class_counts: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """stats.json / stats.md; ``class_counts`` (positives per class and split) for multi-label tasks."""
    splits = {}
    for split, plans in plans_by_split.items():
        if class_counts is not None:
            counts = class_counts[split]
        else:
            counts = (
                np.bincount([p.label for p in plans if p.label is not None], minlength=len(labels)) if labels else []
            )
        splits[split] = {
            "clips": len(plans),
            "seconds": round(sum(p.seconds for p in plans), 2),
            "min_per_class": int(np.min(counts)) if len(counts) else 0,
            "max_per_class": int(np.max(counts)) if len(counts) else 0,
        }
    stats = {
        "task": task,
        "config": options,
        "num_classes": len(labels),
        "splits": splits,
        "wall_s": round(time.perf_counter() - started[0], 2),
        "cpu_s": round(_cpu_seconds() - started[1], 2),
        "notes": notes,
    }
    _write_text(out / "stats.json", json.dumps(stats, indent=1) + "\n")
    lines = [
        f"# dass synth --task {task}",
        "",
        f"{len(labels)} classes, seed {options.get('seed')}.",
        "",
        "| split | clips | audio | clips (positives) per class |",
        "|---|---|---|---|",
    ]
    for split, info in splits.items():
        lines.append(
            f"| {split} | {info['clips']} | {info['seconds'] / 60:.1f} min | "
            f"{info['min_per_class']}-{info['max_per_class']} |"
        )
    lines += ["", f"Wall time {stats['wall_s']:.1f} s, CPU time {stats['cpu_s']:.1f} s.", ""] + notes
    _write_text(out / "stats.md", "\n".join(lines) + "\n")
    return stats


# ------------------------------------------------------------------------------------------ builders


def build_keywords(
    out_dir: str | os.PathLike,
    *,
    num_train: int = 3500,
    num_valid: int = 700,
    num_test: int = 1050,
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """The keyword-spotting task (see the module docstring); returns the statistics (also stats.json)."""
    started = (time.perf_counter(), _cpu_seconds())
    engines = _engines()
    options = {"task": "keywords", "seed": seed, "engines": engines}
    out = _prepare(out_dir, options, workers)
    festival = tuple(engines["festival"])
    labels = [LabelInfo(i, f"/kws/{w}", w) for i, w in enumerate(KEYWORDS)]
    plans_by_split = {}
    for split, n in (("train", num_train), ("valid", num_valid), ("test", num_test)):
        if n < 0:
            raise DassError(f"need a non-negative number of {split} clips, got {n}")
        voices = keyword_voices(split, festival)
        plans_by_split[split] = [plan_keyword(seed, split, i, voices) for i in range(n)]
    all_plans = [p for plans in plans_by_split.values() for p in plans]
    _render_all(out, all_plans, workers, progress, lambda p: (p.split, p.index // CHUNK))
    _write_split_files(out, plans_by_split, labels, lambda p: {"voice": str(p.speech[0].voice)})
    voices = {s: sorted({str(p.speech[0].voice) for p in plans}) for s, plans in plans_by_split.items()}
    notes = [
        "Voices per split: " + ", ".join(f"{s} {len(v)}" for s, v in voices.items()) + "; "
        f"train and test share none: {not set(voices['train']) & set(voices['test'])}.",
        f"festival voices: {', '.join(festival) or 'none installed'}.",
    ]
    return _write_stats(out, "keywords", options, plans_by_split, labels, started, notes)


def build_speakers(
    out_dir: str | os.PathLike,
    *,
    num_speakers: int = 40,
    utterances: tuple[int, int, int] = (16, 4, 6),
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """The speaker-identification task: ``utterances`` = (train, valid, test) per speaker."""
    started = (time.perf_counter(), _cpu_seconds())
    engines = _engines()
    if any(u < 1 for u in utterances):
        raise DassError(f"every split needs >= 1 utterance per speaker, got {utterances}")
    options = {
        "task": "speakers",
        "seed": seed,
        "engines": engines,
        "speakers": num_speakers,
        "utterances": list(utterances),
    }
    out = _prepare(out_dir, options, workers)
    speakers = speaker_table(seed, num_speakers, tuple(engines["festival"]))
    labels = [LabelInfo(s.index, f"/spk/{s.index:03d}", s.description) for s in speakers]
    plans_by_split: dict[str, list[ClipPlan]] = {"train": [], "valid": [], "test": []}
    bounds = np.cumsum(utterances)
    for u in range(int(bounds[-1])):
        split = "train" if u < bounds[0] else "valid" if u < bounds[1] else "test"
        for speaker in speakers:
            plans = plans_by_split[split]
            plans.append(plan_utterance(seed, split, len(plans), speaker, u))
    all_plans = [p for plans in plans_by_split.values() for p in plans]
    _render_all(out, all_plans, workers, progress, lambda p: (p.split, p.index // CHUNK))
    _write_split_files(out, plans_by_split, labels)
    notes = [
        f"{num_speakers} speakers; utterances per speaker: train {utterances[0]}, valid {utterances[1]}, "
        f"test {utterances[2]} (split by utterance)."
    ]
    return _write_stats(out, "speakers", options, plans_by_split, labels, started, notes)


def _window_labels(events: list[dict], start: float, end: float, source_labels: dict[str, tuple[str, ...]]) -> set[str]:
    names: set[str] = set()
    for event in events:
        onset, duration = float(event["onset_s"]), float(event["duration_s"])
        overlap = min(end, onset + duration) - max(start, onset)
        if overlap >= min(0.5, duration / 2):
            names.update(source_labels[event["source"]])
    return names


def build_tagging(
    out_dir: str | os.PathLike,
    *,
    corpus: str | os.PathLike | None = None,
    seconds: float = 3.0,
    num_train: int = 600,
    num_eval: int = 150,
    seed: int = 0,
    sources: tuple[str, ...] | None = None,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """The tagging task: ``--seconds`` windows of a ``dass synth`` corpus (built into OUT/corpus if not given)."""
    from .synth import build_corpus
    from .synth_sources import SOURCES

    started = (time.perf_counter(), _cpu_seconds())
    if not 0.5 <= seconds <= 10:
        raise DassError(f"--seconds must be in [0.5, 10] for windows of the 10 s corpus clips, got {seconds}")
    out = Path(out_dir)
    if corpus is None:
        corpus = out / "corpus"
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            build_corpus(
                corpus,
                num_train=num_train,
                num_eval=num_eval,
                seed=seed,
                sources=sources or ("procedural", "fluidsynth", "espeak"),
                workers=workers,
                progress=progress,
            )
    corpus = Path(corpus)
    for name in ("train.json", "eval.json", "class_labels_indices.csv"):
        if not (corpus / name).is_file():
            raise DassError(f"{corpus}: no {name}; --from takes a folder written by dass synth")
    options = {"task": "tagging", "seed": seed, "seconds": seconds, "corpus": str(corpus.resolve())}
    out = _prepare(out, options, workers)
    labels = read_class_labels_csv(corpus / "class_labels_indices.csv")
    index_of = {label.display_name: label.index for label in labels}
    source_labels = {name: src.labels for name, src in SOURCES.items()}
    windows = int(10 // seconds)
    train_entries = json.loads((corpus / "train.json").read_text(encoding="utf-8"))["data"]
    eval_entries = json.loads((corpus / "eval.json").read_text(encoding="utf-8"))["data"]
    cut = len(train_entries) - max(1, len(train_entries) // 10)
    parts = {"train": train_entries[:cut], "valid": train_entries[cut:], "test": eval_entries}
    data: dict[str, list[dict]] = {}
    for split, entries in parts.items():
        rows = []
        (out / "audio" / split).mkdir(parents=True, exist_ok=True)
        for entry in entries:
            if "events" not in entry:
                raise DassError(f"{corpus}: entry {entry.get('wav')} has no 'events'; build the corpus with dass synth")
            source_path = corpus / entry["wav"]
            wave = None
            for w in range(windows):
                name = f"{Path(entry['wav']).stem}_w{w}"
                target = out / "audio" / split / f"{name}.flac"
                start, end = w * seconds, (w + 1) * seconds
                if not target.exists():
                    if wave is None:
                        wave, rate = soundfile.read(source_path, dtype="float32")
                        if rate != SAMPLE_RATE:
                            raise DassError(f"{source_path}: expected {SAMPLE_RATE} Hz, got {rate}")
                    _write_flac(target, wave[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)])
                names = sorted(_window_labels(entry["events"], start, end, source_labels), key=index_of.__getitem__)
                rows.append(
                    {"wav": f"audio/{split}/{name}.flac", "labels": ",".join(labels[index_of[n]].mid for n in names)}
                )
        data[split] = rows
        _write_text(out / f"{split}.json", json.dumps({"data": rows}, indent=1) + "\n")
    write_class_labels_csv(out / "class_labels_indices.csv", labels)
    plans_by_split = {
        s: [ClipPlan(s, i, None, "window", (), (), seconds) for i in range(len(r))] for s, r in data.items()
    }
    positives = {s: sum(bool(r["labels"]) for r in rows) for s, rows in data.items()}
    mid_index = {label.mid: label.index for label in labels}
    class_counts = {
        s: np.bincount([mid_index[m] for r in rows for m in r["labels"].split(",") if m], minlength=len(labels))
        for s, rows in data.items()
    }
    notes = [
        f"{len(labels)} classes (multi-label); {windows} windows of {seconds:g} s per 10 s clip of {corpus}; "
        "windows with at least one label: " + ", ".join(f"{s} {positives[s]}/{len(data[s])}" for s in data) + "."
    ]
    return _write_stats(out, "tagging", options, plans_by_split, labels, started, notes, class_counts)


def build_unlabelled(
    out_dir: str | os.PathLike,
    *,
    num_clips: int = 3000,
    seconds: float = 2.0,
    seed: int = 0,
    add: list[str] | tuple[str, ...] = (),
    sources: tuple[str, ...] | None = None,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """The unlabelled pretraining pool (see the module docstring)."""
    from .synth import available_backends
    from .unlabelled import list_audio_files

    started = (time.perf_counter(), _cpu_seconds())
    if not 0.5 <= seconds <= 10:
        raise DassError(f"--seconds must be in [0.5, 10], got {seconds}")
    if num_clips < 1:
        raise DassError(f"need at least one pool clip, got {num_clips}")
    engines = _engines()
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        backends = available_backends(tuple(sources or ("procedural", "fluidsynth", "espeak")))
    options = {"task": "unlabelled", "seed": seed, "seconds": seconds, "engines": engines, "backends": list(backends)}
    out = _prepare(out_dir, options, workers)
    voices = keyword_voices("train", tuple(engines["festival"]))
    scene_seed = seed + 7919  # not the tagging corpus' seed
    windows = int(10 // seconds)
    kinds = ("words", "utterance", "scene", "sound")
    plans = []
    scene_count = 0
    for i in range(num_clips):
        rng = _rng(seed, _TASK_IDS["unlabelled"], i)
        kind = kinds[int(rng.choice(4, p=[0.3, 0.3, 0.3, 0.1]))]
        key = (seed, _TASK_IDS["unlabelled"], _SPLIT_IDS["pool"], i)
        voice = voices[int(rng.integers(len(voices)))]
        if kind == "words":
            vocabulary = list(KEYWORDS) + random_sentence(rng, "en").rstrip(".?").lower().split()
            text = " ".join(vocabulary[int(k)] for k in rng.integers(len(vocabulary), size=int(rng.integers(1, 4))))
            plans.append(ClipPlan("pool", i, None, "words", (_espeak_item(rng, voice, text),), key, seconds))
        elif kind == "utterance":
            text = " ".join(random_sentence(rng, "en") for _ in range(max(1, int(seconds // 2))))
            plans.append(
                ClipPlan("pool", i, None, "utterance", (_espeak_item(rng, voice, text, (0.9, 1.1)),), key, seconds)
            )
        elif kind == "scene":
            scene, window = divmod(scene_count, windows)
            scene_count += 1
            plans.append(
                ClipPlan(
                    "pool", i, None, "scene", (), key, seconds, (scene_seed, scene, window * seconds, tuple(backends))
                )
            )
        else:
            plans.append(ClipPlan("pool", i, None, "sound", (), key, seconds))
    # chunks: scenes by their 16-scene chunk (FluidSynth renders a chunk in one run), the rest by index
    _render_all(
        out,
        plans,
        workers,
        progress,
        lambda p: ("scene", p.extra[1] // CHUNK) if p.kind == "scene" else ("clip", p.index // CHUNK),
    )
    entries = [
        {
            "wav": f"audio/pool/{p.name}.flac",
            "labels": "",
            "kind": p.kind,
            **({"voice": str(p.speech[0].voice)} if p.speech else {}),
        }
        for p in plans
    ]
    added = []
    for folder in add:
        added += list_audio_files(folder)
    entries += [{"wav": path, "labels": "", "kind": "added"} for path in added]
    _write_text(out / "unlabelled.json", json.dumps({"data": entries}, indent=1) + "\n")
    _write_text(out / "unlabelled.txt", "\n".join(e["wav"] for e in entries) + "\n")
    by_kind = {k: sum(p.kind == k for p in plans) for k in kinds}
    notes = [
        f"Pool clips by kind: {by_kind}; plus {len(added)} added files from {', '.join(map(str, add)) or 'no folder'}.",
        "Speech by training voices of the keyword task only (no keyword valid/test voice).",
    ]
    return _write_stats(out, "unlabelled", options, {"pool": plans}, [], started, notes)


def build_task(task: str, out_dir: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """Dispatch ``dass synth --task``."""
    builders = {
        "keywords": build_keywords,
        "speakers": build_speakers,
        "tagging": build_tagging,
        "unlabelled": build_unlabelled,
    }
    if task not in builders:
        raise DassError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return builders[task](out_dir, **kwargs)
