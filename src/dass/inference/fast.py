"""Inference-only DASS forward on the CPU: channels-last tiles, fused kernels, reused buffers.

:class:`FastDASS` reads the parameters of a :class:`dass.models.dass.DASS` (no copies where the
layout already fits) and computes the same function as ``model.forward`` (to float32 rounding), in a
layout made for the CPU:

* every stage's map is stored ``(W, H, C)`` per clip: time outermost, channels innermost. The 1x1
  convolutions are plain GEMMs on ``(W*H, C)`` rows, LayerNorm runs over contiguous channels, and a
  run of time columns (a *tile*) is one contiguous block of memory;
* LayerNorm, the depthwise 3x3 conv + SiLU and the four-direction selective scan (softplus and decay
  computed on the fly, no cross-scan copies) are numba kernels writing into preallocated buffers
  (:mod:`.kernels`); the GEMMs write into buffers too (``out=`` / ``addmm_``), so nothing large is
  allocated per block (:class:`Workspace`);
* the MLP half of a block runs over chunks of rows that stay in the L2 cache;
* the stride-2 convs (stem, downsampling) are im2col + one GEMM (oneDNN's channels-last conv ran at a
  third of the GEMM rate for the stem's 48 -> 96 conv);
* each phase of a block is split between a team of threads (:mod:`.threads`) with torch
  single-threaded, instead of torch's and numba's OpenMP pools fighting over the cores;
* ``precision="bfloat16"`` (opt-in) runs the large GEMMs in bfloat16 (AMX): about 1.4x faster here,
  logits within ~1e-2 relative instead of ~1e-6.

Measured and dropped: torch's softplus/exp over the whole delta tensor (as fast as the fused
polynomials but two extra passes over 4 x C values per position); numba ``prange`` kernels (spin
contention with torch's OpenMP pool: 1-10 s instead of 0.4 s per 10 s clip on 2 cores); weights
pre-packed once for oneDNN's linear (``torch.ops.mkldnn._reorder_linear_weight``, GELU fused into
fc1) instead of MKL re-packing them on every GEMM call: 5-25 % faster GEMMs in isolation at the row
counts of stages 3-4, but within noise (0-3 %) on the whole forward; MKL's own packed GEMM
(``torch.ops.mkl._mkl_linear``) needs one packed copy per row count, each 2-13x the weight's size.

The same per-tile operations serve the untiled forward here (one tile per stage) and the exact
long-input forward of :mod:`.tiled` (many tiles, scan states chained across them).
Numbers: ``benchmarks/inference.py`` and ``results/inference.txt``.
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ..errors import AudioError, ConfigError
from . import kernels
from .threads import Team, engine_threads, split_range

__all__ = ["PRECISIONS", "FastDASS", "Workspace", "downsample_size"]

PRECISIONS = ("float32", "bfloat16")
MLP_CHUNK_ELEMENTS = 1 << 18  # rows per MLP chunk = this / hidden width (hidden chunk ~1 MB)
CONV_CHUNK_COLUMNS = 512  # output columns per im2col GEMM of the stem and downsampling convs


def downsample_size(n: int) -> int:
    """Output length of ``Conv2d(kernel 3, stride 2, padding 1)`` on an axis of length ``n``."""
    return (n - 1) // 2 + 1


class Workspace:
    """Named float32 scratch buffers, grown on demand and reused across tiles, blocks and calls."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, *shape: int) -> torch.Tensor:
        """A contiguous float32 tensor of ``shape`` (uninitialised) backed by buffer ``name``."""
        numel = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < numel:
            del buffer
            self._buffers.pop(name, None)
            buffer = torch.empty(numel, dtype=torch.float32)
            self._buffers[name] = buffer
        return buffer[:numel].view(shape)

    def nbytes(self) -> int:
        """Bytes held by all buffers."""
        return sum(b.numel() * 4 for b in self._buffers.values())

    def clear(self) -> None:
        """Release every buffer."""
        self._buffers.clear()


def _f32(t: torch.Tensor) -> torch.Tensor:
    """A detached contiguous float32 CPU version of a parameter (a view when it already is one)."""
    return t.detach().to(device="cpu", dtype=torch.float32).contiguous()


@dataclass
class _LayerNorm:
    weight: np.ndarray  # (C,)
    bias: np.ndarray
    eps: float

    @classmethod
    def of(cls, module: torch.nn.LayerNorm) -> "_LayerNorm":
        return cls(_f32(module.weight).numpy(), _f32(module.bias).numpy(), float(module.eps))

    def __call__(self, rows: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """LayerNorm over the last axis of ``rows (n, C)`` into ``out`` (may be ``rows``)."""
        kernels.layer_norm_rows(rows.numpy(), self.weight, self.bias, np.float32(self.eps), out.numpy())
        return out


@dataclass
class _Matrix:
    """A weight used as ``rows @ weight.T``; with ``low`` (a bfloat16 copy) the GEMM runs in bfloat16."""

    weight: torch.Tensor  # (out, in) float32
    low: torch.Tensor | None = None  # (in, out) bfloat16, contiguous

    @classmethod
    def of(cls, weight: torch.Tensor, bfloat16: bool) -> "_Matrix":
        weight = _f32(weight)
        return cls(weight, weight.t().contiguous().to(torch.bfloat16) if bfloat16 else None)

    def into(self, rows: torch.Tensor, out: torch.Tensor) -> None:
        """``out = rows @ weight.T`` (float32 ``rows`` and ``out``)."""
        if self.low is None:
            torch.mm(rows, self.weight.t(), out=out)
        else:
            out.copy_(torch.mm(rows.to(torch.bfloat16), self.low))

    def add_into(self, rows: torch.Tensor, out: torch.Tensor) -> None:
        """``out += rows @ weight.T``."""
        if self.low is None:
            out.addmm_(rows, self.weight.t())
        else:
            out.add_(torch.mm(rows.to(torch.bfloat16), self.low))


@dataclass
class _BlockWeights:
    """One VSS block's parameters in the layouts the fast kernels want."""

    dim: int
    inner: int  # d_inner
    rank: int  # dt_rank R
    hidden: int  # MLP width
    norm: _LayerNorm
    in_proj: _Matrix  # (inner, dim)
    conv: np.ndarray  # (3 time offsets, 3 freq offsets, inner)
    x_proj: torch.Tensor  # (4 * (R + 2), inner)
    dt_proj: torch.Tensor  # (4, R, inner)
    dt_bias: np.ndarray  # (4, inner)
    a_coef: np.ndarray  # (4, inner), A = -exp(A_logs)
    skip: np.ndarray  # (inner,), sum of Ds over the directions
    out_norm: _LayerNorm
    out_proj: _Matrix  # (dim, inner)
    norm2: _LayerNorm
    fc1: _Matrix  # (hidden, dim)
    fc1_bias: torch.Tensor
    fc2: _Matrix  # (dim, hidden)
    fc2_bias: torch.Tensor

    def mlp_add(self, normed: torch.Tensor, hidden: torch.Tensor, out: torch.Tensor) -> None:
        """``out += fc2(GELU(fc1(normed)))``; ``hidden`` is float32 scratch ``(rows, hidden)``."""
        if self.fc1.low is None:
            torch.addmm(self.fc1_bias, normed, self.fc1.weight.t(), out=hidden)
            torch._C._nn.gelu_(hidden)
            out.addmm_(hidden, self.fc2.weight.t())
        else:
            low = torch.addmm(self.fc1_bias.to(torch.bfloat16), normed.to(torch.bfloat16), self.fc1.low)
            torch._C._nn.gelu_(low)
            out.add_(torch.mm(low, self.fc2.low))
        out.add_(self.fc2_bias)

    @classmethod
    def of(cls, block, bfloat16: bool = False) -> "_BlockWeights":
        op = block.op
        if op.d_state != 1:
            raise ConfigError(
                f"fast inference supports SSM state size d_state = 1 (every DASS model); got {op.d_state}")
        inner, rank = op.d_inner, op.dt_rank
        conv = _f32(op.conv2d.weight)[:, 0]  # (inner, 3 freq, 3 time)
        return cls(
            dim=op.in_proj.weight.shape[1], inner=inner, rank=rank, hidden=block.mlp.fc1.weight.shape[0],
            norm=_LayerNorm.of(block.norm),
            in_proj=_Matrix.of(op.in_proj.weight, bfloat16),
            conv=conv.permute(2, 1, 0).contiguous().numpy(),
            x_proj=_f32(op.x_proj_weight).reshape(4 * (rank + 2), inner),
            dt_proj=_f32(op.dt_projs_weight).transpose(1, 2),
            dt_bias=_f32(op.dt_projs_bias).numpy(),
            a_coef=(-torch.exp(_f32(op.A_logs))).reshape(4, inner).contiguous().numpy(),
            skip=_f32(op.Ds).reshape(4, inner).sum(0).contiguous().numpy(),
            out_norm=_LayerNorm.of(op.out_norm),
            out_proj=_Matrix.of(op.out_proj.weight, bfloat16),
            norm2=_LayerNorm.of(block.norm2),
            fc1=_Matrix.of(block.mlp.fc1.weight, bfloat16), fc1_bias=_f32(block.mlp.fc1.bias),
            fc2=_Matrix.of(block.mlp.fc2.weight, bfloat16), fc2_bias=_f32(block.mlp.fc2.bias),
        )


@dataclass
class _ConvNorm:
    """A stride-2 3x3 conv (as an im2col GEMM) followed by LayerNorm over its output channels."""

    weight: torch.Tensor  # (9 * in, out): rows ordered (time offset, freq offset, input channel)
    bias: torch.Tensor
    norm: _LayerNorm
    bfloat16: bool = False

    @classmethod
    def of(cls, conv: torch.nn.Conv2d, norm: torch.nn.LayerNorm, bfloat16: bool = False) -> "_ConvNorm":
        weight = _f32(conv.weight)  # (out, in, 3 freq, 3 time)
        matrix = weight.permute(3, 2, 1, 0).reshape(-1, weight.shape[0]).contiguous()
        bias = _f32(conv.bias)
        if bfloat16:
            matrix, bias = matrix.to(torch.bfloat16), bias.to(torch.bfloat16)
        return cls(matrix, bias, _LayerNorm.of(norm), bfloat16)

    def __call__(self, source: torch.Tensor, first: int, count: int, out: torch.Tensor, scratch: Workspace,
                 tag: str) -> torch.Tensor:
        """``count`` output columns of ``LN(conv(source))`` whose input window starts at column ``first``.

        ``source (W, H, C_in)``; output column j reads source columns ``first + 2 j .. first + 2 j + 2``
        (those outside ``[0, W)`` are the zero padding) and rows ``2 i - 1 .. 2 i + 1`` (zero padded).
        Writes and returns ``out (count, H', C_out)``, ``H' = (H - 1) // 2 + 1``. The padded input and
        the im2col matrix live in ``scratch`` buffers named after ``tag`` (one tag per thread):
        fresh multi-MB temporaries on every call cost page faults (single-threaded, the stem took
        25 ms per 10 s clip with them and 11 ms without).
        """
        width, height, channels = source.shape
        num_cols = 2 * count + 1
        padded = scratch.get(tag + "padded", num_cols, height + 2, channels)
        lo, hi = max(first, 0), min(first + num_cols, width)
        padded[:, 0].zero_()
        padded[:, height + 1].zero_()
        padded[:max(lo - first, 0)].zero_()
        padded[max(hi - first, 0):].zero_()
        if hi > lo:
            padded[lo - first:hi - first, 1:height + 1] = source[lo:hi]
        out_height = (height - 1) // 2 + 1
        row = (height + 2) * channels
        patches = padded.as_strided((count, out_height, 3, 3, channels), (2 * row, 2 * channels, row, channels, 1))
        columns = scratch.get(tag + "columns", count, out_height, 3, 3, channels)
        columns.copy_(patches)  # im2col
        columns = columns.view(count * out_height, 9 * channels)
        rows = out.view(count * out_height, -1)
        if self.bfloat16:
            rows.copy_(torch.addmm(self.bias, columns.to(torch.bfloat16), self.weight))
        else:
            torch.addmm(self.bias, columns, self.weight, out=rows)
        self.norm(rows, rows)
        return out


class FastDASS:
    """Inference engine for one :class:`~dass.models.dass.DASS` module (weights read at construction).

    ``FastDASS(model).forward(x)`` equals ``model.eval().forward(x)`` (float32 rounding aside) for
    normalised features ``x (B, T, F)``; ``forward_features`` returns the final map
    ``(B, C, H', W')``. Long inputs: :mod:`dass.inference.tiled` (same operations, tiled).
    Re-create the engine after changing the model's weights. One call at a time per engine (calls
    are serialised by a lock); ``threads`` defaults to ``torch.get_num_threads()`` at call time.
    ``channel_block``: channels one scan pass carries at once (each thread's share is split into
    passes of at most this many). ``precision``: ``"float32"`` (exact) or ``"bfloat16"`` (the large
    GEMMs in bfloat16).
    """

    def __init__(self, model, threads: int | None = None, channel_block: int = 256,
                 precision: str = "float32") -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        low = precision == "bfloat16"
        self.model = model
        self.config = model.config
        self.threads = threads
        self.channel_block = int(channel_block)
        self.precision = precision
        stem = model.patch_embed
        self.stem1 = _ConvNorm.of(stem[0], stem[2])
        self.stem2 = _ConvNorm.of(stem[5], stem[7], low)
        self.blocks: list[list[_BlockWeights]] = []
        self.downsamples: list[_ConvNorm | None] = []
        for stage in model.layers:
            self.blocks.append([_BlockWeights.of(block, low) for block in stage.blocks])
            down = stage.downsample
            is_last = isinstance(down, torch.nn.Identity)
            self.downsamples.append(None if is_last else _ConvNorm.of(down[1], down[3], low))
        self.final_norm = _LayerNorm.of(model.classifier.norm)
        self.workspace = Workspace()
        self.team: Team | None = None  # set while a call runs
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------ geometry

    @staticmethod
    def stage_widths(num_frames: int) -> list[int]:
        """Time columns of the stem output and of each later stage for ``num_frames`` input frames."""
        width = downsample_size(downsample_size(num_frames))
        widths = [width]
        for _ in range(3):
            width = downsample_size(width)
            widths.append(width)
        return widths

    def stage_shapes(self, num_frames: int, num_bins: int) -> list[tuple[int, int, int]]:
        """``(W, H, C)`` of every stage's map for an input of ``num_frames x num_bins``."""
        height = downsample_size(downsample_size(num_bins))
        shapes = []
        for stage, width in enumerate(self.stage_widths(num_frames)):
            shapes.append((width, height, self.config.dims[stage]))
            height = downsample_size(height)
        return shapes

    @contextmanager
    def running(self) -> Iterator[None]:
        """Hold the engine and its thread team for one call (torch single-threaded inside)."""
        with self._lock, engine_threads(self.threads) as team:
            self.team = team
            try:
                yield
            finally:
                self.team = None

    def _parts(self, lo: int, hi: int, align: int = 1) -> list[tuple[int, int]]:
        return split_range(lo, hi, self.team.size if self.team else 1, align)

    def _run(self, fn, parts: list) -> None:
        if self.team is None:
            for part in parts:
                fn(*part)
        else:
            self.team.run(fn, parts)

    # ---------------------------------------------------------------------------- tile operations

    def stem_tile(self, feats: torch.Tensor, start: int, stop: int, out: torch.Tensor, worker: int = 0) -> None:
        """Stage-1 columns ``[start, stop)`` of the stem from features ``feats (T, F)`` into ``out (n, H1, C0)``.

        Single-threaded (``worker`` names its scratch buffers); :meth:`stem_columns` splits a range
        between the team.
        """
        stem1_width = downsample_size(feats.shape[0])
        lo, hi = max(2 * start - 1, 0), min(2 * stop, stem1_width)  # stem-1 columns needed
        height = downsample_size(feats.shape[1])
        hidden = self.workspace.get(f"stem_hidden{worker}", hi - lo, height, self.stem1.norm.weight.shape[0])
        self.stem1(feats.unsqueeze(-1), 2 * lo - 1, hi - lo, hidden, self.workspace, f"stem1_{worker}")
        torch._C._nn.gelu_(hidden)
        # conv 2 reads stem-1 columns from 2 start - 1; those outside [lo, hi) are its zero padding
        self.stem2(hidden, 2 * start - 1 - lo, stop - start, out, self.workspace, f"stem2_{worker}")

    def stem_columns(self, feats: torch.Tensor, out: torch.Tensor, start: int, stop: int) -> None:
        """Stage-1 columns ``[start, stop)`` into ``out (n, H1, C0)`` (the team splits the columns)."""
        def part(worker: int, a: int, b: int) -> None:
            for lo in range(a, b, CONV_CHUNK_COLUMNS):  # bounded scratch (im2col) for long tiles
                hi = min(lo + CONV_CHUNK_COLUMNS, b)
                self.stem_tile(feats, lo, hi, out[lo - start:hi - start], worker)
        self._run(part, [(t, a, b) for t, (a, b) in enumerate(self._parts(start, stop))])

    def downsample_columns(self, stage: int, source: torch.Tensor, out: torch.Tensor, start: int, stop: int) -> None:
        """Columns ``[start, stop)`` of stage ``stage + 1``'s input from stage ``stage``'s map ``source``.

        ``out (n, H', C')`` receives them (the team splits the columns).
        """
        down = self.downsamples[stage]

        def part(worker: int, a: int, b: int) -> None:
            for lo in range(a, b, CONV_CHUNK_COLUMNS):  # bounded scratch (im2col) for long tiles
                hi = min(lo + CONV_CHUNK_COLUMNS, b)
                down(source, 2 * lo - 1, hi - lo, out[lo - start:hi - start], self.workspace, f"down{worker}")
        self._run(part, [(t, a, b) for t, (a, b) in enumerate(self._parts(start, stop))])

    def layer_norm_map(self, norm: _LayerNorm, x: torch.Tensor) -> None:
        """LayerNorm over the channels of a map ``x (W, H, C)``, in place (the team splits the columns)."""
        def part(a: int, b: int) -> None:
            rows = x[a:b].view(-1, x.shape[-1])
            norm(rows, rows)
        self._run(part, self._parts(0, x.shape[0]))

    def block_front(self, blk: _BlockWeights, x: torch.Tensor, start: int, stop: int,
                    left_column: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """First half of SS2D on columns ``[start, stop)`` of the block input ``x (W, H, C)``.

        ``left_column (H, inner)``: ``in_proj(LN(x))`` at column ``start - 1`` (None: zero padding at
        the start of the map); column ``stop`` is read from ``x``. Returns workspace views
        ``u (n, H, inner)``, ``xdbl (n, H, 4, R+2)``, ``dt (4, n, H, inner)`` and ``v_last (H, inner)``,
        ``in_proj(LN(x))`` at column ``stop - 1`` (the next tile's ``left_column``).
        """
        ws = self.workspace
        width, height, _ = x.shape
        n = stop - start
        inner, rank, dim = blk.inner, blk.rank, blk.dim
        read_stop = min(stop + 1, width)
        v = ws.get("v", n + 2, height, inner)  # conv input with one halo column on each side
        normed = ws.get("normed", read_stop - start, height, dim)
        u = ws.get("u", n, height, inner)
        xdbl = ws.get("xdbl", n, height, 4, rank + 2)
        dt = ws.get("dt", 4, n, height, inner)

        def project(a: int, b: int) -> None:  # columns [a, b) of x -> v
            rows = normed[a - start:b - start].view(-1, dim)
            blk.norm(x[a:b].view(-1, dim), rows)
            blk.in_proj.into(rows, v[1 + a - start:1 + b - start].view(-1, inner))

        self._run(project, self._parts(start, read_stop))
        if left_column is None:
            v[0].zero_()
        else:
            v[0].copy_(left_column)
        if read_stop == stop:
            v[n + 1].zero_()
        v_np, u_np = v.numpy(), u.numpy()

        def convolve(a: int, b: int) -> None:  # output columns [a, b) of the tile
            kernels.dwconv3x3_silu(v_np, blk.conv, u_np, a, b)
            torch.mm(u[a:b].view(-1, inner), blk.x_proj.t(), out=xdbl[a:b].view(-1, 4 * (rank + 2)))
            low = xdbl[a:b].view(-1, 4, rank + 2)
            for k in range(4):
                torch.mm(low[:, k, :rank], blk.dt_proj[k], out=dt[k, a:b].view(-1, inner))

        self._run(convolve, self._parts(0, n))
        return u, xdbl, dt, v[n]

    def block_scan(self, blk: _BlockWeights, u: torch.Tensor, xdbl: torch.Tensor, dt: torch.Tensor,
                   y: torch.Tensor, chain_rows: bool, inits: tuple[np.ndarray, ...],
                   ends: tuple[np.ndarray, ...]) -> None:
        """The four-direction scan of a tile into ``y`` (see :func:`kernels.scan_tile`); the team splits channels.

        ``inits`` = (row_fwd (H, D), row_bwd (H, D), col_fwd (D,), col_bwd (D,)); ``ends`` likewise.
        """
        arrays = (dt.numpy(), blk.dt_bias, blk.a_coef, u.numpy(), xdbl.numpy(), blk.rank, blk.skip, chain_rows,
                  *inits, y.numpy(), *ends)

        def part(c_lo: int, c_hi: int) -> None:
            kernels.scan_tile(*arrays, c_lo, c_hi, self.channel_block)

        self._run(part, self._parts(0, blk.inner, align=16))

    def block_transfer(self, blk: _BlockWeights, u: torch.Tensor, xdbl: torch.Tensor, dt: torch.Tensor,
                       outputs: tuple[np.ndarray, ...]) -> None:
        """:func:`kernels.scan_transfer` of a tile (first pass of the tiled forward); the team splits channels."""
        arrays = (dt.numpy(), blk.dt_bias, blk.a_coef, u.numpy(), xdbl.numpy(), blk.rank, *outputs)

        def part(c_lo: int, c_hi: int) -> None:
            kernels.scan_transfer(*arrays, c_lo, c_hi, self.channel_block)

        self._run(part, self._parts(0, blk.inner, align=16))

    def block_back(self, blk: _BlockWeights, x: torch.Tensor, start: int, stop: int, y: torch.Tensor) -> None:
        """Second half of the block on columns ``[start, stop)``: ``x += out_proj(LN(y))``, then the MLP.

        ``y (n, H, inner)`` is the merged scan output (overwritten). Every thread runs over chunks of
        its rows that stay in cache; updates ``x[start:stop]`` in place.
        """
        ws = self.workspace
        rows_x = x[start:stop].view(-1, blk.dim)
        rows_y = y.view(-1, blk.inner)
        chunk = max(16, MLP_CHUNK_ELEMENTS // blk.hidden)
        parts = self._parts(0, rows_x.shape[0])
        scratch = [(ws.get(f"mlp_in{t}", chunk, blk.dim), ws.get(f"mlp_hidden{t}", chunk, blk.hidden))
                   for t in range(len(parts))]

        def part(worker: int, lo: int, hi: int) -> None:
            normed, hidden = scratch[worker]
            for r0 in range(lo, hi, chunk):
                r1 = min(r0 + chunk, hi)
                xc, yc = rows_x[r0:r1], rows_y[r0:r1]
                nc, hc = normed[:r1 - r0], hidden[:r1 - r0]
                blk.out_norm(yc, yc)
                blk.out_proj.add_into(yc, xc)
                blk.norm2(xc, nc)
                blk.mlp_add(nc, hc, xc)

        self._run(part, [(t, lo, hi) for t, (lo, hi) in enumerate(parts)])

    def block_untiled(self, blk: _BlockWeights, x: torch.Tensor) -> None:
        """One VSS block on a whole map ``x (W, H, C)``, in place."""
        width, height, _ = x.shape
        u, xdbl, dt, _ = self.block_front(blk, x, 0, width, None)
        y = self.workspace.get("y", width, height, blk.inner)
        zero_rows = np.zeros((height, blk.inner), np.float32)
        zero_col = np.zeros(blk.inner, np.float32)
        ends = (np.empty((height, blk.inner), np.float32), np.empty((height, blk.inner), np.float32),
                np.empty(blk.inner, np.float32), np.empty(blk.inner, np.float32))
        self.block_scan(blk, u, xdbl, dt, y, True, (zero_rows, zero_rows, zero_col, zero_col), ends)
        self.block_back(blk, x, 0, width, y)

    # ------------------------------------------------------------------------------ whole network

    def check_features(self, x: torch.Tensor) -> torch.Tensor:
        """Validate normalised features ``(B, T, F)``; returns them as a float32 CPU tensor."""
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[1] < 1 or x.shape[2] < 1:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise AudioError(f"DASS expects features of shape (batch, time, freq), got {shape}")
        return x.detach().to(device="cpu", dtype=torch.float32)

    def features_single(self, feats: torch.Tensor) -> torch.Tensor:
        """Final map (after the final LayerNorm) of one clip ``feats (T, F)``: ``(W', H', C)``.

        Call inside :meth:`running`.
        """
        feats = feats.contiguous()
        shapes = self.stage_shapes(*feats.shape)
        x = torch.empty(shapes[0])
        self.stem_columns(feats, x, 0, shapes[0][0])
        for stage, blocks in enumerate(self.blocks):
            for blk in blocks:
                self.block_untiled(blk, x)
            if self.downsamples[stage] is not None:
                nxt = torch.empty(shapes[stage + 1])
                self.downsample_columns(stage, x, nxt, 0, nxt.shape[0])
                x = nxt
        self.layer_norm_map(self.final_norm, x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised features ``(B, T, F)`` -> final map ``(B, C, H', W')`` (as ``DASS.forward_features``)."""
        x = self.check_features(x)
        with self.running():
            maps = [self.features_single(clip) for clip in x]
        return torch.stack([m.permute(2, 1, 0) for m in maps])

    def head(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Final map ``(B, C, H', W')`` -> logits ``(B, classes)`` (CPU) with the model's pooling and head."""
        head = self.model.classifier.head
        with torch.inference_mode():
            pooled = self.model.pool(feature_map).to(device=head.weight.device, dtype=head.weight.dtype)
            return head(pooled).to(device="cpu", dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised features ``(B, T, F)`` -> logits ``(B, num_classes)``."""
        return self.head(self.forward_features(x))

    __call__ = forward
