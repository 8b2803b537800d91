r"""Dynamic Tanh (Zhu et al., 2025): the normalization-free replacement for LayerNorm."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from normlab._checks import check_channels, check_positive_int
from normlab.core.functional import affine
from normlab.nn._base import AffineNorm


class DynamicTanh(AffineNorm):
    r"""Dynamic Tanh (Zhu, Chen, He, LeCun & Liu, 2025, arXiv:2503.10622).

    .. math::
        y = \gamma \odot \tanh(\alpha x) + \beta

    with one learned scalar :math:`\alpha` (initialised to ``alpha_init``) and per-feature :math:`\gamma, \beta`.
    No statistics are computed: it squashes extreme values the way LayerNorm's outputs look, element-wise. The
    affine map is the core's (:func:`normlab.core.functional.affine`).

    Args:
        num_features: the size of the feature dim.
        alpha_init: initial :math:`\alpha`. Default: 0.5 (the paper's default for most models).
        channels_last: features on the last dim (Transformers, ``(*, C)``); ``False`` puts them on dim 1
            (``(N, C, *)``, conv nets). Default: True.
        elementwise_affine: learn :math:`\gamma, \beta`. Default: True.

    Shape:
        - Input: ``(*, C)`` (channels_last) or ``(N, C, *)``; Output: same shape.

    Examples:
        >>> dyt = DynamicTanh(8)
        >>> y = dyt(torch.randn(2, 8) * 100)
        >>> bool(y.abs().max() <= 1.0), sorted(dyt.state_dict())
        (True, ['alpha', 'bias', 'weight'])
    """

    def __init__(
        self,
        num_features: int,
        alpha_init: float = 0.5,
        channels_last: bool = True,
        elementwise_affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_positive_int(num_features, "num_features", "DynamicTanh")
        super().__init__(
            (num_features,), eps=None, weight=elementwise_affine, bias=elementwise_affine, device=device, dtype=dtype
        )
        self.num_features = num_features
        self.alpha_init = alpha_init
        self.channels_last = channels_last
        self.alpha = nn.Parameter(torch.full((1,), float(alpha_init), device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "alpha"):
            nn.init.constant_(self.alpha, self.alpha_init)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        dim = -1 if self.channels_last else 1
        check_channels(x, self.num_features, "DynamicTanh", dim=dim)
        return affine(torch.tanh(self.alpha * x), self.weight, self.bias, None if self.channels_last else 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, alpha_init={self.alpha_init}, channels_last={self.channels_last}"
