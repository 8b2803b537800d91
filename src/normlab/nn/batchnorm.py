r"""Batch normalization (Ioffe & Szegedy, 2015) and instance normalization (Ulyanov et al., 2016).

Both keep optional running statistics; they differ only in the dims the core reduces: the batch and spatial
dims for BatchNorm, the spatial dims of each sample for InstanceNorm.
"""

from __future__ import annotations

import torch
from torch import Tensor

from normlab._checks import check_channels, check_positive_int, check_rank
from normlab.core import functional as F
from normlab.nn._base import AffineNorm


class _RunningStatsNorm(AffineNorm):
    """Per-channel norm with torch.nn's buffers: ``running_mean``, ``running_var``, ``num_batches_tracked``."""

    #: allowed input ranks; ``None`` accepts any ``(N, C, *)`` input
    ranks: tuple[int, ...] | None = None
    layout = "(N, C, *)"

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        check_positive_int(num_features, "num_features", type(self).__name__)
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{type(self).__name__}: momentum must be in [0, 1] or None, got {momentum!r}")
        super().__init__((num_features,), eps=eps, weight=affine, bias=affine and bias, device=device, dtype=dtype)
        self.num_features = num_features
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if track_running_stats:
            factory = {"device": device, "dtype": dtype}
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Running mean ← 0, running variance ← 1, batch counter ← 0."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        super().reset_parameters()

    def check_input(self, x: Tensor) -> None:
        super().check_input(x)
        check_rank(x, self.ranks or tuple(range(2, max(x.dim(), 2) + 1)), type(self).__name__, self.layout)
        check_channels(x, self.num_features, type(self).__name__, dim=1)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


class BatchNorm(_RunningStatsNorm):
    r"""Batch normalization over any ``(N, C, *)`` input (Ioffe & Szegedy, 2015, arXiv:1502.03167).

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}}\,\gamma + \beta

    with mean and *biased* variance per channel over the batch and spatial dims in training; the running
    statistics (used in evaluation) store the *unbiased* variance and follow
    :math:`\hat x \leftarrow (1-m)\hat x + m x_B` (``momentum=None``: a cumulative average).
    :class:`BatchNorm1d`, :class:`BatchNorm2d` and :class:`BatchNorm3d` check the rank; this class accepts any.

    Args:
        num_features: ``C``, the number of channels.
        eps: added to the variance. Default: 1e-5.
        momentum: running-average factor, or ``None`` for a cumulative average. Default: 0.1.
        affine: learn :math:`\gamma, \beta`. Default: True.
        track_running_stats: keep running statistics; if False, batch statistics are used in eval too.
        bias: learn :math:`\beta` (with ``affine``). Default: True.

    Shape:
        - Input: ``(N, C, *)``; Output: same shape and memory format.

    Examples:
        >>> bn = BatchNorm2d(3)
        >>> bn(torch.randn(4, 3, 5, 5)).shape
        torch.Size([4, 3, 5, 5])
        >>> sorted(bn.state_dict())
        ['bias', 'num_batches_tracked', 'running_mean', 'running_var', 'weight']
    """

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            training=self.training or not self.track_running_stats,
            momentum=self.momentum,
            eps=self.eps,
            num_batches_tracked=self.num_batches_tracked if self.training else None,
        )


class BatchNorm1d(BatchNorm):
    """:class:`BatchNorm` for ``(N, C)`` or ``(N, C, L)`` input (see :class:`BatchNorm` for the formula).

    Examples:
        >>> BatchNorm1d(4)(torch.randn(8, 4)).shape
        torch.Size([8, 4])
    """

    ranks = (2, 3)
    layout = "(N, C) or (N, C, L)"


class BatchNorm2d(BatchNorm):
    """:class:`BatchNorm` for ``(N, C, H, W)`` input (see :class:`BatchNorm` for the formula).

    Examples:
        >>> BatchNorm2d(4)(torch.randn(2, 4, 3, 3)).shape
        torch.Size([2, 4, 3, 3])
    """

    ranks = (4,)
    layout = "(N, C, H, W)"


class BatchNorm3d(BatchNorm):
    """:class:`BatchNorm` for ``(N, C, D, H, W)`` input (see :class:`BatchNorm` for the formula).

    Examples:
        >>> BatchNorm3d(4)(torch.randn(2, 4, 2, 3, 3)).shape
        torch.Size([2, 4, 2, 3, 3])
    """

    ranks = (5,)
    layout = "(N, C, D, H, W)"


class InstanceNorm(_RunningStatsNorm):
    r"""Instance normalization over any ``(N, C, *)`` or unbatched ``(C, *)`` input (Ulyanov et al., 2016,
    arXiv:1607.08022).

    .. math::
        y_{nc} = \frac{x_{nc} - \mathrm{E}[x_{nc}]}{\sqrt{\mathrm{Var}[x_{nc}] + \epsilon}}\,\gamma_c + \beta_c

    statistics per sample and channel over the spatial dims. Defaults follow torch.nn: no affine map and no
    running statistics. With ``track_running_stats=True`` the running averages take the batch mean of the
    per-instance statistics and evaluation mode normalizes with them. Unlike torch.nn's InstanceNorm (which never
    updates ``num_batches_tracked`` and treats ``momentum=None`` as no update), the counter counts the training
    batches and ``momentum=None`` gives a cumulative average, as in BatchNorm.

    Args:
        num_features: ``C``.
        eps: added to the variance. Default: 1e-5.
        momentum: running-average factor (``None``: cumulative). Default: 0.1.
        affine: learn :math:`\gamma, \beta`. Default: False.
        track_running_stats: keep running statistics. Default: False.
        bias: learn :math:`\beta` (with ``affine``). Default: True.

    Shape:
        - Input: ``(N, C, *)`` or ``(C, *)`` with at least one spatial dim; Output: same shape and memory format.

    Examples:
        >>> y = InstanceNorm2d(3)(torch.randn(2, 3, 4, 4))
        >>> round(y[0, 0].mean().item(), 5) == 0.0
        True
    """

    #: number of spatial dims; ``None`` accepts any number ≥ 1
    spatial_dims: int | None = None

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)

    def check_input(self, x: Tensor) -> None:
        AffineNorm.check_input(self, x)
        name = type(self).__name__
        if self.spatial_dims is None:
            if x.dim() < 2:
                raise ValueError(f"{name} expects (N, C, *) or (C, *) input with a spatial dim, got {tuple(x.shape)}")
        else:
            k = self.spatial_dims
            check_rank(x, (k + 1, k + 2), name, f"((N, C) + {k} spatial dims, or unbatched (C) + {k})")

    def _is_unbatched(self, x: Tensor) -> bool:
        return self.spatial_dims is not None and x.dim() == self.spatial_dims + 1

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        unbatched = self._is_unbatched(x)
        batched = x.unsqueeze(0) if unbatched else x
        check_channels(batched, self.num_features, type(self).__name__, dim=1)
        use_input_stats = self.training or not self.track_running_stats
        y = F.instance_norm(
            batched,
            self.running_mean if self.training or not use_input_stats else None,
            self.running_var if self.training or not use_input_stats else None,
            self.weight,
            self.bias,
            use_input_stats=use_input_stats,
            momentum=self.momentum,
            eps=self.eps,
            num_batches_tracked=self.num_batches_tracked if self.training else None,
        )
        return y.squeeze(0) if unbatched else y


class InstanceNorm1d(InstanceNorm):
    """:class:`InstanceNorm` for ``(N, C, L)`` or ``(C, L)`` input.

    Examples:
        >>> InstanceNorm1d(4)(torch.randn(2, 4, 8)).shape
        torch.Size([2, 4, 8])
    """

    spatial_dims = 1


class InstanceNorm2d(InstanceNorm):
    """:class:`InstanceNorm` for ``(N, C, H, W)`` or ``(C, H, W)`` input.

    Examples:
        >>> InstanceNorm2d(4, affine=True)(torch.randn(2, 4, 3, 3)).shape
        torch.Size([2, 4, 3, 3])
    """

    spatial_dims = 2


class InstanceNorm3d(InstanceNorm):
    """:class:`InstanceNorm` for ``(N, C, D, H, W)`` or ``(C, D, H, W)`` input.

    Examples:
        >>> InstanceNorm3d(4)(torch.randn(2, 4, 2, 3, 3)).shape
        torch.Size([2, 4, 2, 3, 3])
    """

    spatial_dims = 3
