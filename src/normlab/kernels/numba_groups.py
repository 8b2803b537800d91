r"""Numba CPU kernels for per-sample channel-group statistics: GroupNorm, InstanceNorm (one channel per group)
and their RMS variant (``center=False``, e.g. FilterResponseNorm), in both memory formats.

Layouts, as 3-D views of the input: **channels-first** ``(N, C, L)`` (a contiguous ``(N, C, *)`` tensor,
``L`` = the product of the spatial dims) and **channels-last** ``(N, L, C)`` (a ``channels_last`` tensor seen
in memory order). Statistics are taken per sample ``n`` and group ``g`` over the ``M = (C/G)·L`` values of the
group's channels:

.. math::
    \mu_{ng} = \tfrac1M \textstyle\sum x,\quad \sigma^2_{ng} = \tfrac1M \textstyle\sum (x-\mu_{ng})^2,\quad
    r_{ng} = (\sigma^2_{ng}+\epsilon)^{-1/2},\quad y = (x-\mu_{ng})\,r_{ng}\,\gamma_c + \beta_c

Backward, with per-channel sums :math:`a_c = \sum_l \partial_y (x-\mu)` and :math:`b_c = \sum_l \partial_y`
(which are also the parameter gradients: :math:`\partial\gamma_c = \sum_n a_c r`, :math:`\partial\beta_c =
\sum_n b_c`), and :math:`s_1 = \sum_{c\in g}\gamma_c b_c`, :math:`s_2 = \sum_{c\in g}\gamma_c a_c r`:

.. math::
    \partial x = r\gamma_c\,\partial y - (x-\mu)\,\frac{r^2 s_2}{M} - \frac{r\,s_1}{M}\ (\text{centred only})

The statistics take one pass about a shift (a value of the group; per channel, channels-last) and are
checked: if the shift lies more than 10 standard deviations from the mean, where :math:`q/n - (s/n)^2` loses
digits, a second pass about the mean recomputes the variance and corrects the mean
(:func:`~normlab.kernels.numba_reduce.shifted_variance`). The group (channels-first) or the sample
(channels-last) stays in cache between the statistics and the write, so memory is read about once and written
once; the backward is two passes over the same cached block. Channels-first runs one ``prange`` task per
``(n, g)`` and, for channels shorter than :data:`SHORT_CHANNEL`, takes a group's statistics in one loop over its
adjacent channels (:func:`group_forward_short`); channels-last runs one task per sample. Per-sample
parameter-gradient partials ``(N, C)`` are summed after the parallel pass
(:func:`~normlab.kernels.numba_reduce.sum_partials`).

The glue calls the entries :func:`group_forward_at` and :func:`group_backward_at`, which take the tensors'
addresses (:mod:`~normlab.kernels.numba_memory`) and the sizes ``N, C, L``, and run the kernel of the layout.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from normlab.kernels.numba_dtypes import FASTMATH, load, store
from normlab.kernels.numba_memory import array_at
from normlab.kernels.numba_reduce import (
    add_column_grad_sums,
    add_column_shifted_sums,
    add_grad_sums,
    add_shifted_sums,
    shifted_variance,
    sum_partials,
    write_affine,
    write_input_grad,
)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def group_forward_first(x, groups, weight, bias, eps, center, y, mean, var):
    """Channels-first ``x`` ``(N, C, L)`` → ``y``; ``mean``, ``var`` ``(N, G)`` (mean 0 and the mean square when
    not centred). One ``prange`` task per ``(n, g)`` (:func:`_normalize_group`)."""
    for task in prange(x.shape[0] * groups):
        n, g = task // groups, task % groups
        _normalize_group(x[n], None, g, groups, weight, bias, eps, center, y[n], mean[n], var[n])


SHORT_CHANNEL = 192
"""Channels-first GroupNorm takes a group's statistics in one loop over the group (:func:`group_forward_short`)
when its channels hold fewer values than this: a vectorized loop takes 64 float32 values an iteration, so a
channel of 7×7 values would run its own loop entirely in the scalar tail (the forward is then 1.5× slower).
Chosen from ``benchmarks/group_norm_short_channels.py``: one loop per group was faster up to 12×12 values a
channel, about even at 14×14 (fp32; faster in bf16) and slower at 32×32 (its shapes differ in channels per group
too, so the cut is a rounded one)."""


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def group_forward_short(x, groups, weight, bias, eps, center, y, mean, var):
    """:func:`group_forward_first` for short channels (``L <`` :data:`SHORT_CHANNEL`): each group's statistics
    take one loop over its values, which are adjacent in NCHW."""
    n_samples, channels, length = x.shape
    blocks = x.reshape((n_samples, groups, channels // groups * length))
    for task in prange(n_samples * groups):
        n, g = task // groups, task % groups
        _normalize_group(x[n], blocks[n, g], g, groups, weight, bias, eps, center, y[n], mean[n], var[n])


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _normalize_group(x, block, g, groups, weight, bias, eps, center, y, mean, var):
    """Group ``g`` of one sample ``x`` ``(C, L)`` into ``y``; its mean and variance into ``mean[g]``, ``var[g]``.
    ``block``: the group's values as one vector, to take the statistics in one loop, or ``None`` for one loop per
    channel."""
    per_group = x.shape[0] // groups
    first = g * per_group
    count = np.float32(per_group * x.shape[1])
    k = load(x[first, 0]) if center else np.float32(0.0)  # shift: one value of the group
    s, q = _group_sums(x, block, first, per_group, k)
    if center:
        offset, v, exact = shifted_variance(s, q, count)
        m = k + offset
        if not exact:  # the shift was an outlier: a second pass about the mean, which corrects the mean too
            s, q = _group_sums(x, block, first, per_group, m)
            offset, v, exact = shifted_variance(s, q, count)
            m += offset
    else:
        m = np.float32(0.0)
        v = q / count
    r = np.float32(1.0) / np.sqrt(v + eps)
    mean[g] = m
    var[g] = v
    for c in range(first, first + per_group):
        scale = r * weight[c]
        write_affine(x[c], scale, bias[c] - m * scale, y[c])


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _group_sums(x, block, first, per_group, shift):
    """:func:`~normlab.kernels.numba_reduce.add_shifted_sums` over the channels ``first .. first + per_group`` of
    ``x`` ``(C, L)``: one loop over ``block`` (the same values, contiguous), or one loop per channel when ``block``
    is ``None`` (a branch Numba resolves when it compiles)."""
    if block is not None:
        return add_shifted_sums(block, shift, np.float32(0.0), np.float32(0.0))
    s = np.float32(0.0)
    q = np.float32(0.0)
    for c in range(first, first + per_group):
        s, q = add_shifted_sums(x[c], shift, s, q)
    return s, q


@njit(fastmath=FASTMATH, cache=True)
def group_backward_first(x, grad_y, groups, weight, mean, var, eps, center, grad_x, grad_w, grad_b):
    """Channels-first backward: ``grad_x`` ``(N, C, L)``, ``grad_w`` and ``grad_b`` ``(C,)``; ``mean``, ``var``
    ``(N, G)`` as the forward wrote them."""
    partials = np.empty((2, x.shape[0], x.shape[1]), np.float32)
    _group_backward_first(x, grad_y, groups, weight, mean, var, eps, center, grad_x, partials[0], partials[1])
    sum_partials(partials, grad_w, grad_b)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _group_backward_first(x, grad_y, groups, weight, mean, var, eps, center, grad_x, grad_w, grad_b):
    """The parallel pass of :func:`group_backward_first`: per-sample partials ``grad_w``, ``grad_b`` ``(N, C)``;
    one ``prange`` task per ``(n, g)`` (:func:`_group_grad`)."""
    inv_m = np.float32(groups / x[0].size)
    for task in prange(x.shape[0] * groups):
        n, g = task // groups, task % groups
        r = np.float32(1.0) / np.sqrt(var[n, g] + eps)
        _group_grad(x[n], grad_y[n], g, groups, weight, mean[n, g], r, inv_m, center, grad_x[n], grad_w[n], grad_b[n])


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _group_grad(x, grad_y, g, groups, weight, m, r, inv_m, center, grad_x, grad_w, grad_b):
    """Group ``g`` of one sample ``(C, L)``: ``grad_x``, and the sample's parameter-gradient partials ``grad_w``,
    ``grad_b`` ``(C,)`` for its channels; ``m``, ``r``: the group's mean and 1/std."""
    per_group = x.shape[0] // groups
    first = g * per_group
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    for c in range(first, first + per_group):
        a, b = add_grad_sums(x[c], grad_y[c], m, np.float32(0.0), np.float32(0.0))
        grad_w[c] = a * r
        grad_b[c] = b
        s1 += weight[c] * b
        s2 += weight[c] * a * r
    k_x = -r * r * s2 * inv_m
    k_0 = -r * s1 * inv_m if center else np.float32(0.0)
    for c in range(first, first + per_group):
        write_input_grad(x[c], grad_y[c], m, r * weight[c], k_x, k_0, grad_x[c])


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def group_forward_last(x, groups, weight, bias, eps, center, y, mean, var):
    """Channels-last ``x`` ``(N, L, C)`` → ``y``; ``mean``, ``var`` ``(N, G)``."""
    n_samples, length, channels = x.shape
    per_group = channels // groups
    inv_m = np.float32(1.0 / (per_group * length))
    like = y[0, 0, 0]
    count = np.float32(length)
    for n in prange(n_samples):
        # one pass: per-channel sums about a shift (the first position's value), then per-group statistics
        # from per-channel means and variances; a second pass about the group means if a shift was an outlier
        k = np.zeros(channels, np.float32)
        if center:
            for c in range(channels):
                k[c] = load(x[n, 0, c])
        s = np.zeros(channels, np.float32)
        q = np.zeros(channels, np.float32)
        add_column_shifted_sums(x[n], k, s, q)
        centre = np.zeros(channels, np.float32)
        squares = np.zeros(channels, np.float32)  # per channel: sum of squares about its group's mean
        exact = True
        for g in range(groups):
            group_total = np.float32(0.0)
            for c in range(g * per_group, (g + 1) * per_group):
                offset, v_c, ok = shifted_variance(s[c], q[c], count)
                exact = exact and (ok or not center)
                centre[c] = k[c] + offset  # the channel's mean for now
                squares[c] = v_c * count if center else q[c]
                group_total += centre[c]
            m_g = group_total / per_group if center else np.float32(0.0)
            for c in range(g * per_group, (g + 1) * per_group):
                if center:
                    d = centre[c] - m_g
                    squares[c] += count * d * d
                centre[c] = m_g
        s[:] = 0.0  # per channel: sum of deviations from its group's mean (0 unless a second pass runs)
        if not exact:  # a second pass about the group means, which corrects the means too
            squares[:] = 0.0
            add_column_shifted_sums(x[n], centre, s, squares)
        scale = np.empty(channels, np.float32)
        shift = np.empty(channels, np.float32)
        for g in range(groups):
            sd = np.float32(0.0)
            sq = np.float32(0.0)
            for c in range(g * per_group, (g + 1) * per_group):
                sd += s[c]
                sq += squares[c]
            offset = sd * inv_m
            v = max(sq * inv_m - offset * offset, np.float32(0.0))
            r = np.float32(1.0) / np.sqrt(v + eps)
            m = centre[g * per_group] + offset
            mean[n, g] = m
            var[n, g] = v
            for c in range(g * per_group, (g + 1) * per_group):
                scale[c] = r * weight[c]
                shift[c] = bias[c] - m * scale[c]
        for j in range(length):
            xj = x[n, j]
            yj = y[n, j]
            for c in range(channels):
                yj[c] = store(load(xj[c]) * scale[c] + shift[c], like)


@njit(fastmath=FASTMATH, cache=True)
def group_backward_last(x, grad_y, groups, weight, mean, var, eps, center, grad_x, grad_w, grad_b):
    """Channels-last backward: ``grad_x`` ``(N, L, C)``, ``grad_w`` and ``grad_b`` ``(C,)``."""
    partials = np.empty((2, x.shape[0], x.shape[2]), np.float32)
    _group_backward_last(x, grad_y, groups, weight, mean, var, eps, center, grad_x, partials[0], partials[1])
    sum_partials(partials, grad_w, grad_b)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _group_backward_last(x, grad_y, groups, weight, mean, var, eps, center, grad_x, grad_w, grad_b):
    """The parallel pass of :func:`group_backward_last`: per-sample partials ``grad_w``, ``grad_b`` ``(N, C)``."""
    n_samples, length, channels = x.shape
    per_group = channels // groups
    inv_m = np.float32(1.0 / (per_group * length))
    like = grad_x[0, 0, 0]
    for n in prange(n_samples):
        centre = np.empty(channels, np.float32)
        for c in range(channels):
            centre[c] = mean[n, c // per_group]
        a = np.zeros(channels, np.float32)
        b = np.zeros(channels, np.float32)
        add_column_grad_sums(x[n], grad_y[n], centre, a, b)
        k_g = np.empty(channels, np.float32)
        k_x = np.empty(channels, np.float32)
        k_0 = np.empty(channels, np.float32)
        for g in range(groups):
            r = np.float32(1.0) / np.sqrt(var[n, g] + eps)
            s1 = np.float32(0.0)
            s2 = np.float32(0.0)
            for c in range(g * per_group, (g + 1) * per_group):
                grad_w[n, c] = a[c] * r
                grad_b[n, c] = b[c]
                s1 += weight[c] * b[c]
                s2 += weight[c] * a[c] * r
            for c in range(g * per_group, (g + 1) * per_group):
                k_g[c] = r * weight[c]
                k_x[c] = -r * r * s2 * inv_m
                k_0[c] = -r * s1 * inv_m if center else np.float32(0.0)
        for j in range(length):
            xj = x[n, j]
            gj = grad_y[n, j]
            dj = grad_x[n, j]
            for c in range(channels):
                dj[c] = store(load(gj[c]) * k_g[c] + (load(xj[c]) - centre[c]) * k_x[c] + k_0[c], like)


@njit(cache=True)
def group_forward_at(x_at, y_at, like, n, c, length, last, groups, weight_at, bias_at, eps, center, stats):
    """:func:`group_forward_last` (``last``), :func:`group_forward_short` (``L <`` :data:`SHORT_CHANNEL`) or
    :func:`group_forward_first` on the memory at the addresses ``x_at``, ``y_at`` (``N·C·L`` values of ``like``'s
    type) and ``weight_at``, ``bias_at`` (``C`` float32 values); ``stats`` ``(2, N, G)`` receives the mean and the
    variance."""
    shape = (n, length, c) if last else (n, c, length)
    x, y = array_at(x_at, shape, like), array_at(y_at, shape, like)
    weight, bias = array_at(weight_at, (c,), np.float32(0)), array_at(bias_at, (c,), np.float32(0))
    if last:
        group_forward_last(x, groups, weight, bias, np.float32(eps), center, y, stats[0], stats[1])
    elif length < SHORT_CHANNEL:
        group_forward_short(x, groups, weight, bias, np.float32(eps), center, y, stats[0], stats[1])
    else:
        group_forward_first(x, groups, weight, bias, np.float32(eps), center, y, stats[0], stats[1])


@njit(cache=True)
def group_backward_at(x_at, grad_y_at, grad_x_at, like, n, c, length, last, groups, weight_at, stats, eps, center,
                      param_grads):
    """:func:`group_backward_last` (``last``) or :func:`group_backward_first` on the memory at the addresses
    ``x_at``, ``grad_y_at``, ``grad_x_at`` and ``weight_at``, with ``stats`` as the forward wrote them;
    ``param_grads`` ``(2, C)`` receives the weight and bias gradients."""
    shape = (n, length, c) if last else (n, c, length)
    x, grad_y, grad_x = array_at(x_at, shape, like), array_at(grad_y_at, shape, like), array_at(grad_x_at, shape, like)
    weight = array_at(weight_at, (c,), np.float32(0))
    kernel_args = (groups, weight, stats[0], stats[1], np.float32(eps), center, grad_x, param_grads[0], param_grads[1])
    if last:
        group_backward_last(x, grad_y, *kernel_args)
    else:
        group_backward_first(x, grad_y, *kernel_args)
