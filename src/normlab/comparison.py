"""The comparison table of normalization layers, measured by probing each layer rather than asserted.

For every activation norm in the registry, :func:`compare_norms` builds the layer for ``C`` channels, feeds it
an ``(N, C, H, W)`` input (``(N, H, W, C)`` for features-last layers) and observes:

- **reduces over** — which axes the statistics span: perturb one input element and see which outputs move
  (another sample → N, another channel → C, another position → H, W);
- **batch-dependent** — whether one sample's output depends on the other samples, in training mode;
- **train ≠ eval** — whether the same input gives different outputs in the two modes (after a few training
  steps so running statistics have moved);
- **parameters** — the learnable tensors and their element counts; **buffers** — the running statistics kept.

Run ``python -m normlab.comparison`` to print the table as Markdown.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from normlab.registry import _REGISTRY, create_norm


@dataclass(frozen=True)
class NormProfile:
    """What probing one layer showed."""

    name: str
    reduces_over: str  #: e.g. "N, H, W" — the axes one output's statistics span
    batch_dependent: bool
    train_eval_differ: bool
    parameters: str  #: e.g. "weight (64), bias (64)"
    buffers: str  #: e.g. "running_mean, running_var" or "—"


def _probe_input(channel_dim: int, generator: torch.Generator, n: int = 4, c: int = 8, hw: int = 4) -> torch.Tensor:
    shape = (n, c, hw, hw) if channel_dim == 1 else (n, hw, hw, c)
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def _fresh(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The output of a copy of ``layer``, so running statistics moved by one probe never leak into the next."""
    return copy.deepcopy(layer)(x)


def _reduced_axes(layer: nn.Module, x: torch.Tensor, channel_dim: int) -> str:
    """Axes whose other elements influence the output at index (0, 0, 0, 0)."""
    names = ("N", "C", "H", "W") if channel_dim == 1 else ("N", "H", "W", "C")
    base = _fresh(layer, x)[0, 0, 0, 0]
    moved = []
    for axis, label in enumerate(names):
        index = [0, 0, 0, 0]
        index[axis] = 1
        bumped = x.clone()
        bumped[tuple(index)] += 3.0
        if not torch.isclose(_fresh(layer, bumped)[0, 0, 0, 0], base, rtol=1e-9, atol=1e-12):
            moved.append(label)
    order = ["N", "C", "H", "W"]
    return ", ".join(sorted(moved, key=order.index)) or "— (element-wise)"


def profile_norm(name: str, channels: int = 8) -> NormProfile:
    """Probe the registry's layer ``name`` (see the module docstring for what is measured).

    Examples:
        >>> p = profile_norm("group_norm")
        >>> p.reduces_over, p.batch_dependent, p.train_eval_differ
        ('C, H, W', False, False)
        >>> profile_norm("batch_norm").reduces_over
        'N, H, W'
    """
    spec = _REGISTRY[name]
    g = torch.Generator().manual_seed(0)
    layer = create_norm(name, channels).double().train()
    if name == "ghost_batch_norm":
        layer.virtual_batch_size = 2
    with torch.no_grad():  # random affine parameters so nothing hides behind gamma=1, beta=0
        for p in layer.parameters():
            p.add_(torch.rand(p.shape, generator=g, dtype=p.dtype) * 0.1)
        x = _probe_input(spec.channel_dim, g)
        axes = _reduced_axes(layer, x, spec.channel_dim)
        others = x.clone()
        others[1:] = torch.randn(others[1:].shape, generator=g, dtype=x.dtype) * 2 + 1
        batch_dependent = not torch.allclose(_fresh(layer, x)[0], _fresh(layer, others)[0], rtol=1e-9, atol=1e-12)
        for _ in range(3):
            layer(_probe_input(spec.channel_dim, g) * 2 + 1)
        train_out = layer(x)
        eval_out = layer.eval()(x)
    parameters = ", ".join(f"{n} ({p.numel()})" for n, p in layer.named_parameters()) or "—"
    buffers = ", ".join(n for n, _ in layer.named_buffers() if n != "num_batches_tracked") or "—"
    return NormProfile(name, axes, batch_dependent, not torch.allclose(train_out, eval_out), parameters, buffers)


def compare_norms(channels: int = 8) -> list[NormProfile]:
    """:func:`profile_norm` for every activation norm in the registry (and the ``none`` baseline)."""
    return [profile_norm(n, channels) for n, s in _REGISTRY.items() if s.family in ("activation", "none")]


def comparison_markdown(channels: int = 8) -> str:
    """The comparison table as Markdown, with the layers built for ``channels`` channels."""
    yes_no = {True: "yes", False: "no"}
    rows = [
        "| norm | reduces over (input N, C, H, W) | batch-dependent | train ≠ eval | parameters | buffers |",
        "|---|---|---|---|---|---|",
    ]
    for p in compare_norms(channels):
        rows.append(f"| `{p.name}` | {p.reduces_over} | {yes_no[p.batch_dependent]} | "
                    f"{yes_no[p.train_eval_differ]} | {p.parameters} | {p.buffers} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(comparison_markdown())
