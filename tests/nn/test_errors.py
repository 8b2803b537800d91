"""Bad input raises a clear error that names the problem (and, where there is one, the fix)."""

from __future__ import annotations

import pytest
import torch

import normlab
import normlab.nn as nl

# (id, call, exception type, pattern the message must match)
BAD_INPUT = [
    ("groups-not-dividing", lambda: nl.GroupNorm(3, 8), ValueError, r"num_groups=3 must divide.*\[1, 2, 4, 8\]"),
    ("bn-wrong-rank", lambda: nl.BatchNorm2d(4)(torch.randn(2, 4)), ValueError, r"4-D input.*got a 2-D"),
    ("bn-wrong-channels", lambda: nl.BatchNorm2d(4)(torch.randn(2, 5, 3, 3)), ValueError,
     r"built for 4 features.*has 5.*num_features=5"),
    ("ln-wrong-size", lambda: nl.LayerNorm(8)(torch.randn(2, 7)), ValueError, r"trailing dims \[8\].*shape \(2, 7\)"),
    ("rms-wrong-size", lambda: nl.RMSNorm(8)(torch.randn(2, 9)), ValueError, r"normalized_shape=\[9\]"),
    ("gn-wrong-channels", lambda: nl.GroupNorm(2, 4)(torch.randn(2, 6, 3)), ValueError, r"built for 4"),
    ("in-wrong-rank", lambda: nl.InstanceNorm2d(4)(torch.randn(4, 3)), ValueError, r"3-D or 4-D input"),
    ("integer-input", lambda: nl.LayerNorm(4)(torch.ones(2, 4, dtype=torch.int64)), TypeError,
     r"floating-point tensor.*torch.int64"),
    ("bn-one-value-per-channel", lambda: nl.BatchNorm1d(4).train()(torch.randn(1, 4)), ValueError,
     r"more than 1 value per channel.*batch larger than 1"),
    ("ghost-one-value", lambda: nl.GhostBatchNorm(4, virtual_batch_size=1).train()(torch.randn(3, 4)), ValueError,
     r"more than 1 value per channel"),
    ("eps-zero", lambda: nl.BatchNorm2d(4, eps=0.0), ValueError, r"eps must be a positive number"),
    ("eps-negative", lambda: nl.LayerNorm(4, eps=-1e-5), ValueError, r"eps must be a positive number"),
    ("num-features-zero", lambda: nl.BatchNorm2d(0), ValueError, r"num_features must be a positive integer"),
    ("momentum-out-of-range", lambda: nl.BatchNorm2d(4, momentum=1.5), ValueError, r"momentum must be in \[0, 1\]"),
    ("unknown-name", lambda: normlab.create_norm("batchnrom", 4), ValueError,
     r"unknown normalization 'batchnrom'. Did you mean 'batch_norm'\?.*Valid names: batch_norm"),
    ("bad-dims", lambda: normlab.create_norm("batch_norm", 4, dims=4), ValueError, r"dims must be 1, 2 or 3"),
    ("frn-no-spatial", lambda: nl.FilterResponseNorm(4)(torch.randn(2, 4)), ValueError, r"spatial dim"),
    ("renorm-limits", lambda: nl.BatchRenorm(4, r_max=0.5), ValueError, r"r_max ≥ 1"),
]


@pytest.mark.parametrize("call, error, pattern", [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_bad_input_gets_a_clear_error(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
