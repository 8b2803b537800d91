r"""Fold evaluation-mode BatchNorm into the Conv/Linear layer that feeds it, across a whole model.

In eval mode BatchNorm is a fixed per-channel affine map of its input, so it can be merged into a preceding
convolution or linear layer :math:`y = Wx + b`:

.. math::
    s = \frac{\gamma}{\sqrt{\hat\sigma^2 + \epsilon}}, \qquad W' = W \cdot s, \qquad b' = (b - \hat\mu)\, s + \beta

(:math:`s` scales each output channel; :math:`\hat\mu, \hat\sigma^2` are the running statistics). The arithmetic
is done in float64 and cast back to the layer's dtype.

**How pairs are found.** The model is traced with ``torch.fx`` (normalization layers are kept as leaves), and a
BatchNorm is folded when its input is the output of a ``Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d`` or ``Linear``
module that nothing else uses. This finds pairs in Sequential chains, residual blocks and any functional forward
that fx can trace. A model fx cannot trace (data-dependent control flow) falls back to consecutive Conv → BN
pairs inside ``nn.Sequential`` containers, the only place where the wiring is known without tracing.

**What is left, and listed with the reason:** a BatchNorm in train mode (it uses batch statistics) or without
running statistics; one whose input is not a Conv/Linear output (after an add, a concatenation, an activation);
one whose Conv also feeds another consumer (folding would change that one too); one whose Conv is called more
than once; one whose Conv has a parametrized weight. A ``Linear → BatchNorm1d`` pair is folded on the
assumption that the BatchNorm sees ``(N, C)`` input (the only layout where its channels are the Linear's
outputs); pass ``example_input`` to check the folded model against the original.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.nn.utils import parametrize

from normlab import nn as nlnn
from normlab.surgery import _walk
from normlab.surgery._report import SurgeryReport

_BN = (nn.modules.batchnorm._BatchNorm, nlnn.BatchNorm)
_INTO = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass
class FoldRecord:
    """One BatchNorm: where it is, the layer it was folded into (if any), and why not otherwise."""

    path: str
    into: str
    folded: bool
    reason: str = ""

    def row(self) -> tuple[str, ...]:
        return self.path, self.into or "-", "folded" if self.folded else f"left: {self.reason}"


class FoldReport(SurgeryReport):
    """What :func:`fold_bn` did: a list of :class:`FoldRecord`; ``.model`` is the new, folded model.

    Attributes:
        params: ``(before, after)`` parameter counts.
        modules: ``(before, after)`` module counts.
        max_rel_error: the largest ``|folded - original| / max|original|`` on ``example_input``, or ``None``
            when no example was given (or the model was in train mode).
    """

    headers = ("batchnorm", "into", "result")
    params: tuple[int, int] = (0, 0)
    modules: tuple[int, int] = (0, 0)
    max_rel_error: float | None = None


class _NormLeafTracer(fx.Tracer):
    """fx tracer that keeps normalization layers (normlab's included) as single ``call_module`` nodes."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _walk.looks_like_norm(m) or super().is_leaf_module(m, qualname)


def _bn_reason(bn: nn.Module) -> str:
    if bn.training:
        return "train mode: it normalizes with batch statistics (call model.eval() first)"
    if bn.running_mean is None or bn.running_var is None:
        return "no running statistics (track_running_stats=False): batch statistics in eval too"
    return ""


def _out_features(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _pair_reason(layer: nn.Module, name: str, bn: nn.Module) -> str:
    if _out_features(layer) != bn.num_features:
        return f"{name} has {_out_features(layer)} outputs, the BatchNorm {bn.num_features} channels"
    if parametrize.is_parametrized(layer):
        return f"{name}'s weight is parametrized: bake it first (torch.nn.utils.parametrize.remove_parametrizations)"
    return ""


@torch.no_grad()
def _fold_into(layer: nn.Module, bn: nn.Module) -> None:
    """Rewrite ``layer``'s weight and bias so that ``layer(x) == bn(old_layer(x))`` in eval mode."""
    w = layer.weight.detach().double()
    out = _out_features(layer)
    b = layer.bias.detach().double() if layer.bias is not None else w.new_zeros(out)
    gamma = bn.weight.detach().double() if bn.weight is not None else w.new_ones(out)
    beta = bn.bias.detach().double() if bn.bias is not None else w.new_zeros(out)
    scale = gamma / torch.sqrt(bn.running_var.double() + bn.eps)  # (C_out,)
    if getattr(layer, "transposed", False):  # ConvTranspose weight: (C_in, C_out / groups, *k)
        g = layer.groups
        grouped = w.reshape(g, w.shape[0] // g, w.shape[1], *w.shape[2:])
        folded = (grouped * scale.reshape(g, 1, -1, *([1] * (w.dim() - 2)))).reshape(w.shape)
    else:  # Conv (C_out, C_in / groups, *k) and Linear (C_out, C_in)
        folded = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
    bias = (b - bn.running_mean.double()) * scale + beta
    trainable = layer.weight.requires_grad
    layer.weight = nn.Parameter(folded.to(layer.weight.dtype), requires_grad=trainable)
    layer.bias = nn.Parameter(bias.to(layer.weight.dtype), requires_grad=trainable)


def _describe(node: Any) -> str:
    if not isinstance(node, fx.Node):
        return "a constant"
    if node.op == "call_module":
        return f"module {node.target!r}"
    if node.op == "placeholder":
        return "the model input"
    name = getattr(node.target, "__name__", str(node.target))
    return f"{node.op} {name}"


def _fold_traced(work: nn.Module, graph: fx.Graph, name: str) -> tuple[nn.Module, list[FoldRecord]]:
    gm = fx.GraphModule(work, graph, name)
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    records = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), _BN):
            continue
        bn = gm.get_submodule(node.target)
        prev = node.args[0] if node.args else None
        reason, into = _bn_reason(bn), ""
        if not reason:
            producer = gm.get_submodule(prev.target) if isinstance(prev, fx.Node) and prev.op == "call_module" else None
            if not isinstance(producer, _INTO):
                reason = f"its input comes from {_describe(prev)}, not a Conv/Linear"
            else:
                into = prev.target
                others = [u.name for u in prev.users if u is not node]
                if others:
                    reason = f"{into}'s output also feeds {', '.join(others)}"
                elif calls[into] > 1:
                    reason = f"{into} is called {calls[into]} times: folding would change its other uses"
                else:
                    reason = _pair_reason(producer, into, bn)
                if not reason:
                    _fold_into(producer, bn)
                    node.replace_all_uses_with(prev)
                    gm.graph.erase_node(node)
        records.append(FoldRecord(node.target, into if not reason else "", not reason, reason))
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm, records


def _fold_sequentials(work: nn.Module, why: str) -> tuple[nn.Module, list[FoldRecord]]:
    paths = _walk.occurrences(work)
    records, folded_ids = [], set()
    for seq_path, seq in list(work.named_modules()):
        if not isinstance(seq, nn.Sequential) or type(seq).forward is not nn.Sequential.forward:
            continue
        items = list(seq._modules.items())
        for (name, layer), (bn_name, bn) in zip(items, items[1:]):
            if not isinstance(layer, _INTO) or not isinstance(bn, _BN) or id(bn) in folded_ids:
                continue
            where = f"{seq_path}.{name}" if seq_path else name
            reason = _bn_reason(bn) or _pair_reason(layer, where, bn)
            if not reason and (len(paths[id(layer)]) > 1 or len(paths[id(bn)]) > 1):
                reason = "the Conv/Linear or the BatchNorm is shared with another place in the model"
            if not reason:
                _fold_into(layer, bn)
                delattr(seq, bn_name)  # removes the key only; the other children keep their names
                folded_ids.add(id(bn))
            records.append(FoldRecord(f"{seq_path}.{bn_name}" if seq_path else bn_name, "" if reason else where,
                                      not reason, reason))
    seen = {r.path for r in records}
    for path, module in work.named_modules():
        if isinstance(module, _BN) and path not in seen and id(module) not in folded_ids:
            records.append(FoldRecord(path, "", False, _bn_reason(module) or why))
    return work, records


def _call(model: nn.Module, example_input: Any) -> Any:
    if isinstance(example_input, dict):
        return model(**example_input)
    if isinstance(example_input, (tuple, list)):
        return model(*example_input)
    return model(example_input)


def _rel_error(new: Any, ref: Any) -> float:
    if isinstance(ref, torch.Tensor):
        scale = ref.detach().abs().max().clamp_min(1e-30)
        return float(((new - ref).abs().max() / scale).item())
    if isinstance(ref, (tuple, list)):
        return max((_rel_error(n, r) for n, r in zip(new, ref)), default=0.0)
    if isinstance(ref, dict):
        return max((_rel_error(new[k], v) for k, v in ref.items()), default=0.0)
    return 0.0


def fold_bn(model: nn.Module, example_input: Any = None) -> FoldReport:
    """Fold every eval-mode BatchNorm into the Conv/Linear that feeds it.

    .. math::
        W' = W \\cdot \\frac{\\gamma}{\\sigma}, \\qquad b' = (b - \\hat\\mu)\\,\\frac{\\gamma}{\\sigma} + \\beta,
        \\qquad \\sigma = \\sqrt{\\hat\\sigma^2 + \\epsilon}

    per output channel. The user's model is not changed: the folding happens on a deep copy. The module
    docstring lists what is folded and what is left.

    Args:
        model: any ``nn.Module`` — call ``model.eval()`` first, since train-mode BatchNorm cannot be folded.
        example_input: optional input (a tensor, a tuple of positional arguments or a dict of keyword
            arguments); when given and the model is in eval mode, the folded model is checked against the
            original on it (``report.max_rel_error``).

    Returns:
        A :class:`FoldReport` whose ``.model`` is the folded model: a ``torch.fx.GraphModule`` with the original
        class name when the model could be traced, else a deep copy with the Sequential pairs folded. Every
        BatchNorm is listed, folded or left with the reason.

    Examples:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU()).eval()
        >>> report = fold_bn(model)
        >>> print(report)
        fold_bn: 1 of 1 BatchNorm layers folded; parameters 232 → 224, modules 4 → 3
        batchnorm  into  result
        ---------  ----  ------
        1          0     folded
        >>> x = torch.randn(2, 3, 8, 8)
        >>> torch.allclose(report.model(x), model(x), atol=1e-5)
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fold_bn expects an nn.Module, got {type(model).__name__}")
    work = copy.deepcopy(model)
    reference = None
    checkable = example_input is not None and not any(m.training for m in model.modules())
    if checkable:
        with torch.no_grad():
            reference = _call(work, example_input)
    try:
        graph = _NormLeafTracer().trace(work)
    except Exception as error:  # noqa: BLE001 — any tracing failure means: use the Sequential fallback
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        why = f"model not traceable by torch.fx ({first_line[:80]}); only Conv→BN pairs inside nn.Sequential fold"
        folded_model, records = _fold_sequentials(work, why)
        method = f"; {why}"
    else:
        method = ""
        folded_model, records = _fold_traced(work, graph, type(model).__name__)
        called = {r.path for r in records}
        records += [FoldRecord(path, "", False, "not called by forward (absent from the traced model)")
                    for path, m in model.named_modules() if isinstance(m, _BN) and path not in called]
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    done = sum(r.folded for r in records)
    report = FoldReport(records, model=folded_model,
                        action=f"fold_bn: {done} of {len(records)} BatchNorm layers folded; parameters "
                               f"{count(model)} → {count(folded_model)}, modules {len(list(model.modules()))} → "
                               f"{len(list(folded_model.modules()))}{method}")
    report.params = (count(model), count(folded_model))
    report.modules = (len(list(model.modules())), len(list(folded_model.modules())))
    if checkable:
        with torch.no_grad():
            report.max_rel_error = _rel_error(_call(folded_model, example_input), reference)
    report.warn_if_empty("the model has no BatchNorm layer")
    if records and not done:
        import warnings

        warnings.warn(f"fold_bn folded nothing: {records[0].reason}", UserWarning, stacklevel=2)
    return report
