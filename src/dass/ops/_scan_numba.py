"""Numba kernels of the selective scan (CPU, float32, state accumulated in float32).

Layout (all C-contiguous float32): u, delta, y (batch, channels, L); A (channels, N);
B, C (batch, K, N, L); D, delta_bias (channels,); states (batch, channels, N).

Forward: rows (batch, channel) are processed in blocks of ``ROW_BLOCK`` rows (blocks in parallel).
For state size N = 1 (DASS) each row is one pass of :func:`scan_blocks_fused`, written in LLVM IR:
per 16 time steps it loads delta, u, B and C, computes softplus, the decay exp(delta*A) and the
input delta*B*u in vector registers, scans the 16 steps there (a log-step scan) and stores y; eight
such vectors per loop iteration, so that their independent exp/softplus chains overlap. For N > 1
each row runs in chunks of ``TIME_CHUNK`` steps: (1) the step factors with the SIMD exp/softplus
of :mod:`._numba_math`, (2) the recurrence h = a*h + x 16 steps at a time in vector registers
(:func:`scan_blocks`), (3) y = C.h + D*u.

Backward: a first pass over each row keeps its step sizes, their slopes d step / d delta and the
decays ((2 + N) L floats per parallel work item) and the states at every ``BACKWARD_CHUNK``-th step
(for N = 1 one fused IR pass, :func:`scan_blocks_fused_factors`); the second pass walks the chunks
backwards, recomputes each chunk's states from its checkpoint (no division by exp(delta*A), so it
is safe for any L) and runs the reverse recurrence of dLoss/dh in vector registers too
(:func:`scan_blocks_reverse`).

Measured on the 2-core AVX-512 machine of results/scan.txt (L = 8192, K*C = 384, N = 1, kernel
alone): forward 1.3-1.5 ms in quiet minutes, from 1.8-2.0 ms when softplus/exp, the input term and
the scan with y were three loops over buffered chunks (and 2.8 ms when the recurrence was scalar).
The fused loop with one vector per iteration was 6 % slower than the three loops: each vector's
~60 dependent operations filled the CPU's scheduler, so 2, 4, 8 and 16 vectors per iteration were
measured (8 best, 1.4x). Backward 10-11 ms before its first pass was fused too, then 1.1-1.25x
faster. Tried and dropped: software prefetch and non-temporal stores for y (within noise), a
(time, row) layout that vectorises the recurrence across rows (three 16 x 16 transposes per chunk
cost about what they save), masked rotations instead of the zero/one-filling shuffles of the
log-step scan (5 % slower).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._numba_math import (SCAN_BLOCK, exp32, prefer_512_bit_vectors, scan_blocks, scan_blocks_fused,
                          scan_blocks_fused_factors, scan_blocks_fused_linear, scan_blocks_reverse, softplus32)

ROW_BLOCK = 8  # rows per parallel work item
TIME_CHUNK = 512  # time steps per buffered chunk (buffers of N * TIME_CHUNK floats)
BACKWARD_CHUNK = 1024
_FAST = {"contract"}  # allow fused multiply-add; no other fast-math liberties (NaN/inf kept)
_U = nb.uint64  # addresses for the intrinsics


@nb.njit(inline="always", cache=True, fastmath=_FAST)
def _scan_run(decay, hidden, h, count):
    """hidden[:count] <- h_t = decay_t h_{t-1} + hidden_t, starting from h; returns the last state."""
    blocks_end = count - count % SCAN_BLOCK
    h = scan_blocks(_U(decay.ctypes.data), _U(hidden.ctypes.data), h, blocks_end // SCAN_BLOCK)
    for t in range(blocks_end, count):
        h = decay[t] * h + hidden[t]
        hidden[t] = h
    return h


@nb.njit(inline="always", cache=True, fastmath=_FAST)
def _scan_run_reverse(decay, values, h, count):
    """values[t] <- g_t = decay_t g_{t+1} + values_t for t = count - 1 down to 0, g_count = h; returns g_0."""
    blocks_end = count - count % SCAN_BLOCK
    for t in range(count - 1, blocks_end - 1, -1):  # the tail first: it holds the latest steps
        h = decay[t] * h + values[t]
        values[t] = h
    return scan_blocks_reverse(_U(decay.ctypes.data), _U(values.ctypes.data), h, blocks_end // SCAN_BLOCK)


@nb.njit(inline="always", cache=True, fastmath=_FAST)
def _scan_row_fused(delta_row, u_row, B_row, C_row, y_row, bias, a, skip, h, delta_softplus):
    """State size 1, one whole row (1-D arrays of one length L): y_row[t] = C_row[t] h_t + skip u_row[t],
    h_t = exp(step_t a) h_{t-1} + step_t u_row[t] B_row[t], step_t = softplus(delta_row[t] + bias) (or
    without softplus), from h_{-1} = h. Returns h_{L-1}. 16-step vectors in :func:`scan_blocks_fused`,
    the last L % 16 steps here."""
    length = delta_row.shape[0]
    blocks = length // SCAN_BLOCK
    addresses = (_U(delta_row.ctypes.data), _U(u_row.ctypes.data), _U(B_row.ctypes.data),
                 _U(C_row.ctypes.data), _U(y_row.ctypes.data))
    if delta_softplus:
        h = scan_blocks_fused(*addresses, bias, a, skip, h, blocks)
    else:
        h = scan_blocks_fused_linear(*addresses, bias, a, skip, h, blocks)
    for t in range(blocks * SCAN_BLOCK, length):
        step = delta_row[t] + bias
        if delta_softplus:
            step = softplus32(step)
        h = exp32(step * a) * h + step * u_row[t] * B_row[t]
        y_row[t] = C_row[t] * h + skip * u_row[t]
    return h


@nb.njit(parallel=True, cache=True, fastmath=_FAST)
def scan_forward(u, delta, A, B, C, D, delta_bias, delta_softplus, h0, y, h_last):
    """Write y (batch, channels, L) and h_last (batch, channels, N)."""
    if not (u.flags.c_contiguous and delta.flags.c_contiguous and B.flags.c_contiguous and C.flags.c_contiguous
            and y.flags.c_contiguous):  # the fused row scan reads and writes them at raw addresses
        raise ValueError("scan_forward: u, delta, B, C and y must be C-contiguous arrays")
    batch, channels, length = u.shape
    groups = B.shape[1]
    state = A.shape[1]
    per_group = channels // groups
    rows = batch * channels
    for block in nb.prange((rows + ROW_BLOCK - 1) // ROW_BLOCK):
        prefer_512_bit_vectors()
        buffered = TIME_CHUNK if state > 1 else 0  # N = 1 runs unbuffered (_scan_row_fused)
        decay = np.empty((state, buffered), np.float32)  # exp(delta_t * A_n)
        hidden = np.empty((state, buffered), np.float32)  # delta_t * B_tn * u_t, then h_tn
        step = np.empty(buffered, np.float32)  # delta_t after bias and softplus
        for row in range(block * ROW_BLOCK, min(rows, (block + 1) * ROW_BLOCK)):
            b, c = row // channels, row % channels
            k = c // per_group
            bias, skip = delta_bias[c], D[c]
            if state == 1:  # DASS: one fused pass per row, nothing buffered
                h_last[b, c, 0] = _scan_row_fused(delta[b, c], u[b, c], B[b, k, 0], C[b, k, 0], y[b, c], bias,
                                                  A[c, 0], skip, h0[b, c, 0], delta_softplus)
                continue
            for n in range(state):
                h_last[b, c, n] = h0[b, c, n]  # the running state of (row, n)
            for t0 in range(0, length, TIME_CHUNK):
                nt = min(TIME_CHUNK, length - t0)
                delta_row = delta[b, c, t0:t0 + nt]
                u_row = u[b, c, t0:t0 + nt]
                y_row = y[b, c, t0:t0 + nt]
                # (1) step factors, vectorised over time.
                if delta_softplus:
                    for t in range(nt):
                        step[t] = softplus32(delta_row[t] + bias)
                else:
                    for t in range(nt):
                        step[t] = delta_row[t] + bias
                for n in range(state):
                    a = A[c, n]
                    B_row = B[b, k, n, t0:t0 + nt]
                    decay_n = decay[n]
                    hidden_n = hidden[n]
                    for t in range(nt):
                        decay_n[t] = exp32(step[t] * a)
                        hidden_n[t] = step[t] * u_row[t] * B_row[t]
                # (2) h_t = a_t h_{t-1} + x_t and (3) y_t = C_t . h_t + D u_t.
                for t in range(nt):
                    y_row[t] = skip * u_row[t]
                for n in range(state):
                    h_last[b, c, n] = _scan_run(decay[n], hidden[n], h_last[b, c, n], nt)
                    C_row = C[b, k, n, t0:t0 + nt]
                    hidden_n = hidden[n]
                    for t in range(nt):
                        y_row[t] += hidden_n[t] * C_row[t]


@nb.njit(cache=True, fastmath={"reassoc", "contract"})
def _sum64(values, count):
    """sum(values[:count]) accumulated in float64 (reassociation allowed so that it vectorises)."""
    total = 0.0
    for t in range(count):
        total += np.float64(values[t])
    return total


@nb.njit(inline="always", cache=True, fastmath=_FAST)
def _chunk_factors(delta_row, A_row, bias, delta_softplus, nt, step, decay, start):
    """Step sizes and decays of one chunk of one row: step[:nt] = delta_t (after bias and softplus),
    decay[n, start:start + nt] = exp(delta_t * A_n). delta_row, step (nt,); A_row (N,); decay (N, L)."""
    if delta_softplus:
        for t in range(nt):
            step[t] = softplus32(delta_row[t] + bias)
    else:
        for t in range(nt):
            step[t] = delta_row[t] + bias
    for n in range(A_row.shape[0]):
        a = A_row[n]
        decay_n = decay[n, start:start + nt]
        for t in range(nt):
            decay_n[t] = exp32(step[t] * a)


@nb.njit(inline="always", cache=True, fastmath=_FAST)
def _chunk_states(u_row, B_group, start, nt, step, decay, states):
    """States of one chunk of one row from its step sizes and decays: states[n, 1:nt+1] = h_t.

    u_row, step (nt,); B_group and decay (N, L), the chunk at [:, start:start + nt] (passed whole: a
    2-D slice would have unknown strides and its loops would not vectorise); states[n, 0] must hold
    the state before the chunk.
    """
    for n in range(B_group.shape[0]):
        states_n = states[n]
        B_row = B_group[n, start:start + nt]
        for t in range(nt):
            states_n[t + 1] = step[t] * u_row[t] * B_row[t]  # input term, overwritten by the scan
        _scan_run(decay[n, start:start + nt], states_n[1:], states_n[0], nt)


@nb.njit(inline="always", cache=True, fastmath=_FAST)
def _chunk_slopes(delta_row, bias, delta_softplus, nt, slope):
    """slope[:nt] = d step / d (delta + bias): sigmoid(delta_t + bias), or 1 without softplus."""
    if delta_softplus:
        for t in range(nt):
            slope[t] = np.float32(1.0) / (np.float32(1.0) + exp32(-(delta_row[t] + bias)))
    else:
        for t in range(nt):
            slope[t] = np.float32(1.0)


@nb.njit(inline="always", cache=True, fastmath=_FAST)
def _chunk_factors_fused(delta_row, u_row, B_row, step, decay, slope, bias, a, delta_softplus, h):
    """State size 1, one chunk (1-D arrays of its length): step sizes, decays and slopes as
    :func:`_chunk_factors` and :func:`_chunk_slopes`, and the state after the chunk from h (returned).
    16-step vectors in :func:`scan_blocks_fused_factors`, the rest here."""
    nt = delta_row.shape[0]
    blocks = nt // SCAN_BLOCK
    h = scan_blocks_fused_factors(_U(delta_row.ctypes.data), _U(u_row.ctypes.data), _U(B_row.ctypes.data),
                                  _U(step.ctypes.data), _U(decay.ctypes.data), _U(slope.ctypes.data), bias, a,
                                  delta_softplus, h, blocks)
    for t in range(blocks * SCAN_BLOCK, nt):
        z = delta_row[t] + bias
        if delta_softplus:
            step[t] = softplus32(z)
            slope[t] = np.float32(1.0) / (np.float32(1.0) + exp32(-z))
        else:
            step[t] = z
            slope[t] = np.float32(1.0)
        decay[t] = exp32(step[t] * a)
        h = decay[t] * h + step[t] * u_row[t] * B_row[t]
    return h


@nb.njit(parallel=True, cache=True, fastmath=_FAST)
def scan_backward(
    u, delta, A, B, C, D, delta_bias, delta_softplus, h0, grad_y, grad_h_last,
    grad_u, grad_delta, grad_B, grad_C, grad_h0, grad_A_part, grad_D_part, grad_bias_part,
):
    """Gradients of the scan given grad_y (batch, channels, L) and grad_h_last (batch, channels, N).

    Writes grad_u, grad_delta (batch, channels, L), grad_h0 (batch, channels, N), and partial sums
    that the caller adds up: grad_B, grad_C (batch, K, S, N, L; zeroed by the caller), one slice per
    split s of the group's channels, and grad_A_part (batch, channels, N), grad_D_part,
    grad_bias_part (batch, channels) in float64. Parallel over (batch, group, split), so no two
    work items write the same element.

    With g_t = dLoss/dh_t (through y_t and h_{t+1}):  g_t = grad_y_t C_t + exp(delta_{t+1} A) g_{t+1},
    grad_u_t = D grad_y_t + sum_n g_tn delta_t B_tn,  grad_C_tn += grad_y_t h_tn,
    grad_B_tn += g_tn delta_t u_t,  dLoss/ddelta_t = sum_n g_tn (B_tn u_t + A_n exp(delta_t A_n) h_{t-1,n}),
    grad_A_n += sum_t g_tn delta_t exp(delta_t A_n) h_{t-1,n}.
    """
    batch, channels, length = u.shape
    groups = B.shape[1]
    state = A.shape[1]
    per_group = channels // groups
    chunk = BACKWARD_CHUNK
    n_chunks = (length + chunk - 1) // chunk
    splits = grad_B.shape[2]
    for unit in nb.prange(batch * groups * splits):
        prefer_512_bit_vectors()
        b = unit // (groups * splits)
        k = (unit // splits) % groups
        split = unit % splits
        checkpoints = np.empty((max(n_chunks, 1), state), np.float32)
        row_step = np.empty(length, np.float32)  # the row's step sizes, slopes and decays, kept from pass 1
        row_slope = np.empty(length, np.float32)  # d step / d (delta + bias): sigmoid, or 1
        row_decay = np.empty((state, length), np.float32)
        decay = np.empty((state, chunk + 1), np.float32)  # a chunk's decays and one spare step
        states = np.empty((state, chunk + 1), np.float32)  # [n, 0]: before the chunk; [n, t+1]: h_t
        grad_states = np.empty((state, chunk), np.float32)
        scratch = np.empty(chunk, np.float32)
        carry = np.empty(state, np.float32)  # dLoss/dh through the recurrence
        first = k * per_group + (split * per_group) // splits
        for c in range(first, k * per_group + ((split + 1) * per_group) // splits):
            bias = delta_bias[c]
            skip = D[c]
            A_row = A[c]
            # Pass 1: the state at the start of every chunk.
            for n in range(state):
                states[n, 0] = h0[b, c, n]
            for j in range(n_chunks):
                start = j * chunk
                nt = min(chunk, length - start)
                for n in range(state):
                    checkpoints[j, n] = states[n, 0]
                if state == 1:  # one fused pass: step sizes, slopes, decays and the chunk's last state
                    states[0, 0] = _chunk_factors_fused(delta[b, c, start:start + nt], u[b, c, start:start + nt],
                                                        B[b, k, 0, start:start + nt], row_step[start:start + nt],
                                                        row_decay[0, start:start + nt],
                                                        row_slope[start:start + nt], bias, A_row[0],
                                                        delta_softplus, states[0, 0])
                    continue
                step = row_step[start:start + nt]
                _chunk_factors(delta[b, c, start:start + nt], A_row, bias, delta_softplus, nt, step,
                               row_decay, start)
                _chunk_slopes(delta[b, c, start:start + nt], bias, delta_softplus, nt, row_slope[start:start + nt])
                _chunk_states(u[b, c, start:start + nt], B[b, k], start, nt, step, row_decay, states)
                for n in range(state):
                    states[n, 0] = states[n, nt]
            # Pass 2: chunks in reverse; recompute the chunk's states (from the kept step sizes and
            # decays), then walk back.
            for n in range(state):
                carry[n] = grad_h_last[b, c, n]
                grad_A_part[b, c, n] = 0.0
            grad_D_acc = 0.0
            grad_bias_acc = 0.0
            for j in range(n_chunks - 1, -1, -1):
                start = j * chunk
                stop = start + min(chunk, length - start)
                nt = stop - start
                for n in range(state):
                    states[n, 0] = checkpoints[j, n]
                u_row = u[b, c, start:stop]
                delta_row = delta[b, c, start:stop]
                gy_row = grad_y[b, c, start:stop]
                step = row_step[start:stop]
                _chunk_states(u_row, B[b, k], start, nt, step, row_decay, states)
                for n in range(state):
                    decay_n = decay[n]
                    row_decay_n = row_decay[n, start:stop]
                    for t in range(nt):
                        decay_n[t] = row_decay_n[t]
                slope = row_slope[start:stop]
                for n in range(state):  # the backward recurrence g_t = grad_y_t C_t + decay_{t+1} g_{t+1}
                    C_n = C[b, k, n, start:stop]
                    g_n = grad_states[n]
                    for t in range(nt):
                        g_n[t] = gy_row[t] * C_n[t]
                    decay[n, nt] = np.float32(1.0)  # carry[n] already holds decay_{stop} g_{stop}
                    carry[n] = decay[n, 0] * _scan_run_reverse(decay[n, 1:], g_n, carry[n], nt)
                gu_row = grad_u[b, c, start:stop]
                gd_row = grad_delta[b, c, start:stop]
                for t in range(nt):
                    gu_row[t] = gy_row[t] * skip
                    gd_row[t] = np.float32(0.0)
                for n in range(state):  # everything else is elementwise: vectorised over time
                    a_n = A_row[n]
                    B_n = B[b, k, n, start:stop]
                    C_n_grad = grad_C[b, k, split, n, start:stop]
                    B_n_grad = grad_B[b, k, split, n, start:stop]
                    g_n = grad_states[n]
                    h_n = states[n]
                    decay_n = decay[n]
                    for t in range(nt):
                        g = g_n[t]
                        d = step[t]
                        C_n_grad[t] += gy_row[t] * h_n[t + 1]
                        B_n_grad[t] += g * d * u_row[t]
                        gu_row[t] += g * d * B_n[t]
                        g_decay = g * h_n[t] * decay_n[t]  # dLoss/d(delta_t A_n)
                        gd_row[t] += g * B_n[t] * u_row[t] + g_decay * a_n
                        scratch[t] = g_decay * d
                    grad_A_part[b, c, n] += _sum64(scratch, nt)
                for t in range(nt):
                    gd_row[t] *= slope[t]
                    scratch[t] = gy_row[t] * u_row[t]
                grad_D_acc += _sum64(scratch, nt)
                grad_bias_acc += _sum64(gd_row, nt)
            for n in range(state):
                grad_h0[b, c, n] = carry[n]
            grad_D_part[b, c] = grad_D_acc
            grad_bias_part[b, c] = grad_bias_acc
