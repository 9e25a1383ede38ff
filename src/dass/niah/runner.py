"""Run the NIAH benchmark: every (model, haystack, SNR, length, position) -> one row of a tidy CSV.

Python entry point::

    from dass.niah import run_niah, load_eval_set, parse_lengths
    csv_path = run_niah({"dass_small": model}, load_eval_set("eval.json"), parse_lengths("10s,1min"),
                        [0, 0.5, 1], ["zeros", "white"], [20, 0], "out/niah")

The 10 s length (1024 frames, the needle alone) is always evaluated: it is every model's reference
score for ``rel_drop = (mAP_10s − mAP_L) / mAP_10s``. Results are appended to ``OUT/niah.csv`` one
row at a time (flush + fsync); a second run with the same ``OUT`` skips the rows already there
(``OUT/niah_run.json`` records the eval set's fingerprint and the noise seed, so results of another
eval set are never mixed in). Rows are written when a (haystack, SNR, length) group is complete;
the scores of an unfinished group are saved every minute (``OUT/.niah_partial/``), so an
interrupted long group resumes after its last saved clip batch.
A model that fails a length (out of memory, fixed positional embeddings, any other error) gets a
row whose ``status`` says so; after an ``oom`` / ``max positions exceeded`` at length L it is not
run at longer lengths (their rows say ``... (not run: failed at L frames)``).

Cost: a noise filler is computed once per (haystack, SNR, length, clip) and reused for every
position and model; zeros/silence fillers are a single expanded frame. Clips are batched
``batch_size · 1024 // L`` at a time (one at a time for long haystacks), so only that many
haystacks are in memory at once.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .data import NiahEvalSet
from .haystack import (FRAMES_PER_SECOND, NEEDLE_FRAMES, FbankFn, FillerBuilder, HaystackSpec,
                       default_fbank_fn, parse_haystacks, place_needle)
from .models import MaxPositionsExceeded

CSV_NAME = "niah.csv"
CSV_COLUMNS = ("model", "haystack", "snr_db", "length_frames", "length_s", "position", "clips",
               "mAP", "mAUC", "rel_drop", "seconds", "peak_mem_mb", "status")
STATUS_OK = "ok"
STATUS_OOM = "oom"
STATUS_MAX_POSITIONS = "max positions exceeded"

Model = Callable[[torch.Tensor], torch.Tensor]  # (B, T, bins) normalised features -> (B, classes) logits

# --------------------------------------------------------------------------------------------------
# Option parsing
# --------------------------------------------------------------------------------------------------

_LENGTH_UNITS = {"f": None, "s": 1.0, "min": 60.0, "h": 3600.0}
_LENGTH_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(f|s|min|h)?\s*$", re.IGNORECASE)


def parse_length(text: str | int) -> int:
    """One haystack length in frames (100 frames per second).

    ``"3000f"`` or ``"3000"`` are frames; ``"30s"``, ``"5min"``, ``"2.5h"`` are durations
    (``round(seconds · 100)`` frames). A duration of 10 s to 10.24 s means the needle alone,
    1024 frames (a 10 s clip padded to the models' 1024 frames). Shorter than the needle is an error.
    """
    if isinstance(text, int):
        frames, shown = text, f"{text} frames"
    else:
        match = _LENGTH_RE.match(str(text))
        if not match:
            raise ConfigError(f"cannot read length {text!r}: use frames (3000f or 3000) or a duration "
                              "(10s, 30s, 5min, 1h, 2.5h)")
        value, unit = float(match.group(1)), (match.group(2) or "f").lower()
        shown = str(text).strip()
        if unit == "f":
            if value != int(value):
                raise ConfigError(f"length {text!r}: a frame count must be a whole number")
            frames = int(value)
        else:
            seconds = value * _LENGTH_UNITS[unit]
            if seconds < NEEDLE_FRAMES // FRAMES_PER_SECOND:
                raise ConfigError(f"length {text!r} is shorter than the 10 s needle")
            frames = max(NEEDLE_FRAMES, int(math.floor(seconds * FRAMES_PER_SECOND + 0.5)))
    if frames < NEEDLE_FRAMES:
        raise ConfigError(f"length {shown} is shorter than the needle ({NEEDLE_FRAMES} frames = 10 s)")
    return frames


def parse_lengths(values: str | Sequence[str | int]) -> list[int]:
    """Comma-separated lengths (see :func:`parse_length`) -> sorted distinct frame counts."""
    items = values.split(",") if isinstance(values, str) else list(values)
    frames = sorted({parse_length(v) for v in items if str(v).strip()})
    if not frames:
        raise ConfigError("no length given")
    return frames


def _parse_floats(values: str | Sequence[float | str], what: str) -> list[float]:
    items = values.split(",") if isinstance(values, str) else list(values)
    out: list[float] = []
    for item in items:
        if isinstance(item, str) and not item.strip():
            continue
        try:
            value = float(item)
        except ValueError:
            raise ConfigError(f"cannot read {what} {item!r}: expected a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"{what} must be finite, got {item!r}")
        if value not in out:
            out.append(value)
    if not out:
        raise ConfigError(f"no {what} given")
    return out


def parse_positions(values: str | Sequence[float | str]) -> list[float]:
    """Comma-separated relative needle positions in [0, 1], e.g. ``"0,0.25,0.5,0.75,1"``."""
    positions = _parse_floats(values, "position")
    for p in positions:
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"needle position must be in [0, 1], got {p:g}")
    return positions


def parse_snrs(values: str | Sequence[float | str]) -> list[float]:
    """Comma-separated SNRs in dB, e.g. ``"20,10,0"``."""
    return _parse_floats(values, "SNR")


# --------------------------------------------------------------------------------------------------
# The CSV
# --------------------------------------------------------------------------------------------------


def _fmt_float(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)  # shortest exact form: a resumed run reads back the same numbers


def row_key(model: str, haystack: str, snr_db: float | str | None, length_frames: int | str,
            position: float | str) -> tuple[str, str, str, int, str]:
    """The identity of a row: (model, haystack, snr, length, position), numbers normalised."""
    snr = "" if snr_db in (None, "") else _fmt_float(float(snr_db))
    return model, haystack, snr, int(length_frames), _fmt_float(float(position))


class ResultsCSV:
    """``niah.csv``: the rows already written (for resuming) and an append that survives a crash.

    Each row is written, flushed and fsync'ed on its own; a torn last line left by a crash is
    dropped when the file is opened again (the file is rewritten through a temporary + ``os.replace``).
    """

    def __init__(self, path: str | os.PathLike, clips: int) -> None:
        self.path = Path(path)
        self.clips = clips
        self.rows: list[dict[str, str]] = []
        if self.path.exists():
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._rewrite()
        self.done = {row_key(r["model"], r["haystack"], r["snr_db"], r["length_frames"], r["position"])
                     for r in self.rows}

    def _load(self) -> None:
        text = self.path.read_text()
        lines = text.splitlines(keepends=True)
        if not lines or lines[0].strip() != ",".join(CSV_COLUMNS):
            raise ConfigError(f"{self.path}: not a NIAH results file (expected the header "
                              f"{','.join(CSV_COLUMNS)}); use another output folder")
        complete = text if text.endswith("\n") else "".join(lines[:-1])
        rows = list(csv.DictReader(io.StringIO(complete)))
        good = [r for r in rows if None not in r.values() and None not in r and r["length_frames"].isdigit()]
        for r in good:
            if int(r["clips"]) != self.clips:
                raise ConfigError(f"{self.path} holds results on {r['clips']} clips, this run has "
                                  f"{self.clips}; use another output folder (or the same --max-clips)")
        self.rows = good
        if complete != text or len(good) != len(rows):
            self._rewrite()

    def _rewrite(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, CSV_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def baseline(self, model: str) -> float | None:
        """The model's 10 s mAP from an earlier run, if there is an ok row at 1024 frames."""
        for r in self.rows:
            if r["model"] == model and int(r["length_frames"]) == NEEDLE_FRAMES and r["status"] == STATUS_OK:
                return float(r["mAP"])
        return None

    def failures(self, models: Sequence[str]) -> dict[str, tuple[int, str]]:
        """model -> (shortest length, status) at which an earlier run found it out of memory or of
        positions: longer lengths are not tried again."""
        found: dict[str, tuple[int, str]] = {}
        for r in self.rows:
            status = r["status"].split(" (not run")[0]
            if r["model"] in models and status in (STATUS_OOM, STATUS_MAX_POSITIONS):
                length = int(r["length_frames"])
                if r["model"] not in found or length < found[r["model"]][0]:
                    found[r["model"]] = (length, status)
        return found

    def append(self, row: dict[str, object]) -> None:
        cells = {k: ("" if v is None else _fmt_float(v) if isinstance(v, float) else str(v)) for k, v in row.items()}
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, CSV_COLUMNS, lineterminator="\n").writerow(cells)
            f.flush()
            os.fsync(f.fileno())
        self.rows.append(cells)
        self.done.add(row_key(cells["model"], cells["haystack"], cells["snr_db"], cells["length_frames"],
                              cells["position"]))


# --------------------------------------------------------------------------------------------------
# Running models
# --------------------------------------------------------------------------------------------------


class WrongClassCount(ConfigError):
    """The model's logits do not match the eval set's classes (a user error: stop the run)."""


def _is_oom(error: BaseException) -> bool:
    if isinstance(error, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def classify_failure(error: BaseException) -> str:
    """The CSV status for a model that raised ``error``: "oom", "max positions exceeded" or the error."""
    if _is_oom(error):
        return STATUS_OOM
    if isinstance(error, MaxPositionsExceeded) or (isinstance(error, ValueError) and "position" in str(error).lower()):
        return STATUS_MAX_POSITIONS
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"error: {type(error).__name__}: {first_line}"[:300]


class _PeakMemory:
    """Peak memory of one forward pass in MiB: CUDA max allocated, or the process' peak RSS on CPU
    (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``); NaN where neither is available."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    def read(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _forward(model: Model, x: torch.Tensor) -> torch.Tensor:
    """Logits for a batch; on out-of-memory with several clips, retry one clip at a time.

    A DASS model on the CPU runs through :func:`dass.inference.predict` (the fast engine, exact tiled
    forward for long inputs: same logits to float32 rounding, a fraction of the memory).
    """
    if getattr(model, "model_type", None) == "dass" and x.device.type == "cpu":
        from ..inference import predict

        return predict(model, x)
    try:
        return model(x)
    except Exception as error:  # noqa: BLE001 - only OOM is retried, everything else re-raised
        if not _is_oom(error) or x.shape[0] == 1:
            raise
    if x.is_cuda:
        torch.cuda.empty_cache()
    return torch.cat([model(x[i:i + 1]) for i in range(x.shape[0])])


class _Measured:
    """Scores, forward seconds and peak memory of one (model, position) over the clips."""

    def __init__(self, num_clips: int, num_classes: int) -> None:
        self.scores = np.full((num_clips, num_classes), np.nan)
        self.seconds = 0.0
        self.peak_mb = float("nan")


def _run_batch(label: str, model: Model, haystacks: torch.Tensor, clip_index: slice, measured: _Measured,
               memory: _PeakMemory, num_classes: int) -> None:
    """Forward ``haystacks`` ``(B, L, bins)``; store the logits as scores of clips ``clip_index``."""
    device = memory.device
    _synchronize(device)
    memory.reset()
    start = time.perf_counter()
    logits = _forward(model, haystacks)
    _synchronize(device)
    measured.seconds += time.perf_counter() - start
    peak = memory.read()
    measured.peak_mb = peak if math.isnan(measured.peak_mb) else max(measured.peak_mb, peak)
    if logits.dim() != 2 or logits.shape != (haystacks.shape[0], num_classes):
        raise WrongClassCount(f"model {label!r} returned logits of shape {tuple(logits.shape)}, expected "
                          f"({haystacks.shape[0]}, {num_classes}) for the eval set's {num_classes} classes")
    measured.scores[clip_index] = logits.detach().to("cpu", torch.float64).numpy()  # AP/AUC only rank them


def _metrics(scores: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    from ..train.metrics import mean_auc, mean_average_precision

    return float(mean_average_precision(scores, targets)), float(mean_auc(scores, targets))


class _GroupCheckpoint:
    """The scores of an unfinished (haystack, SNR, length) group, saved (tmp + ``os.replace``) at most
    every ``interval_s`` seconds to ``OUT/.niah_partial/``, so that an interrupted long group resumes
    after its last saved clip batch. Removed once the group's rows are written."""

    def __init__(self, out_dir: Path, haystack: str, snr: float | None, length: int,
                 measured: dict[tuple[str, float], _Measured], status: dict[str, str], interval_s: float) -> None:
        snr_text = "none" if snr is None else _fmt_float(snr)
        self.path = out_dir / ".niah_partial" / f"{haystack}_snr{snr_text}_L{length}.npz"
        self.measured, self.status, self.interval_s = measured, status, interval_s
        self.pairs = sorted(measured)
        self.last_save = time.monotonic()

    def load(self) -> int:
        """Restore the saved scores; returns the first clip still to run (0 without a usable save)."""
        if not self.path.exists():
            return 0
        try:
            with np.load(self.path, allow_pickle=False) as saved:
                meta = json.loads(str(saved["meta"]))
                if [tuple(pair) for pair in meta["pairs"]] != self.pairs:
                    return 0  # other models or positions than this run: start the group again
                for k, pair in enumerate(self.pairs):
                    m = self.measured[pair]
                    m.scores[:] = saved[f"scores_{k}"]
                    m.seconds, m.peak_mb = meta["seconds"][k], meta["peak_mb"][k]
                self.status.update(meta["status"])
                return int(meta["next_clip"])
        except (OSError, ValueError, KeyError) as error:
            print(f"dass niah: ignoring unreadable partial results {self.path} ({error})", file=sys.stderr)
            return 0

    def save(self, next_clip: int, force: bool = False) -> None:
        if not force and time.monotonic() - self.last_save < self.interval_s:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"pairs": [list(p) for p in self.pairs], "next_clip": next_clip, "status": self.status,
                "seconds": [self.measured[p].seconds for p in self.pairs],
                "peak_mb": [self.measured[p].peak_mb for p in self.pairs]}
        tmp = self.path.with_name(f".{self.path.stem}.tmp.npz")
        np.savez(tmp, meta=np.array(json.dumps(meta)),
                 **{f"scores_{k}": self.measured[p].scores for k, p in enumerate(self.pairs)})
        os.replace(tmp, self.path)
        self.last_save = time.monotonic()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------


RUN_INFO_NAME = "niah_run.json"


def _check_run_info(out_dir: Path, eval_set: NiahEvalSet, seed: int) -> None:
    """Write ``out_dir/niah_run.json`` (eval-set fingerprint, clips, noise seed) on the first run; on a
    resumed run, refuse to mix results from another eval set or noise seed into the same CSV."""
    info = {"clips": len(eval_set), "eval_set_sha256": eval_set.fingerprint(), "seed": seed}
    path = out_dir / RUN_INFO_NAME
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except ValueError as e:
            raise ConfigError(f"{path}: unreadable ({e}); delete it only if {out_dir / CSV_NAME} "
                              "belongs to this eval set") from None
        for key, value in info.items():
            if previous.get(key) != value:
                raise ConfigError(f"{out_dir} holds results of another run ({key}: {previous.get(key)!r}, "
                                  f"this run: {value!r}); use another output folder")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, path)


def _progress(iterable=None, **kwargs):
    from tqdm.auto import tqdm

    return tqdm(iterable, file=sys.stderr, dynamic_ncols=True, **kwargs)


def run_niah(models: Mapping[str, Model], eval_set: NiahEvalSet, lengths: Sequence[int | str],
             positions: Sequence[float], haystacks: Sequence[str | HaystackSpec], snrs: Sequence[float],
             out_dir: str | os.PathLike, *, batch_size: int = 8, device: torch.device | str = "cpu",
             seed: int = 0, fbank_fn: FbankFn | None = None, mean: float | None = None,
             std: float | None = None, progress: bool = True, checkpoint_every_s: float = 60.0) -> Path:
    """Evaluate every model on every haystack; returns the path of ``out_dir/niah.csv``.

    Args:
        models: label -> model mapping normalised features ``(B, T, bins)`` to logits ``(B, classes)``
            (``nn.Module`` s are moved to ``device`` and put in eval mode).
        eval_set: the needles and their labels (:func:`dass.niah.load_eval_set`).
        lengths: haystack lengths, frames or strings like ``"30s"`` (:func:`parse_length`); 1024 is added.
        positions: relative needle positions in [0, 1].
        haystacks: kinds (``"zeros"``, ``"silence"``, ``"white"``, ``"pink"``, ``"babble:PATH"``) or specs.
        snrs: SNRs in dB for the noise haystacks (zeros and silence get one row with an empty SNR).
        batch_size: clips per forward pass at 10 s; ``batch_size · 1024 // L`` (≥ 1) at length L.
        seed: seed of the noise (the same clip gets the same noise at every SNR and length).
        fbank_fn: waveform -> normalised fbank for noise fillers (default: dass.features, ``mean``/``std``).
        checkpoint_every_s: how often the scores of an unfinished group are saved (for resuming).
    """
    if not models:
        raise ConfigError("no model given")
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    device = torch.device(device)
    frame_lengths = sorted({NEEDLE_FRAMES, *(parse_length(v) if isinstance(v, str) else parse_length(int(v))
                                            for v in lengths)})
    positions = parse_positions(list(positions))
    snrs = parse_snrs(list(snrs)) if snrs else []
    specs = [h for h in haystacks if isinstance(h, HaystackSpec)]
    names = [h for h in haystacks if not isinstance(h, HaystackSpec)]
    specs += parse_haystacks(names) if names else []
    if not specs:
        raise ConfigError("no haystack given")
    if any(s.uses_snr for s in specs) and not snrs:
        raise ConfigError("noise haystacks (white, pink, babble) need at least one SNR")
    for label, model in models.items():
        if isinstance(model, nn.Module):
            model.to(device).eval()
    fbank_fn = fbank_fn or default_fbank_fn(mean, std, device)
    builders = {spec.name: FillerBuilder(spec, fbank_fn, eval_set.needles.shape[2], seed, device) for spec in specs}
    groups = [(spec, snr) for spec in specs for snr in (snrs if spec.uses_snr else [None])]

    _check_run_info(Path(out_dir), eval_set, seed)
    results = ResultsCSV(Path(out_dir) / CSV_NAME, len(eval_set))
    targets = eval_set.targets.numpy()
    memory = _PeakMemory(device)
    baselines: dict[str, tuple[_Measured, str]] = {}
    baseline_map: dict[str, float | None] = {m: results.baseline(m) for m in models}
    failed_at = results.failures(list(models))  # model -> (shortest length out of memory / positions, status)

    def write(label: str, spec: HaystackSpec, snr: float | None, length: int, position: float,
              measured: _Measured | None, status: str) -> None:
        m_ap = m_auc = rel_drop = float("nan")
        if status == STATUS_OK and measured is not None:
            m_ap, m_auc = _metrics(measured.scores, targets)
            base = baseline_map.get(label)
            if base is not None and base > 0:
                rel_drop = (base - m_ap) / base
        results.append(dict(
            model=label, haystack=spec.name, snr_db=snr, length_frames=length,
            length_s=length / FRAMES_PER_SECOND, position=float(position), clips=len(eval_set),
            mAP=m_ap, mAUC=m_auc, rel_drop=rel_drop,
            seconds=measured.seconds if measured is not None else float("nan"),
            peak_mem_mb=measured.peak_mb if measured is not None else float("nan"), status=status))

    def clip_batches(length: int, first_clip: int = 0) -> list[slice]:
        step = max(1, batch_size * NEEDLE_FRAMES // length)
        return [slice(i, min(i + step, len(eval_set))) for i in range(first_clip, len(eval_set), step)]

    def baseline(label: str) -> tuple[_Measured, str]:
        """The needle alone (1024 frames): the same for every haystack and position; run once."""
        if label not in baselines:
            measured, status = _Measured(len(eval_set), eval_set.num_classes), STATUS_OK
            with torch.inference_mode():
                for clips in clip_batches(NEEDLE_FRAMES):
                    try:
                        _run_batch(label, models[label], eval_set.needles[clips].to(device), clips, measured,
                                   memory, eval_set.num_classes)
                    except WrongClassCount:
                        raise
                    except Exception as error:  # noqa: BLE001 - a failing model gets a status row
                        status = classify_failure(error)
                        print(f"dass niah: {label} failed at {NEEDLE_FRAMES} frames: {status}", file=sys.stderr)
                        break
            baselines[label] = (measured, status)
            if status in (STATUS_OOM, STATUS_MAX_POSITIONS):
                failed_at[label] = (NEEDLE_FRAMES, status)
            if status == STATUS_OK:
                baseline_map[label] = _metrics(measured.scores, targets)[0]
        return baselines[label]

    def run_group(todo: dict[str, list[float]], spec: HaystackSpec, snr: float | None, length: int) -> None:
        """All (model, position) rows of one (haystack, SNR, length): fillers built once per clip."""
        active: dict[str, list[float]] = {}
        for label, ps in todo.items():
            if label in failed_at and length >= failed_at[label][0]:
                shorter, status = failed_at[label]
                for p in ps:
                    write(label, spec, snr, length, p, None, f"{status} (not run: failed at {shorter} frames)")
            else:
                if baseline_map.get(label) is None:
                    baseline(label)  # the reference for rel_drop (run once, unless read from the CSV)
                active[label] = ps
        if not active:
            return
        needed = [p for p in positions if any(p in ps for ps in active.values())]
        measured = {(label, p): _Measured(len(eval_set), eval_set.num_classes)
                    for label, ps in active.items() for p in ps}
        status = {label: STATUS_OK for label in active}
        builder = builders[spec.name]
        filler_frames = length - NEEDLE_FRAMES
        checkpoint = _GroupCheckpoint(Path(out_dir), spec.name, snr, length, measured, status, checkpoint_every_s)
        batches = clip_batches(length, first_clip=checkpoint.load())
        with torch.inference_mode():
            for clips in _progress(batches, desc=f"{spec.name} L={length}", leave=False, unit="batch",
                                   disable=not progress):
                if all(s != STATUS_OK for s in status.values()):
                    break
                needles = eval_set.needles[clips].to(device)
                if builder.is_constant:
                    filler = builder.constant(needles.shape[0], filler_frames)
                else:
                    fillers = [builder.noise(filler_frames, float(eval_set.needle_rms[i]), snr, i)
                               for i in range(clips.start, clips.stop)]
                    filler = fillers[0][None] if len(fillers) == 1 else torch.stack(fillers)
                    del fillers
                for p in needed:
                    haystack = place_needle(filler, needles, p)
                    for label, ps in active.items():
                        if p not in ps or status[label] != STATUS_OK:
                            continue
                        try:
                            _run_batch(label, models[label], haystack, clips, measured[label, p], memory,
                                       eval_set.num_classes)
                        except WrongClassCount:
                            raise
                        except Exception as error:  # noqa: BLE001 - a failing model gets a status row
                            status[label] = classify_failure(error)
                            print(f"dass niah: {label} failed at {length} frames ({spec.name}): "
                                  f"{status[label]}", file=sys.stderr)
                    del haystack
                del filler
                checkpoint.save(next_clip=clips.stop)
        for label, ps in active.items():
            for p in ps:
                write(label, spec, snr, length, p, measured[label, p], status[label])
            if status[label] in (STATUS_OOM, STATUS_MAX_POSITIONS) and label not in failed_at:
                failed_at[label] = (length, status[label])
        checkpoint.remove()

    bar = _progress(total=len(frame_lengths) * len(groups), desc="niah", disable=not progress, unit="group")
    for length in frame_lengths:
        for spec, snr in groups:
            bar.set_postfix_str(f"{spec.name} snr={_fmt_float(snr) or '-'} L={length}")
            todo = {label: [p for p in positions if row_key(label, spec.name, snr, length, p) not in results.done]
                    for label in models}
            todo = {label: ps for label, ps in todo.items() if ps}
            if length == NEEDLE_FRAMES:
                for label, ps in todo.items():
                    measured, status = baseline(label)
                    for p in ps:
                        write(label, spec, snr, length, p, measured, status)
            else:
                run_group(todo, spec, snr, length)
            bar.update(1)
    bar.close()
    return results.path

