r"""Per-sample normalizations over the features: LayerNorm, LayerNorm2d, RMSNorm and ScaleNorm.

All four reduce the feature dims of each sample; they differ in centring (LayerNorm yes, RMSNorm and ScaleNorm
no) and in the affine map (per-feature for LayerNorm/RMSNorm, one scalar for ScaleNorm).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from normlab._checks import check_channels, check_positive_int
from normlab.core import functional as F
from normlab.nn._base import AffineNorm, as_shape


class LayerNorm(AffineNorm):
    r"""Layer normalization over the trailing ``normalized_shape`` dims (Ba et al., 2016, arXiv:1607.06450).

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}}\,\gamma + \beta

    with the mean and biased variance of each sample over the last ``len(normalized_shape)`` dims.
    Same behaviour in training and evaluation; no dependence on the batch.

    Args:
        normalized_shape: the trailing shape to normalize over (an int for the last dim).
        eps: added to the variance. Default: 1e-5.
        elementwise_affine: learn a per-element :math:`\gamma` (and :math:`\beta`). Default: True.
        bias: learn :math:`\beta` (only with ``elementwise_affine``). Default: True.

    Shape:
        - Input: ``(*, *normalized_shape)``; Output: same shape.

    Examples:
        >>> ln = LayerNorm(8)
        >>> y = ln(torch.randn(2, 5, 8))
        >>> y.shape, sorted(ln.state_dict())
        (torch.Size([2, 5, 8]), ['bias', 'weight'])
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        shape = as_shape(normalized_shape)
        super().__init__(
            shape, eps=eps, weight=elementwise_affine, bias=elementwise_affine and bias, device=device, dtype=dtype
        )
        self.normalized_shape = shape
        self.elementwise_affine = elementwise_affine
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class LayerNorm2d(AffineNorm):
    r"""Channels-first LayerNorm: normalizes over ``C`` at every position of ``(N, C, *)`` (as ConvNeXt uses;
    Liu et al., 2022, arXiv:2201.03545).

    .. math::
        y_{n,:,p} = \frac{x_{n,:,p} - \mathrm{E}_C[x_{n,:,p}]}{\sqrt{\mathrm{Var}_C[x_{n,:,p}] + \epsilon}}\,\gamma + \beta

    Equivalent to permuting to channels-last, applying :class:`LayerNorm` over ``C`` and permuting back, without
    the permutes; a channels_last input is the fast layout for it.

    Args:
        num_channels: ``C``.
        eps: added to the variance. Default: 1e-6 (ConvNeXt's value).
        elementwise_affine: learn per-channel :math:`\gamma, \beta`. Default: True.
        bias: learn :math:`\beta`. Default: True.

    Shape:
        - Input: ``(N, C, *)``; Output: same shape and memory format.

    Examples:
        >>> y = LayerNorm2d(4)(torch.randn(2, 4, 3, 3))
        >>> round(y[0, :, 1, 1].mean().item(), 5) == 0.0
        True
    """

    def __init__(
        self,
        num_channels: int,
        eps: float = 1e-6,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_positive_int(num_channels, "num_channels", type(self).__name__)
        super().__init__(
            (num_channels,), eps=eps, weight=elementwise_affine, bias=elementwise_affine and bias,
            device=device, dtype=dtype,
        )
        self.num_channels = num_channels
        self.elementwise_affine = elementwise_affine
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        check_channels(x, self.num_channels, type(self).__name__, dim=1)
        return F.normalize(x, (1,), eps=self.eps, weight=self.weight, bias=self.bias, param_dim=1)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class RMSNorm(AffineNorm):
    r"""Root-mean-square normalization (Zhang & Sennrich, 2019, arXiv:1910.07467).

    .. math::
        y = \frac{x}{\sqrt{\frac1n\sum_{i=1}^n x_i^2 + \epsilon}}\,\gamma

    over the trailing ``normalized_shape`` dims: LayerNorm without centring and without :math:`\beta`.
    Before :math:`\gamma`, each normalized vector has mean square 1 (norm :math:`\sqrt n`).

    Args:
        normalized_shape: the trailing shape to normalize over.
        eps: added to the mean square; ``None`` uses ``torch.finfo(x.dtype).eps`` (torch.nn's default).
        elementwise_affine: learn :math:`\gamma`. Default: True.

    Shape:
        - Input: ``(*, *normalized_shape)``; Output: same shape.

    Examples:
        >>> y = RMSNorm(16)(torch.randn(3, 16))
        >>> [round(v, 3) for v in y.square().mean(-1).tolist()]
        [1.0, 1.0, 1.0]
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float | None = None,
        elementwise_affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        shape = as_shape(normalized_shape)
        super().__init__(shape, eps=eps, weight=elementwise_affine, bias=False, device=device, dtype=dtype)
        self.normalized_shape = shape
        self.elementwise_affine = elementwise_affine
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class ScaleNorm(nn.Module):
    r"""ScaleNorm (Nguyen & Salazar, 2019, arXiv:1910.05895): project onto a sphere, then one learned radius.

    .. math::
        y = g\,\frac{x}{\sqrt{\lVert x\rVert_2^2 + \epsilon^2}}

    over the last dim, with a single scalar :math:`g` initialised to :math:`\sqrt{d}` (``d = num_features``),
    so the initial output has norm :math:`\sqrt d` like LayerNorm's. Computed by the core as an RMS
    normalization scaled by :math:`g/\sqrt d`.

    Args:
        num_features: ``d``, the size of the last dim.
        eps: keeps the division finite for a zero vector. Default: 1e-5.

    Shape:
        - Input: ``(*, d)``; Output: same shape.

    Examples:
        >>> y = ScaleNorm(9)(torch.randn(2, 9))
        >>> [round(v, 3) for v in y.norm(dim=-1).tolist()]
        [3.0, 3.0]
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive_int(num_features, "num_features", "ScaleNorm")
        if not eps > 0:
            raise ValueError(f"ScaleNorm: eps must be a positive number, got {eps!r}")
        self.num_features = num_features
        self.eps = eps
        self.scale = nn.Parameter(torch.full((1,), math.sqrt(num_features), device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        """g ← √d."""
        nn.init.constant_(self.scale, math.sqrt(self.num_features))

    def forward(self, x: Tensor) -> Tensor:
        check_channels(x, self.num_features, "ScaleNorm", dim=-1)
        # ||x||^2 + eps^2 = d * (mean(x^2) + eps^2 / d)
        gain = (self.scale / math.sqrt(self.num_features)).expand(self.num_features)
        return F.rms_norm(x, (self.num_features,), gain, self.eps**2 / self.num_features)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


__all__ = ["LayerNorm", "LayerNorm2d", "RMSNorm", "ScaleNorm"]
