"""Models of the lab: architecture facts from the papers, norm mapping against torch.nn, causality, errors."""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normlab import nn as nlnn
from normlab.lab.models import (MODELS, VGG, VGG_CONFIGS, CharTransformer, CifarResNet, FeaturesFirst, FeaturesLast,
                                conv_norm, create_model, sequence_norm)
from normlab.lab.models.resnet import ZeroPadShortcut

# (model, published parameter count in millions, tolerance): He et al. 2016, Table 6.
PAPER_PARAMETERS = [("resnet20", 0.27), ("resnet32", 0.46), ("resnet56", 0.85)]

# (model, norm, kwargs, input shape, output shape) — small widths keep the forward passes cheap.
FORWARD_CASES = [
    ("resnet20", "batch_norm", {"width": 4}, (2, 3, 16, 16), (2, 10)),
    ("resnet32", "group_norm", {"width": 4}, (2, 3, 16, 16), (2, 10)),
    ("resnet56", "none", {"width": 2}, (2, 3, 8, 8), (2, 10)),
    ("resnet20", "layer_norm", {"width": 4, "shortcut": "B"}, (2, 3, 8, 8), (2, 10)),
    ("resnet20", "rms_norm", {"width": 4}, (2, 3, 8, 8), (2, 10)),
    ("resnet20", "dynamic_tanh", {"width": 4}, (2, 3, 8, 8), (2, 10)),
    ("resnet20", "filter_response_norm", {"width": 4}, (2, 3, 8, 8), (2, 10)),
    ("vgg11", "batch_norm", {"cfg": [8, "M", 16, "M", 16, "M", 16, "M", 16]}, (2, 3, 32, 32), (2, 10)),
    ("vgg16", "instance_norm", {"cfg": [4, 4, "M", 8]}, (2, 3, 8, 8), (2, 10)),
    ("vgg19", "scale_norm", {"cfg": [4, "M", 8]}, (2, 3, 8, 8), (2, 10)),
    ("char_transformer", "layer_norm", {"n_layer": 1, "n_embd": 16, "n_head": 2, "block_size": 8}, (2, 8), (2, 8, 10)),
    ("char_transformer", "rms_norm", {"n_layer": 1, "n_embd": 16, "n_head": 2, "block_size": 8, "placement": "post"},
     (2, 8), (2, 8, 10)),
    ("char_transformer", "batch_norm", {"n_layer": 1, "n_embd": 16, "n_head": 2, "block_size": 8}, (2, 8), (2, 8, 10)),
    ("char_transformer", "none", {"n_layer": 1, "n_embd": 16, "n_head": 2, "block_size": 8}, (2, 8), (2, 8, 10)),
]


@pytest.mark.parametrize("name, millions", PAPER_PARAMETERS)
def test_resnet_parameter_counts_match_the_paper(name, millions):
    model = create_model(name, norm="batch_norm")
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == millions


@pytest.mark.parametrize("name, norm, kwargs, shape, out_shape", FORWARD_CASES)
def test_forward_and_backward_shapes(name, norm, kwargs, shape, out_shape):
    torch.manual_seed(0)
    model = create_model(name, norm=norm, **kwargs)
    inputs = torch.randint(0, 10, shape) if MODELS[name].task == "language" else torch.randn(shape)
    out = model(inputs)
    assert out.shape == out_shape and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_vgg_depths_count_conv_layers():
    for name, depth in (("vgg11", 11), ("vgg16", 16), ("vgg19", 19)):
        model = create_model(name)
        convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
        linears = sum(isinstance(m, nn.Linear) for m in model.modules())
        assert convs + 3 == depth and linears == 1  # VGG counts 3 FC layers; slimming keeps one small classifier
        assert model.cfg == list(VGG_CONFIGS[name])


def test_resnet_with_normlab_batch_norm_equals_torch_batch_norm():
    # Same seed, same init order (norm layers draw no random numbers): only the norm implementation differs.
    torch.manual_seed(0)
    ours = CifarResNet(20, "batch_norm", width=4)
    torch.manual_seed(0)
    reference = CifarResNet(20, nn.BatchNorm2d, width=4)
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-5)
    ours.eval(), reference.eval()
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-5)


def test_option_a_shortcut_subsamples_and_zero_pads():
    x = torch.randn(2, 3, 5, 5)
    y = ZeroPadShortcut(stride=2, extra_channels=3)(x)
    assert y.shape == (2, 6, 3, 3)
    torch.testing.assert_close(y[:, :3], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 3:]) == 0
    assert sum(p.numel() for p in ZeroPadShortcut(2, 3).parameters()) == 0


def test_conv_bias_only_without_norm():
    with_norm, without = CifarResNet(20, "batch_norm", width=2), CifarResNet(20, "none", width=2)
    assert all(m.bias is None for m in with_norm.modules() if isinstance(m, nn.Conv2d))
    assert all(m.bias is not None for m in without.modules() if isinstance(m, nn.Conv2d))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in without.modules())


# (request, expected layer type, reference: function of x (N, C, H, W) in float64)
CONV_NORM_CASES = [
    ("layer_norm", nlnn.LayerNorm2d,
     lambda x: F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], eps=1e-6).permute(0, 3, 1, 2)),
    ("rms_norm", FeaturesLast, lambda x: x * torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-6)),
    (nn.LayerNorm, FeaturesLast,
     lambda x: F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], eps=1e-5).permute(0, 3, 1, 2)),
    ("group_norm", nlnn.GroupNorm, lambda x: F.group_norm(x, 4, eps=1e-5)),
    (functools.partial(nn.GroupNorm, 2), nn.GroupNorm, lambda x: F.group_norm(x, 2, eps=1e-5)),
    ("dynamic_tanh", nlnn.DynamicTanh, lambda x: torch.tanh(0.5 * x)),
    ("none", nn.Identity, lambda x: x),
]


@pytest.mark.parametrize("norm, layer_type, reference", CONV_NORM_CASES)
def test_conv_norm_maps_feature_last_norms_onto_channels(norm, layer_type, reference):
    layer = conv_norm(norm, 8, **({"eps": 1e-6} if norm == "rms_norm" else {})).double()
    assert isinstance(layer, layer_type)
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64) * 3 + 1
    torch.testing.assert_close(layer(x), reference(x))


# (request, expected wrapper, reference on x (B, T, C) in float64)
SEQUENCE_NORM_CASES = [
    ("layer_norm", nlnn.LayerNorm, lambda x: F.layer_norm(x, x.shape[-1:])),
    ("batch_norm", FeaturesFirst, lambda x: F.batch_norm(x.transpose(1, 2), None, None, training=True).transpose(1, 2)),
    ("rms_norm", nlnn.RMSNorm, lambda x: x * torch.rsqrt(x.square().mean(-1, keepdim=True) + torch.finfo(x.dtype).eps)),
]


@pytest.mark.parametrize("norm, layer_type, reference", SEQUENCE_NORM_CASES)
def test_sequence_norm_puts_features_last(norm, layer_type, reference):
    layer = sequence_norm(norm, 6).double()
    assert isinstance(layer, layer_type)
    x = torch.randn(3, 4, 6, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(layer(x), reference(x))


@pytest.mark.parametrize("norm", ["group_norm", "instance_norm", "filter_response_norm"])
def test_sequence_norm_refuses_norms_that_see_the_future(norm):
    with pytest.raises(ValueError, match="future tokens"):
        sequence_norm(norm, 8)


@pytest.mark.parametrize("norm, placement", [("layer_norm", "pre"), ("rms_norm", "post"), ("dynamic_tanh", "pre"),
                                             ("scale_norm", "post"), ("none", "pre")])
def test_transformer_is_causal(norm, placement):
    torch.manual_seed(0)
    model = CharTransformer(12, norm, placement, n_layer=2, n_embd=16, n_head=2, block_size=10).eval()
    tokens = torch.randint(0, 12, (2, 10))
    changed = tokens.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 12  # alter only the future of position 5
    torch.testing.assert_close(model(tokens)[:, :6], model(changed)[:, :6])
    assert not torch.allclose(model(tokens)[:, 6:], model(changed)[:, 6:])


def test_transformer_placement_and_tied_head():
    pre = CharTransformer(5, "layer_norm", "pre", n_layer=1, n_embd=8, n_head=2, block_size=4)
    post = CharTransformer(5, "layer_norm", "post", n_layer=1, n_embd=8, n_head=2, block_size=4)
    assert isinstance(pre.final_norm, nlnn.LayerNorm) and isinstance(post.final_norm, nn.Identity)
    assert pre.head.weight is pre.token_embedding.weight


# (call, error type, message fragment)
ERROR_CASES = [
    (lambda: create_model("resnet_20"), ValueError, "Did you mean 'resnet20'"),
    (lambda: create_model("resnet20", norm="groupnrom"), ValueError, "Valid names"),
    (lambda: CifarResNet(21), ValueError, "6n \\+ 2"),
    (lambda: CifarResNet(20, shortcut="C"), ValueError, "zero-padded identity"),
    (lambda: VGG(cfg=[8, "X"]), ValueError, "channel counts or 'M'"),
    (lambda: CharTransformer(5, placement="middle"), ValueError, "pre-norm"),
    (lambda: CharTransformer(5, n_embd=10, n_head=3), ValueError, "divisible"),
    (lambda: CharTransformer(5, block_size=4)(torch.zeros(1, 5, dtype=torch.long)), ValueError, "block_size"),
]


@pytest.mark.parametrize("call, error, message", ERROR_CASES)
def test_bad_input_gets_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_vgg_gamma_init_sets_every_norm_scale():
    model = VGG(cfg=[4, "M", 8], norm="rms_norm", gamma_init=0.5)
    scales = [m.weight for m in model.modules() if isinstance(m, nlnn.RMSNorm)]
    assert len(scales) == 2 and all(torch.all(s == 0.5) for s in scales)
