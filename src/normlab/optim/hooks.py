"""Run a gradient transform inside every ``optimizer.step()``: the thin "optimizer wrapper", as a step pre-hook.

The optimizer stays the same object, so learning-rate schedulers, ``state_dict`` and ``GradScaler`` keep working;
under AMP ``scaler.step(optimizer)`` unscales the gradients first, then calls ``step()``, which runs the hook, so
the transform sees the true gradients (and is skipped with the step when they overflowed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["BeforeStep", "apply_before_step"]


class BeforeStep:
    """A transform registered as an optimizer step pre-hook; ``last`` holds what it returned at the latest step."""

    def __init__(self, optimizer: torch.optim.Optimizer, transform: Callable[..., Any], options: dict[str, Any]):
        self.transform = transform
        self.options = options
        self.last: Any = None
        self._handle = optimizer.register_step_pre_hook(self._hook)

    def _hook(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        closure = args[1] if len(args) > 1 else kwargs.get("closure")  # args[0] is the optimizer itself
        if closure is not None:
            raise ValueError(
                f"{getattr(self.transform, '__name__', 'the transform')} runs before step() evaluates its closure, "
                "so it would see stale gradients; call it yourself inside the closure, after backward()"
            )
        self.last = self.transform(optimizer, **self.options)

    def remove(self) -> None:
        """Detach the hook; later steps are plain again."""
        self._handle.remove()


def apply_before_step(optimizer: torch.optim.Optimizer, transform: Callable[..., Any], **options: Any) -> BeforeStep:
    """Make every ``optimizer.step()`` first call ``transform(optimizer, **options)`` on its param groups.

    Args:
        optimizer: any torch optimizer (build it from ``model.named_parameters()`` for ``scope="layer"``).
        transform: :func:`~normlab.optim.normalize_gradients_`, :func:`~normlab.optim.adaptive_clip_gradients_`
            or any function taking the optimizer first.
        **options: passed to ``transform`` (``scope=``, ``clipping=``, ...).

    Returns:
        A :class:`BeforeStep`; its ``last`` holds the norms of the latest step, ``remove()`` detaches it.

    Examples:
        >>> from normlab.optim import normalize_gradients_
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = torch.optim.SGD([w], lr=0.5)
        >>> hook = apply_before_step(opt, normalize_gradients_, scope="global")
        >>> w.grad = torch.tensor([30.0, 40.0]); opt.step()
        >>> [round(x, 4) for x in w.tolist()], round(hook.last["global"].item(), 4)
        ([-0.3, -0.4], 50.0)
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"apply_before_step expects a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if not callable(transform):
        raise TypeError(f"apply_before_step: transform must be callable, got {type(transform).__name__}")
    return BeforeStep(optimizer, transform, options)
