"""The interface every generator offers to the painting pipeline.

A generator is a pre-trained network split at an operable layer ``l`` (the paper's Eq. 1):

    Y = encode(inputs, l, context)          # layers 1..l
    image = decode(Y, l, context)           # layers l+1..L

so that ``decode(encode(x, l, ctx), l, ctx)`` equals ``forward(x, ctx)`` and a masked ``Y`` can be
re-rendered many times without recomputing the front part. ``context`` is the conditioning both halves
need (style weights, a style embedding, a class vector and truncation); ``make_context`` builds it from
user-facing arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Layer:
    """An operable layer: ``index`` is the paper's l (1-based, forward order)."""

    index: int
    name: str
    channels: int


class GeneratorError(ValueError):
    """A generator could not be built, loaded or asked for something it does not have."""


#: What a generator's inputs are: "image" (N, 3, H, W), painted region by region from step images,
#: or "latent" (N, z_dim), encoded once, the regions restricting where strokes go.
INPUT_KINDS = ("image", "latent")


class Generator(nn.Module):
    """Base class: subclasses implement ``layers``, ``make_context``, ``encode``, ``decode``."""

    #: short registry name, e.g. "multistyle26"
    name: str = "generator"
    #: one of INPUT_KINDS: "image" for image-to-image networks (style transfer), "latent" for GANs
    input_kind: str = "image"
    #: True if ``decode`` takes an activation of any spatial size (the rest of the network is fully
    #: convolutional), so progressive frames can be decoded from an activation shrunk to the preview
    #: size; False if it needs the size ``encode`` produced (a GAN, a hooked module that replays its inputs)
    decodes_any_size: bool = False
    #: with ``decodes_any_size``, the smallest image side its decode makes (frames shrunk to a preview
    #: keep it): by default 5, what a network that opens with a 9x9 convolution behind a reflection
    #: padding of 4, as the style networks do, needs
    min_image_side: int = 5
    #: the output is ``size_multiple * ceil(H / size_multiple)`` by the same for W, aligned at the top-left
    #: corner (a stride rounding up: the style networks' is 4); the painting crops the excess off
    size_multiple: int = 1

    def layers(self) -> Sequence[Layer]:
        """The operable layers in forward order, with indices l = 1, 2, ... as in the paper."""
        raise NotImplementedError

    def resolve_layer(self, layer: int | str) -> Layer:
        """Return the operable layer named by index (1-based) or name; a clear error otherwise."""
        if isinstance(layer, bool) or not isinstance(layer, (int, str, np.integer)):
            raise GeneratorError(f"layer must be an index (int) or a name (str), got {type(layer).__name__}")
        table = list(self.layers())
        for candidate in table:
            if candidate.index == layer or candidate.name == layer:
                return candidate
        listing = ", ".join(f"{c.index}:{c.name}" for c in table)
        raise GeneratorError(
            f"layer {layer!r} is not an operable layer of {self.name}; expected one of {listing}"
        )

    def make_context(self, **condition: Any) -> Any:
        """Conditioning shared by encode and decode, built from user-facing arguments."""
        return None

    def check_inputs(self, inputs: torch.Tensor) -> None:
        """Raise GeneratorError for inputs ``encode`` cannot take (shape, size, range); cheap, so that
        callers can check before any work. Default: no check beyond what ``encode`` does."""

    def encode(self, inputs: torch.Tensor, layer: int | str, context: Any = None) -> torch.Tensor:
        """The activation (N, C, h, w) of ``layer`` (index or name) for a batch of inputs: images
        (N, 3, H, W) in [0, 1] (``input_kind`` "image") or latents (N, z_dim) ("latent")."""
        raise NotImplementedError

    def decode(self, activation: torch.Tensor, layer: int | str, context: Any = None) -> torch.Tensor:
        """The rest of the network from ``layer`` on: images (N, 3, H, W) in [0, 1], so that
        ``decode(encode(x, l), l)`` matches ``forward(x)`` to float rounding."""
        raise NotImplementedError

    def forward(self, inputs: torch.Tensor, context: Any = None) -> torch.Tensor:
        """The plain output (N, 3, H, W) in [0, 1] of the whole network."""
        raise NotImplementedError

    @torch.no_grad()
    def layer_shapes(self, inputs: torch.Tensor, context: Any = None) -> list[tuple[Layer, tuple[int, ...]]]:
        """Each operable layer with the shape (C, H, W) its activation has for ``inputs``."""
        return [(layer, tuple(self.encode(inputs, layer.index, context).shape[1:])) for layer in self.layers()]
