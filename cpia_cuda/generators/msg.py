"""MSG-Net (Zhang & Dana, "Multi-style Generative Network for Real-time Transfer", 2017) as a generator.

Our own implementation of the network of PyTorch-Multi-Style-Transfer (``Net``, ngf=128, the
``21styles.model`` release). Parameter paths equal the original's, so its weight files load as they are
(``model1.*``, ``ins.weight`` and their duplicates ``model.0.*``, ``model.1.weight``: the original
shares those modules between two containers, and so does this port).

The transformer ``model`` is a sequence of 13 layers; the paper's layer ``l`` is the output of layer l
(1-based), and layers 2-9 are operable:

====  ======================  ===========================================  ========  ==========
 l    name                    what                                         channels  resolution
====  ======================  ===========================================  ========  ==========
 1    encoder                 ``model1``: 7x7 conv 3->64, IN, ReLU, two     512       H/4
                              stride-2 bottlenecks (the siamese part)
 2    inspiration             Inspiration (CoMatch) layer: ``(W G)^T X``    512       H/4
 3-8  bottleneck.0..5         pre-activation bottlenecks 512->128->512      512       H/4
 9    upbottleneck.0          upsampling bottleneck 512->32->128            128       H/2
 10   upbottleneck.1          upsampling bottleneck 128->16->64             64        H
 11   norm                    instance norm                                 64        H
 12   relu                    ReLU                                          64        H
 13   output                  7x7 conv 64->3                                3         H
====  ======================  ===========================================  ========  ==========

The original network works on BGR images in [0, 255]; ``encode``/``make_context`` take RGB in [0, 1]
and convert, ``decode`` converts back and clamps to [0, 1]. Output size is ``4 * ceil(H / 4)`` by
``4 * ceil(W / 4)`` (equal to the input for multiples of 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._seeds import global_rng_untouched
from .._weights import load_failure_reason
from .base import Generator, GeneratorError, Layer
from ._style_support import MIN_IMAGE_SIDE, check_activation, check_images

_EXPANSION = 4
_IGNORED_KEY_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")


class ReflectConv(nn.Module):
    """Optional nearest upsample, reflection pad of ``kernel // 2``, conv (with bias)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, upsample: int = 1):
        super().__init__()
        self.upsample = upsample
        self.pad = kernel // 2
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample > 1:
            x = F.interpolate(x, scale_factor=float(self.upsample), mode="nearest")
        if self.pad:
            x = F.pad(x, (self.pad,) * 4, mode="reflect")
        return self.conv2d(x)


def _pre_activation(in_channels: int, planes: int, middle: nn.Module) -> nn.Sequential:
    """IN-ReLU-1x1 conv, IN-ReLU-``middle``, IN-ReLU-1x1 conv (x4 channels); indices as the original."""
    return nn.Sequential(
        nn.InstanceNorm2d(in_channels), nn.ReLU(), nn.Conv2d(in_channels, planes, 1),
        nn.InstanceNorm2d(planes), nn.ReLU(), middle,
        nn.InstanceNorm2d(planes), nn.ReLU(), nn.Conv2d(planes, planes * _EXPANSION, 1),
    )


class Bottleneck(nn.Module):
    """Pre-activation bottleneck: ``shortcut(x) + conv_block(x)``; a 1x1 strided shortcut when it downsamples."""

    def __init__(self, in_channels: int, planes: int, stride: int = 1, project: bool = False):
        super().__init__()
        self.residual_layer = nn.Conv2d(in_channels, planes * _EXPANSION, 1, stride) if project else None
        self.conv_block = _pre_activation(in_channels, planes, ReflectConv(planes, planes, 3, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.residual_layer is None else self.residual_layer(x)
        return shortcut + self.conv_block(x)


class UpBottleneck(nn.Module):
    """Upsampling bottleneck: both branches upsample x2 (nearest) before their conv."""

    def __init__(self, in_channels: int, planes: int, upsample: int = 2):
        super().__init__()
        self.residual_layer = ReflectConv(in_channels, planes * _EXPANSION, 1, upsample=upsample)
        self.conv_block = _pre_activation(in_channels, planes, ReflectConv(planes, planes, 3, upsample=upsample))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual_layer(x) + self.conv_block(x)


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C) Gram matrix divided by C*H*W, as MSG-Net normalises it."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat.bmm(flat.transpose(1, 2)) / (c * h * w)


class Inspiration(nn.Module):
    """CoMatch layer: ``Y = (W G)^T X`` with X flattened to (N, C, HW) and G the style's Gram matrix."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, channels, channels).uniform_(0.0, 0.02))

    def forward(self, x: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        mixing = torch.matmul(self.weight, gram).transpose(1, 2).expand(n, c, c)
        return mixing.bmm(x.reshape(n, c, -1)).reshape(x.shape)


@dataclass(frozen=True)
class MSGStyle:
    """Context of :class:`MSGNetGenerator`: the style target's Gram matrix, (1 or N, 512, 512)."""

    gram: torch.Tensor


class MSGNetGenerator(Generator):
    """MSG-Net's transformer split at its layers (see the module docstring for the table)."""

    name = "msg"
    input_kind = "image"
    decodes_any_size = True
    min_image_side = MIN_IMAGE_SIDE
    size_multiple = 4

    _NAMES = ["encoder", "inspiration"] + [f"bottleneck.{i}" for i in range(6)] + [
        "upbottleneck.0", "upbottleneck.1", "norm", "relu", "output"]
    _OPERABLE = range(2, 10)

    def __init__(self, ngf: int = 128):
        super().__init__()
        width = ngf * _EXPANSION
        self.model1 = nn.Sequential(
            ReflectConv(3, 64, 7), nn.InstanceNorm2d(64), nn.ReLU(),
            Bottleneck(64, 32, stride=2, project=True),
            Bottleneck(32 * _EXPANSION, ngf, stride=2, project=True),
        )
        self.ins = Inspiration(width)
        self.model = nn.Sequential(
            self.model1, self.ins,
            *[Bottleneck(width, ngf) for _ in range(6)],
            UpBottleneck(width, 32), UpBottleneck(32 * _EXPANSION, 16),
            nn.InstanceNorm2d(16 * _EXPANSION), nn.ReLU(), ReflectConv(16 * _EXPANSION, 3, 7),
        )
        channels = [width] * 8 + [32 * _EXPANSION] + [16 * _EXPANSION] * 3 + [3]
        self._layers = [Layer(index=i, name=self._NAMES[i - 1], channels=channels[i - 1]) for i in self._OPERABLE]

    def layers(self) -> Sequence[Layer]:
        return list(self._layers)

    @staticmethod
    def _to_network(images: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] -> BGR in [0, 255], the original's input convention."""
        return images.flip(1) * 255.0

    def make_context(self, style_image: torch.Tensor | None = None) -> MSGStyle:
        """The style target: ``style_image`` (3, H, W) or (N, 3, H, W) RGB in [0, 1] through the encoder."""
        if style_image is None:
            raise GeneratorError(
                "msg.make_context needs style_image=, a (3, H, W) or (N, 3, H, W) RGB tensor in [0, 1]")
        if isinstance(style_image, torch.Tensor) and style_image.dim() == 3:
            style_image = style_image.unsqueeze(0)
        style_image = check_images(style_image, "msg.make_context(style_image)")
        device = self.ins.weight.device
        with torch.no_grad():
            features = self.model1(self._to_network(style_image.to(device=device)))
            return MSGStyle(gram_matrix(features))

    def _gram_for(self, context: MSGStyle | None, batch: int, device: torch.device) -> torch.Tensor:
        if not isinstance(context, MSGStyle):
            raise GeneratorError(
                f"msg needs a style target from make_context(style_image=...), got {type(context).__name__}"
            )
        if context.gram.shape[0] not in (1, batch):
            raise GeneratorError(
                f"the context holds {context.gram.shape[0]} style targets but the batch has {batch} images; "
                "expected 1 or one per image"
            )
        return context.gram.to(device)

    def _run(self, x: torch.Tensor, first: int, last: int, gram: torch.Tensor) -> torch.Tensor:
        """Layers first..last (1-based, inclusive)."""
        for index in range(first, last + 1):
            module = self.model[index - 1]
            x = module(x, gram.expand(x.shape[0], -1, -1)) if module is self.ins else module(x)
        return x

    def check_inputs(self, inputs: torch.Tensor) -> None:
        check_images(inputs, self.name)

    def encode(self, inputs: torch.Tensor, layer: int | str, context: MSGStyle | None = None) -> torch.Tensor:
        target = self.resolve_layer(layer)
        inputs = check_images(inputs, self.name)
        gram = self._gram_for(context, inputs.shape[0], inputs.device)
        return self._run(self._to_network(inputs), 1, target.index, gram)

    def decode(self, activation: torch.Tensor, layer: int | str, context: MSGStyle | None = None) -> torch.Tensor:
        target = self.resolve_layer(layer)
        activation = check_activation(activation, target, self.name)
        gram = self._gram_for(context, activation.shape[0], activation.device)
        bgr = self._run(activation, target.index + 1, len(self.model), gram)
        return (bgr.flip(1) / 255.0).clamp(0.0, 1.0)

    def forward(self, inputs: torch.Tensor, context: MSGStyle | None = None) -> torch.Tensor:
        inputs = check_images(inputs, self.name)
        gram = self._gram_for(context, inputs.shape[0], inputs.device)
        bgr = self._run(self._to_network(inputs), 1, len(self.model), gram)
        return (bgr.flip(1) / 255.0).clamp(0.0, 1.0)


def _complete_shared_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fill ``model.0.*``/``model.1.weight`` from ``model1.*``/``ins.weight`` (or the reverse) for a file
    that holds only one copy of the shared modules."""
    aliases = [("model1.", "model.0."), ("ins.", "model.1.")]
    completed = dict(state)
    for key, value in state.items():
        for first, second in aliases:
            if key.startswith(first):
                completed.setdefault(second + key[len(first):], value)
            elif key.startswith(second):
                completed.setdefault(first + key[len(second):], value)
    return completed


def where_to_get_weights() -> str:
    return ("expected a 21styles.model-format state_dict, which experiments/models/download_model.sh of "
            "github.com/zhanghang1989/PyTorch-Multi-Style-Transfer fetches (or a model trained with that "
            "repository's code)")


def load_msgnet(path: str | Path, device: str | torch.device | None = None, ngf: int = 128) -> MSGNetGenerator:
    """Build :class:`MSGNetGenerator` from a ``21styles.model``-format file (a plain state_dict).

    Loaded with ``torch.load(weights_only=True)``. The ``running_mean``/``running_var`` entries that old
    PyTorch saved for InstanceNorm layers are dropped (they are unused: instance norm uses the statistics
    of each image).
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise GeneratorError(f"MSG-Net weights {str(path)!r} {what}; {where_to_get_weights()}")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for unreadable or unsafe files
        raise GeneratorError(f"{path} is not a loadable plain state_dict: {load_failure_reason(error, path)}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GeneratorError(f"{path} should hold a plain state_dict of tensors, got {type(state).__name__}")
    state = {k: v for k, v in state.items() if not k.endswith(_IGNORED_KEY_SUFFIXES)}
    state = _complete_shared_keys(state)

    with global_rng_untouched():
        generator = MSGNetGenerator(ngf=ngf)
    expected = generator.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise GeneratorError(
            f"{path} does not match MSG-Net (ngf={ngf}): {len(missing)} missing keys, e.g. {missing[:4]}; "
            f"{len(unexpected)} unexpected keys, e.g. {unexpected[:4]}"
        )
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
             for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise GeneratorError(f"{path} has MSG-Net keys with wrong shapes (file vs expected), e.g. {wrong[:3]}")
    generator.load_state_dict({k: v.float() for k, v in state.items()})
    generator.requires_grad_(False)
    generator.eval()
    if device is not None:
        generator.to(device)
    return generator
