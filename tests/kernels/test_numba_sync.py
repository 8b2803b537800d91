"""The task counters of :mod:`normlab.kernels.numba_sync`, and the two-phase channels-last BatchNorm region built on
them, with more workers than threads (``prange`` iterations then run one after another: no wait may hang)."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit, prange

from normlab.kernels import numba_batch
from normlab.kernels.numba_sync import claim, wait_for


@njit(parallel=True)
def _two_phase_counts(workers, tasks, first, second, counters):
    """Phase one counts each claimed task in ``first``; phase two copies the sum of ``first`` into ``second``
    (right only if every phase-one task was done before any thread left the wait)."""
    for _ in prange(workers):
        t = claim(counters, 0)
        while t < tasks:
            first[t] += 1
            claim(counters, 1)
            t = claim(counters, 0)
        wait_for(counters, 1, tasks)
        total = 0
        for r in range(tasks):
            total += first[r]
        t = claim(counters, 2)
        while t < tasks:
            second[t] = total
            t = claim(counters, 2)


@pytest.mark.parametrize("workers, tasks", [(1, 1), (2, 5), (7, 3), (9, 64)])
def test_every_task_is_claimed_once_and_phase_two_sees_all_of_phase_one(workers, tasks):
    first, second = np.zeros(tasks, np.int64), np.zeros(tasks, np.int64)
    _two_phase_counts(workers, tasks, first, second, np.zeros(3, np.int64))
    assert first.tolist() == [1] * tasks
    assert second.tolist() == [tasks] * tasks


ROW_SHAPES = {  # (rows, channels, workers): fewer rows than tasks, more workers than threads, odd sizes
    "3 rows, 9 workers": (3, 5, 9),
    "37 rows, 1 worker": (37, 4, 1),
    "101 rows, 6 workers": (101, 7, 6),
    "1000 rows, 2 workers": (1000, 16, 2),
}


@pytest.mark.parametrize("rows, channels, workers", ROW_SHAPES.values(), ids=ROW_SHAPES.keys())
def test_channels_last_batch_norm_region_matches_a_float64_reference(rows, channels, workers):
    rng = np.random.default_rng(rows)
    x = (rng.standard_normal((rows, channels)) * 3 + 5).astype(np.float32)
    grad_y = rng.standard_normal((rows, channels)).astype(np.float32)
    weight = rng.uniform(0.5, 2, channels).astype(np.float32)
    bias = rng.standard_normal(channels).astype(np.float32)
    eps = 1e-5

    y, mean, var = np.empty_like(x), np.empty(channels, np.float32), np.empty(channels, np.float32)
    numba_batch.batch_forward_last(x, weight, bias, np.float32(eps), workers, 8, y, mean, var)
    grad_x, grad_w, grad_b = np.empty_like(x), np.empty(channels, np.float32), np.empty(channels, np.float32)
    numba_batch.batch_backward_last(x, grad_y, weight, mean, var, np.float32(eps), workers, grad_x, grad_w, grad_b)

    x64, g64, w64 = x.astype(np.float64), grad_y.astype(np.float64), weight.astype(np.float64)
    mean64, var64 = x64.mean(0), x64.var(0)
    inv_std = 1 / np.sqrt(var64 + eps)
    x_hat = (x64 - mean64) * inv_std
    want_grad_w, want_grad_b = (g64 * x_hat).sum(0), g64.sum(0)
    want_grad_x = w64 * inv_std * (g64 - want_grad_b / rows - x_hat * want_grad_w / rows)
    np.testing.assert_allclose(mean, mean64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(var, var64, rtol=1e-4)
    np.testing.assert_allclose(y, x_hat * w64 + bias, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grad_w, want_grad_w, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(grad_b, want_grad_b, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(grad_x, want_grad_x, rtol=1e-3, atol=1e-4)
