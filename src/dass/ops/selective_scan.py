"""Fast selective scan with the mamba-ssm / VMamba calling convention.

Dispatch:
- CUDA tensors: mamba-ssm's ``selective_scan_fn`` when it is installed and no initial_state is
  given; otherwise the chunked torch scan below.
- CPU tensors: the numba kernels of :mod:`dass.ops._scan_numba` (forward + hand-written backward);
  the chunked torch scan if numba cannot be imported.

All paths compute in float32 (state accumulated in float32) and return u's dtype.
See :func:`dass.ops.selective_scan_ref` for the equation and the float64 reference.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from dass.ops.selective_scan_ref import check_scan_shapes

__all__ = ["selective_scan", "selective_scan_torch"]

try:  # the fast CPU path
    from dass.ops import _scan_numba
except ImportError:  # pragma: no cover - numba is a dependency, but keep a working fallback
    _scan_numba = None

# numba's default "workqueue" threading layer must not be entered by two Python threads at once.
_NUMBA_LOCK = threading.Lock()
BACKWARD_SPLITS = 8  # parallel work items per (batch, group) in the CPU backward
TORCH_CHUNK = 32  # time steps per block of the torch fallback (memory ~ channels * N * T^2)


def _mamba_ssm_scan_fn() -> Any | None:
    """mamba-ssm's CUDA selective_scan_fn, or None if it is not installed."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or a broken CUDA extension
        return None
    return selective_scan_fn


@contextlib.contextmanager
def numba_threads_like_torch() -> Iterator[None]:
    """Hold the numba lock and run the numba kernels inside on as many threads as torch uses.

    numba's OpenMP threading layer shares the OpenMP runtime with torch, and starting its thread pool
    (the first parallel kernel of the process) resets the OpenMP thread count to numba's: without the
    restore below, ``torch.set_num_threads(1)`` was silently back to 2 after the first scan.
    """
    import numba

    with _NUMBA_LOCK:
        threads = torch.get_num_threads()
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
        try:
            yield
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)


def _as_f32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32).contiguous()


def _numba_forward(
    u, delta, A, B, C, D, delta_bias, delta_softplus: bool, initial_state
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the numba forward on float32 copies; returns y, last_state (float32)."""
    batch, channels, length = u.shape
    state = A.shape[1]
    u32, delta32, A32, B32, C32 = (_as_f32(t) for t in (u, delta, A, B, C))
    D32 = _as_f32(D) if D is not None else u32.new_zeros(channels)
    bias32 = _as_f32(delta_bias) if delta_bias is not None else u32.new_zeros(channels)
    h0 = _as_f32(initial_state) if initial_state is not None else u32.new_zeros(batch, channels, state)
    y = torch.empty(batch, channels, length, dtype=torch.float32)
    h_last = torch.empty(batch, channels, state, dtype=torch.float32)
    with numba_threads_like_torch():
        _scan_numba.scan_forward(
            u32.numpy(), delta32.numpy(), A32.numpy(), B32.numpy(), C32.numpy(), D32.numpy(),
            bias32.numpy(), bool(delta_softplus), h0.numpy(), y.numpy(), h_last.numpy(),
        )
    return y, h_last


class _NumbaSelectiveScan(torch.autograd.Function):
    """Autograd wrapper of the numba kernels; saves only the inputs (states are recomputed)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus, initial_state):
        y, h_last = _numba_forward(u, delta, A, B, C, D, delta_bias, delta_softplus, initial_state)
        ctx.delta_softplus = delta_softplus
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, initial_state)
        return y.to(u.dtype), h_last.to(u.dtype)

    @staticmethod
    def backward(ctx, grad_y, grad_h_last):
        u, delta, A, B, C, D, delta_bias, initial_state = ctx.saved_tensors
        batch, channels, length = u.shape
        groups, state = B.shape[1], A.shape[1]
        u32, delta32, A32, B32, C32 = (_as_f32(t) for t in (u, delta, A, B, C))
        D32 = _as_f32(D) if D is not None else u32.new_zeros(channels)
        bias32 = _as_f32(delta_bias) if delta_bias is not None else u32.new_zeros(channels)
        h0 = _as_f32(initial_state) if initial_state is not None else u32.new_zeros(batch, channels, state)
        gy = _as_f32(grad_y) if grad_y is not None else u32.new_zeros(batch, channels, length)
        gh = _as_f32(grad_h_last) if grad_h_last is not None else h0.new_zeros(batch, channels, state)

        grad_u = torch.empty_like(u32)
        grad_delta = torch.empty_like(u32)
        # grad_B/grad_C are summed over the channels of a group: one partial sum per split of
        # them, so that (batch, K, splits) work items run in parallel without write races.
        splits = min(channels // groups, BACKWARD_SPLITS)
        grad_B = B32.new_zeros(batch, groups, splits, state, length)
        grad_C = B32.new_zeros(batch, groups, splits, state, length)
        grad_h0 = torch.empty_like(h0)
        grad_A_part = torch.empty(batch, channels, state, dtype=torch.float64)
        grad_D_part = torch.empty(batch, channels, dtype=torch.float64)
        grad_bias_part = torch.empty(batch, channels, dtype=torch.float64)
        with numba_threads_like_torch():
            _scan_numba.scan_backward(
                u32.numpy(), delta32.numpy(), A32.numpy(), B32.numpy(), C32.numpy(), D32.numpy(),
                bias32.numpy(), bool(ctx.delta_softplus), h0.numpy(), gy.numpy(), gh.numpy(),
                grad_u.numpy(), grad_delta.numpy(), grad_B.numpy(), grad_C.numpy(),
                grad_h0.numpy(), grad_A_part.numpy(), grad_D_part.numpy(), grad_bias_part.numpy(),
            )
        return (
            grad_u.to(u.dtype),
            grad_delta.to(delta.dtype),
            grad_A_part.sum(0).to(A.dtype),
            grad_B.sum(2).to(B.dtype),
            grad_C.sum(2).to(C.dtype),
            grad_D_part.sum(0).to(D.dtype) if D is not None else None,
            grad_bias_part.sum(0).to(delta_bias.dtype) if delta_bias is not None else None,
            None,
            grad_h0.to(initial_state.dtype) if initial_state is not None else None,
        )


def _torch_scan_chunk(
    delta_c: torch.Tensor, u_c: torch.Tensor, B_c: torch.Tensor, C_c: torch.Tensor,
    A_g: torch.Tensor, D_g: torch.Tensor | None, bias_g: torch.Tensor | None,
    h: torch.Tensor, delta_softplus: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One block of T steps in float32.

    delta_c, u_c (b, K, P, T); B_c, C_c (b, K, N, T); A_g (K, P, N); D_g, bias_g (K, P) or None;
    h (b, K, P, N) the state before the block. Returns y (b, K, P, T) and the state after it.
    """
    steps = delta_c.shape[-1]
    d_c = delta_c.float()
    if bias_g is not None:
        d_c = d_c + bias_g[..., None]
    if delta_softplus:
        d_c = F.softplus(d_c)
    u_c = u_c.float()
    S = torch.cumsum(d_c[..., None, :] * A_g[None, :, :, :, None], dim=-1)  # (b, K, P, N, T)
    causal = torch.ones(steps, steps, dtype=torch.bool, device=d_c.device).tril()
    # decay[t, s] = exp(S_t - S_s) for s <= t, else 0: (b, K, P, N, T, T)
    decay = torch.exp((S[..., :, None] - S[..., None, :]).masked_fill(~causal, float("-inf")))
    x = (d_c * u_c)[:, :, :, None, :] * B_c.float()[:, :, None]  # delta_s B_s u_s: (b, K, P, N, T)
    h_all = torch.einsum("bkpnts,bkpns->bkpnt", decay, x) + torch.exp(S) * h[..., None]
    y_c = torch.einsum("bkpnt,bknt->bkpt", h_all, C_c.float())
    if D_g is not None:
        y_c = y_c + D_g[..., None] * u_c
    return y_c, h_all[..., -1]


def selective_scan_torch(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    initial_state: torch.Tensor | None = None,
    chunk: int = TORCH_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked scan in plain torch ops (any device, autograd): returns (y, last_state) in float32.

    Inside a block of T steps, with S_t = sum_{s<=t} delta_s * A (a cumulative sum within the block),
        h_t = exp(S_t) h_in + sum_{s<=t} exp(S_t - S_s) delta_s B_s u_s.
    Only differences S_t - S_s (s <= t) are exponentiated, so nothing overflows or is divided by a
    vanishing cumulative product, whatever the total length. When gradients are needed every block
    is checkpointed (recomputed in backward), so training memory stays O(L), not O(L * T); without
    gradients the blocks are written straight into the output.
    """
    batch, channels, length, groups, state = check_scan_shapes(
        u, delta, A, B, C, D, delta_bias, initial_state
    )
    per_group = channels // groups
    # (batch, K, C/K, ...) views: channel c = k * per_group + i.
    u_g = u.reshape(batch, groups, per_group, length)
    delta_g = delta.reshape(batch, groups, per_group, length)
    A_g = A.float().reshape(groups, per_group, state)
    D_g = D.float().reshape(groups, per_group) if D is not None else None
    bias_g = delta_bias.float().reshape(groups, per_group) if delta_bias is not None else None
    if initial_state is None:
        h = torch.zeros(batch, groups, per_group, state, dtype=torch.float32, device=u.device)
    else:
        h = initial_state.float().reshape(batch, groups, per_group, state)
    checkpointed = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, delta_bias, initial_state)
    )
    y_chunks = []
    y = None if checkpointed else torch.empty(
        batch, groups, per_group, length, dtype=torch.float32, device=u.device
    )
    for start in range(0, length, chunk):
        block = slice(start, start + chunk)
        pieces = (delta_g[..., block], u_g[..., block], B[..., block], C[..., block],
                  A_g, D_g, bias_g, h, bool(delta_softplus))
        if checkpointed:
            y_c, h = torch.utils.checkpoint.checkpoint(_torch_scan_chunk, *pieces, use_reentrant=False)
            y_chunks.append(y_c)
        else:
            y[..., block], h = _torch_scan_chunk(*pieces)
    if checkpointed:
        y = torch.cat(y_chunks, dim=-1) if y_chunks else h.new_zeros(batch, groups, per_group, 0)
    return y.reshape(batch, channels, length), h.reshape(batch, channels, state)


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    initial_state: torch.Tensor | None = None,
    return_last_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Selective scan ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``y_t = C_t.h_t + D u_t``.

    Args:
        u, delta: (batch, K*C, L); delta is softplus(delta + delta_bias) if delta_softplus.
        A: (K*C, N). B, C: (batch, K, N, L); channels of group k use B[:, k], C[:, k].
        D, delta_bias: optional (K*C,).
        initial_state: optional (batch, K*C, N) state before the first step (zeros if None).
        return_last_state: also return the state after the last step, (batch, K*C, N).

    Returns:
        y (batch, K*C, L) in u's dtype, or (y, last_state). Differentiable w.r.t. every tensor
        argument (including initial_state) on the CPU and torch paths.
    """
    check_scan_shapes(u, delta, A, B, C, D, delta_bias, initial_state)
    if u.is_cuda:
        mamba_scan = _mamba_ssm_scan_fn() if initial_state is None else None
        if mamba_scan is not None:
            return mamba_scan(
                u, delta, A, B, C, D, None, delta_bias, delta_softplus, return_last_state
            )
    if u.device.type != "cpu" or _scan_numba is None:
        y, h_last = selective_scan_torch(
            u, delta, A, B, C, D, delta_bias, delta_softplus, initial_state
        )
        y, h_last = y.to(u.dtype), h_last.to(u.dtype)
    else:
        tensors = (u, delta, A, B, C, D, delta_bias, initial_state)
        needs_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in tensors
        )
        if needs_grad:
            y, h_last = _NumbaSelectiveScan.apply(
                u, delta, A, B, C, D, delta_bias, bool(delta_softplus), initial_state
            )
        else:  # inference: nothing is saved for backward
            y, h_last = _numba_forward(
                u, delta, A, B, C, D, delta_bias, delta_softplus, initial_state
            )
            y, h_last = y.to(u.dtype), h_last.to(u.dtype)
    if return_last_state:
        return y, h_last
    return y
