"""Kernel arrays on memory given by its address, so that the glue hands a kernel integers instead of NumPy arrays.

Why: in a training step every call of the glue runs with cold caches (the kernel before it streamed megabytes
through them), and there each NumPy call a fast path makes to reach a kernel — ``tensor.numpy()``, a
``reshape`` to the kernel's view — costs 8–15 µs, where passing an integer costs nothing. So the glue passes
``tensor.data_ptr()`` and the sizes, and a small *entry* (``*_at`` in the kernel modules) builds the
C-contiguous arrays inside Numba with :func:`array_at` and calls the array kernel.

The caller answers for the memory: a dense tensor of that shape and stored type (:data:`~normlab.kernels.
storage.KERNEL_SCALAR`), alive for the whole call.
"""

from __future__ import annotations

from numba import carray, types
from numba.extending import intrinsic, overload
from numba.np import numpy_support


@intrinsic
def _pointer(typingctx, address):
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.voidptr))

    return types.voidptr(types.intp), codegen


def array_at(address, shape, like):  # pragma: no cover - replaced inside Numba by the overload below
    """The C-contiguous array of ``shape`` (a tuple) at ``address`` (an int), of the type of the scalar ``like``
    (e.g. ``np.float32(0)``; bfloat16 bits are ``np.uint16``). No copy: the array is the memory."""
    raise NotImplementedError("array_at is only callable inside a Numba kernel")


@overload(array_at, inline="always")
def _array_at_overload(address, shape, like):
    dtype = numpy_support.as_dtype(like)

    def array_at_impl(address, shape, like):
        return carray(_pointer(address), shape, dtype)

    return array_at_impl
