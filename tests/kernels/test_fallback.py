"""Without the fast paths normlab still works: with ``NORMLAB_KERNELS=0``, or with Numba not installed, no CPU
kernel is registered, :data:`normlab.kernels.UNAVAILABLE` says why, and the layers (forward and backward) run on
the reference path and match the float64 references.

Each case runs in a fresh interpreter, since registration happens once, on a process's first op call. Numba's
absence is simulated by an import hook in that interpreter which refuses ``numba`` and ``llvmlite``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import reference as ref
import torch
from tolerances import TOLERANCE, relative_error

_REFUSE_NUMBA = """
import importlib.abc, sys

class RefuseNumba(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("numba", "llvmlite"):
            raise ModuleNotFoundError(f"No module named {name!r} (refused by the test)", name=name)
        return None

sys.meta_path.insert(0, RefuseNumba())
"""

_RUN_LAYERS = """
import json, sys, torch
import normlab.nn as nl

torch.manual_seed(0)
x = torch.randn(4, 8, 5, 5) * 2 + 0.5
upstream = torch.randn(4, 8, 5, 5)
layers = {"layer_norm": nl.LayerNorm(5), "rms_norm": nl.RMSNorm(5), "group_norm": nl.GroupNorm(4, 8),
          "batch_norm": nl.BatchNorm2d(8)}
results = {}
for name, layer in layers.items():
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(0.5, 1.5)
    leaf = x.clone().requires_grad_()
    y = layer(leaf)
    y.backward(upstream)
    results[name] = {"y": y.tolist(), "grad": leaf.grad.tolist(),
                     "params": [p.tolist() for p in layer.parameters()]}

import normlab.kernels as kernels
print(json.dumps({"registered": kernels.REGISTERED, "unavailable": kernels.UNAVAILABLE,
                  "numba_imported": "numba" in sys.modules, "results": results}))
"""

WITHOUT_KERNELS = {  # case -> (extra environment, code run before normlab is imported, what UNAVAILABLE says)
    "NORMLAB_KERNELS=0": ({"NORMLAB_KERNELS": "0"}, "", "disabled by NORMLAB_KERNELS=0"),
    "Numba not installed": ({}, _REFUSE_NUMBA, "refused by the test"),
}

REFERENCES = {  # layer -> float64 reference(x, params)
    "layer_norm": lambda x, p: ref.layer_norm(x, p[0], p[1], 1e-5),
    "rms_norm": lambda x, p: ref.rms_norm(x, p[0], torch.finfo(torch.float32).eps),
    "group_norm": lambda x, p: ref.group_norm(x, p[0], p[1], 1e-5, 4),
    "batch_norm": lambda x, p: ref.batch_norm(x, p[0], p[1], 1e-5),
}


def _run_child(env_extra: dict[str, str], prelude: str) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "NORMLAB_KERNELS"}
    env.update(env_extra)
    code = textwrap.dedent(prelude) + textwrap.dedent(_RUN_LAYERS)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("env_extra, prelude, why", WITHOUT_KERNELS.values(), ids=WITHOUT_KERNELS.keys())
def test_layers_run_on_the_reference_path_without_kernels(env_extra, prelude, why):
    report = _run_child(env_extra, prelude)
    assert not any(backend == "numba" for _, backend in report["registered"]), report["registered"]
    assert why in report["unavailable"]["numba"]
    if prelude:
        assert not report["numba_imported"]
    torch.manual_seed(0)
    x = (torch.randn(4, 8, 5, 5) * 2 + 0.5).double().requires_grad_()
    upstream = torch.randn(4, 8, 5, 5).double()
    forward_tol, grad_tol = TOLERANCE[torch.float32]
    for name, reference in REFERENCES.items():
        got = report["results"][name]
        params = [torch.tensor(p, dtype=torch.float64) for p in got["params"]]
        x.grad = None
        expected = reference(x, params)
        expected.backward(upstream)
        assert relative_error(torch.tensor(got["y"]), expected) <= forward_tol, name
        assert relative_error(torch.tensor(got["grad"]), x.grad) <= grad_tol, f"{name} input gradient"
