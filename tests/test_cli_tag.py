"""``dass tag``: text and JSON output on a wav written here, with a local model folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from dass.checkpoints import save_pretrained
from dass.cli import main as cli_main
from dass.features import FeatureExtractor
from dass.models.dass import DASS, DASSConfig

torch.set_num_threads(1)

HUB_ID = "saurabhati/DASS_small_AudioSet_50.1"  # the default model; never reached in tests
LABELS = ["Speech", "Dog", "Music", "Rain", "Engine", "Bird", "Siren"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 12 s wav (longer than 1024 frames), a 2 s wav, a labelled tiny model folder, an unlabelled one."""
    root = tmp_path_factory.mktemp("tag")
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 12) / 16000
    long_wave = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) / 2
    sf.write(root / "long.wav", (long_wave + 0.01 * rng.standard_normal(t.size)).astype(np.float32), 16000)
    sf.write(root / "short.wav", (0.2 * rng.standard_normal(32000)).astype(np.float32), 16000)
    torch.manual_seed(0)
    micro = DASSConfig(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), num_classes=7)  # fast on CPU
    model = DASS(DASSConfig.from_dict({**micro.to_dict(), "labels": LABELS})).eval()
    save_pretrained(model, root / "model")
    save_pretrained(DASS(micro).eval(), root / "unlabelled")
    return root, model


def expected_probabilities(model, path, frames: int | None) -> torch.Tensor:
    """Independent computation: features padded/cut to ``frames`` (None: the whole file), sigmoid of the logits."""
    waveform, rate = sf.read(path, dtype="float32")
    assert rate == 16000
    features = FeatureExtractor(max_length=frames)(torch.from_numpy(waveform))["input_values"]
    with torch.no_grad():
        return torch.sigmoid(model(features))[0]


def test_text_output(setup, capsys) -> None:
    root, model = setup
    wav = str(root / "long.wav")
    assert cli_main(["tag", wav, "--model", str(root / "model"), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{wav}  (12.00 s, 1198 frames)"  # the whole file: no 1024-frame cut
    probs = expected_probabilities(model, wav, None)
    order = torch.argsort(probs, descending=True)[:5].tolist()
    assert len(lines) == 6
    for line, index in zip(lines[1:], order):
        match = re.fullmatch(r"  (\d\.\d{4})  (.+)", line)
        assert match, line
        assert match.group(2) == LABELS[index]
        assert float(match.group(1)) == pytest.approx(probs[index].item(), abs=6e-5)


def test_json_output_threshold_and_several_files(setup, capsys) -> None:
    root, model = setup
    files = [str(root / "short.wav"), str(root / "long.wav")]
    probs = [expected_probabilities(model, files[0], 1024), expected_probabilities(model, files[1], None)]
    threshold = float(probs[0].median())  # keeps 4 of the 7 classes of the first file
    code = cli_main(["tag", *files, "--model", str(root / "model"), "--json", "--top-k", "0",
                     "--threshold", str(threshold)])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == str(root / "model")
    assert [r["file"] for r in doc["results"]] == files
    first = doc["results"][0]
    assert first["duration_s"] == 2.0 and first["frames"] == 198 and first["model_frames"] == 1024  # padded
    assert doc["results"][1]["frames"] == doc["results"][1]["model_frames"] == 1198
    assert len(first["top"]) == int((probs[0] >= threshold).sum()) == 4
    for result, p in zip(doc["results"], probs):
        want = [i for i in torch.argsort(p, descending=True).tolist() if p[i] >= threshold]
        assert [row["index"] for row in result["top"]] == want
        for row in result["top"]:
            assert row["label"] == LABELS[row["index"]]
            assert row["probability"] == pytest.approx(p[row["index"]].item(), abs=1e-6)


def test_labels_csv_max_frames_and_unlabelled_model(setup, capsys) -> None:
    root, model = setup
    wav = str(root / "long.wav")
    csv = root / "labels.csv"
    csv.write_text("index,mid,display_name\n" + "".join(f'{i},/m/x{i},"Name {i}, custom"\n' for i in range(7)))
    assert cli_main(["tag", wav, "--model", str(root / "model"), "--labels", str(csv), "--top-k", "2",
                     "--max-frames", "300", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert result["frames"] == 300
    assert result["model_frames"] == 300
    probs = expected_probabilities(model, wav, 300)
    top = torch.argsort(probs, descending=True)[:2].tolist()
    assert [(r["index"], r["label"]) for r in result["top"]] == [(i, f"Name {i}, custom") for i in top]
    assert result["top"][0]["probability"] == pytest.approx(probs[top[0]].item(), abs=1e-6)

    short = str(root / "short.wav")
    assert cli_main(["tag", short, "--model", str(root / "unlabelled"), "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{short}  (2.00 s, 198 frames, padded to 1024)"
    assert re.fullmatch(r"  \d\.\d{4}  class \d", lines[1])

    assert cli_main(["tag", short, "--model", str(root / "model"), "--min-frames", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert result["frames"] == result["model_frames"] == 198
    probs = expected_probabilities(model, short, None)
    assert result["top"][0]["probability"] == pytest.approx(probs.max().item(), abs=1e-6)


def test_errors(setup, capsys) -> None:
    root, _ = setup
    missing = str(root / "missing.wav")
    code = cli_main(["tag", missing, str(root / "short.wav"), "--model", str(root / "model"), "--json"])
    assert code == 1  # the other file is still tagged
    captured = capsys.readouterr()
    assert f"dass tag: error: {missing}" in captured.err
    results = json.loads(captured.out)["results"]
    assert results[0]["file"] == missing and "error" in results[0] and len(results[1]["top"]) == 5

    (root / "six.csv").write_text("index,mid,display_name\n" + "".join(f"{i},/m/{i},N{i}\n" for i in range(6)))
    short, model_dir = str(root / "short.wav"), str(root / "model")
    assert cli_main(["tag", short, "--model", model_dir, "--labels", str(root / "six.csv")]) == 1
    assert "six.csv: 6 classes, but the model has 7 outputs" in capsys.readouterr().err
    assert cli_main(["tag", short, "--model", model_dir, "--threshold", "2"]) == 1
    assert "--threshold must be a probability in [0, 1], got 2.0" in capsys.readouterr().err
    assert cli_main(["tag", short, "--model", model_dir, "--device", "gpu7"]) == 1
    assert "unknown device 'gpu7'" in capsys.readouterr().err


def test_hub_id_offline_subprocess(setup, tmp_path) -> None:
    """A real `dass tag` process with HF_HUB_OFFLINE=1 and an empty cache: a clear error, exit code 1."""
    root, _ = setup
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    proc = subprocess.run(
        [sys.executable, "-m", "dass", "tag", str(root / "short.wav"), "--model", HUB_ID],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"dass tag: error: cannot fetch '{HUB_ID}' from the Hugging Face Hub")
    assert "pass that local folder instead of the hub id (e.g. `--model SOME_DIR`)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_features_are_streamed_not_decoded_whole(setup, tmp_path, monkeypatch) -> None:
    """`dass tag` featurises a file block by block (no whole-file waveform): same features as
    FeatureExtractor on the decoded waveform, for a stereo 44.1 kHz file and a padded short file."""
    import dass.audio
    from dass.audio import load_audio
    from dass.commands.tag import clip_features

    rng = np.random.default_rng(3)
    stereo = tmp_path / "stereo.flac"
    sf.write(stereo, (0.1 * rng.standard_normal((44100 * 3 + 17, 2))).astype(np.float32), 44100)
    expected_stereo = FeatureExtractor(max_length=None)(load_audio(stereo))["input_values"]
    expected_short = FeatureExtractor(max_length=250)(load_audio(setup[0] / "short.wav"))["input_values"]

    def no_whole_file_decode(*args, **kwargs):
        raise AssertionError("dass tag decoded the whole file")

    monkeypatch.setattr(dass.audio, "load_audio", no_whole_file_decode)
    features, frames, duration = clip_features(str(stereo), None, 100)
    assert features.shape == expected_stereo.shape == (1, 298, 128) and frames == 298
    assert duration == pytest.approx(3 + 17 / 44100)
    torch.testing.assert_close(features, expected_stereo, atol=2e-5, rtol=0)
    features, frames, _ = clip_features(str(setup[0] / "short.wav"), None, 250)  # 198 frames + padding
    assert frames == 198 and features.shape == (1, 250, 128)
    torch.testing.assert_close(features, expected_short, atol=2e-5, rtol=0)
    features, frames, _ = clip_features(str(setup[0] / "short.wav"), 50, 250)  # the cut wins
    assert frames == 50 and features.shape == (1, 50, 128)
