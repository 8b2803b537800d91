"""Weight normalization: reparametrize the weights of Linear and Conv layers (:mod:`torch.nn.utils.parametrize`).

Four kinds, registered in :func:`normlab.list_norms` under the ``"weight"`` family and applied with
:func:`reparametrize` (undone with :func:`bake_weights`):

- ``weight_norm`` — Weight Normalization (Salimans & Kingma 2016);
- ``centered_weight_norm`` — Centered Weight Normalization (Huang et al. 2017);
- ``weight_standardization`` — Weight Standardization (Qiao et al. 2019);
- ``spectral_norm`` — Spectral Normalization (Miyato et al. 2018).

Examples:
    >>> import torch
    >>> from torch import nn
    >>> import normlab.weight as nw
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.ReLU())
    >>> [c.kind for c in nw.reparametrize(net, "weight_standardization")]
    ['weight_standardization']
    >>> net(torch.randn(2, 3, 8, 8)).shape
    torch.Size([2, 8, 6, 6])
"""

from normlab.registry import register_norm
from normlab.weight.api import (
    KIND_ALIASES,
    WEIGHT_LAYER_TYPES,
    WeightChange,
    bake_weights,
    reparametrize,
    reparametrized_weights,
    resolve_kind,
)
from normlab.weight.parametrizations import (
    CenteredWeightNorm,
    SpectralNorm,
    WeightNorm,
    WeightParametrization,
    WeightStandardization,
    output_unit_dim,
)

_DESCRIPTIONS = {
    "weight_norm": "Weight Normalization (Salimans & Kingma 2016): w = g v/||v|| per output unit",
    "centered_weight_norm": "Centered Weight Norm (Huang et al. 2017): each unit centred, unit norm, learned g",
    "weight_standardization": "Weight Standardization (Qiao et al. 2019): each unit zero mean, unit variance",
    "spectral_norm": "Spectral Normalization (Miyato et al. 2018): W / sigma_max(W) by power iteration",
}

for _name, _description in _DESCRIPTIONS.items():
    register_norm(_name, _description, family="weight", aliases=KIND_ALIASES[_name])

__all__ = [
    "KIND_ALIASES",
    "WEIGHT_LAYER_TYPES",
    "CenteredWeightNorm",
    "SpectralNorm",
    "WeightChange",
    "WeightNorm",
    "WeightParametrization",
    "WeightStandardization",
    "bake_weights",
    "output_unit_dim",
    "reparametrize",
    "reparametrized_weights",
    "resolve_kind",
]
