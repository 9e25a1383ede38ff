"""The fast selective scans (numba CPU kernel, chunked torch scan) against the float64 reference."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from dass.ops import selective_scan, selective_scan_ref
from dass.ops import _scan_numba
from dass.ops._numba_math import USE_LDEXP, softplus_exp_arrays, softplus_exp_vector_arrays
from dass.ops.selective_scan import selective_scan_torch

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "delta_bias")


def make_inputs(
    batch: int, groups: int, per_group: int, state: int, length: int, seed: int,
    with_D: bool = True, with_bias: bool = True, positive_delta: bool = False,
) -> dict[str, torch.Tensor | None]:
    """Random float32 scan inputs of the VMamba convention (requires_grad set)."""
    gen = torch.Generator().manual_seed(seed)
    channels = groups * per_group
    delta = torch.randn(batch, channels, length, generator=gen) - 1.0
    if positive_delta:
        delta = torch.rand(batch, channels, length, generator=gen) * 0.5
    inputs = {
        "u": torch.randn(batch, channels, length, generator=gen),
        "delta": delta,
        "A": -(torch.rand(channels, state, generator=gen) * 1.5 + 0.1),
        "B": torch.randn(batch, groups, state, length, generator=gen),
        "C": torch.randn(batch, groups, state, length, generator=gen),
        "D": torch.randn(channels, generator=gen) if with_D else None,
        "delta_bias": (torch.randn(channels, generator=gen) * 0.5).abs() if with_bias else None,
    }
    for tensor in inputs.values():
        if tensor is not None:
            tensor.requires_grad_(True)
    return inputs


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (max-norm relative error)."""
    expected = expected.double()
    scale = expected.abs().max().clamp_min(1e-30)
    return ((actual.double() - expected).abs().max() / scale).item()


def run_with_grads(scan, inputs, delta_softplus: bool, seed: int = 99):
    """y and the gradients of sum(y * g) for a fixed random g w.r.t. every input present."""
    y = scan(**inputs, delta_softplus=delta_softplus)
    weight = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
    names = [name for name in GRAD_NAMES if inputs[name] is not None]
    grads = torch.autograd.grad((y * weight).sum(), [inputs[name] for name in names])
    return y, dict(zip(names, grads))


def assert_matches_reference(scan, inputs, delta_softplus: bool) -> None:
    y_fast, grads_fast = run_with_grads(scan, inputs, delta_softplus)
    y_ref, grads_ref = run_with_grads(selective_scan_ref, inputs, delta_softplus)
    assert y_fast.dtype == torch.float32 and y_fast.shape == y_ref.shape
    assert relative_error(y_fast, y_ref) <= 1e-5
    assert grads_fast.keys() == grads_ref.keys()
    for name in grads_ref:
        assert grads_fast[name].shape == inputs[name].shape, name
        assert relative_error(grads_fast[name], grads_ref[name]) <= 1e-4, name


@pytest.mark.parametrize("length", [1, 7, 1000, 8193])
@pytest.mark.parametrize("state", [1, 4])
def test_numba_scan_matches_reference(length: int, state: int) -> None:
    inputs = make_inputs(batch=2, groups=4, per_group=3, state=state, length=length, seed=length + state)
    assert_matches_reference(selective_scan, inputs, delta_softplus=True)


@pytest.mark.parametrize("with_D, with_bias, softplus", [
    (False, False, True), (True, False, True), (False, True, True), (True, True, False),
])
def test_numba_scan_options(with_D: bool, with_bias: bool, softplus: bool) -> None:
    inputs = make_inputs(2, 4, 5, 2, 1000, seed=7, with_D=with_D, with_bias=with_bias,
                         positive_delta=not softplus)
    assert_matches_reference(selective_scan, inputs, delta_softplus=softplus)


@pytest.mark.parametrize("length, state", [(1, 1), (7, 4), (70, 1), (1000, 2)])
def test_torch_chunked_scan_matches_reference(length: int, state: int) -> None:
    inputs = make_inputs(2, 4, 3, state, length, seed=3 * length + state)
    assert_matches_reference(
        lambda **kw: selective_scan_torch(**kw)[0], inputs, delta_softplus=True
    )


@pytest.mark.parametrize("scan_with_state", [
    lambda **kw: selective_scan(**kw, return_last_state=True),  # numba kernel
    selective_scan_torch,  # chunked torch scan, returns (y, last_state)
])
def test_state_round_trip(scan_with_state) -> None:
    """Scanning [x1, x2] equals scanning x2 started from the last state of x1."""
    inputs = {k: v.detach() for k, v in make_inputs(2, 4, 3, 4, 300, seed=11).items()}
    first = {k: (v[..., :123] if k in ("u", "delta", "B", "C") else v) for k, v in inputs.items()}
    second = {k: (v[..., 123:] if k in ("u", "delta", "B", "C") else v) for k, v in inputs.items()}
    y_full, h_full = scan_with_state(**inputs)
    y1, h1 = scan_with_state(**first)
    y2, h2 = scan_with_state(**second, initial_state=h1)
    assert relative_error(torch.cat([y1, y2], dim=-1), y_full) <= 1e-6
    assert relative_error(h2, h_full) <= 1e-6


def test_initial_and_last_state_gradients_match_reference() -> None:
    inputs = make_inputs(2, 4, 3, 2, 2500, seed=5)  # 2500 > one backward chunk of 1024
    h0 = torch.randn(2, 12, 2, generator=torch.Generator().manual_seed(1), requires_grad=True)
    leaves = [v for v in inputs.values()] + [h0]

    def grads(scan):
        y, h_last = scan(**inputs, initial_state=h0, return_last_state=True)
        gen = torch.Generator().manual_seed(2)
        loss = (y * torch.randn(y.shape, generator=gen)).sum() + (h_last * torch.randn(h_last.shape, generator=gen)).sum()
        return (y, h_last), torch.autograd.grad(loss, leaves)

    (y_fast, h_fast), g_fast = grads(selective_scan)
    (y_ref, h_ref), g_ref = grads(selective_scan_ref)
    assert relative_error(y_fast, y_ref) <= 1e-5
    assert relative_error(h_fast, h_ref) <= 1e-5
    for name, fast, ref in zip(list(inputs) + ["initial_state"], g_fast, g_ref):
        assert relative_error(fast, ref) <= 1e-4, name


def test_million_steps_stay_finite() -> None:
    """L = 10^6 with realistic step sizes (softplus(N(0,1) - 4)) and A = -1: no overflow/NaN."""
    gen = torch.Generator().manual_seed(0)
    length, channels = 1_000_000, 4
    u = torch.randn(1, channels, length, generator=gen)
    delta = torch.randn(1, channels, length, generator=gen) - 4.0
    A = -torch.ones(channels, 1)
    B = torch.randn(1, 4, 1, length, generator=gen)
    C = torch.randn(1, 4, 1, length, generator=gen)
    D = torch.ones(channels)
    with torch.inference_mode():
        y, h_last = selective_scan(u, delta, A, B, C, D, delta_softplus=True, return_last_state=True)
    assert y.shape == (1, channels, length)
    assert torch.isfinite(y).all() and torch.isfinite(h_last).all()
    # The state forgets (|exp(delta*A)| < 1), so it stays the size of a few inputs.
    assert (y - u).abs().max().item() < 50.0
    # The last steps agree with the float64 reference restarted from the fast state 200 steps earlier.
    _, h_mid = selective_scan(u[..., :-200], delta[..., :-200], A, B[..., :-200], C[..., :-200],
                              D, return_last_state=True)
    tail = selective_scan_ref(u[..., -200:], delta[..., -200:], A, B[..., -200:], C[..., -200:], D,
                              initial_state=h_mid)
    assert relative_error(y[..., -200:], tail) <= 1e-5


def test_million_steps_backward_is_finite() -> None:
    gen = torch.Generator().manual_seed(1)
    length = 1_000_000
    u = torch.randn(1, 4, length, generator=gen, requires_grad=True)
    delta = (torch.randn(1, 4, length, generator=gen) - 4.0).requires_grad_()
    A = (-torch.ones(4, 1)).requires_grad_()
    B = torch.randn(1, 4, 1, length, generator=gen, requires_grad=True)
    C = torch.randn(1, 4, 1, length, generator=gen, requires_grad=True)
    y = selective_scan(u, delta, A, B, C)
    grads = torch.autograd.grad(y.sum(), [u, delta, A, B, C])
    assert all(torch.isfinite(g).all() for g in grads)


def test_inference_keeps_dtype_and_saves_nothing() -> None:
    inputs = make_inputs(1, 4, 2, 1, 50, seed=2)
    with torch.no_grad():
        y = selective_scan(**inputs)
    assert y.grad_fn is None and y.dtype == torch.float32
    with torch.inference_mode():
        y_inf = selective_scan(**inputs)
    assert torch.equal(y, y_inf)
    doubles = {k: v.detach().double() for k, v in inputs.items()}
    y64 = selective_scan(**doubles)
    assert y64.dtype == torch.float64
    assert relative_error(y64, selective_scan_ref(**doubles)) <= 1e-5
    y_grad = selective_scan(**inputs)
    assert y_grad.grad_fn is not None


def test_empty_sequence() -> None:
    inputs = make_inputs(2, 4, 3, 1, 0, seed=0)
    y, h = selective_scan(**inputs, return_last_state=True)
    assert y.shape == (2, 12, 0) and torch.equal(h, torch.zeros(2, 12, 1))


@pytest.mark.parametrize("change, message", [
    (lambda kw: kw.update(u=kw["u"][0]), r"u must be \(batch, K\*C, L\), got shape \(12, 9\)"),
    (lambda kw: kw.update(delta=kw["delta"][..., :5]), r"delta must have the shape of u \(2, 12, 9\), got \(2, 12, 5\)"),
    (lambda kw: kw.update(A=kw["A"][:5]), r"A must be \(12, N\), got shape \(5, 1\)"),
    (lambda kw: kw.update(B=kw["B"][..., :4]), r"B must be \(2, K, 1, 9\), got shape \(2, 4, 1, 4\)"),
    (lambda kw: kw.update(B=kw["B"][:, :1].expand(2, 5, 1, 9), C=kw["C"][:, :1].expand(2, 5, 1, 9)),
     r"the K=5 groups of B must divide the 12 channels of u"),
    (lambda kw: kw.update(C=kw["C"][:, :2]), r"C must have the shape of B \(2, 4, 1, 9\), got \(2, 2, 1, 9\)"),
    (lambda kw: kw.update(D=kw["D"][:3]), r"D must be \(12,\), got shape \(3,\)"),
    (lambda kw: kw.update(initial_state=torch.zeros(2, 12, 3)), r"initial_state must be \(2, 12, 1\), got shape \(2, 12, 3\)"),
    (lambda kw: kw.update(D=torch.ones(12, device="meta")), r"D is on meta but u is on cpu"),
])
@pytest.mark.parametrize("scan", [selective_scan, selective_scan_ref])
def test_bad_shapes_raise_readable_errors(scan, change, message) -> None:
    inputs = {k: v.detach() if v is not None else None for k, v in make_inputs(2, 4, 3, 1, 9, seed=0).items()}
    change(inputs)
    with pytest.raises(ValueError, match="selective_scan: " + message):
        scan(**inputs)


def test_concurrent_calls_from_python_threads() -> None:
    """Two Python threads may scan at once (numba's workqueue layer alone would abort)."""
    from concurrent.futures import ThreadPoolExecutor

    inputs = {k: v.detach() for k, v in make_inputs(2, 4, 8, 1, 2000, seed=4).items()}
    expected = selective_scan(**inputs)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: selective_scan(**inputs), range(8)))
    for result in results:
        assert torch.equal(result, expected)


def test_falls_back_to_torch_scan_without_numba(monkeypatch) -> None:
    import importlib

    # (the package attribute dass.ops.selective_scan is the function; fetch the module itself)
    scan_module = importlib.import_module("dass.ops.selective_scan")

    inputs = make_inputs(2, 4, 3, 2, 100, seed=8)
    y_numba, grads_numba = run_with_grads(selective_scan, inputs, delta_softplus=True)
    monkeypatch.setattr(scan_module, "_scan_numba", None)
    y_torch, grads_torch = run_with_grads(selective_scan, inputs, delta_softplus=True)
    assert y_torch.grad_fn is not None and "Numba" not in type(y_torch.grad_fn).__name__
    assert relative_error(y_torch, y_numba) <= 1e-5
    for name in grads_numba:
        assert relative_error(grads_torch[name], grads_numba[name]) <= 1e-4, name


def test_vectorised_exp_and_softplus_match_float64() -> None:
    """The kernels' polynomial exp (both variants) and softplus against float64 numpy."""
    z = np.concatenate([np.linspace(-120, 100, 220_003), np.random.default_rng(0).standard_normal(1001) * 4,
                        [0.0, -0.0, 1e-30, -1e-30, 20.0, 20.5, -87.5, 88.5, 88.75]]).astype(np.float32)
    softplus, exp, exp_ldexp, exp_bits = (np.empty_like(z) for _ in range(4))
    softplus_exp_arrays(z, softplus, exp, exp_ldexp, exp_bits)
    z64 = z.astype(np.float64)
    ref_softplus = np.where(z64 > 20, z64, np.log1p(np.exp(z64)))  # torch's softplus
    normal = z64 > -80  # below, softplus(z) ~ exp(z) is denormal in float32; the kernels give ~0
    assert np.max(np.abs(softplus[normal] - ref_softplus[normal]) / ref_softplus[normal]) < 5e-7
    assert np.max(np.abs(softplus[~normal] - ref_softplus[~normal])) < 1e-34
    ref_exp = np.exp(z64)
    inside = (z64 > -87) & (z64 < 88)
    for variant in (exp_ldexp, exp_bits):
        assert np.max(np.abs(variant[inside] - ref_exp[inside]) / ref_exp[inside]) < 5e-7
    assert np.all(np.isinf(exp_ldexp[z64 > 88.73])) and np.all(exp_ldexp[z64 < -104] == 0)
    tiny = (z64 <= -87) & (z64 >= -104)  # gradual underflow: within one denormal step (1.4e-45)
    assert np.max(np.abs(exp_ldexp[tiny] - ref_exp[tiny])) <= 1.5e-45
    assert np.all(exp_bits[z64 < -87] == 0) and np.all(np.isinf(exp_bits[z64 > 88]))
    assert np.array_equal(exp, exp_ldexp if USE_LDEXP else exp_bits)
    special = np.array([np.nan, np.inf, -np.inf], np.float32)
    outputs = [np.empty_like(special) for _ in range(4)]
    softplus_exp_arrays(special, *outputs)
    for values in outputs:  # softplus, exp, exp_ldexp, exp_bits
        assert np.isnan(values[0]) and values[1] == np.inf and values[2] == 0
    # The 16-lane IR versions inside the fused state-size-1 scan give exactly the same numbers.
    z = np.concatenate([z, special, np.zeros(-(len(z) + 3) % 16, np.float32)])
    softplus, exp = np.empty_like(z), np.empty_like(z)
    softplus_exp_vector_arrays(z, softplus, exp)
    expected = [np.empty_like(z) for _ in range(4)]
    softplus_exp_arrays(z, *expected)
    assert np.array_equal(softplus, expected[0], equal_nan=True) and np.array_equal(exp, expected[1], equal_nan=True)


@pytest.mark.parametrize("count", [1, 15, 16, 17, 100, 128, 309, 515])
def test_vector_register_scan_blocks_match_a_float64_loop(count: int) -> None:
    """_scan_run / _scan_row_fused / _chunk_factors_fused / _scan_run_reverse (16-step log-step scans
    in registers, plus a scalar tail; 309 = two unrolled iterations of 8 vectors, 3 single vectors
    and 5 scalar steps) against the recurrences written out in float64."""
    rng = np.random.default_rng(count)
    decay = rng.uniform(0.0, 1.0, count).astype(np.float32)
    decay[::7] = 1.0
    inputs = rng.standard_normal(count).astype(np.float32)
    C_row = rng.standard_normal(count).astype(np.float32)
    u_row = rng.standard_normal(count).astype(np.float32)
    skip, h0 = np.float32(0.7), np.float32(-1.3)
    states = np.empty(count)
    h = float(h0)
    for t in range(count):  # the reference: the recurrence as written, in float64
        h = float(decay[t]) * h + float(inputs[t])
        states[t] = h
    hidden = inputs.copy()
    h_last = _scan_numba._scan_run(decay, hidden, h0, count)
    scale = np.abs(states).max()
    assert np.max(np.abs(hidden - states)) / scale < 1e-6 and abs(h_last - states[-1]) / scale < 1e-6
    # The fused state-size-1 row: step sizes and decays computed inside, y written, states not stored.
    delta_row = (rng.standard_normal(count) * 2 - 1).astype(np.float32)
    B_row = rng.standard_normal(count).astype(np.float32)
    bias, a = np.float32(0.3), np.float32(-0.8)
    for softplus in (True, False):
        if not softplus:  # positive steps, so that the states stay bounded
            delta_row = rng.uniform(0.0, 1.5, count).astype(np.float32)
        step = delta_row.astype(np.float64) + float(bias)
        step = np.logaddexp(0.0, step) if softplus else step
        h, ref_fused = float(h0), np.empty(count)
        for t in range(count):
            h = np.exp(step[t] * float(a)) * h + step[t] * float(u_row[t]) * float(B_row[t])
            ref_fused[t] = float(C_row[t]) * h + float(skip) * float(u_row[t])
        y_row = np.full(count, np.nan, np.float32)
        h_last = _scan_numba._scan_row_fused(delta_row, u_row, B_row, C_row, y_row, bias, a, skip, h0, softplus)
        scale = np.abs(ref_fused).max()
        assert np.max(np.abs(y_row - ref_fused)) / scale < 2e-6 and abs(h_last - h) / abs(h) < 2e-6
        # The backward's first pass over the same row: step sizes, decays, slopes, last state.
        z = delta_row.astype(np.float64) + float(bias)
        ref_slope = 1.0 / (1.0 + np.exp(-z)) if softplus else np.ones(count)
        factors = [np.full(count, np.nan, np.float32) for _ in range(3)]
        h_chunk = _scan_numba._chunk_factors_fused(delta_row, u_row, B_row, *factors, bias, a, softplus, h0)
        for values, expected in zip(factors, (step, np.exp(step * float(a)), ref_slope)):
            assert np.max(np.abs(values - expected) / np.abs(expected)) < 1e-6
        assert abs(h_chunk - h) / abs(h) < 2e-6
        if count >= 16:  # a NaN step poisons its own and every later output, not the earlier ones
            poisoned = delta_row.copy()
            poisoned[5] = np.nan
            _scan_numba._scan_row_fused(poisoned, u_row, B_row, C_row, y_row, bias, a, skip, h0, softplus)
            assert np.isfinite(y_row[:5]).all() and np.isnan(y_row[5:]).all()
    backward = np.empty(count)  # g_t = decay_t g_{t+1} + inputs_t, from g_count = h0
    g = float(h0)
    for t in range(count - 1, -1, -1):
        g = float(decay[t]) * g + float(inputs[t])
        backward[t] = g
    values = inputs.copy()
    g_first = _scan_numba._scan_run_reverse(decay, values, h0, count)
    scale = np.abs(backward).max()
    assert np.max(np.abs(values - backward)) / scale < 1e-6 and abs(g_first - backward[0]) / scale < 1e-6
    if count >= 16:  # a NaN input poisons its own and every later state, not the earlier ones
        hidden = inputs.copy()
        hidden[5] = np.nan
        _scan_numba._scan_run(decay, hidden, h0, count)
        assert np.isfinite(hidden[:5]).all() and np.isnan(hidden[5:]).all()


def test_kernels_without_avx512_match_the_reference(tmp_path) -> None:
    """The CPU path numba compiles for a CPU without AVX-512 (exp from exponent bits instead of ldexp;
    the 16-lane scan vectors split over AVX2 registers) agrees with the float64 reference, forward
    and backward."""
    script = """
import torch
from dass.ops import _numba_math, selective_scan, selective_scan_ref
gen = torch.Generator().manual_seed(0)
errors = []
for state, length in ((1, 37), (2, 100)):
    u, delta = torch.randn(2, 8, length, generator=gen), torch.randn(2, 8, length, generator=gen) - 1
    A = -torch.rand(8, state, generator=gen) - 0.1
    B, C = torch.randn(2, 2, state, length, generator=gen), torch.randn(2, 2, state, length, generator=gen)
    D, bias = torch.randn(8, generator=gen), torch.rand(8, generator=gen)
    grad_y = torch.randn(2, 8, length, generator=gen)
    outputs = []
    for scan in (selective_scan, selective_scan_ref):
        leaves = [t.clone().requires_grad_(True) for t in (u, delta, A, B, C, D, bias)]
        y = scan(*leaves)
        y.backward(grad_y)
        outputs.append([y.detach()] + [leaf.grad for leaf in leaves])
    errors.append(max(float((fast - ref).abs().max() / ref.abs().max()) for fast, ref in zip(*outputs)))
import numpy as np
z = np.concatenate([np.linspace(-120, 100, 4008), [np.nan, np.inf, -np.inf, 0.0, -0.0, 88.5, -87.5, 20.5]])
z = z.astype(np.float32)
expected, vector = [np.empty_like(z) for _ in range(4)], [np.empty_like(z) for _ in range(2)]
_numba_math.softplus_exp_arrays(z, *expected)
_numba_math.softplus_exp_vector_arrays(z, *vector)  # the IR twins used by the fused scan
same = all(np.array_equal(v, e, equal_nan=True) for v, e in zip(vector, expected))
print(_numba_math.USE_LDEXP, same, *errors)
"""
    env = {**os.environ, "NUMBA_CPU_NAME": "haswell", "NUMBA_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    use_ldexp, same, error_n1, error_n2 = result.stdout.split()  # max over y and the 7 gradients
    assert use_ldexp == "False" and same == "True"
    assert float(error_n1) <= 1e-4 and float(error_n2) <= 1e-4


def test_kernels_refuse_strided_arrays() -> None:
    """The fused kernel reads rows at raw addresses: a strided view is refused, not misread."""
    u = np.zeros((1, 4, 64), np.float32)[:, :, ::2]
    args = [u, np.ascontiguousarray(u), np.full((4, 1), -1.0, np.float32), np.zeros((1, 2, 1, 32), np.float32),
            np.zeros((1, 2, 1, 32), np.float32), np.zeros(4, np.float32), np.zeros(4, np.float32), True,
            np.zeros((1, 4, 1), np.float32), np.zeros((1, 4, 32), np.float32), np.zeros((1, 4, 1), np.float32)]
    with pytest.raises(ValueError, match="must be C-contiguous"):
        _scan_numba.scan_forward(*args)


def test_numba_kernels_keep_torch_thread_count() -> None:
    """numba's OpenMP pool, started by the first parallel kernel of a process, resets the shared
    OpenMP thread count; torch.set_num_threads(1) must survive the first scan and LayerNorm."""
    script = """
import torch
torch.set_num_threads(1)
from dass.ops import selective_scan
from dass.ops.layer_norm import layer_norm_channels_first
u = torch.randn(1, 4, 64, requires_grad=True)
y = selective_scan(u, torch.randn(1, 4, 64), -torch.ones(4, 1), torch.randn(1, 2, 1, 64), torch.randn(1, 2, 1, 64))
y.sum().backward()
after_scan = torch.get_num_threads()
x = torch.randn(2, 8, 4, 4, requires_grad=True)
layer_norm_channels_first(x, torch.ones(8), torch.zeros(8), 1e-6).sum().backward()
print(after_scan, torch.get_num_threads())
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NUMBA_NUM_THREADS": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["1", "1"]
