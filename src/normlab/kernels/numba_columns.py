r"""Numba CPU kernels normalizing over the channels at each position of a channels-first input: LayerNorm2d
(ConvNeXt's LayerNorm over ``C``) on a contiguous ``(N, C, H, W)`` tensor.

The input is seen as ``(N, C, L)``; each column ``x[n, :, l]`` is normalized (``center=False``: RMS):

.. math::
    \mu_{nl} = \tfrac1C\textstyle\sum_c x_{ncl},\quad
    \sigma^2_{nl} = \tfrac1C\textstyle\sum_c (x_{ncl}-\mu_{nl})^2,\quad
    y_{ncl} = (x_{ncl}-\mu_{nl})\,r_{nl}\,\gamma_c + \beta_c

A column is strided in memory, so a task takes a tile of ``tile`` neighbouring positions of one sample and
reduces over ``C`` with the positions as the vector lanes; the ``C × tile`` block stays in cache for the
two-pass statistics and the write. The backward is the row-norm backward of :mod:`normlab.kernels.numba_rows`
with rows and columns exchanged; parameter-gradient partials are kept per task ``(tasks, C)``.
(A channels-last input needs no kernel of its own: its channels are rows.)
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from normlab.kernels.numba_dtypes import FASTMATH, load, store
from normlab.kernels.numba_reduce import sum_partials


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def column_forward(x, weight, bias, eps, center, tile, y, mean, rstd):
    """Normalize each column ``x[n, :, l]`` of ``(N, C, L)`` into ``y``; ``mean``, ``rstd`` ``(N, L)``."""
    n_samples, channels, length = x.shape
    tiles = (length + tile - 1) // tile
    inv_c = np.float32(1.0 / channels)
    like = y[0, 0, 0]
    for task in prange(n_samples * tiles):
        n = task // tiles
        start = (task % tiles) * tile
        width = min(length, start + tile) - start
        m = np.zeros(width, np.float32)
        if center:
            for c in range(channels):
                xc = x[n, c, start:start + width]
                for j in range(width):
                    m[j] += load(xc[j])
            for j in range(width):
                m[j] *= inv_c
        sq = np.zeros(width, np.float32)
        for c in range(channels):
            xc = x[n, c, start:start + width]
            for j in range(width):
                d = load(xc[j]) - m[j]
                sq[j] += d * d
        r = np.empty(width, np.float32)
        for j in range(width):
            r[j] = np.float32(1.0) / np.sqrt(sq[j] * inv_c + eps)
            mean[n, start + j] = m[j]
            rstd[n, start + j] = r[j]
        for c in range(channels):
            xc = x[n, c, start:start + width]
            yc = y[n, c, start:start + width]
            w = weight[c]
            b = bias[c]
            for j in range(width):
                yc[j] = store((load(xc[j]) - m[j]) * r[j] * w + b, like)


@njit(fastmath=FASTMATH, cache=True)
def column_backward(x, grad_y, weight, mean, rstd, center, tile, grad_x, grad_w, grad_b):
    """Backward of :func:`column_forward`: ``grad_x`` ``(N, C, L)``, ``grad_w`` and ``grad_b`` ``(C,)``."""
    n_samples, channels, length = x.shape
    partials = np.empty((2, n_samples * ((length + tile - 1) // tile), channels), np.float32)
    _column_backward(x, grad_y, weight, mean, rstd, center, tile, grad_x, partials[0], partials[1])
    sum_partials(partials, grad_w, grad_b)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _column_backward(x, grad_y, weight, mean, rstd, center, tile, grad_x, grad_w, grad_b):
    """The parallel pass of :func:`column_backward`: per-task partials ``grad_w``, ``grad_b`` ``(tasks, C)``."""
    n_samples, channels, length = x.shape
    tiles = (length + tile - 1) // tile
    inv_c = np.float32(1.0 / channels)
    like = grad_x[0, 0, 0]
    for task in prange(n_samples * tiles):
        n = task // tiles
        start = (task % tiles) * tile
        width = min(length, start + tile) - start
        m = mean[n, start:start + width]
        r = rstd[n, start:start + width]
        sum_g = np.zeros(width, np.float32)
        sum_gx = np.zeros(width, np.float32)
        for c in range(channels):
            xc = x[n, c, start:start + width]
            gc = grad_y[n, c, start:start + width]
            w = weight[c]
            dw = np.float32(0.0)
            db = np.float32(0.0)
            for j in range(width):
                gv = load(gc[j])
                xh = (load(xc[j]) - m[j]) * r[j]
                dw += gv * xh
                db += gv
                sum_g[j] += gv * w
                sum_gx[j] += gv * w * xh
            grad_w[task, c] = dw
            grad_b[task, c] = db
        for j in range(width):
            sum_gx[j] *= inv_c
            sum_g[j] = sum_g[j] * inv_c if center else np.float32(0.0)
        for c in range(channels):
            xc = x[n, c, start:start + width]
            gc = grad_y[n, c, start:start + width]
            dc = grad_x[n, c, start:start + width]
            w = weight[c]
            for j in range(width):
                xh = (load(xc[j]) - m[j]) * r[j]
                dc[j] = store(r[j] * (load(gc[j]) * w - sum_g[j] - xh * sum_gx[j]), like)
