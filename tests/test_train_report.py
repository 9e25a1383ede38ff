"""`dass train-report`: table numbers from run folders, seeds as mean ± half-range, clear errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dass.cli import main
from dass.errors import ConfigError
from dass.train.report import load_run, parse_groups, summarize


def _fake_run(path: Path, final_map: float, epoch_maps: list[float], seconds: float = 600.0) -> Path:
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("model:\n  name: dass_tiny\n  args: {pooling: first, drop_path_rate: 0.1}\n")
    (path / "final_metrics.json").write_text(json.dumps(
        {"mAP": final_map, "mAUC": 0.9, "d_prime": 1.8, "train_seconds": seconds, "global_steps": 500,
         "parameters": 3_400_000}))
    with open(path / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "global_step", "mAP"])
        w.writeheader()
        for i, m in enumerate(epoch_maps):
            w.writerow({"epoch": i + 1, "global_step": 125 * (i + 1), "mAP": m})
        w.writerow({"epoch": "final", "global_step": 500, "mAP": final_map})
    return path


def test_summary_numbers_and_seed_spread(tmp_path):
    a = _fake_run(tmp_path / "s0", 0.40, [0.2, 0.3, 0.41])
    b = _fake_run(tmp_path / "s1", 0.50, [0.25, 0.35, 0.45], seconds=1200.0)
    groups = parse_groups([f"student={a},{b}", str(a)])
    assert list(groups) == ["student", "s0"]
    run = load_run(a)
    assert [e["mAP"] for e in run.epochs] == [0.2, 0.3, 0.41]  # the 'final' row is not an epoch
    table = summarize(groups)
    lines = table.splitlines()
    assert len(lines) == 4
    student = lines[2].split("|")
    assert student[1].strip() == "student"
    assert student[2].strip() == "dass_tiny (pooling=first)"
    assert student[3].strip() == "3,400,000"
    assert student[4].strip() == "2"
    assert student[5].strip() == "0.4500 ± 0.0500"       # mean of 0.40 / 0.50, half the range
    assert student[8].strip() == "0.4300 ± 0.0200"       # best epochs 0.41 and 0.45
    assert student[10].strip() == "15.0 min"             # mean of 600 s and 1200 s
    assert lines[3].split("|")[5].strip() == "0.4000"    # one seed: no spread


def test_cli_writes_table_and_plot(tmp_path, capsys):
    run = _fake_run(tmp_path / "r", 0.4, [0.3, 0.35])
    out, png = tmp_path / "t.md", tmp_path / "c.png"
    assert main(["train-report", f"x={run}", "--out", str(out), "--plot", str(png)]) == 0
    assert out.read_text().splitlines()[2].startswith("| x | dass_tiny")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_unfinished_run_is_a_clear_error(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(ConfigError, match="half: no final_metrics.json"):
        parse_groups([str(tmp_path / "half")])
    run = _fake_run(tmp_path / "r", 0.4, [0.3])
    with pytest.raises(ConfigError, match="given twice"):
        parse_groups([f"a={run}", f"a={run}"])
