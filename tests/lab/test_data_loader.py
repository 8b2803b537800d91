"""Resumable loaders: coverage, batch sizes, determinism, and identical batches after save/restore."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from normlab.lab.data import BlockLoader, ImageTransform, TensorLoader, derive_generator, sample_blocks

N = 23


def _tensor_loader(**overrides) -> TensorLoader:
    images = torch.arange(N, dtype=torch.uint8).view(N, 1, 1, 1).expand(N, 3, 4, 4).contiguous()
    settings = dict(batch_size=5, seed=0,
                    transform=ImageTransform((0.5,) * 3, (0.5,) * 3, crop_padding=1, flip=True))
    settings.update(overrides)
    return TensorLoader(images, torch.arange(N), **settings)


def _block_loader(**overrides) -> BlockLoader:
    settings = dict(batch_size=3, block_size=6, steps_per_epoch=4, seed=0)
    settings.update(overrides)
    return BlockLoader(torch.arange(50) * 7 % 50, **settings)


LOADERS = {"tensor": _tensor_loader, "blocks": _block_loader}


def _epochs(loader, epochs: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [batch for _ in range(epochs) for batch in loader]


@pytest.mark.parametrize("batch_size, drop_last, sizes", [(5, False, [5, 5, 5, 5, 3]), (5, True, [5, 5, 5, 5]),
                                                          (23, False, [23]), (30, False, [23]), (1, True, [1] * 23)])
def test_each_epoch_is_a_permutation(batch_size, drop_last, sizes):
    loader = _tensor_loader(batch_size=batch_size, drop_last=drop_last, transform=None)
    assert len(loader) == len(sizes)
    orders = []
    for epoch in range(3):
        labels = [y for _, y in loader]
        assert [len(y) for y in labels] == sizes and loader.epoch == epoch + 1 and loader.position == 0
        flat = torch.cat(labels)
        assert len(set(flat.tolist())) == len(flat)  # no sample twice within an epoch
        if not drop_last:
            assert sorted(flat.tolist()) == list(range(N))
        orders.append(flat.tolist())
    assert len({tuple(o) for o in orders}) == 3  # a new shuffle each epoch


def test_batches_pair_inputs_with_their_labels():
    loader = _tensor_loader(transform=None)
    for images, labels in _epochs(loader, 2):
        assert torch.equal(images[:, 0, 0, 0].long(), labels)


def test_unshuffled_order_and_evaluation_transform():
    seen = []
    loader = _tensor_loader(shuffle=False, transform=lambda x, g: seen.append(g) or x.float())
    assert torch.cat([y for _, y in loader]).tolist() == list(range(N))
    assert all(isinstance(g, torch.Generator) for g in seen)
    evaluation = _tensor_loader(shuffle=False, transform=ImageTransform((0.5,) * 3, (0.5,) * 3))
    inputs = torch.cat([x for x, _ in evaluation])
    assert torch.equal(inputs[:, 0, 0, 0], (torch.arange(N) / 255 - 0.5) / 0.5)


@pytest.mark.parametrize("kind", LOADERS)
def test_same_seed_same_batches_other_seed_other_batches(kind):
    first = _epochs(LOADERS[kind](), 2)
    again = _epochs(LOADERS[kind](), 2)
    other = _epochs(LOADERS[kind](seed=1), 2)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other))


RESUME_POINTS = [(0, 0), (0, 2), (1, 0), (1, 4), (2, 3)]  # (epoch, batches done) where the run is interrupted


@pytest.mark.parametrize("kind", LOADERS)
@pytest.mark.parametrize("stop_epoch, stop_position", RESUME_POINTS)
def test_resume_gives_identical_batches(kind, stop_epoch, stop_position):
    epochs = 3
    uninterrupted = _epochs(LOADERS[kind](), epochs)

    loader, before = LOADERS[kind](), []
    for _ in range(stop_epoch):
        before += list(loader)
    before += itertools.islice(iter(loader), stop_position)  # the run dies after this many batches
    state = dict(loader.state_dict())  # what a checkpoint would hold
    assert (state["epoch"], state["position"]) == (stop_epoch, stop_position)

    resumed = LOADERS[kind]()
    resumed.load_state_dict(state)
    after = list(resumed) + _epochs(resumed, epochs - stop_epoch - 1)
    combined = before + after
    assert len(combined) == len(uninterrupted)
    for (x, y), (rx, ry) in zip(uninterrupted, combined):
        assert torch.equal(x, rx) and torch.equal(y, ry)


@pytest.mark.parametrize("kind, change", [("tensor", {"batch_size": 4}), ("tensor", {"seed": 3}),
                                          ("tensor", {"drop_last": True}), ("blocks", {"block_size": 5})])
def test_state_from_other_settings_is_refused(kind, change):
    state = LOADERS[kind]().state_dict()
    with pytest.raises(ValueError, match="resume with the same data"):
        LOADERS[kind](**change).load_state_dict(state)


@pytest.mark.parametrize("state", [{"epoch": 0, "position": 99}, {"epoch": -1, "position": 0}])
def test_impossible_state_is_refused(state):
    with pytest.raises(ValueError, match="bad loader state"):
        _tensor_loader().load_state_dict(state)


@pytest.mark.parametrize("call, words", [
    (lambda: TensorLoader(torch.zeros(3, 1), torch.zeros(2), 2), "differ in length"),
    (lambda: TensorLoader(torch.zeros(3, 1), torch.zeros(3), 0), "batch_size"),
    (lambda: TensorLoader(torch.zeros(3, 1), torch.zeros(3), 4, drop_last=True), "no batches"),
    (lambda: TensorLoader(torch.zeros(3, 1), torch.zeros(3), 2, seed=-1), "seed"),
    (lambda: BlockLoader(torch.arange(5), 2, 5, 1), "longer than block_size"),
    (lambda: BlockLoader(torch.arange(50), 2, 5, 0), "steps_per_epoch"),
    (lambda: _tensor_loader().set_epoch(-2), "epoch"),
])
def test_bad_arguments_are_explained(call, words):
    with pytest.raises(ValueError, match=words):
        call()


def test_sample_blocks_matches_a_loop_reference():
    tokens = torch.randint(0, 65, (200,), generator=torch.Generator().manual_seed(0))
    x, y = sample_blocks(tokens, 16, 8, torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (16, 8) and x.dtype == torch.int64
    starts = []
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        offsets = [o for o in range(200 - 8) if tokens[o:o + 8].tolist() == row_x]
        assert offsets and any(tokens[o + 1:o + 9].tolist() == row_y for o in offsets)
        starts.append(offsets[0])
    assert max(starts) < 192 and len(set(starts)) > 8


def test_block_offsets_reach_both_ends():
    x, _ = sample_blocks(torch.arange(12), 2000, 4, torch.Generator().manual_seed(0))
    assert sorted(set(x[:, 0].tolist())) == list(range(8))  # every start from 0 to L - T - 1


def test_derived_generators_are_independent_streams():
    draws = {key: torch.rand(4, generator=derive_generator(0, *key)).tolist()
             for key in [("shuffle", 0), ("shuffle", 1), ("batch", 0, 0), ("batch", 0, 1), ("batch", 1, 0)]}
    assert len({tuple(v) for v in draws.values()}) == len(draws)
    assert math.isclose(sum(sum(v) for v in draws.values()) / 20, 0.5, abs_tol=0.2)
