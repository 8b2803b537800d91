r"""BatchNorm variants for small or unrepresentative batches: Batch Renormalization and Ghost BatchNorm.

Both keep BatchNorm's buffers and state_dict keys (a :class:`~normlab.nn.BatchNorm2d` checkpoint loads into
them) and behave exactly like BatchNorm in evaluation; they change only where training takes its statistics.
"""

from __future__ import annotations

import torch
from torch import Tensor

from normlab._checks import check_positive_int, memory_format_of
from normlab.core import functional as F
from normlab.core.stats import update_running_stats_
from normlab.nn.batchnorm import BatchNorm


class BatchRenorm(BatchNorm):
    r"""Batch Renormalization (Ioffe, 2017, arXiv:1702.03275): BatchNorm corrected towards the running statistics.

    .. math::
        r = \operatorname{clip}_{[1/r_{max},\, r_{max}]}\!\left(\frac{\sigma_B}{\sigma}\right),\quad
        d = \operatorname{clip}_{[-d_{max},\, d_{max}]}\!\left(\frac{\mu_B - \mu}{\sigma}\right),\quad
        y = \left(\frac{x - \mu_B}{\sigma_B}\, r + d\right)\gamma + \beta

    where :math:`\mu_B, \sigma_B` are the batch statistics (:math:`\sigma_B = \sqrt{\mathrm{Var}_B + \epsilon}`),
    :math:`\mu, \sigma` the running ones, and :math:`r, d` are treated as constants by backprop. With
    :math:`r=1, d=0` this is BatchNorm; as the clips relax, training outputs match evaluation outputs, which
    is what makes small or non-i.i.d. batches work. The limits grow linearly from :math:`(1, 0)` to
    ``(r_max, d_max)`` over ``warmup_steps`` training batches (the paper relaxes them gradually; 0 applies them
    at once).

    Args:
        num_features: ``C``.
        eps, momentum, affine: as in :class:`BatchNorm`. Running statistics are always tracked.
        r_max: bound on the scale correction :math:`r`. Default: 3.0.
        d_max: bound on the shift correction :math:`d`. Default: 5.0.
        warmup_steps: training batches over which the limits relax from (1, 0). Default: 0.

    Shape:
        - Input: ``(N, C, *)``; Output: same shape and memory format.

    Examples:
        >>> brn = BatchRenorm(3)
        >>> brn(torch.randn(4, 3, 5, 5)).shape
        torch.Size([4, 3, 5, 5])
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        r_max: float = 3.0,
        d_max: float = 5.0,
        warmup_steps: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if r_max < 1 or d_max < 0:
            raise ValueError(f"BatchRenorm: need r_max ≥ 1 and d_max ≥ 0, got r_max={r_max}, d_max={d_max}")
        super().__init__(num_features, eps, momentum, affine, True, device, dtype)
        self.r_max, self.d_max, self.warmup_steps = float(r_max), float(d_max), int(warmup_steps)

    def limits(self) -> tuple[float, float]:
        """The current ``(r_max, d_max)``, relaxed linearly over ``warmup_steps``."""
        if self.warmup_steps <= 0:
            return self.r_max, self.d_max
        progress = min(1.0, float(self.num_batches_tracked.item()) / self.warmup_steps)
        return 1.0 + (self.r_max - 1.0) * progress, self.d_max * progress

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        self.check_input(x)
        stats, count = F.batch_moments(x, (0, *range(2, x.dim())), "BatchRenorm")
        r_max, d_max = self.limits()
        batch_mean, batch_var = stats.mean.reshape(-1), stats.var.reshape(-1)  # (C,)
        running_std = torch.sqrt(self.running_var.to(batch_var.dtype) + self.eps)
        r = (torch.sqrt(batch_var + self.eps) / running_std).detach().clamp(1.0 / r_max, r_max)
        d = ((batch_mean - self.running_mean.to(batch_mean.dtype)) / running_std).detach().clamp(-d_max, d_max)
        weight = r * self.weight if self.weight is not None else r
        bias = d * self.weight + self.bias if self.weight is not None else d
        update_running_stats_(
            self.running_mean, self.running_var, batch_mean, batch_var, count, self.momentum, self.num_batches_tracked
        )
        return F.apply_stats(x, stats, self.eps, weight, bias, param_dim=1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r_max={self.r_max}, d_max={self.d_max}, warmup_steps={self.warmup_steps}"


class GhostBatchNorm(BatchNorm):
    r"""Ghost (virtual-batch) BatchNorm (Hoffer, Hubara & Soudry, 2017, arXiv:1705.08741).

    .. math::
        y_i = \frac{x_i - \mu_{B_k}}{\sqrt{\sigma^2_{B_k} + \epsilon}}\,\gamma + \beta \qquad (i \in B_k)

    In training, the batch is cut into consecutive "ghost" batches :math:`B_k` of ``virtual_batch_size`` samples
    (the last may be smaller) and each is normalized with its own statistics — the noise of small-batch
    statistics that helps large-batch training generalize. The running statistics take the mean of the ghost
    batches' statistics (unbiased variance), once per forward. Evaluation is plain BatchNorm.

    Args:
        num_features: ``C``.
        virtual_batch_size: samples per ghost batch. Default: 32.
        eps, momentum, affine, track_running_stats: as in :class:`BatchNorm`.

    Shape:
        - Input: ``(N, C, *)``; Output: same shape and memory format.

    Examples:
        >>> gbn = GhostBatchNorm(3, virtual_batch_size=4)
        >>> y = gbn(torch.randn(8, 3) * 5 + 2)
        >>> bool(y[:4].mean(0).abs().max() < 1e-5)  # each ghost batch is normalized on its own
        True
    """

    def __init__(
        self,
        num_features: int,
        virtual_batch_size: int = 32,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_positive_int(virtual_batch_size, "virtual_batch_size", "GhostBatchNorm")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.virtual_batch_size = virtual_batch_size

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and self.track_running_stats:
            return super().forward(x)
        self.check_input(x)
        n, v = x.shape[0], self.virtual_batch_size
        full = n - n % v
        # Equal-size ghost batches as one (K, v, C, *) tensor, plus the remainder as (1, n - full, C, *).
        parts = [x[:full].unflatten(0, (full // v, v))] if full else []
        if full < n:
            parts.append(x[full:].unsqueeze(0))
        outputs, means, variances, count = [], [], [], 0
        for part in parts:
            stats, part_count = F.batch_moments(part, (1, *range(3, part.dim())), "GhostBatchNorm")
            count = count or part_count  # the full ghost batches' count sets the unbiased correction
            outputs.append(F.apply_stats(part, stats, self.eps, self.weight, self.bias, param_dim=2).flatten(0, 1))
            means.append(stats.mean.reshape(part.shape[0], -1))
            variances.append(stats.var.reshape(part.shape[0], -1))
        if self.training and self.track_running_stats:
            update_running_stats_(
                self.running_mean, self.running_var, torch.cat(means).mean(0), torch.cat(variances).mean(0),
                count, self.momentum, self.num_batches_tracked,
            )
        if len(outputs) == 1:
            return outputs[0]
        return torch.cat(outputs).contiguous(memory_format=memory_format_of(x))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, virtual_batch_size={self.virtual_batch_size}"


__all__ = ["BatchRenorm", "GhostBatchNorm"]
