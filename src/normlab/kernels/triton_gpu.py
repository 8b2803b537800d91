r"""Triton GPU kernels for the row norms: LayerNorm, RMSNorm and the fused residual add, forward and backward.

One program normalizes one row held entirely in registers (``BLOCK`` = the row length rounded up to a power
of two, at most :data:`MAX_ROW`; longer rows are left to torch). Statistics are float32 whatever the storage
dtype, the variance two-pass over the registers (as the core computes it):

.. math::
    \mu = \tfrac1n\textstyle\sum x,\quad \sigma^2 = \tfrac1n\textstyle\sum(x-\mu)^2
    \ (\text{RMS: } \mu = 0),\quad r = (\sigma^2+\epsilon)^{-1/2},\quad y = (x-\mu)\,r\,\gamma + \beta

The fused forward reads ``x`` and ``r``, writes ``s = x + r`` (rounded to the storage dtype) and ``y``. The
backward, :math:`\partial x = r(g - \overline{g}\,[\text{centred}] - \hat x\,\overline{g\hat x})` with
:math:`g = \partial y\cdot\gamma` (plus the gradient reaching ``s``), runs a fixed number of programs, each
striding over rows and keeping its share of :math:`\partial\gamma = \sum \partial y\,\hat x` and
:math:`\partial\beta = \sum\partial y` in registers; the caller sums the per-program partials.

With ``TRITON_INTERPRET=1`` the same kernels run on the CPU through Triton's interpreter, which is how the tests
check them when no GPU is present.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

MAX_ROW = 16384
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


def block_for(n: int) -> int:
    """The power-of-two block covering a row of ``n`` values."""
    return triton.next_power_of_2(n)


def warps_for(block: int) -> int:
    """Warps per program: more for wider rows so each thread holds at most a few dozen values."""
    return 4 if block <= 2048 else 8 if block <= 8192 else 16


@triton.jit
def norm_forward_kernel(
    X, R, Y, S, W, B, Mean, Rstd, n, eps,
    CENTER: tl.constexpr, HAS_RES: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n
    offs = row * n + cols
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        total = (x + tl.load(R + offs, mask=mask, other=0.0).to(tl.float32)).to(S.dtype.element_ty)
        tl.store(S + offs, total, mask=mask)
        x = total.to(tl.float32)
    if CENTER:
        mean = tl.sum(x, axis=0) / n
    else:
        mean = 0.0
    d = tl.where(mask, x - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=0) / n + eps)
    y = d * rstd
    if HAS_W:
        y = y * tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_B:
        y = y + tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(Mean + row, mean)
    tl.store(Rstd + row, rstd)


@triton.jit
def norm_backward_kernel(
    X, GY, GS, W, Mean, Rstd, DX, PW, PB, rows, n, rows_per_program,
    CENTER: tl.constexpr, HAS_GS: tl.constexpr, HAS_W: tl.constexpr, BLOCK: tl.constexpr,
):
    program = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n
    if HAS_W:
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    else:
        w = tl.where(mask, 1.0, 0.0)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    db = tl.zeros([BLOCK], dtype=tl.float32)
    first = program * rows_per_program
    for i in range(rows_per_program):
        row = first + i
        if row < rows:
            offs = row.to(tl.int64) * n + cols
            x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
            gy = tl.load(GY + offs, mask=mask, other=0.0).to(tl.float32)
            mean = tl.load(Mean + row)
            rstd = tl.load(Rstd + row)
            xhat = tl.where(mask, (x - mean) * rstd, 0.0)
            dw += gy * xhat
            db += gy
            g = gy * w
            c1 = tl.sum(g * xhat, axis=0) / n
            if CENTER:
                c2 = tl.sum(g, axis=0) / n
            else:
                c2 = 0.0
            dx = rstd * (g - c2 - xhat * c1)
            if HAS_GS:
                dx += tl.load(GS + offs, mask=mask, other=0.0).to(tl.float32)
            tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)
    tl.store(PW + program * n + cols, dw, mask=mask)
    tl.store(PB + program * n + cols, db, mask=mask)
