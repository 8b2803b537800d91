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
(A channels-last input needs no kernel of its own: its channels are rows.) The glue calls the ``*_at``
entries, which take the tensors' addresses (:mod:`~normlab.kernels.numba_memory`) and the sizes ``N, C, L``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from normlab.kernels.numba_dtypes import FASTMATH, load, store
from normlab.kernels.numba_memory import array_at
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


@njit(cache=True)
def column_forward_at(x_at, y_at, like, n, c, length, weight_at, bias_at, eps, center, tile, stats):
    """:func:`column_forward` on the ``(N, C, L)`` memory at the addresses ``x_at``, ``y_at`` (``like``'s type)
    and ``weight_at``, ``bias_at`` (``C`` float32 values); ``stats`` ``(2, N, L)`` receives mean and rstd."""
    shape = (n, c, length)
    column_forward(
        array_at(x_at, shape, like), array_at(weight_at, (c,), np.float32(0)), array_at(bias_at, (c,), np.float32(0)),
        np.float32(eps), center, tile, array_at(y_at, shape, like), stats[0], stats[1],
    )


@njit(cache=True)
def column_backward_at(x_at, grad_y_at, grad_x_at, like, n, c, length, weight_at, stats, center, tile, param_grads):
    """:func:`column_backward` on memory at addresses; ``param_grads`` ``(2, C)`` receives the weight and bias
    gradients."""
    shape = (n, c, length)
    column_backward(
        array_at(x_at, shape, like), array_at(grad_y_at, shape, like), array_at(weight_at, (c,), np.float32(0)),
        stats[0], stats[1], center, tile, array_at(grad_x_at, shape, like), param_grads[0], param_grads[1],
    )
