"""Numba kernels of LayerNorm over the channel axis of a channel-first map (CPU, float32).

Layout (C-contiguous float32): x, y, grad_y, grad_x (batch, channels, L) with L = H*W;
weight, bias (channels,); mean, rstd (batch, L).

Each work item is one batch element and a block of ``POSITION_BLOCK`` positions; the channel loop is
outside, the position loop inside, so every inner loop runs over contiguous memory and vectorises.
Statistics are accumulated in float32 over the channels (two passes: mean, then the variance of
x - mean), as PyTorch's own LayerNorm does in float32.
"""

from __future__ import annotations

import numba as nb
import numpy as np

POSITION_BLOCK = 256  # positions per parallel work item (a block of x stays in the L2 cache)
_FAST = {"contract"}  # fused multiply-add only


@nb.njit(parallel=True, cache=True, fastmath=_FAST)
def layer_norm_forward(x, weight, bias, eps, y, mean, rstd):
    """Write y = (x - mean) * rstd * weight + bias, and mean, rstd (batch, L)."""
    batch, channels, length = x.shape
    blocks = (length + POSITION_BLOCK - 1) // POSITION_BLOCK
    inv_c = np.float32(1.0) / np.float32(channels)
    for item in nb.prange(batch * blocks):
        b = item // blocks
        start = (item % blocks) * POSITION_BLOCK
        stop = min(start + POSITION_BLOCK, length)
        n = stop - start
        mu = np.zeros(POSITION_BLOCK, np.float32)
        var = np.zeros(POSITION_BLOCK, np.float32)
        for c in range(channels):
            row = x[b, c, start:stop]
            for t in range(n):
                mu[t] += row[t]
        for t in range(n):
            mu[t] *= inv_c
        for c in range(channels):
            row = x[b, c, start:stop]
            for t in range(n):
                d = row[t] - mu[t]
                var[t] += d * d
        for t in range(n):
            var[t] = np.float32(1.0) / np.sqrt(var[t] * inv_c + eps)
            mean[b, start + t] = mu[t]
            rstd[b, start + t] = var[t]
        for c in range(channels):
            row = x[b, c, start:stop]
            out = y[b, c, start:stop]
            w = weight[c]
            shift = bias[c]
            for t in range(n):
                out[t] = (row[t] - mu[t]) * var[t] * w + shift


@nb.njit(parallel=True, cache=True, fastmath=_FAST)
def layer_norm_backward(x, weight, mean, rstd, grad_y, grad_x, grad_weight_part, grad_bias_part):
    """Write grad_x (batch, channels, L) and per-work-item partial sums of the weight/bias gradients.

    With xhat = (x - mean) * rstd and g = grad_y * weight (per position, over channels c):
        grad_x = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat)),
        grad_weight[c] = sum over (batch, L) of grad_y * xhat,  grad_bias[c] = sum of grad_y.
    grad_weight_part, grad_bias_part: (items, channels) float64, summed over items by the caller.
    """
    batch, channels, length = x.shape
    blocks = (length + POSITION_BLOCK - 1) // POSITION_BLOCK
    inv_c = np.float32(1.0) / np.float32(channels)
    for item in nb.prange(batch * blocks):
        b = item // blocks
        start = (item % blocks) * POSITION_BLOCK
        stop = min(start + POSITION_BLOCK, length)
        n = stop - start
        mu = mean[b, start:stop]
        rs = rstd[b, start:stop]
        sum_g = np.zeros(POSITION_BLOCK, np.float32)
        sum_gx = np.zeros(POSITION_BLOCK, np.float32)
        xhat = np.empty(POSITION_BLOCK, np.float32)
        for c in range(channels):
            row = x[b, c, start:stop]
            gy = grad_y[b, c, start:stop]
            w = weight[c]
            acc_w = 0.0
            acc_b = 0.0
            for t in range(n):
                xh = (row[t] - mu[t]) * rs[t]
                g = gy[t] * w
                sum_g[t] += g
                sum_gx[t] += g * xh
                acc_w += np.float64(gy[t] * xh)
                acc_b += np.float64(gy[t])
            grad_weight_part[item, c] = acc_w
            grad_bias_part[item, c] = acc_b
        for t in range(n):
            sum_g[t] *= inv_c
            sum_gx[t] *= inv_c
        for c in range(channels):
            row = x[b, c, start:stop]
            gy = grad_y[b, c, start:stop]
            gx = grad_x[b, c, start:stop]
            w = weight[c]
            for t in range(n):
                xhat[t] = (row[t] - mu[t]) * rs[t]
                gx[t] = rs[t] * (gy[t] * w - sum_g[t] - xhat[t] * sum_gx[t])
