"""Metrics (vs scikit-learn) and KD losses (vs the SPEC §5 formulas written out by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dass.errors import ConfigError
from dass.train.losses import distillation_loss, kd_loss
from dass.train.metrics import compute_metrics, d_prime, mean_auc, mean_average_precision


def _random_problem(seed: int, n: int = 53, classes: int = 9) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, classes)) < 0.3).astype(np.float64)
    scores = targets * 0.7 + rng.normal(size=(n, classes))
    scores[:, 2] = np.round(scores[:, 2], 1)  # ties
    targets[:, 5] = 0  # class without positives: skipped by both
    return scores, targets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_and_auc_match_sklearn(seed: int) -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    scores, targets = _random_problem(seed)
    keep = targets.sum(0) > 0
    want_map = average_precision_score(targets[:, keep], scores[:, keep], average="macro")
    want_auc = roc_auc_score(targets[:, keep], scores[:, keep], average="macro")
    assert mean_average_precision(scores, targets) == pytest.approx(want_map, abs=1e-12)
    assert mean_auc(torch.tensor(scores), torch.tensor(targets)) == pytest.approx(want_auc, abs=1e-12)
    m = compute_metrics(scores, targets)
    assert m["d_prime"] == pytest.approx(math.sqrt(2) * __import__("scipy").stats.norm.ppf(want_auc), abs=1e-9)


def test_known_values() -> None:
    # one class, ranking: pos(0.9) neg(0.8) pos(0.7) neg(0.1) -> AP = (1/1 + 2/3) / 2, AUC = 3/4
    scores = np.array([[0.9], [0.8], [0.7], [0.1]])
    targets = np.array([[1], [0], [1], [0]])
    assert mean_average_precision(scores, targets) == pytest.approx((1 + 2 / 3) / 2)
    assert mean_auc(scores, targets) == pytest.approx(0.75)
    assert d_prime(0.5) == 0.0
    assert d_prime(1.0) == math.inf


def _manual_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_kd_losses_match_formulas() -> None:
    rng = np.random.default_rng(0)
    s = rng.normal(size=(5, 7)) * 2
    t = rng.normal(size=(5, 7)) * 3
    labels = (rng.random((5, 7)) < 0.4).astype(np.float64)
    S, Tt, Y = (torch.tensor(a) for a in (s, t, labels))
    for temp in (1.0, 2.5):
        log_p_t = _manual_log_softmax(t / temp)
        log_p_s = _manual_log_softmax(s)
        kl = float(np.sum(np.exp(log_p_t) * (log_p_t - log_p_s)) / 5)  # batchmean
        assert kd_loss(S, Tt, "kldiv", temp).item() == pytest.approx(kl, rel=1e-12)
        q = 1 / (1 + np.exp(-t / temp))
        bce = np.mean(-(q * np.log(1 / (1 + np.exp(-s))) + (1 - q) * np.log(1 - 1 / (1 + np.exp(-s)))))
        assert kd_loss(S, Tt, "bce", temp).item() == pytest.approx(bce, rel=1e-10)
    assert kd_loss(S, Tt, "l2").item() == pytest.approx(np.mean((s - t) ** 2), rel=1e-12)
    cos = np.sum(s * t, 1) / np.linalg.norm(s, axis=1) / np.linalg.norm(t, axis=1)
    assert kd_loss(S, Tt, "cosine").item() == pytest.approx(np.mean(1 - cos), rel=1e-12)
    p = 1 / (1 + np.exp(-s))
    bce_labels = np.mean(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
    log_p_t, log_p_s = _manual_log_softmax(t), _manual_log_softmax(s)
    kl = float(np.sum(np.exp(log_p_t) * (log_p_t - log_p_s)) / 5)
    assert distillation_loss(S, Y, Tt, weight=0.3).item() == pytest.approx(0.7 * bce_labels + 0.3 * kl, rel=1e-12)
    assert distillation_loss(S, Y).item() == pytest.approx(bce_labels, rel=1e-12)


def test_kd_loss_gradient_flows_to_student_only_and_errors() -> None:
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4, requires_grad=True)
    kd_loss(s, t).backward()
    assert s.grad is not None and t.grad is None
    with pytest.raises(ConfigError, match="unknown KD loss kind 'js'"):
        kd_loss(s, t, "js")
    with pytest.raises(ConfigError, match=r"student logits \(3, 4\) and teacher logits \(3, 5\) differ"):
        kd_loss(s, torch.randn(3, 5))
