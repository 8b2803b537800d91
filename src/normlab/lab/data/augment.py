"""Batched data augmentation and normalization on tensors, on whatever device the batch lives on.

The standard CIFAR recipe of He et al. (2016, "Deep Residual Learning for Image Recognition", Sec. 4.2): pad
4 pixels on each side, take a random 32×32 crop, flip horizontally with probability 1/2, then subtract the
per-channel mean and divide by the per-channel standard deviation.

Everything is vectorised over the batch: the batch is padded once and every crop is gathered at its own offsets
in one ``torch.gather`` over the flattened padded images — no PIL, no per-image Python loop. Randomness comes
only from the ``generator`` argument: offsets and flip decisions are drawn on the generator's device (a CPU
generator gives the same augmentations on every device) and then moved to the batch's device, so a given
generator state always gives the same batch.

Padding is ``"zeros"`` by default (as in He et al. and torchvision's ``RandomCrop``) or ``"reflect"`` (mirror
without repeating the edge pixel, like :func:`torch.nn.functional.pad`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["random_crop", "random_flip", "normalize", "ImageTransform", "PADDING_MODES"]

PADDING_MODES = ("zeros", "reflect")


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected a batch of images shaped (N, C, H, W), got {shape}")


def _draw(generator: torch.Generator | None, device: torch.device, draw) -> torch.Tensor:
    """Draw on the generator's device (CPU by default), then move to ``device``."""
    source = generator.device if generator is not None else torch.device("cpu")
    return draw(source).to(device, non_blocking=True)


def _pad(images: torch.Tensor, padding: int, padding_mode: str) -> torch.Tensor:
    if padding_mode == "zeros":
        return F.pad(images, (padding,) * 4, mode="constant", value=0)
    try:
        return F.pad(images, (padding,) * 4, mode="reflect")
    except (RuntimeError, NotImplementedError):  # some backends lack integer reflection padding
        wide = torch.float64 if images.element_size() > 2 else torch.float32  # exact for these integers
        return F.pad(images.to(wide), (padding,) * 4, mode="reflect").to(images.dtype)


def random_crop(images: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None,
                padding_mode: str = "zeros") -> torch.Tensor:
    """Pad every image by ``padding`` pixels per side, then crop back to its size at a random offset.

    Args:
        images: a batch of any dtype.
        padding: pixels added on each side; offsets are uniform in ``[0, 2 * padding]`` per axis.
        generator: the source of randomness (see the module docstring).
        padding_mode: ``"zeros"`` or ``"reflect"``.

    Returns:
        A new tensor of the same shape, dtype and device.

    Shape:
        - images: :math:`(N, C, H, W)` → :math:`(N, C, H, W)`.

    Examples:
        >>> x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
        >>> random_crop(x, padding=1, generator=torch.Generator().manual_seed(0))[0, 0].tolist()
        [[0, 4, 5, 6], [0, 8, 9, 10], [0, 12, 13, 14], [0, 0, 0, 0]]
    """
    _check_images(images)
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    n, _, height, width = images.shape
    if padding == 0 or n == 0:
        return images.clone()
    if padding_mode == "reflect" and padding >= min(height, width):
        raise ValueError(f"reflect padding needs padding < image size, got {padding} for {height}×{width}")
    offsets = _draw(generator, images.device,
                    lambda dev: torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=dev))
    channels, padded_width = images.shape[1], width + 2 * padding
    padded = _pad(images, padding, padding_mode).reshape(n, channels, -1)  # (N, C, H' * W')
    rows = offsets[0][:, None, None] + torch.arange(height, device=images.device)[:, None]  # (N, H, 1)
    cols = offsets[1][:, None, None] + torch.arange(width, device=images.device)  # (N, 1, W)
    index = (rows * padded_width + cols).view(n, 1, height * width)  # flat position of each output pixel
    crops = torch.gather(padded, 2, index.expand(n, channels, height * width))  # (N, C, H * W)
    return crops.view(n, channels, height, width)


def random_flip(images: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left–right with probability ``p``.

    Args:
        images: a batch of any dtype.
        p: flip probability per image.
        generator: the source of randomness.

    Returns:
        A new tensor of the same shape, dtype and device.

    Shape:
        - images: :math:`(N, C, H, W)` → :math:`(N, C, H, W)`.

    Examples:
        >>> x = torch.tensor([[[[1, 2, 3]]]])
        >>> random_flip(x, p=1.0)[0, 0, 0].tolist()
        [3, 2, 1]
    """
    _check_images(images)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"flip probability p must lie in [0, 1], got {p}")
    flip = _draw(generator, images.device,
                 lambda dev: torch.rand(images.shape[0], generator=generator, device=dev) < p)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-channel standardisation :math:`y_c = (x_c - \\mu_c) / \\sigma_c` on the 0–1 scale.

    uint8 images are first divided by 255; floating images are taken to be on the 0–1 scale already.

    Args:
        images: a batch.
        mean / std: one value per channel (e.g. ``ImageData.mean`` / ``ImageData.std``).
        dtype: the floating output dtype.

    Returns:
        The normalized batch in ``dtype`` on the same device.

    Shape:
        - images: :math:`(N, C, H, W)` → :math:`(N, C, H, W)`.

    Examples:
        >>> x = torch.full((1, 2, 1, 1), 255, dtype=torch.uint8)
        >>> normalize(x, mean=(0.5, 0.0), std=(0.25, 2.0)).flatten().tolist()
        [2.0, 0.5]
    """
    _check_images(images)
    channels = images.shape[1]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean and std need {channels} values (one per channel), got {len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std values must be > 0, got {tuple(std)}")
    x = images.to(dtype)
    if not images.is_floating_point():
        x = x / 255
    mean_t = torch.tensor(mean, dtype=dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=dtype, device=images.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


class ImageTransform:
    """Optional random crop and flip, then normalization: the whole per-batch pipeline as one callable.

    Args:
        mean / std: per-channel statistics for :func:`normalize`.
        crop_padding: padding for :func:`random_crop`; 0 disables cropping.
        flip: apply :func:`random_flip` with p = 0.5.
        padding_mode: ``"zeros"`` or ``"reflect"``.
        dtype: output dtype.

    Shape:
        - input: :math:`(N, C, H, W)` uint8; output: the same shape in ``dtype``.

    Examples:
        >>> train = ImageTransform((0.5,) * 3, (0.25,) * 3, crop_padding=4, flip=True)
        >>> batch = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
        >>> train(batch, torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3, 8, 8])
        >>> ImageTransform((0.5,) * 3, (0.25,) * 3).random
        False
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, crop_padding: int = 0, flip: bool = False,
                 padding_mode: str = "zeros", dtype: torch.dtype = torch.float32):
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        self.mean, self.std = tuple(mean), tuple(std)
        self.crop_padding, self.flip, self.padding_mode, self.dtype = crop_padding, flip, padding_mode, dtype

    @property
    def random(self) -> bool:
        """Whether this transform draws random numbers (needs a generator)."""
        return self.crop_padding > 0 or self.flip

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.crop_padding > 0:
            images = random_crop(images, self.crop_padding, generator, self.padding_mode)
        if self.flip:
            images = random_flip(images, 0.5, generator)
        return normalize(images, self.mean, self.std, self.dtype)

    def __repr__(self) -> str:
        return (f"ImageTransform(crop_padding={self.crop_padding}, flip={self.flip}, "
                f"padding_mode={self.padding_mode!r}, mean={self.mean}, std={self.std})")
