"""BigGAN-deep split at an operable layer, on the model code of ``pytorch-pretrained-biggan``.

Weights come from a local folder holding ``config.json`` and ``pytorch_model.bin``: the official
biggan-deep-128/256/512 releases of that package (hub downloads are not used). See ``load_biggan``.

Operable layers
---------------
The package's ``generator.layers`` is the list of the network's generative stages: bottleneck GenBlocks
with one self-attention layer inserted before block ``attention_layer_position + 1``. Layer ``l`` is the
output of ``generator.layers[l - 1]``; the stem before it (class embedding, ``gen_z`` linear, reshape to
4x4) and the head after it (batch norm, ReLU, 3x3 conv, tanh) are not operable. For BigGAN-deep-512 this
gives the paper's count (Fig. 2: "15 layers and 14 of them are generative bottleneck blocks"):

    l   name        channels  size        l   name        channels  size
    1   block1      2048      4           9   attention   512       64
    2   block2      2048      8           10  block9      512       64
    3   block3      2048      8           11  block10     256       128
    4   block4      1024      16          12  block11     256       128
    5   block5      1024      16          13  block12     128       256
    6   block6      1024      32          14  block13     128       256
    7   block7      1024      32          15  block14     128       512
    8   block8      512       64

BigGAN-deep-256 has 12 blocks (13 layers: the table above up to l=13, which is 128 channels at 256) and
BigGAN-deep-128 has 10 blocks (11 layers). The paper's channel counts fit this numbering (l = 5 has 1024
channels, Figs. 6-7).

Conditioning
------------
Every GenBlock's batch norm reads the condition vector ``[z, embed(class)]`` and the truncation (which
picks the pre-computed batch-norm statistics). The condition contains the noise ``z`` itself, so
``decode`` needs ``z`` as well as the class: build the context with ``make_context(..., inputs=z)``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import numbers
import sys
import types
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
from .imagenet_classes import NUM_IMAGENET_CLASSES, imagenet_class_index

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "pytorch_model.bin"
OFFICIAL_RELEASES = ("biggan-deep-128", "biggan-deep-256", "biggan-deep-512")
RELEASE_URL = "https://s3.amazonaws.com/models.huggingface.co/biggan/{release}-{file}"
DEFAULT_TRUNCATION = 0.4
#: BigGAN samples its noise from a normal truncated to [-2, 2] before scaling it by the truncation
NOISE_BOUND = 2.0
#: the stem's linear layer produces a 4x4 map
STEM_SIZE = 4

_PRIVATE_PACKAGE = "_cpia_pytorch_pretrained_biggan"


def _refuse_download(*args: Any, **kwargs: Any) -> None:
    raise GeneratorError("downloads are disabled here; load BigGAN weights with load_biggan(folder)")


@functools.lru_cache(maxsize=1)
def biggan_model_module() -> types.ModuleType:
    """The ``pytorch_pretrained_biggan.model`` module (BigGAN, BigGANConfig, GenBlock, SelfAttn).

    The package's ``__init__`` imports its download helpers, which need boto3 and requests. Where those
    are missing, the package's own ``config.py`` and ``model.py`` are imported from its folder under a
    private package name, with the download helper replaced by one that refuses.
    """
    try:
        return importlib.import_module("pytorch_pretrained_biggan.model")
    except ModuleNotFoundError as error:
        if error.name == "pytorch_pretrained_biggan":
            raise GeneratorError(
                "BigGAN needs the model code of the pytorch-pretrained-biggan package "
                "(pip install --no-deps pytorch-pretrained-biggan==0.1.1)"
            ) from error
    spec = importlib.util.find_spec("pytorch_pretrained_biggan")
    package = types.ModuleType(_PRIVATE_PACKAGE)
    package.__path__ = list(spec.submodule_search_locations)
    downloads = types.ModuleType(f"{_PRIVATE_PACKAGE}.file_utils")
    downloads.cached_path = _refuse_download
    downloads.PYTORCH_PRETRAINED_BIGGAN_CACHE = None
    sys.modules[package.__name__] = package
    sys.modules[downloads.__name__] = downloads
    return importlib.import_module(f"{_PRIVATE_PACKAGE}.model")


@dataclass(frozen=True)
class BigGANContext:
    """What both halves of a split BigGAN are conditioned on.

    ``class_vector``: (1 or N, num_classes) class weights (one-hot for a keyword or index); a single row
    serves the whole batch. ``truncation``: in (0, 1], selects the batch-norm statistics. ``inputs``: the
    latent noise z (N, z_dim) the activation was encoded from; ``decode`` needs it, ``encode``/``forward``
    check their inputs against it when it is given.
    """

    class_vector: torch.Tensor
    truncation: float
    inputs: torch.Tensor | None = None


class BigGANGenerator(Generator):
    """BigGAN-deep as a split generator; ``inputs`` are latent noise vectors (N, z_dim).

    Images come out in [0, 1] as ``(tanh + 1) / 2``. Build it with ``load_biggan`` or from a loaded
    package ``BigGAN``, whose spectral norms are folded into plain weights here, in place (so the module
    behaves the same in train and eval mode and never updates power-iteration vectors).
    """

    name = "biggan"
    input_kind = "latent"

    def __init__(self, model: nn.Module):
        super().__init__()
        code = biggan_model_module()
        if not isinstance(model, code.BigGAN):
            raise GeneratorError(
                f"BigGANGenerator wraps a pytorch_pretrained_biggan BigGAN, got {type(model).__name__}"
            )
        for module in model.modules():
            if hasattr(module, "weight_orig"):
                nn.utils.remove_spectral_norm(module)
        self.biggan = model.eval()
        self.config = model.config
        self._layer_table, self._layer_sizes = _layer_table(model.generator.layers, code)

    # ----- interface -------------------------------------------------------------------------------

    def layers(self) -> Sequence[Layer]:
        return self._layer_table

    def make_context(
        self,
        *,
        keyword: str | Sequence[str] | None = None,
        class_index: int | Sequence[int] | None = None,
        class_vector: torch.Tensor | None = None,
        truncation: float = DEFAULT_TRUNCATION,
        inputs: torch.Tensor | None = None,
    ) -> BigGANContext:
        """Conditioning from exactly one of ``keyword`` (ImageNet name, or one per sample),
        ``class_index`` (int, or one per sample) or ``class_vector`` ((num_classes,) or
        (N, num_classes)); plus the truncation and, for ``decode``, the noise ``inputs``."""
        num_classes = self.config.num_classes
        exactly_one_condition(keyword=keyword, class_index=class_index, class_vector=class_vector)
        if keyword is not None:
            if num_classes != NUM_IMAGENET_CLASSES:
                raise GeneratorError(
                    f"keyword lookup needs a {NUM_IMAGENET_CLASSES}-class ImageNet model, this one has "
                    f"{num_classes} classes; pass class_index instead (on the command line, --keyword N)"
                )
            keywords = keyword_list(keyword)
            class_index = [imagenet_class_index(word) for word in keywords]
        if class_index is not None:
            class_vector = one_hot(class_index, num_classes)
        class_vector = check_class_vector(class_vector, num_classes)
        _check_truncation(truncation)
        if inputs is not None:
            inputs = self._check_noise(inputs, "inputs")
            if class_vector.shape[0] not in (1, inputs.shape[0]):
                raise GeneratorError(
                    f"class_vector has {class_vector.shape[0]} rows for a noise batch of {inputs.shape[0]}; "
                    "expected 1 row or one per sample"
                )
        return BigGANContext(class_vector=class_vector, truncation=float(truncation), inputs=inputs)

    def sample_inputs(
        self, n: int, seed: int, device: torch.device | str | None = None,
        truncation: float = DEFAULT_TRUNCATION,
    ) -> torch.Tensor:
        """``n`` noise vectors as BigGAN samples them: a normal truncated to [-2, 2], times
        ``truncation``. Drawn on the CPU from ``seed``, so the same on every device."""
        check_count_and_seed(n, seed)
        _check_truncation(truncation)
        generator = torch.Generator().manual_seed(int(seed))
        noise = torch.empty(n, self.config.z_dim, dtype=torch.float32)
        nn.init.trunc_normal_(noise, a=-NOISE_BOUND, b=NOISE_BOUND, generator=generator)
        return (noise * truncation).to(self._device() if device is None else device)

    def encode(self, inputs: torch.Tensor, layer: int | str, context: Any = None) -> torch.Tensor:
        """The activation Y at ``layer`` (N, C, H, W) for noise ``inputs`` (N, z_dim)."""
        target = self.resolve_layer(layer)
        _, condition, truncation = self._prepare(inputs, context)
        return self._run_layers(self._stem(condition), 0, target.index, condition, truncation)

    def decode(self, activation: torch.Tensor, layer: int | str, context: Any = None) -> torch.Tensor:
        """The image (N, 3, H, W) in [0, 1] rendered from ``activation`` at ``layer`` onwards."""
        target = self.resolve_layer(layer)
        context = self._check_context(context)
        if context.inputs is None:
            raise GeneratorError(
                "BigGAN's later blocks are conditioned on the noise z as well as the class; "
                "decode needs a context made with make_context(..., inputs=z)"
            )
        noise = self._check_noise(context.inputs, "context.inputs")
        self._check_activation(activation, target, noise.shape[0])
        condition = self._condition_vector(noise, context)
        total = len(self._layer_table)
        features = self._run_layers(activation, target.index, total, condition, context.truncation)
        return self._head(features, context.truncation)

    def forward(self, inputs: torch.Tensor, context: Any = None) -> torch.Tensor:
        """The image (N, 3, H, W) in [0, 1] for noise ``inputs`` (N, z_dim)."""
        _, condition, truncation = self._prepare(inputs, context)
        total = len(self._layer_table)
        features = self._run_layers(self._stem(condition), 0, total, condition, truncation)
        return self._head(features, truncation)

    # ----- network pieces --------------------------------------------------------------------------

    def _stem(self, condition: torch.Tensor) -> torch.Tensor:
        generator = self.biggan.generator
        features = generator.gen_z(condition)
        # gen_z's weights come from TensorFlow, so its output is laid out (N, H, W, C)
        channels = features.shape[1] // (STEM_SIZE * STEM_SIZE)
        features = features.view(condition.shape[0], STEM_SIZE, STEM_SIZE, channels)
        return features.permute(0, 3, 1, 2).contiguous()

    def _run_layers(self, features: torch.Tensor, start: int, stop: int, condition: torch.Tensor,
                    truncation: float) -> torch.Tensor:
        """Apply ``generator.layers[start:stop]`` (layers start+1 .. stop)."""
        code = biggan_model_module()
        for module in self.biggan.generator.layers[start:stop]:
            if isinstance(module, code.GenBlock):
                features = module(features, condition, truncation)
            else:
                features = module(features)
        return features

    def _head(self, features: torch.Tensor, truncation: float) -> torch.Tensor:
        generator = self.biggan.generator
        features = generator.relu(generator.bn(features, truncation))
        rgb = generator.conv_to_rgb(features)[:, :3]
        return (torch.tanh(rgb) + 1.0) / 2.0

    def _condition_vector(self, noise: torch.Tensor, context: BigGANContext) -> torch.Tensor:
        class_vector = context.class_vector.to(device=noise.device, dtype=noise.dtype)
        if class_vector.shape[0] not in (1, noise.shape[0]):
            raise GeneratorError(
                f"context.class_vector has {class_vector.shape[0]} rows for a noise batch of "
                f"{noise.shape[0]}; expected 1 row or one per sample"
            )
        embedding = self.biggan.embeddings(class_vector).expand(noise.shape[0], -1)
        return torch.cat((noise, embedding), dim=1)

    # ----- validation ------------------------------------------------------------------------------

    def _device(self) -> torch.device:
        return self.biggan.embeddings.weight.device

    def _prepare(self, inputs: torch.Tensor, context: Any) -> tuple[torch.Tensor, torch.Tensor, float]:
        context = self._check_context(context)
        noise = self._check_noise(inputs, "inputs")
        if context.inputs is not None and not (
            context.inputs.shape == noise.shape and torch.equal(context.inputs.to(noise.device), noise)
        ):
            raise GeneratorError(
                "inputs differ from the noise the context was made with; encode and decode would be "
                "conditioned on different z"
            )
        return noise, self._condition_vector(noise, context), context.truncation

    def _check_context(self, context: Any) -> BigGANContext:
        if not isinstance(context, BigGANContext):
            raise GeneratorError(
                "BigGAN needs a context from make_context(keyword=... | class_index=... | class_vector=...), "
                f"got {type(context).__name__}"
            )
        return context

    def _check_noise(self, noise: Any, what: str) -> torch.Tensor:
        z_dim = self.config.z_dim
        if not isinstance(noise, torch.Tensor) or noise.dim() != 2 or noise.shape[1] != z_dim:
            raise GeneratorError(f"{what} must be latent noise of shape (N, {z_dim}), got {describe(noise)}")
        weight = self.biggan.embeddings.weight
        if noise.dtype != weight.dtype:
            raise GeneratorError(f"{what} must have dtype {weight.dtype} like the model, got {noise.dtype}")
        if what == "inputs" and noise.device != weight.device:
            raise GeneratorError(f"{what} are on {noise.device} but the model is on {weight.device}")
        return noise.to(weight.device)

    def _check_activation(self, activation: Any, layer: Layer, batch: int) -> None:
        size = self._layer_sizes[layer.index - 1]
        expected = (batch, layer.channels, size, size)
        if not isinstance(activation, torch.Tensor) or tuple(activation.shape) != expected:
            raise GeneratorError(
                f"activation at layer {layer.index} ({layer.name}) must have shape {expected}, "
                f"got {describe(activation)}"
            )
        weight = self.biggan.embeddings.weight
        if activation.device != weight.device or activation.dtype != weight.dtype:
            raise GeneratorError(
                f"activation must be {weight.dtype} on {weight.device} like the model, "
                f"got {activation.dtype} on {activation.device}"
            )


def _layer_table(stages: nn.ModuleList, code: types.ModuleType) -> tuple[list[Layer], list[int]]:
    """One Layer per entry of ``generator.layers``, with the spatial size of its output."""
    table, sizes = [], []
    size, block_number = STEM_SIZE, 0
    for position, module in enumerate(stages):
        if isinstance(module, code.GenBlock):
            block_number += 1
            if module.up_sample:
                size *= 2
            table.append(Layer(position + 1, f"block{block_number}", module.conv_3.out_channels))
        else:
            table.append(Layer(position + 1, "attention", module.in_channels))
        sizes.append(size)
    return table, sizes


def _check_truncation(truncation: Any) -> None:
    if isinstance(truncation, bool) or not isinstance(truncation, numbers.Real) or not 0 < truncation <= 1:
        raise GeneratorError(f"truncation must be a number in (0, 1], got {truncation!r}")


def where_to_get_weights() -> str:
    example = "biggan-deep-256"
    return (
        f"expected a folder holding {CONFIG_FILE} and {WEIGHTS_FILE}, e.g. one of the official "
        f"pytorch-pretrained-biggan releases {', '.join(OFFICIAL_RELEASES)}: for {example} download "
        f"{RELEASE_URL.format(release=example, file='config.json')} and "
        f"{RELEASE_URL.format(release=example, file='pytorch_model.bin')} and save them as "
        f"{CONFIG_FILE} and {WEIGHTS_FILE}"
    )


# The config.json keys that shape the network (the package would fill a missing one with its 128 px
# model's value, making a wrong config look like a wrong weights file), and those it may default.
_ARCHITECTURE_KEYS = ("z_dim", "class_embed_dim", "channel_width", "num_classes", "layers", "attention_layer_position")
_CONFIG_DEFAULTS = {"output_dim": 128, "eps": 1e-4, "n_stats": 51}


def _config_problem(settings: Any) -> str | None:
    """What makes ``settings`` (a parsed config.json) unusable for the package's BigGAN, or None."""
    if not isinstance(settings, dict):
        return f"expected a JSON object, got {type(settings).__name__}"
    missing = [key for key in _ARCHITECTURE_KEYS if key not in settings]
    if missing:
        return f"missing keys {missing}"
    settings = {**_CONFIG_DEFAULTS, **settings}
    for key in ("output_dim", "z_dim", "class_embed_dim", "channel_width", "num_classes", "n_stats",
                "attention_layer_position"):
        value, least = settings[key], 0 if key == "attention_layer_position" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            return f"{key} must be an int >= {least}, got {value!r}"
    layers = settings["layers"]
    if not isinstance(layers, list) or not layers or not all(
            isinstance(layer, list) and len(layer) == 3 and isinstance(layer[0], bool)
            and all(isinstance(size, int) and not isinstance(size, bool) and size >= 1 for size in layer[1:])
            for layer in layers):
        return "layers must be a non-empty list of [upsample (bool), in (int >= 1), out (int >= 1)]"
    if settings["attention_layer_position"] > len(layers):
        return (f"attention_layer_position must be at most the number of layers, {len(layers)}, got "
                f"{settings['attention_layer_position']}")
    eps = settings["eps"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        return f"eps must be a positive number, got {eps!r}"
    # The package looks up the batch-norm statistics of truncation t at index t / (1 / (n_stats - 1)),
    # reading the entry after it unless the quotient is whole: at t = 1 the quotient must not exceed
    # n_stats - 1 (for 51, the releases' value, it is exactly 50).
    n_stats = settings["n_stats"]
    if n_stats < 2 or 1.0 / (1.0 / (n_stats - 1)) > n_stats - 1:
        return f"n_stats = {n_stats} does not fit the package's truncation lookup (51 does)"
    return None


def load_biggan(folder: str | Path, device: torch.device | str | None = None) -> BigGANGenerator:
    """Load BigGAN-deep from a local folder with ``config.json`` and ``pytorch_model.bin``.

    The state dict is read with ``torch.load(weights_only=True)`` and must match the configured model
    exactly (no missing or extra keys).
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise GeneratorError(f"BigGAN weights folder {str(folder)!r} {what}; {where_to_get_weights()}")
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise GeneratorError(f"{str(path)!r} is missing; {where_to_get_weights()}")

    code = biggan_model_module()
    try:
        with open(config_path, encoding="utf-8") as file:
            settings = json.load(file)
    except (OSError, ValueError) as error:
        raise GeneratorError(f"{str(config_path)!r} is not a readable JSON file: {error}") from error
    problem = _config_problem(settings)
    if problem:
        raise GeneratorError(f"{str(config_path)!r} is not a usable BigGAN config: {problem}")
    # float32 whatever torch's default dtype is: the spectral norms are folded in the model's dtype
    with global_rng_untouched():
        model = code.BigGAN(code.BigGANConfig.from_dict(settings)).float()

    state = read_state_dict(weights_path)
    load_state_exactly(model, state, f"{str(weights_path)!r} (for the BigGAN its {CONFIG_FILE} describes)")

    generator = BigGANGenerator(model)
    return generator if device is None else generator.to(device)

