"""What every normalization layer shares: affine parameters, their initialisation, and input checks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from normlab._checks import check_eps, check_floating


def as_shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    """``normalized_shape`` as a tuple, accepting a single int as torch.nn does."""
    return (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)


class AffineNorm(nn.Module):
    """Base of normalization layers with an optional per-feature affine map :math:`y\\gamma + \\beta`.

    Owns ``weight`` (:math:`\\gamma`, initialised to 1) and ``bias`` (:math:`\\beta`, initialised to 0), named as in
    torch.nn so state_dicts load across; when disabled they are registered as ``None``.
    """

    def __init__(
        self,
        param_shape: tuple[int, ...],
        *,
        eps: float | None,
        weight: bool,
        bias: bool,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if eps is not None:
            check_eps(eps, type(self).__name__)
        self.eps = eps
        factory = {"device": device, "dtype": dtype}
        self.register_parameter("weight", nn.Parameter(torch.empty(param_shape, **factory)) if weight else None)
        self.register_parameter("bias", nn.Parameter(torch.empty(param_shape, **factory)) if bias else None)

    def reset_parameters(self) -> None:
        """γ ← 1, β ← 0."""
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def check_input(self, x: Tensor) -> None:
        """Raise a clear error for a non-tensor or non-floating input."""
        check_floating(x, type(self).__name__)
