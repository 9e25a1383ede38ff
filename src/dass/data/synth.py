"""``dass synth``: build an offline, labelled, AudioSet-style corpus from synthetic and sampled sounds.

Layout of ``OUT_DIR`` (AST's data format)::

    OUT_DIR/
      train.json, eval.json          {"data": [{"wav": "audio/train/train_000000.flac",
                                                "labels": "/m/05r5c,/m/04rlf", "events": [...]}, ...]}
      class_labels_indices.csv       index,mid,display_name (real AudioSet ids of the classes used)
      audio/{train,eval}/*.flac      10.00 s, 16 kHz, mono, 16-bit FLAC
      haystacks/{babble,noise}/*.flac  (with ``haystacks=True``) long held-out NIAH haystack waveforms
      stats.json, stats.md           positives per class and split, durations, timings
      synth_config.json              seed and sources; a re-run must match it

``wav`` paths are relative to the JSON file's directory (``absolute_paths=True`` writes absolute paths,
as AST's own datafiles have). ``events`` (source, onset_s, duration_s) is extra information that AST
loaders ignore.

How a clip is made (clip ``index`` of ``split``; everything is drawn from generators seeded with
``(seed, split, index, ...)``, so a clip does not depend on how many clips are built or by which worker):

1. Its first event's source comes from a balanced cycle: the sources are shuffled once per block of
   ``len(sources)`` clips, so every source leads ``floor(N / len(sources))`` clips or more in a split of N
   clips (46 sources: >= 65 of 3000 train and >= 13 of 600 eval clips). 0-2 more events from other
   sources are added at random.
2. Each event gets a random length within its source's range, a random onset and gain; it is rendered,
   loudness-normalised, faded in/out and added over an unlabelled room-tone background (30-40 dB
   below the events in half of the clips, a 55-65 dB noise floor in the others).
3. The mix is peak-normalised to -6..-1 dBFS (never clips) and written atomically as FLAC. The labels
   are the union of the events' labels (leaf + parent classes), like AudioSet's weak labels.

Existing clips are skipped, so an interrupted run resumes where it stopped. Clips are rendered in fixed
chunks of :data:`CHUNK_CLIPS` indices with one FluidSynth run each (FluidSynth's output for a phrase
depends very slightly on the phrases before it in the same run, so the chunking is part of the recipe).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from ..errors import DassError
from .labels import LabelInfo, synth_labels, write_class_labels_csv
from .synth_midi import fluidsynth_available, make_phrase, render_segments
from .synth_procedural import PROCEDURAL_GENERATORS, SAMPLE_RATE, noise_haystack, room_tone
from .synth_sources import BACKENDS, SOURCES, Source, sources_for_backends
from .synth_speech import babble, espeak_available, talker

CLIP_SECONDS = 10
CLIP_SAMPLES = CLIP_SECONDS * SAMPLE_RATE
SPLIT_IDS = {"train": 1, "eval": 2}
FORMAT_VERSION = 1
CHUNK_CLIPS = 16  # clips per worker task (one FluidSynth run per task)
EVENT_RMS = 0.1  # every event is normalised to this active RMS before its gain
EVENT_MAX_PEAK = 0.5  # ... unless that would put its peak above this (clicks, shots)
# Broadband sources mask everything else: they get lower gains so the other events stay audible.
_MASKING_SOURCES = frozenset({"white_noise", "pink_noise", "waves", "applause", "helicopter", "babble"})
_HAYSTACK_TAG = 7_000_003
_PERMUTATION_TAG = 7_000_001


@dataclass(frozen=True)
class EventPlan:
    """One event of a clip: source, onset and length (samples), gain (dB) and its RNG seed."""

    source: str
    onset: int
    length: int
    gain_db: float
    seed: tuple[int, ...]


@dataclass(frozen=True)
class ClipPlan:
    """Everything needed to render a clip; ``labels`` are AudioSet display names."""

    split: str
    index: int
    events: tuple[EventPlan, ...]
    background_db: float  # level of the unlabelled room tone relative to the events (dB)
    peak_db: float
    labels: frozenset[str]

    @property
    def name(self) -> str:
        return f"{self.split}_{self.index:06d}"


@dataclass(frozen=True)
class SynthOptions:
    """What ``build_corpus`` was asked to make (``backends`` after dropping unavailable ones)."""

    seed: int = 0
    backends: tuple[str, ...] = BACKENDS
    absolute_paths: bool = False

    def config(self) -> dict:
        """The part of the options that determines the audio (saved as ``synth_config.json``)."""
        return {"format": FORMAT_VERSION, "seed": self.seed, "sources": list(self.backends),
                "sample_rate": SAMPLE_RATE, "clip_seconds": CLIP_SECONDS}


# ------------------------------------------------------------------------------------------------
# Planning
# ------------------------------------------------------------------------------------------------

def _split_id(split: str) -> int:
    if split not in SPLIT_IDS:
        raise DassError(f"unknown split {split!r}, expected one of {sorted(SPLIT_IDS)}")
    return SPLIT_IDS[split]


def plan_clip(seed: int, split: str, index: int, sources: list[Source]) -> ClipPlan:
    """Decide the events of clip ``index`` of ``split`` (cheap: nothing is rendered)."""
    split_id = _split_id(split)
    num_sources = len(sources)
    block, position = divmod(index, num_sources)
    order = np.random.default_rng([seed, split_id, block, _PERMUTATION_TAG]).permutation(num_sources)
    chosen = [sources[int(order[position])]]
    rng = np.random.default_rng([seed, split_id, index])
    num_extra = int(rng.choice([0, 1, 2], p=[0.35, 0.4, 0.25]))
    others = [s for s in sources if s.name != chosen[0].name]
    if others and num_extra:
        picks = rng.choice(len(others), size=min(num_extra, len(others)), replace=False)
        chosen += [others[int(i)] for i in picks]
    events = []
    for k, source in enumerate(chosen):
        seconds = rng.uniform(source.min_duration_s, min(source.max_duration_s, CLIP_SECONDS))
        length = int(round(seconds * 1000)) * SAMPLE_RATE // 1000  # whole ms (MIDI ticks)
        onset = int(rng.integers(0, CLIP_SAMPLES - length + 1))
        gain_db = rng.uniform(-12, -3) if source.name in _MASKING_SOURCES else rng.uniform(-6, 0)
        if k == 0:
            gain_db = max(gain_db, -3.0) if source.name not in _MASKING_SOURCES else gain_db
        events.append(EventPlan(source.name, onset, length, float(gain_db), (seed, split_id, index, 1000 + k)))
    # Half the clips get an audible room tone, the others a noise floor (no digital silence).
    background_db = float(rng.uniform(-40, -28)) if rng.random() < 0.5 else float(rng.uniform(-65, -55))
    labels = frozenset(label for source in chosen for label in source.labels)
    return ClipPlan(split, index, tuple(events), background_db, float(rng.uniform(-6, -1)), labels)


# ------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------

def _active_rms(wave: np.ndarray) -> float:
    """RMS over the 50 ms frames within 30 dB of the loudest frame (ignores the silent parts)."""
    frame = SAMPLE_RATE // 20
    usable = len(wave) // frame * frame
    if usable == 0:
        return float(np.sqrt(np.mean(wave.astype(np.float64) ** 2)))
    energies = np.mean(wave[:usable].astype(np.float64).reshape(-1, frame) ** 2, axis=1)
    active = energies[energies >= energies.max() * 1e-3]
    return float(np.sqrt(np.mean(active)))


def _fade(wave: np.ndarray, fade_in_s: float = 0.005, fade_out_s: float = 0.02) -> np.ndarray:
    """Linear fade in/out (avoids clicks at the event's edges)."""
    out = wave.astype(np.float64)
    n_in = min(len(out), int(fade_in_s * SAMPLE_RATE))
    n_out = min(len(out), int(fade_out_s * SAMPLE_RATE))
    if n_in:
        out[:n_in] *= np.linspace(0, 1, n_in, endpoint=False)
    if n_out:
        out[len(out) - n_out:] *= np.linspace(1, 0, n_out, endpoint=False)
    return out


def _render_non_midi_event(event: EventPlan) -> np.ndarray:
    """Render a procedural or espeak event to ``(event.length,)``."""
    source = SOURCES[event.source]
    rng = np.random.default_rng(list(event.seed))
    if source.backend == "procedural":
        return PROCEDURAL_GENERATORS[source.name](rng, event.length)
    if source.name == "babble":
        return babble(rng, event.length, SAMPLE_RATE)
    if source.name in ("speech_male", "speech_female"):
        return talker(rng, source.name.split("_")[1], event.length, SAMPLE_RATE)
    raise DassError(f"source {source.name} has no renderer")


def render_clips(plans: list[ClipPlan], wanted: list[bool] | None = None) -> list[np.ndarray | None]:
    """Render ``plans`` to float32 ``(CLIP_SAMPLES,)`` clips, all instrument phrases in one FluidSynth run.

    FluidSynth's output for a phrase depends slightly (~1e-3) on what came before it in the same run, so
    callers render fixed groups of clips (a chunk, or a prefix of one) to get the same samples every time.
    ``wanted[c] = False`` still renders clip ``c``'s phrases (they shape the later ones) but skips its mix
    and returns None for it.
    """
    wanted = [True] * len(plans) if wanted is None else wanted
    midi_events = [(c, k) for c, plan in enumerate(plans) for k, e in enumerate(plan.events)
                   if SOURCES[e.source].backend == "fluidsynth"]
    phrases = []
    for c, k in midi_events:
        event = plans[c].events[k]
        rng = np.random.default_rng(list(event.seed))
        phrases.append(make_phrase(rng, SOURCES[event.source].instrument, event.length * 1000 // SAMPLE_RATE))
    rendered = dict(zip(midi_events, render_segments(phrases, SAMPLE_RATE)))
    clips: list[np.ndarray | None] = []
    for c, plan in enumerate(plans):
        if not wanted[c]:
            clips.append(None)
            continue
        mix = np.zeros(CLIP_SAMPLES)
        for k, event in enumerate(plan.events):
            wave = rendered[(c, k)] if (c, k) in rendered else _render_non_midi_event(event)
            wave = np.asarray(wave, dtype=np.float64)[: event.length]
            level = _active_rms(wave)
            peak = float(np.max(np.abs(wave)))
            if not np.isfinite(peak) or level < 1e-6:
                raise DassError(f"{plan.name}: source {event.source} rendered silence or NaN")
            scale = min(EVENT_RMS / level, EVENT_MAX_PEAK / peak) * 10 ** (event.gain_db / 20)
            mix[event.onset: event.onset + len(wave)] += _fade(wave) * scale
        rng = np.random.default_rng([*plan.events[0].seed[:3], 999])
        background = room_tone(rng, CLIP_SAMPLES)
        mix += background / (np.sqrt(np.mean(background**2)) + 1e-12) * EVENT_RMS * 10 ** (plan.background_db / 20)
        peak = float(np.max(np.abs(mix)))
        if not np.isfinite(peak) or peak <= 0:
            raise DassError(f"{plan.name}: the mix is silent or not finite")
        clips.append((mix * (10 ** (plan.peak_db / 20) / peak)).astype(np.float32))
    return clips


def _write_flac(path: Path, wave: np.ndarray) -> None:
    """Write 16-bit mono FLAC at 16 kHz atomically (temporary file + rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".flac.tmp", dir=path.parent)
    os.close(fd)
    try:
        soundfile.write(tmp, wave, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        os.chmod(tmp, 0o644)  # mkstemp makes files private (0600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes files private (0600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def clip_path(out_dir: Path, plan: ClipPlan) -> Path:
    return out_dir / "audio" / plan.split / f"{plan.name}.flac"


def _clip_task(args: tuple[str, list[ClipPlan], list[bool]]) -> int:
    """Worker: render the clips of a chunk (a prefix of one) and write the ``wanted`` ones; returns how many."""
    out_dir, plans, wanted = Path(args[0]), args[1], args[2]
    for plan, wave in zip(plans, render_clips(plans, wanted)):
        if wave is not None:
            _write_flac(clip_path(out_dir, plan), wave)
    return sum(wanted)


def _haystack_task(args: tuple[str, str, int, int, int]) -> int:
    """Worker: write one long haystack waveform (``babble`` or ``noise``); returns 0 (no clips)."""
    out_dir, kind, number, seconds, seed = args
    rng = np.random.default_rng([seed, _HAYSTACK_TAG, 1 if kind == "babble" else 2, number])
    num_samples = seconds * SAMPLE_RATE
    if kind == "babble":
        wave = babble(rng, num_samples, SAMPLE_RATE, heldout=True)
    else:
        wave = noise_haystack(rng, num_samples)
    wave = np.asarray(wave, dtype=np.float64)
    wave = (wave * (0.9 / np.max(np.abs(wave)))).astype(np.float32)
    _write_flac(haystack_path(Path(out_dir), kind, number), wave)
    return 0


def haystack_path(out_dir: Path, kind: str, number: int) -> Path:
    return out_dir / "haystacks" / kind / f"{kind}_{number:02d}.flac"


# ------------------------------------------------------------------------------------------------
# The corpus
# ------------------------------------------------------------------------------------------------

def available_backends(requested: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``requested`` minus the backends whose programs or data are missing (with a warning naming them)."""
    unknown = [b for b in requested if b not in BACKENDS]
    if unknown:
        raise DassError(f"unknown sources {unknown}: choose from {', '.join(BACKENDS)}")
    checks = {"fluidsynth": fluidsynth_available, "espeak": espeak_available}
    usable = []
    for backend in BACKENDS:
        if backend not in requested:
            continue
        missing = checks[backend]() if backend in checks else None
        if missing:
            warnings.warn(f"dass synth: skipping the {backend} sources: missing {missing}", stacklevel=2)
            continue
        usable.append(backend)
    if not usable:
        raise DassError(f"none of the requested sources ({', '.join(requested)}) is available")
    return tuple(usable)


def corpus_labels(backends: tuple[str, ...]) -> list[LabelInfo]:
    """The classes a corpus made from ``backends`` can contain, indexed 0..K-1."""
    names = {label for s in sources_for_backends(backends) for label in s.labels}
    return synth_labels(names)


def _check_config(out_dir: Path, options: SynthOptions) -> None:
    """Refuse to mix clips made with other options into ``out_dir``; record the options."""
    config_path = out_dir / "synth_config.json"
    wanted = options.config()
    if config_path.exists():
        try:
            existing = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DassError(f"{config_path}: unreadable ({e}); remove it or use another directory") from None
        if existing != wanted:
            raise DassError(f"{out_dir} holds a corpus made with other options ({existing}), "
                            f"not {wanted}: use another output directory")
    else:
        _write_text(config_path, json.dumps(wanted, indent=2) + "\n")


def _datafile(out_dir: Path, plans: list[ClipPlan], labels: list[LabelInfo], absolute: bool) -> dict:
    mid_of = {label.display_name: label.mid for label in labels}
    index_of = {label.display_name: label.index for label in labels}
    data = []
    for plan in plans:
        path = clip_path(out_dir, plan)
        wav = str(path.resolve()) if absolute else str(path.relative_to(out_dir))
        names = sorted(plan.labels, key=index_of.__getitem__)
        events = [{"source": e.source, "onset_s": round(e.onset / SAMPLE_RATE, 3),
                   "duration_s": round(e.length / SAMPLE_RATE, 3)} for e in plan.events]
        data.append({"wav": wav, "labels": ",".join(mid_of[n] for n in names), "events": events})
    return {"data": data}


def _stats(plans_by_split: dict[str, list[ClipPlan]], labels: list[LabelInfo], options: SynthOptions,
           wall_s: float, cpu_s: float, haystacks: list[Path]) -> dict:
    per_class = []
    for label in labels:
        row = {"index": label.index, "mid": label.mid, "display_name": label.display_name}
        for split, plans in plans_by_split.items():
            row[split] = sum(label.display_name in p.labels for p in plans)
        per_class.append(row)
    per_source = {name: {split: sum(any(e.source == name for e in p.events) for p in plans)
                         for split, plans in plans_by_split.items()}
                  for name in [s.name for s in sources_for_backends(options.backends)]}
    splits = {split: {"clips": len(plans), "duration_s": len(plans) * CLIP_SECONDS,
                      "events": sum(len(p.events) for p in plans),
                      "labels_per_clip": float(np.mean([len(p.labels) for p in plans])) if plans else 0.0}
              for split, plans in plans_by_split.items()}
    return {"config": options.config(), "num_classes": len(labels), "splits": splits, "classes": per_class,
            "sources": per_source, "haystacks": [str(p) for p in haystacks],
            "wall_s": round(wall_s, 2), "cpu_s": round(cpu_s, 2)}


def stats_markdown(stats: dict) -> str:
    """Human-readable summary of :func:`_stats`' dictionary."""
    splits = list(stats["splits"])
    lines = [f"Corpus: {stats['num_classes']} classes, sources: {', '.join(stats['config']['sources'])}, "
             f"seed {stats['config']['seed']}.", ""]
    lines += ["| split | clips | duration | events | labels per clip |", "|---|---|---|---|---|"]
    for split, info in stats["splits"].items():
        hours = info["duration_s"] / 3600
        lines.append(f"| {split} | {info['clips']} | {info['duration_s']} s ({hours:.2f} h) | {info['events']} "
                     f"| {info['labels_per_clip']:.2f} |")
    lines += ["", f"Wall time {stats['wall_s']:.1f} s, CPU time (this process and its children) "
              f"{stats['cpu_s']:.1f} s.", ""]
    lines += ["| index | mid | display name | " + " | ".join(splits) + " |",
              "|---|---|---|" + "---|" * len(splits)]
    for row in stats["classes"]:
        lines.append(f"| {row['index']} | `{row['mid']}` | {row['display_name']} | "
                     + " | ".join(str(row[s]) for s in splits) + " |")
    lines += ["", "Clips led or joined by each source:", "", "| source | " + " | ".join(splits) + " |",
              "|---|" + "---|" * len(splits)]
    for name, counts in stats["sources"].items():
        lines.append(f"| {name} | " + " | ".join(str(counts[s]) for s in splits) + " |")
    if stats["haystacks"]:
        lines += ["", "Haystacks: " + ", ".join(stats["haystacks"])]
    return "\n".join(lines) + "\n"


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def build_corpus(out_dir: str | os.PathLike, num_train: int = 3000, num_eval: int = 600, seed: int = 0,
                 sources: tuple[str, ...] | list[str] = BACKENDS, workers: int = 2, haystacks: bool = False,
                 haystack_count: int = 3, haystack_seconds: int = 300, absolute_paths: bool = False,
                 progress: bool = True) -> dict:
    """Build (or finish building) the corpus in ``out_dir``; returns the statistics (also in stats.json).

    Deterministic for ``(seed, sources)``; missing programs (fluidsynth, espeak-ng) drop their sources with
    a warning. ``workers`` processes render in parallel (1: in this process).
    """
    from tqdm import tqdm

    if num_train < 0 or num_eval < 0 or num_train + num_eval == 0:
        raise DassError(f"need a positive number of clips, got train={num_train} eval={num_eval}")
    if workers < 1:
        raise DassError(f"workers must be >= 1, got {workers}")
    if seed < 0:
        raise DassError(f"seed must be >= 0, got {seed}")
    if haystacks and (haystack_count < 1 or haystack_seconds < CLIP_SECONDS):
        raise DassError(f"haystacks need a count >= 1 and >= {CLIP_SECONDS} s each, "
                        f"got {haystack_count} x {haystack_seconds} s")
    start_wall, start_cpu = time.perf_counter(), _cpu_seconds()
    options = SynthOptions(seed=seed, backends=available_backends(tuple(sources)), absolute_paths=absolute_paths)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DassError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    _check_config(out, options)
    labels = corpus_labels(options.backends)
    source_list = sources_for_backends(options.backends)

    plans_by_split = {split: [plan_clip(seed, split, i, source_list) for i in range(n)]
                      for split, n in (("train", num_train), ("eval", num_eval))}
    tasks: list = []
    for split, plans in plans_by_split.items():
        (out / "audio" / split).mkdir(parents=True, exist_ok=True)
        # Fixed chunks of CHUNK_CLIPS indices, rendered from their start up to their last missing clip,
        # so a clip's audio never depends on N, on the workers or on what an earlier run finished.
        for first in range(0, len(plans), CHUNK_CLIPS):
            chunk = plans[first: first + CHUNK_CLIPS]
            missing = [not clip_path(out, p).exists() for p in chunk]
            if any(missing):
                last = max(i for i, m in enumerate(missing) if m)
                tasks.append((_clip_task, (str(out), chunk[: last + 1], missing[: last + 1])))
    haystack_files: list[Path] = []
    if haystacks:
        kinds = ["noise"] + (["babble"] if "espeak" in options.backends else [])
        if "espeak" not in options.backends:
            warnings.warn("dass synth: no babble haystacks without espeak-ng", stacklevel=2)
        for kind in kinds:
            (out / "haystacks" / kind).mkdir(parents=True, exist_ok=True)
            for number in range(haystack_count):
                path = haystack_path(out, kind, number)
                haystack_files.append(path)
                if not path.exists():
                    tasks.insert(0, (_haystack_task, (str(out), kind, number, haystack_seconds, seed)))

    total_clips = sum(sum(t[1][2]) for t in tasks if t[0] is _clip_task)
    with tqdm(total=total_clips, unit="clip", desc="dass synth", disable=not progress, file=sys.stderr) as bar:
        if workers == 1 or len(tasks) <= 1:
            for function, arguments in tasks:
                bar.update(function(arguments))
        else:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for done in pool.imap_unordered(_run_task, tasks):
                    bar.update(done)
                pool.close()
                pool.join()  # reaped workers count in RUSAGE_CHILDREN (the CPU time in the stats)

    for split, plans in plans_by_split.items():
        datafile = _datafile(out, plans, labels, absolute_paths)
        _write_text(out / f"{split}.json", json.dumps(datafile, indent=1) + "\n")
    write_class_labels_csv(out / "class_labels_indices.csv", labels)
    stats = _stats(plans_by_split, labels, options, time.perf_counter() - start_wall,
                   _cpu_seconds() - start_cpu, [p.relative_to(out) for p in haystack_files])
    _write_text(out / "stats.json", json.dumps(stats, indent=1) + "\n")
    _write_text(out / "stats.md", stats_markdown(stats))
    return stats


def _run_task(task: tuple) -> int:
    function, arguments = task
    return function(arguments)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (used to check that builds are reproducible)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


__all__ = ["CLIP_SAMPLES", "CLIP_SECONDS", "ClipPlan", "EventPlan", "SynthOptions", "build_corpus",
           "corpus_labels", "file_sha256", "plan_clip", "render_clips", "stats_markdown"]
