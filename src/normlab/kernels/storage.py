"""How a tensor's values are stored in the NumPy arrays the CPU kernels take (no Numba needed to import this).

Numba has no bfloat16 type and no CPU float16 arithmetic, so half tensors reach a kernel as 16-bit integer arrays
holding their bits: **bfloat16 as uint16**, **float16 as int16** (the signedness only tells the two apart);
float32 arrives as it is. :mod:`normlab.kernels.numba_dtypes` turns the bits into float32 inside a kernel.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

KERNEL_VIEW: dict[torch.dtype, torch.dtype | None] = {
    torch.float32: None,
    torch.bfloat16: torch.uint16,
    torch.float16: torch.int16,
}
"""How each supported torch dtype is stored in a kernel array (``None``: as it is)."""

KERNEL_NUMPY_DTYPE: dict[torch.dtype, type] = {torch.float32: np.float32, torch.bfloat16: np.uint16,
                                               torch.float16: np.int16}
"""The NumPy dtype of a kernel array, for each supported torch dtype."""

KERNEL_SCALAR: dict[torch.dtype, np.generic] = {dtype: np_type(0) for dtype, np_type in KERNEL_NUMPY_DTYPE.items()}
"""A scalar of each kernel array's type: what tells a kernel entry that takes addresses the stored type
(:func:`~normlab.kernels.numba_memory.array_at`)."""


def as_kernel_array(t: Tensor) -> np.ndarray:
    """The NumPy array a kernel takes for a CPU tensor (same memory, shape and strides): float32 as is,
    bf16/fp16 as their bits.

    Examples:
        >>> as_kernel_array(torch.ones(2, dtype=torch.bfloat16)).tolist()  # 1.0 in bfloat16 is 0x3F80
        [16256, 16256]
    """
    view = KERNEL_VIEW[t.dtype]
    if t.requires_grad:
        t = t.detach()
    return (t if view is None else t.view(view)).numpy()

