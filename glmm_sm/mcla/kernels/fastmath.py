"""Vectorisable ``exp``, ``log1p`` and ``log`` (of numbers at least 1) for the numba kernels.

numba calls the scalar libm ``exp``/``log1p``, which stops LLVM from vectorising the hot loop.
These versions are plain arithmetic (range reduction plus a polynomial) and are inlined into
the kernel, where they vectorise.  Relative error is below 1e-15 on the ranges the kernel uses;
``tests/test_fastmath.py`` checks that against numpy.
"""

from __future__ import annotations

import math

import numba
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

LOG2E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
LN2 = 0.6931471805599453
SQRT2_M1 = 0.41421356237309503

# exp(r) on |r| <= ln(2)/2 by its Taylor series to degree 13 (truncation below 2e-16).
_E = [1.0 / math.factorial(k) for k in range(14)]
# atanh(s)/s = sum s^(2k)/(2k+1), |s| <= 0.1716: twelve terms reach 1e-19.
_A = [1.0 / (2 * k + 1) for k in range(12)]

E0, E1, E2, E3, E4, E5, E6, E7, E8, E9, E10, E11, E12, E13 = _E
A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11 = _A

_JIT = dict(inline="always", fastmath={"nsz", "arcp", "contract", "afn"}, error_model="numpy")


@intrinsic
def _bits_to_float(typingctx, bits):
    """Reinterpret the bits of an int64 as a float64 (an LLVM ``bitcast``)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@intrinsic
def _float_to_bits(typingctx, x):
    """Reinterpret the bits of a float64 as an int64 (an LLVM ``bitcast``)."""
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


#: 1.5 * 2**52: adding it to a float64 of magnitude below 2**51 rounds it to the nearest
#: integer, which then stands in the low bits of the sum's mantissa.
ROUND_MAGIC = 6755399441055744.0


@numba.njit(**_JIT)
def fexp(x):
    """``exp(x)`` for ``x`` in [-708, 709]; smaller ``x`` are treated as -708.

    ``n``, the nearest integer to ``x / ln 2``, is found by adding :data:`ROUND_MAGIC`
    and read back from the sum's bits: integer adds and shifts, which vectorise with AVX2,
    where a float-to-int64 conversion does not (it would be done lane by lane)."""
    x = max(x, -708.0)
    kn = x * LOG2E + ROUND_MAGIC
    n = kn - ROUND_MAGIC
    r = (x - n * LN2_HI) - n * LN2_LO
    p = E13
    p = p * r + E12
    p = p * r + E11
    p = p * r + E10
    p = p * r + E9
    p = p * r + E8
    p = p * r + E7
    p = p * r + E6
    p = p * r + E5
    p = p * r + E4
    p = p * r + E3
    p = p * r + E2
    p = p * r + E1
    p = p * r + E0
    scale = _bits_to_float((_float_to_bits(kn) - _float_to_bits(ROUND_MAGIC) + 1023) << 52)
    return p * scale


# 1/x on [1, 2]: a cubic start (relative error below 0.0037, least squares at Chebyshev
# spacing) and three Newton steps y <- y + y (1 - x y), each squaring the error: 1 ulp.
R0, R1, R2, R3 = 2.8256078598633225, -2.942528314130292, 1.338998557054608, -0.22479951017024538


@numba.njit(**_JIT)
def frecip_unit(x):
    """``1 / x`` for ``x`` in [1, 2], without a division (a division is the slowest
    vector instruction in the kernel's loops: several times the cost of these nine
    fused multiply-adds)."""
    y = ((R3 * x + R2) * x + R1) * x + R0
    e = 1.0 - x * y
    y = y + y * e
    e = 1.0 - x * y
    y = y + y * e
    e = 1.0 - x * y
    return y + y * e


@numba.njit(**_JIT)
def flog1p_unit(t):
    """``log(1 + t)`` for ``t`` in [0, 1]."""
    big = t > SQRT2_M1
    num = t - 1.0 if big else t
    den = t + 3.0 if big else t + 2.0
    s = num / den
    s2 = s * s
    p = A11
    p = p * s2 + A10
    p = p * s2 + A9
    p = p * s2 + A8
    p = p * s2 + A7
    p = p * s2 + A6
    p = p * s2 + A5
    p = p * s2 + A4
    p = p * s2 + A3
    p = p * s2 + A2
    p = p * s2 + A1
    p = p * s2 + A0
    return 2.0 * s * p + (LN2 if big else 0.0)


#: A float64's mantissa bits, and the exponent field of the numbers in [1, 2).
MANTISSA_BITS = (1 << 52) - 1
EXPONENT_ONE = 1023 << 52


@numba.njit(**_JIT)
def flog_ge1(x):
    """``log(x)`` for ``x`` in [1, 2**1000]: with ``x = 2**n m``, ``m`` in [1, 2) (read
    from the bits, the exponent turned into a float by :data:`ROUND_MAGIC` as in
    :func:`fexp`: integer operations that vectorise), ``n ln 2 + log1p(m - 1)``."""
    b = _float_to_bits(x)
    n = _bits_to_float(_float_to_bits(ROUND_MAGIC) + (b >> 52) - 1023) - ROUND_MAGIC
    m = _bits_to_float((b & MANTISSA_BITS) | EXPONENT_ONE)
    return n * LN2_HI + (n * LN2_LO + flog1p_unit(m - 1.0))


@numba.njit(cache=True, error_model="numpy")
def _fexp_array(x, out):  # pragma: no cover - exercised through tests
    for i in range(x.shape[0]):
        out[i] = fexp(x[i])


@numba.njit(cache=True, error_model="numpy")
def _frecip_array(x, out):  # pragma: no cover - exercised through tests
    for i in range(x.shape[0]):
        out[i] = frecip_unit(x[i])


@numba.njit(cache=True, error_model="numpy")
def _flog1p_array(x, out):  # pragma: no cover - exercised through tests
    for i in range(x.shape[0]):
        out[i] = flog1p_unit(x[i])


@numba.njit(cache=True, error_model="numpy")
def _flog_ge1_array(x, out):  # pragma: no cover - exercised through tests
    for i in range(x.shape[0]):
        out[i] = flog_ge1(x[i])
