"""Clip-level tagging metrics: mAP, mAUC and d′ from ``(N, classes)`` scores and 0/1 targets.

* ``mean_average_precision``: mean over classes of average precision (AP = Σ_k (R_k − R_{k−1}) P_k over
  the distinct score thresholds, sklearn's definition, ties grouped). Classes without a positive
  have no AP and are skipped.
* ``mean_auc``: mean over classes of the ROC AUC (Mann–Whitney statistic, ties count ½). Only classes
  with both a positive and a negative are averaged (macro over the classes where AUC is defined).
* ``d_prime = √2 · Φ⁻¹(mAUC)``.

Targets may be soft (mixup); anything ≥ 0.5 counts as positive.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

__all__ = ["average_precision", "roc_auc", "mean_average_precision", "mean_auc", "d_prime", "compute_metrics"]


def _as_arrays(scores, targets) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, dtype=np.float64)
    t = np.asarray(targets.detach().cpu() if hasattr(targets, "detach") else targets, dtype=np.float64)
    if s.ndim == 1:
        s, t = s[:, None], t[:, None]
    if s.shape != t.shape or s.ndim != 2:
        raise ValueError(f"scores {s.shape} and targets {t.shape} must both be (N, classes)")
    return s, t >= 0.5


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP of one class: ``(N,)`` scores, ``(N,)`` booleans. NaN when there is no positive."""
    n_pos = int(positives.sum())
    if n_pos == 0:
        return math.nan
    order = np.argsort(-scores, kind="mergesort")
    s, p = scores[order], positives[order]
    tp = np.cumsum(p)
    last_of_tie = np.r_[s[1:] != s[:-1], True]  # evaluate only where the threshold changes
    tp, counted = tp[last_of_tie], np.flatnonzero(last_of_tie) + 1
    precision, recall = tp / counted, tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(scores: np.ndarray, positives: np.ndarray) -> float:
    """ROC AUC of one class via ranks (ties get their mean rank). NaN unless both labels occur."""
    n_pos = int(positives.sum())
    n_neg = positives.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size, dtype=np.float64)
    sorted_scores = scores[order]
    # mean 1-based rank within each group of tied scores
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], scores.size]
    group_rank = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(group_rank, ends - starts)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def mean_average_precision(scores, targets) -> float:
    """Macro mAP over classes that have at least one positive. ``scores``/``targets``: ``(N, classes)``."""
    s, t = _as_arrays(scores, targets)
    aps = [average_precision(s[:, c], t[:, c]) for c in range(s.shape[1])]
    aps = [a for a in aps if not math.isnan(a)]
    return float(np.mean(aps)) if aps else math.nan


def mean_auc(scores, targets) -> float:
    """Macro ROC AUC over classes with both positives and negatives. ``(N, classes)`` inputs."""
    s, t = _as_arrays(scores, targets)
    aucs = [roc_auc(s[:, c], t[:, c]) for c in range(s.shape[1])]
    aucs = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(aucs)) if aucs else math.nan


def d_prime(auc: float) -> float:
    """Sensitivity index ``√2 · Φ⁻¹(auc)`` (±inf at auc 1/0, NaN for NaN)."""
    if math.isnan(auc):
        return math.nan
    if auc >= 1.0:
        return math.inf
    if auc <= 0.0:
        return -math.inf
    return math.sqrt(2.0) * NormalDist().inv_cdf(auc)


def compute_metrics(scores, targets) -> dict[str, float]:
    """``{"mAP", "mAUC", "d_prime"}`` for ``(N, classes)`` scores and targets."""
    m_auc = mean_auc(scores, targets)
    return {"mAP": mean_average_precision(scores, targets), "mAUC": m_auc, "d_prime": d_prime(m_auc)}
