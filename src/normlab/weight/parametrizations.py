r"""Weight reparametrizations: small modules for :func:`torch.nn.utils.parametrize.register_parametrization`.

Each class maps the stored tensor(s) to the effective weight. Most users call :func:`normlab.reparametrize`,
which picks the right ``dim`` per module type and checks the input; these classes are the building blocks.

**Output units.** Every kind works per *output unit*: the slice ``w[i]`` along ``dim`` (a row of a Linear
weight ``(out, in)``, one filter of a Conv weight ``(out, in/groups, *k)``). Statistics and norms are taken over
all the other dims. ConvTranspose weights are stored ``(in, out/groups, *k)``, so their output units sit in
dim 1 — the rule :func:`torch.nn.utils.parametrizations.spectral_norm` uses; :func:`output_unit_dim` says which.

State-dict keys follow torch's parametrizations: ``parametrizations.weight.original0`` (the scale ``g``) and
``original1`` (the direction ``v``) for the two-tensor kinds, ``parametrizations.weight.original`` for the
one-tensor kinds, and ``parametrizations.weight.0._u`` / ``._v`` for the spectral-norm vectors — so a module
weight-normalized by torch loads into one reparametrized by normlab, and back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normlab._checks import check_eps, check_positive_int
from normlab.core import compute_dtype, normalize

__all__ = [
    "CenteredWeightNorm",
    "SpectralNorm",
    "WeightNorm",
    "WeightParametrization",
    "WeightStandardization",
    "output_unit_dim",
    "resolve_dim",
]


def output_unit_dim(module: nn.Module) -> int:
    """The weight dim that indexes output units: 1 for ConvTranspose (weight ``(in, out/groups, *k)``), else 0.

    Examples:
        >>> output_unit_dim(nn.Conv2d(3, 8, 3)), output_unit_dim(nn.ConvTranspose2d(3, 8, 3))
        (0, 1)
    """
    return 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0


def resolve_dim(dim: int, ndim: int, who: str) -> int:
    """Check ``dim`` against a weight of ``ndim`` dims and return it as a non-negative index."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{who}: dim must be an int (the dim of output units), got {type(dim).__name__}")
    if not -ndim <= dim < ndim:
        raise ValueError(
            f"{who}: dim={dim} is out of range for a {ndim}-D weight; use a value in [{-ndim}, {ndim - 1}] "
            "(0 for Linear/Conv weights, 1 for ConvTranspose weights)"
        )
    return dim % ndim


def _other_dims(ndim: int, dim: int) -> tuple[int, ...]:
    return tuple(d for d in range(ndim) if d != dim % ndim)


def _unit_norm(v: Tensor, dim: int) -> Tensor:
    """The L2 norm of every output unit of ``v``, kept broadcastable against ``v``."""
    return torch.linalg.vector_norm(v, dim=_other_dims(v.dim(), dim), keepdim=True, dtype=compute_dtype(v.dtype))


class WeightParametrization(nn.Module):
    """Base of normlab's weight reparametrizations; ``kind`` is the registry name."""

    kind: str = ""

    def __init__(self, dim: int = 0) -> None:
        super().__init__()
        self.dim = dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class WeightNorm(WeightParametrization):
    r"""Weight Normalization (Salimans & Kingma 2016, https://arxiv.org/abs/1602.07868).

    .. math::
        w_i = g_i \, \frac{v_i}{\lVert v_i \rVert_2}

    for every output unit :math:`i` (the slices along ``dim``). Stored tensors: ``original0 = g`` (size 1 in
    every dim but ``dim``) and ``original1 = v``. Assigning a weight sets ``v = w`` and ``g = ‖w_i‖``, so the
    effective weight is unchanged. Numerically the same map as
    :func:`torch.nn.utils.parametrizations.weight_norm` (same state-dict keys), with no ``eps``: a unit with
    ``v_i = 0`` gives NaN, as torch's does.

    Args:
        dim: the dim of output units (``0``; ``1`` for ConvTranspose).

    Shape:
        - g: ``1`` in every dim except ``dim``; v and the output: the weight's shape.

    Examples:
        >>> from torch.nn.utils import parametrize
        >>> layer = nn.Linear(3, 2)
        >>> _ = parametrize.register_parametrization(layer, "weight", WeightNorm(dim=0))
        >>> with torch.no_grad():
        ...     _ = layer.parametrizations.weight.original0.fill_(2.0)
        >>> [round(n, 4) for n in layer.weight.norm(dim=1).tolist()]
        [2.0, 2.0]
    """

    kind = "weight_norm"

    def forward(self, g: Tensor, v: Tensor) -> Tensor:
        return (v * (g / _unit_norm(v, self.dim))).to(v.dtype)

    def right_inverse(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        return _unit_norm(weight, self.dim).to(weight.dtype), weight


def _centred(v: Tensor, dim: int) -> Tensor:
    vs = v.to(compute_dtype(v.dtype))
    return vs - vs.mean(dim=_other_dims(v.dim(), dim), keepdim=True)


class CenteredWeightNorm(WeightParametrization):
    r"""Centered Weight Normalization (Huang et al. 2017, https://arxiv.org/abs/1708.00631).

    Each output unit is centred, projected onto the unit sphere, and rescaled by a learnable gain:

    .. math::
        w_i = g_i \, \frac{v_i - \bar v_i \mathbf 1}{\max(\lVert v_i - \bar v_i \mathbf 1 \rVert_2, \epsilon)},
        \qquad \bar v_i = \tfrac1n \textstyle\sum_j v_{ij}

    so every unit of :math:`w` has zero mean and norm :math:`|g_i|`. Stored tensors: ``original0 = g`` and
    ``original1 = v``, like :class:`WeightNorm`.

    **Initial scale.** Assigning a weight ``w`` sets ``v = w`` and ``g_i = ‖w_i − \bar w_i‖``: the effective
    weight becomes ``w`` with each unit's mean removed — the nearest weight this reparametrization can express.
    For a freshly initialised (near zero-mean) layer that keeps each unit's norm close to the original one.

    Args:
        dim: the dim of output units (``0``; ``1`` for ConvTranspose).
        eps: lower bound on the centred norm, so a constant unit gives zeros instead of NaN.

    Shape:
        - g: ``1`` in every dim except ``dim``; v and the output: the weight's shape.

    Examples:
        >>> from torch.nn.utils import parametrize
        >>> layer = nn.Linear(4, 2)
        >>> _ = parametrize.register_parametrization(layer, "weight", CenteredWeightNorm())
        >>> with torch.no_grad():
        ...     _ = layer.parametrizations.weight.original0.fill_(1.0)
        >>> w = layer.weight
        >>> [round(abs(m), 6) for m in w.mean(dim=1).tolist()], [round(n, 4) for n in w.norm(dim=1).tolist()]
        ([0.0, 0.0], [1.0, 1.0])
    """

    kind = "centered_weight_norm"

    def __init__(self, dim: int = 0, eps: float = 1e-12) -> None:
        super().__init__(dim)
        check_eps(eps, "CenteredWeightNorm")
        self.eps = eps

    def forward(self, g: Tensor, v: Tensor) -> Tensor:
        centred = _centred(v, self.dim)
        norm = _unit_norm(centred, self.dim).clamp_min(self.eps)
        return (centred * (g / norm)).to(v.dtype)

    def right_inverse(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        return _unit_norm(_centred(weight, self.dim), self.dim).to(weight.dtype), weight

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}"


class WeightStandardization(WeightParametrization):
    r"""Weight Standardization (Qiao et al. 2019, https://arxiv.org/abs/1903.10520).

    Each output unit is standardized to zero mean and unit (biased) variance, as in the paper's Eq. 5–6:

    .. math::
        \hat w_{ij} = \frac{w_{ij} - \mu_i}{\sqrt{\sigma_i^2 + \epsilon}}, \qquad
        \mu_i = \tfrac1n \textstyle\sum_j w_{ij}, \quad \sigma_i^2 = \tfrac1n \textstyle\sum_j (w_{ij} - \mu_i)^2

    There is no learnable gain: WS is meant to be followed by an activation norm (GroupNorm in the paper),
    whose affine parameters carry the scale. The stored tensor is the raw weight (``original``).

    Note: the authors' released code divides by the *unbiased* standard deviation plus ``1e-5`` (eps outside
    the root); this follows the paper's formula instead (biased variance, eps inside the root), as timm's
    ``StdConv2d`` and Big Transfer do. The two differ by the factor :math:`\sqrt{n/(n-1)}`.

    Args:
        dim: the dim of output units (``0``; ``1`` for ConvTranspose).
        eps: added to the variance.

    Shape:
        - weight and output: any shape with at least 2 dims.

    Examples:
        >>> from torch.nn.utils import parametrize
        >>> conv = nn.Conv2d(3, 4, 3)
        >>> _ = parametrize.register_parametrization(conv, "weight", WeightStandardization())
        >>> var, mean = torch.var_mean(conv.weight, dim=(1, 2, 3), correction=0)
        >>> [round(abs(m), 5) for m in mean.tolist()], [round(s, 2) for s in var.tolist()]
        ([0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0])
    """

    kind = "weight_standardization"

    def __init__(self, dim: int = 0, eps: float = 1e-5) -> None:
        super().__init__(dim)
        check_eps(eps, "WeightStandardization")
        self.eps = eps

    def forward(self, weight: Tensor) -> Tensor:
        return normalize(weight, _other_dims(weight.dim(), self.dim), eps=self.eps)

    def right_inverse(self, weight: Tensor) -> Tensor:
        return weight

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}"


class SpectralNorm(WeightParametrization):
    r"""Spectral Normalization (Miyato et al. 2018, https://arxiv.org/abs/1802.05957).

    .. math::
        W_{SN} = \frac{W}{\sigma(W)}, \qquad \sigma(W) \approx u^\top W_{\text{mat}} v

    where :math:`W_{\text{mat}}` is the weight with ``dim`` moved first and the rest flattened, and ``u``, ``v``
    estimate its leading singular vectors by power iteration. The vectors are buffers (``_u``, ``_v``), updated
    in place by ``n_power_iterations`` steps at every forward pass in training mode and left unchanged in eval
    mode; like torch, 15 warm-up steps run at construction. Gradients treat ``u`` and ``v`` as constants.

    **Matching torch.** The map, the buffers and their initialisation follow
    :func:`torch.nn.utils.parametrizations.spectral_norm`: the random start draws ``u`` then ``v`` from
    ``N(0, 1)`` in the same order, so seeding the generator identically (``torch.manual_seed``) before building
    each gives the same vectors — or copy torch's ``_u``/``_v`` buffers (same state-dict keys).

    Args:
        weight: the weight being normalized (used for the shapes and the warm-up).
        n_power_iterations: power-iteration steps per training forward pass.
        dim: the dim of output units (``0``; ``1`` for ConvTranspose).
        eps: keeps the vector normalization finite.

    Shape:
        - weight and output: any shape with at least 2 dims; ``_u``: ``(weight.shape[dim],)``;
          ``_v``: ``(weight.numel() // weight.shape[dim],)``.

    Examples:
        >>> from torch.nn.utils import parametrize
        >>> _ = torch.manual_seed(0)
        >>> layer = nn.Linear(6, 4)
        >>> _ = parametrize.register_parametrization(layer, "weight", SpectralNorm(layer.weight))
        >>> round(torch.linalg.matrix_norm(layer.weight.detach(), ord=2).item(), 3)
        1.0
    """

    kind = "spectral_norm"

    def __init__(self, weight: Tensor, n_power_iterations: int = 1, dim: int = 0, eps: float = 1e-12) -> None:
        if weight.dim() < 2:
            raise ValueError(f"SpectralNorm needs a weight with at least 2 dims, got shape {tuple(weight.shape)}")
        super().__init__(resolve_dim(dim, weight.dim(), "SpectralNorm"))
        check_positive_int(n_power_iterations, "n_power_iterations", "SpectralNorm")
        check_eps(eps, "SpectralNorm")
        self.n_power_iterations = n_power_iterations
        self.eps = eps
        with torch.no_grad():
            matrix = self._as_matrix(weight.detach())  # (units, fan_in)
            u = matrix.new_empty(matrix.shape[0]).normal_(0, 1)
            v = matrix.new_empty(matrix.shape[1]).normal_(0, 1)
            self.register_buffer("_u", F.normalize(u, dim=0, eps=eps))
            self.register_buffer("_v", F.normalize(v, dim=0, eps=eps))
            self._power_iteration(matrix, 15)

    def _as_matrix(self, weight: Tensor) -> Tensor:
        return weight.movedim(self.dim, 0).flatten(1)  # (units, everything else)

    @torch.no_grad()
    def _power_iteration(self, matrix: Tensor, steps: int) -> None:
        for _ in range(steps):  # in place, so replicas and state_dict see the update
            self._u.copy_(F.normalize(torch.mv(matrix, self._v), dim=0, eps=self.eps))
            self._v.copy_(F.normalize(torch.mv(matrix.H, self._u), dim=0, eps=self.eps))

    def forward(self, weight: Tensor) -> Tensor:
        matrix = self._as_matrix(weight)
        if self.training:
            self._power_iteration(matrix.detach(), self.n_power_iterations)
        u, v = self._u.clone(), self._v.clone()  # clones: later in-place updates must not break backward
        sigma = torch.vdot(u, torch.mv(matrix, v))
        return weight / sigma

    def right_inverse(self, weight: Tensor) -> Tensor:
        return weight

    def extra_repr(self) -> str:
        return f"dim={self.dim}, n_power_iterations={self.n_power_iterations}, eps={self.eps}"
