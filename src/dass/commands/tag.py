"""``dass tag``: tag audio files of any length with a pretrained classifier."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..batch import cli as batch_cli
from ..errors import DassError

NAME = "tag"
HELP = "tag audio files with a pretrained model (top classes and their probabilities)"
DEFAULT_MODEL = "saurabhati/DASS_small_AudioSet_50.1"
LONG_INPUT_FRAMES = 60_000  # show the model's progress bar above 10 min of audio
DESCRIPTION = f"""\
Tag audio files with a pretrained audio classifier and print the most likely classes.

Each file is decoded (any format libsndfile or PyAV reads), converted to 16 kHz mono and turned
into 128-bin log-mel features over its WHOLE length (DASS has no length limit; nothing is cut to
10 s unless you pass --max-frames). Files shorter than --min-frames (default 1024 frames = 10.24 s)
are padded with zeros (before normalisation) up to that length, exactly as the released models
were trained and evaluated; pass --min-frames 0 to use only the audio's own frames.
Probabilities are per-class sigmoids (multi-label), so they do not sum to 1.

The model is a folder written by `dass convert` / save_pretrained, a Hugging Face DASS folder or
hub id (downloaded once, then cached; offline you must pass a local folder), or the authors' .pth.
Class names come from the checkpoint's config, from --labels (an AudioSet-style
class_labels_indices.csv: index,mid,display_name), or else are shown as class indices.

examples:
  dass tag dog.wav                                # top 5 classes with the default model
  dass tag a.flac b.mp3 --top-k 3
  dass tag long.wav --top-k 0 --threshold 0.3     # every class with probability >= 0.3
  dass tag clip.wav --model ./dass_small --json   # machine-readable output
  dass tag clip.wav --model DASS_small.pth --labels class_labels_indices.csv
  dass tag hour.wav --max-frames 1024             # only the first 1024 frames (~10 s)
  dass tag hour.wav --timeline --plot             # + hour.timeline.csv / .png: scores over time
  dass tag a.wav --timeline --segment 5 --timeline-format json --timeline-dir out/

On the CPU, DASS models run on the fast inference engine (dass.inference: same results as the
model's own forward to ~1e-6, several times faster), and inputs of hours run in one exact pass, tile
by tile, with a progress bar. --timeline scores every segment (--segment seconds, in steps of
0.32 s) of each file with the model's head, and writes <file>.timeline.csv (one row per segment,
one column per class) or .json into --timeline-dir, and with --plot a heat map of the top classes;
the text output lists where each top class peaks.

default model: {DEFAULT_MODEL}

{batch_cli.EXAMPLES}"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", metavar="FILE", help="audio files (or folders: see archives below) to tag")
    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="PATH_OR_ID",
                        help=f"checkpoint folder/file or Hugging Face hub id (default: {DEFAULT_MODEL})")
    parser.add_argument("--top-k", type=int, default=5, metavar="K",
                        help="show at most K classes per file (default 5; 0 = no limit)")
    parser.add_argument("--threshold", type=float, default=None, metavar="P",
                        help="only show classes with probability >= P (combined with --top-k)")
    parser.add_argument("--labels", metavar="CSV",
                        help="class names from a class_labels_indices.csv (index,mid,display_name)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--device", default="auto",
                        help="torch device: auto (CUDA if available, else CPU), cpu, cuda, cuda:1, ...")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N",
                        help="use only the first N feature frames of each file (100 frames = 1 s)")
    parser.add_argument("--min-frames", type=int, default=1024, metavar="N",
                        help="pad shorter files to N frames as in training (default 1024; 0 = no padding)")
    timeline = parser.add_argument_group("timeline (where in a recording the classes are; DASS models)")
    timeline.add_argument("--timeline", action="store_true",
                          help="also write per-segment class probabilities of each file")
    timeline.add_argument("--segment", type=float, default=1.0, metavar="SECONDS",
                          help="timeline segment length (default 1.0; rounded to whole 0.32 s steps)")
    timeline.add_argument("--timeline-format", choices=("csv", "json"), default="csv",
                          help="file format of the timelines (default csv)")
    timeline.add_argument("--timeline-dir", default=".", metavar="DIR",
                          help="write <file>.timeline.csv/.json here (default: the current directory)")
    timeline.add_argument("--plot", action="store_true",
                          help="with --timeline: also write <file>.timeline.png (heat map of the top classes)")
    batch_cli.add_arguments(parser)


# ----------------------------------------------------------------------------------------- helpers


def resolve_device(name: str):
    """``"auto"`` -> CUDA if available else CPU; anything else is checked and returned as a torch.device."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DassError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DassError(f"device {name!r} requested but CUDA is not available")
    return device


def read_label_names(path: str) -> list[str]:
    """Display names by class index from an AudioSet-style ``class_labels_indices.csv``."""
    from ..data.labels import read_class_labels_csv

    return [row.display_name for row in read_class_labels_csv(path)]


def class_names(model: Any, labels_csv: str | None) -> list[str] | None:
    """Class names for ``model``'s outputs: from ``labels_csv`` if given, else its config, else None."""
    num_classes = model.config.num_classes
    if labels_csv is not None:
        names = read_label_names(labels_csv)
        if len(names) != num_classes:
            raise DassError(f"{labels_csv}: {len(names)} classes, but the model has {num_classes} outputs")
        return names
    return list(model.config.labels) if getattr(model.config, "labels", None) else None


def top_classes(probabilities, names: list[str] | None, top_k: int, threshold: float | None) -> list[dict[str, Any]]:
    """The classes to report for one clip: ``[{"index", "label", "probability"}, ...]``, most likely first.

    ``probabilities``: ``(num_classes,)``. At most ``top_k`` entries (0: no limit), and only those
    with probability >= ``threshold`` if given.
    """
    import torch

    order = torch.argsort(probabilities, descending=True, stable=True).tolist()
    if top_k > 0:
        order = order[:top_k]
    rows = []
    for index in order:
        p = float(probabilities[index])
        if threshold is not None and p < threshold:
            break
        rows.append({"index": index, "label": names[index] if names else None, "probability": p})
    return rows


def clip_features(path: str, max_frames: int | None, min_frames: int) -> tuple[Any, int, float]:
    """Normalised features ``(1, T, 128)`` of one file, the number of audio frames they hold, and
    the file's duration in seconds.

    All of the file's frames are used (only the first ``max_frames`` if given); fewer than
    ``min_frames`` are zero-padded at the end (before normalisation) to ``min_frames``. The features
    are computed block by block (:func:`dass.inference.file_features`): an hour of audio costs its
    features (~180 MB), not a copy of the waveform.
    """
    from ..batch.pipeline import pad_features
    from ..inference.streaming import audio_duration, file_features

    duration = audio_duration(path)
    long_file = duration is not None and duration * 100 > LONG_INPUT_FRAMES
    features, audio_frames = pad_features(file_features(path, progress=long_file and sys.stderr.isatty()),
                                          min_frames, max_frames)
    if duration is None:  # a container libsndfile cannot read: the span the frames cover
        duration = (audio_frames - 1) * 0.01 + 0.025
    return features[None], audio_frames, duration


def timeline_stems(paths: list[str]) -> list[str]:
    """A distinct output name per input file: its stem, with -2, -3, ... for repeated stems."""
    from pathlib import Path

    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        stem = Path(path).stem or "audio"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def write_timeline_outputs(path: str, stem: str, times_s: Any, scores: Any, names: list[str] | None,
                           args: argparse.Namespace) -> dict[str, Any]:
    """Write the timeline (and plot) of one file; returns its summary for the result dict."""
    from pathlib import Path

    from ..inference.timeline import plot_timeline, timeline_peaks, write_timeline

    directory = Path(args.timeline_dir)
    target = directory / f"{stem}.timeline.{args.timeline_format}"
    write_timeline(target, times_s, scores, names, source=path)
    plot = None
    if args.plot:
        plot = directory / f"{stem}.timeline.png"
        plot_timeline(plot, times_s, scores, names, top_k=max(args.top_k, 1) if args.top_k else 10, title=path)
    return {
        "file": str(target),
        "plot": str(plot) if plot is not None else None,
        "segment_s": round(float(times_s[0, 1] - times_s[0, 0]), 2),
        "segments": int(times_s.shape[0]),
        "peaks": timeline_peaks(times_s, scores, names, top_k=args.top_k or 5),
    }


def tag_file(model: Any, path: str, names: list[str] | None, args: argparse.Namespace,
             device: Any, timeline_stem: str | None = None) -> dict[str, Any]:
    """Tag one file: ``{"file", "duration_s", "frames", "model_frames", "top": [...]}``.

    ``frames``: feature frames of audio used; ``model_frames``: frames the model saw (with padding);
    ``top``: see :func:`top_classes`.
    """
    import torch

    features, audio_frames, duration = clip_features(path, args.max_frames, args.min_frames)
    is_dass = getattr(model, "model_type", None) == "dass"
    progress = features.shape[1] > LONG_INPUT_FRAMES and sys.stderr.isatty()
    timeline = None
    if args.timeline:
        if not is_dass:
            raise DassError(f"--timeline needs a DASS model, got {type(model).__name__}")
        from ..inference import predict_with_timeline

        clip, times_s, scores = predict_with_timeline(model, features, args.segment, progress=progress)
        probabilities = clip[0]
        timeline = write_timeline_outputs(path, timeline_stem or "audio", times_s, scores, names, args)
    elif is_dass and device.type == "cpu":
        from ..inference import predict

        probabilities = torch.sigmoid(predict(model, features, progress=progress))[0]
    else:
        with torch.inference_mode():
            probabilities = torch.sigmoid(model(features.to(device)).float())[0].cpu()
    result = {
        "file": path,
        "duration_s": round(duration, 3),
        "frames": audio_frames,
        "model_frames": int(features.shape[1]),
        "top": top_classes(probabilities, names, args.top_k, args.threshold),
    }
    if timeline is not None:
        result["timeline"] = timeline
    return result


def format_text(result: dict[str, Any], threshold: float | None) -> str:
    """Human-readable lines for one :func:`tag_file` result."""
    padded = f", padded to {result['model_frames']}" if result["model_frames"] > result["frames"] else ""
    lines = [f"{result['file']}  ({result['duration_s']:.2f} s, {result['frames']} frames{padded})"]
    for row in result["top"]:
        label = row["label"] if row["label"] is not None else f"class {row['index']}"
        lines.append(f"  {row['probability']:.4f}  {label}")
    if not result["top"]:
        lines.append(f"  (no class with probability >= {threshold})")
    timeline = result.get("timeline")
    if timeline is not None:
        lines.append(f"  timeline: {timeline['file']} ({timeline['segments']} segments of "
                     f"{timeline['segment_s']:.2f} s)" + (f", plot: {timeline['plot']}" if timeline["plot"] else ""))
        for peak in timeline["peaks"]:
            label = peak["label"] if peak["label"] is not None else f"class {peak['index']}"
            lines.append(f"    peak {peak['peak']:.4f} at {peak['start_s']:.2f}-{peak['end_s']:.2f} s  {label}")
    return "\n".join(lines)


def check_arguments(args: argparse.Namespace) -> None:
    """Reject nonsensical option values with a readable DassError."""
    if args.top_k < 0:
        raise DassError(f"--top-k must be >= 0, got {args.top_k}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise DassError(f"--threshold must be a probability in [0, 1], got {args.threshold}")
    if args.max_frames is not None and args.max_frames < 1:
        raise DassError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.min_frames < 0:
        raise DassError(f"--min-frames must be >= 0, got {args.min_frames}")
    if not args.segment > 0:
        raise DassError(f"--segment must be a positive number of seconds, got {args.segment}")
    if args.plot and not args.timeline:
        raise DassError("--plot needs --timeline")


# --------------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..checkpoints import from_pretrained

    check_arguments(args)
    device = resolve_device(args.device)
    model = from_pretrained(args.model, device=device)
    names = class_names(model, args.labels)
    if batch_cli.wanted(args):  # folders, lists, --output, --events, --ray: dass.batch
        return batch_cli.run(args, model, names, device)
    if not args.files:
        raise DassError("no files to tag")

    results: list[dict[str, Any]] = []
    failed = 0
    stems = timeline_stems(args.files)
    for path, stem in zip(tqdm(args.files, desc="tagging", unit="file", disable=len(args.files) < 2,
                               file=sys.stderr), stems):
        try:
            result = tag_file(model, path, names, args, device, stem)
        except DassError as e:  # report and go on with the other files
            failed += 1
            print(f"dass tag: error: {e}", file=sys.stderr)
            results.append({"file": path, "error": str(e)})
            continue
        results.append(result)
        if not args.json:
            print(format_text(result, args.threshold), flush=True)
    if args.json:
        print(json.dumps({"model": str(args.model), "results": results}, indent=2, ensure_ascii=False))
    return 1 if failed else 0
