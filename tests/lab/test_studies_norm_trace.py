"""Tests for the weight-norm trace callback: the weights it calls scale-invariant are those
normlab.analysis.scale_invariant_parameters finds, its final norms are the trained weights' norms, and for those
weights plain SGD follows the predicted norm recursion while other weights drift from it."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from normlab.analysis import scale_invariant_parameters
from normlab.lab.config import TrainConfig
from normlab.lab.trainer import load_trained
from normlab.lab.store import ResultsStore
from normlab.lab.studies.norm_trace import train_traced

BASE = {"model": "vgg11", "model_kwargs": {"cfg": [4, "M", 8, "M"]}, "dataset": "synthetic", "train_subset": 32,
        "test_subset": 16, "data_kwargs": {"image_size": 8, "num_classes": 2}, "epochs": 2, "batch_size": 8,
        "device": "cpu", "momentum": 0.0, "schedule": "constant", "lr": 0.2, "callbacks": ["norm_trace"]}


@pytest.mark.parametrize("norm, weight_decay", [("batch_norm", 0.0), ("batch_norm", 0.01), ("none", 0.0)])
def test_trace_matches_the_trained_weights_and_the_invariance_probe(tmp_path, norm, weight_decay):
    config = TrainConfig.from_dict({**BASE, "norm": norm, "weight_decay": weight_decay})
    result = train_traced(config, home=tmp_path, progress=False, verbose=False)
    with ResultsStore(tmp_path / "results.db") as store:
        trace = store.artifacts(result.run_id)["norm_trace"]
    last = trace[-1]
    model, _ = load_trained(result.run_id, tmp_path)
    params = dict(model.named_parameters())
    for name, entry in last.items():  # the recorded final norm is the trained weight's norm
        assert entry["norm"] == pytest.approx(params[name].detach().double().norm().item(), rel=1e-6)
    probe = scale_invariant_parameters(model.train(), F.cross_entropy,
                                       (torch.randn(8, 3, 8, 8), torch.randint(0, 2, (8,))))
    invariant = {n for n, e in last.items() if e["max_cos"] < 1e-3}
    assert invariant == {n for n in probe.invariant_names if n in last}
    assert len(invariant) == (2 if norm == "batch_norm" else 0)
    for name, entry in last.items():
        ratio = entry["norm"] / entry["pred"]
        if name in invariant:
            assert ratio == pytest.approx(1.0, abs=1e-5)
    if norm == "none":  # not scale-invariant: the recursion without the cross term does not hold
        assert max(abs(e["norm"] / e["pred"] - 1.0) for e in last.values()) > 1e-3
    metrics = result.metrics
    if norm == "batch_norm":
        assert metrics["trace_invariant"] == 2.0
        if weight_decay == 0.0:  # ‖w'‖² = ‖w‖² + η²‖g‖²: without decay the norm can only grow
            assert metrics["trace_norm"] > metrics["trace_initial_norm"]
    else:
        assert math.isnan(metrics["trace_norm"])
