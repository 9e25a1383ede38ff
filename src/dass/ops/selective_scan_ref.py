"""Float64 reference of the selective scan (mamba-ssm / VMamba convention).

It is deliberately plain: one Python loop over time, everything else vectorised over
(batch, channel, state). Use it to check the fast kernels, not to run models.

    delta_t = softplus(delta_t + delta_bias)            (if delta_softplus)
    h_t     = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t     = C_t . h_t + D * u_t
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["selective_scan_ref", "check_scan_shapes"]


def check_scan_shapes(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
) -> tuple[int, int, int, int, int]:
    """Validate the scan arguments; return (batch, channels, length, groups K, state N).

    Raises ValueError naming the argument and the expected shape.
    """
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, K*C, L), got shape {tuple(u.shape)}")
    batch, channels, length = u.shape
    if tuple(delta.shape) != tuple(u.shape):
        raise ValueError(
            f"selective_scan: delta must have the shape of u {tuple(u.shape)}, got {tuple(delta.shape)}"
        )
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"selective_scan: A must be ({channels}, N), got shape {tuple(A.shape)}")
    state = A.shape[1]
    if B.dim() != 4 or B.shape[0] != batch or B.shape[2] != state or B.shape[3] != length:
        raise ValueError(
            f"selective_scan: B must be ({batch}, K, {state}, {length}), got shape {tuple(B.shape)}"
        )
    groups = B.shape[1]
    if groups == 0 or channels % groups != 0:
        raise ValueError(
            f"selective_scan: the K={groups} groups of B must divide the {channels} channels of u"
        )
    if tuple(C.shape) != tuple(B.shape):
        raise ValueError(
            f"selective_scan: C must have the shape of B {tuple(B.shape)}, got {tuple(C.shape)}"
        )
    for name, vec in (("D", D), ("delta_bias", delta_bias)):
        if vec is not None and tuple(vec.shape) != (channels,):
            raise ValueError(f"selective_scan: {name} must be ({channels},), got shape {tuple(vec.shape)}")
    named = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "delta_bias": delta_bias,
             "initial_state": initial_state}
    for name, tensor in named.items():
        if tensor is not None and tensor.device != u.device:
            raise ValueError(f"selective_scan: {name} is on {tensor.device} but u is on {u.device}")
    if initial_state is not None and tuple(initial_state.shape) != (batch, channels, state):
        raise ValueError(
            f"selective_scan: initial_state must be ({batch}, {channels}, {state}), "
            f"got shape {tuple(initial_state.shape)}"
        )
    return batch, channels, length, groups, state


def selective_scan_ref(
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
    """Selective scan computed in float64 with a loop over time (differentiable by autograd).

    Args:
        u, delta: (batch, K*C, L) input and step size.
        A: (K*C, N) state matrix (diagonal per channel).
        B, C: (batch, K, N, L) input/output projections; channels of group k use B[:, k], C[:, k].
        D, delta_bias: optional (K*C,) skip weight and step-size bias.
        delta_softplus: apply softplus to delta + delta_bias.
        initial_state: optional (batch, K*C, N) state h_{-1} (zeros if None).
        return_last_state: also return h_{L-1}, (batch, K*C, N).

    Returns:
        y (batch, K*C, L) in u's dtype, or (y, last_state) if return_last_state.
    """
    batch, channels, length, groups, state = check_scan_shapes(
        u, delta, A, B, C, D, delta_bias, initial_state
    )
    out_dtype = u.dtype
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    # Every channel of group k reads B[:, k] and C[:, k]: (batch, K*C, N, L).
    B = B.repeat_interleave(channels // groups, dim=1)
    C = C.repeat_interleave(channels // groups, dim=1)

    if initial_state is None:
        h = u.new_zeros(batch, channels, state)
    else:
        h = initial_state.double()
    # Per-step factors, (batch, K*C, N) each: decay exp(delta_t * A) and input delta_t * B_t * u_t.
    decays = torch.exp(delta[:, :, None, :] * A[None, :, :, None]).unbind(-1)
    inputs = (delta[:, :, None, :] * B * u[:, :, None, :]).unbind(-1)
    C_steps = C.unbind(-1)
    ys = []
    for t in range(length):
        h = decays[t] * h + inputs[t]
        ys.append((C_steps[t] * h).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, channels, 0)
    if D is not None:
        y = y + D.double()[:, None] * u
    y = y.to(out_dtype)
    if return_last_state:
        return y, h.to(out_dtype)
    return y
