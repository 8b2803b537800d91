r"""Optimizer parameter groups without weight decay on normalization parameters and biases.

Weight decay :math:`\theta \leftarrow \theta - \eta\lambda\theta` pulls every parameter towards 0. For the
:math:`\gamma` of a normalization layer that is a pull towards *switching the layer's output off*, and a bias or
:math:`\beta` sets an offset that has no scale to regularise; both are usually trained without decay (Goyal et
al. 2017, arXiv:1706.02677; the convention of timm, nanoGPT and most Transformer recipes). Weights that feed a
normalization layer are scale-invariant, and decay on them acts as an effective learning-rate schedule instead
(van Laarhoven 2017, arXiv:1706.05350) — they keep it.
"""

from __future__ import annotations

from typing import Any

import torch  # noqa: F401  (the doctest uses torch.optim)
from torch import nn

from normlab.surgery._report import format_table
from normlab.surgery._walk import looks_like_norm


class ParamGroups(list):
    """A list of optimizer parameter-group dicts (``{"params", "weight_decay", "name"}``) that prints as a
    table; pass it straight to any ``torch.optim`` optimizer."""

    def __repr__(self) -> str:
        rows = []
        for group in self:
            names = group.get("param_names", [])
            shown = ", ".join(names[:2]) + (f", … (+{len(names) - 2} more)" if len(names) > 2 else "")
            rows.append((group["name"], f"{group['weight_decay']:g}", str(len(group["params"])),
                         f"{sum(p.numel() for p in group['params']):,}", shown))
        return format_table(("group", "weight_decay", "tensors", "values", "parameters"), rows)

    __str__ = __repr__


def param_groups(
    model: nn.Module,
    weight_decay: float = 0.01,
    *,
    norm_weight_decay: float = 0.0,
    bias_weight_decay: float = 0.0,
) -> ParamGroups:
    """Split a model's parameters into groups with and without weight decay.

    * ``"norm"``: every parameter of a normalization layer (:math:`\\gamma`, :math:`\\beta`, FRN's :math:`\\tau`,
      ScaleNorm's :math:`g`, Dynamic Tanh's :math:`\\alpha`; registered classes and third-party leaf modules named
      ``...Norm``, e.g. ``LlamaRMSNorm``) → ``norm_weight_decay``;
    * ``"bias"``: every other parameter named ``bias`` → ``bias_weight_decay``;
    * ``"decay"``: everything else → ``weight_decay``.

    Every parameter appears exactly once, shared (tied) ones included, in the order of
    ``model.named_parameters()``; frozen parameters are included (optimizers skip them). Empty groups are left out.

    Args:
        model: any ``nn.Module``.
        weight_decay: decay for the ordinary weights. Default: 0.01.
        norm_weight_decay: decay for normalization parameters. Default: 0.
        bias_weight_decay: decay for biases. Default: 0.

    Returns:
        A :class:`ParamGroups` list of dicts with ``params``, ``weight_decay``, ``name`` and ``param_names``.

    Examples:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2, bias=False))
        >>> groups = param_groups(model, weight_decay=0.05)
        >>> print(groups)
        group  weight_decay  tensors  values  parameters
        -----  ------------  -------  ------  ------------------
        decay  0.05          2        48      0.weight, 2.weight
        norm   0             2        16      1.weight, 1.bias
        bias   0             1        8       0.bias
        >>> optimizer = torch.optim.AdamW(groups, lr=1e-3)
    """
    for name, value in (("weight_decay", weight_decay), ("norm_weight_decay", norm_weight_decay),
                        ("bias_weight_decay", bias_weight_decay)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"param_groups: {name} must be a number ≥ 0, got {value!r}")
    owner: dict[int, str] = {}
    for module_path, module in model.named_modules():
        kind = "norm" if looks_like_norm(module) else None
        for name, param in module.named_parameters(recurse=False):
            owner.setdefault(id(param), kind or ("bias" if name == "bias" else "decay"))
    decay = {"decay": weight_decay, "norm": norm_weight_decay, "bias": bias_weight_decay}
    groups: dict[str, dict[str, Any]] = {}
    for name, param in model.named_parameters():  # each parameter once, even when tied
        group = groups.setdefault(owner[id(param)], {"params": [], "param_names": []})
        group["params"].append(param)
        group["param_names"].append(name)
    return ParamGroups({"name": key, "weight_decay": float(decay[key]), **groups[key]}
                       for key in ("decay", "norm", "bias") if key in groups)
