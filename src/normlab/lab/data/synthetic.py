"""A small synthetic image-classification set for tests: CIFAR-shaped, learnable, deterministic per seed.

Each class :math:`c` gets a random base colour :math:`\\mu_c \\in [-1, 1]^3` and a random oriented stripe pattern
(frequency, angle, phase, and a per-channel sign). An image of class :math:`c` is

.. math::
    x = \\operatorname{clip}\\big(128 + 20\\,\\mu_c + 40\\,a\\,s_c \\odot \\sin(2\\pi f_c\\,(u\\cos\\theta_c +
    v\\sin\\theta_c) + \\phi_c) + \\sigma\\,\\varepsilon,\\; 0,\\; 255\\big)

with a per-image contrast :math:`a \\sim U(0.5, 1.5)`, pixel noise :math:`\\varepsilon \\sim N(0, 1)` and
``noise`` :math:`= \\sigma`. The mean colour alone separates most classes and the pattern the rest, so a small
network learns it within a few epochs. The same seed always gives the same
tensors (a CPU ``torch.Generator`` draws everything).
"""
from __future__ import annotations

import math

import torch

from .image_data import ImageData, Provenance

__all__ = ["make_synthetic_images"]


def _class_parameters(num_classes: int, channels: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "colour": torch.rand(num_classes, channels, generator=generator) * 2 - 1,
        "sign": torch.randint(0, 2, (num_classes, channels), generator=generator).float() * 2 - 1,
        "frequency": 1 + torch.rand(num_classes, generator=generator) * 3,  # 1–4 cycles per image
        "angle": torch.rand(num_classes, generator=generator) * math.pi,
        "phase": torch.rand(num_classes, generator=generator) * 2 * math.pi,
    }


def _render(labels: torch.Tensor, params: dict[str, torch.Tensor], channels: int, size: int, noise: float,
            generator: torch.Generator) -> torch.Tensor:
    n = len(labels)
    coords = torch.arange(size, dtype=torch.float32) / size
    v, u = torch.meshgrid(coords, coords, indexing="ij")  # (H, W) each
    angle, freq, phase = params["angle"][labels], params["frequency"][labels], params["phase"][labels]
    projection = u * angle.cos()[:, None, None] + v * angle.sin()[:, None, None]  # (N, H, W)
    wave = torch.sin(2 * math.pi * freq[:, None, None] * projection + phase[:, None, None])  # (N, H, W)
    contrast = 0.5 + torch.rand(n, generator=generator)
    pattern = params["sign"][labels][:, :, None, None] * wave[:, None] * contrast[:, None, None, None]
    colour = params["colour"][labels][:, :, None, None]
    pixels = 128 + 20 * colour + 40 * pattern + noise * torch.randn(n, channels, size, size, generator=generator)
    return pixels.round().clamp(0, 255).to(torch.uint8)  # (N, C, H, W)


def make_synthetic_images(num_train: int = 512, num_test: int = 128, num_classes: int = 10, image_size: int = 32,
                          channels: int = 3, noise: float = 32.0, seed: int = 0) -> ImageData:
    """Generate the synthetic set described in the module docstring.

    Args:
        num_train / num_test: images per split (labels cycle through the classes, then are shuffled).
        num_classes: number of classes.
        image_size: height and width (32 matches CIFAR; smaller is faster in tests).
        channels: colour channels.
        noise: standard deviation of the pixel noise, in 0–255 units.
        seed: everything is a function of it.

    Returns:
        :class:`ImageData` named ``"synthetic"`` whose ``mean``/``std`` are the training split's own per-channel
        statistics and whose provenance kind is ``"synthetic"``.

    Shape:
        - images: :math:`(N, C, S, S)` uint8 with :math:`S` = ``image_size``; labels :math:`(N,)` int64.

    Examples:
        >>> data = make_synthetic_images(num_train=8, num_test=4, image_size=16, seed=1)
        >>> data.train_images.shape, data.train_images.dtype, data.test_labels.tolist()
        (torch.Size([8, 3, 16, 16]), torch.uint8, [1, 3, 0, 2])
    """
    for label, value in (("num_train", num_train), ("num_test", num_test), ("num_classes", num_classes),
                         ("image_size", image_size), ("channels", channels)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive int, got {value!r}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    generator = torch.Generator().manual_seed(seed)
    params = _class_parameters(num_classes, channels, generator)
    splits = []
    for n in (num_train, num_test):
        labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=generator)]
        splits += [_render(labels, params, channels, image_size, noise, generator), labels]
    scaled = splits[0].double() / 255
    mean = tuple(round(float(m), 4) for m in scaled.mean(dim=(0, 2, 3)))
    std = tuple(round(max(float(s), 1e-3), 4) for s in scaled.std(dim=(0, 2, 3)))
    source = f"make_synthetic_images(seed={seed}, num_classes={num_classes}, image_size={image_size}, noise={noise})"
    provenance = Provenance("images", "synthetic", source, num_train, num_test)
    classes = tuple(f"class{i}" for i in range(num_classes))
    return ImageData("synthetic", *splits, classes, mean, std, provenance)
