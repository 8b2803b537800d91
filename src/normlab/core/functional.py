r"""The functional core: every normalization is :func:`normalize` with its own dims, centring and statistics.

.. math::
    y = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} \cdot \gamma + \beta

with :math:`\mu, \sigma^2` from :func:`normlab.core.stats.moments` over the reduced dims (RMS statistics use
:math:`\mu = 0` and the mean square). Before the affine map each normalized vector of ``n`` values lies on the
sphere of radius :math:`\sqrt{n}` (centred) or has mean square 1 (RMS), up to ``eps``.

The ops below (:func:`batch_norm`, :func:`layer_norm`, ...) only choose the dims, the centring and the source of
the statistics; each first offers the call to a registered fast kernel (:mod:`normlab.core.dispatch`) and
otherwise runs the reference path here. Half-precision inputs are computed in float32 and returned in their own
dtype; the output keeps the input's memory format (channels_last stays channels_last).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from normlab._checks import check_floating
from normlab.core.dispatch import try_fast_path
from normlab.core.stats import Moments, compute_dtype, moments, update_running_stats_


def _aligned(param: Tensor, ndim: int, param_dim: int | None) -> Tensor:
    """View ``param`` so its dims start at ``param_dim`` of an ``ndim``-D tensor (``None``: trailing dims)."""
    if param_dim is None:
        return param
    trailing = ndim - param_dim - param.dim()
    return param.reshape(param.shape + (1,) * trailing)


def affine(y: Tensor, weight: Tensor | None, bias: Tensor | None, param_dim: int | None = None) -> Tensor:
    r"""The per-feature affine map :math:`y\gamma + \beta` (either may be ``None``).

    Args:
        y: the normalized tensor.
        weight, bias: :math:`\gamma`, :math:`\beta`; their dims line up with ``y``'s from ``param_dim`` on.
        param_dim: the dim of ``y`` where the parameters' dims begin; ``None`` means they match the trailing dims.

    Examples:
        >>> affine(torch.ones(2, 3, 4), torch.tensor([1.0, 2.0, 3.0]), None, param_dim=1)[0, :, 0].tolist()
        [1.0, 2.0, 3.0]
    """
    if weight is not None:
        w = _aligned(weight, y.dim(), param_dim)
        if bias is not None:
            return torch.addcmul(_aligned(bias, y.dim(), param_dim), y, w)
        return y * w
    if bias is not None:
        return y + _aligned(bias, y.dim(), param_dim)
    return y


def apply_stats(
    x: Tensor,
    stats: Moments,
    eps: float | Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    param_dim: int | None = None,
) -> Tensor:
    r"""Normalize ``x`` with given statistics, then apply the affine map.

    .. math::
        y = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}\,\gamma + \beta

    Computed in float32 for half inputs; returned in ``x.dtype`` and ``x``'s memory format.

    Args:
        x: input tensor.
        stats: :class:`~normlab.core.stats.Moments` broadcastable against ``x`` (``mean=None``: not centred).
        eps: added to the variance; a float or a broadcastable tensor (learnable eps).
        weight, bias: optional affine parameters, aligned at ``param_dim`` (see :func:`affine`).
        param_dim: where the parameters' dims begin in ``x``; ``None`` for the trailing dims.

    Shape:
        - x: any shape; output: same shape as ``x``.

    Examples:
        >>> x = torch.tensor([[1.0, 3.0]])
        >>> apply_stats(x, Moments(torch.tensor([[2.0]]), torch.tensor([[1.0]])), eps=0.0).tolist()
        [[-1.0, 1.0]]
    """
    xs = x.to(compute_dtype(x.dtype))
    centred = xs - stats.mean if stats.mean is not None else xs
    y = centred * torch.rsqrt(stats.var + eps)
    return affine(y, weight, bias, param_dim).to(x.dtype)


def normalize(
    x: Tensor,
    dims: Sequence[int],
    *,
    center: bool = True,
    eps: float | Tensor = 1e-5,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    param_dim: int | None = None,
) -> Tensor:
    r"""Standardize ``x`` over ``dims`` with its own statistics: the one operation behind every norm.

    .. math::
        y = \frac{x - \mu_{\text{dims}}(x)}{\sqrt{\sigma^2_{\text{dims}}(x) + \epsilon}}\,\gamma + \beta

    ``center=False`` drops :math:`\mu` and uses the mean square (RMSNorm).

    Args:
        x: floating-point input.
        dims: dims to take the statistics over.
        center: remove the mean before scaling.
        eps: added to the variance (mean square).
        weight, bias: optional affine parameters aligned at ``param_dim``.
        param_dim: where the parameters' dims begin in ``x`` (``None``: trailing dims).

    Shape:
        - x: any shape; output: same shape.

    Examples:
        >>> x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
        >>> y = normalize(x, dims=(1,), eps=1e-12)
        >>> [round(v, 3) for v in y.square().sum(1).tolist()]  # on the sphere of radius sqrt(8)
        [8.0, 8.0, 8.0, 8.0]
    """
    check_floating(x, "normalize")
    fast = try_fast_path("normalize", x, tuple(dims), center=center, eps=eps, weight=weight, bias=bias,
                         param_dim=param_dim)
    if fast is not None:
        return fast
    return apply_stats(x, moments(x, dims, center=center), eps, weight, bias, param_dim)


def _spatial_dims(x: Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.dim()))


def batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    num_batches_tracked: Tensor | None = None,
) -> Tensor:
    r"""Batch normalization (Ioffe & Szegedy, 2015): statistics per channel over the batch and spatial dims.

    .. math::
        y = \frac{x - \mathrm{E}_{N,*}[x]}{\sqrt{\mathrm{Var}_{N,*}[x] + \epsilon}}\,\gamma + \beta

    In training (or without running statistics) the batch's own statistics are used and, when buffers are given,
    folded into them by :func:`~normlab.core.stats.update_running_stats_`; in evaluation the running
    statistics are used.

    Args:
        x: input ``(N, C, *)``.
        running_mean, running_var: ``(C,)`` buffers, or ``None`` to always use batch statistics.
        weight, bias: optional ``(C,)`` affine parameters.
        training: use and update batch statistics.
        momentum: running-average factor, ``None`` for a cumulative average.
        eps: added to the variance.
        num_batches_tracked: batch counter, incremented in training.

    Shape:
        - x: ``(N, C, *)``; output: same shape and memory format.

    Examples:
        >>> x = torch.arange(8.0).reshape(4, 2)
        >>> batch_norm(x, None, None, training=True, eps=0.0).tolist()[0]
        [-1.3416407108306885, -1.3416407108306885]
    """
    check_floating(x, "batch_norm")
    use_batch_stats = training or running_mean is None
    fast = try_fast_path(
        "batch_norm", x, running_mean, running_var, weight, bias, training, momentum, eps, num_batches_tracked
    )
    if fast is not None:
        return fast
    if not use_batch_stats:
        assert running_var is not None
        stats = Moments(_aligned(running_mean, x.dim(), 1), _aligned(running_var, x.dim(), 1))
        return apply_stats(x, stats, eps, weight, bias, param_dim=1)
    stats, count = batch_moments(x, (0, *_spatial_dims(x)))
    if training:
        update_running_stats_(running_mean, running_var, stats.mean, stats.var, count, momentum, num_batches_tracked)
    return apply_stats(x, stats, eps, weight, bias, param_dim=1)


def batch_moments(x: Tensor, dims: Sequence[int], who: str = "batch_norm") -> tuple[Moments, int]:
    """Batch statistics over ``dims`` and the count ``n`` they span; more than one value per channel is required.

    Shared by every norm that learns from batch statistics (BatchNorm, Batch Renorm, Ghost BatchNorm).

    Examples:
        >>> stats, n = batch_moments(torch.randn(4, 3, 2), (0, 2))
        >>> tuple(stats.mean.shape), n
        ((1, 3, 1), 8)
    """
    count = 1
    for d in dims:
        count *= x.shape[d]
    if count <= 1:
        raise ValueError(
            f"{who} in training needs more than 1 value per channel, got input of shape {tuple(x.shape)}; "
            "use a batch larger than 1, call .eval(), or use a batch-independent norm (group_norm, layer_norm)"
        )
    return moments(x, dims), count


def instance_norm(
    x: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    use_input_stats: bool = True,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    num_batches_tracked: Tensor | None = None,
) -> Tensor:
    r"""Instance normalization (Ulyanov et al., 2016): statistics per sample and channel over spatial dims.

    .. math::
        y_{nc} = \frac{x_{nc} - \mathrm{E}_{*}[x_{nc}]}{\sqrt{\mathrm{Var}_{*}[x_{nc}] + \epsilon}}\,\gamma_c + \beta_c

    With running buffers and ``use_input_stats``, the running averages take the batch mean of the per-instance
    statistics (unbiased variance), as torch.nn does; ``use_input_stats=False`` normalizes with the buffers.

    Args:
        x: input ``(N, C, *)`` with at least one spatial dim.
        running_mean, running_var: optional ``(C,)`` buffers.
        weight, bias: optional ``(C,)`` affine parameters.
        use_input_stats: normalize with each instance's own statistics.
        momentum, eps, num_batches_tracked: as in :func:`batch_norm`.

    Shape:
        - x: ``(N, C, *)``; output: same shape and memory format.

    Examples:
        >>> x = torch.tensor([[[1.0, 3.0], [2.0, 2.0]]])
        >>> instance_norm(x, eps=1e-12).tolist()
        [[[-1.0, 1.0], [0.0, 0.0]]]
    """
    check_floating(x, "instance_norm")
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise ValueError("instance_norm with use_input_stats=False needs running_mean and running_var")
        stats = Moments(_aligned(running_mean, x.dim(), 1), _aligned(running_var, x.dim(), 1))
        return apply_stats(x, stats, eps, weight, bias, param_dim=1)
    fast = try_fast_path(
        "instance_norm", x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps,
        num_batches_tracked,
    )
    if fast is not None:
        return fast
    stats = moments(x, _spatial_dims(x))
    if running_mean is not None:
        count = x[0, 0].numel()
        update_running_stats_(
            running_mean, running_var, stats.mean.mean(0), stats.var.mean(0), count, momentum, num_batches_tracked
        )
    return apply_stats(x, stats, eps, weight, bias, param_dim=1)


def _check_normalized_shape(x: Tensor, normalized_shape: Sequence[int], who: str) -> tuple[int, ...]:
    shape = tuple(normalized_shape)
    if x.dim() < len(shape) or tuple(x.shape[x.dim() - len(shape):]) != shape:
        raise ValueError(
            f"{who} normalizes the trailing dims {list(shape)}, but the input has shape {tuple(x.shape)}; "
            f"build the layer with normalized_shape={list(x.shape[-len(shape):]) if len(shape) else []} "
            "or move the features to the last dim"
        )
    return tuple(range(x.dim() - len(shape), x.dim()))


def layer_norm(
    x: Tensor,
    normalized_shape: Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    r"""Layer normalization (Ba et al., 2016): statistics per sample over the trailing ``normalized_shape`` dims.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}}\,\gamma + \beta

    Shape:
        - x: ``(*, *normalized_shape)``; weight, bias: ``normalized_shape``; output: same as x.

    Examples:
        >>> layer_norm(torch.tensor([[1.0, 3.0]]), (2,), eps=1e-12).tolist()
        [[-1.0, 1.0]]
    """
    check_floating(x, "layer_norm")
    dims = _check_normalized_shape(x, normalized_shape, "layer_norm")
    fast = try_fast_path("layer_norm", x, normalized_shape, weight, bias, eps)
    if fast is not None:
        return fast
    return apply_stats(x, moments(x, dims), eps, weight, bias)


def rms_norm(
    x: Tensor,
    normalized_shape: Sequence[int],
    weight: Tensor | None = None,
    eps: float | None = None,
) -> Tensor:
    r"""Root-mean-square normalization (Zhang & Sennrich, 2019): rescale by the RMS, without centring.

    .. math::
        y = \frac{x}{\sqrt{\frac1n\sum_i x_i^2 + \epsilon}}\,\gamma

    ``eps=None`` uses ``torch.finfo(x.dtype).eps``, as torch.nn.RMSNorm does.

    Shape:
        - x: ``(*, *normalized_shape)``; weight: ``normalized_shape``; output: same as x.

    Examples:
        >>> y = rms_norm(torch.tensor([[3.0, 4.0]]), (2,), eps=1e-12)  # RMS = sqrt(12.5)
        >>> [round(v, 4) for v in y.flatten().tolist()]
        [0.8485, 1.1314]
    """
    check_floating(x, "rms_norm")
    dims = _check_normalized_shape(x, normalized_shape, "rms_norm")
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    fast = try_fast_path("rms_norm", x, normalized_shape, weight, eps)
    if fast is not None:
        return fast
    return apply_stats(x, moments(x, dims, center=False), eps, weight)


def group_norm(
    x: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    r"""Group normalization (Wu & He, 2018): statistics per sample over each group of ``C / G`` channels and the
    spatial dims.

    .. math::
        y_{ng} = \frac{x_{ng} - \mathrm{E}[x_{ng}]}{\sqrt{\mathrm{Var}[x_{ng}] + \epsilon}}\,\gamma + \beta

    ``num_groups=1`` is LayerNorm over ``(C, *)``; ``num_groups=C`` is InstanceNorm.

    Shape:
        - x: ``(N, C, *)``; weight, bias: ``(C,)``; output: same shape and memory format.

    Examples:
        >>> x = torch.tensor([[[1.0], [3.0], [5.0], [5.0]]])
        >>> group_norm(x, 2, eps=1e-12).flatten().tolist()
        [-1.0, 1.0, 0.0, 0.0]
    """
    check_floating(x, "group_norm")
    if x.dim() < 2 or x.shape[1] % num_groups:
        channels = x.shape[1] if x.dim() >= 2 else None
        raise ValueError(f"group_norm: num_groups={num_groups} must divide the {channels} channels of dim 1")
    fast = try_fast_path("group_norm", x, num_groups, weight, bias, eps)
    if fast is not None:
        return fast
    grouped = x.unflatten(1, (num_groups, x.shape[1] // num_groups))  # (N, G, C//G, *)
    w = weight.view(num_groups, -1) if weight is not None else None
    b = bias.view(num_groups, -1) if bias is not None else None
    y = apply_stats(grouped, moments(grouped, tuple(range(2, grouped.dim()))), eps, w, b, param_dim=1)
    return y.flatten(1, 2)


def add_layer_norm(
    x: Tensor,
    residual: Tensor,
    normalized_shape: Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> tuple[Tensor, Tensor]:
    r"""Residual add followed by :func:`layer_norm`, returning both: :math:`s = x + r`, :math:`y = \mathrm{LN}(s)`.

    Pre-norm Transformers need the sum for the next residual branch; a fast kernel computes both in one pass.

    Returns:
        ``(y, s)``, each shaped like ``x``.

    Examples:
        >>> y, s = add_layer_norm(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 1.0]]), (2,), eps=1e-12)
        >>> y.tolist(), s.tolist()
        ([[-1.0, 1.0]], [[1.0, 3.0]])
    """
    check_floating(x, "add_layer_norm")
    fast = try_fast_path("add_layer_norm", x, residual, normalized_shape, weight, bias, eps)
    if fast is not None:
        return fast
    s = x + residual
    return layer_norm(s, normalized_shape, weight, bias, eps), s


def add_rms_norm(
    x: Tensor,
    residual: Tensor,
    normalized_shape: Sequence[int],
    weight: Tensor | None = None,
    eps: float | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Residual add followed by :func:`rms_norm`, returning both: :math:`s = x + r`, :math:`y = \mathrm{RMSNorm}(s)`.

    Returns:
        ``(y, s)``, each shaped like ``x``.

    Examples:
        >>> y, s = add_rms_norm(torch.tensor([[1.0, 2.0]]), torch.tensor([[2.0, 2.0]]), (2,), eps=1e-12)
        >>> [round(v, 4) for v in y.flatten().tolist()], s.tolist()
        ([0.8485, 1.1314], [[3.0, 4.0]])
    """
    check_floating(x, "add_rms_norm")
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    fast = try_fast_path("add_rms_norm", x, residual, normalized_shape, weight, eps)
    if fast is not None:
        return fast
    s = x + residual
    return rms_norm(s, normalized_shape, weight, eps), s


__all__ = [
    "add_layer_norm",
    "add_rms_norm",
    "affine",
    "apply_stats",
    "batch_moments",
    "batch_norm",
    "group_norm",
    "instance_norm",
    "layer_norm",
    "normalize",
    "rms_norm",
]
