"""Compare finished ``dass train`` runs: a markdown table and a learning-curve plot.

A *group* is a label and one or more run folders (several seeds of the same recipe); each run folder
holds ``metrics.csv`` (one row per epoch and a ``final`` row) and ``final_metrics.json``, as
:func:`dass.train.trainer.train` writes them. Groups with several runs report mean ± spread, where the
spread is half the range (max − min) / 2 — with two seeds, the distance of each from the mean.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError


@dataclass
class RunSummary:
    """What one run folder says: final metrics, the per-epoch eval history and the cost."""

    path: Path
    final: dict
    epochs: list[dict] = field(default_factory=list)

    @property
    def model(self) -> str:
        return str(self.final.get("model", "?"))


def load_run(path: str | os.PathLike) -> RunSummary:
    """Read ``final_metrics.json`` and ``metrics.csv`` of a finished run; clear error otherwise."""
    path = Path(path)
    final_path, csv_path = path / "final_metrics.json", path / "metrics.csv"
    if not final_path.is_file():
        raise ConfigError(f"{path}: no final_metrics.json -- is this a finished `dass train` run folder?")
    try:
        final = json.loads(final_path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{final_path}: not valid JSON ({exc})") from None
    epochs: list[dict] = []
    if csv_path.is_file():
        with open(csv_path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("epoch") not in (None, "", "final"):
                    epochs.append({k: float(v) for k, v in row.items() if v not in (None, "")})
    config = path / "config.yaml"
    if config.is_file():
        import yaml

        model = (yaml.safe_load(config.read_text()) or {}).get("model", {})
        final = {**final, "model": model.get("name", "?"),
                 "model_args": model.get("args") or {}}
    return RunSummary(path, final, epochs)


def _mean_spread(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, (max(values) - min(values)) / 2


def _fmt(values: list[float], digits: int = 4) -> str:
    mean, spread = _mean_spread(values)
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {spread:.{digits}f}"


def summarize(groups: dict[str, list[RunSummary]]) -> str:
    """Markdown table, one line per group: model, parameters, runs, final mAP / mAUC / d′, cost."""
    lines = ["| run | model | parameters | seeds | final mAP | mAUC | d′ | best epoch mAP | steps | train time |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, runs in groups.items():
        first = runs[0].final
        args = first.get("model_args") or {}
        model = first.get("model", "?") + (" (" + ", ".join(f"{k}={v}" for k, v in args.items()
                                                              if k != "drop_path_rate") + ")" if args else "")
        best = [max(e.get("mAP", float("nan")) for e in r.epochs) for r in runs if r.epochs]
        seconds = [float(r.final.get("train_seconds", float("nan"))) for r in runs]
        lines.append(
            f"| {label} | {model.replace(' ()', '')} | {int(first.get('parameters', 0)):,} | {len(runs)} "
            f"| {_fmt([r.final['mAP'] for r in runs])} | {_fmt([r.final['mAUC'] for r in runs])} "
            f"| {_fmt([r.final['d_prime'] for r in runs], 3)} | {_fmt(best) if best else '-'} "
            f"| {int(first.get('global_steps', 0))} | {_mean_spread(seconds)[0] / 60:.1f} min |")
    return "\n".join(lines) + "\n"


def plot_curves(groups: dict[str, list[RunSummary]], out: str | os.PathLike) -> Path:
    """Eval mAP after each epoch, one line per run (seeds share a colour); the final (weight-averaged)
    model as a marker after the last epoch. Written atomically as PNG."""
    from ..plotting import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(6, 4))
    for i, (label, runs) in enumerate(groups.items()):
        for j, run in enumerate(runs):
            xs = [e["epoch"] for e in run.epochs]
            ys = [e["mAP"] for e in run.epochs]
            ax.plot(xs, ys, marker="o", color=f"C{i}", alpha=1.0 if j == 0 else 0.6,
                    label=label if j == 0 else None)
            if xs:
                ax.plot([xs[-1] + 0.3], [run.final["mAP"]], marker="*", markersize=12, color=f"C{i}")
    ax.set_xlabel("epoch (star: final weight-averaged model)")
    ax.set_ylabel("eval mAP")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, out)


def parse_groups(specs: list[str]) -> dict[str, list[RunSummary]]:
    """``LABEL=DIR[,DIR...]`` (or a bare ``DIR``, labelled by its name) -> loaded groups."""
    groups: dict[str, list[RunSummary]] = {}
    for spec in specs:
        label, _, dirs = spec.rpartition("=")
        paths = [d for d in dirs.split(",") if d]
        if not paths:
            raise ConfigError(f"{spec!r}: expected LABEL=DIR[,DIR...] or DIR")
        label = label or Path(paths[0]).name
        if label in groups:
            raise ConfigError(f"run label {label!r} given twice")
        groups[label] = [load_run(p) for p in paths]
    return groups
