"""AST: the Audio Spectrogram Transformer (transformer baseline and distillation teacher).

A DeiT-style ViT over the ``(B, T, 128)`` log-mel features (SPEC §4): 16×16 patches taken with stride
10 in frequency and time (12 × 101 = 1212 patches for 128 × 1024), a cls and a distillation token,
``depth`` pre-norm transformer blocks, final LayerNorm; the clip summary is the mean of the two
tokens, then ``mlp_head`` = LayerNorm → Linear.

Positional embeddings:

* ``"learned"`` (the official AST): a table for the ``input_tdim`` the model was built for. For a
  different number of time patches it is adapted on the fly the way AST does when it changes
  ``input_tdim``: *cut* symmetrically around the centre when there are fewer time patches,
  *bilinearly interpolated* along time when there are more. The cls/dist token embeddings are kept.
* ``"sinusoidal"``: fixed 2-D sin-cos embeddings (half of the channels encode the frequency-patch
  index, half the time-patch index, MAE style); they exist for any length. Tokens get zeros.

Parameter names follow the official checkpoint (``cls_token``, ``dist_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.k.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``,
``mlp_head.{0,1}``), so loading ``module.v.*`` / ``module.mlp_head.*`` is a prefix strip
(:func:`config_and_state_from_official`). :func:`from_hf_ast` maps a transformers
``ASTForAudioClassification`` onto this class.

Named configs: ``ast_base`` (768 wide, 12 blocks, 12 heads; 87 M parameters), ``ast_small``
(384/12/6, DeiT-S), ``ast_tiny`` (192/12/3, DeiT-Ti). Head width is always 64.

SSAST (Gong et al., arXiv 2110.09784; the baseline of SSAMBA, arXiv 2405.11831) is the same
network with a different clip summary: ``ssast_tiny`` / ``ssast_small`` / ``ssast_base`` (the three
DeiT sizes) pool with ``pooling="mean"``, the mean over the patch tokens (SSAST's ``ft_avgtok``);
``pooling="cls"`` is the mean of the cls and distillation tokens (AST, and SSAST's ``ft_cls``).
Attention runs through ``F.scaled_dot_product_attention`` (``attention="sdpa"``) or in the eager
form that materialises the ``(B, heads, N, N)`` softmax matrix (``attention="eager"``, what timm's
ViT and thus the SSAST/SSAMBA efficiency measurements ran); both compute the same function.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError, ConfigError
from .registry import register_architecture, register_model

__all__ = [
    "AST",
    "ATTENTION_MODES",
    "POOLING_MODES",
    "ASTConfig",
    "adapt_position_grid",
    "config_and_state_from_official",
    "from_hf_ast",
    "sincos_pos_embed_2d",
]

POOLING_MODES = ("cls", "mean")  # mean of the cls + dist tokens | mean over the patch tokens
ATTENTION_MODES = ("sdpa", "eager")  # F.scaled_dot_product_attention | materialised softmax(QK^T)


@dataclasses.dataclass
class ASTConfig:
    """Hyper-parameters of :class:`AST` (serialised as ``config.json``)."""

    model_type: str = "ast"
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    fstride: int = 10
    tstride: int = 10
    input_fdim: int = 128
    input_tdim: int = 1024
    pos_emb: str = "learned"
    pooling: str = "cls"
    attention: str = "sdpa"
    num_classes: int = 527
    labels: list[str] | None = None
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    layer_norm_eps: float = 1e-6  # timm DeiT blocks and final norm
    head_norm_eps: float = 1e-5  # nn.LayerNorm default, as in the official mlp_head

    def __post_init__(self) -> None:
        if self.model_type != "ast":
            raise ConfigError(f"ASTConfig.model_type must be 'ast', got {self.model_type!r}")
        if self.pos_emb not in ("learned", "sinusoidal"):
            raise ConfigError(f"ASTConfig.pos_emb must be 'learned' or 'sinusoidal', got {self.pos_emb!r}")
        if self.pooling not in POOLING_MODES:
            raise ConfigError(f"ASTConfig.pooling must be one of {', '.join(POOLING_MODES)}, got {self.pooling!r}")
        if self.attention not in ATTENTION_MODES:
            raise ConfigError(
                f"ASTConfig.attention must be one of {', '.join(ATTENTION_MODES)}, got {self.attention!r}"
            )
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"ASTConfig: embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.pos_emb == "sinusoidal" and self.embed_dim % 4:
            raise ConfigError(f"ASTConfig: sinusoidal pos_emb needs embed_dim divisible by 4, got {self.embed_dim}")
        if self.input_fdim < self.patch_size or self.input_tdim < self.patch_size:
            raise ConfigError(
                f"ASTConfig: input_fdim/input_tdim ({self.input_fdim}/{self.input_tdim}) must be >= patch_size {self.patch_size}"
            )
        if self.labels is not None and len(self.labels) != self.num_classes:
            raise ConfigError(f"ASTConfig: {len(self.labels)} labels for num_classes={self.num_classes}")

    @property
    def grid(self) -> tuple[int, int]:
        """(frequency patches, time patches) for an ``input_fdim × input_tdim`` input."""
        return num_patches(self.input_fdim, self.patch_size, self.fstride), num_patches(
            self.input_tdim, self.patch_size, self.tstride
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "ASTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ConfigError(f"unknown AST config key(s) {unknown}; valid keys: {sorted(known)}")
        return cls(**config)


def num_patches(size: int, patch: int, stride: int) -> int:
    """Patches a ``patch``-wide kernel with ``stride`` takes from ``size`` (no padding)."""
    return (size - patch) // stride + 1


def sincos_pos_embed_1d(dim: int, positions: Tensor) -> Tensor:
    """``(L,)`` positions -> ``(L, dim)``: [sin(p·ω_i), cos(p·ω_i)] with ω_i = 10000^(-2i/dim)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_pos_embed_2d(dim: int, fdim: int, tdim: int) -> Tensor:
    """Fixed 2-D sin-cos embeddings ``(fdim·tdim, dim)`` in patch order (frequency-major, as the conv
    flattens): the first ``dim/2`` channels encode the frequency-patch index, the rest the time index."""
    f_idx = torch.arange(fdim).repeat_interleave(tdim)
    t_idx = torch.arange(tdim).repeat(fdim)
    return torch.cat([sincos_pos_embed_1d(dim // 2, f_idx), sincos_pos_embed_1d(dim // 2, t_idx)], dim=1).float()


def adapt_position_grid(grid: Tensor, size: tuple[int, int], *, time_resize_rows: int | None = None) -> Tensor:
    """Adapt a grid of patch position embeddings ``(1, D, F, T)`` to ``size = (F', T')``: ``(1, D, F', T')``.

    The rule of AST/SSAST/SSAMBA (see ``docs/ssamba.md``), time axis first, then frequency:

    * time: ``T' < T``: the centre columns ``[T//2 - T'//2, ... + T')``; otherwise bilinear
      (``align_corners=False``) to ``(rows, T')`` with ``rows = time_resize_rows`` or, if None, the
      current number of rows. The authors' fine-tuning code hard-codes ``rows = 8`` (the frequency
      patches of their 128-bin, stride-16 pretraining); pass ``time_resize_rows=8`` to reproduce it.
    * frequency: ``F' < F``: the centre rows ``[F//2 - F'//2, ... + F')`` (the authors' slice ends at
      ``+ T'``, a bug their recipes never reach; where it gives F' rows it is this crop, elsewhere it
      fails); otherwise bilinear to ``(F', T')``.
    """
    freq, time = grid.shape[2], grid.shape[3]
    new_freq, new_time = size
    if (freq, time) == (new_freq, new_time) and time_resize_rows in (None, freq):
        return grid
    if new_time < time:
        start = time // 2 - new_time // 2
        grid = grid[:, :, :, start : start + new_time]
    else:
        rows = grid.shape[2] if time_resize_rows is None else time_resize_rows
        grid = F.interpolate(grid, size=(rows, new_time), mode="bilinear", align_corners=False)
    if new_freq < freq:
        start = freq // 2 - new_freq // 2
        if start + new_freq > grid.shape[2]:
            raise ConfigError(
                f"cannot crop frequency rows [{start}, {start + new_freq}) of a {freq}-row table: the time "
                f"resize left {grid.shape[2]} rows"
            )
        grid = grid[:, :, start : start + new_freq, :]
    elif grid.shape[2] != new_freq:
        grid = F.interpolate(grid, size=(new_freq, new_time), mode="bilinear", align_corners=False)
    return grid


def adapt_learned_pos_embed(pos: Tensor, fdim: int, tdim: int, new_tdim: int) -> Tensor:
    """Patch embeddings ``(1, fdim·tdim, D)`` for ``tdim`` time patches -> ``(1, fdim·new_tdim, D)``.

    Fewer patches: the centre ``new_tdim`` columns (AST's cut, start ``tdim//2 - new_tdim//2``);
    more: bilinear interpolation along time (``align_corners=False``), as AST does
    (:func:`adapt_position_grid` along time only).
    """
    if new_tdim == tdim:
        return pos
    dim = pos.shape[-1]
    grid = pos.reshape(1, fdim, tdim, dim).permute(0, 3, 1, 2)  # (1, D, F', T')
    grid = adapt_position_grid(grid, (fdim, new_tdim))
    return grid.permute(0, 2, 3, 1).reshape(1, fdim * new_tdim, dim)


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``p`` (rescaling the rest)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class PatchEmbed(nn.Module):
    """``(B, 1, F, T)`` -> ``(B, F'·T', D)`` with a 16×16 conv of stride (fstride, tstride)."""

    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        p = config.patch_size
        self.proj = nn.Conv2d(1, config.embed_dim, kernel_size=(p, p), stride=(config.fstride, config.tstride))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (rows: all q, then k, then v).

    ``implementation``: ``"sdpa"`` (``F.scaled_dot_product_attention``) or ``"eager"`` (the
    ``(B, heads, N, N)`` matrix ``softmax(q k^T / sqrt(head_dim))`` materialised, as timm's ViT does).
    """

    def __init__(self, dim: int, num_heads: int, attn_drop: float, proj_drop: float,
                 implementation: str = "sdpa") -> None:
        super().__init__()
        self.num_heads = num_heads
        self.implementation = implementation
        self.qkv = nn.Linear(dim, dim * 3)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        dropout = self.attn_drop if self.training else 0.0
        if self.implementation == "eager":
            weights = ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(dim=-1)  # (B, heads, N, N)
            y = (F.dropout(weights, dropout) if dropout else weights) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(b, n, d)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, config: ASTConfig, drop_path: float) -> None:
        super().__init__()
        d = config.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.attn = Attention(d, config.num_heads, config.attn_drop_rate, config.drop_rate, config.attention)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.mlp = Mlp(d, int(d * config.mlp_ratio), config.drop_rate)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


@register_architecture
class AST(nn.Module):
    """Audio Spectrogram Transformer. ``forward((B, T, input_fdim)) -> (B, num_classes)`` logits."""

    model_type = "ast"
    config_class = ASTConfig
    num_prefix_tokens = 2  # the cls and distillation tokens before the patch tokens

    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        fdim, tdim = config.grid
        if config.pos_emb == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, fdim * tdim + 2, d))
        else:
            self.register_parameter("pos_embed", None)
        self.pos_drop = nn.Dropout(config.drop_rate)
        rates = torch.linspace(0, config.drop_path_rate, config.depth, device="cpu").tolist()  # also on meta
        self.blocks = nn.ModuleList(Block(config, r) for r in rates)
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.mlp_head = nn.Sequential(nn.LayerNorm(d, eps=config.head_norm_eps), nn.Linear(d, config.num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        for t in (self.cls_token, self.dist_token) + ((self.pos_embed,) if self.pos_embed is not None else ()):
            nn.init.trunc_normal_(t, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def patch_grid(self, num_frames: int) -> tuple[int, int]:
        """(frequency patches, time patches) for an input of ``num_frames`` frames (≥ patch_size)."""
        c = self.config
        return num_patches(c.input_fdim, c.patch_size, c.fstride), num_patches(num_frames, c.patch_size, c.tstride)

    def position_embeddings(self, tdim: int) -> Tensor:
        """``(1, 2 + F'·tdim, D)``: token embeddings followed by the patch embeddings for ``tdim`` time patches."""
        c = self.config
        fdim, base_tdim = c.grid
        if self.pos_embed is None:
            patches = sincos_pos_embed_2d(c.embed_dim, fdim, tdim).to(self.cls_token)[None]
            return torch.cat([patches.new_zeros(1, 2, c.embed_dim), patches], dim=1)
        tokens, patches = self.pos_embed[:, :2], self.pos_embed[:, 2:]
        return torch.cat([tokens, adapt_learned_pos_embed(patches, fdim, base_tdim, tdim)], dim=1)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, T, F)`` -> ``(B, D)``: the tokens after the final LayerNorm, pooled as ``config.pooling``
        says (``"cls"``: mean of the cls and dist tokens; ``"mean"``: mean of the patch tokens).

        Inputs shorter than one patch (16 frames) are zero-padded at the end to 16 frames.
        """
        c = self.config
        if x.dim() != 3 or x.shape[2] != c.input_fdim:
            raise ConfigError(
                f"AST expects features of shape (batch, time, {c.input_fdim}), got {tuple(x.shape)}"
            )
        if x.shape[1] < c.patch_size:
            x = F.pad(x, (0, 0, 0, c.patch_size - x.shape[1]))
        _, tdim = self.patch_grid(x.shape[1])
        tokens = self.forward_tokens(self.patch_embed(x.unsqueeze(1).transpose(2, 3)), tdim)
        if self.config.pooling == "mean":
            return tokens[:, 2:].mean(dim=1)
        return (tokens[:, 0] + tokens[:, 1]) / 2

    def forward_tokens(self, patches: Tensor, tdim: int) -> Tensor:
        """Patch embeddings ``(B, F'·tdim, D)`` (``patch_embed``'s output, possibly with some replaced, as
        masked-patch pretraining does) -> tokens ``(B, 2 + F'·tdim, D)`` after the final LayerNorm."""
        b = patches.shape[0]
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), self.dist_token.expand(b, -1, -1), patches], dim=1)
        tokens = self.pos_drop(tokens + self.position_embeddings(tdim))
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, F)`` normalised features -> ``(B, num_classes)`` logits."""
        return self.mlp_head(self.forward_features(x))


def _make(base: dict[str, Any], overrides: dict[str, Any]) -> AST:
    return AST(ASTConfig.from_dict({**base, **overrides}))


@register_model("ast_base")
def ast_base(**overrides: Any) -> AST:
    """AST-Base (DeiT-B): width 768, 12 blocks, 12 heads — the official AudioSet model (87 M)."""
    return _make(dict(embed_dim=768, depth=12, num_heads=12), overrides)


@register_model("ast_small")
def ast_small(**overrides: Any) -> AST:
    """AST-Small (DeiT-S): width 384, 12 blocks, 6 heads."""
    return _make(dict(embed_dim=384, depth=12, num_heads=6), overrides)


@register_model("ast_tiny")
def ast_tiny(**overrides: Any) -> AST:
    """AST-Tiny (DeiT-Ti): width 192, 12 blocks, 3 heads (5.5 M parameters with 527 classes)."""
    return _make(dict(embed_dim=192, depth=12, num_heads=3), overrides)


@register_model("ssast_tiny")
def ssast_tiny(**overrides: Any) -> AST:
    """SSAST-Tiny: width 192, 12 blocks, 3 heads, mean over the patch tokens (SSAST's ``ft_avgtok``)."""
    return _make(dict(embed_dim=192, depth=12, num_heads=3, pooling="mean"), overrides)


@register_model("ssast_nano")
def ssast_nano(**overrides: Any) -> AST:
    """Our small CPU SSAST (not released): width 96, 6 blocks, 3 heads, mean pooling; 0.696 M encoder
    parameters, within 4 % of ``ssamba_nano`` (0.675 M), its counterpart in CPU experiments."""
    return _make(dict(embed_dim=96, depth=6, num_heads=3, pooling="mean"), overrides)


@register_model("ssast_small")
def ssast_small(**overrides: Any) -> AST:
    """SSAST-Small: width 384, 12 blocks, 6 heads, mean over the patch tokens."""
    return _make(dict(embed_dim=384, depth=12, num_heads=6, pooling="mean"), overrides)


@register_model("ssast_base")
def ssast_base(**overrides: Any) -> AST:
    """SSAST-Base: width 768, 12 blocks, 12 heads, mean over the patch tokens."""
    return _make(dict(embed_dim=768, depth=12, num_heads=12, pooling="mean"), overrides)


# --------------------------------------------------------------------------------------------------
# Official checkpoint layout and Hugging Face transformers models
# --------------------------------------------------------------------------------------------------

_IGNORED_OFFICIAL = ("v.head.", "v.head_dist.")  # timm's unused ImageNet classifier heads


def config_and_state_from_official(state_dict: dict[str, Tensor]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The official AST checkpoint (``module.v.*``, ``module.mlp_head.*``; SPEC §4) -> (config dict,
    state dict for :class:`AST`).

    Inferred from the shapes: width, depth, classes, positional-table size. Heads = width / 64 (all
    DeiT sizes), strides 10/10 and 128 mel bins are assumed (AST's published models); ``input_tdim`` is
    1024 if that gives the stored number of time patches, else the smallest length that does. The
    timm ImageNet heads (``v.head``, ``v.head_dist``) are dropped.
    """
    state: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        name = key[len("module.") :] if key.startswith("module.") else key
        if name.startswith(_IGNORED_OFFICIAL):
            continue
        if name.startswith("v."):
            name = name[2:]
        elif not name.startswith("mlp_head."):
            raise CheckpointError(f"unexpected key {key!r} in an official AST checkpoint")
        state[name] = value
    for required in ("cls_token", "pos_embed", "patch_embed.proj.weight", "mlp_head.1.weight"):
        if required not in state:
            raise CheckpointError(f"official AST checkpoint lacks {required!r} (keys like module.v.{required})")
    embed_dim = state["cls_token"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    patch = state["patch_embed.proj.weight"].shape[-1]
    config = ASTConfig(embed_dim=embed_dim, depth=depth, num_heads=max(1, embed_dim // 64), patch_size=patch)
    fdim = num_patches(config.input_fdim, patch, config.fstride)
    n_patches = state["pos_embed"].shape[1] - 2
    if n_patches % fdim:
        raise CheckpointError(
            f"official AST pos_embed has {n_patches} patches, not a multiple of {fdim} frequency patches "
            "(expected 128 mel bins, stride 10)"
        )
    tdim = n_patches // fdim
    config.input_tdim = 1024 if num_patches(1024, patch, config.tstride) == tdim else (tdim - 1) * config.tstride + patch
    config.num_classes = state["mlp_head.1.weight"].shape[0]
    config.mlp_ratio = state["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim
    return config.to_dict(), state


def _hf_name_map(hf_state: dict[str, Tensor], depth: int) -> dict[str, Tensor]:
    """Rename a transformers AST state dict (v4 ``encoder.layer.i.attention.attention.query`` or
    v5 ``layers.i.attention.q_proj`` names) to ours; q/k/v are fused into ``qkv``."""
    prefix = "audio_spectrogram_transformer."
    s = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in hf_state.items()}
    out = {
        "cls_token": s["embeddings.cls_token"],
        "dist_token": s["embeddings.distillation_token"],
        "pos_embed": s["embeddings.position_embeddings"],
        "patch_embed.proj.weight": s["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": s["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": s["layernorm.weight"],
        "norm.bias": s["layernorm.bias"],
        "mlp_head.0.weight": s["classifier.layernorm.weight"],
        "mlp_head.0.bias": s["classifier.layernorm.bias"],
        "mlp_head.1.weight": s["classifier.dense.weight"],
        "mlp_head.1.bias": s["classifier.dense.bias"],
    }
    v5 = "layers.0.attention.q_proj.weight" in s
    for i in range(depth):
        if v5:
            p = f"layers.{i}."
            q, k, v = (p + f"attention.{n}_proj" for n in "qkv")
            names = {"proj": p + "attention.o_proj", "fc1": p + "mlp.fc1", "fc2": p + "mlp.fc2"}
        else:
            p = f"encoder.layer.{i}."
            q, k, v = (p + f"attention.attention.{n}" for n in ("query", "key", "value"))
            names = {"proj": p + "attention.output.dense", "fc1": p + "intermediate.dense", "fc2": p + "output.dense"}
        b = f"blocks.{i}."
        for part in ("weight", "bias"):
            out[b + f"attn.qkv.{part}"] = torch.cat([s[f"{q}.{part}"], s[f"{k}.{part}"], s[f"{v}.{part}"]], dim=0)
            out[b + f"attn.proj.{part}"] = s[f"{names['proj']}.{part}"]
            out[b + f"mlp.fc1.{part}"] = s[f"{names['fc1']}.{part}"]
            out[b + f"mlp.fc2.{part}"] = s[f"{names['fc2']}.{part}"]
            out[b + f"norm1.{part}"] = s[f"{p}layernorm_before.{part}"]
            out[b + f"norm2.{part}"] = s[f"{p}layernorm_after.{part}"]
    return out


def from_hf_ast(model_or_dir: "str | os.PathLike[str] | nn.Module") -> AST:
    """A transformers ``ASTForAudioClassification`` (instance or saved folder) as our :class:`AST`.

    The weights are copied (same numbers, same logits); labels come from the config's ``id2label``.
    Needs ``transformers`` (``pip install dass[hf]``) only for a folder.
    """
    if isinstance(model_or_dir, nn.Module):
        hf_model = model_or_dir
    else:
        path = os.fspath(model_or_dir)
        if not os.path.isdir(path):
            raise CheckpointError(f"{path}: not a folder with a transformers ASTForAudioClassification")
        try:
            from transformers import ASTForAudioClassification
        except ImportError as e:  # pragma: no cover - transformers is a test dependency
            raise CheckpointError(f"{path}: loading a transformers AST needs `pip install dass[hf]` ({e})") from e
        try:
            hf_model = ASTForAudioClassification.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot load as ASTForAudioClassification: {e}") from e
    hc = hf_model.config
    if getattr(hc, "hidden_act", "gelu") != "gelu" or not getattr(hc, "qkv_bias", True):
        raise CheckpointError(
            f"transformers AST with hidden_act={hc.hidden_act!r}, qkv_bias={hc.qkv_bias} is not supported (need gelu, bias)"
        )
    patch = hc.patch_size if isinstance(hc.patch_size, int) else hc.patch_size[0]
    num_labels = hc.num_labels
    id2label = getattr(hc, "id2label", None) or {}
    labels = [str(id2label[i]) for i in range(num_labels)] if len(id2label) == num_labels else None
    config = ASTConfig(
        embed_dim=hc.hidden_size,
        depth=hc.num_hidden_layers,
        num_heads=hc.num_attention_heads,
        mlp_ratio=hc.intermediate_size / hc.hidden_size,
        patch_size=patch,
        fstride=hc.frequency_stride,
        tstride=hc.time_stride,
        input_fdim=hc.num_mel_bins,
        input_tdim=hc.max_length,
        num_classes=num_labels,
        labels=labels,
        layer_norm_eps=hc.layer_norm_eps,
        head_norm_eps=hc.layer_norm_eps,
    )
    model = AST(config)
    state = _hf_name_map({k: v.detach().clone() for k, v in hf_model.state_dict().items()}, config.depth)
    model.load_state_dict(state, strict=True)
    return model.eval()
