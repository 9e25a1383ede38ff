"""Shared pieces of the numba kernels: vectorisable float32 exp / softplus and LLVM-level helpers.

numba has no vector libm here (``math.exp`` in a loop stays scalar and would cost more than a whole
scan), so :func:`exp32` and :func:`softplus32` are branch-free polynomials that LLVM vectorises.
The helpers numba does not expose (a bit cast, a prefetch, a per-function vector width) are
one-instruction intrinsics. Used by :mod:`dass.ops._scan_numba` (training scan) and
:mod:`dass.inference.kernels` (inference engine); tested against float64 numpy in tests/test_selective_scan.py.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

__all__ = ["exp32", "int32_bits_as_float32", "prefer_512_bit_vectors", "prefetch", "softplus32",
           "softplus_exp_arrays"]

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


# ------------------------------------------------------------------------------ vectorisable math

# log1p(w) = w * Q(w) on [0, 1]: a degree-8 polynomial fitted for relative error (Lawson-weighted
# least squares at Chebyshev nodes; 3e-8 in float64, 2.3e-7 evaluated in float32 with FMA). It
# replaced ``2 atanh(w / (2 + w))``, whose division cost about a third of the scan kernels' time.
_LOG1P_Q = tuple(np.float32(c) for c in (
    1.0, -4.999949314e-01, 3.331909681e-01, -2.484298221e-01, 1.910600675e-01,
    -1.366324578e-01, 7.822595171e-02, -2.950523867e-02, 5.232694239e-03))


@nb.njit(inline="always", cache=True, fastmath=_FAST)
def exp32(x):
    """exp(x) for float32 x, branch-free so loops over it vectorise (relative error < 2e-7).

    exp(x) = 2**n * exp(r), n = round(x / ln 2), |r| <= ln(2)/2, exp(r) by a Cephes polynomial;
    0 below -87, inf above 88, NaN for NaN.
    """
    xc = min(max(x, np.float32(-87.0)), np.float32(88.0))
    n = np.floor(xc * np.float32(1.44269504088896341) + np.float32(0.5))
    r = xc - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)  # ln 2 in two parts
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)
    value = p * int32_bits_as_float32(np.int32((n + np.float32(127.0)) * np.float32(8388608.0)))
    value = np.float32(0.0) if x < np.float32(-87.0) else value
    value = np.float32(np.inf) if x > np.float32(88.0) else value
    return x if x != x else value  # NaN in, NaN out


@nb.njit(inline="always", cache=True, fastmath=_FAST)
def softplus32(z):
    """log(1 + exp(z)) = max(z, 0) + log1p(w), w = exp(-|z|) in (0, 1], branch-free, division-free.

    Relative error < 5e-7 everywhere (also for large |z|, where torch's threshold at 20 returns z:
    the log1p term is then below half an ulp of z). NaN for NaN.
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
    value = max(z, np.float32(0.0)) + w * q
    return z if z != z else value


@nb.njit(cache=True, nogil=True, fastmath=_FAST)
def softplus_exp_arrays(z, out_softplus, out_exp):
    """Elementwise :func:`softplus32` and :func:`exp32` of 1-D float32 arrays (for the tests)."""
    prefer_512_bit_vectors()
    for i in range(z.shape[0]):
        out_softplus[i] = softplus32(z[i])
        out_exp[i] = exp32(z[i])
