"""Numba kernels of the inference engine (CPU, float32, channels-last tiles).

Layout of one tile of a stage (one batch element): ``(W, H, D)`` C-contiguous, W = time columns,
H = frequency rows, D = channels. Time is the outer axis so a run of columns is one contiguous block
of memory and the channels of a position are contiguous (vectorised inner loops).

The SS2D selective scan with state size N = 1 runs the four cross-scan directions of SPEC §2
directly on this layout (no cross-scan copies). At each position the channels' step (softplus,
decay ``exp(delta * A)``, state update, output) runs in the ``channel_scan_step`` intrinsics of
:mod:`dass.ops._numba_math`: 16 channels per vector, up to eight vectors interleaved, with the
branch-free polynomials of ``exp32`` / ``softplus32`` written in LLVM IR:

- k0: row-major forward   (row h: w = 0 .. W-1; row h+1 continues from row h's end state)
- k1: column-major forward (column w: h = 0 .. H-1; column w+1 continues from column w)
- k2: k0 reversed          (rows H-1 .. 0, each w = W-1 .. 0)
- k3: k1 reversed          (columns W-1 .. 0, each h = H-1 .. 0)

For a tile of a longer map the kernels take the state each row / column segment starts from, and
:func:`scan_transfer` gives the end state from a zero start plus the summed delta of every segment,
so that the start states of all tiles can be chained exactly (the recurrence is linear; see
:func:`chain_row_states`). The float64 / plain-torch reference of all this is the model's own
forward (``dass.models.dass.SS2D`` with ``dass.ops.selective_scan``) and ``selective_scan_ref``;
tests compare them.

The kernels are single-threaded and release the GIL (``nogil``); callers split the work (channels,
columns or rows) between threads (:mod:`dass.inference.threads`).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..ops._numba_math import (SCAN_BLOCK, channel_scan_step_add, channel_scan_step_set, channel_scan_step_total,
                               exp32, prefer_512_bit_vectors, prefetch, softplus32)

__all__ = [
    "dwconv3x3_silu",
    "chain_column_states",
    "chain_row_states",
    "layer_norm_rows",
    "scan_tile",
    "scan_transfer",
]

# Fused multiply-add allowed in the kernels, no other fast-math liberties. The flag must be on the
# outer kernel: numba inlines the helpers at its own IR level, and without it the scan ran 1.5x slower.
_CONTRACT = {"contract"}


# ------------------------------------------------------------------------------------ layer norm


@nb.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def layer_norm_rows(x, weight, bias, eps, out):
    """LayerNorm over the last axis of ``x (rows, C)`` into ``out (rows, C)`` (may be ``x`` itself)."""
    prefer_512_bit_vectors()
    rows, channels = x.shape
    inv_channels = np.float32(1.0) / np.float32(channels)
    for r in range(rows):
        total = np.float32(0.0)
        for c in range(channels):
            total += x[r, c]
        mean = total * inv_channels
        spread = np.float32(0.0)
        for c in range(channels):
            centred = x[r, c] - mean
            spread += centred * centred
        scale = np.float32(1.0) / np.sqrt(spread * inv_channels + eps)
        for c in range(channels):
            out[r, c] = (x[r, c] - mean) * scale * weight[c] + bias[c]


# ------------------------------------------------------------------------- depthwise conv + SiLU


@nb.njit(inline="always", fastmath={"contract"}, error_model="numpy")
def fast_silu(x):
    """``x * sigmoid(x)`` for float32 x."""
    return x / (np.float32(1.0) + exp32(-x))


@nb.njit(cache=True, nogil=True, fastmath=_CONTRACT, error_model="numpy")
def dwconv3x3_silu(v, weight, out, w_lo, w_hi):
    """``out = SiLU(depthwise 3x3 conv of v)`` on channels-last columns ``[w_lo, w_hi)`` of ``out``.

    ``v (n + 2, H, D)``: the input columns with one halo column on each side (zeros at the ends of
    the map); ``weight (3 time offsets, 3 freq offsets, D)``; ``out (n, H, D)``. Frequency is zero
    padded (Conv2d padding 1, no bias).
    """
    prefer_512_bit_vectors()
    height, channels = v.shape[1], v.shape[2]
    for w in range(w_lo, w_hi):
        for h in range(height):
            for c in range(channels):
                out[w, h, c] = 0.0
            for dt in range(3):
                for df in range(3):
                    hh = h + df - 1
                    if hh < 0 or hh >= height:
                        continue
                    for c in range(channels):
                        out[w, h, c] += v[w + dt, hh, c] * weight[dt, df, c]
            for c in range(channels):
                out[w, h, c] = fast_silu(out[w, h, c])


# ------------------------------------------------------------------------------ selective scans


PREFETCH_DISTANCE = 4  # positions ahead whose channels a scan step asks the cache for


@nb.njit(inline="always", error_model="numpy")
def _prefetch_run(values, count):
    """Prefetch the cache lines of ``values[:count]`` (a contiguous float32 run).

    The row-major scan directions step through memory with a stride of a whole frequency column
    (H x D floats), which the hardware prefetchers do not follow.
    """
    address = values.ctypes.data
    for offset in range(0, 4 * count, 64):
        prefetch(_U(address + offset))


# Indices are unsigned (``_U``) inside the kernels: numba then skips its negative-index wraparound,
# which would otherwise stop LLVM from vectorising the channel loops.
_U = nb.uint64


@nb.njit(inline="always", error_model="numpy")
def _scan_segment(dt, dt_bias, a_coef, u, xdbl, rank, direction, h_first, h_step, num_h, w_first, w_step, num_w,
                  column_major, c0, count, state, y, accumulate, skip, total):
    """Run one direction over ``num_h x num_w`` positions of the tile for channels ``[c0, c0 + count)``.

    Rows ``h_first + i * h_step`` and columns ``w_first + j * w_step`` (steps +1 or -1), w the outer
    loop if ``column_major``. ``state (count,)`` is the running state (updated in place). ``y`` gets
    ``C h`` added (``accumulate``) or set to ``skip * u + C h``; if ``total`` is not empty, it
    accumulates the softplus deltas instead and ``y`` is not touched.

    (Positions come from one running counter and two wrapping indices on purpose: with literal
    ``range(n - 1, -1, -1)`` loops LLVM's vectoriser fell back to scalar code for the channel tail,
    and a division per position cost as much as the scan of a few vectors.)
    """
    k = _U(direction)
    want_total = total.shape[0] > 0
    inner_len = num_h if column_major else num_w
    positions = num_h * num_w
    outer, inner = 0, 0  # position j = outer * inner_len + inner
    ahead_outer, ahead_inner = PREFETCH_DISTANCE // inner_len, PREFETCH_DISTANCE % inner_len  # j + distance
    for j in range(positions):
        i_w = outer if column_major else inner
        i_h = inner if column_major else outer
        w = _U(w_first + w_step * i_w)
        h = _U(h_first + h_step * i_h)
        if j + PREFETCH_DISTANCE < positions:
            pw = _U(w_first + w_step * (ahead_outer if column_major else ahead_inner))
            ph = _U(h_first + h_step * (ahead_inner if column_major else ahead_outer))
            _prefetch_run(dt[k, pw, ph, c0:], count)
            _prefetch_run(u[pw, ph, c0:], count)
            if not want_total:
                _prefetch_run(y[pw, ph, c0:], count)
        inner += 1
        if inner == inner_len:
            inner, outer = 0, outer + 1
        ahead_inner += 1
        if ahead_inner == inner_len:
            ahead_inner, ahead_outer = 0, ahead_outer + 1
        b_value = xdbl[w, h, k, _U(rank)]
        c_value = xdbl[w, h, k, _U(rank + 1)]
        if want_total:
            _channels_total(dt, dt_bias, a_coef, u, k, w, h, b_value, c0, count, state, total)
        elif accumulate:
            _channels_add(dt, dt_bias, a_coef, u, k, w, h, b_value, c_value, c0, count, state, y)
        else:
            _channels_set(dt, dt_bias, a_coef, u, k, w, h, b_value, c_value, c0, count, state, y, skip)


@nb.njit(inline="always")
def _check_channel_runs(dt, dt_bias, a_coef, u, skip, y):
    """The channel_scan_step intrinsics read and write runs of channels at raw addresses: every array
    they touch must be C-contiguous (a strided view would be read as if it were not)."""
    if not (dt.flags.c_contiguous and dt_bias.flags.c_contiguous and a_coef.flags.c_contiguous
            and u.flags.c_contiguous and skip.flags.c_contiguous and y.flags.c_contiguous):
        raise ValueError("scan kernels: dt, dt_bias, a_coef, u, skip and y must be C-contiguous arrays")


# One scan step for a run of channels at one position (three variants): whole vectors of 16 channels
# in the channel_scan_step intrinsics (up to eight vectors interleaved: 1.5-2.2x faster than this
# loop alone, whose long softplus/exp chains the CPU could not overlap), the last count % 16 here.


@nb.njit(inline="always", error_model="numpy")
def _channels_set(dt, dt_bias, a_coef, u, k, w, h, b_value, c_value, c0, count, state, y, skip):
    vectors = _U(count) // _U(SCAN_BLOCK)
    channel_scan_step_set(_U(dt[k, w, h, c0:].ctypes.data), _U(dt_bias[k, c0:].ctypes.data),
                          _U(a_coef[k, c0:].ctypes.data), _U(u[w, h, c0:].ctypes.data), _U(skip[c0:].ctypes.data),
                          _U(state.ctypes.data), _U(y[w, h, c0:].ctypes.data), b_value, c_value, vectors)
    for i in range(vectors * _U(SCAN_BLOCK), _U(count)):
        c = _U(c0) + i
        delta = softplus32(dt[k, w, h, c] + dt_bias[k, c])
        s = exp32(delta * a_coef[k, c]) * state[i] + delta * u[w, h, c] * b_value
        state[i] = s
        y[w, h, c] = skip[c] * u[w, h, c] + c_value * s


@nb.njit(inline="always", error_model="numpy")
def _channels_add(dt, dt_bias, a_coef, u, k, w, h, b_value, c_value, c0, count, state, y):
    vectors = _U(count) // _U(SCAN_BLOCK)
    channel_scan_step_add(_U(dt[k, w, h, c0:].ctypes.data), _U(dt_bias[k, c0:].ctypes.data),
                          _U(a_coef[k, c0:].ctypes.data), _U(u[w, h, c0:].ctypes.data), _U(state.ctypes.data),
                          _U(y[w, h, c0:].ctypes.data), b_value, c_value, vectors)
    for i in range(vectors * _U(SCAN_BLOCK), _U(count)):
        c = _U(c0) + i
        delta = softplus32(dt[k, w, h, c] + dt_bias[k, c])
        s = exp32(delta * a_coef[k, c]) * state[i] + delta * u[w, h, c] * b_value
        state[i] = s
        y[w, h, c] += c_value * s


@nb.njit(inline="always", error_model="numpy")
def _channels_total(dt, dt_bias, a_coef, u, k, w, h, b_value, c0, count, state, total):
    vectors = _U(count) // _U(SCAN_BLOCK)
    channel_scan_step_total(_U(dt[k, w, h, c0:].ctypes.data), _U(dt_bias[k, c0:].ctypes.data),
                            _U(a_coef[k, c0:].ctypes.data), _U(u[w, h, c0:].ctypes.data), _U(state.ctypes.data),
                            _U(total.ctypes.data), b_value, vectors)
    for i in range(vectors * _U(SCAN_BLOCK), _U(count)):
        c = _U(c0) + i
        delta = softplus32(dt[k, w, h, c] + dt_bias[k, c])
        state[i] = exp32(delta * a_coef[k, c]) * state[i] + delta * u[w, h, c] * b_value
        total[i] += delta


@nb.njit(cache=True, nogil=True, fastmath=_CONTRACT, error_model="numpy")
def scan_tile(dt, dt_bias, a_coef, u, xdbl, rank, skip, chain_rows,
              init_row_fwd, init_row_bwd, init_col_fwd, init_col_bwd,
              y, end_row_fwd, end_row_bwd, end_col_fwd, end_col_bwd, c_lo, c_hi, channel_block):
    """Four-direction selective scan of one ``(W, H, D)`` tile, merged into ``y``.

    Args:
        dt: ``(4, W, H, D)`` delta of each direction before bias and softplus.
        dt_bias, a_coef: ``(4, D)`` delta bias and ``A = -exp(A_logs)`` (state size N = 1).
        u: ``(W, H, D)`` scan input. xdbl: ``(W, H, 4, rank + 2)``; ``B = xdbl[..., k, rank]``,
            ``C = xdbl[..., k, rank + 1]``.
        skip: ``(D,)`` sum over the directions of ``Ds``.
        chain_rows: the tile is the whole map: row h of k0 starts from row h-1's end state (k2: row
            h+1's); only ``init_row_fwd[0]`` and ``init_row_bwd[H-1]`` are then used.
        init_row_fwd, init_row_bwd: ``(H, D)`` start state of each row segment of k0 / k2.
        init_col_fwd, init_col_bwd: ``(D,)`` start state of k1 / k3 in this tile.
        y: ``(W, H, D)`` output, the sum of the four directions' ``C h + D u``.
        end_*: the state after each segment's last step (same shapes as the init arrays).
        c_lo, c_hi: the channels this call computes (callers split the channels between threads).
        channel_block: channels run together (kept in cache while the positions are visited).
    """
    prefer_512_bit_vectors()
    _check_channel_runs(dt, dt_bias, a_coef, u, skip, y)
    width, height, _ = u.shape
    no_total = np.empty(0, np.float32)
    for c0 in range(c_lo, c_hi, channel_block):
        count = min(channel_block, c_hi - c0)
        state = np.empty(count, np.float32)
        # k0: row-major forward; the first direction sets y (every position once).
        for h in range(height):
            if not chain_rows or h == 0:
                state[:] = init_row_fwd[h, c0:c0 + count]
            _scan_segment(dt, dt_bias, a_coef, u, xdbl, rank, 0, h, 1, 1, 0, 1, width, False,
                          c0, count, state, y, False, skip, no_total)
            end_row_fwd[h, c0:c0 + count] = state
        # k2: row-major backward: rows H-1 .. 0, each from its last column.
        for h in range(height - 1, -1, -1):
            if not chain_rows or h == height - 1:
                state[:] = init_row_bwd[h, c0:c0 + count]
            _scan_segment(dt, dt_bias, a_coef, u, xdbl, rank, 2, h, 1, 1, width - 1, -1, width, False,
                          c0, count, state, y, True, skip, no_total)
            end_row_bwd[h, c0:c0 + count] = state
        # k1: column-major forward.
        state[:] = init_col_fwd[c0:c0 + count]
        _scan_segment(dt, dt_bias, a_coef, u, xdbl, rank, 1, 0, 1, height, 0, 1, width, True,
                      c0, count, state, y, True, skip, no_total)
        end_col_fwd[c0:c0 + count] = state
        # k3: column-major backward.
        state[:] = init_col_bwd[c0:c0 + count]
        _scan_segment(dt, dt_bias, a_coef, u, xdbl, rank, 3, height - 1, -1, height, width - 1, -1, width, True,
                      c0, count, state, y, True, skip, no_total)
        end_col_bwd[c0:c0 + count] = state


@nb.njit(cache=True, nogil=True, fastmath=_CONTRACT, error_model="numpy")
def scan_transfer(dt, dt_bias, a_coef, u, xdbl, rank,
                  end_row_fwd, sum_row_fwd, end_row_bwd, sum_row_bwd, end_col_bwd, sum_col_bwd,
                  c_lo, c_hi, channel_block):
    """What a tile does to the states that cross it, for the directions that need a first pass.

    For every row segment of k0 and k2 and for the tile's whole k3 sequence: the end state reached
    from a zero start (``end_*``) and the sum of softplus(delta) over the segment (``sum_*``), so that
    a start state ``s`` leaves the segment as ``exp(A * sum) * s + end`` (N = 1).
    Shapes: ``end_row_* / sum_row_*`` ``(H, D)``; ``end_col_bwd / sum_col_bwd`` ``(D,)``; the inputs as
    in :func:`scan_tile`. (k1 runs forward in time, so its state is simply carried in the second pass.)
    """
    prefer_512_bit_vectors()
    _check_channel_runs(dt, dt_bias, a_coef, u, a_coef, u)
    width, height, _ = u.shape
    no_y = np.empty((0, 0, 0), np.float32)
    for c0 in range(c_lo, c_hi, channel_block):
        count = min(channel_block, c_hi - c0)
        state = np.empty(count, np.float32)
        total = np.empty(count, np.float32)
        for h in range(height):
            state[:] = 0.0
            total[:] = 0.0
            _scan_segment(dt, dt_bias, a_coef, u, xdbl, rank, 0, h, 1, 1, 0, 1, width, False,
                          c0, count, state, no_y, True, a_coef[0], total)
            end_row_fwd[h, c0:c0 + count] = state
            sum_row_fwd[h, c0:c0 + count] = total
            state[:] = 0.0
            total[:] = 0.0
            _scan_segment(dt, dt_bias, a_coef, u, xdbl, rank, 2, h, 1, 1, width - 1, -1, width, False,
                          c0, count, state, no_y, True, a_coef[0], total)
            end_row_bwd[h, c0:c0 + count] = state
            sum_row_bwd[h, c0:c0 + count] = total
        state[:] = 0.0
        total[:] = 0.0
        _scan_segment(dt, dt_bias, a_coef, u, xdbl, rank, 3, height - 1, -1, height, width - 1, -1, width, True,
                      c0, count, state, no_y, True, a_coef[0], total)
        end_col_bwd[c0:c0 + count] = state
        sum_col_bwd[c0:c0 + count] = total


@nb.njit(cache=True, nogil=True, error_model="numpy")
def chain_row_states(end, total, a_coef, reverse, init):
    """Start state of every row segment of a row-major scan split into tiles.

    ``end, total``: ``(J, H, D)`` per tile j and row h, from :func:`scan_transfer`; ``a_coef (D,)``.
    The sequence visits row 0 (tiles 0 .. J-1), then row 1, ... (``reverse``: row H-1 from tile J-1
    down to 0, then row H-2, ...). Writes ``init (J, H, D)``; the very first segment starts from 0.
    """
    tiles, height, channels = end.shape
    state = np.zeros(channels, np.float32)
    for i in range(height):
        h = height - 1 - i if reverse else i
        for jj in range(tiles):
            j = tiles - 1 - jj if reverse else jj
            for c in range(channels):
                init[j, h, c] = state[c]
                state[c] = np.float32(np.exp(np.float64(a_coef[c]) * total[j, h, c])) * state[c] + end[j, h, c]


@nb.njit(cache=True, nogil=True, error_model="numpy")
def chain_column_states(end, total, a_coef, init):
    """Start state of each tile of the backward column-major scan (k3): tiles J-1 .. 0.

    ``end, total``: ``(J, D)`` from :func:`scan_transfer`; writes ``init (J, D)``.
    """
    tiles, channels = end.shape
    state = np.zeros(channels, np.float32)
    for j in range(tiles - 1, -1, -1):
        for c in range(channels):
            init[j, c] = state[c]
            state[c] = np.float32(np.exp(np.float64(a_coef[c]) * total[j, c])) * state[c] + end[j, c]

