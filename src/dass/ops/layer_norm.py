"""LayerNorm over the channel axis of a channel-first map ``(B, C, H, W)``, without permute copies.

:func:`layer_norm_channels_first_ref` is the plain definition (permute to channels-last, LayerNorm,
permute back). :func:`layer_norm_channels_first` computes the same thing with numba kernels that read
the channel-first map directly (forward and backward), on CPU float32 tensors; anything else (GPU,
other dtypes, numba missing) goes through the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from dass.ops.selective_scan import numba_threads_like_torch

__all__ = ["layer_norm_channels_first", "layer_norm_channels_first_ref"]

try:
    from dass.ops import _layernorm_numba
except ImportError:  # pragma: no cover - numba is a dependency, but keep a working fallback
    _layernorm_numba = None


def layer_norm_channels_first_ref(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                                  eps: float) -> torch.Tensor:
    """Reference: LayerNorm of ``x (B, C, H, W)`` over C, via channels-last permutes."""
    y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), weight, bias, eps)
    return y.permute(0, 3, 1, 2)


class _NumbaLayerNorm2d(torch.autograd.Function):
    """Autograd wrapper of the numba kernels; saves x, weight and the per-position mean / rstd."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        b, c, h, w = x.shape
        x3 = x.detach().contiguous().view(b, c, h * w)
        y = torch.empty_like(x3)
        mean = x3.new_empty(b, h * w)
        rstd = x3.new_empty(b, h * w)
        with numba_threads_like_torch():
            _layernorm_numba.layer_norm_forward(
                x3.numpy(), weight.detach().contiguous().numpy(), bias.detach().contiguous().numpy(),
                float(eps), y.numpy(), mean.numpy(), rstd.numpy(),
            )
        ctx.save_for_backward(x3, weight, mean, rstd)
        return y.view(b, c, h, w)

    @staticmethod
    @once_differentiable  # the numba backward is not itself differentiable: say so instead of a wrong 0
    def backward(ctx, grad_y):
        x3, weight, mean, rstd = ctx.saved_tensors
        b, c, length = x3.shape
        gy = grad_y.contiguous().view(b, c, length)
        grad_x = torch.empty_like(x3)
        items = b * ((length + _layernorm_numba.POSITION_BLOCK - 1) // _layernorm_numba.POSITION_BLOCK)
        grad_w = torch.empty(items, c, dtype=torch.float64)
        grad_b = torch.empty(items, c, dtype=torch.float64)
        with numba_threads_like_torch():
            _layernorm_numba.layer_norm_backward(
                x3.numpy(), weight.detach().contiguous().numpy(), mean.numpy(), rstd.numpy(), gy.numpy(),
                grad_x.numpy(), grad_w.numpy(), grad_b.numpy(),
            )
        return (grad_x.view(grad_y.shape), grad_w.sum(0).to(weight.dtype), grad_b.sum(0).to(weight.dtype),
                None)


def layer_norm_channels_first(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                              eps: float) -> torch.Tensor:
    """LayerNorm of ``x (B, C, H, W)`` over C with affine ``weight, bias (C,)``: returns ``(B, C, H, W)``.

    Contiguous channel-first output. Fast numba path for CPU float32 with weight and bias; the
    reference otherwise.
    """
    fast = (
        _layernorm_numba is not None and x.device.type == "cpu" and x.dim() == 4 and x.numel() > 0
        and x.dtype == torch.float32 and weight is not None and bias is not None
        and weight.dtype == torch.float32 and bias.dtype == torch.float32
    )
    if not fast:
        return layer_norm_channels_first_ref(x, weight, bias, eps)
    return _NumbaLayerNorm2d.apply(x, weight, bias, eps)
