"""The registry: every public name, spelling variants, classes and partials, dims, and unknown names."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import normlab
import normlab.nn as nl

PUBLIC_NAMES = [
    "batch_norm", "layer_norm", "layer_norm_2d", "group_norm", "instance_norm", "rms_norm", "batch_renorm",
    "ghost_batch_norm", "filter_response_norm", "scale_norm", "dynamic_tanh",
]

# (spec given to create_norm, kwargs, expected class)
BUILDS = [
    ("batch_norm", {}, nl.BatchNorm),
    ("batch_norm", {"dims": 1}, nl.BatchNorm1d),
    ("BatchNorm", {"dims": 2}, nl.BatchNorm2d),
    ("batchnorm3d", {}, nl.BatchNorm3d),
    ("BN", {"dims": 3}, nl.BatchNorm3d),
    ("instance_norm", {"dims": 2}, nl.InstanceNorm2d),
    ("InstanceNorm", {}, nl.InstanceNorm),
    ("LayerNorm", {}, nl.LayerNorm),
    ("layer-norm-2d", {}, nl.LayerNorm2d),
    ("group_norm", {"num_groups": 4}, nl.GroupNorm),
    ("GroupNorm", {}, nl.GroupNorm),
    ("RMSNorm", {}, nl.RMSNorm),
    ("batch_renorm", {}, nl.BatchRenorm),
    ("ghost_batch_norm", {"virtual_batch_size": 8}, nl.GhostBatchNorm),
    ("FRN", {}, nl.FilterResponseNorm),
    ("scale_norm", {}, nl.ScaleNorm),
    ("DyT", {}, nl.DynamicTanh),
    ("none", {}, nn.Identity),
    (nl.BatchNorm2d, {}, nl.BatchNorm2d),
    (nn.BatchNorm2d, {"momentum": 0.2}, nn.BatchNorm2d),
    (nn.GroupNorm, {"num_groups": 8}, nn.GroupNorm),
    (nl.GroupNorm, {}, nl.GroupNorm),
    (functools.partial(nn.GroupNorm, 4), {}, nn.GroupNorm),
    (functools.partial(nl.LayerNorm, eps=1e-6), {}, nl.LayerNorm),
]


def test_list_norms_names_every_public_norm_with_a_description():
    listing = normlab.list_norms()
    for name in PUBLIC_NAMES:
        assert name in listing and len(listing[name]) > 10, name
    assert name in repr(listing)


@pytest.mark.parametrize("spec, kwargs, cls", BUILDS, ids=lambda v: getattr(v, "__name__", str(v))[:30])
def test_create_norm_builds_the_right_layer_that_runs(spec, kwargs, cls):
    layer = normlab.create_norm(spec, 16, **kwargs)
    assert type(layer) is cls
    for key, value in kwargs.items():
        if key != "dims":
            assert getattr(layer, key) == value
    spec_obj = normlab.registry.get_norm_spec(type(layer)) if not isinstance(layer, nn.Identity) else None
    channels_last = spec_obj is not None and spec_obj.channel_dim == -1
    shape = (4, 3, 3, 16) if channels_last else (4, 16, 3, 3)
    if isinstance(layer, (nl.BatchNorm1d, nl.InstanceNorm1d)):
        shape = (4, 16, 5)
    if isinstance(layer, (nl.BatchNorm3d,)):
        shape = (2, 16, 2, 3, 3)
    assert layer(torch.randn(shape)).shape == shape


def test_group_norm_default_groups_follow_the_documented_rule():
    assert [normlab.create_norm("group_norm", c).num_groups for c in (64, 96, 16, 24, 3)] == [32, 32, 8, 12, 1]


def test_norm_factory_is_a_norm_layer_convention_factory():
    make = normlab.norm_factory("batch_norm", dims=2, momentum=0.01)
    layer = make(8)
    assert isinstance(layer, nl.BatchNorm2d) and layer.momentum == 0.01


def test_unknown_name_fails_early_in_norm_factory():
    with pytest.raises(ValueError, match="Valid names"):
        normlab.norm_factory("groupish_norm_xyz")


def test_every_spec_knows_where_the_features_are():
    specs = [normlab.registry.get_norm_spec(n) for n in PUBLIC_NAMES]
    assert {s.name: s.channel_dim for s in specs if s.channel_dim == -1} == {
        "layer_norm": -1, "rms_norm": -1, "scale_norm": -1, "dynamic_tanh": -1}
