"""The checks :func:`normlab.surgery.audit` runs: each takes the :class:`~normlab.surgery.auditor.AuditContext` and
yields :class:`~normlab.surgery.auditor.Finding` objects. Add a check by writing a function and listing it in
:data:`CHECKS`."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator

import torch
from torch import nn

from normlab import nn as nlnn
from normlab.surgery import _walk
from normlab.surgery.auditor import AuditContext, Finding
from normlab.surgery.freeze import is_frozen

_BATCH = (nn.modules.batchnorm._BatchNorm, nlnn.BatchNorm)
_PER_CHANNEL_MEAN = (*_BATCH, nn.modules.instancenorm._InstanceNorm, nlnn.InstanceNorm)
_MODE_DEPENDENT = (*_BATCH, nn.modules.dropout._DropoutNd, nn.modules.instancenorm._InstanceNorm, nlnn.InstanceNorm)
_SWAP_HINT = "normlab.swap_norm(model, 'group_norm')"


def _uses_batch_stats(layer: nn.Module) -> bool:
    return layer.training or not layer.track_running_stats


def check_forward(ctx: AuditContext) -> Iterator[Finding]:
    """The forward pass itself failed."""
    if ctx.error is not None:
        yield Finding("error", "forward_failed", "(root)", f"the forward raised {type(ctx.error).__name__}: "
                      f"{str(ctx.error).strip().splitlines()[0] if str(ctx.error).strip() else ''}",
                      "the model cannot run on this input; the checks below use what was seen before the failure",
                      "fix the error (the other findings may name its cause, e.g. a batch too small for BatchNorm)")


def check_no_norm(ctx: AuditContext) -> Iterator[Finding]:
    """Nothing to audit."""
    if not ctx.norms:
        yield Finding("info", "no_norm", "(root)", "no normalization layer found: nothing to audit",
                      "the normalization checks only apply to layers they can find",
                      "nothing to do (third-party norm classes are recognised when their name ends in 'Norm')")


def check_small_batch(ctx: AuditContext) -> Iterator[Finding]:
    """BatchNorm whose batch statistics come from too few samples."""
    scale = ctx.batch_size / ctx.input_batch if ctx.input_batch else 1.0
    world = torch.distributed.get_world_size() if torch.distributed.is_available() and \
        torch.distributed.is_initialized() else 1
    for path, layer in ctx.norms:
        seen = ctx.seen.get(path)
        if not isinstance(layer, _BATCH) or seen is None or len(seen.shape) < 2 or not _uses_batch_stats(layer) \
                or is_frozen(layer):
            continue
        n = max(1, round(seen.shape[0] * scale)) * (world if isinstance(layer, nn.SyncBatchNorm) else 1)
        if isinstance(layer, nlnn.GhostBatchNorm):
            n = min(n, layer.virtual_batch_size)
        values = n * math.prod(seen.shape[2:])
        if values <= 1 or n < 4:
            severity = "error"
        elif n < 8 and not isinstance(layer, nlnn.BatchRenorm):
            severity = "warning"
        else:
            continue
        yield Finding(
            severity, "small_batch", path,
            f"{type(layer).__name__} takes batch statistics over {n} samples per device ({values} values per channel)",
            "one channel seeing a single value normalizes to β (training crashes in torch.nn)" if values <= 1 else
            "batch statistics of fewer than ~8 samples are noisy and differ from the running statistics used at "
            "test time, so accuracy drops as the batch shrinks (Wu & He 2018)",
            f"a batch-independent norm ({_SWAP_HINT}), SyncBatchNorm across devices (normlab.convert_sync_bn), "
            "batch_renorm, a larger per-device batch, or normlab.freeze_norm when fine-tuning",
        )


def check_bias_before_norm(ctx: AuditContext) -> Iterator[Finding]:
    """A Conv/Linear bias that the next layer's per-channel mean subtraction removes."""
    for path, layer in ctx.norms:
        seen = ctx.seen.get(path)
        if not isinstance(layer, _PER_CHANNEL_MEAN) or seen is None or seen.producer is None:
            continue
        producer = ctx.module(seen.producer)
        out = producer.out_features if isinstance(producer, nn.Linear) else producer.out_channels
        linear_not_2d = isinstance(producer, nn.Linear) and len(seen.shape) != 2  # then dim 1 is not its output
        if producer.bias is None or out != layer.num_features or linear_not_2d:
            continue
        yield Finding(
            "warning", "bias_before_norm", path,
            f"{seen.producer!r} ({type(producer).__name__}) has a bias, and {type(layer).__name__} subtracts the "
            "per-channel mean right after it",
            f"the mean subtraction removes any per-channel constant, so the {out} bias values have no effect "
            "(wasted parameters; weight decay still acts on them)",
            f"build {seen.producer!r} with bias=False (the norm's β takes the bias's role)",
        )


def check_norm_at_output(ctx: AuditContext) -> Iterator[Finding]:
    """A normalization layer is the last layer with parameters: it produces the model's output."""
    last = ctx.order[-1] if ctx.order and ctx.error is None else None
    layer = ctx.module(last) if last is not None else None
    if layer is None or not _walk.looks_like_norm(layer):
        return
    per_token = _walk.norm_kind(layer) in ("layer_norm", "rms_norm", "scale_norm", "dynamic_tanh")
    yield Finding(
        "info" if per_token else "warning", "norm_at_output", last or "(root)",
        f"{type(layer).__name__} is the last layer: the model's output is normalized",
        "a normalized output has a fixed scale and offset (and depends on the batch for BatchNorm), which limits "
        "logits and regression targets (DCGAN drops BatchNorm from its output layer); a backbone's final norm that "
        "feeds a head is fine",
        "end with a Linear/Conv head after the norm, or remove the norm from the output layer",
    )


def check_train_mode(ctx: AuditContext) -> Iterator[Finding]:
    """A model in train mode that looks like it is used for inference."""
    if not ctx.model.training or ctx.optimizer is not None:
        return
    dependent = [p for p, m in ctx.model.named_modules() if isinstance(m, _MODE_DEPENDENT) and m.training
                 and (not isinstance(m, (*_BATCH, nn.modules.instancenorm._InstanceNorm, nlnn.InstanceNorm))
                      or m.track_running_stats)]
    if not dependent:
        return
    inference = not ctx.grad_enabled
    yield Finding(
        "error" if inference else "warning", "train_mode", "(root)",
        f"the model is in train mode{' under torch.no_grad()' if inference else ''}; layers that act differently "
        f"in eval mode: {', '.join(repr(p) for p in dependent[:3])}{', …' if len(dependent) > 3 else ''}",
        "in train mode BatchNorm normalizes with each batch's statistics and overwrites its running statistics, "
        "and Dropout drops units: predictions depend on the batch and are wrong for inference",
        "call model.eval() before inference (pass optimizer= to audit a training set-up)",
    )


def check_mixed_kinds(ctx: AuditContext) -> Iterator[Finding]:
    """Several normalization kinds in one model."""
    kinds = Counter(_walk.norm_kind(m).replace("layer_norm_2d", "layer_norm") for _, m in ctx.norms)
    if len(kinds) > 1:
        listing = ", ".join(f"{k} ×{n}" for k, n in kinds.most_common())
        yield Finding("info", "mixed_norms", "(root)", f"{len(kinds)} normalization kinds in one model: {listing}",
                      "deliberate in hybrids (a BatchNorm CNN stem with a LayerNorm Transformer), but often the "
                      "leftover of a partial swap; batch-dependent and batch-independent layers also need "
                      "different batch sizes and fine-tuning care",
                      "check it is intended; normlab.swap_norm(model, kind, source=...) makes the model uniform")


def check_eps(ctx: AuditContext) -> Iterator[Finding]:
    """eps far from the useful range."""
    for path, layer in ctx.norms:
        name, eps = _walk.eps_of(layer)
        if name is None or isinstance(layer, (nlnn.ScaleNorm, nlnn.DynamicTanh)) or isinstance(eps, torch.Tensor):
            continue
        seen = ctx.seen.get(path)
        if eps is None:
            eps = torch.finfo(seen.dtype if seen is not None else torch.float32).eps
        if not isinstance(eps, (int, float)) or 1e-8 <= eps <= 1e-3:
            continue
        too_big = eps > 1e-3
        yield Finding(
            "warning", "eps_range", path, f"{type(layer).__name__} has {name}={eps:.3g}, outside 1e-8 … 1e-3",
            "a large eps shrinks every feature whose variance is near or below it, so the layer stops normalizing"
            if too_big else "a tiny eps lets a constant channel divide by ~0 and is lost in half precision",
            "use eps=1e-5 (1e-6 for RMSNorm/LayerNorm in Transformers); for RMSNorm with eps=None in bf16/fp16 "
            "give an explicit eps" if too_big else "use eps=1e-5 (at least 1e-8)",
        )


def check_affine_init(ctx: AuditContext) -> Iterator[Finding]:
    """γ/β away from 1/0 (normal after training; worth knowing on a fresh model)."""
    moved, zero_gamma = [], []
    for path, layer in ctx.norms:
        weight, bias = getattr(layer, "weight", None), getattr(layer, "bias", None)
        weight = weight if isinstance(weight, torch.Tensor) else None
        bias = bias if isinstance(bias, torch.Tensor) else None
        if weight is not None and not torch.all(weight == 0) and not torch.all(weight == 1) or \
                bias is not None and not torch.all(bias == 0):
            moved.append(path)
        elif weight is not None and torch.all(weight == 0):
            zero_gamma.append(path)
    for paths, what, why in (
        (moved, "γ/β not at their 1/0 initialisation",
         "expected in a trained model; in a fresh one the layers start as other maps than the identity"),
        (zero_gamma, "γ initialised to 0",
         "zero-γ on the last norm of each residual branch is a deliberate trick (Goyal et al. 2017): the block "
         "starts as the identity; elsewhere it switches the layer's output off"),
    ):
        if paths:
            shown = ", ".join(paths[:3]) + (f" (+{len(paths) - 3} more)" if len(paths) > 3 else "")
            yield Finding("info", "affine_init", shown, f"{len(paths)} layers with {what}", why,
                          "nothing if trained or intended; else reset_parameters() on those layers")


def check_weight_decay(ctx: AuditContext) -> Iterator[Finding]:
    """Weight decay applied to normalization parameters."""
    if ctx.optimizer is None:
        return
    owners = {id(p): path for path, layer in ctx.norms for p in layer.parameters(recurse=False)}
    for index, group in enumerate(ctx.optimizer.param_groups):
        if not group.get("weight_decay", 0):
            continue
        hit = sorted({owners[id(p)] for p in group["params"] if id(p) in owners})
        if hit:
            yield Finding(
                "warning", "weight_decay_on_norm", hit[0] + (f" (+{len(hit) - 1} more)" if len(hit) > 1 else ""),
                f"optimizer group {index} decays the parameters of {len(hit)} normalization layers "
                f"(weight_decay={group['weight_decay']:g})",
                "decay pulls γ towards 0, switching the normalized features off, and β has no scale to "
                "regularise; the usual recipes exclude them",
                "normlab.param_groups(model, weight_decay=...) builds groups without decay on norms and biases",
            )


def check_degenerate_groups(ctx: AuditContext) -> Iterator[Finding]:
    """GroupNorm/InstanceNorm/LayerNorm settings that reduce to another norm, or to a constant."""
    for path, layer in ctx.norms:
        seen = ctx.seen.get(path)
        spatial = math.prod(seen.shape[2:]) if seen is not None and len(seen.shape) > 2 else 1
        kind = _walk.norm_kind(layer)
        if kind == "group_norm":
            g, c = layer.num_groups, layer.num_channels
            per_group = c // g * spatial
            if seen is not None and per_group == 1:
                yield _constant(path, layer, "each group holds one value")
            elif g == c:
                yield _same_as(path, f"GroupNorm({g}, {c}) is InstanceNorm with per-channel γ, β",
                               "normlab.swap_norm(model, 'instance_norm', source=nn.GroupNorm) says it directly")
            elif g == 1:
                yield _same_as(path, f"GroupNorm(1, {c}) is LayerNorm over (C, *spatial) with per-channel γ, β",
                               "fine if intended (PoolFormer uses it); 'layer_norm_2d' normalizes over C alone")
        elif kind == "instance_norm" and seen is not None and spatial == 1 and len(seen.shape) > 2:
            yield _constant(path, layer, "each (sample, channel) has a single spatial value")
        elif kind in ("layer_norm", "layer_norm_2d") and _walk.num_features_of(layer) == 1:
            yield _constant(path, layer, "it normalizes over a single feature")


def _constant(path: str, layer: nn.Module, why: str) -> Finding:
    return Finding("error", "degenerate_norm", path, f"{type(layer).__name__}: {why}, so its output is constant (β)",
                   "the mean of one value is the value itself: the normalized output is 0 and the layer passes no "
                   "information", "normalize over more values (fewer groups, a layer before pooling to 1×1) or "
                   "remove the layer")


def _same_as(path: str, message: str, fix: str) -> Finding:
    return Finding("info", "norm_equivalence", path, message,
                   "the name hides what the layer computes, which matters when comparing normalizations", fix)


CHECKS = (check_forward, check_no_norm, check_small_batch, check_bias_before_norm, check_norm_at_output,
          check_train_mode, check_mixed_kinds, check_eps, check_affine_init, check_weight_decay,
          check_degenerate_groups)
