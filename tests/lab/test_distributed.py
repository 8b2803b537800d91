"""Training in 2 CPU processes (torchrun, gloo): SyncBatchNorm against single-process BatchNorm, identical ranks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from normlab import nn as nlnn
from normlab.lab.config import TrainConfig
from normlab.lab.distributed import DistContext, SyncBatchNorm, convert_sync_batchnorm, shard
from normlab.lab.trainer import train

# Runs on each rank under torchrun. Part 1 feeds each rank half of one batch through SyncBatchNorm; part 2 trains
# with DistributedDataParallel + --sync-bn and saves each rank's final weights.
RANK_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch, torch.distributed as dist
    from normlab.lab.callbacks import Callback
    from normlab.lab.config import TrainConfig
    from normlab.lab.distributed import SyncBatchNorm, setup_distributed, teardown_distributed
    from normlab.lab.trainer import train

    out, config_json = sys.argv[1], sys.argv[2]
    context = setup_distributed("cpu")  # joins the torchrun group (gloo); both train() calls below reuse it
    rank, world = context.rank, context.world_size
    assert context.owns_group and world == 2

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 4, 5, generator=generator, dtype=torch.float64) * 2 + 1
    probe = torch.randn(8, 3, 4, 5, generator=generator, dtype=torch.float64)
    part = slice(rank * 4, rank * 4 + 4)
    layer = SyncBatchNorm(3, momentum=0.3).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([0.5, 1.5, -1.0]))
        layer.bias.copy_(torch.tensor([0.1, 0.0, -0.2]))
    mine = x[part].clone().requires_grad_()
    y = layer(mine)
    (y * probe[part]).sum().backward()
    gathered = [torch.zeros_like(y) for _ in range(world)]
    dist.all_gather(gathered, y.detach())
    grads = [torch.zeros_like(y) for _ in range(world)]
    dist.all_gather(grads, mine.grad)
    weight_grad = layer.weight.grad.clone()
    dist.all_reduce(weight_grad)
    torch.save({"x": x, "probe": probe, "y": torch.cat(gathered), "x_grad": torch.cat(grads),
                "weight_grad": weight_grad, "running_mean": layer.running_mean, "running_var": layer.running_var},
               f"{out}/syncbn_rank{rank}.pt")

    class SaveWeights(Callback):
        def on_train_end(self, ctx, result):
            torch.save(ctx.model.state_dict(), f"{out}/weights_rank{rank}.pt")

    config = TrainConfig.from_dict(json.loads(config_json))
    train(config, home=f"{out}/lab", callbacks=[SaveWeights()], progress=False, verbose=False)
    again = train(config, home=f"{out}/lab", progress=False, verbose=False)  # a second run in the same processes
    assert again.skipped
    teardown_distributed(context)
""")

DDP_CONFIG = dict(model="resnet20", norm="batch_norm", dataset="synthetic", train_subset=32, test_subset=16,
                  batch_size=16, epochs=1, data_kwargs={"image_size": 8, "num_classes": 4},
                  model_kwargs={"width": 2}, device="cpu", sync_bn=True, seed=3)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Launch RANK_SCRIPT with torchrun on 2 CPU processes once; return its output folder."""
    out = tmp_path_factory.mktemp("ddp")
    script = out / "rank_script.py"
    script.write_text(RANK_SCRIPT)
    config = TrainConfig(**DDP_CONFIG, world_size=2)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               str(out), json.dumps(config.to_dict())]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def test_sync_batch_norm_equals_batch_norm_over_the_whole_batch(two_ranks):
    ranks = [torch.load(two_ranks / f"syncbn_rank{r}.pt") for r in range(2)]
    reference = nn.BatchNorm2d(3, momentum=0.3).double()  # torch.nn, one process, the whole batch
    with torch.no_grad():
        reference.weight.copy_(torch.tensor([0.5, 1.5, -1.0]))
        reference.bias.copy_(torch.tensor([0.1, 0.0, -0.2]))
    x = ranks[0]["x"].clone().requires_grad_()
    y = reference(x)
    (y * ranks[0]["probe"]).sum().backward()
    for state in ranks:
        torch.testing.assert_close(state["y"], y.detach())
        torch.testing.assert_close(state["x_grad"], x.grad)
        torch.testing.assert_close(state["weight_grad"], reference.weight.grad)
        torch.testing.assert_close(state["running_mean"], reference.running_mean)
        torch.testing.assert_close(state["running_var"], reference.running_var)


def test_both_ranks_end_with_identical_weights_equal_to_one_process(two_ranks, tmp_path):
    rank0, rank1 = (torch.load(two_ranks / f"weights_rank{r}.pt") for r in range(2))
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    single = train(TrainConfig(**DDP_CONFIG), home=tmp_path, progress=False, verbose=False)
    weights = torch.load(single.checkpoint)["model"]
    for key in rank0:  # the same global batches, so the same training up to the order of float sums
        torch.testing.assert_close(rank0[key].float(), weights[key].float(), rtol=1e-4, atol=1e-5, msg=key)
    stored = json.loads(json.dumps(torch.load(two_ranks / "lab" / "runs" / TrainConfig(
        **DDP_CONFIG, world_size=2).run_id / "final.pt")["metrics"]))
    assert stored["epochs_completed"] == 1.0


# -- in one process -------------------------------------------------------------------------------------------------
def test_sync_batch_norm_without_a_group_is_batch_norm():
    layer, reference = SyncBatchNorm(4).double(), nn.BatchNorm2d(4).double()
    x = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference(x))
    torch.testing.assert_close(layer.running_var, reference.running_var)


@pytest.mark.parametrize("layer", [nn.BatchNorm2d(4), nlnn.BatchNorm2d(4), nn.BatchNorm1d(4, affine=False)])
def test_convert_sync_batchnorm_keeps_state(layer):
    with torch.no_grad():
        layer.running_mean.uniform_()
        if layer.affine:
            layer.weight.uniform_()
    model = nn.Sequential(nn.Conv2d(3, 4, 1), layer, nlnn.GhostBatchNorm(4)).eval()
    converted = convert_sync_batchnorm(model)
    assert isinstance(converted[1], SyncBatchNorm) and isinstance(converted[2], nlnn.GhostBatchNorm)
    assert not converted[1].training
    for key, value in layer.state_dict().items():
        torch.testing.assert_close(converted[1].state_dict()[key], value)


@pytest.mark.parametrize("rank, expected", [(0, [0, 1, 2]), (1, [3, 4, 5])])
def test_shard_takes_a_contiguous_slice(rank, expected):
    assert shard((torch.arange(6),), DistContext(rank=rank, world_size=2))[0].tolist() == expected


def test_shard_refuses_uneven_batches():
    with pytest.raises(ValueError, match="divisible"):
        shard((torch.arange(5),), DistContext(rank=0, world_size=2))
