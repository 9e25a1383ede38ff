"""dass.batch: a folder of ~50 files (some corrupt) in one job, SIGKILL + resume, batch > 1 == batch 1,
the three output formats, the inputs (folders, --glob, lists, datafiles) and ``dass tag`` over a folder."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from dass.batch import collect_paths, read_rows, tag
from dass.batch.store import ResultStore
from dass.checkpoints import save_pretrained
from dass.cli import main as cli_main
from dass.errors import DassError
from dass.features import FeatureExtractor
from dass.models.dass import DASS, DASSConfig

torch.set_num_threads(1)
LABELS = ["Speech", "Dog", "Music", "Rain", "Siren"]
CORRUPT = {"07_bad.wav": b"RIFF\x10\x00\x00\x00WAVEfmt garbage", "19_empty.wav": b"",
           "33_text.flac": b"this is not audio at all\n" * 10}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A folder of 50 files (47 clips of 1-14 s, mono/stereo, 16/22.05 kHz, in sub-folders; 3 corrupt) + a model."""
    root = tmp_path_factory.mktemp("archive")
    rng = np.random.default_rng(0)
    for i in range(50):
        name = next((n for n in CORRUPT if n.startswith(f"{i:02d}_")), None)
        folder = root / "audio" / ("sub" if i % 3 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        if name is not None:
            (folder / name).write_bytes(CORRUPT[name])
            continue
        rate = 22050 if i % 5 == 0 else 16000
        seconds = 1.0 + (i % 4) * 0.7 if i % 11 else 14.0
        t = np.arange(int(rate * seconds)) / rate
        wave = 0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t)
        if i % 7 == 0:
            wave = np.stack([wave, 0.5 * wave], axis=1)
        sf.write(folder / f"{i:02d}_clip.{'flac' if i % 2 else 'wav'}", wave.astype(np.float32), rate)
    (root / "audio" / "notes.txt").write_text("not picked up by the folder scan")
    torch.manual_seed(0)
    config = DASSConfig(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), num_classes=5, labels=LABELS)
    model = DASS(config).eval()
    save_pretrained(model, root / "model")
    return root, model


def rows_of(path) -> list[dict]:
    return list(read_rows(path))


def test_folder_job_one_row_per_file_errors_recorded(archive, tmp_path) -> None:
    root, model = archive
    paths = collect_paths([str(root / "audio")])
    assert len(paths) == 50 and paths == sorted(paths, key=lambda p: os.path.relpath(p, root / "audio"))
    summary = tag(paths, model, tmp_path / "out.jsonl", workers=1, batch_size=4)
    rows = rows_of(tmp_path / "out.jsonl")
    assert [r["file"] for r in rows] == paths
    assert (summary.tagged, summary.failed, summary.skipped) == (47, 3, 0)
    failed = {os.path.basename(r["file"]): r["error"] for r in rows if r["status"] == "error"}
    assert set(failed) == set(CORRUPT)
    assert "empty file" in failed["19_empty.wav"] and all(name in failed[name] for name in failed)
    # a clip's scores equal an independent computation: FeatureExtractor (1024 frames) + the model's forward
    for row in rows:
        if row["status"] != "ok" or row["duration_s"] > 10:
            continue
        wave, rate = sf.read(row["file"], dtype="float32", always_2d=True)
        if rate != 16000:
            continue
        features = FeatureExtractor(max_length=1024)(torch.from_numpy(wave.mean(axis=1)))["input_values"]
        with torch.no_grad():
            expected = torch.sigmoid(model(features))[0]
        np.testing.assert_allclose(row["scores"], expected.numpy(), atol=2e-5)
        assert row["top"][0]["label"] == LABELS[int(expected.argmax())]
        assert row["model_frames"] == 1024 and row["frames"] == round(row["duration_s"] * 100) - 2
    # the rerun skips everything
    again = tag(paths, model, tmp_path / "out.jsonl", workers=0)
    assert (again.tagged, again.failed, again.skipped) == (0, 0, 50)


def test_batch_size_does_not_change_results(archive) -> None:
    root, model = archive
    paths = collect_paths([str(root / "audio")])
    one = tag(paths, model, workers=0, batch_size=1).rows
    many = tag(paths, model, workers=0, batch_size=7).rows
    assert [r["file"] for r in one] == [r["file"] for r in many]
    for a, b in zip(one, many):
        assert a["status"] == b["status"]
        if a["status"] == "ok":
            np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5, rtol=0)
            assert [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]


def test_sigkill_and_resume_gives_the_uninterrupted_file(archive, tmp_path) -> None:
    """A real SIGKILL in the middle of a job (plus a torn last row); the rerun's file equals an uninterrupted run's."""
    root, _ = archive
    command = [sys.executable, "-m", "dass", "tag", str(root / "audio"), "--model", str(root / "model"),
               "--workers", "0", "--batch-size", "1", "--threads", "1"]
    reference = tmp_path / "reference.jsonl"
    subprocess.run(command + ["--output", str(reference)], check=False, capture_output=True, timeout=600)
    assert len(reference.read_bytes().splitlines()) == 50

    output = tmp_path / "killed.jsonl"
    job = subprocess.Popen(command + ["--output", str(output)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not output.exists() or output.read_bytes().count(b"\n") < 12):
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.wait()
    lines = output.read_bytes().count(b"\n")
    assert 12 <= lines < 50, "the job was not killed in the middle"
    with open(output, "ab") as handle:  # what a kill inside write() leaves: half a row
        handle.write(b'{"file": "' + str(root).encode() + b'/audio/half-writ')
    resumed = subprocess.run(command + ["--output", str(output)], check=False, capture_output=True, text=True,
                             timeout=600)
    tagged, failed = map(int, re.search(r"(\d+) tagged, (\d+) failed", resumed.stderr).groups())
    assert tagged + failed == 50 - lines and f"{lines} already in" in resumed.stderr
    assert output.read_bytes() == reference.read_bytes()
    files = [r["file"] for r in rows_of(output)]
    assert len(files) == len(set(files)) == 50


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_formats_resume_from_a_torn_tail(archive, tmp_path, suffix) -> None:
    pytest.importorskip("pyarrow") if suffix == ".parquet" else None
    root, model = archive
    paths = collect_paths([str(root / "audio")])[:14]
    whole = tmp_path / f"whole{suffix}"
    tag(paths, model, whole, workers=0, batch_size=3)
    part = tmp_path / f"part{suffix}"
    tag(paths[:6], model, part, workers=0, batch_size=3)
    if suffix == ".parquet":  # interrupted after the journal got rows 6..8 and half of row 9
        tag(paths[6:9], model, tmp_path / "more.jsonl", workers=0)
        journal = tmp_path / "part.parquet.journal.jsonl"
        journal.write_bytes((tmp_path / "more.jsonl").read_bytes() + b'{"file": "x", "sta')
    else:
        with open(part, "ab") as handle:
            handle.write(b'"/some/file.wav",ok,,3.0,29' if suffix == ".csv" else b'{"file": "/a.wav", "status": "o')
    summary = tag(paths, model, part, workers=0, batch_size=3)
    assert summary.skipped == (9 if suffix == ".parquet" else 6)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        assert pq.read_table(part).equals(pq.read_table(whole))
        assert not (tmp_path / "part.parquet.journal.jsonl").exists()
    else:
        assert part.read_bytes() == whole.read_bytes()
    assert rows_of(part) == rows_of(whole)
    if suffix == ".csv":
        import pandas as pd

        frame = pd.read_csv(part)
        assert frame["file"].tolist() == paths and list(frame.columns[-5:]) == LABELS
        ok = frame[frame["status"] == "ok"]
        np.testing.assert_allclose(ok[LABELS].to_numpy(), [r["scores"] for r in rows_of(whole) if r["scores"]])


def test_store_refuses_another_models_file_and_retries_errors(archive, tmp_path) -> None:
    root, model = archive
    paths = collect_paths([str(root / "audio")])[3:7]
    assert os.path.basename(paths[1]) == "07_bad.wav"
    out = tmp_path / "o.csv"
    tag(paths, model, out, workers=0)
    with pytest.raises(DassError, match="columns are not those of this job"):
        ResultStore(out, ["a", "b"])
    with pytest.raises(DassError, match="must end in .jsonl, .csv or .parquet"):
        ResultStore(tmp_path / "o.txt", LABELS)
    again = tag(paths, model, out, workers=0, retry_errors=True)
    assert (again.skipped, again.failed) == (3, 1)
    assert [r["file"] for r in rows_of(out)] == [p for p in paths if "bad" not in p] + [paths[1]]
    out.write_bytes(out.read_bytes().replace(b"\n", b"\nX,", 1))  # damage in the middle, not a torn tail
    with pytest.raises(DassError, match="damaged in the middle"):
        ResultStore(out, LABELS)


def test_inputs_glob_list_datafile(archive, tmp_path) -> None:
    root, _ = archive
    audio = root / "audio"
    flacs = collect_paths([str(audio)], glob="*.flac")
    assert len(flacs) == 23 and all(p.endswith(".flac") for p in flacs)  # 22 odd-numbered clips + 33_text.flac
    assert collect_paths([str(audio)], glob="sub/*") == [p for p in collect_paths([str(audio)]) if "/sub/" in p]
    listing = tmp_path / "files.txt"
    listing.write_text(f"# two files\n{audio}/01_clip.flac\n\n../{os.path.relpath(audio, tmp_path.parent)}/02_clip.wav\n")
    datafile = tmp_path / "eval.json"
    datafile.write_text(json.dumps({"data": [{"wav": f"{audio}/04_clip.wav", "labels": "/m/x"},
                                             {"wav": f"{audio}/01_clip.flac", "labels": ""}]}))
    assert collect_paths(lists=[listing], datafiles=[datafile]) == [
        f"{audio}/01_clip.flac", f"{audio}/02_clip.wav", f"{audio}/04_clip.wav"]  # duplicates dropped
    with pytest.raises(DassError, match="no files matching"):
        collect_paths([str(audio)], glob="*.mp3")
    with pytest.raises(DassError, match="no such list"):
        collect_paths(lists=[tmp_path / "missing.txt"])


def test_cli_folder_events_and_text(archive, tmp_path, capsys) -> None:
    root, _ = archive
    events_dir = tmp_path / "ev"
    out = tmp_path / "tags.jsonl"
    code = cli_main(["tag", str(root / "audio" / "sub"), "--model", str(root / "model"), "--output", str(out),
                     "--events", "--events-dir", str(events_dir), "--events-format", "raven", "--workers", "0",
                     "--on-threshold", "0.0", "--off-threshold", "0.0", "--min-duration", "0"])
    rows = rows_of(out)
    assert code == 1 and len(rows) == 17 and sum(r["status"] == "error" for r in rows) == 1  # 33_text.flac
    long_row = next(r for r in rows if r["duration_s"] == 14.0)
    # threshold 0: every class is one event over the whole file's audio, not over its zero padding
    assert [(e["onset_s"], e["offset_s"]) for e in long_row["events"]] == [(0.0, 13.98)] * 5
    short = next(r for r in rows if r["status"] == "ok" and r["duration_s"] < 3)
    assert {e["offset_s"] for e in short["events"]} == {round(short["frames"] * 0.01, 3)}
    raven = sorted(p.name for p in events_dir.iterdir())
    assert len(raven) == 16 and all(name.endswith(".selections.txt") for name in raven)
    capsys.readouterr()
    assert cli_main(["tag", long_row["file"], "--model", str(root / "model"), "--events", "--on-threshold", "0",
                     "--off-threshold", "0", "--workers", "0"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0] == f"{long_row['file']}  (14.00 s, 1398 frames)"
    assert text[6] == "  events (5):" and text[7].split() == ["0.00-13.98", "s", "(", "13.98", "s)",
                                                               f"{long_row['events'][0]['peak']:.3f}", "Speech"]
    assert cli_main(["tag", "--list", str(tmp_path / "nothing.txt"), "--model", str(root / "model")]) == 1
    assert "no such list of files" in capsys.readouterr().err
