"""``dass tag``: tag audio files of any length with a pretrained classifier."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import DassError

NAME = "tag"
HELP = "tag audio files with a pretrained model (top classes and their probabilities)"
DEFAULT_MODEL = "saurabhati/DASS_small_AudioSet_50.1"
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

default model: {DEFAULT_MODEL}
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="audio files to tag")
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
    ``min_frames`` are zero-padded at the end (before normalisation) to ``min_frames``.
    """
    from ..audio import load_audio
    from ..features import FeatureExtractor, num_frames

    sample_rate = 16000
    waveform = load_audio(path, sample_rate)
    audio_frames = num_frames(waveform.shape[0], sample_rate)
    if max_frames is not None:
        audio_frames = min(audio_frames, max_frames)
    length = max(audio_frames, min_frames)
    if max_frames is not None:
        length = min(length, max_frames)
    features = FeatureExtractor(sampling_rate=sample_rate, max_length=length)(waveform)["input_values"]
    return features, audio_frames, waveform.shape[0] / sample_rate


def tag_file(model: Any, path: str, names: list[str] | None, args: argparse.Namespace,
             device: Any) -> dict[str, Any]:
    """Tag one file: ``{"file", "duration_s", "frames", "model_frames", "top": [...]}``.

    ``frames``: feature frames of audio used; ``model_frames``: frames the model saw (with padding);
    ``top``: see :func:`top_classes`.
    """
    import torch

    features, audio_frames, duration = clip_features(path, args.max_frames, args.min_frames)
    with torch.inference_mode():
        probabilities = torch.sigmoid(model(features.to(device)).float())[0].cpu()
    return {
        "file": path,
        "duration_s": round(duration, 3),
        "frames": audio_frames,
        "model_frames": int(features.shape[1]),
        "top": top_classes(probabilities, names, args.top_k, args.threshold),
    }


def format_text(result: dict[str, Any], threshold: float | None) -> str:
    """Human-readable lines for one :func:`tag_file` result."""
    padded = f", padded to {result['model_frames']}" if result["model_frames"] > result["frames"] else ""
    lines = [f"{result['file']}  ({result['duration_s']:.2f} s, {result['frames']} frames{padded})"]
    for row in result["top"]:
        label = row["label"] if row["label"] is not None else f"class {row['index']}"
        lines.append(f"  {row['probability']:.4f}  {label}")
    if not result["top"]:
        lines.append(f"  (no class with probability >= {threshold})")
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


# --------------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..checkpoints import from_pretrained

    check_arguments(args)
    device = resolve_device(args.device)
    model = from_pretrained(args.model, device=device)
    names = class_names(model, args.labels)

    results: list[dict[str, Any]] = []
    failed = 0
    for path in tqdm(args.files, desc="tagging", unit="file", disable=len(args.files) < 2, file=sys.stderr):
        try:
            result = tag_file(model, path, names, args, device)
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
