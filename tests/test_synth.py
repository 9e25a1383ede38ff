"""Tests of ``dass synth``: labels CSV, sources, determinism, clip format, balance, resume, haystacks."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from dass.data import synth_midi, synth_speech
from dass.data.labels import (SYNTH_CLASSES, LabelInfo, read_class_labels_csv, synth_labels,
                              write_class_labels_csv)
from dass.data.synth import (CHUNK_CLIPS, CLIP_SAMPLES, available_backends, build_corpus, corpus_labels,
                             file_sha256, plan_clip, render_clips)
from dass.data.synth_procedural import PROCEDURAL_GENERATORS, SAMPLE_RATE, pink_noise, white_noise
from dass.data.synth_sources import SOURCES, sources_for_backends
from dass.errors import DassError

HAVE_FLUIDSYNTH = synth_midi.fluidsynth_available() is None
HAVE_ESPEAK = synth_speech.espeak_available() is None

# Rows of AudioSet's class_labels_indices.csv (527 classes), copied as an independent reference.
AUDIOSET_ROWS = {
    0: ("/m/09x0r", "Speech"),
    1: ("/m/05zppz", "Male speech, man speaking"),
    2: ("/m/02zsn", "Female speech, woman speaking"),
    70: ("/m/07qfr4h", "Hubbub, speech noise, speech babble"),
    137: ("/m/04rlf", "Music"),
    153: ("/m/05r5c", "Piano"),
    162: ("/m/02hnl", "Drum kit"),
    339: ("/m/09ct_", "Helicopter"),
    392: ("/m/02c8p", "Telephone dialing, DTMF"),
    427: ("/m/032s66", "Gunshot, gunfire"),
    501: ("/m/01v_m0", "Sine wave"),
    520: ("/m/0chx_", "White noise"),
    521: ("/m/0cj0r", "Pink noise"),
}


# ------------------------------------------------------------------------------------------------
# Labels
# ------------------------------------------------------------------------------------------------

def test_synth_classes_are_audioset_classes():
    by_index = {c.audioset_index: c for c in SYNTH_CLASSES}
    for index, (mid, name) in AUDIOSET_ROWS.items():
        assert (by_index[index].mid, by_index[index].display_name) == (mid, name)
    assert len(SYNTH_CLASSES) == 59
    assert len({c.mid for c in SYNTH_CLASSES}) == 59
    assert len({c.display_name for c in SYNTH_CLASSES}) == 59
    assert len({c.audioset_index for c in SYNTH_CLASSES}) == 59
    assert all(0 <= c.audioset_index < 527 and c.mid.startswith(("/m/", "/t/")) for c in SYNTH_CLASSES)
    # every class is produced by some source, every source label is a class
    produced = {label for s in SOURCES.values() for label in s.labels}
    assert produced == {c.display_name for c in SYNTH_CLASSES}


def test_corpus_labels_per_backend():
    assert len(corpus_labels(("procedural", "fluidsynth", "espeak"))) == 59
    procedural = corpus_labels(("procedural",))
    assert [label.index for label in procedural] == list(range(15))
    assert {label.display_name for label in procedural} >= {"Sine wave", "Telephone", "Noise", "Siren"}
    assert "Music" not in {label.display_name for label in procedural}
    with pytest.raises(DassError, match=r"not classes of the synthetic corpus: \['Kazoo'\]"):
        synth_labels({"Kazoo"})


def test_labels_csv_round_trip(tmp_path):
    labels = synth_labels()
    path = tmp_path / "class_labels_indices.csv"
    write_class_labels_csv(path, labels)
    assert read_class_labels_csv(path) == labels
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[:2] == ["index,mid,display_name", '0,/m/09x0r,"Speech"']
    assert '"Male speech, man speaking"' in text
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_labels_csv_reads_audioset_format(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text('index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/05zppz,"Male speech, man speaking"\n'
                    '2,/m/0k4j,Car\n\n', encoding="utf-8")
    assert read_class_labels_csv(path) == [LabelInfo(0, "/m/09x0r", "Speech"),
                                           LabelInfo(1, "/m/05zppz", "Male speech, man speaking"),
                                           LabelInfo(2, "/m/0k4j", "Car")]


@pytest.mark.parametrize("content, message", [
    ("", r"line 1: expected the header 'index,mid,display_name', got 'an empty file'"),
    ("idx,mid,name\n0,/m/09x0r,Speech\n", r"line 1: expected the header 'index,mid,display_name', got 'idx,mid,name'"),
    ("index,mid,display_name\n", r"no classes \(only a header\)"),
    ("index,mid,display_name\n0,/m/09x0r\n", r"line 2: expected 3 fields \(index,mid,display_name\), got 2"),
    ("index,mid,display_name\nzero,/m/09x0r,Speech\n", r"line 2: index 'zero' is not an integer"),
    ("index,mid,display_name\n0,/m/09x0r,Speech\n2,/m/04rlf,Music\n", r"line 3: expected index 1, got 2"),
    ("index,mid,display_name\n0,09x0r,Speech\n", r"line 2: mid '09x0r' is not an ontology id"),
    ("index,mid,display_name\n0,/m/09x0r,\n", r"line 2: empty display_name"),
    ("index,mid,display_name\n0,/m/09x0r,A\n1,/m/09x0r,B\n", r"line 3: mid /m/09x0r repeats line 2"),
])
def test_labels_csv_errors(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DassError, match=f"bad.csv: {message}"):
        read_class_labels_csv(path)


def test_labels_csv_missing_file_and_bad_index(tmp_path):
    with pytest.raises(DassError, match=r"nope.csv: no such labels file"):
        read_class_labels_csv(tmp_path / "nope.csv")
    with pytest.raises(DassError, match=r"out.csv: label 'Music' has index 3, expected 0"):
        write_class_labels_csv(tmp_path / "out.csv", [LabelInfo(3, "/m/04rlf", "Music")])


# ------------------------------------------------------------------------------------------------
# Sources
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PROCEDURAL_GENERATORS))
def test_procedural_sources(name):
    for n in (1601, 16000 * 3 + 7):
        wave = PROCEDURAL_GENERATORS[name](np.random.default_rng([3, n]), n)
        assert wave.shape == (n,)
        assert np.all(np.isfinite(wave))
        assert np.sqrt(np.mean(wave**2)) > 1e-3  # audible from its first 0.1 s
    again = PROCEDURAL_GENERATORS[name](np.random.default_rng([3, 1601]), 1601)
    assert np.array_equal(again, PROCEDURAL_GENERATORS[name](np.random.default_rng([3, 1601]), 1601))


def _spectral_slope(wave: np.ndarray) -> float:
    """Least-squares slope of log power vs log frequency over 100 Hz - 6 kHz (averaged periodogram)."""
    frames = wave[: len(wave) // 1024 * 1024].reshape(-1, 1024) * np.hanning(1024)
    power = np.mean(np.abs(np.fft.rfft(frames, axis=1)) ** 2, axis=0)
    freqs = np.fft.rfftfreq(1024, 1 / SAMPLE_RATE)
    band = (freqs > 100) & (freqs < 6000)
    return float(np.polyfit(np.log10(freqs[band]), np.log10(power[band]), 1)[0])


def test_noise_colours():
    rng = np.random.default_rng(0)
    assert abs(_spectral_slope(white_noise(rng, 16000 * 8))) < 0.1
    assert abs(_spectral_slope(pink_noise(rng, 16000 * 8)) + 1.0) < 0.1


def test_dtmf_uses_dtmf_frequencies():
    wave = PROCEDURAL_GENERATORS["dtmf"](np.random.default_rng(5), 16000 * 4)
    spectrum = np.abs(np.fft.rfft(wave))
    freqs = np.fft.rfftfreq(len(wave), 1 / SAMPLE_RATE)
    dtmf = np.array([697, 770, 852, 941, 1209, 1336, 1477])
    near = np.min(np.abs(freqs[:, None] - dtmf[None, :]), axis=1) < 40
    assert (spectrum[near] ** 2).sum() > 0.95 * (spectrum**2).sum()


def test_midi_writer_bytes(tmp_path):
    # Variable-length quantities: the examples of the Standard MIDI File specification.
    for value, encoded in [(0, b"\x00"), (0x40, b"\x40"), (0x7F, b"\x7f"), (0x80, b"\x81\x00"),
                           (0x2000, b"\xc0\x00"), (0x3FFF, b"\xff\x7f"), (0x200000, b"\x81\x80\x80\x00"),
                           (0x0FFFFFFF, b"\xff\xff\xff\x7f")]:
        assert synth_midi._vlq(value) == encoded
    phrase = synth_midi.Phrase(program=5, notes=(synth_midi.Note(10, 300, 60, 100),), duration_ms=1000)
    path = tmp_path / "one.mid"
    synth_midi.write_midi(path, [(0, phrase)])
    data = path.read_bytes()
    assert data[:14] == b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xf4"  # format 0, 1 track, 500 ticks/quarter
    track = data[22:]
    assert int.from_bytes(data[18:22], "big") == len(track)
    assert track.startswith(b"\x00\xff\x51\x03\x07\xa1\x20")  # tempo 500000 us per quarter
    assert b"\x00\xc0\x05" in track and b"\x0a\x90\x3c\x64" in track  # program 5; note on at 10 ms
    assert b"\x82\x2c\x80\x3c\x00" in track  # note off 300 ms later
    assert track.endswith(b"\x9f\x20\xff\x2f\x00")  # end of track 4000 ms after the last event


def test_balanced_sampling_guarantees_positives():
    """Every class has >= 30 positives in 3000 train and >= 10 in 600 eval clips, for every source set."""
    for backends in [("procedural", "fluidsynth", "espeak"), ("procedural",), ("procedural", "espeak")]:
        sources = sources_for_backends(backends)
        for split, n, minimum in (("train", 3000, 30), ("eval", 600, 10)):
            plans = [plan_clip(0, split, i, sources) for i in range(n)]
            counts = {label.display_name: 0 for label in corpus_labels(backends)}
            for plan in plans:
                for label in plan.labels:
                    counts[label] += 1
                assert 1 <= len(plan.events) <= 3
                assert all(0 <= e.onset and e.onset + e.length <= CLIP_SAMPLES for e in plan.events)
            assert min(counts.values()) >= minimum, (backends, split, sorted(counts.items(), key=lambda kv: kv[1])[:3])
            leading = [plan.events[0].source for plan in plans]
            assert min(leading.count(s.name) for s in sources) >= n // len(sources)


def test_plan_does_not_depend_on_other_clips():
    sources = sources_for_backends(("procedural", "fluidsynth", "espeak"))
    assert plan_clip(4, "eval", 77, sources) == plan_clip(4, "eval", 77, sources)
    assert plan_clip(4, "eval", 77, sources) != plan_clip(5, "eval", 77, sources)
    assert plan_clip(4, "eval", 77, sources) != plan_clip(4, "train", 77, sources)
    with pytest.raises(DassError, match=r"unknown split 'test'"):
        plan_clip(0, "test", 0, sources)


# ------------------------------------------------------------------------------------------------
# Corpus building
# ------------------------------------------------------------------------------------------------

def _corpus_hashes(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): file_sha256(p) for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in ("stats.json", "stats.md")}


def _check_corpus(out: Path, num_train: int, num_eval: int) -> None:
    labels = read_class_labels_csv(out / "class_labels_indices.csv")
    mids = {label.mid for label in labels}
    seen: set[str] = set()
    for split, n in (("train", num_train), ("eval", num_eval)):
        data = json.loads((out / f"{split}.json").read_text())["data"]
        assert len(data) == n
        for k, entry in enumerate(data):
            assert entry["wav"] == f"audio/{split}/{split}_{k:06d}.flac"
            clip_labels = entry["labels"].split(",")
            assert clip_labels and set(clip_labels) <= mids and len(set(clip_labels)) == len(clip_labels)
            seen.update(clip_labels)
            assert (out / entry["wav"]).stat().st_mode & 0o777 == 0o644
            info = soundfile.info(str(out / entry["wav"]))
            assert (info.samplerate, info.channels, info.frames, info.format) == (16000, 1, CLIP_SAMPLES, "FLAC")
            wave, _ = soundfile.read(str(out / entry["wav"]), dtype="float64")
            assert np.all(np.isfinite(wave))
            assert 0.45 < np.max(np.abs(wave)) < 0.9  # peak-normalised to -6..-1 dBFS: never clipped
    assert not list(out.rglob("*.tmp"))


def test_procedural_corpus_is_deterministic_and_valid(tmp_path):
    start = time.perf_counter()
    stats = build_corpus(tmp_path / "a", num_train=14, num_eval=6, seed=3, sources=["procedural"], workers=1,
                         progress=False)
    elapsed = time.perf_counter() - start
    assert elapsed < 30  # a few seconds on an idle machine
    _check_corpus(tmp_path / "a", 14, 6)
    assert stats["num_classes"] == 15 and stats["splits"]["train"]["clips"] == 14
    assert sum(row["train"] for row in stats["classes"]) == sum(
        len(e["labels"].split(",")) for e in json.loads((tmp_path / "a" / "train.json").read_text())["data"])
    build_corpus(tmp_path / "b", num_train=14, num_eval=6, seed=3, sources=["procedural"], workers=2,
                 progress=False)
    hashes_a, hashes_b = _corpus_hashes(tmp_path / "a"), _corpus_hashes(tmp_path / "b")
    assert len(hashes_a) == 14 + 6 + 4  # clips, two JSON files, labels CSV, config
    assert hashes_a == hashes_b
    build_corpus(tmp_path / "c", num_train=14, num_eval=6, seed=4, sources=["procedural"], workers=1,
                 progress=False)
    hashes_c = _corpus_hashes(tmp_path / "c")
    assert sum(hashes_a[k] != hashes_c[k] for k in hashes_a if k.endswith(".flac")) == 20


def test_resume_extend_and_option_mismatch(tmp_path):
    out = tmp_path / "corpus"
    build_corpus(out, num_train=CHUNK_CLIPS + 3, num_eval=2, seed=1, sources=["procedural"], workers=1,
                 progress=False)
    before = _corpus_hashes(out)
    (out / "audio" / "train" / "train_000005.flac").unlink()
    (out / "audio" / "train" / "train_000017.flac").unlink()
    build_corpus(out, num_train=CHUNK_CLIPS + 3, num_eval=2, seed=1, sources=["procedural"], workers=1,
                 progress=False)
    assert _corpus_hashes(out) == before
    # growing the corpus keeps the existing clips
    build_corpus(out, num_train=CHUNK_CLIPS + 5, num_eval=2, seed=1, sources=["procedural"], workers=1,
                 progress=False)
    after = _corpus_hashes(out)
    assert {k: v for k, v in after.items() if k in before and k.endswith(".flac")} == \
        {k: v for k, v in before.items() if k.endswith(".flac")}
    assert len(json.loads((out / "train.json").read_text())["data"]) == CHUNK_CLIPS + 5
    with pytest.raises(DassError, match=r"holds a corpus made with other options .*'seed': 1.*use another output"):
        build_corpus(out, num_train=2, num_eval=2, seed=2, sources=["procedural"], workers=1, progress=False)
    with pytest.raises(DassError, match=r"unknown sources \['violins'\]"):
        build_corpus(tmp_path / "x", num_train=2, num_eval=2, sources=["violins"], progress=False)
    with pytest.raises(DassError, match=r"seed must be >= 0, got -1"):
        build_corpus(tmp_path / "x", num_train=2, num_eval=2, seed=-1, progress=False)
    with pytest.raises(DassError, match=r"need a positive number of clips"):
        build_corpus(tmp_path / "x", num_train=0, num_eval=0, progress=False)


def test_absolute_paths(tmp_path):
    build_corpus(tmp_path / "abs", num_train=1, num_eval=1, sources=["procedural"], workers=1,
                 absolute_paths=True, progress=False)
    entry = json.loads((tmp_path / "abs" / "eval.json").read_text())["data"][0]
    assert entry["wav"] == str((tmp_path / "abs" / "audio" / "eval" / "eval_000000.flac").resolve())


def test_missing_programs_are_skipped_with_a_warning(monkeypatch, tmp_path):
    monkeypatch.setattr(synth_midi.shutil, "which", lambda name: None)
    monkeypatch.setattr(synth_speech.shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match=r"skipping the fluidsynth sources: missing the 'fluidsynth' program"):
        with pytest.warns(UserWarning, match=r"skipping the espeak sources: missing the 'espeak-ng' program"):
            assert available_backends(("procedural", "fluidsynth", "espeak")) == ("procedural",)
    with pytest.warns(UserWarning):
        with pytest.raises(DassError, match=r"none of the requested sources \(fluidsynth, espeak\) is available"):
            available_backends(("fluidsynth", "espeak"))
    with pytest.warns(UserWarning, match=r"no babble haystacks without espeak-ng"), \
            pytest.warns(UserWarning, match=r"skipping the espeak sources"):
        build_corpus(tmp_path / "h", num_train=1, num_eval=1, sources=["procedural", "espeak"], workers=1,
                     haystacks=True, haystack_count=1, haystack_seconds=10, progress=False)
    assert sorted(p.name for p in (tmp_path / "h" / "haystacks").rglob("*.flac")) == ["noise_00.flac"]
    wave, rate = soundfile.read(str(tmp_path / "h" / "haystacks" / "noise" / "noise_00.flac"))
    assert rate == 16000 and wave.shape == (160000,) and 0.85 < np.max(np.abs(wave)) < 0.95


def test_cli_synth(tmp_path, capsys):
    from dass.cli import main

    assert main(["synth", str(tmp_path / "cli"), "--train", "2", "--eval", "1", "--sources", "procedural",
                 "--workers", "1", "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    _check_corpus(tmp_path / "cli", 2, 1)
    assert main(["synth", str(tmp_path / "cli"), "--sources", "kazoo", "--quiet"]) == 1
    assert "dass synth: error: unknown sources ['kazoo']" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# FluidSynth and espeak-ng (skipped without the Debian packages)
# ------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not HAVE_FLUIDSYNTH, reason="fluidsynth or the FluidR3 GM soundfont is not installed")
def test_every_instrument_renders_sound():
    names = [s.name for s in sources_for_backends(("fluidsynth",))]
    phrases = [synth_midi.make_phrase(np.random.default_rng([9, k]), SOURCES[name].instrument, 1500)
               for k, name in enumerate(names)]
    waves = synth_midi.render_segments(phrases, SAMPLE_RATE)
    for name, wave in zip(names, waves):
        assert wave.shape == (24000,) and wave.dtype == np.float32
        assert np.sqrt(np.mean(wave.astype(np.float64) ** 2)) > 1e-3, name
    # FluidSynth is deterministic for the same MIDI file
    again = synth_midi.render_segments(phrases[:3], SAMPLE_RATE)
    assert all(np.array_equal(a, b) for a, b in zip(again, waves[:3]))


@pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng is not installed")
def test_every_voice_speaks():
    variants = (synth_speech.MALE_VARIANTS + synth_speech.FEMALE_VARIANTS + synth_speech.HELDOUT_MALE_VARIANTS
                + synth_speech.HELDOUT_FEMALE_VARIANTS)
    languages = sorted(set(synth_speech.LANGUAGES + synth_speech.HELDOUT_LANGUAGES))
    voices = [f"en+{v}" for v in variants] + [f"{lang}+m3" for lang in languages]
    for voice in voices:
        result = subprocess.run(["espeak-ng", "-v", voice, "-q", "--stdout", "x"], capture_output=True, text=True)
        assert result.returncode == 0 and "Failed" not in result.stderr, (voice, result.stderr)
    wave = synth_speech.speak("Hello there.", "en+f3", 160, 50, SAMPLE_RATE)
    assert wave.dtype == np.float32 and 0.3 * SAMPLE_RATE < len(wave) < 3 * SAMPLE_RATE
    assert set(synth_speech.MALE_VARIANTS).isdisjoint(synth_speech.HELDOUT_MALE_VARIANTS)
    assert set(synth_speech.FEMALE_VARIANTS).isdisjoint(synth_speech.HELDOUT_FEMALE_VARIANTS)
    assert set(synth_speech.LANGUAGES).isdisjoint(synth_speech.HELDOUT_LANGUAGES)


@pytest.mark.skipif(not (HAVE_FLUIDSYNTH and HAVE_ESPEAK), reason="needs fluidsynth and espeak-ng")
def test_full_sources_corpus_is_deterministic(tmp_path):
    kwargs = dict(num_train=6, num_eval=3, seed=11, sources=["fluidsynth", "espeak", "procedural"],
                  haystacks=True, haystack_count=1, haystack_seconds=10, progress=False)
    build_corpus(tmp_path / "a", workers=1, **kwargs)
    build_corpus(tmp_path / "b", workers=2, **kwargs)
    _check_corpus(tmp_path / "a", 6, 3)
    assert len(read_class_labels_csv(tmp_path / "a" / "class_labels_indices.csv")) == 59
    assert _corpus_hashes(tmp_path / "a") == _corpus_hashes(tmp_path / "b")
    # resume: a clip re-rendered alone must match; its chunk's earlier phrases are rendered again first
    plans = [plan_clip(11, "train", i, sources_for_backends(("procedural", "fluidsynth", "espeak"))) for i in range(6)]
    with_midi = [i for i, p in enumerate(plans) if any(SOURCES[e.source].backend == "fluidsynth" for e in p.events)]
    assert len(with_midi) >= 2
    victim = tmp_path / "a" / "audio" / "train" / f"train_{with_midi[-1]:06d}.flac"
    victim.unlink()
    build_corpus(tmp_path / "a", workers=1, **kwargs)
    assert _corpus_hashes(tmp_path / "a") == _corpus_hashes(tmp_path / "b")
    babble, rate = soundfile.read(str(tmp_path / "a" / "haystacks" / "babble" / "babble_00.flac"))
    assert rate == 16000 and babble.shape == (160000,)
    # render_clips on its own gives the clip the corpus wrote (up to 16-bit quantisation)
    sources = sources_for_backends(("procedural", "fluidsynth", "espeak"))
    plans = [plan_clip(11, "eval", i, sources) for i in range(3)]
    clips = render_clips(plans)
    written, _ = soundfile.read(str(tmp_path / "a" / "audio" / "eval" / "eval_000002.flac"), dtype="float32")
    assert np.max(np.abs(clips[2] - written)) <= 1 / 32768 + 1e-7


def test_smoothing_a_gate_shorter_than_the_ramp_keeps_its_length():
    # A digit tone cut to a few samples at the end of a clip used to crash dtmf() (kernel longer than gate).
    from dass.data.synth_procedural import _smooth_edges

    out = _smooth_edges(np.ones(14), 0.004)
    assert out.shape == (14,)
    assert np.all(np.isfinite(out)) and out.max() <= 1.0 + 1e-12


def test_procedural_clips_that_cut_a_tone_short_render(tmp_path):
    # Seed 1, procedural only: train clip 91 ends inside a DTMF digit (regression for the crash above).
    from dass.data.synth import build_corpus

    build_corpus(tmp_path / "c", num_train=92, num_eval=0, seed=1, sources=("procedural",), workers=1, progress=False)
    assert len(list((tmp_path / "c" / "audio" / "train").glob("*.flac"))) == 92
