"""Exact DASS inference on inputs of any length, a tile of time columns at a time.

Every operation of DASS is local in time except the selective scans, and those carry a small
state (N = 1 per channel). So the network runs stage by stage; each stage's full-length map
``(W, H, C)`` is the only large buffer, and every block runs over it tile by tile:

* local ops (LayerNorm, 1x1 convs, MLP) need nothing from the neighbours; the depthwise 3x3 conv
  needs one column on each side (the left one is carried from the previous tile, the right one is
  recomputed from the still unmodified input); the stride-2 convs of the stem and the downsamplers
  read ``2 j - 1 .. 2 j + 1`` of the previous map, which is complete when they run;
* the scans: k1 (column-major, forward in time) simply carries its state from tile to tile. k0
  (row-major) visits row 0 over all tiles, then row 1, ... and k2 / k3 run backwards, so a first
  pass records what each tile does to a state crossing it (end state from zero and summed delta:
  a start state ``s`` leaves as ``exp(A sum) s + end``, the recurrence being linear), a cheap
  sequential step chains these into every segment's exact start state, and the second pass runs
  the full block with those states. The first pass costs about a fifth of a block.

Peak memory: the current and the next stage's map (the stage-1 map of DASS-small holds 3 KB per
input frame: 2.8 GB for 2.5 h), the input features and the per-tile workspace. The results equal
the untiled forward up to float32 rounding (tests check 1e-4 relative).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from . import kernels
from .fast import FastDASS, _BlockWeights

__all__ = ["DEFAULT_TILE_FRAMES", "TiledForward", "stage_tile_columns"]

DEFAULT_TILE_FRAMES = 16384  # ~2.7 min of audio per tile: workspace ~0.45 GB for DASS-small


def stage_tile_columns(tile_frames: int, stage: int) -> int:
    """Columns per tile at ``stage`` (stage 0 has stride 4, each later one doubles it)."""
    return max(1, math.ceil(tile_frames / (4 * 2 ** stage)))


def _tiles(width: int, columns: int) -> list[tuple[int, int]]:
    return [(a, min(a + columns, width)) for a in range(0, width, columns)]


class TiledForward:
    """Run an engine's network over one clip's features tile by tile (see the module docstring).

    ``tile_frames``: input frames per tile (stage s uses ``tile_frames / (4 * 2^s)`` columns);
    ``None`` or a value >= T runs every stage as a single tile (the plain fast forward).
    """

    def __init__(self, engine: FastDASS, tile_frames: int | None = DEFAULT_TILE_FRAMES,
                 progress: bool = False) -> None:
        if tile_frames is not None and (not isinstance(tile_frames, (int, np.integer)) or tile_frames < 1):
            raise ConfigError(f"tile_frames must be a positive number of frames or None, got {tile_frames!r}")
        self.engine = engine
        self.tile_frames = None if tile_frames is None else int(tile_frames)
        self.progress = progress

    def _columns(self, stage: int, width: int) -> int:
        if self.tile_frames is None:
            return width
        return min(width, stage_tile_columns(self.tile_frames, stage))

    def _work_units(self, shapes: list[tuple[int, int, int]]) -> int:
        total = 0
        for stage, (width, _, _) in enumerate(shapes):
            tiles = len(_tiles(width, self._columns(stage, width)))
            total += tiles  # stem or downsample into this stage
            total += sum(1 if tiles == 1 else 2 * tiles for _ in self.engine.blocks[stage])
        return total

    def features(self, feats: torch.Tensor) -> torch.Tensor:
        """Final map (after the final LayerNorm) of one clip ``feats (T, F)``: ``(W', H', C)``."""
        from tqdm.auto import tqdm

        engine = self.engine
        feats = feats.detach().to(torch.float32).contiguous()
        shapes = engine.stage_shapes(*feats.shape)
        with engine.running(), tqdm(total=self._work_units(shapes), disable=not self.progress, file=sys.stderr,
                                    unit="tile", desc="DASS", leave=False) as bar:
            x = torch.empty(shapes[0])
            for a, b in _tiles(shapes[0][0], self._columns(0, shapes[0][0])):
                engine.stem_columns(feats, x[a:b], a, b)
                bar.update(1)
            for stage, blocks in enumerate(engine.blocks):
                columns = self._columns(stage, x.shape[0])
                for blk in blocks:
                    self.block(blk, x, columns, bar)
                if engine.downsamples[stage] is not None:
                    nxt = torch.empty(shapes[stage + 1])
                    for a, b in _tiles(nxt.shape[0], self._columns(stage + 1, nxt.shape[0])):
                        engine.downsample_columns(stage, x, nxt[a:b], a, b)
                        bar.update(1)
                    del x
                    x = nxt
            engine.layer_norm_map(engine.final_norm, x)
        return x

    def block(self, blk: _BlockWeights, x: torch.Tensor, columns: int, bar: Any) -> None:
        """One VSS block over the whole map ``x (W, H, C)``, in place, ``columns`` per tile."""
        engine = self.engine
        width, height, _ = x.shape
        tiles = _tiles(width, columns)
        if len(tiles) == 1:
            engine.block_untiled(blk, x)
            bar.update(1)
            return
        count, inner = len(tiles), blk.inner
        carry = torch.empty(height, inner)  # in_proj(LN(x)) of the column left of the next tile

        # Pass 1: what every tile does to the states of k0, k2 (per row) and k3.
        end_fwd, sum_fwd, end_bwd, sum_bwd = (np.empty((count, height, inner), np.float32) for _ in range(4))
        end_col, sum_col = (np.empty((count, inner), np.float32) for _ in range(2))
        left = None
        for j, (a, b) in enumerate(tiles):
            u, xdbl, dt, v_last = engine.block_front(blk, x, a, b, left)
            engine.block_transfer(blk, u, xdbl, dt, (end_fwd[j], sum_fwd[j], end_bwd[j], sum_bwd[j],
                                                     end_col[j], sum_col[j]))
            carry.copy_(v_last)
            left = carry
            bar.update(1)

        # Chain them into the exact start state of every segment.
        init_fwd, init_bwd = np.empty_like(end_fwd), np.empty_like(end_bwd)
        init_col_bwd = np.empty_like(end_col)
        kernels.chain_row_states(end_fwd, sum_fwd, blk.a_coef[0], False, init_fwd)
        kernels.chain_row_states(end_bwd, sum_bwd, blk.a_coef[2], True, init_bwd)
        kernels.chain_column_states(end_col, sum_col, blk.a_coef[3], init_col_bwd)

        # Pass 2: the full block, tile by tile, k1's state carried forward.
        col_fwd = np.zeros(inner, np.float32)
        ends = (np.empty((height, inner), np.float32), np.empty((height, inner), np.float32),
                np.empty(inner, np.float32), np.empty(inner, np.float32))
        left = None
        for j, (a, b) in enumerate(tiles):
            u, xdbl, dt, v_last = engine.block_front(blk, x, a, b, left)
            y = engine.workspace.get("y", b - a, height, inner)
            engine.block_scan(blk, u, xdbl, dt, y, False, (init_fwd[j], init_bwd[j], col_fwd, init_col_bwd[j]), ends)
            col_fwd = ends[2].copy()
            carry.copy_(v_last)  # before block_back rewrites x[a:b]; v itself is not touched by it
            left = carry
            engine.block_back(blk, x, a, b, y)
            bar.update(1)
