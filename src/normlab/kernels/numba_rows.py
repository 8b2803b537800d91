r"""Numba CPU kernels that normalize each row of a 2-D array: LayerNorm, RMSNorm and their fused residual add.

Forward, per row :math:`x \in \mathbb{R}^n` (LayerNorm: ``center=True``; RMSNorm: ``center=False``, :math:`\mu=0`):

.. math::
    \mu = \tfrac1n\textstyle\sum_j x_j,\quad
    \sigma^2 = \tfrac1n\textstyle\sum_j (x_j-\mu)^2 \ (\text{or } \tfrac1n\sum_j x_j^2),\quad
    r = (\sigma^2+\epsilon)^{-1/2},\quad \hat x_j = (x_j-\mu)\,r,\quad y_j = \hat x_j\gamma_j + \beta_j

Backward, with :math:`g_j = \partial L/\partial y_j \cdot \gamma_j`:

.. math::
    \frac{\partial L}{\partial x_j} = r\Big(g_j - \underbrace{\tfrac1n\textstyle\sum_k g_k}_{\text{LayerNorm only}}
        - \hat x_j\,\tfrac1n\textstyle\sum_k g_k\hat x_k\Big),\qquad
    \frac{\partial L}{\partial \gamma_j} = \sum_{\text{rows}} \frac{\partial L}{\partial y_j}\hat x_j,\qquad
    \frac{\partial L}{\partial \beta_j} = \sum_{\text{rows}} \frac{\partial L}{\partial y_j}

A row stays in L1 between the passes, so memory is read once and written once. The statistics take one pass about a
shift (the row's first value) and are checked: if the shift lies more than 10 standard deviations from the mean,
where :math:`q/n - (s/n)^2` loses digits, a second pass about the mean recomputes the variance and corrects the mean
(:func:`~normlab.kernels.numba_reduce.shifted_variance`) — as accurate as the core's two-pass variance, never
negative. Half types are widened to float32 as they are loaded (:mod:`normlab.kernels.numba_dtypes`). Rows are split
into one chunk per thread (``prange``). The backward takes rows two at a time so that the weight and bias gradients,
summed per chunk into ``(chunks, n)`` partials that are added up after the parallel pass, are read and written half
as often. ``cache=True`` keeps the compiled code on disk (see ``docs/benchmarks.md`` for the cold-start cost).

The fused kernels compute :math:`s = x + r` (rounded to the storage dtype, as ``x + residual`` would be),
write ``s``, and normalize it in the same pass; their backward adds the gradient that reaches ``s`` directly.

The glue calls the ``*_at`` entries, which take the tensors' addresses (:mod:`~normlab.kernels.numba_memory`),
the row count ``R`` and the row length ``n``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from normlab.kernels.numba_dtypes import FASTMATH, load, store
from normlab.kernels.numba_memory import array_at
from normlab.kernels.numba_reduce import shifted_variance, sum_partials

__all__ = [
    "FASTMATH", "add_norm_rows_forward", "add_norm_rows_forward_at", "norm_rows_backward", "norm_rows_backward_at",
    "norm_rows_forward", "norm_rows_forward_at",
]


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _row_statistics(xi, center, n, inv_n, eps):
    """``(mean, 1/std)`` of one row (mean 0 and the root mean square when not centred)."""
    k = load(xi[0]) if center else np.float32(0.0)
    s = np.float32(0.0)
    q = np.float32(0.0)
    for j in range(n):
        d = load(xi[j]) - k
        s += d
        q += d * d
    if not center:
        return np.float32(0.0), np.float32(1.0) / np.sqrt(q * inv_n + eps)
    offset, v, exact = shifted_variance(s, q, np.float32(n))
    m = k + offset
    if not exact:  # the first value was far out: a second pass about the mean, which corrects the mean too
        s = np.float32(0.0)
        q = np.float32(0.0)
        for j in range(n):
            d = load(xi[j]) - m
            s += d
            q += d * d
        offset, v, exact = shifted_variance(s, q, np.float32(n))
        m += offset
    return m, np.float32(1.0) / np.sqrt(v + eps)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def norm_rows_forward(x, weight, bias, eps, center, chunks, y, mean, rstd):
    """Normalize each row of ``x`` (``rows, n``) into ``y``; write each row's mean (0 if not centred) and r."""
    rows, n = x.shape
    like = y[0, 0]
    per_chunk = (rows + chunks - 1) // chunks
    inv_n = np.float32(1.0 / n)
    for c in prange(chunks):
        for i in range(c * per_chunk, min(rows, (c + 1) * per_chunk)):
            xi = x[i]
            m, r = _row_statistics(xi, center, n, inv_n, eps)
            mean[i] = m
            rstd[i] = r
            yi = y[i]
            for j in range(n):
                yi[j] = store((load(xi[j]) - m) * r * weight[j] + bias[j], like)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def add_norm_rows_forward(x, residual, weight, bias, eps, center, chunks, y, s, mean, rstd):
    """``s = x + residual`` (rounded to the storage dtype) and ``y`` = the row normalization of ``s``, one pass."""
    rows, n = x.shape
    like = y[0, 0]
    per_chunk = (rows + chunks - 1) // chunks
    inv_n = np.float32(1.0 / n)
    for c in prange(chunks):
        for i in range(c * per_chunk, min(rows, (c + 1) * per_chunk)):
            xi = x[i]
            ri = residual[i]
            si = s[i]
            for j in range(n):
                si[j] = store(load(xi[j]) + load(ri[j]), like)
            m, r = _row_statistics(si, center, n, inv_n, eps)
            mean[i] = m
            rstd[i] = r
            yi = y[i]
            for j in range(n):
                yi[j] = store((load(si[j]) - m) * r * weight[j] + bias[j], like)


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _row_input_grad(xi, gi, gsi, has_grad_s, weight, m, r, c1, c2, dxi, like):
    """``dx = r (g w - c2 - xhat c1)`` (plus ``grad_s``) for one row."""
    n = xi.shape[0]
    if has_grad_s:
        for j in range(n):
            xh = (load(xi[j]) - m) * r
            dxi[j] = store(r * (load(gi[j]) * weight[j] - c2 - xh * c1) + load(gsi[j]), like)
    else:
        for j in range(n):
            xh = (load(xi[j]) - m) * r
            dxi[j] = store(r * (load(gi[j]) * weight[j] - c2 - xh * c1), like)


@njit(fastmath=FASTMATH, cache=True)
def norm_rows_backward(x, grad_y, grad_s, weight, mean, rstd, center, has_grad_s, chunks, grad_x, grad_w, grad_b):
    """Gradients of the row normalization: ``grad_x`` (``rows, n``, plus ``grad_s`` when ``has_grad_s``) and the
    weight and bias gradients ``grad_w``, ``grad_b`` (``n``, float32)."""
    partials = np.empty((2, chunks, x.shape[1]), np.float32)
    _norm_rows_backward(x, grad_y, grad_s, weight, mean, rstd, center, has_grad_s, chunks, grad_x, partials[0],
                        partials[1])
    sum_partials(partials, grad_w, grad_b)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _norm_rows_backward(x, grad_y, grad_s, weight, mean, rstd, center, has_grad_s, chunks, grad_x, grad_w, grad_b):
    """The parallel pass of :func:`norm_rows_backward`: per-chunk partial sums ``grad_w``, ``grad_b``
    (``chunks, n``)."""
    rows, n = x.shape
    like = grad_x[0, 0]
    per_chunk = (rows + chunks - 1) // chunks
    inv_n = np.float32(1.0 / n)
    for c in prange(chunks):
        dw = grad_w[c]
        db = grad_b[c]
        for j in range(n):
            dw[j] = 0.0
            db[j] = 0.0
        start = c * per_chunk
        stop = min(rows, (c + 1) * per_chunk)
        i = start
        while i < stop:
            pair = i + 1 < stop
            i2 = i + 1 if pair else i  # an odd last row is paired with itself, its second copy weighted 0
            x0, g0, x1, g1 = x[i], grad_y[i], x[i2], grad_y[i2]
            m0, r0, m1, r1 = mean[i], rstd[i], mean[i2], rstd[i2]
            w1 = np.float32(1.0) if pair else np.float32(0.0)
            sg0 = np.float32(0.0)
            sgx0 = np.float32(0.0)
            sg1 = np.float32(0.0)
            sgx1 = np.float32(0.0)
            for j in range(n):
                xh0 = (load(x0[j]) - m0) * r0
                xh1 = (load(x1[j]) - m1) * r1
                h0 = load(g0[j])
                h1 = load(g1[j]) * w1
                dw[j] += h0 * xh0 + h1 * xh1
                db[j] += h0 + h1
                gw0 = h0 * weight[j]
                gw1 = h1 * weight[j]
                sg0 += gw0
                sgx0 += gw0 * xh0
                sg1 += gw1
                sgx1 += gw1 * xh1
            c2_0 = sg0 * inv_n if center else np.float32(0.0)
            _row_input_grad(x0, g0, grad_s[i], has_grad_s, weight, m0, r0, sgx0 * inv_n, c2_0, grad_x[i], like)
            if pair:
                c2_1 = sg1 * inv_n if center else np.float32(0.0)
                _row_input_grad(x1, g1, grad_s[i2], has_grad_s, weight, m1, r1, sgx1 * inv_n, c2_1, grad_x[i2], like)
            i += 2


@njit(cache=True)
def norm_rows_forward_at(x_at, y_at, like, rows, n, weight_at, bias_at, eps, center, chunks, stats):
    """:func:`norm_rows_forward` on the ``(R, n)`` rows at the addresses ``x_at``, ``y_at`` (``like``'s type) and
    ``weight_at``, ``bias_at`` (``n`` float32 values); ``stats`` ``(2, R)`` receives the mean and ``1/sigma``."""
    norm_rows_forward(
        array_at(x_at, (rows, n), like), array_at(weight_at, (n,), np.float32(0)),
        array_at(bias_at, (n,), np.float32(0)), np.float32(eps), center, chunks, array_at(y_at, (rows, n), like),
        stats[0], stats[1],
    )


@njit(cache=True)
def add_norm_rows_forward_at(x_at, residual_at, y_at, s_at, like, rows, n, weight_at, bias_at, eps, center, chunks,
                             stats):
    """:func:`add_norm_rows_forward` on memory at addresses, as :func:`norm_rows_forward_at`; ``s_at`` receives
    ``x + residual``."""
    shape = (rows, n)
    add_norm_rows_forward(
        array_at(x_at, shape, like), array_at(residual_at, shape, like), array_at(weight_at, (n,), np.float32(0)),
        array_at(bias_at, (n,), np.float32(0)), np.float32(eps), center, chunks, array_at(y_at, shape, like),
        array_at(s_at, shape, like), stats[0], stats[1],
    )


@njit(cache=True)
def norm_rows_backward_at(x_at, grad_y_at, grad_s_at, grad_x_at, like, rows, n, weight_at, stats, center, chunks,
                          param_grads):
    """:func:`norm_rows_backward` on memory at addresses (``grad_s_at`` 0: no gradient reaches ``s``);
    ``param_grads`` ``(2, n)`` receives the weight and bias gradients."""
    shape = (rows, n)
    grad_y = array_at(grad_y_at, shape, like)
    has_grad_s = grad_s_at != 0
    norm_rows_backward(
        array_at(x_at, shape, like), grad_y, array_at(grad_s_at, shape, like) if has_grad_s else grad_y,
        array_at(weight_at, (n,), np.float32(0)), stats[0], stats[1], center, has_grad_s, chunks,
        array_at(grad_x_at, shape, like), param_grads[0], param_grads[1],
    )
