r"""A training callback that traces the norms of scale-invariant weights against their predicted growth.

For a weight :math:`w` that the loss sees only through its direction (a convolution followed by BatchNorm), the
gradient is orthogonal to it, :math:`\langle g_t, w_t\rangle = 0`, so a plain SGD step with L2 weight decay
:math:`w_{t+1} = (1-\eta\lambda) w_t - \eta g_t` gives exactly

.. math::
    \lVert w_{t+1}\rVert^2 = (1-\eta\lambda)^2 \lVert w_t\rVert^2 + \eta^2 \lVert g_t\rVert^2

(van Laarhoven 2017, arXiv:1706.05350; Arora, Li & Lyu 2019). :class:`NormTraceCallback` integrates this
recursion from the initial norm using only the measured gradient norms — never the measured weight norm after
the start — so the ratio of measured to predicted norm at the end is a real test of the orthogonality (for a weight
that is *not* scale-invariant the cross term :math:`-2\eta\langle g, w\rangle` makes them drift apart). It also
records the effective learning rate :math:`\eta/\lVert w_t\rVert^2` and the largest :math:`|\cos(g_t, w_t)|` seen,
which tells scale-invariant weights (≈ 0) from the others. With momentum the recursion is not exact and the
prediction is left out (``nan``).

Per epoch it stores metrics ``trace_norm`` (root-mean-square norm of the invariant weights), ``trace_pred_norm``,
``trace_initial_norm``, ``trace_effective_lr`` and ``trace_invariant`` (how many weights count as invariant), and
an artifact ``norm_trace`` with every weight's per-epoch norm and prediction. Sweep workers get it through
:func:`train_traced`, which registers the callback (as ``"norm_trace"``) before calling the trainer.

Examples:
    >>> "norm_trace" in __import__("normlab.lab.callbacks", fromlist=["list_callbacks"]).list_callbacks()
    True
"""
from __future__ import annotations

import math
from typing import Any

from normlab.lab.callbacks import Callback, TrainContext, register_callback

__all__ = ["NormTraceCallback", "train_traced", "INVARIANT_COSINE"]

INVARIANT_COSINE = 1e-3  #: a weight whose |cos(g, w)| never exceeds this is counted as scale-invariant


class NormTraceCallback(Callback):
    """Trace every ≥ 2-dim weight's norm and its predicted norm (see the module docstring)."""

    def __init__(self) -> None:
        self.tracker = None
        self.predicted_sq: dict[str, float] = {}
        self.initial_sq: dict[str, float] = {}
        self.max_cosine: dict[str, float] = {}
        self.effective_lr: dict[str, list[float]] = {}
        self.per_epoch: list[dict[str, Any]] = []
        self.step_count = 0

    def on_train_start(self, ctx: TrainContext) -> None:
        from normlab.analysis import WeightNormTracker

        self.tracker = WeightNormTracker(ctx.model).attach(ctx.optimizer)
        self.tracker.step_count = self.step_count

    def on_batch_end(self, ctx: TrainContext, loss: Any) -> None:
        if self.tracker is None:
            return
        for record in self.tracker.records:
            if record.name not in self.predicted_sq:
                self.predicted_sq[record.name] = self.initial_sq[record.name] = record.norm ** 2
            previous = self.predicted_sq[record.name]
            if record.momentum == 0.0 and math.isfinite(previous):
                shrink = (1.0 - record.lr * record.weight_decay) ** 2
                self.predicted_sq[record.name] = shrink * previous + (record.lr * record.grad_norm) ** 2
            else:
                self.predicted_sq[record.name] = math.nan
            self.max_cosine[record.name] = max(self.max_cosine.get(record.name, 0.0), abs(record.grad_cosine))
            self.effective_lr.setdefault(record.name, []).append(record.effective_lr)
        self.tracker.records.clear()
        self.step_count = self.tracker.step_count

    def on_epoch_end(self, ctx: TrainContext, metrics: dict[str, float]) -> dict[str, float]:
        names = [n for n, _ in ctx.model.named_parameters() if n in self.predicted_sq]
        params = dict(ctx.model.named_parameters())
        norms = {n: float(params[n].detach().double().norm()) for n in names}
        invariant = [n for n in names if self.max_cosine.get(n, 1.0) < INVARIANT_COSINE]
        lrs = [v for n in invariant for v in self.effective_lr.get(n, []) if math.isfinite(v)]
        self.per_epoch.append({n: {"norm": norms[n], "initial": math.sqrt(self.initial_sq[n]),
                                   "pred": math.sqrt(self.predicted_sq[n]) if math.isfinite(self.predicted_sq[n])
                                   else None, "max_cos": self.max_cosine.get(n, math.nan)} for n in names})
        self.effective_lr.clear()
        ctx.log_artifact("norm_trace", self.per_epoch)

        def rms(values: list[float]) -> float:
            return math.sqrt(sum(v * v for v in values) / len(values)) if values else math.nan

        return {"trace_norm": rms([norms[n] for n in invariant]),
                "trace_initial_norm": rms([math.sqrt(self.initial_sq[n]) for n in invariant]),
                "trace_pred_norm": rms([math.sqrt(self.predicted_sq[n]) for n in invariant]),
                "trace_effective_lr": sum(lrs) / len(lrs) if lrs else math.nan,
                "trace_invariant": float(len(invariant))}

    def on_train_end(self, ctx: TrainContext, result: Any) -> None:
        if self.tracker is not None:
            self.tracker.detach()

    def state_dict(self) -> dict[str, Any]:
        return {"predicted_sq": dict(self.predicted_sq), "initial_sq": dict(self.initial_sq),
                "max_cosine": dict(self.max_cosine),
                "per_epoch": list(self.per_epoch), "step_count": self.step_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.predicted_sq = dict(state.get("predicted_sq", {}))
        self.initial_sq = dict(state.get("initial_sq", {}))
        self.max_cosine = dict(state.get("max_cosine", {}))
        self.per_epoch = list(state.get("per_epoch", []))
        self.step_count = int(state.get("step_count", 0))


register_callback("norm_trace", lambda config: NormTraceCallback())


def train_traced(config: Any, **kwargs: Any) -> Any:
    """:func:`normlab.lab.trainer.train` with the ``"norm_trace"`` callback registered (for sweep workers)."""
    from normlab.lab.trainer import train

    return train(config, **kwargs)
