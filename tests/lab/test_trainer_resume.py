"""A run killed with SIGKILL and started again ends exactly like a run never interrupted."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from normlab.lab.checkpoint import load_checkpoint
from normlab.lab.config import TrainConfig
from normlab.lab.store import ResultsStore
from normlab.lab.trainer import TIMING_KEYS, train

# The worker slows down from the second epoch on (a callback that sleeps: it changes nothing computed), so the
# kill lands in the middle of epoch 2, after the first checkpoint; the rerun must redo epoch 2 from there.
WORKER = """
import json, sys, time
from normlab.lab.callbacks import Callback
from normlab.lab.config import TrainConfig
from normlab.lab.trainer import train

class Slow(Callback):
    def on_batch_end(self, ctx, loss):
        if ctx.epoch >= 1:
            time.sleep(0.5)

slow = sys.argv[3] == "slow"
train(TrainConfig.from_dict(json.loads(sys.argv[1])), home=sys.argv[2], callbacks=[Slow()] if slow else [],
      progress=False, verbose=not slow)
"""
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _worker(config: TrainConfig, home, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(config.to_dict()), str(home), mode], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(process: subprocess.Popen) -> str:
    output, errors = process.communicate(timeout=300)
    assert process.returncode == 0, errors.decode()
    return output.decode()

CASES = [
    dict(model="resnet20", norm="batch_norm", optimizer="sgd", nesterov=True, schedule="cosine", warmup_epochs=1,
         callbacks=["weight_norm"]),
    pytest.param(dict(model="vgg11", norm="group_norm", optimizer="adamw", lr=1e-3, schedule="onecycle",
                      label_smoothing=0.1, model_kwargs={"cfg": [4, "M", 8]}, sparsity_l1=1e-4),
                 marks=pytest.mark.slow),  # three more processes: ~30 s on a busy 2-core machine
]


def _kill_after_first_checkpoint(config: TrainConfig, home) -> None:
    process = _worker(config, home, "slow")
    checkpoint = home / "runs" / config.run_id / "checkpoint.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.exists():
        if process.poll() is not None:
            raise AssertionError(f"the worker ended before its first checkpoint: {process.stderr.read().decode()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("no checkpoint within 240 s")
        time.sleep(0.05)
    time.sleep(0.3)  # inside epoch 2 (its steps sleep 0.5 s each)
    assert process.poll() is None, "the worker finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL


@pytest.mark.parametrize("changes", CASES)
def test_killed_run_resumes_to_the_same_result(tmp_path, changes):
    config = TrainConfig(dataset="synthetic", train_subset=32, test_subset=16, batch_size=16, epochs=2,
                         data_kwargs={"image_size": 8, "num_classes": 4}, device="cpu",
                         **{"model_kwargs": {"width": 2}, **changes})
    # Every run in its own fresh, single-threaded process: the same arithmetic everywhere.
    uninterrupted = _worker(config, tmp_path / "uninterrupted", "fast")  # runs while the other one is killed
    _kill_after_first_checkpoint(config, tmp_path / "killed")
    store = ResultsStore(tmp_path / "killed" / "results.db")
    assert store.get(config.run_id).status == "running"  # killed: never finished
    log = _finish(_worker(config, tmp_path / "killed", "fast"))
    _finish(uninterrupted)
    reference = train(config, home=tmp_path / "uninterrupted", progress=False, verbose=False)  # stored results
    resumed = train(config, home=tmp_path / "killed", progress=False, verbose=False)
    assert reference.skipped and resumed.skipped
    assert resumed.metrics == reference.metrics  # exactly, not approximately
    strip = lambda rows: [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]  # noqa: E731
    assert strip(resumed.history) == strip(reference.history)
    ours, theirs = load_checkpoint(resumed.checkpoint)["model"], load_checkpoint(reference.checkpoint)["model"]
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert [row["epoch"] for row in store.history(config.run_id)] == [0, 1]
    assert store.get(config.run_id).status == "finished" and store.get(config.run_id).attempts == 2
    assert "resumed from the checkpoint after epoch 1 of 2" in log
