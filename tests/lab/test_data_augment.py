"""On-device augmentation: crops and flips against per-image numpy references, determinism, normalization."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from normlab.lab.data import ImageTransform, make_synthetic_images, normalize, random_crop, random_flip

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _images(n: int = 64, size: int = 8, dtype: torch.dtype = torch.uint8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return torch.rand(n, 3, size, size, generator=g, dtype=dtype)


def _reference_crops(image: np.ndarray, padding: int, mode: str) -> dict[tuple[int, int], np.ndarray]:
    """Every crop of one (C, H, W) image padded by numpy, keyed by its (row, column) offset: a slow loop."""
    _, height, width = image.shape
    pad = ((0, 0), (padding, padding), (padding, padding))
    padded = np.pad(image, pad, mode="constant") if mode == "zeros" else np.pad(image, pad, mode="reflect")
    return {(dy, dx): padded[:, dy:dy + height, dx:dx + width]
            for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)}


CROP_CASES = [  # (padding, mode, dtype, size)
    (4, "zeros", torch.uint8, 8),
    (4, "reflect", torch.uint8, 8),
    (2, "reflect", torch.float32, 5),
    (1, "zeros", torch.float64, 4),
    (4, "zeros", torch.uint8, 32),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("padding, mode, dtype, size", CROP_CASES)
def test_random_crop_matches_a_per_image_reference(padding, mode, dtype, size, device):
    images = _images(200, size, dtype).to(device)
    out = random_crop(images, padding, torch.Generator().manual_seed(0), mode)
    assert out.shape == images.shape and out.dtype == dtype and out.device == images.device
    for image, crop in zip(images.cpu().numpy(), out.cpu().numpy()):
        matches = [offset for offset, ref in _reference_crops(image, padding, mode).items()
                   if np.array_equal(ref, crop)]
        assert len(matches) == 1  # exactly one offset of the reference explains the crop (random pixels)


def test_crop_offsets_are_uniform():
    images = torch.zeros(4000, 1, 3, 3)
    images[:, :, 1, 1] = 1.0  # a single lit pixel shows where each crop was taken
    out = random_crop(images, 1, torch.Generator().manual_seed(0))
    where = out[:, 0].flatten(1).argmax(1)[out[:, 0].flatten(1).amax(1) > 0]
    counts = torch.bincount(where, minlength=9).double()
    assert counts.sum() == 4000  # with padding 1 the centre pixel never leaves a 3×3 crop
    assert (counts / 4000 - 1 / 9).abs().max() < 0.03


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_random_flip(p, device):
    images = _images(2000, 4).to(device)
    out = random_flip(images, p, torch.Generator().manual_seed(1))
    same = (out == images).flatten(1).all(1)
    mirrored = (out == images.flip(-1)).flatten(1).all(1)
    assert bool((same ^ mirrored).all())  # each image is either untouched or exactly mirrored
    assert abs(mirrored.double().mean().item() - p) < 0.04


TRANSFORMS = [
    lambda x, g: random_crop(x, 4, g, "zeros"),
    lambda x, g: random_crop(x, 3, g, "reflect"),
    lambda x, g: random_flip(x, 0.5, g),
    lambda x, g: ImageTransform((0.5,) * 3, (0.2,) * 3, crop_padding=4, flip=True)(x, g),
]


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_determinism_per_seed(transform):
    images = _images(32, 8)
    first = transform(images, torch.Generator().manual_seed(7))
    assert torch.equal(first, transform(images, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, transform(images, torch.Generator().manual_seed(8)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_same_augmentation_on_every_device(transform):
    images = _images(32, 8)
    cpu = transform(images, torch.Generator().manual_seed(3))
    gpu = transform(images.cuda(), torch.Generator().manual_seed(3))
    torch.testing.assert_close(gpu.cpu(), cpu)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_normalize_matches_the_formula_in_float64(dtype):
    images = _images(16, 4)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    out = normalize(images, mean, std, dtype)
    reference = (images.double() / 255 - torch.tensor(mean, dtype=torch.float64)[:, None, None]) \
        / torch.tensor(std, dtype=torch.float64)[:, None, None]
    tolerance = 1e-2 if dtype == torch.bfloat16 else 1e-6
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), reference, atol=tolerance * 10, rtol=tolerance)
    floats = normalize(images.double() / 255, mean, std, torch.float64)  # floats are taken as 0–1 already
    torch.testing.assert_close(floats, reference)


def test_normalizing_with_the_data_statistics_standardises_each_channel():
    data = make_synthetic_images(num_train=256, num_test=8, image_size=16)
    out = normalize(data.train_images, data.mean, data.std, torch.float64)
    assert out.mean((0, 2, 3)).abs().max() < 1e-3  # mean/std are stored rounded to 4 decimals
    assert (out.std((0, 2, 3)) - 1).abs().max() < 1e-2


def test_image_transform_pipeline_equals_its_parts():
    images = _images(16, 8)
    transform = ImageTransform((0.5, 0.4, 0.3), (0.2, 0.3, 0.4), crop_padding=2, flip=True, padding_mode="reflect")
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    expected = normalize(random_flip(random_crop(images, 2, g2, "reflect"), 0.5, g2), transform.mean, transform.std)
    assert transform.random and torch.equal(transform(images, g1), expected)
    plain = ImageTransform(transform.mean, transform.std)
    assert not plain.random and torch.equal(plain(images), normalize(images, transform.mean, transform.std))


@pytest.mark.parametrize("call, words", [
    (lambda: random_crop(torch.zeros(3, 8, 8), 4), "N, C, H, W"),
    (lambda: random_crop(torch.zeros(1, 3, 8, 8), -1), "padding"),
    (lambda: random_crop(torch.zeros(1, 3, 8, 8), 2, padding_mode="wrap"), "padding_mode"),
    (lambda: random_crop(torch.zeros(1, 3, 4, 4), 4, padding_mode="reflect"), "reflect padding"),
    (lambda: random_flip(torch.zeros(1, 3, 8, 8), 1.5), "probability"),
    (lambda: normalize(torch.zeros(1, 3, 8, 8), (0.5, 0.5), (1, 1)), "one per channel"),
    (lambda: normalize(torch.zeros(1, 3, 8, 8), (0.5,) * 3, (1, 0, 1)), "> 0"),
    (lambda: ImageTransform((0,) * 3, (1,) * 3, padding_mode="edge"), "padding_mode"),
])
def test_bad_arguments_are_explained(call, words):
    with pytest.raises(ValueError, match=words):
        call()
