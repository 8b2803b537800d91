r"""Numba CPU kernels for per-channel statistics over the batch: BatchNorm in training and evaluation.

Layouts, as views of the input: **channels-first** ``(N, C, L)`` (contiguous ``(N, C, *)``) and
**channels-last** ``(R, C)`` (rows of a ``channels_last`` tensor in memory order, or a 2-D ``(N, C)`` input).

.. math::
    \mu_c = \tfrac1M\textstyle\sum x,\quad \sigma^2_c = \tfrac1M\textstyle\sum (x-\mu_c)^2,\quad
    y = (x-\mu_c)\,r_c\,\gamma_c + \beta_c,\quad r_c = (\sigma^2_c+\epsilon)^{-1/2}

over the ``M`` values of channel ``c``. Statistics are gathered in cache-sized blocks (one ``(n, c)`` plane, or
a block of rows) in one pass about a shift — the block's first value — and the block's variance taken as
:math:`q/n - (s/n)^2` (:func:`~normlab.kernels.numba_reduce.shifted_variance`); if the shift lies more than
10 standard deviations from the block's mean, where that formula loses digits, the block takes a second pass
about its mean. Blocks are merged with Chan et al.'s pairwise update :math:`M_2 = M_2^a + M_2^b + \delta^2
n_a n_b / n` (*Updating formulae and a pairwise algorithm for computing sample variances*, 1979), so the
variance is never negative and stays accurate on large offsets. Channels-first runs one ``prange`` task per
channel (its planes stay in L2 between the statistics and the write); channels-last splits the rows into chunks
whose partial statistics the caller merges (:func:`merge_partials`).

Backward (training), with :math:`a_c = \sum \partial_y (x-\mu_c)` and :math:`b_c = \sum\partial_y`:
:math:`\partial\gamma_c = a_c r_c`, :math:`\partial\beta_c = b_c` and
:math:`\partial x = r_c\gamma_c\,\partial y - (x-\mu_c)\,r_c^3\gamma_c a_c/M - r_c\gamma_c b_c/M`.
Evaluation is the per-channel affine map :math:`y = x\,k_c + h_c` (:func:`channel_affine_first` / ``_last``).

The glue calls the ``*_at`` entries, which take the tensors' addresses (:mod:`~normlab.kernels.numba_memory`)
and the sizes ``N, C, L`` (``rows``: the channels-last view of ``R = N·L`` rows), and run the kernel of the
layout.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from normlab.kernels.numba_dtypes import FASTMATH, load, store
from normlab.kernels.numba_memory import array_at
from normlab.kernels.numba_reduce import (
    add_column_grad_sums,
    add_column_shifted_sums,
    add_column_square_sums,
    shifted_variance,
)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def batch_forward_first(x, weight, bias, eps, y, mean, var):
    """Channels-first ``x`` ``(N, C, L)`` → ``y``, with the batch ``mean`` and biased ``var`` per channel."""
    n_samples, channels, length = x.shape
    plane_count = np.float32(length)
    like = y[0, 0, 0]
    for c in prange(channels):
        count = 0.0
        m = 0.0
        m2 = 0.0
        for n in range(n_samples):
            xc = x[n, c]
            k = load(xc[0])  # one pass about a shift; a second about the mean if the shift was an outlier
            s = np.float32(0.0)
            q = np.float32(0.0)
            for j in range(length):
                d = load(xc[j]) - k
                s += d
                q += d * d
            offset, v_plane, exact = shifted_variance(s, q, plane_count)
            plane_mean = k + offset
            sq = v_plane * plane_count
            if not exact:
                sq = np.float32(0.0)
                for j in range(length):
                    d = load(xc[j]) - plane_mean
                    sq += d * d
            merged = count + length
            delta = plane_mean - m
            m += delta * length / merged
            m2 += sq + delta * delta * count * length / merged
            count = merged
        v = m2 / count
        mean[c] = m
        var[c] = v
        scale = np.float32(weight[c] / np.sqrt(v + eps))
        shift = np.float32(bias[c] - m * scale)
        for n in range(n_samples):
            xc = x[n, c]
            yc = y[n, c]
            for j in range(length):
                yc[j] = store(load(xc[j]) * scale + shift, like)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def batch_backward_first(x, grad_y, weight, mean, var, eps, grad_x, grad_w, grad_b):
    """Channels-first training backward: ``grad_x`` ``(N, C, L)``, ``grad_w`` and ``grad_b`` ``(C,)``; ``mean`` and
    ``var`` as the forward wrote them."""
    n_samples, channels, length = x.shape
    inv_m = np.float32(1.0 / (n_samples * length))
    like = grad_x[0, 0, 0]
    for c in prange(channels):
        m = mean[c]
        r = np.float32(1.0) / np.sqrt(var[c] + eps)
        a = np.float32(0.0)
        b = np.float32(0.0)
        for n in range(n_samples):
            xc = x[n, c]
            gc = grad_y[n, c]
            for j in range(length):
                gv = load(gc[j])
                a += gv * (load(xc[j]) - m)
                b += gv
        grad_w[c] = a * r
        grad_b[c] = b
        k_g = r * weight[c]
        k_x = -k_g * r * r * a * inv_m
        k_0 = -k_g * b * inv_m
        for n in range(n_samples):
            xc = x[n, c]
            gc = grad_y[n, c]
            dc = grad_x[n, c]
            for j in range(length):
                dc[j] = store(load(gc[j]) * k_g + (load(xc[j]) - m) * k_x + k_0, like)


@njit(fastmath=FASTMATH, cache=True)
def batch_forward_last(x, weight, bias, eps, chunks, block, y, mean, var):
    """Channels-last rows ``x`` ``(R, C)`` → ``y``, with the batch ``mean`` and biased ``var`` per channel.

    The rows are split into ``chunks`` whose statistics :func:`chunk_stats_last` gathers in parallel; they are
    merged here (Chan et al.), and a second parallel pass applies the per-channel affine map.
    """
    channels = x.shape[1]
    part_count = np.zeros(chunks)
    part_mean = np.zeros((chunks, channels))
    part_m2 = np.zeros((chunks, channels))
    chunk_stats_last(x, chunks, block, part_count, part_mean, part_m2)
    total = 0.0
    m = np.zeros(channels)
    m2 = np.zeros(channels)
    for t in range(chunks):  # merge the chunks (Chan et al.)
        n_b = part_count[t]
        if n_b == 0:
            continue
        merged = total + n_b
        for c in range(channels):
            delta = part_mean[t, c] - m[c]
            m[c] += delta * n_b / merged
            m2[c] += part_m2[t, c] + delta * delta * total * n_b / merged
        total = merged
    scale = np.empty(channels, np.float32)
    shift_c = np.empty(channels, np.float32)
    for c in range(channels):
        v = m2[c] / total
        mean[c] = m[c]
        var[c] = v
        scale[c] = weight[c] / np.sqrt(v + eps)
        shift_c[c] = bias[c] - m[c] * scale[c]
    channel_affine_last(x, scale, shift_c, chunks, y)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def chunk_stats_last(x, chunks, block, part_count, part_mean, part_m2):
    """Per-chunk count, mean and sum of squared deviations of channels-last rows ``x`` ``(R, C)``.

    Each of the ``chunks`` row ranges gathers statistics ``block`` rows at a time (one pass about the block's
    first row, a second pass about the block mean when that shift was an outlier) and merges them (Chan et al.).
    Each parallel loop lives in its own function: measured here, Numba ran a ``prange`` 1.5× slower when the same
    function also held the serial code around it.
    """
    rows, channels = x.shape
    per_chunk = (rows + chunks - 1) // chunks
    for t in prange(chunks):
        m = part_mean[t]
        m2 = part_m2[t]
        sums = np.empty(channels, np.float32)
        sq = np.empty(channels, np.float32)
        shift = np.empty(channels, np.float32)
        count = 0.0
        stop = min(rows, (t + 1) * per_chunk)
        for start in range(t * per_chunk, stop, block):
            end = min(stop, start + block)
            size = end - start
            block_x = x[start:end]
            for c in range(channels):
                shift[c] = load(block_x[0, c])
            sums[:] = 0.0
            sq[:] = 0.0
            add_column_shifted_sums(block_x, shift, sums, sq)
            exact = True
            for c in range(channels):
                offset, v_c, ok = shifted_variance(sums[c], sq[c], np.float32(size))
                exact = exact and ok
                sums[c] = shift[c] + offset  # now the block mean
                sq[c] = v_c * size
            if not exact:  # a shift was an outlier: a second pass about the block means
                sq[:] = 0.0
                add_column_square_sums(block_x, sums, sq)
            merged = count + size
            for c in range(channels):
                delta = sums[c] - m[c]
                m[c] += delta * size / merged
                m2[c] += sq[c] + delta * delta * count * size / merged
            count = merged
        part_count[t] = count


@njit(fastmath=FASTMATH, cache=True)
def batch_backward_last(x, grad_y, weight, mean, var, eps, chunks, grad_x, grad_w, grad_b):
    """Channels-last training backward over rows ``(R, C)``: ``grad_x``, and ``grad_w``, ``grad_b`` ``(C,)``.

    A parallel pass (:func:`chunk_grad_sums_last`) sums ``grad_y * (x - mean)`` and ``grad_y`` per channel and
    chunk; after the chunks are added up, a second parallel pass (:func:`grad_apply_last`) writes
    ``grad_x = grad_y k_g + (x - mean) k_x + k_0``.
    """
    rows, channels = x.shape
    part_a = np.zeros((chunks, channels), np.float32)
    part_b = np.zeros((chunks, channels), np.float32)
    chunk_grad_sums_last(x, grad_y, mean, chunks, part_a, part_b)
    inv_m = np.float32(1.0 / rows)
    k_g = np.empty(channels, np.float32)
    k_x = np.empty(channels, np.float32)
    k_0 = np.empty(channels, np.float32)
    for c in range(channels):
        a = np.float32(0.0)
        b = np.float32(0.0)
        for t in range(chunks):
            a += part_a[t, c]
            b += part_b[t, c]
        r = np.float32(1.0) / np.sqrt(var[c] + eps)
        grad_w[c] = a * r
        grad_b[c] = b
        k_g[c] = r * weight[c]
        k_x[c] = -k_g[c] * r * r * a * inv_m
        k_0[c] = -k_g[c] * b * inv_m
    grad_apply_last(x, grad_y, mean, k_g, k_x, k_0, chunks, grad_x)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def chunk_grad_sums_last(x, grad_y, mean, chunks, part_a, part_b):
    """``part_a[t, c] = sum grad_y (x - mean)`` and ``part_b[t, c] = sum grad_y`` over chunk ``t``'s rows."""
    rows = x.shape[0]
    per_chunk = (rows + chunks - 1) // chunks
    for t in prange(chunks):
        stop = min(rows, (t + 1) * per_chunk)
        add_column_grad_sums(x[t * per_chunk:stop], grad_y[t * per_chunk:stop], mean, part_a[t], part_b[t])


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def grad_apply_last(x, grad_y, mean, k_g, k_x, k_0, chunks, grad_x):
    """``grad_x = grad_y k_g + (x - mean) k_x + k_0`` per channel over channels-last rows ``(R, C)``."""
    rows, channels = x.shape
    per_chunk = (rows + chunks - 1) // chunks
    like = grad_x[0, 0]
    for t in prange(chunks):
        for i in range(t * per_chunk, min(rows, (t + 1) * per_chunk)):
            xi = x[i]
            gi = grad_y[i]
            di = grad_x[i]
            for c in range(channels):
                di[c] = store(load(gi[c]) * k_g[c] + (load(xi[c]) - mean[c]) * k_x[c] + k_0[c], like)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def channel_affine_last(x, scale, shift, chunks, y):
    """``y = x * scale + shift`` per channel over channels-last rows ``(R, C)``."""
    rows, channels = x.shape
    per_chunk = (rows + chunks - 1) // chunks
    like = y[0, 0]
    for t in prange(chunks):
        for i in range(t * per_chunk, min(rows, (t + 1) * per_chunk)):
            xi = x[i]
            yi = y[i]
            for c in range(channels):
                yi[c] = store(load(xi[c]) * scale[c] + shift[c], like)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def channel_affine_first(x, scale, shift, y):
    """``y = x * scale + shift`` per channel over channels-first ``(N, C, L)``."""
    n_samples, channels, length = x.shape
    like = y[0, 0, 0]
    for task in prange(n_samples * channels):
        n = task // channels
        c = task % channels
        xc = x[n, c]
        yc = y[n, c]
        k = scale[c]
        h = shift[c]
        for j in range(length):
            yc[j] = store(load(xc[j]) * k + h, like)


@njit(fastmath=FASTMATH, cache=True)
def fold_running_stats(running_mean, running_var, mean, var, factor, unbias):
    r"""Fold a batch's float32 ``mean`` and biased ``var`` into the running buffers (any kernel dtype), in place:
    :math:`\hat\mu \mathrel{+}= m(\mu_B - \hat\mu)`, :math:`\hat\sigma^2 \mathrel{+}= m(u\,\sigma^2_B - \hat\sigma^2)`
    with ``factor`` :math:`m` and ``unbias`` :math:`u = n/(n-1)`, as
    :func:`~normlab.core.stats.update_running_stats_` does with torch ops."""
    like = running_mean[0]
    for c in range(mean.shape[0]):
        rm = load(running_mean[c])
        rv = load(running_var[c])
        running_mean[c] = store(rm + factor * (mean[c] - rm), like)
        running_var[c] = store(rv + factor * (var[c] * unbias - rv), like)


@njit(cache=True)
def batch_forward_at(x_at, y_at, like, n, c, length, rows, weight_at, bias_at, eps, chunks, block, stats):
    """:func:`batch_forward_last` (``rows``) or :func:`batch_forward_first` on the memory at the addresses
    ``x_at``, ``y_at`` (``like``'s type) and ``weight_at``, ``bias_at`` (``C`` float32 values); ``stats``
    ``(2, C)`` receives the batch mean and biased variance."""
    weight, bias = array_at(weight_at, (c,), np.float32(0)), array_at(bias_at, (c,), np.float32(0))
    if rows:
        shape = (n * length, c)
        batch_forward_last(array_at(x_at, shape, like), weight, bias, np.float32(eps), chunks, block,
                           array_at(y_at, shape, like), stats[0], stats[1])
    else:
        shape3 = (n, c, length)
        batch_forward_first(array_at(x_at, shape3, like), weight, bias, np.float32(eps), array_at(y_at, shape3, like),
                            stats[0], stats[1])


@njit(cache=True)
def batch_backward_at(x_at, grad_y_at, grad_x_at, like, n, c, length, rows, weight_at, stats, eps, chunks,
                      param_grads):
    """:func:`batch_backward_last` (``rows``) or :func:`batch_backward_first` on memory at addresses;
    ``param_grads`` ``(2, C)`` receives the weight and bias gradients."""
    weight = array_at(weight_at, (c,), np.float32(0))
    if rows:
        shape = (n * length, c)
        batch_backward_last(array_at(x_at, shape, like), array_at(grad_y_at, shape, like), weight, stats[0],
                            stats[1], np.float32(eps), chunks, array_at(grad_x_at, shape, like), param_grads[0],
                            param_grads[1])
    else:
        shape3 = (n, c, length)
        batch_backward_first(array_at(x_at, shape3, like), array_at(grad_y_at, shape3, like), weight, stats[0],
                             stats[1], np.float32(eps), array_at(grad_x_at, shape3, like), param_grads[0],
                             param_grads[1])


@njit(cache=True)
def channel_affine_at(x_at, y_at, like, n, c, length, rows, scale, shift, chunks):
    """:func:`channel_affine_last` (``rows``) or :func:`channel_affine_first` on memory at addresses."""
    if rows:
        shape = (n * length, c)
        channel_affine_last(array_at(x_at, shape, like), scale, shift, chunks, array_at(y_at, shape, like))
    else:
        shape3 = (n, c, length)
        channel_affine_first(array_at(x_at, shape3, like), scale, shift, array_at(y_at, shape3, like))


@njit(cache=True)
def fold_running_stats_at(mean_at, var_at, like, stats, factor, unbias):
    """:func:`fold_running_stats` into the running buffers at the addresses ``mean_at``, ``var_at`` (``C`` values
    of ``like``'s type) from the batch ``stats`` ``(2, C)``."""
    shape = (stats.shape[1],)
    fold_running_stats(array_at(mean_at, shape, like), array_at(var_at, shape, like), stats[0], stats[1],
                       np.float32(factor), np.float32(unbias))
