r"""Column reductions for the channels-last kernels (per-channel sums over the rows of an ``(R, C)`` block), and the
loops over one contiguous vector that the channels-first kernels share.

In a channels-last tensor the channels of one position are contiguous, so a per-channel sum runs down the
columns: ``out[c] += x[j, c]`` for every row ``j``. Written as one row at a time, each row's additions wait for
the previous row's (a chain through ``out`` in memory), which caps the speed well below the cache's. These
helpers add four rows together first, then accumulate: four times fewer dependent additions, same result up
to rounding order. They are inlined into the kernels that call them.

- :func:`add_column_sums`: :math:`o_c \mathrel{+}= \sum_j x_{jc}`
- :func:`add_column_shifted_sums`: :math:`s_c \mathrel{+}= \sum_j (x_{jc} - k_c)`,
  :math:`q_c \mathrel{+}= \sum_j (x_{jc} - k_c)^2` (one-pass statistics about a shift :math:`k`; see
  :func:`shifted_variance`)
- :func:`add_column_grad_sums`: :math:`a_c \mathrel{+}= \sum_j g_{jc}(x_{jc} - \mu_c)`, :math:`b_c \mathrel{+}=
  \sum_j g_{jc}`
- :func:`sum_partials`: the weight and bias gradients from the per-task partials of a parallel backward
- over one vector: :func:`add_shifted_sums` (statistics), :func:`write_affine` (the normalized output),
  :func:`add_grad_sums` and :func:`write_input_grad` (the backward's sums and input gradient)
"""

from __future__ import annotations

import numpy as np
from numba import njit

from normlab.kernels.numba_dtypes import FASTMATH, load, store


@njit(fastmath=FASTMATH, cache=True, inline="always")
def add_column_sums(x, out):
    """``out[c] += sum_j x[j, c]`` over the rows of the 2-D block ``x``."""
    rows, channels = x.shape
    j = 0
    while j + 4 <= rows:
        r0, r1, r2, r3 = x[j], x[j + 1], x[j + 2], x[j + 3]
        for c in range(channels):
            out[c] += (load(r0[c]) + load(r1[c])) + (load(r2[c]) + load(r3[c]))
        j += 4
    while j < rows:
        r0 = x[j]
        for c in range(channels):
            out[c] += load(r0[c])
        j += 1


@njit(fastmath=FASTMATH, cache=True, inline="always")
def add_column_shifted_sums(x, shift, s, q):
    """``s[c] += sum_j (x[j, c] - shift[c])`` and ``q[c] += sum_j (x[j, c] - shift[c])**2``."""
    rows, channels = x.shape
    j = 0
    while j + 4 <= rows:
        r0, r1, r2, r3 = x[j], x[j + 1], x[j + 2], x[j + 3]
        for c in range(channels):
            k = shift[c]
            d0, d1, d2, d3 = load(r0[c]) - k, load(r1[c]) - k, load(r2[c]) - k, load(r3[c]) - k
            s[c] += (d0 + d1) + (d2 + d3)
            q[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
        j += 4
    while j < rows:
        r0 = x[j]
        for c in range(channels):
            d0 = load(r0[c]) - shift[c]
            s[c] += d0
            q[c] += d0 * d0
        j += 1


SHIFT_LIMIT = 100.0
"""One-pass statistics are trusted while the shift is within ``sqrt(SHIFT_LIMIT)`` standard deviations of the
mean; beyond, the kernels take the same sums again in a second pass about that first mean, and add the second
pass's mean offset to it (the corrected two-pass algorithm): the first pass's rounding then affects neither the
variance nor the mean."""


@njit(fastmath=FASTMATH, cache=True, inline="always")
def shifted_variance(s, q, count):
    r"""``(mean offset, variance, exact)`` from the sums ``s``, ``q`` of ``count`` values taken about a shift.

    The variance is :math:`q/n - (s/n)^2`; rounding makes it inaccurate when the shift is far from the mean
    (:math:`(s/n)^2 \gg` the variance), which ``exact=False`` reports so the caller can take a second pass.
    """
    offset = s / count
    v = q / count - offset * offset
    exact = offset * offset <= SHIFT_LIMIT * v
    return offset, max(v, np.float32(0.0)), exact


@njit(fastmath=FASTMATH, cache=True, inline="always")
def add_column_grad_sums(x, grad, centre, a, b):
    """``a[c] += sum_j grad[j, c] * (x[j, c] - centre[c])`` and ``b[c] += sum_j grad[j, c]``."""
    rows, channels = x.shape
    j = 0
    while j + 4 <= rows:
        x0, x1, x2, x3 = x[j], x[j + 1], x[j + 2], x[j + 3]
        g0, g1, g2, g3 = grad[j], grad[j + 1], grad[j + 2], grad[j + 3]
        for c in range(channels):
            m = centre[c]
            h0, h1, h2, h3 = load(g0[c]), load(g1[c]), load(g2[c]), load(g3[c])
            a[c] += (h0 * (load(x0[c]) - m) + h1 * (load(x1[c]) - m)) + (
                h2 * (load(x2[c]) - m) + h3 * (load(x3[c]) - m)
            )
            b[c] += (h0 + h1) + (h2 + h3)
        j += 4
    while j < rows:
        x0, g0 = x[j], grad[j]
        for c in range(channels):
            h0 = load(g0[c])
            a[c] += h0 * (load(x0[c]) - centre[c])
            b[c] += h0
        j += 1


@njit(fastmath=FASTMATH, cache=True)
def sum_partials(partials, grad_w, grad_b):
    """``grad_w = partials[0].sum(0)`` and ``grad_b = partials[1].sum(0)`` for ``partials`` ``(2, tasks, C)``
    (a parallel backward's per-task parameter gradients), inside Numba: no NumPy reduction between kernels."""
    tasks, channels = partials.shape[1:]
    for c in range(channels):
        grad_w[c] = 0.0
        grad_b[c] = 0.0
    for t in range(tasks):
        for c in range(channels):
            grad_w[c] += partials[0, t, c]
            grad_b[c] += partials[1, t, c]


@njit(fastmath=FASTMATH, cache=True, inline="always")
def add_shifted_sums(v, shift, s, q):
    """``(s + sum_j (v[j] - shift), q + sum_j (v[j] - shift)**2)`` over the 1-D vector ``v`` (see
    :func:`shifted_variance`)."""
    for j in range(v.shape[0]):
        d = load(v[j]) - shift
        s += d
        q += d * d
    return s, q


@njit(fastmath=FASTMATH, cache=True, inline="always")
def write_affine(v, scale, shift, out):
    """``out[j] = v[j] * scale + shift``, stored as ``out``'s type, over the 1-D vectors ``v`` and ``out``."""
    like = out[0]
    for j in range(v.shape[0]):
        out[j] = store(load(v[j]) * scale + shift, like)


@njit(fastmath=FASTMATH, cache=True, inline="always")
def add_grad_sums(v, grad, centre, a, b):
    """``(a + sum_j grad[j] (v[j] - centre), b + sum_j grad[j])`` over the 1-D vectors ``v`` and ``grad``."""
    for j in range(v.shape[0]):
        g = load(grad[j])
        a += g * (load(v[j]) - centre)
        b += g
    return a, b


@njit(fastmath=FASTMATH, cache=True, inline="always")
def write_input_grad(v, grad, centre, k_g, k_x, k_0, out):
    """``out[j] = grad[j] k_g + (v[j] - centre) k_x + k_0``, stored as ``out``'s type: a normalization's input
    gradient with its per-vector coefficients."""
    like = out[0]
    for j in range(v.shape[0]):
        out[j] = store(load(grad[j]) * k_g + (load(v[j]) - centre) * k_x + k_0, like)
