"""Figures and a summary table from a NIAH results CSV (``dass niah-plot DIR``).

* ``niah_length.png``      — mAP vs haystack length (log x), one line per model, for the zeros /
  silence haystacks (paper Fig. 1c / 4);
* ``niah_position.png``    — relative drop vs needle position, one line per model (e.g. per pooling),
  one panel per length (Fig. 3);
* ``niah_snr.png``         — mAP vs SNR, one panel per model, one line per noise haystack and length (Fig. 5);
* ``niah_noise_length.png``— mAP vs length (log x) for the noise haystacks at each SNR, zeros for
  reference, one panel per model (Fig. 6);
* ``summary.md``           — mAP and relative drop per model and length, averaged over positions.

Scores are averaged over the needle positions of the rows with status ``ok``; a figure whose data
are absent is skipped. Lines of models that stopped (out of memory, max positions) say where.
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from ..errors import ConfigError
from ..plotting import pyplot, save_figure

CSV_NAME = "niah.csv"
CONSTANT_HAYSTACKS = ("zeros", "silence")


def read_rows(csv_path: str | os.PathLike) -> list[dict]:
    """The CSV's rows with numbers parsed (``snr_db`` None for zeros/silence; NaN for empty cells)."""
    path = Path(csv_path)
    if not path.is_file():
        raise ConfigError(f"{path}: no NIAH results file (run `dass niah --out {path.parent}` first)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"model", "haystack", "length_frames", "position", "mAP", "status"} <= set(rows[0]):
        raise ConfigError(f"{path}: not a NIAH results file (missing columns)")

    def num(text: str | None) -> float:
        return float(text) if text not in (None, "") else float("nan")

    parsed = []
    for r in rows:
        parsed.append(dict(
            model=r["model"], haystack=r["haystack"],
            snr_db=None if r.get("snr_db", "") == "" else float(r["snr_db"]),
            length_frames=int(r["length_frames"]), length_s=int(r["length_frames"]) / 100,
            position=float(r["position"]), mAP=num(r["mAP"]),
            mAUC=num(r.get("mAUC")), rel_drop=num(r.get("rel_drop")), status=r["status"]))
    return parsed


def _mean(values: Iterable[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def _averaged(rows: list[dict], key: str) -> dict[tuple, float]:
    """``key`` averaged over positions of ok rows: (model, haystack, snr, length) -> value."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        if r["status"] == "ok":
            groups[r["model"], r["haystack"], r["snr_db"], r["length_frames"]].append(r[key])
    return {k: _mean(v) for k, v in groups.items()}


def _first_failure(rows: list[dict], model: str, haystack: str | None = None) -> tuple[float, str] | None:
    """(length in s, status) of the shortest failed length of ``model`` (on ``haystack`` if given)."""
    failed = [(r["length_s"], r["status"].split(" (not run")[0]) for r in rows
              if r["model"] == model and r["status"] != "ok" and (haystack is None or r["haystack"] == haystack)]
    return min(failed) if failed else None


def _duration(seconds: float) -> str:
    """``10 s`` for the needle alone (1024 frames = 10.24 s), else e.g. ``30 s``, ``5 min``, ``2.5 h``."""
    if abs(seconds - 10.24) < 1e-9:
        return "10 s"
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _figure(panels: int, width: float = 5.0, height: float = 3.8):
    plt = pyplot()

    cols = min(panels, 3)
    rows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[panels:]:
        ax.set_visible(False)
    return plt, fig, flat[:panels]


def _model_colors(rows: list[dict]) -> dict[str, str]:
    """One colour per model, the same in every figure."""
    models = sorted({r["model"] for r in rows})
    return {m: f"C{i % 10}" for i, m in enumerate(models)}


def _duration_ticks(ax, seconds: Iterable[float]) -> None:
    """Log-x axis ticks at the lengths measured, labelled ``10 s``, ``5 min``, ``1 h``."""
    ticks = sorted(set(seconds))
    if ticks:
        ax.set_xticks(ticks)
        ax.set_xticklabels([_duration(t) for t in ticks], rotation=45, ha="right", fontsize=8)
        ax.minorticks_off()


def plot_length(rows: list[dict], out: Path) -> Path | None:
    """Fig. 1c / 4: mAP vs length (log x), one line per model, a panel per zeros/silence haystack."""
    haystacks = [h for h in CONSTANT_HAYSTACKS if any(r["haystack"] == h for r in rows)]
    if not haystacks:
        return None
    m_ap = _averaged(rows, "mAP")
    models = sorted({r["model"] for r in rows})
    colors = _model_colors(rows)
    plt, fig, axes = _figure(len(haystacks))
    for ax, haystack in zip(axes, haystacks):
        for model in models:
            points = sorted((length / 100, v) for (m, h, _, length), v in m_ap.items() if m == model and h == haystack)
            failure = _first_failure(rows, model, haystack)
            label = model if failure is None else f"{model} ({failure[1]} at {_duration(failure[0])})"
            if points or failure:
                xs, ys = zip(*points) if points else ((), ())
                ax.plot(xs, ys, marker="o", label=label, color=colors[model])
        ax.set_xscale("log")
        _duration_ticks(ax, (r["length_s"] for r in rows if r["haystack"] == haystack))
        ax.set_xlabel("haystack length (s)")
        ax.set_ylabel("mAP (mean over needle positions)")
        ax.set_title(f"{haystack} haystack")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, out / "niah_length.png")


def plot_position(rows: list[dict], out: Path) -> Path | None:
    """Fig. 3: relative drop (%) vs needle position, one line per model, a panel per length."""
    haystack = next((h for h in CONSTANT_HAYSTACKS if any(r["haystack"] == h for r in rows)),
                    rows[0]["haystack"] if rows else None)
    ok = [r for r in rows if r["haystack"] == haystack and r["status"] == "ok" and r["length_frames"] > 1024
          and not math.isnan(r["rel_drop"])]
    snrs = sorted({r["snr_db"] for r in ok}, key=lambda s: -1e9 if s is None else -s)
    ok = [r for r in ok if r["snr_db"] == (snrs[0] if snrs else None)]
    lengths = sorted({r["length_frames"] for r in ok})
    if not lengths or len({r["position"] for r in ok}) < 2:
        return None
    colors = _model_colors(rows)
    plt, fig, axes = _figure(len(lengths), width=4.5)
    for ax, length in zip(axes, lengths):
        for model in sorted({r["model"] for r in ok}):
            points = sorted((r["position"], 100 * r["rel_drop"]) for r in ok
                            if r["model"] == model and r["length_frames"] == length)
            if points:
                ax.plot(*zip(*points), marker="o", label=model, color=colors[model])
        snr = "" if snrs[0] is None else f", SNR {snrs[0]:g} dB"
        ax.set_title(f"{haystack}{snr}, {_duration(length / 100)}")
        ax.set_xlabel("needle position (relative)")
        ax.set_ylabel("relative mAP drop vs 10 s (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, out / "niah_position.png")


def plot_snr(rows: list[dict], out: Path) -> Path | None:
    """Fig. 5: mAP vs SNR, a panel per model, a line per (noise haystack, length)."""
    noisy = [r for r in rows if r["snr_db"] is not None and r["status"] == "ok" and r["length_frames"] > 1024]
    if len({r["snr_db"] for r in noisy}) < 2:
        return None
    m_ap = _averaged(noisy, "mAP")
    models = sorted({r["model"] for r in noisy})
    plt, fig, axes = _figure(len(models))
    for ax, model in zip(axes, models):
        for haystack, length in sorted({(h, length) for (m, h, _, length) in m_ap if m == model}):
            points = sorted((s, v) for (m, h, s, n), v in m_ap.items() if m == model and h == haystack and n == length)
            ax.plot(*zip(*points), marker="o", label=f"{haystack}, {_duration(length / 100)}")
        ax.set_xlabel("SNR (dB) re the needle")
        ax.set_ylabel("mAP (mean over needle positions)")
        ax.set_title(model)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, out / "niah_snr.png")


def plot_noise_length(rows: list[dict], out: Path) -> Path | None:
    """Fig. 6: mAP vs length (log x) for each noise haystack and SNR; zeros dashed for reference."""
    if not any(r["snr_db"] is not None and r["status"] == "ok" for r in rows):
        return None
    m_ap = _averaged(rows, "mAP")
    models = sorted({m for (m, _, s, _) in m_ap if s is not None})
    plt, fig, axes = _figure(len(models))
    for ax, model in zip(axes, models):
        curves = sorted({(h, s) for (m, h, s, _) in m_ap if m == model},
                        key=lambda hs: (hs[1] is not None, hs[0], -(hs[1] or 0)))
        for haystack, snr in curves:
            points = sorted((n / 100, v) for (m, h, s, n), v in m_ap.items() if m == model and h == haystack and s == snr)
            if snr is None:
                ax.plot(*zip(*points), color="black", linestyle="--", marker=".", label=haystack, zorder=5)
            else:
                ax.plot(*zip(*points), marker="o", label=f"{haystack} {snr:g} dB")
        ax.set_xscale("log")
        _duration_ticks(ax, (r["length_s"] for r in rows if r["model"] == model))
        ax.set_xlabel("haystack length (s)")
        ax.set_ylabel("mAP (mean over needle positions)")
        ax.set_title(model)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, out / "niah_noise_length.png")


def summary_markdown(rows: list[dict]) -> str:
    """A markdown table per haystack (and SNR): mAP (relative drop %) per model and length, mean
    over positions; failed cells show the status."""
    m_ap, drop = _averaged(rows, "mAP"), _averaged(rows, "rel_drop")
    lines = ["# NIAH summary", "", "mAP, mean over needle positions (relative drop vs the 10 s needle alone; negative = better).", ""]
    for haystack, snr in sorted({(r["haystack"], r["snr_db"]) for r in rows},
                                key=lambda hs: (hs[1] is not None, hs[0], -(hs[1] or 0))):
        lengths = sorted({r["length_frames"] for r in rows if r["haystack"] == haystack and r["snr_db"] == snr})
        lines += [f"## {haystack}" + ("" if snr is None else f", SNR {snr:g} dB"), "",
                  "| model | " + " | ".join(_duration(n / 100) for n in lengths) + " |",
                  "|---|" + "---|" * len(lengths)]
        for model in sorted({r["model"] for r in rows}):
            cells = []
            for n in lengths:
                key = (model, haystack, snr, n)
                if key in m_ap:
                    d = drop.get(key, float("nan"))
                    cells.append(f"{m_ap[key]:.4f}" + ("" if math.isnan(d) or n == 1024 else f" ({100 * d:.1f}% drop)"))
                else:
                    status = [r["status"] for r in rows if (r["model"], r["haystack"], r["snr_db"],
                                                            r["length_frames"]) == key]
                    cells.append(status[0].split(" (not run")[0] if status else "")
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def make_plots(directory: str | os.PathLike) -> list[Path]:
    """Draw every figure whose data are in ``directory/niah.csv`` and write ``summary.md``; returns
    the files written."""
    out = Path(directory)
    rows = read_rows(out / CSV_NAME)
    if not rows:
        raise ConfigError(f"{out / CSV_NAME}: no results yet")
    written = [p for p in (plot_length(rows, out), plot_position(rows, out), plot_snr(rows, out),
                           plot_noise_length(rows, out)) if p is not None]
    summary = out / "summary.md"
    tmp = summary.with_name(".summary.md.tmp")
    tmp.write_text(summary_markdown(rows))
    os.replace(tmp, summary)
    return [*written, summary]
