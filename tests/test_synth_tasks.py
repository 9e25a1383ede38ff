"""The offline task families of ``dass synth --task``: deterministic for a seed, the promised splits
(keyword test voices never in training, speakers split by utterance, tagging windows labelled from
the events, an unlabelled pool of training voices), resumable, tiny sizes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from dass.data import synth_speech
from dass.errors import DassError

pytestmark = pytest.mark.skipif(synth_speech.espeak_available() is not None, reason="espeak-ng is not installed")


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.flac"))
    }


def entries(path: Path) -> list[dict]:
    return json.loads(path.read_text())["data"]


def test_keywords_deterministic_with_unseen_test_voices(tmp_path: Path) -> None:
    from dass.data.labels import read_class_labels_csv
    from dass.data.synth_tasks import KEYWORDS, TEST_VARIANTS, VALID_VARIANTS, build_keywords

    kwargs = dict(num_train=40, num_valid=8, num_test=12, seed=3, workers=1, progress=False)
    stats = build_keywords(tmp_path / "a", **kwargs)
    assert {s: i["clips"] for s, i in stats["splits"].items()} == {"train": 40, "valid": 8, "test": 12}
    labels = read_class_labels_csv(tmp_path / "a/class_labels_indices.csv")
    assert [label.display_name for label in labels] == list(KEYWORDS) and len(labels) == 35
    train, valid, test = (entries(tmp_path / f"a/{s}.json") for s in ("train", "valid", "test"))
    assert [e["labels"] for e in train[:36]] == [f"/kws/{w}" for w in KEYWORDS] + ["/kws/backward"]
    voices = {name: {e["voice"] for e in split} for name, split in (("train", train), ("valid", valid), ("test", test))}
    assert not voices["train"] & voices["test"] and not voices["train"] & voices["valid"]
    variant = lambda v: v.split("+")[1] if v.startswith("espeak:") else v  # noqa: E731
    assert {variant(v) for v in voices["test"]} <= set(TEST_VARIANTS) | {"festival:ked_diphone"}
    assert {variant(v) for v in voices["valid"]} <= set(VALID_VARIANTS)
    assert not {variant(v) for v in voices["train"]} & (set(TEST_VARIANTS) | set(VALID_VARIANTS))
    wave, rate = soundfile.read(tmp_path / "a" / train[0]["wav"])
    assert rate == 16000 and wave.shape == (16000,) and 0.05 < np.abs(wave).max() <= 1.0
    first = digests(tmp_path / "a")
    assert len(first) == 60
    build_keywords(tmp_path / "b", **kwargs)
    assert digests(tmp_path / "b") == first  # same seed, same audio
    # resume: a removed clip comes back identical; a different seed in the same folder is refused
    (tmp_path / "a" / test[5]["wav"]).unlink()
    build_keywords(tmp_path / "a", **kwargs)
    assert digests(tmp_path / "a") == first
    with pytest.raises(DassError, match="holds a corpus made with other options"):
        build_keywords(tmp_path / "a", **{**kwargs, "seed": 4})
    build_keywords(tmp_path / "c", **{**kwargs, "seed": 4, "num_valid": 0, "num_test": 0})
    assert digests(tmp_path / "c") != {k: v for k, v in first.items() if "train" in k}


def test_speakers_split_by_utterance(tmp_path: Path) -> None:
    from dass.data.synth_tasks import build_speakers

    stats = build_speakers(tmp_path / "s", num_speakers=3, utterances=(2, 1, 1), seed=0, workers=1, progress=False)
    assert stats["num_classes"] == 3
    splits = {s: entries(tmp_path / f"s/{s}.json") for s in ("train", "valid", "test")}
    for split, per_speaker in (("train", 2), ("valid", 1), ("test", 1)):
        labels = [e["labels"] for e in splits[split]]
        assert sorted(labels) == sorted([f"/spk/{k:03d}" for k in range(3)] * per_speaker)
        for e in splits[split]:
            info = soundfile.info(tmp_path / "s" / e["wav"])
            assert info.samplerate == 16000 and 2.0 <= info.duration <= 6.0
    files = {e["wav"] for s in splits.values() for e in s}
    assert len(files) == 12
    first = digests(tmp_path / "s")
    build_speakers(tmp_path / "t", num_speakers=3, utterances=(2, 1, 1), seed=0, workers=1, progress=False)
    assert digests(tmp_path / "t") == first
    with pytest.raises(DassError, match=r"--speakers must be in \[1, "):
        build_speakers(tmp_path / "u", num_speakers=100000, workers=1, progress=False)


def test_tagging_windows_take_their_labels_from_the_events(tmp_path: Path) -> None:
    from dass.data.labels import read_class_labels_csv
    from dass.data.synth import build_corpus
    from dass.data.synth_sources import SOURCES
    from dass.data.synth_tasks import build_tagging

    build_corpus(
        tmp_path / "corpus", num_train=10, num_eval=3, seed=2, sources=["procedural"], workers=1, progress=False
    )
    stats = build_tagging(tmp_path / "tag", corpus=tmp_path / "corpus", seconds=2.5, workers=1, progress=False)
    assert {s: i["clips"] for s, i in stats["splits"].items()} == {"train": 9 * 4, "valid": 1 * 4, "test": 3 * 4}
    mids = {label.display_name: label.mid for label in read_class_labels_csv(tmp_path / "tag/class_labels_indices.csv")}
    corpus = entries(tmp_path / "corpus/train.json")
    windows = entries(tmp_path / "tag/train.json")
    source_wave, _ = soundfile.read(tmp_path / "corpus" / corpus[0]["wav"], dtype="float32")
    for w in range(4):
        start, end = 2.5 * w, 2.5 * (w + 1)
        want = set()
        for event in corpus[0]["events"]:
            overlap = min(end, event["onset_s"] + event["duration_s"]) - max(start, event["onset_s"])
            if overlap >= min(0.5, event["duration_s"] / 2):
                want |= {mids[n] for n in SOURCES[event["source"]].labels}
        assert set(filter(None, windows[w]["labels"].split(","))) == want
        wave, _ = soundfile.read(tmp_path / "tag" / windows[w]["wav"], dtype="float32")
        np.testing.assert_allclose(wave, source_wave[int(start * 16000) : int(end * 16000)], atol=1e-4)
    assert entries(tmp_path / "tag/test.json")[0]["wav"].startswith("audio/test/eval_000000_w0")


def test_unlabelled_pool_mixes_sources_with_training_voices(tmp_path: Path) -> None:
    from dass.audio import save_audio
    from dass.data.synth_tasks import build_unlabelled, festival_voices, keyword_voices
    from dass.data.unlabelled import list_audio_files

    extra = tmp_path / "mine"
    extra.mkdir()
    save_audio(extra / "a.wav", np.zeros(8000, dtype=np.float32) + 0.01, 16000)
    kwargs = dict(num_clips=24, seconds=2.0, seed=1, sources=("procedural", "espeak"), workers=1, progress=False)
    stats = build_unlabelled(tmp_path / "pool", add=[str(extra)], **kwargs)
    pool = entries(tmp_path / "pool/unlabelled.json")
    assert (
        len(pool) == 25 and all(e["labels"] == "" for e in pool) and pool[-1]["wav"] == str((extra / "a.wav").resolve())
    )
    kinds = {e["kind"] for e in pool}
    assert kinds >= {"words", "utterance", "scene", "added"}
    train_voices = {str(v) for v in keyword_voices("train", festival_voices())}
    assert {e["voice"] for e in pool if "voice" in e} <= train_voices
    for e in pool[:-1]:
        info = soundfile.info(tmp_path / "pool" / e["wav"])
        assert info.samplerate == 16000 and info.frames == 32000
    assert list_audio_files(tmp_path / "pool/unlabelled.txt") == list_audio_files(tmp_path / "pool/unlabelled.json")
    assert stats["splits"]["pool"]["clips"] == 24
    first = digests(tmp_path / "pool")
    build_unlabelled(tmp_path / "pool2", **kwargs)
    assert digests(tmp_path / "pool2") == first


def test_cli_synth_task(tmp_path: Path, capsys) -> None:
    from dass.cli import main

    assert (
        main(
            [
                "synth",
                str(tmp_path / "k"),
                "--task",
                "keywords",
                "--train",
                "5",
                "--valid",
                "2",
                "--test",
                "2",
                "--workers",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    assert "5 train, 2 valid, 2 test clips, 35 classes" in capsys.readouterr().out
    assert main(["synth", str(tmp_path / "s"), "--task", "speakers", "--utterances", "1,1", "--quiet"]) == 1
    assert "--utterances must be three integers" in capsys.readouterr().err
