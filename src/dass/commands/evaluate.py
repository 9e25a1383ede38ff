"""``dass evaluate``: a trained model's metrics on a labelled datafile (e.g. a test split)."""

from __future__ import annotations

import argparse

NAME = "evaluate"
HELP = "score a model on an AST JSON datafile: mAP / mAUC / d' (multi-label) or accuracy, top-5 (single-label)"
DESCRIPTION = """\
Evaluate a model (any checkpoint dass loads) on a labelled AST JSON datafile with the metrics of
dass train: mAP, mAUC and d' (--task multilabel), plus accuracy, top-5 accuracy and a confusion
matrix (--task singlelabel). The features are prepared as in training: cut or padded to
--max-length frames, normalised with --mean / --std.

  dass evaluate runs/kws/final data/keywords/test.json --task singlelabel --max-length 100 \\
      --mean -6.85 --std 5.57 --out runs/kws/test_metrics.json --confusion runs/kws/test_confusion.png
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="checkpoint folder or file (anything dass.from_pretrained reads)")
    parser.add_argument("datafile", help="AST JSON datafile with labels")
    parser.add_argument("--labels", default=None, help="class_labels_indices.csv (default: next to the datafile)")
    parser.add_argument("--task", default="multilabel", choices=("multilabel", "singlelabel"))
    parser.add_argument("--max-length", type=int, default=1024, metavar="FRAMES", help="frames per clip (default 1024)")
    parser.add_argument("--mean", type=float, default=None, help="fbank mean (default: AudioSet's)")
    parser.add_argument("--std", type=float, default=None, help="fbank std (default: AudioSet's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default=None, metavar="JSON", help="write the metrics to this JSON file")
    parser.add_argument("--confusion", default=None, metavar="PNG", help="single-label: draw the confusion matrix")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    from ..checkpoints import from_pretrained
    from ..data.dataset import AudioTaggingDataset
    from ..errors import ConfigError
    from ..features import AUDIOSET_MEAN, AUDIOSET_STD
    from ..train.distributed import DistInfo
    from ..train.tasks import check_single_label, confusion_matrix, plot_confusion
    from ..train.trainer import _atomic_bytes, evaluate, metrics_text

    dataset = AudioTaggingDataset(
        args.datafile,
        args.labels,
        max_length=args.max_length,
        mean=AUDIOSET_MEAN if args.mean is None else args.mean,
        std=AUDIOSET_STD if args.std is None else args.std,
    )
    if args.task == "singlelabel":
        check_single_label(dataset)
    model = from_pretrained(args.model)
    classes = getattr(model.config, "num_classes", None)
    if classes != dataset.num_classes:
        raise ConfigError(f"{args.model} has {classes} classes, {args.datafile} {dataset.num_classes}")
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size)
    metrics, scores, targets = evaluate(model, loader, torch.device("cpu"), DistInfo(), False, args.task, outputs=True)
    print(f"{args.datafile}: {metrics_text(metrics)} ({len(dataset)} clips)")
    if args.out:
        _atomic_bytes(
            Path(args.out),
            (
                json.dumps(
                    {**metrics, "clips": len(dataset), "datafile": str(args.datafile), "model": str(args.model)},
                    indent=2,
                )
                + "\n"
            ).encode(),
        )
    if args.confusion:
        if args.task != "singlelabel":
            raise ConfigError("--confusion needs --task singlelabel")
        matrix = confusion_matrix(scores, targets.argmax(dim=1), dataset.num_classes)
        plot_confusion(matrix, dataset.display_names, args.confusion, title=Path(args.datafile).name)
    return 0
