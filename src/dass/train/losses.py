"""Training losses: multi-label BCE and knowledge-distillation terms (SPEC §5).

``kd_loss(student, teacher, kind, T)`` with logits ``(B, classes)``:

* ``"kldiv"`` (default, the released code): ``kl_div(log_softmax(student), log_softmax(teacher / T),
  reduction="batchmean", log_target=True)`` — a softmax over the class axis, as the authors do,
  although the task is multi-label. Only the teacher is divided by ``T``.
* ``"bce"``: ``BCEWithLogits(student, sigmoid(teacher / T))`` (mean over all elements).
* ``"l2"``: mean squared error between the logits.
* ``"cosine"``: ``1 − cos(student, teacher)`` per clip, averaged over the batch.

``distillation_loss = (1 − w) · BCEWithLogits(student, labels) + w · kd_loss`` (w = 0.5 in the paper).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError

__all__ = ["KD_KINDS", "kd_loss", "distillation_loss"]

KD_KINDS = ("kldiv", "bce", "l2", "cosine")


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, kind: str = "kldiv", T: float = 1.0) -> Tensor:
    """Distillation term between ``(B, classes)`` student and teacher logits (teacher is not differentiated)."""
    if student_logits.shape != teacher_logits.shape:
        raise ConfigError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ"
        )
    teacher_logits = teacher_logits.detach().to(student_logits.dtype)
    if kind == "kldiv":
        return F.kl_div(
            F.log_softmax(student_logits, dim=-1),
            F.log_softmax(teacher_logits / T, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(student_logits, torch.sigmoid(teacher_logits / T))
    if kind == "l2":
        return F.mse_loss(student_logits, teacher_logits)
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student_logits, teacher_logits, dim=-1)).mean()
    raise ConfigError(f"unknown KD loss kind {kind!r}; choose one of {', '.join(KD_KINDS)}")


def distillation_loss(
    student_logits: Tensor,
    targets: Tensor,
    teacher_logits: Tensor | None = None,
    weight: float = 0.5,
    kind: str = "kldiv",
    T: float = 1.0,
) -> Tensor:
    """``(1 − weight) · BCE(student, targets) + weight · KD``; plain BCE when ``teacher_logits`` is None."""
    bce = F.binary_cross_entropy_with_logits(student_logits, targets.to(student_logits.dtype))
    if teacher_logits is None:
        return bce
    return (1.0 - weight) * bce + weight * kd_loss(student_logits, teacher_logits, kind, T)
