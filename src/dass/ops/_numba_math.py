"""Shared pieces of the numba kernels: vectorisable float32 exp / softplus and LLVM-level helpers.

numba has no vector libm here (``math.exp`` in a loop stays scalar and would cost more than a whole
scan), so :func:`exp32` and :func:`softplus32` are branch-free polynomials that LLVM vectorises.
The helpers numba does not expose (a bit cast, ``ldexp``, a prefetch, a per-function vector
width) are one-instruction intrinsics. The hot loops are intrinsics written in LLVM IR on 16-lane
vectors: :func:`scan_blocks` runs the scan recurrence sixteen steps at a time in vector registers,
:func:`scan_blocks_fused` a whole state-size-1 row (softplus, exp and scan in one pass), and the
``channel_scan_step`` intrinsics one scan step over a run of channels (inference engine); their
exp/softplus (:func:`_exp_ir`, :func:`_softplus_ir`) give bit for bit the numbers of
:func:`exp32` / :func:`softplus32`. Used by :mod:`dass.ops._scan_numba` (training scan) and
:mod:`dass.inference.kernels` (inference engine); tested against float64 numpy in
tests/test_selective_scan.py and tests/test_inference.py.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

__all__ = ["SCAN_BLOCK", "channel_scan_step_add", "channel_scan_step_set", "channel_scan_step_total", "exp32",
           "int32_bits_as_float32", "prefer_512_bit_vectors", "prefetch", "scan_blocks", "scan_blocks_fused",
           "scan_blocks_fused_factors", "scan_blocks_fused_linear", "scan_blocks_reverse", "softplus32",
           "softplus_exp_arrays", "softplus_exp_vector_arrays"]

_FAST = {"contract"}  # fused multiply-add only; NaN/inf semantics kept

# LLVM string attribute that lifts the 256-bit vector preference LLVM applies to Intel server CPUs
# (Skylake-SP onwards) for the function that carries it. On the Emerald Rapids machine of
# results/scan.txt the exp/softplus loops of the scans ran 1.5x faster with 16 lanes than with 8.
# CPUs without AVX-512 ignore it.
_WIDE_VECTORS = '"prefer-vector-width"="512"'


@intrinsic
def prefer_512_bit_vectors(typingctx):
    """Call once in a kernel: LLVM may then vectorise that kernel's loops with 512-bit registers.

    numba has no per-function target attributes, so this adds the string attribute to the LLVM
    function being generated (for a ``prange`` loop, call it inside the loop body, which numba
    outlines into a function of its own).
    """
    sig = types.void()

    def codegen(context, builder, signature, args):
        # llvmlite's FunctionAttributes only accepts its list of keyword attributes; a string
        # attribute is printed verbatim into the IR, so it is added past that check.
        set.add(builder.function.attributes, _WIDE_VECTORS)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def prefetch(typingctx, address):
    """Ask the CPU to load the cache line at integer ``address`` (``llvm.prefetch``: read, keep in L1)."""
    sig = types.void(types.uintp)

    def codegen(context, builder, signature, args):
        byte_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [byte_ptr], fnty)
        builder.call(fn, [builder.inttoptr(args[0], byte_ptr), ir.Constant(i32, 0), ir.Constant(i32, 3),
                          ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def int32_bits_as_float32(typingctx, bits):
    """Reinterpret the bits of an int32 as a float32 (an LLVM bitcast; vectorises).

    A wider integer argument is converted to int32 first (its low 32 bits).
    """
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen

@intrinsic
def ldexp32(typingctx, x, n):
    """x * 2**n for float32 x and int32 n, with float32 overflow to inf and gradual underflow to 0.

    ``llvm.ldexp``: with AVX-512 one ``vscalefps`` per 16 lanes; without it LLVM calls libm's
    ``ldexpf`` per element, which is why :func:`exp32` only uses it on AVX-512 CPUs.
    """
    sig = types.float32(types.float32, types.int32)

    def codegen(context, builder, signature, args):
        f32, i32 = ir.FloatType(), ir.IntType(32)
        fn = builder.module.declare_intrinsic("llvm.ldexp", [f32, i32], ir.FunctionType(f32, [f32, i32]))
        return builder.call(fn, args)

    return sig, codegen


# ------------------------------------------------------------------------------ vector scan blocks

SCAN_BLOCK = 16  # time steps per vector (512 bits) in the scan_blocks intrinsics


def _scan_block_ir(builder, a, x):
    """IR for the scan of one vector from a zero state: returns (x', a') with, for j < SCAN_BLOCK,
    x'_j = h_j if h_{-1} = 0 and a'_j = a_0 a_1 ... a_j, so that h_j = x'_j + a'_j h_{-1}.

    Log-step (Hillis-Steele) scan of the pairs (a, x) inside the vector: after the step with shift d,
    x_j = sum over the last 2d steps of x_s times the decays between s and j, a_j = their product.
    4 steps of 2 shuffles, 1 FMA and 1 multiply.
    """
    f32, i32 = ir.FloatType(), ir.IntType(32)
    vec = ir.VectorType(f32, SCAN_BLOCK)
    zeros = ir.Constant(vec, [0.0] * SCAN_BLOCK)
    ones = ir.Constant(vec, [1.0] * SCAN_BLOCK)
    shift = 1
    while shift < SCAN_BLOCK:
        # lane j takes lane j - shift; lanes below shift take x = 0, a = 1 (the identity step)
        mask = ir.Constant(ir.VectorType(i32, SCAN_BLOCK),
                           [j - shift if j >= shift else SCAN_BLOCK + j for j in range(SCAN_BLOCK)])
        x_before = builder.shuffle_vector(x, zeros, mask)
        a_before = builder.shuffle_vector(a, ones, mask)
        x = _fma(builder, a, x_before, x)
        a = builder.fmul(a, a_before)
        shift *= 2
    return x, a


def _reverse_lanes(builder, vector):
    mask = ir.Constant(ir.VectorType(ir.IntType(32), SCAN_BLOCK), list(range(SCAN_BLOCK - 1, -1, -1)))
    return builder.shuffle_vector(vector, vector, mask)


def _fma(builder, a, b, c):
    """a * b + c, contractible to one fused multiply-add."""
    return builder.fadd(builder.fmul(a, b, flags=("contract",)), c, flags=("contract",))


def _broadcast_lane(builder, vector, lane):
    """Every lane of ``vector`` set to its lane ``lane`` (one shuffle)."""
    mask = ir.Constant(ir.VectorType(ir.IntType(32), SCAN_BLOCK), [lane] * SCAN_BLOCK)
    return builder.shuffle_vector(vector, vector, mask)


def _splat(builder, scalar):
    """A vector with ``scalar`` in every lane."""
    vec = ir.VectorType(ir.FloatType(), SCAN_BLOCK)
    one = builder.insert_element(ir.Constant(vec, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
    return _broadcast_lane(builder, one, 0)


def _counted_loop(builder, name, start, stop, step, carried, body):
    """Emit ``for index in range(start, stop - step + 1, step)`` (i64 values) around ``body``.

    ``carried``: values live across iterations; ``body(index, values)`` emits one iteration and
    returns their next values. Returns (the index reached, the carried values) as phis in the block
    after the loop, where the builder is left.
    """
    i64 = ir.IntType(64)
    limit = builder.sub(stop, ir.Constant(i64, step - 1)) if step > 1 else stop  # index + step <= stop
    entry = builder.block
    loop = builder.append_basic_block(name)
    done = builder.append_basic_block(name + "_done")
    builder.cbranch(builder.icmp_signed("<", start, limit), loop, done)
    builder.position_at_end(loop)
    index = builder.phi(i64)
    values = [builder.phi(value.type) for value in carried]
    next_values = body(index, values)
    next_index = builder.add(index, ir.Constant(i64, step))
    body_end = builder.block
    for phi, first, following in zip([index, *values], [start, *carried], [next_index, *next_values]):
        phi.add_incoming(first, entry)
        phi.add_incoming(following, body_end)
    builder.cbranch(builder.icmp_signed("<", next_index, limit), loop, done)
    builder.position_at_end(done)
    results = []
    for first, following in zip([start, *carried], [next_index, *next_values]):
        phi = builder.phi(first.type)
        phi.add_incoming(first, entry)
        phi.add_incoming(following, body_end)
        results.append(phi)
    return results[0], results[1:]


def _scan_blocks_codegen(builder, args, reverse=False):
    """The loop of :func:`scan_blocks` / :func:`scan_blocks_reverse`."""
    i32, i64 = ir.IntType(32), ir.IntType(64)
    vec = ir.VectorType(ir.FloatType(), SCAN_BLOCK)
    a_address, x_address, h, blocks = args
    bases = [builder.inttoptr(address, vec.as_pointer()) for address in (a_address, x_address)]

    def body(index, values):
        (carry,) = values
        # vector index * 64 bytes from the base; from the last vector down if reverse
        vector_index = builder.sub(builder.sub(blocks, ir.Constant(i64, 1)), index) if reverse else index
        pointers = [builder.gep(base, [vector_index]) for base in bases]
        a, x = builder.load(pointers[0], align=4), builder.load(pointers[1], align=4)
        if reverse:  # lane j <-> lane 15 - j: the scan then runs from the latest time step down
            a, x = _reverse_lanes(builder, a), _reverse_lanes(builder, x)
        local, decays = _scan_block_ir(builder, a, x)
        states = _fma(builder, decays, carry, local)
        builder.store(_reverse_lanes(builder, states) if reverse else states, pointers[1], align=4)
        # The next carry from the last lanes of (x', a'), not from the states: the loop-carried
        # dependency is then one FMA per vector instead of an FMA and a shuffle (the loop is otherwise
        # latency-bound).
        return [_fma(builder, _broadcast_lane(builder, decays, SCAN_BLOCK - 1), carry,
                     _broadcast_lane(builder, local, SCAN_BLOCK - 1))]

    _, (last,) = _counted_loop(builder, "scan_blocks_loop", ir.Constant(i64, 0), blocks, 1, [_splat(builder, h)],
                               body)
    return builder.extract_element(last, ir.Constant(i32, 0))


@intrinsic
def scan_blocks(typingctx, a_address, x_address, h, blocks):
    """In place over ``16 * blocks`` float32 at ``x_address``: x_t <- h_t = a_t h_{t-1} + x_t, h_{-1} = h.

    ``a_address``: as many float32 decays. Returns the last state (h if blocks is 0). Addresses are
    integers (``array.ctypes.data + 4 * offset``); no alignment needed. The state between vectors
    stays in a vector register.
    """
    sig = types.float32(types.uintp, types.uintp, types.float32, types.int64)

    def codegen(context, builder, signature, args):
        return _scan_blocks_codegen(builder, args)

    return sig, codegen


@intrinsic
def scan_blocks_reverse(typingctx, a_address, x_address, h, blocks):
    """:func:`scan_blocks` backwards in time: x_t <- h_t = a_t h_{t+1} + x_t for t from ``16 * blocks - 1``
    down to 0, with h_{16 blocks} = h. Returns h_0 (h if blocks is 0)."""
    sig = types.float32(types.uintp, types.uintp, types.float32, types.int64)

    def codegen(context, builder, signature, args):
        return _scan_blocks_codegen(builder, args, reverse=True)

    return sig, codegen



def _host_has_avx512() -> bool:
    """True if numba compiles for an AVX-512 CPU (the host, unless NUMBA_CPU_NAME/FEATURES say otherwise)."""
    if nb.config.CPU_NAME or nb.config.CPU_FEATURES:
        return "+avx512f" in (nb.config.CPU_FEATURES or "")
    try:
        from llvmlite import binding

        return bool(binding.get_host_cpu_features().get("avx512f", False))
    except Exception:  # pragma: no cover - llvmlite without host feature detection
        return False


USE_LDEXP = _host_has_avx512()


# ------------------------------------------------------------------------------ vectorisable math

# log1p(w) = w * Q(w) on [0, 1]: a degree-8 polynomial fitted for relative error (Lawson-weighted
# least squares at Chebyshev nodes; 3e-8 in float64, 2.3e-7 evaluated in float32 with FMA). It
# replaced ``2 atanh(w / (2 + w))``, whose division cost about a third of the scan kernels' time.
_LOG1P_Q = tuple(np.float32(c) for c in (
    1.0, -4.999949314e-01, 3.331909681e-01, -2.484298221e-01, 1.910600675e-01,
    -1.366324578e-01, 7.822595171e-02, -2.950523867e-02, 5.232694239e-03))

# exp(r) on |r| <= ln(2)/2: 1 + r (1 + r P(r)), P of degree 4 fitted for relative error like _LOG1P_Q
# (3e-9 in float64, 6e-8 evaluated in float32 with FMA; exp(0) = 1 exactly).
_EXP_P = tuple(np.float32(c) for c in (
    1.381461275741458e-03, 8.368710055947304e-03, 4.166838899254799e-02, 1.666652113199234e-01,
    4.999999403953552e-01, 1.0, 1.0))
_LOG2E = np.float32(1.44269504088896341)
_ROUNDING_SHIFT = np.float32(12582912.0)  # 1.5 * 2**23: adding and subtracting it rounds to an integer
_LN2_HIGH = np.float32(0.693359375)  # ln 2 in two parts (Cody-Waite): n * _LN2_HIGH is exact
_LN2_LOW = np.float32(-2.12194440e-4)


@nb.njit(inline="always", cache=True, fastmath=_FAST)
def _exp_reduced(x, n):
    """exp(x - n ln 2) for |x - n ln 2| <= ln(2)/2 (Cody-Waite reduction, degree-6 polynomial)."""
    r = x - n * _LN2_HIGH
    r = r - n * _LN2_LOW
    p = _EXP_P[0]
    p = p * r + _EXP_P[1]
    p = p * r + _EXP_P[2]
    p = p * r + _EXP_P[3]
    p = p * r + _EXP_P[4]
    p = p * r + _EXP_P[5]
    return p * r + _EXP_P[6]


@nb.njit(inline="always", cache=True, fastmath=_FAST)
def exp32_ldexp(x):
    """exp(x) for float32 x: 2**n exp(r) with the scaling done by :func:`ldexp32` (AVX-512 CPUs).

    Relative error < 1e-7 for normal results; gradual underflow (denormals, then 0 below about -104),
    inf above 88.7, NaN for NaN. The clamps keep NaN (``x < lo`` is False for NaN).
    """
    xc = np.float32(-110.0) if x < np.float32(-110.0) else x
    xc = np.float32(89.0) if xc > np.float32(89.0) else xc
    n = (xc * _LOG2E + _ROUNDING_SHIFT) - _ROUNDING_SHIFT  # round to nearest (|xc| log2(e) < 2**22)
    n_int = np.int32(n) if n == n else np.int32(0)  # NaN: any exponent (the result stays NaN)
    return ldexp32(_exp_reduced(xc, n), n_int)


@nb.njit(inline="always", cache=True, fastmath=_FAST)
def exp32_bits(x):
    """exp(x) for float32 x, the scale 2**n built from its exponent bits (any CPU).

    Relative error < 2e-7; 0 below -87 (no denormals), inf above 88, NaN for NaN.
    """
    xc = min(max(x, np.float32(-87.0)), np.float32(88.0))
    n = (xc * _LOG2E + _ROUNDING_SHIFT) - _ROUNDING_SHIFT  # round to nearest
    value = _exp_reduced(xc, n) * int32_bits_as_float32(np.int32((n + np.float32(127.0)) * np.float32(8388608.0)))
    value = np.float32(0.0) if x < np.float32(-87.0) else value
    value = np.float32(np.inf) if x > np.float32(88.0) else value
    return x if x != x else value  # NaN in, NaN out


# The kernels' exp: ldexp is one instruction with AVX-512 (and handles overflow, underflow and NaN by
# itself), but a libm call per element elsewhere. Both variants are tested on every machine.
exp32 = exp32_ldexp if USE_LDEXP else exp32_bits


@nb.njit(inline="always", cache=True, fastmath=_FAST)
def softplus32(z):
    """log(1 + exp(z)) = max(z, 0) + log1p(w), w = exp(-|z|) in (0, 1], branch-free, division-free.

    Relative error < 5e-7 everywhere (also for large |z|, where torch's threshold at 20 returns z:
    the log1p term is then below half an ulp of z). NaN for NaN (w is NaN, and so is the max).
    """
    w = exp32(-abs(z))
    q = _LOG1P_Q[8]
    q = q * w + _LOG1P_Q[7]
    q = q * w + _LOG1P_Q[6]
    q = q * w + _LOG1P_Q[5]
    q = q * w + _LOG1P_Q[4]
    q = q * w + _LOG1P_Q[3]
    q = q * w + _LOG1P_Q[2]
    q = q * w + _LOG1P_Q[1]
    q = q * w + _LOG1P_Q[0]
    positive_part = np.float32(0.0) if z < np.float32(0.0) else z  # keeps NaN
    return positive_part + w * q


@nb.njit(cache=True, nogil=True, fastmath=_FAST)
def softplus_exp_arrays(z, out_softplus, out_exp, out_exp_ldexp, out_exp_bits):
    """Elementwise :func:`softplus32`, :func:`exp32` and both exp variants of 1-D float32 arrays (tests)."""
    prefer_512_bit_vectors()
    for i in range(z.shape[0]):
        out_softplus[i] = softplus32(z[i])
        out_exp[i] = exp32(z[i])
        out_exp_ldexp[i] = exp32_ldexp(z[i])
        out_exp_bits[i] = exp32_bits(z[i])


# ------------------------------------------------------------------ the fused state-size-1 scan

FUSED_UNROLL = 8  # 16-step vectors per iteration of scan_blocks_fused's main loop


def _vector_constant(value: float) -> ir.Constant:
    return ir.Constant(ir.VectorType(ir.FloatType(), SCAN_BLOCK), [float(np.float32(value))] * SCAN_BLOCK)


def _at_least(builder, x, low):
    """max(x, low) that keeps NaN (``x < low ? low : x``: one vmaxps)."""
    return builder.select(builder.fcmp_ordered("<", x, low), low, x)


def _at_most(builder, x, high):
    return builder.select(builder.fcmp_ordered(">", x, high), high, x)


def _exp_ir(builder, xs, nonpositive=False):
    """exp of each 16-lane vector in ``xs`` (list), the IR twin of :func:`exp32`, same results.

    The vectors' operations are emitted interleaved, so the CPU sees ``len(xs)`` independent chains.
    With AVX-512 the scaling by 2**n is one ``vscalefps`` that takes n as a float (no conversions,
    and NaN, overflow and gradual underflow come out right by themselves); elsewhere 2**n is built
    from exponent bits as in :func:`exp32_bits`. ``nonpositive``: every x <= 0 or NaN (no upper clamp).
    """
    vec = ir.VectorType(ir.FloatType(), SCAN_BLOCK)
    low, high = (-110.0, 89.0) if USE_LDEXP else (-87.0, 88.0)
    clamped = [_at_least(builder, x, _vector_constant(low)) for x in xs]
    if not nonpositive:
        clamped = [_at_most(builder, x, _vector_constant(high)) for x in clamped]
    shift = _vector_constant(_ROUNDING_SHIFT)
    ns = [builder.fsub(_fma(builder, x, _vector_constant(_LOG2E), shift), shift) for x in clamped]
    rs = [_fma(builder, builder.fneg(n), _vector_constant(_LN2_HIGH), x) for n, x in zip(ns, clamped)]
    rs = [_fma(builder, builder.fneg(n), _vector_constant(_LN2_LOW), r) for n, r in zip(ns, rs)]
    ps = [_vector_constant(_EXP_P[0])] * len(xs)
    for coefficient in _EXP_P[1:]:
        ps = [_fma(builder, p, r, _vector_constant(coefficient)) for p, r in zip(ps, rs)]
    if USE_LDEXP:
        i16, i32 = ir.IntType(16), ir.IntType(32)
        fnty = ir.FunctionType(vec, [vec, vec, vec, i16, i32])
        scalef = builder.module.declare_intrinsic("llvm.x86.avx512.mask.scalef.ps.512", fnty=fnty)
        # all lanes (mask 0xffff), current rounding mode (4)
        return [builder.call(scalef, [p, n, ir.Constant(vec, ir.Undefined), ir.Constant(i16, 0xFFFF),
                                      ir.Constant(i32, 4)]) for p, n in zip(ps, ns)]
    ivec = ir.VectorType(ir.IntType(32), SCAN_BLOCK)
    results = []
    for x, n, p in zip(xs, ns, ps):
        n = builder.select(builder.fcmp_unordered("uno", n, n), _vector_constant(0.0), n)  # NaN: any n
        exponent = builder.add(builder.fptosi(n, ivec), ir.Constant(ivec, [127] * SCAN_BLOCK))
        scale = builder.bitcast(builder.shl(exponent, ir.Constant(ivec, [23] * SCAN_BLOCK)), vec)
        value = builder.fmul(p, scale)
        value = builder.select(builder.fcmp_ordered("<", x, _vector_constant(low)), _vector_constant(0.0), value)
        if not nonpositive:
            value = builder.select(builder.fcmp_ordered(">", x, _vector_constant(high)),
                                   _vector_constant(np.inf), value)
        results.append(value)
    return results


def _softplus_ir(builder, zs, with_exp=False):
    """softplus of each 16-lane vector in ``zs``, the IR twin of :func:`softplus32`, same results.

    ``with_exp``: return (softplus, exp(-|z|)) lists, the second for the sigmoid."""
    ivec = ir.VectorType(ir.IntType(32), SCAN_BLOCK)
    sign_bit = ir.Constant(ivec, [-(2 ** 31)] * SCAN_BLOCK)
    minus_abs = [builder.bitcast(builder.or_(builder.bitcast(z, ivec), sign_bit), z.type) for z in zs]
    ws = _exp_ir(builder, minus_abs, nonpositive=True)
    qs = [_vector_constant(_LOG1P_Q[8])] * len(zs)
    for coefficient in _LOG1P_Q[7::-1]:
        qs = [_fma(builder, q, w, _vector_constant(coefficient)) for q, w in zip(qs, ws)]
    softplus = [_fma(builder, w, q, _at_least(builder, z, _vector_constant(0.0))) for w, q, z in zip(ws, qs, zs)]
    return (softplus, ws) if with_exp else softplus


def _fused_loop(builder, bases, bias, a, skip, softplus, carry_in, start, stop, unroll):
    """Emit a loop over vectors start..stop (step ``unroll``) of :func:`scan_blocks_fused` (``bases``:
    delta, u, B, C, y) or of :func:`scan_blocks_fused_factors` (delta, u, B, step, decay, slope);
    returns (the vector index reached, the carry vector) as phis in the block after the loop."""
    i64 = ir.IntType(64)
    factors = len(bases) == 6

    def body(index, values):
        (state,) = values
        pointers = [[builder.gep(base, [builder.add(index, ir.Constant(i64, j))]) for base in bases]
                    for j in range(unroll)]
        delta, u, B = ([builder.load(p[i], align=4) for p in pointers] for i in range(3))
        zs = [builder.fadd(d, bias) for d in delta]
        steps = zs
        if factors:  # d step / d (delta + bias): sigmoid(z) = (z >= 0 ? 1 : w) / (1 + w), w = exp(-|z|)
            one = _vector_constant(1.0)
            slopes = [one] * unroll
            if softplus:
                steps, ws = _softplus_ir(builder, zs, with_exp=True)
                slopes = [builder.fdiv(builder.select(builder.fcmp_ordered("<", z, _vector_constant(0.0)), w, one),
                                       builder.fadd(one, w)) for z, w in zip(zs, ws)]
        elif softplus:
            steps = _softplus_ir(builder, zs)
        decays = _exp_ir(builder, [builder.fmul(s, a) for s in steps])
        if factors:
            for j in range(unroll):
                for role, values in ((3, steps), (4, decays), (5, slopes)):
                    builder.store(values[j], pointers[j][role], align=4)
        inputs = [builder.fmul(builder.fmul(s, uj), Bj) for s, uj, Bj in zip(steps, u, B)]
        scanned = [_scan_block_ir(builder, d, x) for d, x in zip(decays, inputs)]
        C = None if factors else [builder.load(p[3], align=4) for p in pointers]
        for j, (local, products) in enumerate(scanned):
            states = _fma(builder, products, state, local)
            if not factors:
                builder.store(_fma(builder, states, C[j], builder.fmul(skip, u[j], flags=("contract",))),
                              pointers[j][4], align=4)
            # the carry is the last state: one shuffle after the FMA, a short chain next to the work
            state = _broadcast_lane(builder, states, SCAN_BLOCK - 1)
        return [state]

    reached, (carry_out,) = _counted_loop(builder, f"fused_scan_{unroll}", start, stop, unroll, [carry_in], body)
    return reached, carry_out


def _fused_scan_codegen(builder, args, softplus, addresses_count=5):
    vec = ir.VectorType(ir.FloatType(), SCAN_BLOCK)
    i32, i64 = ir.IntType(32), ir.IntType(64)
    addresses, (bias, a, skip, h, blocks) = args[:addresses_count], args[addresses_count:]
    bases = [builder.inttoptr(address, vec.as_pointer()) for address in addresses]
    bias, a, skip, carry = (_splat(builder, value) for value in (bias, a, skip, h))
    main_stop = builder.sub(blocks, builder.srem(blocks, ir.Constant(i64, FUSED_UNROLL)))
    reached, carry = _fused_loop(builder, bases, bias, a, skip, softplus, carry, ir.Constant(i64, 0),
                                 main_stop, FUSED_UNROLL)
    _, carry = _fused_loop(builder, bases, bias, a, skip, softplus, carry, reached, blocks, 1)
    return builder.extract_element(carry, ir.Constant(i32, 0))


_FUSED_SIGNATURE = types.float32(types.uintp, types.uintp, types.uintp, types.uintp, types.uintp,
                                 types.float32, types.float32, types.float32, types.float32, types.int64)


@intrinsic
def scan_blocks_fused(typingctx, delta_address, u_address, B_address, C_address, y_address, bias, a, skip, h,
                      blocks):
    """One row of the state-size-1 selective scan, ``16 * blocks`` steps in one pass over the inputs:

        step_t = softplus(delta_t + bias),  h_t = exp(step_t a) h_{t-1} + step_t u_t B_t,
        y_t = C_t h_t + skip u_t,  from h_{-1} = h; returns the last state.

    Float32 runs are read at the delta, u, B and C addresses and y is written at ``y_address``;
    nothing else touches memory. Each loop iteration takes ``FUSED_UNROLL`` vectors, whose
    softplus/exp chains are independent: the CPU overlaps them (one vector at a time, the loop waited
    on the ~60 dependent operations of each and ran 1.4x slower).
    """
    def codegen(context, builder, signature, args):
        return _fused_scan_codegen(builder, args, softplus=True)

    return _FUSED_SIGNATURE, codegen


@intrinsic
def scan_blocks_fused_linear(typingctx, delta_address, u_address, B_address, C_address, y_address, bias, a,
                             skip, h, blocks):
    """:func:`scan_blocks_fused` with step_t = delta_t + bias (no softplus)."""
    def codegen(context, builder, signature, args):
        return _fused_scan_codegen(builder, args, softplus=False)

    return _FUSED_SIGNATURE, codegen


@intrinsic
def scan_blocks_fused_factors(typingctx, delta_address, u_address, B_address, step_address, decay_address,
                              slope_address, bias, a, softplus, h, blocks):
    """The backward's first pass over ``16 * blocks`` steps of a state-size-1 row: writes
    step_t = softplus(delta_t + bias) (or delta_t + bias), decay_t = exp(step_t a) and
    slope_t = d step_t / d delta_t (sigmoid(delta_t + bias), or 1), runs h_t = decay_t h_{t-1} +
    step_t u_t B_t from h and returns the last state (the states are not stored). Loops like
    :func:`scan_blocks_fused`; ``softplus`` (a boolean) picks one of the two loops it contains."""
    sig = types.float32(types.uintp, types.uintp, types.uintp, types.uintp, types.uintp, types.uintp,
                        types.float32, types.float32, types.boolean, types.float32, types.int64)

    def codegen(context, builder, signature, args):
        *addresses, bias_value, a_value, use_softplus, h_value, blocks_value = args
        results = []
        with builder.if_else(use_softplus) as (with_softplus, without):
            for branch, flag in ((with_softplus, True), (without, False)):
                with branch:
                    value = _fused_scan_codegen(builder, [*addresses, bias_value, a_value, a_value, h_value,
                                                          blocks_value], flag, addresses_count=6)
                    results.append((value, builder.block))
        merged = builder.phi(ir.FloatType())
        for value, block in results:
            merged.add_incoming(value, block)
        return merged

    return sig, codegen


@intrinsic
def _exp_softplus_vectors(typingctx, z_address, exp_address, softplus_address, blocks):
    """exp and softplus of ``16 * blocks`` float32 with the IR of :func:`scan_blocks_fused` (tests)."""
    sig = types.void(types.uintp, types.uintp, types.uintp, types.int64)

    def codegen(context, builder, signature, args):
        vec = ir.VectorType(ir.FloatType(), SCAN_BLOCK)
        z_base, exp_base, softplus_base = (builder.inttoptr(address, vec.as_pointer()) for address in args[:3])
        with cgutils.for_range(builder, args[3]) as loop:
            z = builder.load(builder.gep(z_base, [loop.index]), align=4)
            builder.store(_exp_ir(builder, [z])[0], builder.gep(exp_base, [loop.index]), align=4)
            builder.store(_softplus_ir(builder, [z])[0], builder.gep(softplus_base, [loop.index]), align=4)
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(cache=True, nogil=True)
def softplus_exp_vector_arrays(z, out_softplus, out_exp):
    """:func:`_exp_softplus_vectors` on 1-D float32 arrays whose length is a multiple of 16 (tests)."""
    if z.shape[0] % SCAN_BLOCK != 0 or out_softplus.shape[0] != z.shape[0] or out_exp.shape[0] != z.shape[0]:
        raise ValueError("softplus_exp_vector_arrays: arrays of one length, a multiple of 16")
    _exp_softplus_vectors(nb.uint64(z.ctypes.data), nb.uint64(out_exp.ctypes.data),
                          nb.uint64(out_softplus.ctypes.data), z.shape[0] // SCAN_BLOCK)


# ------------------------------------------------------- one scan step for a run of channels

CHANNEL_UNROLLS = (8, 4, 2, 1)  # vectors per iteration of the loops of the channel_scan_step intrinsics


def _channel_step_codegen(builder, args, mode):
    """The loops of :func:`channel_scan_step_set` / ``_add`` / ``_total``: a cascade of loops taking 8,
    4, 2 and 1 vectors per iteration, so that the independent softplus/exp chains of up to eight
    vectors are interleaved (one vector at a time, the CPU's scheduler fills with one chain)."""
    vec = ir.VectorType(ir.FloatType(), SCAN_BLOCK)
    i64 = ir.IntType(64)
    if mode == "set":
        *addresses, b_value, c_value, vectors = args
    elif mode == "add":
        *addresses, b_value, c_value, vectors = args
        addresses.insert(4, None)  # no skip weights
    else:
        *addresses, b_value, vectors = args
        addresses.insert(4, None)
        c_value = None
    bases = [None if address is None else builder.inttoptr(address, vec.as_pointer()) for address in addresses]
    b_value = _splat(builder, b_value)
    c_value = None if c_value is None else _splat(builder, c_value)
    def run(unroll):
        def body(index, values):
            indices = [builder.add(index, ir.Constant(i64, j)) for j in range(unroll)]

            def load(role):
                return [builder.load(builder.gep(bases[role], [i]), align=4) for i in indices]

            def store(role, values):
                for i, value in zip(indices, values):
                    builder.store(value, builder.gep(bases[role], [i]), align=4)

            dt, bias, a, u, state = load(0), load(1), load(2), load(3), load(5)
            steps = _softplus_ir(builder, [builder.fadd(x, y) for x, y in zip(dt, bias)])
            decays = _exp_ir(builder, [builder.fmul(s, coefficient) for s, coefficient in zip(steps, a)])
            states = [_fma(builder, d, h, builder.fmul(builder.fmul(s, x), b_value))
                      for d, h, s, x in zip(decays, state, steps, u)]
            store(5, states)
            if mode == "set":
                store(6, [_fma(builder, c_value, h, builder.fmul(skip, x)) for h, skip, x in zip(states, load(4), u)])
            elif mode == "add":
                store(6, [_fma(builder, c_value, h, y) for h, y in zip(states, load(6))])
            else:
                store(6, [builder.fadd(total, s) for total, s in zip(load(6), steps)])
            return []
        return body

    position = ir.Constant(i64, 0)
    for unroll in CHANNEL_UNROLLS:
        position, _ = _counted_loop(builder, f"channels_{unroll}", position, vectors, unroll, [], run(unroll))


@intrinsic
def channel_scan_step_set(typingctx, dt_address, bias_address, a_address, u_address, skip_address, state_address,
                          y_address, b_value, c_value, vectors):
    """One step of the state-size-1 scan for ``16 * vectors`` channels at one position (float32 runs):

        step = softplus(dt + bias),  state <- exp(step a) state + step u b_value,
        y = skip u + c_value state.

    Each address is that of the run's first channel; ``state`` is updated in place. Used by the
    inference engine's four-direction scans (:mod:`dass.inference.kernels`), which call it for every
    position in scan order.
    """
    u = types.uintp
    sig = types.void(u, u, u, u, u, u, u, types.float32, types.float32, types.int64)

    def codegen(context, builder, signature, args):
        _channel_step_codegen(builder, args, "set")
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def channel_scan_step_add(typingctx, dt_address, bias_address, a_address, u_address, state_address, y_address,
                          b_value, c_value, vectors):
    """:func:`channel_scan_step_set` that adds ``c_value state`` to y instead (no skip term)."""
    u = types.uintp
    sig = types.void(u, u, u, u, u, u, types.float32, types.float32, types.int64)

    def codegen(context, builder, signature, args):
        _channel_step_codegen(builder, args, "add")
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def channel_scan_step_total(typingctx, dt_address, bias_address, a_address, u_address, state_address,
                            total_address, b_value, vectors):
    """:func:`channel_scan_step_set` without an output: adds each channel's step to ``total`` instead."""
    u = types.uintp
    sig = types.void(u, u, u, u, u, u, types.float32, types.int64)

    def codegen(context, builder, signature, args):
        _channel_step_codegen(builder, args, "total")
        return context.get_dummy_value()

    return sig, codegen
