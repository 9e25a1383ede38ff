"""The two masked-patch objectives of SSAST / SSAMBA pretraining (arXiv 2110.09784, 2405.11831).

Targets are the raw patches of the *normalised* input: ``Unfold(p x p, stride p)`` of the image
``(B, 1, F, T)`` gives ``(B, P, p²)`` (patches frequency-major, values within a patch frequency row
by row, then time), no per-patch normalisation. For the M masked patches of each clip, a prediction
head maps the encoder's output tokens to ``p²`` values.

* **Discriminative** (:func:`masked_nce`, the authors' ``mpc``): per clip, ``S = targets · predsᵀ``
  (``M x M`` raw dot products; no normalisation and, by default, no temperature), and
  ``NCE = −mean_{clips, a} log_softmax_b(S)[a, a]``: each target row is normalised over the M
  predictions of the same clip. Its accuracy: softmax each row of S, take for every prediction
  column b the argmax over the rows, and count how often it is b (averaged over clips and masks).
  Options (off by default): divide S by a ``temperature``; ``negatives="batch"`` uses the masked
  patches of every clip of the batch (``BM x BM``) instead of the clip's own.
* **Generative** (:func:`masked_mse`, ``mpg``): ``mean((preds − targets)²)`` over clips, masks and
  the ``p²`` values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError

__all__ = ["NEGATIVES", "gather_patches", "masked_mse", "masked_nce", "patch_targets"]

NEGATIVES = ("clip", "batch")


def patch_targets(features: Tensor, patch_size: int = 16) -> Tensor:
    """Normalised features ``(B, T, F)`` -> raw patches ``(B, P, patch_size²)`` (non-overlapping, frequency-major)."""
    image = features.unsqueeze(1).transpose(2, 3)  # (B, 1, F, T)
    return F.unfold(image, kernel_size=patch_size, stride=patch_size).transpose(1, 2)


def gather_patches(values: Tensor, ids: Tensor) -> Tensor:
    """``values (B, P, K)``, ``ids (B, M)`` -> ``(B, M, K)``: the rows ``ids`` of each clip."""
    return torch.gather(values, 1, ids[..., None].expand(-1, -1, values.shape[-1]))


def masked_nce(
    predictions: Tensor, targets: Tensor, temperature: float | None = None, negatives: str = "clip"
) -> tuple[Tensor, Tensor]:
    """InfoNCE of ``predictions`` against ``targets`` (both ``(B, M, K)``): ``(loss, accuracy)`` scalars.

    The accuracy is detached. See the module docstring for the formulas and the options.
    """
    if predictions.shape != targets.shape or predictions.dim() != 3:
        raise ConfigError(
            f"predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} must be (B, M, K)"
        )
    if negatives not in NEGATIVES:
        raise ConfigError(f"negatives must be one of {', '.join(NEGATIVES)}, got {negatives!r}")
    if temperature is not None and not temperature > 0:
        raise ConfigError(f"temperature must be positive (or None), got {temperature}")
    targets = targets.detach()
    if negatives == "batch":
        predictions, targets = (
            predictions.reshape(1, -1, predictions.shape[-1]),
            targets.reshape(1, -1, targets.shape[-1]),
        )
    scores = torch.bmm(targets, predictions.transpose(1, 2))  # (B', M', M'): [a, b] = target_a · prediction_b
    if temperature is not None:
        scores = scores / temperature
    log_probs = F.log_softmax(scores, dim=-1)
    loss = -torch.diagonal(log_probs, dim1=1, dim2=2).mean()
    with torch.no_grad():
        m = scores.shape[-1]
        best_row = torch.argmax(F.softmax(scores, dim=-1), dim=1)  # (B', M'): per prediction column
        accuracy = (best_row == torch.arange(m, device=scores.device)).float().mean()
    return loss, accuracy


def masked_mse(predictions: Tensor, targets: Tensor) -> Tensor:
    """``mean((predictions − targets)²)`` over all elements; both ``(B, M, K)``."""
    if predictions.shape != targets.shape:
        raise ConfigError(f"predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} differ")
    return (predictions - targets.detach()).square().mean()
