"""The class-conditional eye DCGAN of ``omniart-eye-generator``, split at an operable layer.

The architecture is the package's ``generator.py`` (its state dict has the same shapes): the noise (100)
and a one-hot eye colour (8) are concatenated into a 108 x 1 x 1 map, then

    l   name     layers                                         output
    1   block1   ConvT(108->1024, k4 s1 p0), BatchNorm, ReLU    1024 x 4 x 4
    2   block2   ConvT(1024->512, k4 s2 p1), BatchNorm, ReLU    512 x 8 x 8
    3   block3   ConvT(512->256, k4 s2 p1), BatchNorm, ReLU     256 x 16 x 16
    4   block4   ConvT(256->128, k4 s2 p1), BatchNorm, ReLU     128 x 32 x 32
    5   block5   ConvT(128->64, k4 s2 p1), BatchNorm, ReLU      64 x 64 x 64
        to_rgb   ConvT(64->3, k4 s2 p1), tanh                   3 x 128 x 128

All convolutions are bias-free. The five block outputs are the operable layers; ``to_rgb`` is the output
layer. The package's ``Dropout(0.2)`` after block 1 is left out: it is the identity at inference, and
this module is inference only (it stays in eval mode). Images come out in [0, 1] as ``(tanh + 1) / 2``.
"""

from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .._seeds import global_rng_untouched
from ._gan_support import (
    check_class_vector, check_count_and_seed, describe, exactly_one_condition, keyword_list, load_state_exactly,
    one_hot, read_state_dict,
)
from .base import Generator, GeneratorError, Layer

PACKAGE = "omniart_eye_generator"
WEIGHTS_FILE = "generator_model_state.pth"
NOISE_DIM = 100
#: the package's ``classes`` tuple (eye_generator.py), in one-hot order
EYE_COLOURS = ("amber", "blue", "brown", "gray", "grayscale", "green", "hazel", "red")
COLOUR_ALIASES = {"grey": "gray", "greyscale": "grayscale"}
BLOCK_CHANNELS = (1024, 512, 256, 128, 64)
#: the package's ``nn.Sequential`` indices -> our module names (ReLU/Dropout/Tanh hold no weights)
PACKAGE_TO_MODULE = {
    "main.0.": "blocks.0.0.", "main.1.": "blocks.0.1.",
    "main.4.": "blocks.1.0.", "main.5.": "blocks.1.1.",
    "main.7.": "blocks.2.0.", "main.8.": "blocks.2.1.",
    "main.10.": "blocks.3.0.", "main.11.": "blocks.3.1.",
    "main.13.": "blocks.4.0.", "main.14.": "blocks.4.1.",
    "main.16.": "to_rgb.",
}


def eye_colour_index(keyword: str) -> int:
    """Index of an eye colour name (case-insensitive; "grey" spellings accepted)."""
    if not isinstance(keyword, str):
        raise GeneratorError(f"keyword must be an eye colour name, got {type(keyword).__name__}")
    name = keyword.strip().lower()
    name = COLOUR_ALIASES.get(name, name)
    if name not in EYE_COLOURS:
        close = difflib.get_close_matches(name, EYE_COLOURS + tuple(COLOUR_ALIASES), n=3, cutoff=0.5)
        hint = f"; close matches: {', '.join(repr(c) for c in close)}" if close else ""
        raise GeneratorError(
            f"keyword {keyword!r} is not an eye colour; expected one of {', '.join(EYE_COLOURS)}{hint}"
        )
    return EYE_COLOURS.index(name)


@dataclass(frozen=True)
class EyesContext:
    """The eye colour: ``label`` is (1 or N, 8), one-hot for a keyword; a single row serves the whole
    batch. ``inputs`` (the noise), when given, is checked against the inputs of ``encode``/``forward``
    (accepted for symmetry with BigGAN; the layers after the input do not depend on it)."""

    label: torch.Tensor
    inputs: torch.Tensor | None = None


class EyesDCGANGenerator(Generator):
    """The omniart eye DCGAN as a split generator; ``inputs`` are noise vectors (N, 100)."""

    name = "eyes"
    input_kind = "latent"

    def __init__(self):
        super().__init__()
        in_channels = (NOISE_DIM + len(EYE_COLOURS),) + BLOCK_CHANNELS[:-1]
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=1 if first else 2,
                                   padding=0 if first else 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            )
            for first, cin, cout in zip((True, False, False, False, False), in_channels, BLOCK_CHANNELS)
        )
        self.to_rgb = nn.ConvTranspose2d(BLOCK_CHANNELS[-1], 3, kernel_size=4, stride=2, padding=1,
                                         bias=False)
        self._layer_table = [Layer(i + 1, f"block{i + 1}", c) for i, c in enumerate(BLOCK_CHANNELS)]
        self.eval()

    def train(self, mode: bool = True) -> "EyesDCGANGenerator":
        """Always eval: the batch norms must use their running statistics (pretrained, inference only)."""
        return super().train(False)

    # ----- interface -------------------------------------------------------------------------------

    def layers(self) -> Sequence[Layer]:
        return self._layer_table

    def make_context(
        self,
        *,
        keyword: str | Sequence[str] | None = None,
        class_index: int | Sequence[int] | None = None,
        class_vector: torch.Tensor | None = None,
        inputs: torch.Tensor | None = None,
    ) -> EyesContext:
        """The eye colour from exactly one of ``keyword`` (a colour name, or one per sample),
        ``class_index`` (0..7, or one per sample) or ``class_vector`` ((8,) or (N, 8))."""
        exactly_one_condition(keyword=keyword, class_index=class_index, class_vector=class_vector)
        if keyword is not None:
            keywords = keyword_list(keyword)
            class_index = [eye_colour_index(word) for word in keywords]
        if class_index is not None:
            class_vector = one_hot(class_index, len(EYE_COLOURS))
        label = check_class_vector(class_vector, len(EYE_COLOURS))
        if inputs is not None:
            inputs = self._check_noise(inputs, "inputs")
            self._check_label_rows(label, inputs.shape[0])
        return EyesContext(label=label, inputs=inputs)

    def sample_inputs(self, n: int, seed: int, device: torch.device | str | None = None) -> torch.Tensor:
        """``n`` standard-normal noise vectors (as the package draws them), drawn on the CPU from
        ``seed`` so they are the same on every device."""
        check_count_and_seed(n, seed)
        noise = torch.randn(n, NOISE_DIM, dtype=torch.float32, generator=torch.Generator().manual_seed(int(seed)))
        return noise.to(self._device() if device is None else device)

    def encode(self, inputs: torch.Tensor, layer: int | str, context: Any = None) -> torch.Tensor:
        """The activation Y at ``layer`` (N, C, H, W) for noise ``inputs`` (N, 100)."""
        target = self.resolve_layer(layer)
        features = self._input_map(inputs, context)
        for block in self.blocks[: target.index]:
            features = block(features)
        return features

    def decode(self, activation: torch.Tensor, layer: int | str, context: Any = None) -> torch.Tensor:
        """The image (N, 3, 128, 128) in [0, 1] from ``activation`` at ``layer``; ``context`` is not
        needed (the colour enters only at the input) and may be None."""
        target = self.resolve_layer(layer)
        if context is not None and not isinstance(context, EyesContext):
            raise GeneratorError(
                f"context must be an EyesContext from make_context or None, got {type(context).__name__}"
            )
        size = 4 * 2 ** (target.index - 1)
        weight = self.to_rgb.weight
        if not isinstance(activation, torch.Tensor) or activation.dim() != 4 \
                or tuple(activation.shape[1:]) != (target.channels, size, size):
            raise GeneratorError(
                f"activation at layer {target.index} ({target.name}) must have shape "
                f"(N, {target.channels}, {size}, {size}), got {describe(activation)}"
            )
        if activation.device != weight.device or activation.dtype != weight.dtype:
            raise GeneratorError(
                f"activation must be {weight.dtype} on {weight.device} like the model, "
                f"got {activation.dtype} on {activation.device}"
            )
        features = activation
        for block in self.blocks[target.index:]:
            features = block(features)
        return self._to_image(features)

    def forward(self, inputs: torch.Tensor, context: Any = None) -> torch.Tensor:
        """The image (N, 3, 128, 128) in [0, 1] for noise ``inputs`` (N, 100)."""
        features = self._input_map(inputs, context)
        for block in self.blocks:
            features = block(features)
        return self._to_image(features)

    # ----- pieces ----------------------------------------------------------------------------------

    def _input_map(self, inputs: torch.Tensor, context: Any) -> torch.Tensor:
        """Noise and colour concatenated into the (N, 108, 1, 1) input of block 1."""
        if not isinstance(context, EyesContext):
            raise GeneratorError(
                f"the eye DCGAN needs a context from make_context(keyword=... | class_index=...), "
                f"got {type(context).__name__}"
            )
        noise = self._check_noise(inputs, "inputs")
        if context.inputs is not None and not (
            context.inputs.shape == noise.shape and torch.equal(context.inputs.to(noise.device), noise)
        ):
            raise GeneratorError("inputs differ from the noise the context was made with")
        self._check_label_rows(context.label, noise.shape[0])
        label = context.label.to(device=noise.device, dtype=noise.dtype).expand(noise.shape[0], -1)
        return torch.cat((noise, label), dim=1)[:, :, None, None]

    def _to_image(self, features: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(self.to_rgb(features)) + 1.0) / 2.0

    def _device(self) -> torch.device:
        return self.to_rgb.weight.device

    def _check_noise(self, noise: Any, what: str) -> torch.Tensor:
        if not isinstance(noise, torch.Tensor) or noise.dim() != 2 or noise.shape[1] != NOISE_DIM:
            raise GeneratorError(f"{what} must be noise of shape (N, {NOISE_DIM}), got {describe(noise)}")
        weight = self.to_rgb.weight
        if noise.dtype != weight.dtype:
            raise GeneratorError(f"{what} must have dtype {weight.dtype} like the model, got {noise.dtype}")
        if what == "inputs" and noise.device != weight.device:
            raise GeneratorError(f"{what} are on {noise.device} but the model is on {weight.device}")
        return noise.to(weight.device)

    @staticmethod
    def _check_label_rows(label: torch.Tensor, batch: int) -> None:
        if label.shape[0] not in (1, batch):
            raise GeneratorError(
                f"the colour has {label.shape[0]} rows for a noise batch of {batch}; "
                "expected 1 row or one per sample"
            )


def package_weights_path() -> Path:
    """Where ``omniart-eye-generator`` keeps its weights (found without importing the package, whose
    import loads the weights and moves them to CUDA)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GeneratorError(
            "the eye DCGAN's weights ship with the omniart-eye-generator package "
            "(pip install omniart-eye-generator==0.1), which is not installed; or pass path= to its "
            f"{WEIGHTS_FILE}"
        )
    return Path(list(spec.submodule_search_locations)[0]) / WEIGHTS_FILE


def convert_package_state(state: dict[str, Any]) -> dict[str, Any]:
    """Rename the package's ``main.<i>.*`` keys to this module's names; unknown keys are kept as they are
    (so that loading reports them)."""
    converted = {}
    for key, value in state.items():
        prefix = next((p for p in PACKAGE_TO_MODULE if key.startswith(p)), None)
        converted[PACKAGE_TO_MODULE[prefix] + key[len(prefix):] if prefix else key] = value
    return converted


def load_eyes_dcgan(path: str | Path | None = None,
                    device: torch.device | str | None = None) -> EyesDCGANGenerator:
    """Load the eye DCGAN from the package's ``generator_model_state.pth`` (default) or ``path``
    (a state dict with the package's key names), read with ``torch.load(weights_only=True)``."""
    path = package_weights_path() if path is None else Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise GeneratorError(
            f"eye DCGAN weights {str(path)!r} {what}; expected the {WEIGHTS_FILE} state dict of "
            "omniart-eye-generator 0.1"
        )
    with global_rng_untouched():
        generator = EyesDCGANGenerator()
    load_state_exactly(generator, convert_package_state(dict(read_state_dict(path))),
                       f"{str(path)!r} (expected the omniart-eye-generator state dict)")
    return generator if device is None else generator.to(device)
