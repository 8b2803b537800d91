"""The synthetic image set: shapes, determinism, balance, statistics and learnable class structure."""
from __future__ import annotations

import pytest
import torch

from normlab.lab.data import make_synthetic_images

SIZES = [  # (num_train, num_test, num_classes, image_size, channels)
    (64, 16, 10, 32, 3),
    (30, 10, 3, 8, 3),
    (20, 5, 4, 16, 1),
]


@pytest.mark.parametrize("num_train, num_test, num_classes, image_size, channels", SIZES)
def test_shapes_dtypes_and_balance(num_train, num_test, num_classes, image_size, channels):
    data = make_synthetic_images(num_train, num_test, num_classes, image_size, channels)
    assert data.train_images.shape == (num_train, channels, image_size, image_size)
    assert data.test_images.shape == (num_test, channels, image_size, image_size)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    counts = torch.bincount(data.train_labels, minlength=num_classes)
    assert counts.max() - counts.min() <= 1  # labels cycle through the classes
    assert data.provenance.kind == "synthetic" and not data.provenance.complete
    assert data.num_classes == num_classes == len(data.classes)


def test_same_seed_same_data_other_seed_other_data():
    first, again, other = (make_synthetic_images(32, 8, seed=s) for s in (0, 0, 1))
    assert torch.equal(first.train_images, again.train_images) and torch.equal(first.test_labels, again.test_labels)
    assert not torch.equal(first.train_images, other.train_images)


def test_mean_and_std_are_the_training_statistics():
    data = make_synthetic_images(128, 8)
    pixels = data.train_images.double() / 255
    assert torch.allclose(torch.tensor(data.mean, dtype=torch.float64), pixels.mean((0, 2, 3)), atol=1e-4)
    assert torch.allclose(torch.tensor(data.std, dtype=torch.float64), pixels.std((0, 2, 3)), atol=1e-4)


@pytest.mark.parametrize("image_size", [8, 32])
def test_classes_are_learnable(image_size):
    """A nearest-class-mean classifier (float64, on raw pixels) fitted on the training split does far better than
    chance (0.1) on the test split."""
    data = make_synthetic_images(500, 300, image_size=image_size)
    train, test = data.train_images.double().flatten(1), data.test_images.double().flatten(1)
    centroids = torch.stack([train[data.train_labels == c].mean(0) for c in range(10)])
    accuracy = (torch.cdist(test, centroids).argmin(1) == data.test_labels).double().mean()
    assert accuracy > 0.9


@pytest.mark.parametrize("arguments, words", [({"num_train": 0}, "num_train"), ({"image_size": 2.5}, "image_size"),
                                              ({"noise": -1.0}, "noise")])
def test_bad_arguments(arguments, words):
    with pytest.raises(ValueError, match=words):
        make_synthetic_images(**arguments)
