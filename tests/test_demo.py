"""``dass demo`` end to end on the seconds-long ``tiny-test`` budget: outputs, CSV rows, summary numbers,
resumption (a second run trains nothing and rewrites no results), refusal of other settings."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from dass.cli import main
from dass.demo import PRESETS, STUDENT_LABEL, TEACHER_LABEL, DemoConfig, chance_map, run_demo
from dass.errors import ConfigError
from dass.niah import parse_lengths

TINY = DemoConfig.preset("tiny-test")


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, str]:
    """One tiny demo through the CLI (the test suite's budget); returns (folder, stdout)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("demo") / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["demo", "--tiny-test", "--out", str(out), "--threads", "2", "--device", "cpu", "--quiet"])
    assert code == 0
    return out, stdout.getvalue()


def test_demo_writes_every_output(demo_run):
    out, stdout = demo_run
    for name in ("demo_config.json", "summary.md", "summary.json", "corpus/train.json", "corpus/eval.json",
                 "teacher/final/config.json", "teacher/final/model.safetensors", "student/final/model.safetensors",
                 "teacher/final_metrics.json", "student/final_metrics.json", "niah/niah.csv", "niah/summary.md",
                 "niah/niah_length.png", "niah/niah_position.png", "niah/niah_noise_length.png"):
        assert (out / name).is_file(), name
    assert len(json.loads((out / "corpus/train.json").read_text())["data"]) == TINY.train_clips
    assert len(json.loads((out / "corpus/eval.json").read_text())["data"]) == TINY.eval_clips
    # The student is a DASS distilled from the AST teacher.
    student_config = json.loads((out / "student/final/config.json").read_text())
    teacher_config = json.loads((out / "teacher/final/config.json").read_text())
    assert (student_config["model_type"], teacher_config["model_type"]) == ("dass", "ast")
    trained = (out / "student/config.yaml").read_text()
    assert str(out / "teacher" / "final") in trained and "weight: 0.5" in trained
    # Each model trains at its own learning rate, with the demo's augmentation settings.
    for run, lr in (("teacher", TINY.teacher_lr), ("student", TINY.student_lr)):
        optim = yaml.safe_load((out / run / "config.yaml").read_text())
        assert optim["optim"]["lr"] == lr and optim["optim"]["epochs"] == 1
        assert (optim["augment"]["freqm"], optim["augment"]["timem"]) == (TINY.freqm, TINY.timem)
    # The end of the output: the results table and where things are.
    assert "| ast_teacher | ast_tiny |" in stdout and "| dass_student | dass_tiny |" in stdout
    assert f"summary: {out / 'summary.md'}" in stdout
    assert f"plot: {out / 'niah' / 'niah_length.png'}" in stdout
    assert stdout.strip().splitlines()[-1].startswith("models: ")


def test_demo_niah_csv_has_one_ok_row_per_model_haystack_length_position(demo_run):
    out, _ = demo_run
    rows = _csv_rows(out / "niah" / "niah.csv")
    expected = set()
    for label, lengths in ((TEACHER_LABEL, TINY.teacher_lengths), (STUDENT_LABEL, TINY.student_lengths)):
        for length in parse_lengths(list(lengths)):
            for haystack in TINY.haystacks:
                for position in TINY.positions:
                    expected.add((label, haystack, length, position))
    found = [(r["model"], r["haystack"], int(r["length_frames"]), float(r["position"])) for r in rows]
    assert len(found) == len(expected) == 16  # 2 models x 2 haystacks x 2 lengths x 2 positions
    assert set(found) == expected
    assert {r["status"] for r in rows} == {"ok"}
    assert {r["clips"] for r in rows} == {str(TINY.niah_clips)}
    assert {r["snr_db"] for r in rows if r["haystack"] == "white"} == {"10"}
    assert {r["snr_db"] for r in rows if r["haystack"] == "zeros"} == {""}


def test_demo_summary_numbers_match_training_and_csv(demo_run):
    out, _ = demo_run
    summary = json.loads((out / "summary.json").read_text())
    rows = _csv_rows(out / "niah" / "niah.csv")
    for label, run in ((TEACHER_LABEL, "teacher"), (STUDENT_LABEL, "student")):
        final = json.loads((out / run / "final_metrics.json").read_text())
        model = summary["models"][label]
        assert model["mAP"] == final["mAP"] and model["mAUC"] == final["mAUC"]
        assert 0.0 < model["mAP"] <= 1.0 and model["parameters"] == final["parameters"] > 0
        for haystack in TINY.haystacks:
            niah = summary["niah"][label][haystack]
            longest = max(int(r["length_frames"]) for r in rows if r["model"] == label)
            assert niah["longest_frames"] == longest
            # Independent recomputation from the CSV: mean over positions of mAP, and of the relative drop
            # (mAP_10s - mAP_L) / mAP_10s with mAP_10s the needle-alone row.
            at = [r for r in rows if r["model"] == label and r["haystack"] == haystack
                  and int(r["length_frames"]) == longest]
            base = [float(r["mAP"]) for r in rows if r["model"] == label and r["length_frames"] == "1024"]
            assert len(at) == len(TINY.positions) and len(set(base)) == 1
            m_ap = sum(float(r["mAP"]) for r in at) / len(at)
            drop = sum((base[0] - float(r["mAP"])) / base[0] for r in at) / len(at)
            point = niah["by_length"][str(longest)]
            assert point["mAP"] == pytest.approx(m_ap, abs=1e-12)
            assert point["rel_drop"] == pytest.approx(drop, abs=1e-12)
            assert math.isfinite(point["rel_drop"])
    markdown = (out / "summary.md").read_text()
    drop_teacher = summary["niah"][TEACHER_LABEL]["zeros"]["by_length"]["2000"]["rel_drop"]
    assert f"- {TEACHER_LABEL}, zeros: {100 * drop_teacher:.1f} % drop at 20 s" in markdown
    assert f"chance mAP ≈ {summary['chance_mAP']:.3f}" in markdown


def test_chance_map_is_mean_positive_rate(demo_run):
    out, _ = demo_run
    data = json.loads((out / "corpus/eval.json").read_text())["data"]
    counts: dict[str, int] = {}
    for entry in data:
        for mid in entry["labels"].split(","):
            counts[mid] = counts.get(mid, 0) + 1
    expected = sum(c / len(data) for c in counts.values()) / len(counts)
    assert chance_map(out / "corpus/eval.json") == pytest.approx(expected, abs=1e-12)


def test_demo_rerun_trains_nothing_and_keeps_results(demo_run, monkeypatch):
    out, _ = demo_run
    import dass.data.synth
    import dass.train.trainer

    def refuse(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(dass.train.trainer, "train", refuse)
    monkeypatch.setattr(dass.data.synth, "build_corpus", refuse)
    kept = {p: p.read_bytes() for p in (out / "niah/niah.csv", out / "teacher/final/model.safetensors",
                                         out / "student/final/model.safetensors", out / "corpus/train.json")}
    result = run_demo(out, DemoConfig.preset("tiny-test"), device="cpu", threads=2, progress=False,
                      log=lambda text: None)
    for path, content in kept.items():
        assert path.read_bytes() == content, path
    assert set(result["timings"]) == {"corpus", "teacher", "student", "niah"}
    assert result["models"] == json.loads((out / "summary.json").read_text())["models"]


def test_demo_resumes_an_interrupted_training(demo_run, monkeypatch):
    """Student trained but its final model not written (killed after the last epoch's checkpoint):
    the re-run resumes from checkpoints/last.pt instead of starting again."""
    out, _ = demo_run
    import dass.train.trainer

    (out / "student/final_metrics.json").unlink()
    shutil.rmtree(out / "student/final")
    calls = []
    real_train = dass.train.trainer.train

    def spy(config, resume=False, **kwargs):
        calls.append((config.run.output_dir, resume))
        return real_train(config, resume=resume, **kwargs)

    monkeypatch.setattr(dass.train.trainer, "train", spy)
    run_demo(out, DemoConfig.preset("tiny-test"), device="cpu", threads=2, progress=False, log=lambda text: None)
    assert calls == [(str(out / "student"), True)]
    assert (out / "student/final/model.safetensors").is_file()


def test_demo_refuses_a_folder_made_with_other_settings(demo_run):
    out, _ = demo_run
    other = DemoConfig.preset("tiny-test")
    other.seed = 1
    with pytest.raises(ConfigError, match=r"holds a demo run with other settings \(different: seed\)"):
        run_demo(out, other, device="cpu", threads=1, progress=False, log=lambda text: None)
    assert main(["demo", "--tiny-test", "--out", str(out), "--seed", "1", "--quiet"]) == 1


@pytest.mark.parametrize("changes, message", [
    (dict(niah_clips=9, eval_clips=8), r"niah_clips \(9\) cannot exceed eval_clips \(8\)"),
    (dict(train_clips=4, batch_size=8), r"train_clips \(4\) must be at least one batch \(8\)"),
    (dict(student_lengths=("5s",)), r"length '5s' is shorter than the 10 s needle"),
    (dict(kd_weight=1.5), r"kd_weight must be in \[0, 1\], got 1.5"),
])
def test_demo_config_rejects_impossible_budgets(tmp_path, changes, message):
    config = DemoConfig.preset("tiny-test")
    for key, value in changes.items():
        setattr(config, key, value)
    with pytest.raises(ConfigError, match=message):
        run_demo(tmp_path / "never", config, progress=False, log=lambda text: None)
    assert not (tmp_path / "never").exists()


def test_presets_are_valid_and_distinct():
    configs = {name: DemoConfig.preset(name) for name in PRESETS}
    for config in configs.values():
        config.validate()
    assert configs["quick"].train_clips < configs["default"].train_clips
    assert parse_lengths(list(configs["default"].student_lengths))[-1] == 60000  # 10 min for DASS
    # The default corpus: the 19 classes of the procedural and espeak-ng sources; the transformer
    # learns at a lower rate than the state-space student.
    assert configs["default"].sources == configs["quick"].sources == ("procedural", "espeak")
    assert configs["default"].teacher_lr < configs["default"].student_lr
    configs["quick"].teacher_args["depth"] = 99  # a preset is a fresh copy every time
    assert DemoConfig.preset("quick").teacher_args["depth"] == DemoConfig().teacher_args["depth"] == 2
    configs["tiny-test"].teacher_args["depth"] = 99
    assert DemoConfig.preset("tiny-test").teacher_args["depth"] == PRESETS["tiny-test"]["teacher_args"]["depth"] == 1
    with pytest.raises(ConfigError, match="unknown demo preset 'huge'"):
        DemoConfig.preset("huge")


def test_demo_baseline_adds_only_the_no_kd_student(demo_run, monkeypatch):
    out, _ = demo_run
    import dass.train.trainer

    calls = []
    real_train = dass.train.trainer.train

    def spy(config, resume=False, **kwargs):
        calls.append((config.run.output_dir, resume, list(config.kd.teachers)))
        return real_train(config, resume=resume, **kwargs)

    monkeypatch.setattr(dass.train.trainer, "train", spy)
    config = DemoConfig.preset("tiny-test")
    config.baseline = True  # not part of the folder's identity: the finished demo is resumed
    result = run_demo(out, config, device="cpu", threads=2, progress=False, log=lambda text: None)
    assert calls == [(str(out / "baseline"), False, [])]
    baseline = json.loads((out / "baseline/final_metrics.json").read_text())
    row = result["models"]["dass_no_kd"]
    assert (row["distilled"], row["mAP"], row["parameters"]) == (False, baseline["mAP"], baseline["parameters"])
    assert result["models"][STUDENT_LABEL]["parameters"] == baseline["parameters"]
    assert "| dass_no_kd | dass_tiny | " in (out / "summary.md").read_text()
