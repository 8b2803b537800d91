"""Running statistics over several training steps, against the update formula computed by hand:
running ← (1 − m)·running + m·batch, with the unbiased variance n/(n−1)·σ²_B; momentum=None averages equally."""

from __future__ import annotations

import pytest
import torch

import normlab.nn as nl


def _batch_stats(x):  # per channel over batch and space: mean, unbiased var
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).double()
    return flat.mean(1), flat.var(1, unbiased=True)


def _instance_stats(x):  # mean over the batch of per-instance mean and unbiased var
    flat = x.reshape(x.shape[0], x.shape[1], -1).double()
    return flat.mean(2).mean(0), flat.var(2, unbiased=True).mean(0)


def _ghost_stats(v):
    def stats(x):
        chunks = [_batch_stats(c) for c in x.split(v)]
        return torch.stack([c[0] for c in chunks]).mean(0), torch.stack([c[1] for c in chunks]).mean(0)
    return stats


TABLE = [
    ("bn-momentum", lambda: nl.BatchNorm2d(3, momentum=0.3), _batch_stats, 0.3),
    ("bn-cumulative", lambda: nl.BatchNorm2d(3, momentum=None), _batch_stats, None),
    ("bn1d", lambda: nl.BatchNorm1d(3), _batch_stats, 0.1),
    ("in-momentum", lambda: nl.InstanceNorm2d(3, track_running_stats=True, momentum=0.2), _instance_stats, 0.2),
    ("in-cumulative", lambda: nl.InstanceNorm2d(3, track_running_stats=True, momentum=None), _instance_stats, None),
    ("ghost", lambda: nl.GhostBatchNorm(3, virtual_batch_size=2, momentum=0.5), _ghost_stats(2), 0.5),
    ("renorm", lambda: nl.BatchRenorm(3, momentum=0.25), _batch_stats, 0.25),
]


@pytest.mark.parametrize("name, build, batch_stats, momentum", TABLE, ids=[t[0] for t in TABLE])
def test_running_stats_follow_the_update_formula(name, build, batch_stats, momentum):
    layer = build().train()
    mean, var = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    shape = (4, 3) if name == "bn1d" else (4, 3, 5, 5)
    for step in range(1, 5):
        x = torch.randn(shape) * step + step
        layer(x)
        batch_mean, batch_var = batch_stats(x)
        factor = 1.0 / step if momentum is None else momentum
        mean = (1 - factor) * mean + factor * batch_mean
        var = (1 - factor) * var + factor * batch_var
        torch.testing.assert_close(layer.running_mean.double(), mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer.running_var.double(), var, rtol=1e-5, atol=1e-5)
        assert layer.num_batches_tracked.item() == step


def test_eval_mode_leaves_running_stats_alone():
    layer = nl.BatchNorm2d(3).eval()
    layer(torch.randn(4, 3, 2, 2))
    assert layer.running_mean.abs().sum() == 0 and layer.num_batches_tracked.item() == 0
