"""Identities and properties of the unified view: GroupNorm's two limits, invariance to shifting and scaling
the input, and the hypersphere each normalized vector lies on."""

from __future__ import annotations

import pytest
import torch

import normlab.nn as nl
from normlab.core import functional as F


def test_group_norm_with_one_group_is_layer_norm_over_channels_and_space():
    x = torch.randn(3, 6, 4, 5)
    expected = torch.nn.functional.layer_norm(x, (6, 4, 5))
    torch.testing.assert_close(nl.GroupNorm(1, 6, affine=False)(x), expected, atol=1e-5, rtol=1e-5)


def test_group_norm_with_one_group_per_channel_is_instance_norm():
    x = torch.randn(3, 6, 4, 5)
    torch.testing.assert_close(nl.GroupNorm(6, 6, affine=False)(x), nl.InstanceNorm2d(6)(x), atol=1e-5, rtol=1e-5)


# Layers whose output is unchanged when the input is shifted by a constant and scaled by a positive factor.
# eps is made negligible (1e-12) so the identity holds to float64 precision.
TINY = 1e-12
SHIFT_AND_SCALE = [
    ("batch", lambda: nl.BatchNorm2d(4, eps=TINY), (8, 4, 3, 3)),
    ("layer", lambda: nl.LayerNorm(16, eps=TINY), (4, 16)),
    ("layer2d", lambda: nl.LayerNorm2d(4, eps=TINY), (2, 4, 3, 3)),
    ("group", lambda: nl.GroupNorm(2, 4, eps=TINY), (2, 4, 3, 3)),
    ("instance", lambda: nl.InstanceNorm2d(4, eps=TINY), (2, 4, 3, 3)),
    ("ghost", lambda: nl.GhostBatchNorm(4, virtual_batch_size=4, eps=TINY), (8, 4, 3, 3)),
]
# The non-centring norms are invariant to scaling only.
SCALE_ONLY = [
    ("rms", lambda: nl.RMSNorm(16, eps=TINY), (4, 16)),
    ("scale", lambda: nl.ScaleNorm(16, eps=TINY), (4, 16)),
    ("frn", lambda: nl.FilterResponseNorm(4, eps=TINY), (2, 4, 3, 3)),
]


def _ids(value):
    return value if isinstance(value, str) else ""


@pytest.mark.parametrize("name, build, shape", SHIFT_AND_SCALE + SCALE_ONLY, ids=_ids)
@pytest.mark.parametrize("alpha", [0.01, 7.0])
def test_output_is_invariant_to_scaling_the_input(name, build, shape, alpha):
    layer, x = build().double().train(), torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(layer(alpha * x), layer(x), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name, build, shape", SHIFT_AND_SCALE, ids=_ids)
def test_output_is_invariant_to_shifting_the_input(name, build, shape):
    layer, x = build().double().train(), torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(layer(x + 123.0), layer(x), atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("center, expected", [(True, "n"), (False, "mean square 1")])
def test_normalized_vectors_lie_on_the_hypersphere(center, expected):
    n = 37
    x = torch.randn(10, n, dtype=torch.float64) * 5 + 3
    y = F.normalize(x, dims=(1,), center=center, eps=1e-12)
    if center:
        torch.testing.assert_close(y.square().sum(1), torch.full((10,), float(n), dtype=torch.float64))
        torch.testing.assert_close(y.sum(1), torch.zeros(10, dtype=torch.float64), atol=1e-9, rtol=0)
    else:
        torch.testing.assert_close(y.square().mean(1), torch.ones(10, dtype=torch.float64))


@pytest.mark.parametrize("layer, shape, dims", [
    (nl.LayerNorm(12, elementwise_affine=False, eps=1e-12), (5, 12), (1,)),
    (nl.BatchNorm1d(3, affine=False, eps=1e-12), (9, 3), (0,)),
    (nl.GroupNorm(2, 4, affine=False, eps=1e-12), (3, 4, 5), None),
], ids=["layer", "batch", "group"])
def test_layers_project_onto_the_sphere_of_radius_sqrt_n(layer, shape, dims):
    y = layer.double()(torch.randn(shape, dtype=torch.float64) * 4 - 2)
    if dims is None:  # GroupNorm: each group of C/G channels and space
        groups = y.reshape(shape[0], 2, -1)
        norms, n = groups.square().sum(-1), groups.shape[-1]
    else:
        norms, n = y.square().sum(dims), y.shape[dims[0]]
    torch.testing.assert_close(norms, torch.full_like(norms, float(n)))
