"""Accuracy of the per-channel norms on inputs that defeat one-pass statistics: normlab's layers and torch.nn's,
fp32, against the same norm computed in float64 by torch.

The inputs: standard normal values plus 1e4 ("offset"), or with one value of 3e3 first in the tensor ("outlier
first"), or -2e3 first in every (n, c) plane ("outlier in every plane"). The error printed is
``max_i |y_i - y64_i| / max(1, |y64_i|)``: relative for values of magnitude 1 or more, absolute below.

    python benchmarks/outlier_accuracy.py
"""

from __future__ import annotations

import torch

import normlab.nn as nl

SHAPE = (2, 4, 128, 256)
SHORT = (2, 1024, 7, 7)


def _outlier_first(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[0] = 3e3
    return x


def _outlier_every_plane(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[:, :, 0, 0] = -2e3
    return x


INPUTS = {"offset 1e4": lambda x: x + 1e4, "outlier first": _outlier_first,
          "outlier in every plane": _outlier_every_plane}

LAYERS = {  # name: (normlab layer, torch.nn layer, shape, memory format); both without affine parameters
    "GroupNorm(1) NCHW": (nl.GroupNorm(1, 4, affine=False), torch.nn.GroupNorm(1, 4, affine=False), SHAPE,
                          torch.contiguous_format),
    "GroupNorm(1) NCHW, 7x7 channels": (nl.GroupNorm(1, 1024, affine=False),
                                        torch.nn.GroupNorm(1, 1024, affine=False), SHORT, torch.contiguous_format),
    "GroupNorm(1) NHWC": (nl.GroupNorm(1, 4, affine=False), torch.nn.GroupNorm(1, 4, affine=False), SHAPE,
                          torch.channels_last),
    "InstanceNorm2d NHWC": (nl.InstanceNorm2d(4), torch.nn.InstanceNorm2d(4), SHAPE, torch.channels_last),
    "BatchNorm2d NCHW": (nl.BatchNorm2d(4, affine=False, track_running_stats=False),
                         torch.nn.BatchNorm2d(4, affine=False, track_running_stats=False), SHAPE,
                         torch.contiguous_format),
    "BatchNorm2d NHWC": (nl.BatchNorm2d(4, affine=False, track_running_stats=False),
                         torch.nn.BatchNorm2d(4, affine=False, track_running_stats=False), SHAPE, torch.channels_last),
}


def error(y: torch.Tensor, expected: torch.Tensor) -> float:
    return ((y.double() - expected).abs() / expected.abs().clamp(min=1.0)).max().item()


def main() -> None:
    print(f"{'layer':<32} {'input':<24} {'normlab':>9} {'torch.nn':>9}")
    for name, (ours, theirs, shape, memory_format) in LAYERS.items():
        for input_name, make in INPUTS.items():
            x = make(torch.randn(shape, generator=torch.Generator().manual_seed(0)))
            x = x.contiguous(memory_format=memory_format)
            with torch.no_grad():
                expected = theirs.double()(x.double())  # the same formula in float64
                theirs.float()
                print(f"{name:<32} {input_name:<24} {error(ours(x), expected):9.1e} {error(theirs(x), expected):9.1e}")


if __name__ == "__main__":
    main()
