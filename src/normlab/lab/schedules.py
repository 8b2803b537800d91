r"""Learning-rate schedules, updated every optimizer step, as factors of the peak learning rate.

With :math:`s` the step (0-based), :math:`S` the total number of steps and :math:`w` the warmup steps, the factor
:math:`f(s)` that multiplies the peak learning rate is:

* warmup (cosine, step, constant): :math:`f(s) = (s + 1) / w` for :math:`s < w` (linear, as Goyal et al. 2017);
* ``cosine`` (Loshchilov & Hutter 2017, no restarts): with :math:`t = s - w`, :math:`T = S - w`,
  :math:`f = r + (1 - r)\,\tfrac12\,(1 + \cos(\pi t / T))`, :math:`r` = ``min_lr_ratio``;
* ``step`` (He et al. 2016): :math:`f = \gamma^{k}`, :math:`k` = the number of milestones
  :math:`\mathrm{round}(m_i S) \le s`;
* ``onecycle`` (Smith & Topin 2019; the learning-rate part of :class:`torch.optim.lr_scheduler.OneCycleLR` with
  cosine annealing, two phases, no momentum cycling): from :math:`1/d` up to 1 over the first
  ``peak`` fraction of training, then down to :math:`1/(d\,d_f)`, both by cosine interpolation
  (:math:`d = 25`, :math:`d_f = 10^4`);
* ``constant``: :math:`f = 1` after warmup.

:func:`build_scheduler` wraps :class:`ScheduleFactor` in a :class:`torch.optim.lr_scheduler.LambdaLR`, whose state
(the step count) goes into checkpoints.

Examples:
    >>> factor = ScheduleFactor("cosine", total_steps=10, warmup_steps=2)
    >>> [round(factor(s), 3) for s in (0, 1, 2, 6, 9)]
    [0.5, 1.0, 1.0, 0.5, 0.038]
    >>> [ScheduleFactor("step", 8, milestones=(0.5, 0.75), gamma=0.1)(s) for s in (3, 4, 6)]
    [1.0, 0.1, 0.010000000000000002]
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = ["ScheduleFactor", "build_scheduler", "SCHEDULE_NAMES"]

SCHEDULE_NAMES = ("cosine", "step", "onecycle", "constant")


def _cosine_interpolate(start: float, end: float, fraction: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1)


class ScheduleFactor:
    """The factor :math:`f(s)` of the module docstring, a picklable callable for ``LambdaLR``.

    Args:
        schedule: ``"cosine"``, ``"step"``, ``"onecycle"`` or ``"constant"``.
        total_steps: :math:`S`, optimizer steps in the whole run.
        warmup_steps: :math:`w` (ignored by ``onecycle``, which has its own rise).
        min_lr_ratio: cosine's final factor :math:`r`.
        milestones: step's milestones as fractions of training.
        gamma: step's factor per milestone.
        onecycle_peak: onecycle's fraction of training spent rising.
        div_factor / final_div_factor: onecycle's :math:`d` and :math:`d_f`.
    """

    def __init__(self, schedule: str, total_steps: int, *, warmup_steps: int = 0, min_lr_ratio: float = 0.0,
                 milestones: Sequence[float] = (0.5, 0.75), gamma: float = 0.1, onecycle_peak: float = 0.3,
                 div_factor: float = 25.0, final_div_factor: float = 1e4) -> None:
        if schedule not in SCHEDULE_NAMES:
            raise ValueError(f"schedule must be one of {SCHEDULE_NAMES}, got {schedule!r}")
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"warmup_steps must lie in [0, total_steps={total_steps}], got {warmup_steps}")
        self.schedule, self.total_steps, self.warmup_steps = schedule, total_steps, int(warmup_steps)
        self.min_lr_ratio, self.gamma = float(min_lr_ratio), float(gamma)
        self.milestone_steps = [int(round(m * total_steps)) for m in milestones]
        self.onecycle_peak, self.div_factor, self.final_div_factor = onecycle_peak, div_factor, final_div_factor

    def __call__(self, step: int) -> float:
        if self.schedule == "onecycle":
            return self._onecycle(step)
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "cosine":
            span = max(self.total_steps - self.warmup_steps, 1)
            fraction = min(step - self.warmup_steps, span) / span
            return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * fraction))
        if self.schedule == "step":
            return self.gamma ** sum(step >= m for m in self.milestone_steps)
        return 1.0

    def _onecycle(self, step: int) -> float:
        initial = 1.0 / self.div_factor
        final = initial / self.final_div_factor
        rise_end = float(self.onecycle_peak * self.total_steps) - 1
        fall_end = float(self.total_steps) - 1
        if step <= rise_end:
            return _cosine_interpolate(initial, 1.0, step / rise_end if rise_end > 0 else 1.0)
        fraction = (step - rise_end) / (fall_end - rise_end) if fall_end > rise_end else 1.0
        return _cosine_interpolate(1.0, final, min(fraction, 1.0))

    def __repr__(self) -> str:
        return f"ScheduleFactor({self.schedule!r}, total_steps={self.total_steps}, warmup_steps={self.warmup_steps})"


def build_scheduler(optimizer: torch.optim.Optimizer, config, steps_per_epoch: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step schedule of a :class:`~normlab.lab.config.TrainConfig` for ``optimizer``.

    Args:
        optimizer: its groups' ``lr`` are the peak learning rate.
        config: a TrainConfig (``schedule``, ``epochs``, ``warmup_epochs``, ``min_lr_ratio``, ``milestones``,
            ``gamma``, ``onecycle_peak``).
        steps_per_epoch: optimizer steps per epoch.

    Returns:
        A ``LambdaLR``; call ``step()`` after every optimizer step.
    """
    total = config.epochs * steps_per_epoch
    factor = ScheduleFactor(config.schedule, total, warmup_steps=int(round(config.warmup_epochs * steps_per_epoch)),
                            min_lr_ratio=config.min_lr_ratio, milestones=config.milestones, gamma=config.gamma,
                            onecycle_peak=config.onecycle_peak)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
