"""Benchmark inputs: spatially correlated non-negative activations, and real ones from the default
generator on a photo."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def correlated_activation(shape: tuple[int, ...], seed: int = 0, smoothing: int = 5) -> torch.Tensor:
    """Non-negative float32 activation whose channels vary smoothly over space, like a ReLU layer's.

    Uniform noise box-filtered over ``smoothing`` x ``smoothing`` pixels, per channel.
    """
    generator = torch.Generator().manual_seed(seed)
    *lead, C, H, W = shape
    noise = torch.rand((max(1, int(torch.tensor(lead).prod())) if lead else 1) * C, 1, H, W, generator=generator)
    smooth = F.avg_pool2d(F.pad(noise, [smoothing // 2] * 4, mode="replicate"), smoothing, stride=1)
    return smooth.reshape(shape).contiguous()


def photo_activation(size: int = 512, layer: str = "res.2", style: int = 3) -> torch.Tensor:
    """Layer activation (C, H, W) of the default generator (multistyle26) on scikit-image's astronaut."""
    from skimage import data

    from cpia_cuda.generators import load_generator

    image = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    image = F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    generator = load_generator("multistyle26")
    with torch.no_grad():
        return generator.encode(image, layer, generator.make_context(style=style))[0].contiguous()
