"""``dass demo``: the paper in miniature, offline, on a CPU.

Four stages, each resumable, all under one output folder::

    OUT/
      demo_config.json        the settings of this demo (a re-run must use the same ones)
      corpus/                 1. a small `dass synth` corpus (train.json, eval.json, audio/, stats.md)
      teacher/                2. an AST teacher trained on it (`dass train` output; final/ = the model)
      student/                3. a DASS student distilled from the teacher (final/ = the model)
      baseline/               3b. (``baseline=True``) the same DASS trained without the teacher
      niah/                   4. NIAH for both models: niah.csv, niah_*.png, summary.md
      summary.md, summary.json   the demo's results table (written last, atomically)

Re-running with the same ``OUT`` skips what is finished: the corpus renders only missing clips,
a trained model (``final_metrics.json`` present) is not trained again, an interrupted training resumes
from its last checkpoint, and NIAH skips the rows already in ``niah.csv``.

Python use::

    from dass.demo import DemoConfig, run_demo
    result = run_demo("dass_demo", DemoConfig.preset("quick"))
    print(result["summary_markdown"])

The budgets (:data:`PRESETS`) are sized for a 2-core CPU: ``default`` ≤ 15 min, ``quick`` ≈ 2 min
(idle machine). The transformer's NIAH stops at a shorter length than DASS's: self-attention cost grows
with the square of the length (one 10 min haystack is ~72 000 tokens for AST), DASS's linearly.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError

__all__ = ["DemoConfig", "PRESETS", "run_demo", "demo_summary_markdown", "chance_map"]

CONFIG_NAME = "demo_config.json"
SUMMARY_MD = "summary.md"
SUMMARY_JSON = "summary.json"
TEACHER_LABEL = "ast_teacher"
STUDENT_LABEL = "dass_student"
BASELINE_LABEL = "dass_no_kd"


@dataclass
class DemoConfig:
    """Everything the demo does (the budget). Lengths are NIAH length strings (``"10s"``, ``"1min"``).

    ``teacher_args`` / ``student_args`` are keyword overrides for :func:`dass.create_model` of
    ``teacher_model`` / ``student_model`` (the class count and labels come from the corpus).
    """

    train_clips: int = 160
    eval_clips: int = 80
    # Procedural tones/noises and espeak-ng speech: 19 distinct classes that tiny models learn in minutes
    # (FluidSynth's 41 instrument classes need far more training than a CPU demo has).
    sources: tuple[str, ...] = ("procedural", "espeak")
    teacher_model: str = "ast_tiny"
    teacher_args: dict[str, Any] = field(default_factory=lambda: {
        "depth": 2, "fstride": 16, "tstride": 16, "drop_path_rate": 0.0})
    teacher_epochs: int = 16
    student_model: str = "dass_tiny"
    student_args: dict[str, Any] = field(default_factory=lambda: {
        "dims": [16, 32, 64, 128], "depths": [1, 1, 1, 1], "drop_path_rate": 0.0})
    student_epochs: int = 16
    batch_size: int = 8
    teacher_lr: float = 3e-4  # a transformer from scratch: a lower rate than the student's
    student_lr: float = 1e-3
    warmup_steps: int = 10
    # No mixup / SpecAugment: with a few hundred steps they slow learning more than they regularise.
    mixup: float = 0.0
    freqm: int = 0
    timem: int = 0
    kd_weight: float = 0.5
    niah_clips: int = 8
    teacher_lengths: tuple[str, ...] = ("10s", "30s", "1min")
    student_lengths: tuple[str, ...] = ("10s", "1min", "10min")
    positions: tuple[float, ...] = (0.0, 1.0)
    haystacks: tuple[str, ...] = ("zeros", "white")
    snr_db: float = 10.0
    baseline: bool = False  # also train the student without distillation (the KD comparison)
    seed: int = 0

    @classmethod
    def preset(cls, name: str) -> "DemoConfig":
        """One of :data:`PRESETS` (``default``, ``quick``, ``tiny-test``) as a fresh config."""
        if name not in PRESETS:
            raise ConfigError(f"unknown demo preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**copy.deepcopy(PRESETS[name]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def identity(self) -> dict[str, Any]:
        """The settings that determine the corpus, models and NIAH rows (stored in ``demo_config.json``;
        ``baseline`` only adds a stage, so a folder can be resumed with or without it)."""
        values = self.to_dict()
        del values["baseline"]
        return values

    def validate(self) -> None:
        """Reject budgets that cannot run (before anything is written)."""
        if self.train_clips < self.batch_size:
            raise ConfigError(f"train_clips ({self.train_clips}) must be at least one batch ({self.batch_size})")
        if self.eval_clips < 1 or self.niah_clips < 1:
            raise ConfigError("eval_clips and niah_clips must be >= 1")
        if self.niah_clips > self.eval_clips:
            raise ConfigError(f"niah_clips ({self.niah_clips}) cannot exceed eval_clips ({self.eval_clips})")
        if self.teacher_epochs < 1 or self.student_epochs < 1:
            raise ConfigError("teacher_epochs and student_epochs must be >= 1")
        if not 0.0 <= self.kd_weight <= 1.0:
            raise ConfigError(f"kd_weight must be in [0, 1], got {self.kd_weight}")
        from .niah import parse_haystacks, parse_lengths, parse_positions

        parse_lengths(list(self.teacher_lengths))
        parse_lengths(list(self.student_lengths))
        parse_positions(list(self.positions))
        parse_haystacks(list(self.haystacks))


#: Budgets. ``default``: <= 15 min on an idle 2-core CPU; ``quick``: about 2 min; ``tiny-test``: the
#: end-to-end test's (seconds; the numbers mean nothing).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "quick": dict(
        train_clips=96, eval_clips=32, teacher_epochs=10, student_epochs=10, niah_clips=6,
        teacher_lengths=("10s", "30s"), student_lengths=("10s", "30s", "1min"), positions=(0.0, 1.0)),
    "tiny-test": dict(
        train_clips=16, eval_clips=8, sources=("procedural",), teacher_epochs=1, student_epochs=1,
        teacher_args={"embed_dim": 32, "depth": 1, "num_heads": 2},
        student_args={"dims": [8, 16, 32, 64], "depths": [1, 1, 1, 1]},
        warmup_steps=1, niah_clips=4, teacher_lengths=("10s", "20s"), student_lengths=("10s", "20s"),
        positions=(0.0, 1.0)),
}


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _cpu_seconds() -> float:
    """CPU seconds used so far by this process and its reaped children (corpus workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file in the same folder + ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _banner(step: int, total: int, title: str, log: Callable[[str], None]) -> None:
    log(f"\n=== [{step}/{total}] {title} ===")


def _check_config(out: Path, config: DemoConfig) -> None:
    """Record the demo's settings in ``OUT/demo_config.json``; refuse to resume with other settings."""
    path = out / CONFIG_NAME
    wanted = config.identity()
    if path.exists():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: unreadable ({e}); remove {out} or choose another --out") from None
        if existing != wanted:
            changed = sorted(k for k in set(existing) | set(wanted) if existing.get(k) != wanted.get(k))
            raise ConfigError(f"{out} holds a demo run with other settings (different: {', '.join(changed)}); "
                              "use the same options to resume it, or choose another --out")
        return
    _write_text(path, json.dumps(wanted, indent=2) + "\n")


# --------------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------------


def _corpus_complete(corpus: Path, config: DemoConfig) -> bool:
    """True when ``build_corpus`` finished with the demo's clip counts (it writes stats.json last)."""
    try:
        stats = json.loads((corpus / "stats.json").read_text(encoding="utf-8"))
        splits = stats["splits"]
        return splits["train"]["clips"] == config.train_clips and splits["eval"]["clips"] == config.eval_clips
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _build_corpus(corpus: Path, config: DemoConfig, workers: int, progress: bool) -> dict:
    """Stage 1: render the clips still missing (``dass synth``'s own resumption); returns its stats."""
    from .data.synth import available_backends, build_corpus

    if _corpus_complete(corpus, config):
        return json.loads((corpus / "stats.json").read_text(encoding="utf-8"))
    sources = available_backends(config.sources)  # warns about (and drops) missing programs
    return build_corpus(corpus, num_train=config.train_clips, num_eval=config.eval_clips, seed=config.seed,
                        sources=sources, workers=workers, progress=progress)


def _train_config(config: DemoConfig, corpus: Path, run_dir: Path, model: str, args: dict[str, Any],
                  epochs: int, lr: float, teachers: list[str], device: str, progress: bool) -> Any:
    """The :class:`dass.train.config.TrainConfig` of one demo training run."""
    from .train.config import config_from_dict

    values = {
        "data": {"train": str(corpus / "train.json"), "eval": str(corpus / "eval.json"),
                 "cache_dir": str(corpus / "feature_cache"), "num_workers": 0},
        "augment": {"mixup": config.mixup, "freqm": config.freqm, "timem": config.timem},
        "model": {"name": model, "args": dict(args)},
        "optim": {"batch_size": config.batch_size, "epochs": epochs, "lr": lr,
                  "warmup_steps": config.warmup_steps, "lr_decay_start": max(2, epochs), "lr_decay_every": 1,
                  "lr_decay_factor": 0.5, "wa_start": 0},
        "kd": {"teachers": teachers, "weight": config.kd_weight if teachers else 0.5},
        "run": {"output_dir": str(run_dir), "seed": config.seed, "device": device, "checkpoint_every": 25,
                "eval_batch_size": 16, "progress": progress},
    }
    train_config = config_from_dict(values)
    train_config.validate()
    return train_config


def _train_stage(run_dir: Path, train_config: Any) -> dict[str, Any]:
    """Train (or resume, or skip when finished) one model; returns its ``final_metrics.json``."""
    from .train import trainer

    metrics_path = run_dir / "final_metrics.json"
    if not metrics_path.exists():
        resume = (run_dir / trainer.CHECKPOINT).exists()
        trainer.train(train_config, resume=resume)
    return json.loads(metrics_path.read_text(encoding="utf-8"))


def _niah_stage(niah_dir: Path, corpus: Path, config: DemoConfig, teacher_dir: Path, student_dir: Path,
                device: str, progress: bool) -> list[Path]:
    """Stage 4: NIAH for the teacher (up to ``teacher_lengths``) and the student (``student_lengths``)
    into one ``niah.csv`` (rows already there are skipped); then the figures and ``niah/summary.md``."""
    from .checkpoints import from_pretrained
    from .niah import load_eval_set, make_plots, run_niah

    eval_set = load_eval_set(corpus / "eval.json", max_clips=config.niah_clips)
    for label, folder, lengths in ((TEACHER_LABEL, teacher_dir, config.teacher_lengths),
                                   (STUDENT_LABEL, student_dir, config.student_lengths)):
        model = from_pretrained(folder / "final")
        run_niah({label: model}, eval_set, list(lengths), list(config.positions), list(config.haystacks),
                 [config.snr_db], niah_dir, batch_size=8, device=device, seed=config.seed, progress=progress)
    return make_plots(niah_dir)


# --------------------------------------------------------------------------------------------------
# The summary
# --------------------------------------------------------------------------------------------------


def chance_map(datafile: str | os.PathLike, label_csv: str | os.PathLike | None = None) -> float:
    """The mAP of uninformative scores on a datafile: the mean, over classes with positives, of the
    class's positive rate (the expected average precision of a random ranking, to first order)."""
    from .data.dataset import AudioTaggingDataset

    dataset = AudioTaggingDataset(datafile, label_csv)
    counts = [0] * dataset.num_classes
    for clip in dataset.clips:
        for index in clip.label_indices:
            counts[index] += 1
    rates = [c / len(dataset) for c in counts if c > 0]
    return sum(rates) / len(rates)


def _niah_means(rows: list[dict]) -> dict[tuple[str, str, int], tuple[float, float]]:
    """(model, haystack, length_frames) -> (mAP, relative drop), means over the needle positions of
    the ``ok`` rows (the demo uses one SNR per haystack)."""
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for r in rows:
        if r["status"] == "ok":
            groups.setdefault((r["model"], r["haystack"], r["length_frames"]), []).append(r)

    def mean(values: list[float]) -> float:
        values = [v for v in values if not math.isnan(v)]
        return sum(values) / len(values) if values else float("nan")

    return {k: (mean([r["mAP"] for r in v]), mean([r["rel_drop"] for r in v])) for k, v in groups.items()}


def _length_text(frames: int) -> str:
    seconds = frames / 100
    if frames == 1024:
        return "10 s"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f} %"


def demo_summary(config: DemoConfig, corpus_stats: dict, teacher: dict, student: dict, chance: float,
                 niah_rows: list[dict] | None, timings: dict[str, dict[str, float]],
                 baseline: dict | None = None) -> dict[str, Any]:
    """The numbers of the demo as a JSON-friendly dict (``summary.json``)."""
    models = {
        TEACHER_LABEL: {"architecture": config.teacher_model, "args": config.teacher_args,
                        "parameters": teacher.get("parameters"), "epochs": config.teacher_epochs,
                        "mAP": teacher["mAP"], "mAUC": teacher["mAUC"], "distilled": False},
        STUDENT_LABEL: {"architecture": config.student_model, "args": config.student_args,
                        "parameters": student.get("parameters"), "epochs": config.student_epochs,
                        "mAP": student["mAP"], "mAUC": student["mAUC"], "distilled": True},
    }
    if baseline is not None:
        models[BASELINE_LABEL] = {"architecture": config.student_model, "args": config.student_args,
                                  "parameters": baseline.get("parameters"), "epochs": config.student_epochs,
                                  "mAP": baseline["mAP"], "mAUC": baseline["mAUC"], "distilled": False}
    niah: dict[str, Any] = {}
    if niah_rows is not None:
        means = _niah_means(niah_rows)
        for label in (TEACHER_LABEL, STUDENT_LABEL):
            per_haystack = {}
            for haystack in config.haystacks:
                lengths = sorted(n for (m, h, n) in means if m == label and h == haystack)
                if not lengths:
                    continue
                points = {str(n): {"length": _length_text(n), "mAP": means[label, haystack, n][0],
                                   "rel_drop": means[label, haystack, n][1]} for n in lengths}
                failed = sorted({r["status"] for r in niah_rows if r["model"] == label and r["haystack"] == haystack
                                 and r["status"] != "ok"})
                per_haystack[haystack] = {"longest_frames": lengths[-1], "by_length": points, "failures": failed}
            niah[label] = per_haystack
    splits = corpus_stats["splits"]
    return {
        "corpus": {"train_clips": splits["train"]["clips"], "eval_clips": splits["eval"]["clips"],
                   "classes": corpus_stats["num_classes"], "sources": corpus_stats["config"]["sources"]},
        "chance_mAP": chance, "models": models, "niah": niah,
        "niah_setup": {"clips": config.niah_clips, "positions": list(config.positions),
                       "haystacks": list(config.haystacks), "snr_db": config.snr_db},
        "timings": timings,
    }


def demo_summary_markdown(summary: dict[str, Any]) -> str:
    """The results table printed at the end of the demo (and written to ``summary.md``)."""
    corpus, models = summary["corpus"], summary["models"]
    lines = ["# dass demo: results", "",
             f"Corpus (`dass synth`): {corpus['train_clips']} train / {corpus['eval_clips']} eval clips of 10 s, "
             f"{corpus['classes']} classes, sources: {', '.join(corpus['sources'])}.", "",
             f"## Tagging the 10 s eval clips ({corpus['eval_clips']} clips; chance mAP ≈ {summary['chance_mAP']:.3f})",
             "", "| model | architecture | parameters | epochs | distilled | mAP | mAUC |", "|---|---|---|---|---|---|---|"]
    for label, m in models.items():
        params = f"{m['parameters'] / 1e6:.2f} M" if m.get("parameters") else "?"
        lines.append(f"| {label} | {m['architecture']} | {params} | {m['epochs']} | {'yes' if m['distilled'] else 'no'} "
                     f"| {m['mAP']:.4f} | {m['mAUC']:.4f} |")
    if summary["niah"]:
        setup = summary["niah_setup"]
        lines += ["", f"## NIAH: relative mAP drop vs the 10 s clip alone ({setup['clips']} needles, positions "
                  f"{', '.join(f'{p:g}' for p in setup['positions'])} averaged; noise at {setup['snr_db']:g} dB SNR)", ""]
        all_lengths = sorted({int(n) for per in summary["niah"].values() for h in per.values() for n in h["by_length"]})
        shown = [n for n in all_lengths if n != 1024]
        lines += ["| model | haystack | mAP at 10 s | " + " | ".join(f"drop at {_length_text(n)}" for n in shown) + " |",
                  "|---|---|---|" + "---|" * len(shown)]
        for label, per in summary["niah"].items():
            for haystack, h in per.items():
                base = h["by_length"].get("1024", {}).get("mAP", float("nan"))
                cells = [_percent(h["by_length"][str(n)]["rel_drop"]) if str(n) in h["by_length"] else "—" for n in shown]
                lines.append(f"| {label} | {haystack} | {base:.4f} | " + " | ".join(cells) + " |")
        lines += ["", "At the longest length each model ran:", ""]
        for label, per in summary["niah"].items():
            for haystack, h in per.items():
                longest = h["by_length"][str(h["longest_frames"])]
                note = f" (stopped: {'; '.join(h['failures'])})" if h["failures"] else ""
                lines.append(f"- {label}, {haystack}: {_percent(longest['rel_drop'])} drop at {longest['length']} "
                             f"(mAP {longest['mAP']:.4f}){note}")
    timings = summary["timings"]
    if timings:
        total_wall = sum(t["wall_s"] for t in timings.values())
        total_cpu = sum(t["cpu_s"] for t in timings.values())
        lines += ["", "Time spent by this run (stages skipped on a resumed run count 0): "
                  + ", ".join(f"{k} {t['wall_s']:.0f} s" for k, t in timings.items())
                  + f"; total {total_wall:.0f} s wall, {total_cpu:.0f} s CPU."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------------


def run_demo(out_dir: str | os.PathLike = "dass_demo", config: DemoConfig | None = None, *, device: str = "auto",
             threads: int | None = None, skip_niah: bool = False, progress: bool = True,
             log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the demo in ``out_dir``; returns the summary dict plus the paths written.

    The corpus is rendered by spawned worker processes (``threads`` > 1): from a script, call this
    under ``if __name__ == "__main__":``.

    Args:
        config: the budget (default :class:`DemoConfig`, the ``default`` preset).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``, for training and NIAH.
        threads: torch CPU threads and corpus worker processes (default: all cores).
        skip_niah: stop after training (the summary then has no NIAH part).
        log: where stage banners and notes go (default: stderr).
    """
    import torch

    config = config or DemoConfig()
    config.validate()
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda asked for but no CUDA device is available")
    resolved_device = "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"
    threads = threads or os.cpu_count() or 1
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    _check_config(out, config)
    corpus, teacher_dir, student_dir, niah_dir = out / "corpus", out / "teacher", out / "student", out / "niah"
    baseline_dir = out / "baseline"
    total = (3 if skip_niah else 4) + (1 if config.baseline else 0)
    timings: dict[str, dict[str, float]] = {}

    def timed(name: str, work: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), _cpu_seconds()
        result = work()
        timings[name] = {"wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(_cpu_seconds() - cpu, 1)}
        return result

    try:
        _banner(1, total, f"corpus: {config.train_clips} train + {config.eval_clips} eval clips of 10 s "
                          f"(dass synth) -> {corpus}", log)
        done = _corpus_complete(corpus, config)
        stats = timed("corpus", lambda: _build_corpus(corpus, config, min(threads, 4), progress))
        if done:
            log("corpus: already built (skipped)")

        _banner(2, total, f"teacher: {config.teacher_model} {config.teacher_args}, {config.teacher_epochs} epochs "
                          f"-> {teacher_dir}", log)
        if (teacher_dir / "final_metrics.json").exists():
            log("teacher: already trained (skipped)")
        teacher_config = _train_config(config, corpus, teacher_dir, config.teacher_model, config.teacher_args,
                                       config.teacher_epochs, config.teacher_lr, [], device, progress)
        teacher = timed("teacher", lambda: _train_stage(teacher_dir, teacher_config))

        _banner(3, total, f"student: {config.student_model} {config.student_args}, {config.student_epochs} epochs, "
                          f"distilled from the teacher (KD weight {config.kd_weight}) -> {student_dir}", log)
        if (student_dir / "final_metrics.json").exists():
            log("student: already trained (skipped)")
        student_config = _train_config(config, corpus, student_dir, config.student_model, config.student_args,
                                       config.student_epochs, config.student_lr, [str(teacher_dir / "final")], device,
                                       progress)
        student = timed("student", lambda: _train_stage(student_dir, student_config))

        baseline = None
        if config.baseline:
            _banner(4, total, f"baseline: the same {config.student_model}, {config.student_epochs} epochs, without "
                              f"the teacher -> {baseline_dir}", log)
            if (baseline_dir / "final_metrics.json").exists():
                log("baseline: already trained (skipped)")
            baseline_config = _train_config(config, corpus, baseline_dir, config.student_model, config.student_args,
                                            config.student_epochs, config.student_lr, [], device,
                                            progress)
            baseline = timed("baseline", lambda: _train_stage(baseline_dir, baseline_config))
        elif (baseline_dir / "final_metrics.json").exists():  # trained by an earlier run with the baseline
            baseline = json.loads((baseline_dir / "final_metrics.json").read_text(encoding="utf-8"))

        niah_rows = None
        figures: list[Path] = []
        if not skip_niah:
            from .niah.plots import read_rows

            _banner(total, total, f"NIAH on {config.niah_clips} eval clips: teacher up to {config.teacher_lengths[-1]}, "
                              f"student up to {config.student_lengths[-1]}; haystacks {', '.join(config.haystacks)} "
                              f"-> {niah_dir}", log)
            figures = timed("niah", lambda: _niah_stage(niah_dir, corpus, config, teacher_dir, student_dir,
                                                        resolved_device, progress))
            niah_rows = read_rows(niah_dir / "niah.csv")
    finally:
        torch.set_num_threads(previous_threads)

    chance = chance_map(corpus / "eval.json")
    summary = demo_summary(config, stats, teacher, student, chance, niah_rows, timings, baseline)
    markdown = demo_summary_markdown(summary)
    _write_text(out / SUMMARY_JSON, json.dumps(summary, indent=2) + "\n")
    _write_text(out / SUMMARY_MD, markdown)
    summary["summary_markdown"] = markdown
    summary["paths"] = {"summary_md": str(out / SUMMARY_MD), "summary_json": str(out / SUMMARY_JSON),
                        "niah_csv": None if skip_niah else str(niah_dir / "niah.csv"),
                        "figures": [str(p) for p in figures if p.suffix == ".png"],
                        "teacher": str(teacher_dir / "final"), "student": str(student_dir / "final"),
                        "example_clip": str(corpus / "audio" / "eval" / "eval_000000.flac")}
    return summary
