"""The DASS network: VMamba ("v05_noz" SS2D blocks) on log-mel spectrograms (SPEC §2).

Tensors are channel-first ``(B, C, H, W)`` throughout, with H = frequency and W = time. The model
takes normalised features ``(B, T, F)`` (T frames, F = 128 mel bins), turns them into a one-channel
image ``(B, 1, F, T)``, and runs

    stem (stride 4) -> 4 stages of VSS blocks (stride-2 conv downsampling between stages)
    -> LayerNorm -> pool over (H, W) -> Linear

There are no positional embeddings, so any number of frames T >= 1 works. Odd sizes are handled as
PyTorch's ``Conv2d(k=3, s=2, p=1)`` does: ``out = (in - 1) // 2 + 1``.

Module and parameter names follow the authors' training code, so our ``state_dict()`` keys are the
keys of their ``.pth`` files (SPEC §3a) without the ``module.v.`` prefix. The ``nn.Identity``
placeholders in the stem and the downsampling blocks exist only to keep the authors' indices
(``patch_embed.5``, ``downsample.3``); they do nothing.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AudioError, CheckpointError, ConfigError
from ..ops import selective_scan
from ..ops.layer_norm import layer_norm_channels_first, layer_norm_channels_first_ref
from .registry import register_architecture, register_model

__all__ = [
    "DASS",
    "DASSConfig",
    "NAMED_CONFIGS",
    "POOLING_MODES",
    "SS2D",
    "VSSBlock",
    "cross_merge",
    "cross_scan",
    "dass_medium",
    "dass_small",
    "dass_tiny",
    "init_from_vmamba",
    "reference_ops",
]

POOLING_MODES = ("mean", "first", "middle", "last", "sum")
NUM_DIRECTIONS = 4  # K: the four cross-scan directions of SS2D


# --------------------------------------------------------------------------------------------- config


@dataclass
class DASSConfig:
    """Hyper-parameters of a DASS network (what ``config.json`` stores).

    ``depths[i]`` VSS blocks of width ``dims[i]`` in stage i; the stem produces ``dims[0]`` channels
    through a hidden width ``dims[0] // 2``. ``d_state`` is the SSM state size N, ``ssm_ratio`` the
    SS2D inner width relative to the block width, ``dt_rank`` the rank R of the delta projection
    ("auto" = ceil(C / 16)). ``labels[i]`` is the display name of class i (or None).
    """

    model_type: str = "dass"
    depths: tuple[int, ...] = (2, 2, 8, 2)
    dims: tuple[int, ...] = (96, 192, 384, 768)
    num_classes: int = 527
    pooling: str = "mean"
    drop_path_rate: float = 0.0
    d_state: int = 1
    ssm_ratio: float = 1.0
    dt_rank: int | str = "auto"
    mlp_ratio: float = 4.0
    labels: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.model_type != "dass":
            raise ConfigError(f"DASSConfig: model_type must be 'dass', got {self.model_type!r}")
        self.depths = tuple(int(d) for d in self.depths)
        self.dims = tuple(int(d) for d in self.dims)
        if len(self.depths) != len(self.dims) or not self.depths:
            raise ConfigError(
                f"DASSConfig: depths {list(self.depths)} and dims {list(self.dims)} must be non-empty "
                "and of the same length (one entry per stage)"
            )
        if any(d < 1 for d in self.depths) or any(c < 2 for c in self.dims):
            raise ConfigError(f"DASSConfig: bad depths {list(self.depths)} or dims {list(self.dims)}")
        if self.pooling not in POOLING_MODES:
            raise ConfigError(
                f"DASSConfig: unknown pooling {self.pooling!r}; choose one of {', '.join(POOLING_MODES)}"
            )
        if int(self.num_classes) < 1:
            raise ConfigError(f"DASSConfig: num_classes must be >= 1, got {self.num_classes}")
        self.num_classes = int(self.num_classes)
        if not 0.0 <= float(self.drop_path_rate) < 1.0:
            raise ConfigError(f"DASSConfig: drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if int(self.d_state) < 1 or float(self.ssm_ratio) <= 0 or float(self.mlp_ratio) <= 0:
            raise ConfigError("DASSConfig: d_state must be >= 1 and ssm_ratio, mlp_ratio > 0")
        if self.dt_rank != "auto" and (not isinstance(self.dt_rank, int) or self.dt_rank < 1):
            raise ConfigError(f"DASSConfig: dt_rank must be 'auto' or a positive int, got {self.dt_rank!r}")
        if self.labels is not None:
            self.labels = [str(name) for name in self.labels]
            if len(self.labels) != self.num_classes:
                raise ConfigError(
                    f"DASSConfig: {len(self.labels)} labels given for num_classes={self.num_classes}"
                )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists); ``from_dict(to_dict())`` gives an equal config."""
        out = asdict(self)
        out["depths"] = list(self.depths)
        out["dims"] = list(self.dims)
        return out

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "DASSConfig":
        """Build from a dict such as ``config.json``; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ConfigError(
                f"DASSConfig: unknown config key(s) {', '.join(map(repr, unknown))}; "
                f"known keys: {', '.join(sorted(known))}"
            )
        return cls(**config)


# ------------------------------------------------------------------------------------- small layers


_USE_REFERENCE_OPS = False  # set by reference_ops(): run the plain implementations below


@contextlib.contextmanager
def reference_ops() -> Iterator[None]:
    """Within this context DASS layers run their plain reference implementations.

    The fast paths (numba channel-first LayerNorm, 1x1 convolutions as matmuls, cross-scan/merge with
    hand-written adjoint backward, matmul projections in SS2D) compute the same function; tests and
    ``benchmarks/train_step.py`` compare them against this reference. Not thread-safe (a global flag).
    """
    global _USE_REFERENCE_OPS
    previous, _USE_REFERENCE_OPS = _USE_REFERENCE_OPS, True
    try:
        yield
    finally:
        _USE_REFERENCE_OPS = previous


class Linear2d(nn.Linear):
    """A 1x1 convolution stored as ``nn.Linear`` (weight ``(out, in)``): ``(B, in, H, W) -> (B, out, H, W)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _USE_REFERENCE_OPS:
            return F.conv2d(x, self.weight[:, :, None, None], self.bias)
        b, _, h, w = x.shape
        # (out, in) @ (B, in, H*W) as a batched GEMM on the channel-first layout (torch.matmul would
        # fold it into one GEMM over (B*H*W, in) and copy x and y to channels-last for that).
        y = torch.bmm(self.weight.expand(b, -1, -1), x.reshape(b, x.shape[1], h * w))
        if self.bias is not None:
            y = y + self.bias[:, None]
        return y.view(b, -1, h, w)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of a channel-first map ``(B, C, H, W)``.

    Same as permuting to channels-last, ``nn.LayerNorm`` and permuting back (the reference), but
    computed in place of the channel-first layout (:func:`dass.ops.layer_norm.layer_norm_channels_first`).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _USE_REFERENCE_OPS:
            return layer_norm_channels_first_ref(x, self.weight, self.bias, self.eps)
        return layer_norm_channels_first(x, self.weight, self.bias, self.eps)


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a sample's residual branch with probability ``p``.

    Kept samples are scaled by ``1 / (1 - p)`` so the expectation is unchanged; identity in eval.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        if _USE_REFERENCE_OPS:
            return x * mask / keep
        return x * (mask / keep)  # one pass over x instead of two

    def extra_repr(self) -> str:
        return f"p={self.p}"


def downsample_size(n: int) -> int:
    """Output length of ``Conv2d(kernel 3, stride 2, padding 1)`` on an axis of length ``n``."""
    return (n - 1) // 2 + 1


# ----------------------------------------------------------------------------------- SS2D and blocks


def cross_scan_ref(x: torch.Tensor) -> torch.Tensor:
    """Reference of :func:`cross_scan` (plain tensor ops, autograd through every copy)."""
    b, c, h, w = x.shape
    xs = x.new_empty(b, NUM_DIRECTIONS, c, h * w)
    xs[:, 0] = x.flatten(2)
    xs[:, 1] = x.transpose(2, 3).flatten(2)
    xs[:, 2:] = xs[:, :2].flip(-1)
    return xs


def cross_merge_ref(ys: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Reference of :func:`cross_merge` (plain tensor ops)."""
    b, _, c, _ = ys.shape
    row_major = ys[:, 0] + ys[:, 2].flip(-1)  # (B, C, H*W), index h*W + w
    col_major = ys[:, 1] + ys[:, 3].flip(-1)  # (B, C, W*H), index w*H + h
    return row_major.view(b, c, height, width) + col_major.view(b, c, width, height).transpose(2, 3)


def _cross_scan_values(x: torch.Tensor) -> torch.Tensor:
    """Forward of cross_scan without autograd bookkeeping: ``(B, C, H, W) -> (B, 4, C, H*W)``."""
    b, c, h, w = x.shape
    xs = x.new_empty(b, NUM_DIRECTIONS, c, h * w)
    xs[:, 0].view(b, c, h, w).copy_(x)
    xs[:, 1].view(b, c, w, h).copy_(x.transpose(2, 3))
    xs[:, 2:].copy_(xs[:, :2].flip(-1))
    return xs


def _cross_merge_values(ys: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Forward of cross_merge without autograd bookkeeping: ``(B, 4, C, H*W) -> (B, C, H, W)``."""
    b, _, c, _ = ys.shape
    pair = ys[:, :2] + ys[:, 2:].flip(-1)  # (B, 2, C, L): row-major and column-major sums
    out = pair[:, 0].reshape(b, c, height, width).clone()
    out += pair[:, 1].view(b, c, width, height).transpose(2, 3)
    return out


class _CrossScan(torch.autograd.Function):
    """cross_scan is linear and cross_merge is its adjoint, so each is the other's backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.size = x.shape[2:]
        return _cross_scan_values(x)

    @staticmethod
    def backward(ctx, grad_xs):
        return _cross_merge_values(grad_xs, *ctx.size)


class _CrossMerge(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ys, height, width):
        return _cross_merge_values(ys, height, width)

    @staticmethod
    def backward(ctx, grad_y):
        return _cross_scan_values(grad_y.contiguous()), None, None


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """Unfold a map into the four SS2D scan orders: ``(B, C, H, W) -> (B, 4, C, H*W)``.

    k0: row-major (index h*W + w: every time step of frequency row 0, then row 1, ...);
    k1: column-major (index w*H + h: every frequency of time step 0, then 1, ...);
    k2: k0 reversed; k3: k1 reversed. Backward is :func:`cross_merge` (the adjoint).
    """
    if _USE_REFERENCE_OPS:
        return cross_scan_ref(x)
    return _CrossScan.apply(x)


def cross_merge(ys: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`cross_scan`, summing the directions: ``(B, 4, C, H*W) -> (B, C, H, W)``.

    Backward is :func:`cross_scan` (the adjoint).
    """
    if _USE_REFERENCE_OPS:
        return cross_merge_ref(ys, height, width)
    return _CrossMerge.apply(ys, height, width)


class SS2D(nn.Module):
    """2-D selective scan (VMamba "v05_noz": no output gate), ``(B, C, H, W) -> (B, C, H, W)``.

    in_proj (1x1) -> depthwise 3x3 conv -> SiLU -> cross-scan into K = 4 sequences of length H*W
    -> per direction k: [dt_low (R), B (N), C (N)] = x_proj_weight[k] @ u_k,
       delta = dt_projs_weight[k] @ dt_low (+ dt_projs_bias[k], softplus inside the scan)
    -> selective scan with A = -exp(A_logs), D = Ds -> cross-merge (sum of the 4 directions)
    -> out_norm (LayerNorm over channels) -> out_proj (1x1).
    """

    def __init__(self, d_model: int, d_state: int = 1, ssm_ratio: float = 1.0, dt_rank: int | str = "auto",
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_inner = int(ssm_ratio * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        k, d_inner, rank, n = NUM_DIRECTIONS, self.d_inner, self.dt_rank, d_state

        self.in_proj = Linear2d(d_model, d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, kernel_size=3, padding=1, groups=d_inner, bias=False)
        self.act = nn.SiLU()
        self.x_proj_weight = nn.Parameter(torch.empty(k, rank + 2 * n, d_inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, d_inner))
        self.A_logs = nn.Parameter(torch.empty(k * d_inner, n))
        self.Ds = nn.Parameter(torch.empty(k * d_inner))
        self.out_norm = LayerNorm2d(d_inner)
        self.out_proj = Linear2d(d_inner, d_model, bias=False)
        self._dt_range = (dt_min, dt_max, dt_init_floor)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """VMamba "v0" init of the SSM parameters (the 1x1 projections are set by DASS.init_weights).

        x_proj_weight ~ U(+-1/sqrt(d_inner)) (PyTorch's default for the Linear it was stacked from);
        dt_projs_weight ~ U(+-R^-0.5); dt_projs_bias = softplus^-1(dt) with
        dt = exp(U(log dt_min, log dt_max)) clamped >= dt_init_floor; A_logs = log(1..N); Ds = 1.
        """
        dt_min, dt_max, floor = self._dt_range
        bound = 1.0 / math.sqrt(self.d_inner)
        nn.init.uniform_(self.x_proj_weight, -bound, bound)
        nn.init.uniform_(self.dt_projs_weight, -self.dt_rank**-0.5, self.dt_rank**-0.5)
        dt = torch.exp(torch.rand(self.dt_projs_bias.shape) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=floor)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
        self.A_logs.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).expand_as(self.A_logs))
        self.Ds.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, height, width = x.shape
        length = height * width
        k, n, rank = NUM_DIRECTIONS, self.d_state, self.dt_rank

        u = self.act(self.conv2d(self.in_proj(x)))  # (B, D, H, W), D = d_inner
        us = cross_scan(u)  # (B, K, D, L)
        if _USE_REFERENCE_OPS:
            x_dbl = torch.einsum("bkdl,kcd->bkcl", us, self.x_proj_weight)  # (B, K, R + 2N, L)
        else:  # the same contraction as one batched GEMM over (B, K), no permute copies of us
            x_dbl = torch.matmul(self.x_proj_weight, us)
        dt_low, B, C = torch.split(x_dbl, [rank, n, n], dim=2)
        if _USE_REFERENCE_OPS:
            delta = torch.einsum("bkrl,kdr->bkdl", dt_low, self.dt_projs_weight)  # (B, K, D, L)
        else:
            delta = torch.matmul(self.dt_projs_weight, dt_low)

        ys = selective_scan(
            us.view(b, k * self.d_inner, length),
            delta.reshape(b, k * self.d_inner, length),
            -torch.exp(self.A_logs.float()),
            B.contiguous(),
            C.contiguous(),
            D=self.Ds.float(),
            delta_bias=self.dt_projs_bias.float().view(-1),
            delta_softplus=True,
        )  # (B, K*D, L)
        y = cross_merge(ys.view(b, k, self.d_inner, length), height, width).to(x.dtype)
        return self.out_proj(self.out_norm(y))


class MLP(nn.Module):
    """Channel MLP on a map: 1x1 conv C -> hidden -> GELU -> 1x1 conv hidden -> C."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = Linear2d(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = Linear2d(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VSSBlock(nn.Module):
    """``x + DropPath(SS2D(LN(x)))``, then ``x + DropPath(MLP(LN(x)))``; shape-preserving."""

    def __init__(self, dim: int, drop_path: float, config: DASSConfig) -> None:
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.op = SS2D(dim, d_state=config.d_state, ssm_ratio=config.ssm_ratio, dt_rank=config.dt_rank)
        self.norm2 = LayerNorm2d(dim)
        self.mlp = MLP(dim, int(dim * config.mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.op(self.norm(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Stage(nn.Module):
    """``blocks`` of one width, then (except after the last stage) a stride-2 conv + LayerNorm."""

    def __init__(self, dim: int, next_dim: int | None, drop_paths: list[float], config: DASSConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(VSSBlock(dim, p, config) for p in drop_paths)
        if next_dim is None:
            self.downsample: nn.Module = nn.Identity()
        else:  # indices 1 and 3 as in the authors' checkpoints; 0 and 2 are placeholders
            self.downsample = nn.Sequential(
                nn.Identity(),
                nn.Conv2d(dim, next_dim, kernel_size=3, stride=2, padding=1),
                nn.Identity(),
                LayerNorm2d(next_dim),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class Classifier(nn.Module):
    """Holds the final LayerNorm (``norm``) and the linear ``head``; pooling lives in :meth:`DASS.pool`."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.head = nn.Linear(dim, num_classes)


# ------------------------------------------------------------------------------------------ network


@register_architecture
class DASS(nn.Module):
    """Distilled Audio State-Space model: features ``(B, T, F)`` -> logits ``(B, num_classes)``.

    Pooling of the final map ``(B, C, H', W')`` (H' = F/32 frequency rows, W' = T/32 time steps,
    rounded up) into one vector per clip, ``config.pooling``:

    * ``mean``: mean over all H' x W' positions (the released models);
    * ``sum``: sum over all positions;
    * ``first`` / ``middle`` / ``last``: mean over frequency, then the time step 0 / W' // 2 / W' - 1
      (the paper's "first / middle / last token" for a 2-D map).
    """

    model_type = "dass"
    config_class = DASSConfig

    def __init__(self, config: DASSConfig) -> None:
        super().__init__()
        self.config = config
        dims, depths = config.dims, config.depths
        stem_dim = dims[0] // 2
        self.patch_embed = nn.Sequential(  # indices as in the authors' checkpoints (1, 3, 6 are placeholders)
            nn.Conv2d(1, stem_dim, kernel_size=3, stride=2, padding=1),
            nn.Identity(),
            LayerNorm2d(stem_dim),
            nn.Identity(),
            nn.GELU(),
            nn.Conv2d(stem_dim, dims[0], kernel_size=3, stride=2, padding=1),
            nn.Identity(),
            LayerNorm2d(dims[0]),
        )
        num_blocks = sum(depths)  # drop-path rate rises linearly from 0 to drop_path_rate over all blocks
        rates = [config.drop_path_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
        self.layers = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            start = sum(depths[:i])
            next_dim = dims[i + 1] if i + 1 < len(dims) else None
            self.layers.append(Stage(dim, next_dim, rates[start:start + depth], config))
        self.classifier = Classifier(dims[-1], config.num_classes)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """VMamba "v0" init: Linear (incl. 1x1 convs) trunc-normal(0.02) with zero bias; LayerNorm 1 / 0.

        Plain convolutions keep PyTorch's default init; SS2D's SSM parameters are set by
        :meth:`SS2D.reset_ssm_parameters`.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def num_features(self) -> int:
        """Channels C of the final feature map."""
        return self.config.dims[-1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(B, T, F)`` -> final map ``(B, C, H', W')`` after the final LayerNorm."""
        if x.dim() != 3 or x.shape[1] < 1 or x.shape[2] < 1:
            raise AudioError(
                f"DASS expects features of shape (batch, time, freq), got {tuple(x.shape)}"
            )
        x = x.unsqueeze(1).transpose(2, 3)  # (B, 1, H = freq, W = time)
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        return self.classifier.norm(x)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """Summarise the final map ``(B, C, H', W')`` into ``(B, C)`` as ``config.pooling`` says."""
        mode = self.config.pooling
        if mode == "mean":
            return features.mean(dim=(2, 3))
        if mode == "sum":
            return features.sum(dim=(2, 3))
        over_time = features.mean(dim=2)  # (B, C, W')
        width = over_time.shape[-1]
        index = {"first": 0, "middle": width // 2, "last": width - 1}[mode]
        return over_time[:, :, index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised features ``(B, T, F)`` -> logits ``(B, num_classes)``."""
        return self.classifier.head(self.pool(self.forward_features(x)))


# ------------------------------------------------------------------------------------ named configs


NAMED_CONFIGS: dict[str, dict[str, Any]] = {
    "dass_small": {"depths": (2, 2, 8, 2), "dims": (96, 192, 384, 768), "drop_path_rate": 0.2},
    "dass_medium": {"depths": (2, 2, 20, 2), "dims": (96, 192, 384, 768), "drop_path_rate": 0.3},
    "dass_tiny": {"depths": (1, 1, 2, 1), "dims": (48, 96, 192, 384), "drop_path_rate": 0.1},
}


def _build(name: str, overrides: dict[str, Any]) -> DASS:
    return DASS(DASSConfig.from_dict({**NAMED_CONFIGS[name], **overrides}))


@register_model("dass_small")
def dass_small(**overrides: Any) -> DASS:
    """DASS-small (29.88 M parameters with 527 classes): depths (2, 2, 8, 2), dims 96..768."""
    return _build("dass_small", overrides)


@register_model("dass_medium")
def dass_medium(**overrides: Any) -> DASS:
    """DASS-medium (48.65 M parameters with 527 classes): depths (2, 2, 20, 2), dims 96..768."""
    return _build("dass_medium", overrides)


@register_model("dass_tiny")
def dass_tiny(**overrides: Any) -> DASS:
    """Our small CPU model (3.57 M parameters; not released by the authors): depths (1, 1, 2, 1), dims 48..384."""
    return _build("dass_tiny", overrides)


# --------------------------------------------------------------------------------- ImageNet start


def init_from_vmamba(model: DASS, path: str) -> dict[str, list[str]]:
    """Copy a VMamba ImageNet classification checkpoint into ``model`` (the authors' ImageNet start).

    The checkpoint (keys without ``module.v.``; optionally wrapped in ``{"model": ...}``) must match
    the model's layout (e.g. "vssm1_tiny_0230s" for dass_small). The 3-channel stem kernel
    ``patch_embed.0.weight (48, 3, 3, 3)`` is summed over its RGB inputs (bias kept) and the
    1000-class ``classifier.head`` is skipped (the model keeps its freshly initialised head).
    Any other missing, unexpected or mis-shaped key raises :class:`CheckpointError`.
    Returns ``{"loaded": [...], "skipped": [...]}`` (key names).
    """
    from ..checkpoints import load_state_dict_file, load_weights  # imported here: checkpoints uses models

    state = load_state_dict_file(path)
    state = {key.removeprefix("module."): value for key, value in state.items()}
    stem_key = "patch_embed.0.weight"
    if stem_key not in state:
        raise CheckpointError(f"{path}: no {stem_key!r} key; not a VMamba classification checkpoint")
    if state[stem_key].dim() == 4 and state[stem_key].shape[1] == 3:
        state[stem_key] = state[stem_key].sum(dim=1, keepdim=True)
    skipped = sorted(key for key in state if key.startswith("classifier.head."))
    for key in skipped:
        del state[key]
    head = {key: value for key, value in model.state_dict().items() if key.startswith("classifier.head.")}
    load_weights(model, {**state, **head}, source=str(path))
    return {"loaded": sorted(state), "skipped": skipped}
