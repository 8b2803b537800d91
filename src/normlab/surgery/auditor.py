"""``audit``: check a real model against the known pitfalls of normalization, with one forward pass.

The forward runs under ``torch.no_grad()`` with hooks that record what each normalization layer really sees
(input shape and dtype, and whether its input is the direct output of a Conv/Linear). The model is left as it
was: buffers (running statistics) and the random-number state are restored afterwards. The checks themselves
are in :mod:`normlab.surgery.audit_checks`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from normlab.surgery import _walk
from normlab.surgery._report import format_table

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    """One problem found: how bad, which check, where, what, why it matters and how to fix it."""

    severity: str  #: ``"error"`` (wrong results or a crash), ``"warning"`` (likely harm), ``"info"`` (worth knowing)
    check: str  #: the check's short name, e.g. ``"small_batch"``
    path: str  #: the module path (``"(root)"`` for the whole model)
    message: str  #: what was found
    why: str  #: why it matters
    fix: str  #: what to do

    def __str__(self) -> str:
        return f"[{self.severity}] {self.path}: {self.message}\n  why: {self.why}\n  fix: {self.fix}"


class AuditReport(list):
    """The findings of :func:`audit`: a list of :class:`Finding` (errors first), a table when printed."""

    def __init__(self, findings: Iterable[Finding] = (), *, title: str = "audit") -> None:
        super().__init__(sorted(findings, key=lambda f: SEVERITIES.index(f.severity)))
        self.title = title

    def _of(self, severity: str) -> list[Finding]:
        return [f for f in self if f.severity == severity]

    @property
    def errors(self) -> list[Finding]:
        return self._of("error")

    @property
    def warnings(self) -> list[Finding]:
        return self._of("warning")

    @property
    def infos(self) -> list[Finding]:
        return self._of("info")

    @property
    def ok(self) -> bool:
        """True when there is no error and no warning (information findings allowed)."""
        return not self.errors and not self.warnings

    @property
    def checks(self) -> set[str]:
        """The names of the checks that found something."""
        return {f.check for f in self}

    def by_check(self, check: str) -> list[Finding]:
        return [f for f in self if f.check == check]

    def __repr__(self) -> str:
        counts = ", ".join(f"{len(self._of(s))} {s}{'s' if s != 'info' and len(self._of(s)) != 1 else ''}"
                           for s in SEVERITIES)
        head = f"{self.title}: {counts}"
        if not self:
            return f"{head} — no pitfall found"
        table = format_table(("#", "severity", "check", "module", "finding"),
                             [(str(i), f.severity, f.check, f.path, f.message) for i, f in enumerate(self, 1)],
                             max_width=32)
        numbers: dict[tuple[str, str, str], list[str]] = {}
        for i, f in enumerate(self, 1):
            numbers.setdefault((f.check, f.why, f.fix), []).append(str(i))
        details = [f"{','.join(nums)} {check}\n  why: {why}\n  fix: {fix}"
                   for (check, why, fix), nums in numbers.items()]
        return "\n".join([head, table, "", *details])

    __str__ = __repr__


@dataclass
class Seen:
    """What a normalization layer received in the audit's forward pass (its first call)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    producer: str | None  #: path of the Conv/Linear whose output is exactly this input, if any


@dataclass
class AuditContext:
    """Everything a check may look at."""

    model: nn.Module
    norms: list[tuple[str, nn.Module]]  #: every normalization layer (registered or ``...Norm``-named), once
    seen: dict[str, Seen] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  #: layers with parameters or norms, in the order they finished
    batch_size: int | None = None  #: per-device batch (the ``batch_size`` argument, else the input's dim 0)
    input_batch: int | None = None  #: dim 0 of ``example_input``
    optimizer: torch.optim.Optimizer | None = None
    grad_enabled: bool = True  #: whether gradients were on where audit was called (off suggests inference)
    error: Exception | None = None  #: what the forward raised, if it failed

    def module(self, path: str) -> nn.Module:
        return self.model.get_submodule(path) if path else self.model


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else ()
    return next((t for t in map(_first_tensor, items) if t is not None), None)


def _run(model: nn.Module, example_input: Any, ctx: AuditContext) -> None:
    """One forward with recording hooks; buffers and RNG state are restored afterwards."""
    paths = {id(m): p for p, m in model.named_modules()}
    norm_ids = {id(m) for _, m in ctx.norms}
    outputs: dict[int, tuple[str, torch.Tensor]] = {}  # id(output) → (producer path, output kept alive)

    def before_norm(module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = _first_tensor((args, kwargs))
        path = paths[id(module)]
        if x is not None and path not in ctx.seen:
            producer = outputs.get(id(x))
            ctx.seen[path] = Seen(tuple(x.shape), x.dtype, producer[0] if producer and producer[1] is x else None)

    def after(module: nn.Module, args: tuple, output: Any) -> None:
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and isinstance(output, torch.Tensor):
            outputs[id(output)] = (paths[id(module)], output)
        ctx.order.append(paths[id(module)])

    handles = []
    for module in model.modules():
        if id(module) in norm_ids:
            handles.append(module.register_forward_pre_hook(before_norm, with_kwargs=True))
        if id(module) in norm_ids or next(module.parameters(recurse=False), None) is not None:
            handles.append(module.register_forward_hook(after))
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    rng = torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        with torch.no_grad():
            if isinstance(example_input, dict):
                model(**example_input)
            elif isinstance(example_input, (tuple, list)):
                model(*example_input)
            else:
                model(example_input)
    except Exception as error:  # noqa: BLE001 — a failing forward is itself a finding
        ctx.error = error
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)
        torch.random.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def audit(model: nn.Module, example_input: Any, *, batch_size: int | None = None,
          optimizer: torch.optim.Optimizer | None = None) -> AuditReport:
    """Check a model against the known pitfalls of normalization; one finding per problem, with the fix.

    The checks (see :mod:`normlab.surgery.audit_checks`): BatchNorm with a per-device batch below 8 (an error
    below 4 or when a channel sees one value); a Conv/Linear bias right before BatchNorm or InstanceNorm;
    a normalization layer producing the model's output; a model in train mode used for inference; several
    normalization kinds in one model; eps outside 1e-8 … 1e-3; γ/β not at their 1/0 initialisation;
    weight decay on normalization parameters (with ``optimizer``); GroupNorm/InstanceNorm/LayerNorm settings that
    reduce to another norm or to a constant; and a forward that fails.

    Args:
        model: any ``nn.Module``, audited as it is (its train/eval mode included); it is not changed.
        example_input: one batch as the model takes it: a tensor, a tuple of positional arguments, or a dict
            of keyword arguments (Hugging Face models: ``{"input_ids": ...}``).
        batch_size: the per-device batch used in training, when it differs from ``example_input``'s.
        optimizer: the optimizer that will train the model (enables the weight-decay check, and says the model
            is meant for training).

    Returns:
        An :class:`AuditReport`: a list of :class:`Finding`, errors first, that prints as a table.

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
        ...                       nn.Linear(8 * 6 * 6, 10))
        >>> report = audit(model.eval(), torch.randn(2, 3, 8, 8))
        >>> [(f.severity, f.check, f.path) for f in report]
        [('warning', 'bias_before_norm', '1')]
        >>> sorted(audit(model.train(), torch.randn(2, 3, 8, 8)).checks)
        ['bias_before_norm', 'small_batch', 'train_mode']
    """
    from normlab.surgery import audit_checks

    if not isinstance(model, nn.Module):
        raise TypeError(f"audit expects an nn.Module, got {type(model).__name__}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"audit: batch_size must be a positive integer (the per-device batch), got {batch_size!r}")
    if optimizer is not None and not hasattr(optimizer, "param_groups"):
        raise TypeError(f"audit: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    first = _first_tensor(example_input)
    if first is None:
        raise TypeError("audit: example_input must be a tensor, a tuple of arguments or a dict of keyword arguments "
                        f"holding at least one tensor, got {type(example_input).__name__}")
    norms = [(path, m) for path, m in model.named_modules() if _walk.looks_like_norm(m)]
    input_batch = first.shape[0] if first.dim() else 1
    ctx = AuditContext(model, norms, optimizer=optimizer, grad_enabled=torch.is_grad_enabled(),
                       batch_size=batch_size or input_batch, input_batch=input_batch)
    _run(model, example_input, ctx)
    findings = [finding for check in audit_checks.CHECKS for finding in check(ctx)]
    return AuditReport(findings, title=f"audit of {type(model).__name__} (per-device batch {ctx.batch_size})")
