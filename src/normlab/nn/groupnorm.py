r"""Group normalization (Wu & He, 2018) and Filter Response Normalization (Singh & Krishnan, 2020).

Both are per-sample and independent of the batch: GroupNorm takes centred statistics over groups of
channels and the spatial dims; FRN takes the mean square of each channel over the spatial dims and replaces the
centring by a learned threshold (TLU).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from normlab._checks import check_channels, check_positive_int
from normlab.core import functional as F
from normlab.nn._base import AffineNorm


class GroupNorm(AffineNorm):
    r"""Group normalization (Wu & He, 2018, arXiv:1803.08494).

    .. math::
        y = \frac{x - \mathrm{E}_g[x]}{\sqrt{\mathrm{Var}_g[x] + \epsilon}}\,\gamma_c + \beta_c

    statistics per sample over each group of ``C / G`` channels and all spatial dims; :math:`\gamma, \beta` are
    per channel. ``num_groups=1`` is LayerNorm over ``(C, *)``; ``num_groups=C`` is InstanceNorm.

    Args:
        num_groups: ``G``; must divide ``num_channels``.
        num_channels: ``C``.
        eps: added to the variance. Default: 1e-5.
        affine: learn per-channel :math:`\gamma, \beta`. Default: True.
        bias: learn :math:`\beta` (with ``affine``). Default: True.

    Shape:
        - Input: ``(N, C, *)``; Output: same shape and memory format.

    Examples:
        >>> GroupNorm(2, 4)(torch.randn(3, 4, 5, 5)).shape
        torch.Size([3, 4, 5, 5])
        >>> GroupNorm(3, 4)
        Traceback (most recent call last):
            ...
        ValueError: GroupNorm: num_groups=3 must divide num_channels=4; choose a divisor of 4: [1, 2, 4]
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        check_positive_int(num_groups, "num_groups", "GroupNorm")
        check_positive_int(num_channels, "num_channels", "GroupNorm")
        if num_channels % num_groups:
            divisors = [d for d in range(1, num_channels + 1) if num_channels % d == 0]
            raise ValueError(
                f"GroupNorm: num_groups={num_groups} must divide num_channels={num_channels}; "
                f"choose a divisor of {num_channels}: {divisors}"
            )
        super().__init__((num_channels,), eps=eps, weight=affine, bias=affine and bias, device=device, dtype=dtype)
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.affine = affine
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        check_channels(x, self.num_channels, "GroupNorm", dim=1)
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class FilterResponseNorm(AffineNorm):
    r"""Filter Response Normalization with a Thresholded Linear Unit (Singh & Krishnan, 2020, arXiv:1911.09737).

    .. math::
        \nu^2 = \frac{1}{|\Omega|}\sum_{p\in\Omega} x_p^2, \qquad
        \hat x = \frac{x}{\sqrt{\nu^2 + |\epsilon|}}, \qquad
        y = \max(\gamma \hat x + \beta,\ \tau)

    per sample and channel over the spatial positions :math:`\Omega`; no mean is removed — the learned
    threshold :math:`\tau` of the TLU takes its place. FRN includes its activation: do not follow it by a ReLU.

    Args:
        num_features: ``C``.
        eps: :math:`\epsilon`. Default: 1e-6.
        learnable_eps: learn :math:`\epsilon` as :math:`\epsilon_0 + |\epsilon_l|` (the paper's advice for
            1×1 spatial maps). Default: False.

    Shape:
        - Input: ``(N, C, *)`` with at least one spatial dim; Output: same shape and memory format.

    Examples:
        >>> frn = FilterResponseNorm(4)
        >>> y = frn(torch.randn(2, 4, 5, 5))
        >>> y.shape, sorted(frn.state_dict())
        (torch.Size([2, 4, 5, 5]), ['bias', 'tau', 'weight'])
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-6,
        learnable_eps: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_positive_int(num_features, "num_features", "FilterResponseNorm")
        super().__init__((num_features,), eps=eps, weight=True, bias=True, device=device, dtype=dtype)
        self.num_features = num_features
        self.tau = nn.Parameter(torch.empty(num_features, device=device, dtype=dtype))
        self.learnable_eps = learnable_eps
        self.eps_offset = nn.Parameter(torch.zeros(1, device=device, dtype=dtype)) if learnable_eps else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.zeros_(self.tau)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        if x.dim() < 3:
            raise ValueError(f"FilterResponseNorm expects (N, C, *) input with a spatial dim, got {tuple(x.shape)}")
        check_channels(x, self.num_features, "FilterResponseNorm", dim=1)
        eps = self.eps + self.eps_offset.abs() if self.eps_offset is not None else self.eps
        y = F.normalize(x, tuple(range(2, x.dim())), center=False, eps=eps, weight=self.weight, bias=self.bias,
                        param_dim=1)
        return torch.maximum(y, self.tau.view(-1, *([1] * (x.dim() - 2))).to(y.dtype))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, learnable_eps={self.learnable_eps}"
