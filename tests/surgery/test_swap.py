"""swap_norm: every layer found and replaced, the right parameters carried, outputs kept where they must be."""

from __future__ import annotations

import copy
import functools
import pytest
import torch
from torch import nn

import normlab.nn as nlnn
import surgery_models as M
from normlab.surgery import freeze_norm, swap_norm
from normlab.surgery.freeze import is_frozen

IMAGES, TOKENS, VECTORS = M.image_batch, M.token_batch, lambda: torch.randn(6, 12)

# (id, model, input, to, kwargs, class replaced, expected new class, tensors kept, tensors dropped)
SWAPS = [
    ("resnet bn→gn", M.TinyResNet, IMAGES, "group_norm", {}, nn.BatchNorm2d, nlnn.GroupNorm,
     {"weight", "bias"}, {"running_mean", "running_var"}),
    ("sequential bn→torch GroupNorm", M.plain_sequential, IMAGES, nn.GroupNorm, {}, nn.BatchNorm2d, nn.GroupNorm,
     {"weight", "bias"}, {"running_mean", "running_var"}),
    ("sequential bn→partial factory", M.plain_sequential, IMAGES, functools.partial(nn.GroupNorm, 4), {},
     nn.BatchNorm2d, nn.GroupNorm, {"weight", "bias"}, {"running_mean", "running_var"}),
    ("sequential bn→instance norm", M.plain_sequential, IMAGES, "instance_norm", {}, nn.BatchNorm2d,
     nlnn.InstanceNorm2d, {"weight", "bias"}, {"running_mean", "running_var"}),
    ("sequential bn→layernorm2d", M.plain_sequential, IMAGES, "layer_norm_2d", {}, nn.BatchNorm2d, nlnn.LayerNorm2d,
     {"weight", "bias"}, {"running_mean", "running_var"}),
    ("sequential bn→frn", M.plain_sequential, IMAGES, "frn", {}, nn.BatchNorm2d, nlnn.FilterResponseNorm,
     {"weight", "bias"}, {"running_mean", "running_var"}),
    ("sequential bn→batch renorm", M.plain_sequential, IMAGES, "batch_renorm", {}, nn.BatchNorm2d, nlnn.BatchRenorm,
     {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}, set()),
    ("sequential bn→dyt (channels first)", M.plain_sequential, IMAGES, "dyt", {}, nn.BatchNorm2d, nlnn.DynamicTanh,
     {"weight", "bias"}, {"running_mean", "running_var"}),
    ("nested bn→gn (ModuleList, ModuleDict)", M.Nested, IMAGES, "gn", {"num_groups": 2},
     nn.modules.batchnorm._BatchNorm, nlnn.GroupNorm, {"weight", "bias"}, {"running_mean", "running_var"}),
    ("mlp bn1d→layernorm", M.mlp, VECTORS, "layer_norm", {}, nn.BatchNorm1d, nlnn.LayerNorm, {"weight", "bias"},
     {"running_mean", "running_var"}),
    ("transformer ln→rms (β dropped)", M.TinyTransformer, TOKENS, "rms_norm", {}, nn.LayerNorm, nlnn.RMSNorm,
     {"weight"}, {"bias"}),
    ("transformer ln→torch RMSNorm", M.TinyTransformer, TOKENS, nn.RMSNorm, {}, nn.LayerNorm, nn.RMSNorm,
     {"weight"}, {"bias"}),
    ("transformer ln→scale norm (γ dropped)", M.TinyTransformer, TOKENS, "scale_norm", {}, nn.LayerNorm,
     nlnn.ScaleNorm, set(), {"weight", "bias"}),
]


def _norm_state(model: nn.Module, cls: type) -> dict[str, dict[str, torch.Tensor]]:
    return {path: {k: v.clone() for k, v in m.state_dict().items()} for path, m in model.named_modules()
            if isinstance(m, cls)}


@pytest.mark.parametrize("case", SWAPS, ids=[c[0] for c in SWAPS])
def test_swap_replaces_every_layer_and_carries_what_it_should(case):
    _, build, make_input, to, kwargs, old_cls, new_cls, kept, dropped = case
    model = M.randomize_norms(build()).double().eval()
    first = next(m for m in model.modules() if isinstance(m, old_cls))
    first.weight.requires_grad_(False)
    before = _norm_state(model, old_cls)
    x = make_input()
    x = x.double() if x.is_floating_point() else x
    shape = model(x).shape

    report = swap_norm(model, to, **kwargs)

    assert report.model is model
    assert not any(isinstance(m, old_cls) for m in model.modules())
    assert len(report) == len(before)
    for record in report:
        new = model.get_submodule(record.paths[0])
        assert isinstance(new, new_cls) and not new.training
        assert set(record.kept) - {"num_batches_tracked"} == kept - {"num_batches_tracked"}
        assert set(record.dropped) == dropped
        for name in kept:
            torch.testing.assert_close(new.state_dict()[name], before[record.paths[0]][name], rtol=0, atol=0)
        assert all(t.dtype == torch.float64 for t in new.parameters())
    first_new = model.get_submodule(report[0].paths[0])
    if "weight" in kept:
        assert not first_new.weight.requires_grad
    assert model(x).shape == shape


@pytest.mark.parametrize("channels, groups", [(8, 4), (24, 12), (64, 32), (96, 32), (6, 3), (7, 1)])
def test_group_count_follows_the_documented_rule(channels, groups):
    """32 if it divides C leaving ≥ 2 channels per group, else the largest such divisor below 32, else 1."""
    model = nn.Sequential(nn.Conv2d(3, channels, 1), nn.BatchNorm2d(channels, eps=1e-3))
    swap_norm(model, "group_norm")
    assert (model[1].num_groups, model[1].num_channels, model[1].eps) == (groups, channels, 1e-3)


# Swaps that must not change the model's function: compared with the original torch.nn model.
SAME_FUNCTION = [
    ("torch→normlab resnet", M.TinyResNet, IMAGES, "normlab"),
    ("torch→normlab nested", M.Nested, IMAGES, "normlab"),
    ("torch bn→normlab batch_norm", M.plain_sequential, IMAGES, "batch_norm"),
    ("torch ln→normlab layer_norm", M.TinyTransformer, TOKENS, "layer_norm"),
]


@pytest.mark.parametrize("case", SAME_FUNCTION, ids=[c[0] for c in SAME_FUNCTION])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_equivalent_swaps_keep_outputs(case, mode):
    _, build, make_input, to = case
    original = M.randomize_norms(build()).train(mode == "train")
    swapped = copy.deepcopy(original)
    swap_norm(swapped, to)
    x = make_input()
    torch.testing.assert_close(swapped(x), original(x), rtol=1e-5, atol=1e-5)
    assert swapped.training == (mode == "train")


@pytest.mark.parametrize("there, back, same", [
    ("group_norm", "batch_norm", ("weight", "bias")),
    ("layer_norm_2d", nn.BatchNorm2d, ("weight", "bias")),
    ("instance_norm", nn.BatchNorm2d, ("weight", "bias")),
])
def test_swapping_back_and_forth_keeps_parameters(there, back, same):
    model = M.randomize_norms(M.TinyResNet())
    before = _norm_state(model, nn.BatchNorm2d)
    swap_norm(model, there)
    swap_norm(model, back, dims=2)
    for path, state in before.items():
        layer = model.get_submodule(path)
        for name in same:
            torch.testing.assert_close(getattr(layer, name).detach(), state[name], rtol=0, atol=0)


def test_torch_normlab_round_trip_is_lossless():
    model = M.randomize_norms(M.Nested())
    before = copy.deepcopy(model.state_dict())
    swap_norm(model, "normlab")
    assert all(type(m).__module__.startswith("normlab") for m in model.modules() if "BatchNorm" in type(m).__name__)
    swap_norm(model, "torch")
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_conversion_touches_only_the_other_librarys_layers():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nlnn.GroupNorm(2, 4), nn.SyncBatchNorm(4))
    report = swap_norm(model, "normlab")
    assert [(r.paths, r.new) for r in report] == [(["1"], "normlab.BatchNorm2d"), (["3"], "SyncBatchNorm")]
    assert "no normlab counterpart" in report[1].note
    assert [type(m).__name__ for m in model] == ["Conv2d", "BatchNorm2d", "GroupNorm", "SyncBatchNorm"]
    assert isinstance(model[1], nlnn.BatchNorm2d) and isinstance(model[2], nlnn.GroupNorm)


def test_layernorm_to_rmsnorm_and_back_keeps_gamma_and_zeroes_beta():
    model = M.randomize_norms(M.TinyTransformer())
    gammas = {p: m.weight.detach().clone() for p, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
    swap_norm(model, "rms_norm")
    swap_norm(model, "layer_norm")
    for path, gamma in gammas.items():
        layer = model.get_submodule(path)
        assert torch.equal(layer.weight.detach(), gamma) and torch.equal(layer.bias.detach(), torch.zeros_like(gamma))


def test_shared_module_is_replaced_once_and_stays_shared():
    model = M.Shared()
    report = swap_norm(model, "group_norm", num_groups=2)
    assert len(report) == 1 and set(report[0].paths) == {"norm", "branches.0.1", "branches.1.1"}
    assert model.norm is model.branches[0][1] is model.branches[1][1]
    assert isinstance(model.norm, nlnn.GroupNorm)


def test_a_norm_layer_as_the_whole_model_comes_back_in_the_report():
    report = swap_norm(nn.BatchNorm2d(16), "gn")
    assert isinstance(report.model, nlnn.GroupNorm) and report.model.num_groups == 8


@pytest.mark.parametrize("source, count", [
    (None, 3),
    (nn.BatchNorm1d, 1),
    ("batch_norm", 2),
    ([nn.LayerNorm, nn.BatchNorm1d], 2),
    (lambda path, module: isinstance(module, nn.modules.batchnorm._BatchNorm) and path.startswith("mlp"), 1),
])
def test_source_selects_the_layers(source, count):
    model = nn.Sequential()
    model.add_module("conv", nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)))
    model.add_module("mlp", nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.BatchNorm1d(8), nn.LayerNorm(8)))
    report = swap_norm(model, "gn", source=source, num_groups=2)
    assert len(report) == count


def test_device_dtype_mode_and_freeze_are_kept():
    model = M.plain_sequential().to("meta", torch.float16).eval()
    freeze_norm(model)
    swap_norm(model, "batch_renorm")
    layer = model[1]
    assert layer.weight.device.type == "meta" and layer.weight.dtype == torch.float16
    assert is_frozen(layer) and not model.train()[1].training


@pytest.mark.parametrize("to, kwargs, error, match", [
    ("groupnrom", {}, ValueError, "unknown normalization 'groupnrom'. Did you mean 'group_norm'"),
    ("rms_norm", {}, ValueError, "layer_norm_2d"),
    ("group_norm", {"num_groups": 5}, ValueError, "'1'.*must divide"),
    (42, {}, TypeError, "registry name"),
])
def test_bad_targets_raise_clear_errors(to, kwargs, error, match):
    with pytest.raises(error, match=match):
        swap_norm(M.plain_sequential(), to, **kwargs)


def test_bad_source_raises():
    with pytest.raises(TypeError, match="source must be"):
        swap_norm(M.plain_sequential(), "gn", source=42)
    with pytest.raises(ValueError, match="unknown normalization"):
        swap_norm(M.plain_sequential(), "gn", source="NoSuchNorm")


def test_model_without_normalization_reports_nothing_to_do():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    with pytest.warns(UserWarning, match="nothing to do"):
        report = swap_norm(model, "rms_norm")
    assert len(report) == 0 and "nothing to do" in str(report)


def test_report_prints_a_table():
    text = str(swap_norm(M.TinyTransformer(), "rms_norm"))
    assert text.splitlines()[1].split() == ["module", "swap", "kept", "notes"]
    assert "LayerNorm → RMSNorm" in text and "dropped bias" in text
