r"""Half-precision storage for Numba kernels, which have no bfloat16 or (on the CPU) float16 type.

A kernel receives half tensors as 16-bit integer arrays holding the bits: **bfloat16 as uint16**, **float16 as
int16** (the signedness only tells the two apart). Inside a kernel, :func:`load` turns one stored value into
float32 and :func:`store` turns a float32 back into the stored type, so one kernel source serves all three
dtypes and accumulates in float32, as the core does:

- bfloat16 is the upper half of a float32: load shifts the bits left by 16; store rounds to nearest-even
  (add ``0x7FFF`` plus the lowest kept bit, then shift right), the rounding torch uses;
- float16 goes through LLVM's ``fpext``/``fptrunc`` (``vcvtph2ps``/``vcvtps2ph`` on x86 with F16C).

Both inline and vectorize. :func:`~normlab.kernels.storage.as_kernel_array` gives the NumPy view a kernel
takes for a tensor.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from normlab.kernels.storage import KERNEL_VIEW, as_kernel_array  # noqa: F401  (re-exported)

FASTMATH = {"reassoc", "contract", "arcp", "nsz"}
"""Numba ``fastmath`` flags of every kernel: re-association (vectorized sums), FMA contraction, reciprocal and
signed-zero freedom — but not "no NaN / no inf", so NaN and inf propagate as in torch."""


@intrinsic
def _u32_as_f32(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@intrinsic
def _f32_as_u32(typingctx, value):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@intrinsic
def _half_bits_to_f32(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.int16), codegen


@intrinsic
def _f32_to_half_bits(typingctx, value):
    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.int16(types.float32), codegen


def load(value):  # pragma: no cover - replaced inside Numba by the overload below
    """float32 of one stored value (float32, bfloat16 bits as uint16, float16 bits as int16)."""
    raise NotImplementedError("load is only callable inside a Numba kernel")


def store(value, like):  # pragma: no cover - replaced inside Numba by the overload below
    """``value`` (float32) converted to the stored type of ``like``."""
    raise NotImplementedError("store is only callable inside a Numba kernel")


@overload(load, inline="always")
def _load_overload(value):
    if value == types.float32:
        return lambda value: value
    if value == types.uint16:
        return lambda value: _u32_as_f32(np.uint32(value) << np.uint32(16))
    if value == types.int16:
        return lambda value: _half_bits_to_f32(value)
    return None


@overload(store, inline="always")
def _store_overload(value, like):
    if like == types.float32:
        return lambda value, like: np.float32(value)
    if like == types.uint16:

        def store_bf16(value, like):
            bits = _f32_as_u32(np.float32(value))
            bits = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
            return np.uint16(bits >> np.uint32(16))

        return store_bf16
    if like == types.int16:
        return lambda value, like: _f32_to_half_bits(np.float32(value))
    return None
