"""The README's three-line example (audit, swap BN → GroupNorm, fold for inference), run on a torchvision-style
ResNet, so the README cannot drift from the code."""

import copy

import torch
from torch import fx

import normlab.nn as nlnn
import surgery_models as M
from normlab import surgery as normlab  # the README spells these normlab.audit, normlab.swap_norm, normlab.fold_bn


def test_readme_example_runs_and_does_what_it_says():
    model = M.TinyResNet()

    print(normlab.audit(model, torch.randn(8, 3, 32, 32)))                    # known pitfalls, why, and the fix
    gn_model = normlab.swap_norm(copy.deepcopy(model), "group_norm").model  # every BatchNorm2d → GroupNorm
    fast = normlab.fold_bn(model.eval()).model                              # inference: BN folded into convs

    x = torch.randn(2, 3, 32, 32)
    assert sum(isinstance(m, nlnn.GroupNorm) for m in gn_model.modules()) == 10
    assert isinstance(fast, fx.GraphModule)
    torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-5)
