"""Multi-label and single-label tasks: the loss, the scores and the metrics ``dass train`` uses.

``data.task``:

* ``"multilabel"`` (AudioSet-style tagging, the default): BCE-with-logits on the (possibly mixed)
  multi-hot targets, sigmoid scores, mAP / mAUC / d′ (:mod:`dass.train.metrics`).
* ``"singlelabel"`` (keyword spotting, speaker identification, ESC-50): every clip has exactly one
  label; cross-entropy against the target distribution (one-hot, or mixed by mixup:
  ``−Σ_c y_c log softmax(z)_c``), softmax scores, and ``accuracy`` (argmax = label), ``top5_accuracy``
  (label among the 5 highest scores), plus mAP / mAUC / d′ of the softmax scores. The confusion
  matrix (rows: true class, columns: predicted class) is :func:`confusion_matrix`, drawn by
  :func:`plot_confusion`.

Knowledge distillation mixes either task loss with the KD term: ``(1 − w)·task + w·KD``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, DassError
from .losses import distillation_loss, kd_loss
from .metrics import compute_metrics

__all__ = [
    "TASKS",
    "check_single_label",
    "confusion_matrix",
    "plot_confusion",
    "task_loss",
    "task_metrics",
    "task_scores",
    "top_k_accuracy",
]

TASKS = ("multilabel", "singlelabel")


def _check(task: str) -> None:
    if task not in TASKS:
        raise ConfigError(f"data.task must be one of {', '.join(TASKS)}, got {task!r}")


def task_loss(
    logits: Tensor,
    targets: Tensor,
    task: str = "multilabel",
    teacher_logits: Tensor | None = None,
    kd_weight: float = 0.5,
    kd_kind: str = "kldiv",
    temperature: float = 1.0,
) -> Tensor:
    """The training loss for ``(B, C)`` logits and targets (see the module docstring)."""
    _check(task)
    if task == "multilabel":
        return distillation_loss(logits, targets, teacher_logits, kd_weight, kd_kind, temperature)
    ce = -(targets.to(logits.dtype) * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
    if teacher_logits is None:
        return ce
    return (1.0 - kd_weight) * ce + kd_weight * kd_loss(logits, teacher_logits, kd_kind, temperature)


def task_scores(logits: Tensor, task: str = "multilabel") -> Tensor:
    """Per-class scores: sigmoid (multi-label) or softmax (single-label) of ``(B, C)`` logits."""
    _check(task)
    return torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, dim=-1)


def top_k_accuracy(scores: Tensor, labels: Tensor, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores (``k`` capped at the class count)."""
    k = min(k, scores.shape[1])
    top = torch.topk(scores, k, dim=1).indices
    return float((top == labels[:, None]).any(dim=1).float().mean())


def task_metrics(scores: Tensor, targets: Tensor, task: str = "multilabel") -> dict[str, float]:
    """Metrics of ``(N, C)`` scores against targets (multi-hot, or one-hot for single-label)."""
    _check(task)
    metrics = compute_metrics(scores, targets)
    if task == "multilabel":
        return metrics
    labels = targets.argmax(dim=1)
    return {
        "accuracy": top_k_accuracy(scores, labels, 1),
        "top5_accuracy": top_k_accuracy(scores, labels, 5),
        **metrics,
    }


def check_single_label(dataset) -> None:
    """Raise :class:`DassError` naming the datafile and entry of the first clip without exactly one label."""
    for i, clip in enumerate(dataset.clips):
        if len(clip.label_indices) != 1:
            raise DassError(
                f"{dataset.datafile}: entry {i} ({clip.wav}) has {len(clip.label_indices)} labels; "
                "data.task=singlelabel needs exactly one per clip (use data.task=multilabel)"
            )


def confusion_matrix(scores: Tensor, labels: Tensor, num_classes: int) -> np.ndarray:
    """``(C, C)`` counts: row = true class, column = predicted (argmax) class."""
    predicted = scores.argmax(dim=1).cpu().numpy()
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels.cpu().numpy(), predicted), 1)
    return matrix


def plot_confusion(matrix: np.ndarray, names: list[str], path: str | os.PathLike, title: str = "") -> Path:
    """Draw a confusion matrix (rows normalised to the fraction of each true class) as a PNG."""
    from ..plotting import pyplot, save_figure

    plt = pyplot()
    n = matrix.shape[0]
    rows = matrix.sum(axis=1, keepdims=True)
    fractions = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=np.float64), where=rows > 0)
    size = min(16.0, 3.0 + 0.28 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=names, rotation=90, fontsize=7 if n > 20 else 9)
    ax.set_yticks(range(n), labels=names, fontsize=7 if n > 20 else 9)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    ax.set_title(f"{title + ': ' if title else ''}accuracy {accuracy:.3f} ({int(matrix.sum())} clips)")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    return save_figure(fig, path)
