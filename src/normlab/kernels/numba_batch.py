r"""Numba CPU kernels for per-channel statistics over the batch: BatchNorm in training and evaluation.

Layouts, as views of the input: **channels-first** ``(N, C, L)`` (contiguous ``(N, C, *)``) and
**channels-last** ``(R, C)`` (rows of a ``channels_last`` tensor in memory order, or a 2-D ``(N, C)`` input).

.. math::
    \mu_c = \tfrac1M\textstyle\sum x,\quad \sigma^2_c = \tfrac1M\textstyle\sum (x-\mu_c)^2,\quad
    y = (x-\mu_c)\,r_c\,\gamma_c + \beta_c,\quad r_c = (\sigma^2_c+\epsilon)^{-1/2}

over the ``M`` values of channel ``c``. Statistics are gathered in cache-sized blocks (one ``(n, c)`` plane, or a
block of rows) in one pass about a shift — the block's first value — and the block's variance taken as :math:`q/n -
(s/n)^2` (:func:`~normlab.kernels.numba_reduce.shifted_variance`); if the shift lies more than 10 standard
deviations from the block's mean, where that formula loses digits, the block takes a second pass about its mean,
which recomputes the variance and corrects the mean. Blocks are merged with Chan et al.'s pairwise update :math:`M_2
= M_2^a + M_2^b + \delta^2 n_a n_b / n` (*Updating formulae and a pairwise algorithm for computing sample
variances*, 1979), so the variance is never negative and stays accurate on large offsets. Channels-first runs one
``prange`` task per channel (its planes stay in L2 between the statistics and the write). Channels-last splits the
rows into ranges and runs each pass as one parallel region of two phases (:mod:`~normlab.kernels.numba_sync`): the
ranges' partial statistics, merged in range order (:func:`merge_partials`), then the write; so the result does not
depend on which thread took which range.

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
    add_grad_sums,
    add_shifted_sums,
    shifted_variance,
    write_affine,
    write_input_grad,
)
from normlab.kernels.numba_sync import claim, wait_for


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def batch_forward_first(x, weight, bias, eps, y, mean, var):
    """Channels-first ``x`` ``(N, C, L)`` → ``y``, with the batch ``mean`` and biased ``var`` per channel; one
    ``prange`` task per channel (:func:`_normalize_channel`)."""
    for c in prange(x.shape[1]):
        mean[c], var[c] = _normalize_channel(x, c, weight[c], bias[c], eps, y)


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _normalize_channel(x, c, weight, bias, eps, y):
    """Channel ``c`` of ``x`` ``(N, C, L)`` into ``y``, with the scalar ``weight`` and ``bias``; returns its mean and
    biased variance. Each plane's statistics take one pass about a shift, a second about the plane's mean if the
    shift was an outlier; the planes are merged (Chan et al.)."""
    n_samples, length = x.shape[0], x.shape[2]
    plane_count = np.float32(length)
    count = 0.0
    m = 0.0
    m2 = 0.0
    for n in range(n_samples):
        xc = x[n, c]
        k = load(xc[0])
        s, q = add_shifted_sums(xc, k, np.float32(0.0), np.float32(0.0))
        offset, v_plane, exact = shifted_variance(s, q, plane_count)
        plane_mean = k + offset
        if not exact:  # a second pass about the plane's mean, which corrects the mean too
            s, q = add_shifted_sums(xc, plane_mean, np.float32(0.0), np.float32(0.0))
            offset, v_plane, exact = shifted_variance(s, q, plane_count)
            plane_mean += offset
        sq = v_plane * plane_count
        merged = count + length
        delta = plane_mean - m
        m += delta * length / merged
        m2 += sq + delta * delta * count * length / merged
        count = merged
    v = m2 / count
    scale = np.float32(weight / np.sqrt(v + eps))
    shift = np.float32(bias - m * scale)
    for n in range(n_samples):
        write_affine(x[n, c], scale, shift, y[n, c])
    return m, v


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def batch_backward_first(x, grad_y, weight, mean, var, eps, grad_x, grad_w, grad_b):
    """Channels-first training backward: ``grad_x`` ``(N, C, L)``, ``grad_w`` and ``grad_b`` ``(C,)``; ``mean`` and
    ``var`` as the forward wrote them; one ``prange`` task per channel."""
    n_samples, channels, length = x.shape
    inv_m = np.float32(1.0 / (n_samples * length))
    for c in prange(channels):
        m = mean[c]
        r = np.float32(1.0) / np.sqrt(var[c] + eps)
        a = np.float32(0.0)
        b = np.float32(0.0)
        for n in range(n_samples):
            a, b = add_grad_sums(x[n, c], grad_y[n, c], m, a, b)
        grad_w[c] = a * r
        grad_b[c] = b
        k_g = r * weight[c]
        k_x = -k_g * r * r * a * inv_m
        k_0 = -k_g * b * inv_m
        for n in range(n_samples):
            write_input_grad(x[n, c], grad_y[n, c], m, k_g, k_x, k_0, grad_x[n, c])


@njit(cache=True, inline="always")
def row_tasks(rows, workers):
    """Row ranges per phase of a channels-last pass: four per thread (a late thread takes fewer), at most one per
    row."""
    return min(rows, 4 * workers)


@njit(fastmath=FASTMATH, cache=True)
def batch_forward_last(x, weight, bias, eps, workers, block, y, mean, var):
    """Channels-last rows ``x`` ``(R, C)`` → ``y``, with the batch ``mean`` and biased ``var`` per channel, in one
    parallel region on ``workers`` threads (:func:`forward_rows_region`)."""
    rows, channels = x.shape
    tasks = row_tasks(rows, workers)
    part_count = np.zeros(tasks)
    part_mean = np.zeros((tasks, channels))
    part_m2 = np.zeros((tasks, channels))
    forward_rows_region(x, weight, bias, eps, workers, tasks, block, y, part_count, part_mean, part_m2,
                        np.zeros(3, np.int64))
    m = np.zeros(channels)
    m2 = np.zeros(channels)
    total = merge_partials(part_count, part_mean, part_m2, m, m2)
    for c in range(channels):
        mean[c] = m[c]
        var[c] = m2[c] / total


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def forward_rows_region(x, weight, bias, eps, workers, tasks, block, y, part_count, part_mean, part_m2, counters):
    """The forward's parallel region (:mod:`~normlab.kernels.numba_sync`): phase one gathers each of ``tasks``
    row ranges' count, mean and sum of squared deviations (:func:`range_stats_last`) into ``part_*``; once all are
    in, every thread merges them (:func:`merge_partials`) and phase two writes ``y``, range by range. ``counters``:
    three zeros (phase-one claims, phase-one done, phase-two claims). Each parallel loop lives in its own
    function: measured here, Numba ran a ``prange`` 1.5× slower when the same function also held serial code."""
    rows, channels = x.shape
    per_task = (rows + tasks - 1) // tasks
    like = y[0, 0]
    for _ in prange(workers):
        t = claim(counters, 0)
        while t < tasks:
            stop = min(rows, (t + 1) * per_task)
            part_count[t] = range_stats_last(x[t * per_task:stop], block, part_mean[t], part_m2[t])
            claim(counters, 1)
            t = claim(counters, 0)
        wait_for(counters, 1, tasks)
        m = np.zeros(channels)
        m2 = np.zeros(channels)
        total = merge_partials(part_count, part_mean, part_m2, m, m2)
        scale = np.empty(channels, np.float32)
        shift = np.empty(channels, np.float32)
        for c in range(channels):
            scale[c] = weight[c] / np.sqrt(m2[c] / total + eps)
            shift[c] = bias[c] - m[c] * scale[c]
        t = claim(counters, 2)
        while t < tasks:
            for i in range(t * per_task, min(rows, (t + 1) * per_task)):
                xi = x[i]
                yi = y[i]
                for c in range(channels):
                    yi[c] = store(load(xi[c]) * scale[c] + shift[c], like)
            t = claim(counters, 2)


@njit(fastmath=FASTMATH, cache=True, inline="always")
def range_stats_last(x, block, m, m2):
    """Count, and into ``m``, ``m2`` the mean and sum of squared deviations per channel, of the rows ``x``
    ``(R, C)``, gathered ``block`` rows at a time (one pass about the block's first row, a second about the block
    mean when that shift was an outlier) and merged (Chan et al.); returns the count."""
    rows, channels = x.shape
    sums = np.empty(channels, np.float32)
    sq = np.empty(channels, np.float32)
    shift = np.empty(channels, np.float32)
    count = 0.0
    for start in range(0, rows, block):
        end = min(rows, start + block)
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
        if not exact:  # a shift was an outlier: a second pass about the block means, which corrects them too
            shift[:] = sums
            sums[:] = 0.0
            sq[:] = 0.0
            add_column_shifted_sums(block_x, shift, sums, sq)
            for c in range(channels):
                offset, v_c, ok = shifted_variance(sums[c], sq[c], np.float32(size))
                sums[c] = shift[c] + offset
                sq[c] = v_c * size
        merged = count + size
        for c in range(channels):
            delta = sums[c] - m[c]
            m[c] += delta * size / merged
            m2[c] += sq[c] + delta * delta * count * size / merged
        count = merged
    return count


@njit(fastmath=FASTMATH, cache=True, inline="always")
def merge_partials(part_count, part_mean, part_m2, m, m2):
    """Merge per-range counts, means and sums of squared deviations, in range order (Chan et al.), into ``m`` and
    ``m2`` (zeros on entry); returns the total count."""
    total = 0.0
    for t in range(part_count.shape[0]):
        n_b = part_count[t]
        if n_b == 0:
            continue
        merged = total + n_b
        for c in range(m.shape[0]):
            delta = part_mean[t, c] - m[c]
            m[c] += delta * n_b / merged
            m2[c] += part_m2[t, c] + delta * delta * total * n_b / merged
        total = merged
    return total


@njit(fastmath=FASTMATH, cache=True)
def batch_backward_last(x, grad_y, weight, mean, var, eps, workers, grad_x, grad_w, grad_b):
    """Channels-last training backward over rows ``(R, C)``: ``grad_x``, and ``grad_w``, ``grad_b`` ``(C,)``, in one
    parallel region on ``workers`` threads (:func:`backward_rows_region`)."""
    rows, channels = x.shape
    tasks = row_tasks(rows, workers)
    part_a = np.zeros((tasks, channels), np.float32)
    part_b = np.zeros((tasks, channels), np.float32)
    backward_rows_region(x, grad_y, weight, mean, var, eps, workers, tasks, grad_x, part_a, part_b,
                         np.zeros(3, np.int64))
    for c in range(channels):
        a, b = channel_sums(part_a, part_b, c)
        grad_w[c] = a / np.sqrt(var[c] + eps)
        grad_b[c] = b


@njit(fastmath=FASTMATH, cache=True, inline="always")
def channel_sums(part_a, part_b, c):
    """Channel ``c``'s totals of the per-range gradient sums ``part_a``, ``part_b`` ``(ranges, C)``."""
    a = np.float32(0.0)
    b = np.float32(0.0)
    for t in range(part_a.shape[0]):
        a += part_a[t, c]
        b += part_b[t, c]
    return a, b


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def backward_rows_region(x, grad_y, weight, mean, var, eps, workers, tasks, grad_x, part_a, part_b, counters):
    """The backward's parallel region: phase one sums ``grad_y * (x - mean)`` and ``grad_y`` per channel over each
    of ``tasks`` row ranges into ``part_a``, ``part_b``; once all are in, every thread adds them up in range order
    and phase two writes ``grad_x = grad_y k_g + (x - mean) k_x + k_0``, range by range."""
    rows, channels = x.shape
    per_task = (rows + tasks - 1) // tasks
    inv_m = np.float32(1.0 / rows)
    like = grad_x[0, 0]
    for _ in prange(workers):
        t = claim(counters, 0)
        while t < tasks:
            stop = min(rows, (t + 1) * per_task)
            add_column_grad_sums(x[t * per_task:stop], grad_y[t * per_task:stop], mean, part_a[t], part_b[t])
            claim(counters, 1)
            t = claim(counters, 0)
        wait_for(counters, 1, tasks)
        k_g = np.empty(channels, np.float32)
        k_x = np.empty(channels, np.float32)
        k_0 = np.empty(channels, np.float32)
        for c in range(channels):
            a, b = channel_sums(part_a, part_b, c)
            inv_std = np.float32(1.0) / np.sqrt(var[c] + eps)
            k_g[c] = inv_std * weight[c]
            k_x[c] = -k_g[c] * inv_std * inv_std * a * inv_m
            k_0[c] = -k_g[c] * b * inv_m
        t = claim(counters, 2)
        while t < tasks:
            for i in range(t * per_task, min(rows, (t + 1) * per_task)):
                xi = x[i]
                gi = grad_y[i]
                di = grad_x[i]
                for c in range(channels):
                    di[c] = store(load(gi[c]) * k_g[c] + (load(xi[c]) - mean[c]) * k_x[c] + k_0[c], like)
            t = claim(counters, 2)


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
    n_samples, channels = x.shape[0], x.shape[1]
    for task in prange(n_samples * channels):
        n = task // channels
        c = task % channels
        write_affine(x[n, c], scale[c], shift[c], y[n, c])


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
def batch_forward_at(x_at, y_at, like, n, c, length, rows, weight_at, bias_at, eps, workers, block, stats):
    """:func:`batch_forward_last` (``rows``) or :func:`batch_forward_first` on the memory at the addresses
    ``x_at``, ``y_at`` (``like``'s type) and ``weight_at``, ``bias_at`` (``C`` float32 values); ``stats``
    ``(2, C)`` receives the batch mean and biased variance."""
    weight, bias = array_at(weight_at, (c,), np.float32(0)), array_at(bias_at, (c,), np.float32(0))
    if rows:
        shape = (n * length, c)
        batch_forward_last(array_at(x_at, shape, like), weight, bias, np.float32(eps), workers, block,
                           array_at(y_at, shape, like), stats[0], stats[1])
    else:
        shape3 = (n, c, length)
        batch_forward_first(array_at(x_at, shape3, like), weight, bias, np.float32(eps), array_at(y_at, shape3, like),
                            stats[0], stats[1])


@njit(cache=True)
def batch_backward_at(x_at, grad_y_at, grad_x_at, like, n, c, length, rows, weight_at, stats, eps, workers,
                      param_grads):
    """:func:`batch_backward_last` (``rows``) or :func:`batch_backward_first` on memory at addresses;
    ``param_grads`` ``(2, C)`` receives the weight and bias gradients."""
    weight = array_at(weight_at, (c,), np.float32(0))
    if rows:
        shape = (n * length, c)
        batch_backward_last(array_at(x_at, shape, like), array_at(grad_y_at, shape, like), weight, stats[0],
                            stats[1], np.float32(eps), workers, array_at(grad_x_at, shape, like), param_grads[0],
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
