r"""Gradient normalization, applied in place between ``loss.backward()`` and ``optimizer.step()``.

- :func:`normalize_gradients_` — normalized gradient descent, :math:`\theta \leftarrow \theta - \eta\,\nabla L /
  \lVert \nabla L \rVert`, over all gradients, each param group, each layer or each parameter;
- :func:`adaptive_clip_gradients_` — Adaptive Gradient Clipping, unit-wise (Brock et al. 2021);
- :func:`apply_before_step` — run either inside every ``optimizer.step()`` (a step pre-hook).

Examples:
    >>> import torch
    >>> import normlab.optim
    >>> model = torch.nn.Linear(3, 2)
    >>> model(torch.ones(4, 3)).sum().backward()
    >>> norms = normlab.optim.normalize_gradients_(model, scope="layer")
    >>> list(norms), round(torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item(), 4)
    (['<root>'], 1.0)
"""

from normlab.optim.gradnorm import SCOPES, UnitClipping, adaptive_clip_gradients_, normalize_gradients_
from normlab.optim.hooks import BeforeStep, apply_before_step

__all__ = ["SCOPES", "BeforeStep", "UnitClipping", "adaptive_clip_gradients_", "apply_before_step",
           "normalize_gradients_"]
