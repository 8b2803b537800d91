"""Callbacks: code that runs inside the trainer's loop — the analysis trackers plug in here.

Subclass :class:`Callback` and override the hooks you need; the trainer calls them with a :class:`TrainContext`
(the model, optimizer, config, epoch, step, history, run id and folder, device, rank):

==============================  =====================================================================================
hook                            when
==============================  =====================================================================================
``on_train_start(ctx)``         after set-up and any resume, before the first epoch that still has to run
``on_epoch_start(ctx)``         before each epoch's first batch (``ctx.epoch`` is 0-based)
``on_batch_end(ctx, loss)``     after each optimizer step; ``loss`` is the batch's 0-d loss tensor (call ``.item()``
                                only if you must: it synchronises the GPU)
``on_epoch_end(ctx, metrics)``  after evaluation; return a dict of extra numbers to store with the epoch's metrics
``on_train_end(ctx, result)``   after the last epoch, with the :class:`~normlab.lab.trainer.TrainResult`
==============================  =====================================================================================

A callback's :meth:`Callback.state_dict` goes into every checkpoint and is handed back to
:meth:`Callback.load_state_dict` on resume, before ``on_train_start`` (keep it to tensors, numbers, strings,
lists and dicts; callbacks are matched by position: the named ones first, then those passed to ``train``). Under
torchrun, hooks run on every rank; write files or the store only when ``ctx.is_main``
(:meth:`TrainContext.log_artifact` does that for you).

**Named callbacks.** A sweep worker rebuilds callbacks from ``TrainConfig.callbacks`` (a list of names), so
register a factory ``factory(config) -> Callback`` under a name with :func:`register_callback`. Built in:

* ``"weight_norm"`` — per epoch, the norms of the conv/linear weights (:func:`normlab.analysis.weight_norms.
  weight_norm_stats`) and, from a :class:`~normlab.analysis.weight_norms.WeightNormTracker` sampling every 10th
  step, the mean effective learning rate :math:`\\eta/\\lVert w\\rVert^2` and angular update; metrics
  ``wn_total_frobenius``, ``wn_mean_norm``, ``wn_effective_lr``, ``wn_angular_update``, and an artifact
  ``weight_norms`` (per epoch, each weight's norm).
* ``"norm_scales"`` — per epoch, statistics of the normalization layers' scale factors :math:`\\gamma` (what
  network slimming prunes): ``gamma_mean_abs``, ``gamma_small_frac`` (share with :math:`|\\gamma| < 10^{-2}`).

Examples:
    >>> class CountSteps(Callback):
    ...     def __init__(self):
    ...         self.steps = 0
    ...     def on_batch_end(self, ctx, loss):
    ...         self.steps += 1
    ...     def on_epoch_end(self, ctx, metrics):
    ...         return {"steps_so_far": self.steps}
    >>> register_callback("count_steps", lambda config: CountSteps())
    >>> "count_steps" in list_callbacks() and "weight_norm" in list_callbacks()
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["Callback", "TrainContext", "register_callback", "build_callbacks", "list_callbacks",
           "WeightNormCallback", "NormScaleCallback"]


@dataclass
class TrainContext:
    """What a callback can see and use; the trainer updates ``epoch``, ``step`` and ``history`` as it goes."""

    config: Any  #: the TrainConfig
    model: nn.Module  #: the model being trained (unwrapped: no DDP or torch.compile wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    device: torch.device
    run_id: str
    run_dir: Path
    store: Any = None  #: the ResultsStore (None on ranks other than 0)
    rank: int = 0
    world_size: int = 1
    epoch: int = 0  #: the current epoch, 0-based
    step: int = 0  #: optimizer steps taken so far
    history: list[dict[str, float]] = field(default_factory=list)  #: per-epoch metrics so far

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that writes)."""
        return self.rank == 0

    def log_artifact(self, name: str, value: Any) -> None:
        """Store a named JSON value with the run (rank 0 only; ignored without a store)."""
        if self.is_main and self.store is not None:
            self.store.log_artifact(self.run_id, name, value)


class Callback:
    """Base class: every hook does nothing (see the module docstring for when each runs)."""

    def on_train_start(self, ctx: TrainContext) -> None:
        pass

    def on_epoch_start(self, ctx: TrainContext) -> None:
        pass

    def on_batch_end(self, ctx: TrainContext, loss: torch.Tensor) -> None:
        pass

    def on_epoch_end(self, ctx: TrainContext, metrics: dict[str, float]) -> dict[str, float] | None:
        return None

    def on_train_end(self, ctx: TrainContext, result: Any) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """What to keep in checkpoints (default: nothing)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` on resume."""

    def wants_batches(self) -> bool:
        """Whether :meth:`on_batch_end` is overridden (the trainer skips the call otherwise)."""
        return type(self).on_batch_end is not Callback.on_batch_end


_FACTORIES: dict[str, Callable[[Any], Callback]] = {}


def register_callback(name: str, factory: Callable[[Any], Callback]) -> None:
    """Make ``factory(config) -> Callback`` available under ``name`` for ``TrainConfig.callbacks``.

    Register in a module that the worker process imports too (a sweep's workers are fresh processes).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"callback name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"callback factory must be callable as factory(config), got {type(factory).__name__}")
    _FACTORIES[name] = factory


def list_callbacks() -> list[str]:
    """The registered callback names."""
    return sorted(_FACTORIES)


def build_callbacks(names: list[str], config: Any) -> list[Callback]:
    """Build the named callbacks for ``config``; an unknown name raises with the registered ones."""
    unknown = [name for name in names if name not in _FACTORIES]
    if unknown:
        raise ValueError(f"unknown callback(s) {unknown}; registered: {', '.join(list_callbacks())} "
                         f"(register more with normlab.lab.callbacks.register_callback)")
    return [_FACTORIES[name](config) for name in names]


class WeightNormCallback(Callback):
    """The ``"weight_norm"`` callback (see the module docstring).

    Args:
        every: record the effective learning rate and angular update on one step in ``every``.
    """

    def __init__(self, every: int = 10) -> None:
        self.every = every
        self.tracker = None
        self.per_epoch: list[dict[str, float]] = []
        self._restored_steps = 0

    def on_train_start(self, ctx: TrainContext) -> None:
        from normlab.analysis.weight_norms import WeightNormTracker

        self.tracker = WeightNormTracker(ctx.model, every=self.every).attach(ctx.optimizer)
        self.tracker.step_count = self._restored_steps  # the same steps are sampled after a resume

    def on_epoch_end(self, ctx: TrainContext, metrics: dict[str, float]) -> dict[str, float]:
        from normlab.analysis.weight_norms import weight_norm_stats

        stats = weight_norm_stats(ctx.model)
        weights = [layer for layer in stats.layers if layer.kind in ("conv", "linear")]
        records = self.tracker.records if self.tracker is not None else []
        finite = [r for r in records if math.isfinite(r.effective_lr)]
        out = {
            "wn_total_frobenius": stats.summary()["total_frobenius"],
            "wn_mean_norm": sum(layer.frobenius for layer in weights) / max(len(weights), 1),
            "wn_effective_lr": sum(r.effective_lr for r in finite) / len(finite) if finite else math.nan,
            "wn_angular_update": sum(r.angular_update for r in records) / len(records) if records else math.nan,
        }
        if self.tracker is not None:
            self.tracker.records.clear()  # summarised; keeps checkpoints small
        self.per_epoch.append({layer.name: layer.frobenius for layer in weights})
        ctx.log_artifact("weight_norms", self.per_epoch)
        return out

    def on_train_end(self, ctx: TrainContext, result: Any) -> None:
        if self.tracker is not None:
            self.tracker.detach()

    def state_dict(self) -> dict[str, Any]:
        steps = self.tracker.step_count if self.tracker is not None else 0
        return {"per_epoch": self.per_epoch, "step_count": steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.per_epoch = list(state.get("per_epoch", []))
        self._restored_steps = int(state.get("step_count", 0))


class NormScaleCallback(Callback):
    """The ``"norm_scales"`` callback: statistics of every normalization layer's per-channel scale :math:`\\gamma`.

    Args:
        threshold: :math:`|\\gamma|` below this counts as "small" (prunable).
    """

    def __init__(self, threshold: float = 1e-2) -> None:
        self.threshold = threshold

    def on_epoch_end(self, ctx: TrainContext, metrics: dict[str, float]) -> dict[str, float]:
        from normlab.lab.trainer import norm_scale_parameters

        gammas = [p.detach().abs().flatten().double() for p in norm_scale_parameters(ctx.model)]
        if not gammas:
            return {}
        values = torch.cat(gammas)
        return {"gamma_mean_abs": values.mean().item(),
                "gamma_small_frac": (values < self.threshold).double().mean().item()}


register_callback("weight_norm", lambda config: WeightNormCallback())
register_callback("norm_scales", lambda config: NormScaleCallback())
