r"""The hypersphere view of normalization, measured on a real model.

A normalization layer standardizes each of its *vectors* — the group of ``n`` elements it reduces — and so
projects it onto a sphere before the affine map:

.. math::
    \hat x = \frac{x - \mu(x)}{\sqrt{\sigma^2(x) + \epsilon}}, \qquad
    \lVert \hat x \rVert_2 = \sqrt{n}\,\sqrt{\frac{\sigma^2}{\sigma^2 + \epsilon}} \approx \sqrt n

(centred norms; RMS norms drop :math:`\mu` and use the mean square, with the same :math:`\sqrt n` radius).
This is the geometric picture of Ioffe & Szegedy (2015, arXiv:1502.03167) and Ba et al. (2016,
arXiv:1607.06450), made explicit for LayerNorm by Brody, Alon & Yahav (2023, "On the Expressivity Role of
LayerNorm in Transformers' Attention", arXiv:2305.02582) and used as the unifying view of normalization by
Huang et al. (2020, "Normalization Techniques in Training DNNs", arXiv:2009.12836). Whatever the norm of the
incoming vector — which can spread over orders of magnitude — the normalized vector has norm :math:`\sqrt n`.

:func:`sphere_stats` captures each normalization layer's input with a forward hook, recomputes the normalized
vectors itself in float64 over the axes that layer reduces (it does not call the layer's internals), and reports
their norms against :math:`\sqrt n` together with the spread of the incoming norms :math:`\lVert x\rVert`.

Which vectors each kind normalizes (input ``(N, C, *)`` unless noted):

====================  ================================================  =======
kind                  one vector                                        centred
====================  ================================================  =======
batch_norm            one channel over the batch and space              yes
ghost_batch_norm      one channel over one ghost batch and space        yes
batch_renorm          one channel over the batch and space              yes
instance_norm         one sample and channel over space                 yes
group_norm            one sample and group over its channels and space  yes
layer_norm            the trailing ``normalized_shape`` of a sample     yes
layer_norm_2d         the channels at one position of one sample        yes
rms_norm              the trailing ``normalized_shape``                 no
scale_norm            the last dim                                      no
filter_response_norm  one sample and channel over space                 no
====================  ================================================  =======

BatchNorm-family statistics are taken from the captured batch itself (the projection the layer applies in
training); in evaluation mode the layer uses running averages instead, which need not put vectors on the sphere.
Dynamic Tanh and identity layers normalize nothing and are listed as skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from normlab.analysis._layers import call_model, preserved_state
from normlab.registry import norm_kind
from normlab.analysis._table import format_table

# kind -> (function giving the (num_vectors, n) matrix of vectors, centred?)
Vectors = Callable[[nn.Module, Tensor], Tensor]


def _per_channel_over_batch(layer: nn.Module, x: Tensor) -> Tensor:
    return x.transpose(0, 1).reshape(x.shape[1], -1)  # (C, N * spatial)


def _ghost_batches(layer: nn.Module, x: Tensor) -> Tensor:
    if not layer.training and layer.track_running_stats:
        return _per_channel_over_batch(layer, x)
    size = layer.virtual_batch_size
    return torch.cat([_per_channel_over_batch(layer, part) for part in x.split(size)])  # (K * C, v * spatial)


def _is_unbatched(layer: nn.Module, x: Tensor) -> bool:
    """An unbatched ``(C, *)`` input to an instance norm with a fixed number of spatial dims."""
    spatial = getattr(layer, "spatial_dims", None)  # normlab's InstanceNorm1d/2d/3d
    if spatial is not None:
        return x.dim() == spatial + 1
    no_batch_dim = getattr(layer, "_get_no_batch_dim", None)  # torch.nn's InstanceNorm1d/2d/3d
    return no_batch_dim is not None and x.dim() == no_batch_dim()


def _per_sample_channel(layer: nn.Module, x: Tensor) -> Tensor:
    if _is_unbatched(layer, x):
        x = x.unsqueeze(0)
    return x.reshape(x.shape[0] * x.shape[1], -1)  # (N * C, spatial)


def _per_group(layer: nn.Module, x: Tensor) -> Tensor:
    return x.reshape(x.shape[0] * layer.num_groups, -1)  # (N * G, C / G * spatial)


def _trailing(layer: nn.Module, x: Tensor) -> Tensor:
    n = math.prod(layer.normalized_shape)
    return x.reshape(-1, n)  # (prod(leading dims), n)


def _last_dim(layer: nn.Module, x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1])


def _channels_at_each_position(layer: nn.Module, x: Tensor) -> Tensor:
    return x.movedim(1, -1).reshape(-1, x.shape[1])  # (N * spatial, C)


_GEOMETRY: dict[str, tuple[Vectors, bool]] = {
    "batch_norm": (_per_channel_over_batch, True),
    "batch_renorm": (_per_channel_over_batch, True),
    "ghost_batch_norm": (_ghost_batches, True),
    "instance_norm": (_per_sample_channel, True),
    "group_norm": (_per_group, True),
    "layer_norm": (_trailing, True),
    "layer_norm_2d": (_channels_at_each_position, True),
    "rms_norm": (_trailing, False),
    "scale_norm": (_last_dim, False),
    "filter_response_norm": (_per_sample_channel, False),
}


def _layer_eps(layer: nn.Module, kind: str, dtype: torch.dtype) -> float:
    if kind == "scale_norm":  # ||x||^2 + eps^2 = n (mean(x^2) + eps^2 / n)
        return layer.eps**2 / layer.num_features
    eps = layer.eps if layer.eps is not None else torch.finfo(dtype).eps  # RMSNorm(eps=None): torch's default
    if kind == "filter_response_norm" and getattr(layer, "eps_offset", None) is not None:
        eps = eps + float(layer.eps_offset.detach().abs())
    return float(eps)


def normalized_vectors(layer: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    r"""The vectors ``layer`` normalizes in ``x`` and their normalized versions, in float64.

    Args:
        layer: a normalization layer of a kind listed in the module docstring (normlab or torch.nn).
        x: the layer's input.

    Returns:
        ``(vectors, normalized)``, both ``(num_vectors, n)`` float64: each row is one vector :math:`x` and
        :math:`\hat x = (x - \mu)/\sqrt{\sigma^2 + \epsilon}` (or :math:`x/\sqrt{\overline{x^2} + \epsilon}`).

    Examples:
        >>> vectors, unit = normalized_vectors(nn.LayerNorm(4), torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
        >>> vectors.shape, round(unit.norm().item(), 4)
        (torch.Size([1, 4]), 2.0)
    """
    kind = norm_kind(layer)
    if kind not in _GEOMETRY:
        raise ValueError(
            f"normalized_vectors: {type(layer).__name__} ({kind}) does not project onto a sphere; "
            f"supported kinds: {', '.join(sorted(_GEOMETRY))}"
        )
    reshape, centred = _GEOMETRY[kind]
    vectors = reshape(layer, x.detach()).to(torch.float64)
    eps = _layer_eps(layer, kind, x.dtype)
    if centred:
        var, mean = torch.var_mean(vectors, dim=1, correction=0, keepdim=True)
        return vectors, (vectors - mean) / torch.sqrt(var + eps)
    return vectors, vectors / torch.sqrt(vectors.square().mean(dim=1, keepdim=True) + eps)


@dataclass
class SphereLayerStats:
    """The hypersphere measurement of one normalization layer (all calls of it in one forward)."""

    name: str  #: module name in the model
    kind: str  #: registry name of the normalization
    num_vectors: int  #: how many vectors were normalized
    n: int  #: elements per vector; the predicted radius is √n
    radius_mean: float  #: mean of ‖x̂‖
    radius_std: float  #: standard deviation of ‖x̂‖
    max_relative_error: float  #: max over vectors of |‖x̂‖/√n − 1|
    input_norm_mean: float  #: mean of ‖x‖ of the incoming vectors
    input_norm_std: float  #: their standard deviation
    input_norm_min: float
    input_norm_max: float

    @property
    def expected_radius(self) -> float:
        """√n, the radius normalization predicts."""
        return math.sqrt(self.n)

    @property
    def input_norm_cv(self) -> float:
        """Coefficient of variation std/mean of the incoming norms (their spread, which normalization removes)."""
        return self.input_norm_std / self.input_norm_mean if self.input_norm_mean > 0 else float("nan")


@dataclass
class SphereReport:
    """Per-layer :class:`SphereLayerStats`; prints as a table."""

    layers: list[SphereLayerStats]
    skipped: dict[str, str] = field(default_factory=dict)  #: name → why a normalization-like layer was skipped

    def __getitem__(self, name: str) -> SphereLayerStats:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no normalization layer named {name!r}; measured: {[s.name for s in self.layers]}")

    def __len__(self) -> int:
        return len(self.layers)

    def table(self) -> str:
        """One line per layer: radius against √n, and the spread of the incoming norms."""
        rows = [{**vars(s), "sqrt_n": s.expected_radius, "ratio": s.radius_mean / s.expected_radius,
                 "cv": s.input_norm_cv} for s in self.layers]
        return format_table(rows, [
            ("name", "layer", ""), ("kind", "kind", ""), ("num_vectors", "vectors", "d"), ("n", "n", "d"),
            ("sqrt_n", "√n", ".2f"), ("ratio", "‖x̂‖/√n", ".6f"), ("max_relative_error", "max|err|", ".1e"),
            ("input_norm_mean", "‖x‖ mean", ".3g"), ("cv", "‖x‖ cv", ".3f"),
            ("input_norm_min", "‖x‖ min", ".3g"), ("input_norm_max", "‖x‖ max", ".3g"),
        ])

    def __repr__(self) -> str:
        notes = "".join(f"\nskipped {name}: {why}" for name, why in self.skipped.items())
        return self.table() + notes


def _summarize(name: str, kind: str, layer: nn.Module, inputs: list[Tensor]) -> SphereLayerStats:
    pairs = [normalized_vectors(layer, x) for x in inputs]
    vectors = torch.cat([v for v, _ in pairs])
    radii = torch.cat([u for _, u in pairs]).norm(dim=1)
    norms = vectors.norm(dim=1)
    n = vectors.shape[1]
    return SphereLayerStats(
        name=name, kind=kind, num_vectors=vectors.shape[0], n=n,
        radius_mean=radii.mean().item(), radius_std=radii.std(correction=0).item(),
        max_relative_error=(radii / math.sqrt(n) - 1).abs().max().item(),
        input_norm_mean=norms.mean().item(), input_norm_std=norms.std(correction=0).item(),
        input_norm_min=norms.min().item(), input_norm_max=norms.max().item(),
    )


def sphere_stats(model: nn.Module, inputs: Tensor | tuple | list) -> SphereReport:
    r"""Measure, for every normalization layer of ``model``, how well it projects onto the sphere of radius √n.

    Runs one forward pass of ``model`` on ``inputs`` (in its current train/eval mode, without gradients),
    captures each normalization layer's input, and recomputes the normalized vectors in float64 (see the module
    docstring for the formula and which axes each kind reduces). The model is left exactly as it was: buffers
    such as BatchNorm running statistics are restored after the pass.

    Args:
        model: any ``nn.Module``; normalization layers are recognised through :func:`normlab.registry.get_norm_spec`
            (normlab's and torch.nn's classes).
        inputs: a tensor, or a tuple/list of positional inputs.

    Returns:
        :class:`SphereReport` with one :class:`SphereLayerStats` per layer that was called; ``print`` it for the
        per-layer table.

    Examples:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 36, 16),
        ...                       nn.LayerNorm(16))
        >>> report = sphere_stats(model, torch.randn(4, 3, 8, 8))
        >>> [(s.name, s.n, round(s.radius_mean / s.expected_radius, 4)) for s in report.layers]
        [('1', 144, 1.0), ('4', 16, 1.0)]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"sphere_stats expects an nn.Module, got {type(model).__name__}")
    captured: dict[str, list[Tensor]] = {}
    layers: dict[str, tuple[nn.Module, str]] = {}
    skipped: dict[str, str] = {}
    handles = []
    for name, module in model.named_modules():
        kind = norm_kind(module)
        if kind is None or kind == "none":
            continue
        if kind not in _GEOMETRY:
            skipped[name] = f"{kind} does not normalize by statistics"
            continue
        layers[name] = (module, kind)
        captured[name] = []
        handles.append(module.register_forward_hook(
            lambda mod, args, out, name=name: captured[name].append(args[0].detach())))
    try:
        with torch.no_grad(), preserved_state(model):
            call_model(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    stats = [_summarize(name, kind, layer, captured[name]) for name, (layer, kind) in layers.items() if captured[name]]
    return SphereReport(stats, skipped)


__all__ = ["SphereLayerStats", "SphereReport", "normalized_vectors", "sphere_stats"]
