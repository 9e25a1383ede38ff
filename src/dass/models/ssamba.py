"""SSAMBA: a bidirectional Mamba over spectrogram patches (Shams et al., arXiv 2405.11831).

SSAST's framework with the ViT replaced by a Vision Mamba ("bimamba v2") encoder. The model takes
normalised features ``(B, T, F)`` (F = 128 mel bins), turns them into a one-channel image
``(B, 1, F, T)`` (frequency = height, time = width) and runs

    16x16 patch conv (strides fstride, tstride) -> [cls] + F'·T' patch tokens, frequency-major
    (token 1 + f·T' + t) -> + learned position table -> depth blocks of Norm + BiMamba mixer
    -> final add + norm_f (twice) -> mean over the patch tokens (or the cls token) -> LayerNorm + Linear

This file reproduces the released network, quirks included (``docs/ssamba.md`` says what each is
and why it matters for the authors' weights):

* **paired bidirectional stacking** (``bidirectional_pairs=True``): block 2i sees the sequence,
  block 2i+1 the reversed sequence, and both their outputs *and* their residual streams are summed,
  so the residual doubles at every pair. Each block is itself a bidirectional mixer.
  ``bidirectional_pairs=False`` is the "clean" variant: the blocks are simply chained.
* the final norm ``norm_f`` is applied twice (``final_norm_twice``);
* the backward direction's ``dt_proj_b`` bias starts at zero (:meth:`SSAMBA.init_weights`);
* the position table is adapted to other geometries with the authors' rule, hard-coded 8 rows
  included (:func:`adapt_position_table`).

Module and parameter names follow the authors' ``AMBAModel``, so our ``state_dict()`` keys are
theirs without ``module.v.`` (encoder) or ``module.`` (``mlp_head``); their unused ``v.head`` has no
counterpart here. :func:`config_and_state_from_authors` reads their self-supervised and fine-tuned
``.pth`` layouts, :func:`state_dict_to_authors` writes them.

The mixer has a readable reference path (plain torch, float64 scan :func:`dass.ops.selective_scan_ref`,
one direction at a time) and a fast path (both directions in one :func:`dass.ops.selective_scan` call;
on CUDA mamba-ssm's ``causal_conv1d_fn`` / ``selective_scan_fn`` when installed). Inside
:func:`reference_ops` every model runs its reference path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import AudioError, CheckpointError, ConfigError
from ..ops import selective_scan, selective_scan_ref
from . import dass as _dass_model  # holds the one reference_ops() switch shared by every model
from .ast import adapt_position_grid, num_patches
from .dass import DropPath, reference_ops
from .registry import register_architecture, register_model

__all__ = [
    "AUTHORS_TIME_RESIZE_ROWS",
    "NAMED_CONFIGS",
    "POOLING_MODES",
    "SSAMBA",
    "BiMambaMixer",
    "SSAMBAConfig",
    "adapt_position_table",
    "authors_key",
    "authors_layout",
    "config_and_state_from_authors",
    "is_authors_state_dict",
    "reference_ops",
    "state_dict_to_authors",
]

POOLING_MODES = ("mean", "cls")  # mean over the patch tokens (the authors' ft_avgtok) | the cls token
NORM_TYPES = ("layer", "rms")
AUTHORS_TIME_RESIZE_ROWS = 8  # the authors' fine-tuning code resizes the table to (8, T') along time


def _reference() -> bool:
    return _dass_model._USE_REFERENCE_OPS


# --------------------------------------------------------------------------------------------- config


@dataclass
class SSAMBAConfig:
    """Hyper-parameters of an SSAMBA network (what ``config.json`` stores).

    ``embed_dim`` D and ``depth`` blocks (even with ``bidirectional_pairs``); mixer width E =
    ``expand``·D, state size N = ``d_state``, causal conv width ``d_conv``, dt rank ``dt_rank``
    ("auto" = ceil(D / 16)). The position table covers the patch grid of an
    ``input_fdim`` x ``input_tdim`` input with ``patch_size`` patches at strides
    (``fstride``, ``tstride``): F' x T' = ((input_fdim - patch) // fstride + 1) x (...).
    ``norm``: "layer" (LayerNorm, the released models) or "rms" (RMSNorm, the authors' s3prl
    upstream) for the blocks and ``norm_f``; the head's norm is always a LayerNorm.
    """

    model_type: str = "ssamba"
    embed_dim: int = 192
    depth: int = 24
    patch_size: int = 16
    fstride: int = 10
    tstride: int = 10
    input_fdim: int = 128
    input_tdim: int = 1024
    pooling: str = "mean"
    norm: str = "layer"
    norm_eps: float = 1e-5
    bidirectional_pairs: bool = True
    final_norm_twice: bool = True
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    dt_rank: int | str = "auto"
    drop_path_rate: float = 0.1
    drop_rate: float = 0.0
    num_classes: int = 527
    labels: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        name = "SSAMBAConfig"
        if self.model_type != "ssamba":
            raise ConfigError(f"{name}: model_type must be 'ssamba', got {self.model_type!r}")
        for key in ("embed_dim", "depth", "patch_size", "fstride", "tstride", "input_fdim", "input_tdim",
                    "d_state", "expand", "d_conv", "num_classes"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: {key} must be a positive integer, got {value!r}")
        if self.pooling not in POOLING_MODES:
            raise ConfigError(f"{name}: unknown pooling {self.pooling!r}; choose one of {', '.join(POOLING_MODES)}")
        if self.norm not in NORM_TYPES:
            raise ConfigError(f"{name}: unknown norm {self.norm!r}; choose one of {', '.join(NORM_TYPES)}")
        if self.bidirectional_pairs and self.depth % 2:
            raise ConfigError(f"{name}: bidirectional_pairs needs an even depth, got {self.depth}")
        if self.input_fdim < self.patch_size or self.input_tdim < self.patch_size:
            raise ConfigError(
                f"{name}: input_fdim/input_tdim ({self.input_fdim}/{self.input_tdim}) must be >= "
                f"patch_size {self.patch_size}"
            )
        if self.dt_rank != "auto" and (isinstance(self.dt_rank, bool) or not isinstance(self.dt_rank, int)
                                       or self.dt_rank < 1):
            raise ConfigError(f"{name}: dt_rank must be 'auto' or a positive int, got {self.dt_rank!r}")
        for key in ("drop_path_rate", "drop_rate"):
            if not 0.0 <= float(getattr(self, key)) < 1.0:
                raise ConfigError(f"{name}: {key} must be in [0, 1), got {getattr(self, key)}")
        if self.labels is not None:
            self.labels = [str(label) for label in self.labels]
            if len(self.labels) != self.num_classes:
                raise ConfigError(f"{name}: {len(self.labels)} labels given for num_classes={self.num_classes}")

    @property
    def grid(self) -> tuple[int, int]:
        """(F', T'): the patch grid the position table covers."""
        return (num_patches(self.input_fdim, self.patch_size, self.fstride),
                num_patches(self.input_tdim, self.patch_size, self.tstride))

    @property
    def resolved_dt_rank(self) -> int:
        return math.ceil(self.embed_dim / 16) if self.dt_rank == "auto" else int(self.dt_rank)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``from_dict(to_dict())`` gives an equal config."""
        return asdict(self)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> SSAMBAConfig:
        """Build from a dict such as ``config.json``; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ConfigError(
                f"SSAMBAConfig: unknown config key(s) {', '.join(map(repr, unknown))}; "
                f"known keys: {', '.join(sorted(known))}"
            )
        return cls(**config)


# ---------------------------------------------------------------------------------------- the mixer


class CudaKernels(NamedTuple):
    causal_conv1d_fn: Callable[..., Tensor]
    selective_scan_fn: Callable[..., Tensor]


def _cuda_kernels() -> CudaKernels | None:
    """mamba-ssm's CUDA kernels (``causal_conv1d_fn``, ``selective_scan_fn``), or None if not installed."""
    try:
        from causal_conv1d import causal_conv1d_fn
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # noqa: BLE001 - ImportError, or a CUDA extension that fails to load
        return None
    return CudaKernels(causal_conv1d_fn, selective_scan_fn)


def _on_cuda(t: Tensor) -> bool:
    return t.is_cuda


def causal_depthwise_conv1d(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``y[c, t] = bias[c] + sum_k weight[c, k] x[c, t - (K-1) + k]`` (zeros before t = 0): ``(B, C, L) -> (B, C, L)``.

    The same as ``F.conv1d(x, weight[:, None], bias, padding=K-1, groups=C)[..., :L]``, computed as K
    shifted multiply-adds, several times faster on CPU than the depthwise convolution kernel.
    """
    width, length = weight.shape[1], x.shape[-1]
    y = torch.addcmul(bias[:, None], weight[:, width - 1, None], x)  # the tap on x[t] itself
    for k in range(width - 1):
        shift = width - 1 - k
        if shift < length:
            y[..., shift:].addcmul_(weight[:, k, None], x[..., : length - shift])
    return y


class BiMambaMixer(nn.Module):
    """Vim's "bimamba v2" Mamba mixer: ``(B, L, D) -> (B, L, D)``.

    ``[x | z] = in_proj(u)`` (width E each); per direction: causal depthwise conv (kernel d_conv,
    left zero padding) -> SiLU -> ``[dt_low | B | C] = x_proj(x)`` (widths R, N, N) -> selective scan
    with delta = softplus(dt_proj.weight @ dt_low + dt_proj.bias), A = -exp(A_log) -> ``(y + D·x)·SiLU(z)``.
    The backward direction runs on x and z flipped along L with the ``_b`` parameters; the output is
    ``out_proj((o_f + flip(o_b)) / 2)``. ``in_proj`` and ``out_proj`` are shared and have no bias.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        e, r, n = self.d_inner, self.dt_rank, d_state
        # Registration order = the authors' state-dict order (own parameters first, then submodules).
        self.in_proj = nn.Linear(d_model, 2 * e, bias=False)
        self.conv1d = nn.Conv1d(e, e, kernel_size=d_conv, groups=e, bias=True)
        self.x_proj = nn.Linear(e, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, e, bias=True)
        self.A_log = nn.Parameter(torch.empty(e, n))
        self.D = nn.Parameter(torch.empty(e))
        self.A_b_log = nn.Parameter(torch.empty(e, n))
        self.conv1d_b = nn.Conv1d(e, e, kernel_size=d_conv, groups=e, bias=True)
        self.x_proj_b = nn.Linear(e, r + 2 * n, bias=False)
        self.dt_proj_b = nn.Linear(r, e, bias=True)
        self.D_b = nn.Parameter(torch.empty(e))
        self.out_proj = nn.Linear(e, d_model, bias=False)
        self._dt_range = (dt_min, dt_max, dt_init_floor)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """Mamba's init of the SSM parameters (the Linear/Conv layers keep PyTorch's defaults).

        ``dt_proj.weight ~ U(+-R^-0.5)``; ``dt_proj.bias = softplus^-1(dt)`` with
        ``dt = exp(U(log dt_min, log dt_max))`` clamped >= dt_init_floor; ``A_log = log(1..N)`` and
        ``D = 1`` in both directions. ``dt_proj_b`` keeps PyTorch's default init (the same weight
        distribution); :meth:`SSAMBA.init_weights` zeroes its bias, as the released code does.
        """
        dt_min, dt_max, floor = self._dt_range
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank**-0.5, self.dt_rank**-0.5)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
        a_log = torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).expand(self.d_inner, -1)
        self.A_log.copy_(a_log)
        self.A_b_log.copy_(a_log)
        self.D.fill_(1.0)
        self.D_b.fill_(1.0)

    def _directions(self) -> tuple[tuple[nn.Conv1d, nn.Linear, nn.Linear, Tensor, Tensor], ...]:
        """(conv, x_proj, dt_proj, A_log, D) of the forward and the backward direction."""
        return ((self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D),
                (self.conv1d_b, self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b))

    def forward(self, u: Tensor) -> Tensor:
        """``(B, L, D) -> (B, L, D)``."""
        xz = torch.matmul(self.in_proj.weight, u.transpose(1, 2))  # (B, 2E, L)
        x, z = xz.chunk(2, dim=1)
        if _reference():
            o = self._mix_reference(x, z)
        else:
            kernels = _cuda_kernels() if _on_cuda(u) else None
            o = self._mix_fast(x, z, kernels)
        return F.linear(o.transpose(1, 2), self.out_proj.weight)

    # ---- reference: one direction at a time, float64 scan, literally as described above

    def _direction_reference(self, x: Tensor, z: Tensor, conv: nn.Conv1d, x_proj: nn.Linear,
                             dt_proj: nn.Linear, A_log: Tensor, D: Tensor) -> Tensor:
        """One direction: ``x, z (B, E, L) -> (y + D·x_c)·SiLU(z)`` ``(B, E, L)``."""
        length, r, n = x.shape[-1], self.dt_rank, self.d_state
        x_c = F.conv1d(x, conv.weight, conv.bias, padding=self.d_conv - 1, groups=self.d_inner)[..., :length]
        x_c = F.silu(x_c)
        x_dbl = torch.einsum("bel,ce->bcl", x_c, x_proj.weight)  # (B, R + 2N, L)
        dt_low, B, C = x_dbl.split([r, n, n], dim=1)
        delta = torch.einsum("brl,er->bel", dt_low, dt_proj.weight)  # bias added inside the scan
        y = selective_scan_ref(x_c, delta, -torch.exp(A_log), B[:, None], C[:, None], D=D, delta_bias=dt_proj.bias,
                               delta_softplus=True)  # computes in float64
        return y * F.silu(z)

    def _mix_reference(self, x: Tensor, z: Tensor) -> Tensor:
        (fwd, bwd) = self._directions()
        o_f = self._direction_reference(x, z, *fwd)
        o_b = self._direction_reference(x.flip(-1), z.flip(-1), *bwd)
        return (o_f + o_b.flip(-1)) / 2

    # ---- fast: both directions as the two groups of one conv and one scan

    def _mix_fast(self, x: Tensor, z: Tensor, kernels: CudaKernels | None) -> Tensor:
        """Same function as :meth:`_mix_reference`; ``x, z (B, E, L) -> (B, E, L)``."""
        b, e, length = x.shape
        r, n = self.dt_rank, self.d_state
        (conv_f, xp_f, dt_f, a_f, d_f), (conv_b, xp_b, dt_b, a_b, d_b) = self._directions()
        x2 = torch.cat([x, x.flip(-1)], dim=1)  # (B, 2E, L): group 0 forward, group 1 reversed
        conv_weight = torch.cat([conv_f.weight, conv_b.weight])  # (2E, 1, d_conv)
        conv_bias = torch.cat([conv_f.bias, conv_b.bias])
        if kernels is not None:
            x2 = kernels.causal_conv1d_fn(x2, conv_weight[:, 0], conv_bias, activation="silu")
        else:
            # in place when no graph is recorded (inference): one (B, 2E, L) buffer less
            x2 = F.silu(causal_depthwise_conv1d(x2, conv_weight[:, 0], conv_bias), inplace=not torch.is_grad_enabled())
        x_dbl = torch.matmul(torch.stack([xp_f.weight, xp_b.weight]), x2.view(b, 2, e, length))  # (B, 2, R+2N, L)
        dt_low, B, C = x_dbl.split([r, n, n], dim=2)
        delta = torch.matmul(torch.stack([dt_f.weight, dt_b.weight]), dt_low).view(b, 2 * e, length)
        A = -torch.exp(torch.cat([a_f, a_b]).float())
        D = torch.cat([d_f, d_b]).float()
        delta_bias = torch.cat([dt_f.bias, dt_b.bias]).float()
        if kernels is not None:  # the gate is fused into mamba-ssm's scan
            z2 = torch.cat([z, z.flip(-1)], dim=1)
            y = kernels.selective_scan_fn(x2, delta, A, B.contiguous(), C.contiguous(), D, z=z2,
                                          delta_bias=delta_bias, delta_softplus=True)
            return (y[:, :e] + y[:, e:].flip(-1)) * 0.5
        y = selective_scan(x2, delta, A, B.contiguous(), C.contiguous(), D=D, delta_bias=delta_bias,
                           delta_softplus=True)
        # flip(y_b * SiLU(flip z)) = flip(y_b) * SiLU(z): one gate for both directions
        return torch.mul(F.silu(z), y[:, :e] + y[:, e:].flip(-1)).mul_(0.5)


# --------------------------------------------------------------------------------- blocks, network


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x²) + eps) * weight`` over the last axis (mamba-ssm's RMSNorm; no bias)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + self.eps) * self.weight


def _make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    return nn.LayerNorm(dim, eps=eps) if kind == "layer" else RMSNorm(dim, eps=eps)


class Block(nn.Module):
    """Vim's block (non-fused add + norm): ``(h, r) -> (mixer(norm(r')), r')`` with
    ``r' = h`` for the first block (``r is None``), else ``r + DropPath(h)``."""

    def __init__(self, config: SSAMBAConfig, drop_path: float) -> None:
        super().__init__()
        self.mixer = BiMambaMixer(config.embed_dim, d_state=config.d_state, d_conv=config.d_conv,
                                  expand=config.expand, dt_rank=config.dt_rank)
        self.norm = _make_norm(config.norm, config.embed_dim, config.norm_eps)
        self.drop_path = DropPath(drop_path)

    def forward(self, hidden: Tensor, residual: Tensor | None) -> tuple[Tensor, Tensor]:
        residual = hidden if residual is None else residual + self.drop_path(hidden)
        return self.mixer(self.norm(residual)), residual


class PatchEmbed(nn.Module):
    """``(B, 1, F, T) -> (B, F'·T', D)``: a ``patch_size``² conv at (fstride, tstride), frequency-major tokens."""

    def __init__(self, config: SSAMBAConfig) -> None:
        super().__init__()
        p = config.patch_size
        self.proj = nn.Conv2d(1, config.embed_dim, kernel_size=(p, p), stride=(config.fstride, config.tstride))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def adapt_position_table(patches: Tensor, grid: tuple[int, int], new_grid: tuple[int, int], *,
                         time_resize_rows: int | None = None) -> Tensor:
    """Patch position embeddings ``(1, F·T, D)`` on a grid ``(F, T)`` -> ``(1, F'·T', D)`` on ``new_grid``.

    Tokens are frequency-major (index f·T + t). The rule (:func:`dass.models.ast.adapt_position_grid`):
    along time a centre crop when there are fewer time patches, else a bilinear resize; then along
    frequency the same. ``time_resize_rows=AUTHORS_TIME_RESIZE_ROWS`` reproduces the authors'
    fine-tuning code, which resizes along time to a hard-coded 8 rows (used for their
    self-supervised checkpoints); ``None`` keeps the rows (used at inference, along time only).
    """
    (freq, time), dim = grid, patches.shape[-1]
    if patches.shape[1] != freq * time:
        raise ConfigError(f"position table has {patches.shape[1]} patch positions, not {freq} x {time}")
    table = patches.reshape(1, freq, time, dim).permute(0, 3, 1, 2)  # (1, D, F, T)
    table = adapt_position_grid(table, new_grid, time_resize_rows=time_resize_rows)
    return table.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)


@register_architecture
class SSAMBA(nn.Module):
    """Self-Supervised Audio Mamba: normalised features ``(B, T, F)`` -> logits ``(B, num_classes)``.

    Any number of frames works: inputs shorter than one patch are zero-padded to ``patch_size``
    frames, and for a patch grid with a different number of time patches than the table the table
    is centre-cropped (fewer) or bilinearly resized along time (more); see ``docs/ssamba.md``.
    """

    model_type = "ssamba"
    config_class = SSAMBAConfig
    num_prefix_tokens = 1  # the cls token before the patch tokens

    def __init__(self, config: SSAMBAConfig) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        freq, time = config.grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + freq * time, d))  # index 0: the cls position
        self.patch_embed = PatchEmbed(config)
        self.pos_drop = nn.Dropout(config.drop_rate)
        # Vim's rates: linspace(0, rate, depth) shifted by one block ([0] + dpr), the full rate at the end.
        rates = [0.0] + torch.linspace(0, config.drop_path_rate, config.depth, device="cpu").tolist()
        self.layers = nn.ModuleList(Block(config, rates[i]) for i in range(config.depth))
        self.norm_f = _make_norm(config.norm, d, config.norm_eps)
        self.drop_path = DropPath(config.drop_path_rate)
        self.mlp_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, config.num_classes))
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """The released init: ``cls_token``, ``pos_embed`` ~ trunc-normal(0.02); every mixer's
        ``out_proj.weight`` re-drawn as PyTorch's default divided by sqrt(depth); every Linear bias
        inside the encoder zeroed except ``dt_proj.bias`` -- which zeroes ``dt_proj_b.bias`` (a quirk:
        the backward direction starts with delta = softplus(0) ~ 0.69). The patch conv, the mixers'
        convs and projections, the norms and ``mlp_head`` keep PyTorch's defaults."""
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for layer in self.layers:
            mixer = layer.mixer
            nn.init.kaiming_uniform_(mixer.out_proj.weight, a=math.sqrt(5))
            mixer.out_proj.weight /= math.sqrt(self.config.depth)
            nn.init.zeros_(mixer.dt_proj_b.bias)

    @property
    def num_features(self) -> int:
        return self.config.embed_dim

    def patch_grid(self, num_frames: int) -> tuple[int, int]:
        """(F', T') of an input with ``num_frames`` (>= patch_size) frames."""
        c = self.config
        return c.grid[0], num_patches(num_frames, c.patch_size, c.tstride)

    def position_embeddings(self, time_patches: int) -> Tensor:
        """``(1, 1 + F'·time_patches, D)``: the table, adapted along time if it has another length."""
        freq, time = self.config.grid
        if time_patches == time:
            return self.pos_embed
        patches = adapt_position_table(self.pos_embed[:, 1:], (freq, time), (freq, time_patches))
        return torch.cat([self.pos_embed[:, :1], patches], dim=1)

    def forward_features(self, x: Tensor) -> Tensor:
        """Features ``(B, T, F)`` -> tokens ``(B, 1 + F'·T', D)`` after the final norm(s); index 0 = cls."""
        c = self.config
        if x.dim() != 3 or x.shape[0] < 1 or x.shape[1] < 1 or x.shape[2] != c.input_fdim:
            raise AudioError(f"SSAMBA expects features of shape (batch, time, {c.input_fdim}), got {tuple(x.shape)}")
        if x.shape[1] < c.patch_size:
            x = F.pad(x, (0, 0, 0, c.patch_size - x.shape[1]))
        _, time_patches = self.patch_grid(x.shape[1])
        return self.forward_tokens(self.patch_embed(x.unsqueeze(1).transpose(2, 3)), time_patches)

    def forward_tokens(self, patches: Tensor, time_patches: int) -> Tensor:
        """Patch embeddings ``(B, F'·T', D)`` (``patch_embed``'s output, possibly with some replaced, as
        masked-patch pretraining does) -> tokens ``(B, 1 + F'·T', D)`` after the final norm(s)."""
        c = self.config
        tokens = torch.cat([self.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)
        hidden = self.pos_drop(tokens + self.position_embeddings(time_patches))
        residual = None
        if c.bidirectional_pairs:
            for i in range(0, c.depth, 2):
                hidden_f, residual_f = self.layers[i](hidden, residual)
                hidden_b, residual_b = self.layers[i + 1](hidden.flip(1), None if residual is None else residual.flip(1))
                hidden, residual = hidden_f + hidden_b.flip(1), residual_f + residual_b.flip(1)
        else:
            for layer in self.layers:
                hidden, residual = layer(hidden, residual)
        residual = hidden if residual is None else residual + self.drop_path(hidden)
        out = self.norm_f(residual)
        return self.norm_f(out) if c.final_norm_twice else out

    def pool(self, tokens: Tensor) -> Tensor:
        """``(B, 1 + P, D) -> (B, D)``: mean over the patch tokens, or the cls token (``config.pooling``)."""
        return tokens[:, 0] if self.config.pooling == "cls" else tokens[:, 1:].mean(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Normalised features ``(B, T, F)`` -> logits ``(B, num_classes)``."""
        return self.mlp_head(self.pool(self.forward_features(x)))


# ------------------------------------------------------------------------------------ named configs


NAMED_CONFIGS: dict[str, dict[str, Any]] = {
    "ssamba_tiny": {"embed_dim": 192, "depth": 24},
    "ssamba_small": {"embed_dim": 384, "depth": 24},
    "ssamba_base": {"embed_dim": 768, "depth": 24},
    "ssamba_nano": {"embed_dim": 96, "depth": 8},
}


def _build(name: str, overrides: dict[str, Any]) -> SSAMBA:
    return SSAMBA(SSAMBAConfig.from_dict({**NAMED_CONFIGS[name], **overrides}))


@register_model("ssamba_tiny")
def ssamba_tiny(**overrides: Any) -> SSAMBA:
    """SSAMBA-Tiny: D = 192, 24 blocks (6.824 M encoder parameters without the position table)."""
    return _build("ssamba_tiny", overrides)


@register_model("ssamba_small")
def ssamba_small(**overrides: Any) -> SSAMBA:
    """SSAMBA-Small: D = 384, 24 blocks (25.149 M encoder parameters without the position table)."""
    return _build("ssamba_small", overrides)


@register_model("ssamba_base")
def ssamba_base(**overrides: Any) -> SSAMBA:
    """SSAMBA-Base: D = 768, 24 blocks (96.304 M encoder parameters without the position table)."""
    return _build("ssamba_base", overrides)


@register_model("ssamba_nano")
def ssamba_nano(**overrides: Any) -> SSAMBA:
    """Our small CPU model (not released by the authors): D = 96, 8 blocks (0.675 M encoder parameters)."""
    return _build("ssamba_nano", overrides)


# ------------------------------------------------------------------------- the authors' checkpoints
#
# Their training scripts save DataParallel(AMBAModel).state_dict(): every key starts with "module.".
# Self-supervised ("pretrain") layout: module.p_input_fdim/tdim (int64 scalars), module.mask_embed,
# module.v.* (the encoder, incl. the unused v.head), module.cpredlayer.*, module.gpredlayer.*.
# Fine-tuned layout: module.v.* and module.mlp_head.*. See docs/ssamba.md.

_PREFIX = "module."
_SSL_ONLY = ("p_input_fdim", "p_input_tdim", "mask_embed", "cpredlayer.", "gpredlayer.")
_UNUSED_ENCODER = ("v.head.weight", "v.head.bias")  # VisionMamba's ImageNet head, never called
_RECIPE_TDIMS = (1024, 512, 128, 1000, 6144)  # AudioSet, ESC-50, Speech Commands, s3prl, UrbanSound8K


def _strip_prefix(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k.removeprefix(_PREFIX): v for k, v in state_dict.items()}


def is_authors_state_dict(state_dict: dict[str, Tensor]) -> bool:
    """Whether the keys are the authors' SSAMBA layout (``[module.]v.layers.0.mixer.A_b_log``, ...)."""
    keys = {k.removeprefix(_PREFIX) for k in state_dict}
    return "v.cls_token" in keys and any(k.startswith("v.layers.") and k.endswith(".mixer.A_b_log") for k in keys)


def authors_layout(state_dict: dict[str, Tensor]) -> str:
    """``"pretrain"`` (self-supervised: ``p_input_*``, no ``mlp_head``) or ``"finetuned"`` (``mlp_head.*``)."""
    keys = {k.removeprefix(_PREFIX) for k in state_dict}
    if "mlp_head.1.weight" in keys:
        return "finetuned"
    if "p_input_fdim" in keys and "p_input_tdim" in keys:
        return "pretrain"
    raise CheckpointError(
        "an authors' SSAMBA checkpoint has either module.mlp_head.* (fine-tuned) or module.p_input_fdim "
        "and module.p_input_tdim (self-supervised); this one has neither"
    )


def authors_key(key: str) -> str:
    """The authors' name of one of our keys (``mlp_head.*`` -> ``module.mlp_head.*``, else ``module.v.*``)."""
    return _PREFIX + key if key.startswith("mlp_head.") else _PREFIX + "v." + key


def _fresh_head(dim: int, num_classes: int) -> dict[str, Tensor]:
    """A new ``mlp_head`` (LayerNorm + Linear, PyTorch's default init, as the authors' fine-tuning builds it)."""
    head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))
    return {f"mlp_head.{k}": v.detach() for k, v in head.state_dict().items()}


def _infer_time_patches(tokens: int, freq: int, source: str, what: str) -> int:
    if tokens < 1 or (tokens - 1) % freq:
        raise CheckpointError(
            f"{source}: module.v.pos_embed has {tokens} positions, not 1 + {freq} x T' ({what})"
        )
    return (tokens - 1) // freq


def config_and_state_from_authors(
    state_dict: dict[str, Tensor],
    *,
    fstride: int | None = None,
    tstride: int | None = None,
    input_fdim: int | None = None,
    input_tdim: int | None = None,
    num_classes: int | None = None,
    norm: str | None = None,
    checkpoint_fstride: int = 10,
    checkpoint_tstride: int = 10,
    source: str = "checkpoint",
    **config_overrides: Any,
) -> tuple[SSAMBAConfig, dict[str, Tensor]]:
    """The authors' ``.pth`` state dict -> (our config, our state dict) for the requested geometry.

    Sizes (D, depth, N, expand, dt rank, conv width, patch size, classes) and the norm type (LayerNorm
    if ``v.layers.0.norm.bias`` exists, else RMSNorm) are read off the tensors. ``norm`` that
    contradicts the checkpoint raises :class:`CheckpointError`. The geometry:

    * self-supervised checkpoints: the table covers their pretraining grid (``p_input_fdim`` x
      ``p_input_tdim``, non-overlapping patches). Target defaults: ``fstride = tstride = 10``,
      ``input_tdim = 1024``, ``input_fdim = p_input_fdim`` (the AudioSet fine-tuning recipe). The
      table is adapted with the authors' rule (:func:`adapt_position_table` with the hard-coded 8
      rows) and a fresh ``mlp_head`` for ``num_classes`` (default 527) is added. ``mask_embed``,
      ``cpredlayer``, ``gpredlayer`` and ``p_input_*`` (pretraining only) are dropped.
    * fine-tuned checkpoints: the table covers ``input_fdim`` (default 128) at
      ``checkpoint_fstride`` / ``checkpoint_tstride`` (10 in the recipes, 16 for UrbanSound8K: the
      file does not record it); the time patches are read off the table. Target defaults: the
      checkpoint's geometry; another one adapts the table (crop or resize, keeping the rows along
      time). ``num_classes`` different from the checkpoint's starts a fresh head.

    The patch conv keeps its weights (summed over input channels, as the authors do when the stride
    changes; a no-op for one channel). The unused ``v.head`` is dropped. Remaining keys are passed
    on unchanged: loading them with :func:`dass.checkpoints.load_weights` (``key_name=authors_key``)
    reports every missing, unexpected or mis-shaped key in one error. ``config_overrides`` set other
    config fields (``pooling``, ``bidirectional_pairs``, ``labels``, ...).
    """
    state = _strip_prefix(state_dict)
    needed = ["v.cls_token", "v.pos_embed", "v.patch_embed.proj.weight", "v.layers.0.norm.weight",
              "v.layers.0.mixer.A_log", "v.layers.0.mixer.in_proj.weight", "v.layers.0.mixer.dt_proj.weight",
              "v.layers.0.mixer.conv1d.weight"]
    missing = [_PREFIX + k for k in needed if k not in state]
    if missing:
        raise CheckpointError(f"{source}: not an SSAMBA checkpoint of the authors' layout; missing {', '.join(missing)}")
    layout = authors_layout(state)

    dim = int(state["v.cls_token"].shape[-1])
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("v.layers."))
    kernel = tuple(int(s) for s in state["v.patch_embed.proj.weight"].shape[-2:])
    if kernel[0] != kernel[1]:
        raise CheckpointError(f"{source}: patch kernel {kernel} is not square; SSAMBA uses square patches")
    patch = kernel[0]
    found_norm = "layer" if "v.layers.0.norm.bias" in state else "rms"
    names = {"layer": "LayerNorm", "rms": "RMSNorm"}
    if norm is not None and norm != found_norm:
        evidence = "is present" if found_norm == "layer" else "is absent"
        raise CheckpointError(
            f"{source}: the checkpoint's norms are {names[found_norm]} (module.v.layers.0.norm.bias {evidence}) "
            f"but norm={norm!r} ({names.get(norm, norm)}) was asked for; loading one into the other would "
            f"drop or invent the norm biases (the authors' strict=False loader does so silently). "
            f"Load it with norm={found_norm!r}."
        )
    d_state = int(state["v.layers.0.mixer.A_log"].shape[1])
    expand = int(state["v.layers.0.mixer.in_proj.weight"].shape[0]) // (2 * dim)
    dt_rank = int(state["v.layers.0.mixer.dt_proj.weight"].shape[1])
    table = state.pop("v.pos_embed")

    if layout == "pretrain":
        p_fdim, p_tdim = int(state["p_input_fdim"].item()), int(state["p_input_tdim"].item())
        grid = (num_patches(p_fdim, patch, patch), num_patches(p_tdim, patch, patch))
        if table.shape[1] != 1 + grid[0] * grid[1]:
            raise CheckpointError(
                f"{source}: module.v.pos_embed has {table.shape[1]} positions but the pretraining input "
                f"{p_fdim} x {p_tdim} (module.p_input_fdim/tdim) with {patch}x{patch} patches has 1 + "
                f"{grid[0]} x {grid[1]}"
            )
        target = {"fstride": fstride or 10, "tstride": tstride or 10, "input_fdim": input_fdim or p_fdim,
                  "input_tdim": input_tdim or 1024}
        time_resize_rows: int | None = AUTHORS_TIME_RESIZE_ROWS
        old_classes = None
    else:
        fdim = input_fdim or 128
        freq = num_patches(fdim, patch, checkpoint_fstride)
        time = _infer_time_patches(table.shape[1], freq, source,
                                   f"{fdim} bins at frequency stride {checkpoint_fstride}; pass checkpoint_fstride")
        tdim = next((t for t in _RECIPE_TDIMS if num_patches(t, patch, checkpoint_tstride) == time),
                    (time - 1) * checkpoint_tstride + patch)  # a recipe's length if it fits, else the shortest
        grid = (freq, time)
        target = {"fstride": fstride or checkpoint_fstride, "tstride": tstride or checkpoint_tstride,
                  "input_fdim": fdim, "input_tdim": input_tdim or tdim}
        time_resize_rows = None
        old_classes = int(state["mlp_head.1.weight"].shape[0]) if "mlp_head.1.weight" in state else None

    classes = num_classes or old_classes or 527
    config = SSAMBAConfig.from_dict({
        "embed_dim": dim, "depth": depth, "patch_size": patch, "norm": found_norm, "d_state": d_state,
        "expand": max(expand, 1), "d_conv": int(state["v.layers.0.mixer.conv1d.weight"].shape[-1]),
        "dt_rank": "auto" if dt_rank == math.ceil(dim / 16) else dt_rank, "num_classes": classes,
        **target, **config_overrides,
    })
    patches = adapt_position_table(table[:, 1:], grid, config.grid, time_resize_rows=time_resize_rows)
    state["v.pos_embed"] = torch.cat([table[:, :1], patches], dim=1)
    proj = state["v.patch_embed.proj.weight"]
    if proj.dim() == 4 and proj.shape[1] != 1:
        state["v.patch_embed.proj.weight"] = proj.sum(dim=1, keepdim=True)

    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(_SSL_ONLY) or key in _UNUSED_ENCODER:
            continue
        out[key.removeprefix("v.")] = value
    if old_classes != classes:
        for key in [k for k in out if k.startswith("mlp_head.")]:
            del out[key]
        out.update(_fresh_head(dim, classes))
    return config, out


def state_dict_to_authors(
    state_dict: dict[str, Tensor],
    config: SSAMBAConfig,
    *,
    layout: str = "finetuned",
    ssl_heads: dict[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Our SSAMBA state dict -> the authors' ``.pth`` layout (``module.`` prefix, their key order).

    ``layout="finetuned"``: ``module.v.*`` (plus a zero ``v.head``, 1000 classes, which their code
    builds but never calls) and ``module.mlp_head.*``. ``layout="pretrain"``: ``module.p_input_fdim``,
    ``module.p_input_tdim`` (the config's input size), ``module.mask_embed``, ``module.v.*``,
    ``module.cpredlayer.*``, ``module.gpredlayer.*``; the model must have non-overlapping patches
    (their pretraining refuses overlap). ``ssl_heads`` supplies ``mask_embed`` and the
    ``cpredlayer.*`` / ``gpredlayer.*`` tensors (our network has none); missing ones are freshly
    initialised as the authors do (Xavier-normal mask embedding, PyTorch-default Linear layers).
    """
    if layout not in ("finetuned", "pretrain"):
        raise ConfigError(f"unknown authors' layout {layout!r}; choose finetuned or pretrain")
    dim = config.embed_dim
    encoder = {k: v for k, v in state_dict.items() if not k.startswith("mlp_head.")}
    head_v = {"head.weight": torch.zeros(1000, dim), "head.bias": torch.zeros(1000)}
    ordered: dict[str, Tensor] = {}
    for key, value in encoder.items():  # v.head sits after the patch embedding in their order
        ordered[key] = value
        if key == "patch_embed.proj.bias":
            ordered.update(head_v)
    out: dict[str, Tensor] = {}
    if layout == "finetuned":
        out.update({_PREFIX + "v." + k: v for k, v in ordered.items()})
        out.update({_PREFIX + k: v for k, v in state_dict.items() if k.startswith("mlp_head.")})
        return out
    if config.fstride != config.patch_size or config.tstride != config.patch_size:
        raise ConfigError(
            f"the authors' self-supervised layout has non-overlapping patches (strides = patch size "
            f"{config.patch_size}); this model has strides {config.fstride}/{config.tstride}"
        )
    given = dict(ssl_heads or {})
    heads: dict[str, Tensor] = {}
    for name in ("cpredlayer", "gpredlayer"):  # Linear(D, D) -> ReLU -> Linear(D, 256)
        fresh = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 256)).state_dict()
        for key, value in fresh.items():
            heads[f"{name}.{key}"] = given.pop(f"{name}.{key}", value.detach())
    mask_embed = given.pop("mask_embed", None)
    if given:
        raise ConfigError(f"ssl_heads: unknown key(s) {', '.join(sorted(given))}; expected mask_embed, "
                          "cpredlayer.{0,2}.{weight,bias}, gpredlayer.{0,2}.{weight,bias}")
    out[_PREFIX + "p_input_fdim"] = torch.tensor(config.input_fdim, dtype=torch.int64)
    out[_PREFIX + "p_input_tdim"] = torch.tensor(config.input_tdim, dtype=torch.int64)
    out[_PREFIX + "mask_embed"] = nn.init.xavier_normal_(torch.zeros(1, 1, dim)) if mask_embed is None else mask_embed
    out.update({_PREFIX + "v." + k: v for k, v in ordered.items()})
    out.update({_PREFIX + k: v for k, v in heads.items()})
    return out
