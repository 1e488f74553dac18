"""Validation and weight-loading helpers shared by the GAN generators (BigGAN, eye DCGAN)."""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .._seeds import check_seed
from .._weights import load_failure_reason
from .base import GeneratorError


def describe(value: Any) -> str:
    """A tensor's shape, or a non-tensor's type name, for error messages."""
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def keyword_list(keyword: Any) -> list[Any]:
    """One keyword or a sequence of them, as a list (each element is checked by its lookup)."""
    if isinstance(keyword, str):
        return [keyword]
    if isinstance(keyword, (bytes, bytearray)) or not isinstance(keyword, Sequence):
        raise GeneratorError(f"keyword must be a string or a sequence of strings, got {type(keyword).__name__}")
    return list(keyword)


def one_hot(class_index: int | Sequence[int], num_classes: int) -> torch.Tensor:
    """(K, num_classes) one-hot rows for one class index or a sequence of K of them."""
    if isinstance(class_index, (torch.Tensor, np.ndarray)):
        class_index = class_index.tolist()  # a 0-d one gives an int
    if not isinstance(class_index, (numbers.Integral, Sequence)) or isinstance(class_index, (str, bytes)):
        raise GeneratorError(f"class_index must be an integer or a sequence of them, got {class_index!r}")
    indices = [class_index] if isinstance(class_index, numbers.Integral) else list(class_index)
    if not indices:
        raise GeneratorError("class_index must name at least one class, got an empty sequence")
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= index < num_classes:
            raise GeneratorError(f"class_index must be an integer in [0, {num_classes}), got {index!r}")
    vector = torch.zeros(len(indices), num_classes, dtype=torch.float32)
    vector[torch.arange(len(indices)), torch.tensor([int(i) for i in indices])] = 1.0
    return vector


def check_class_vector(class_vector: Any, num_classes: int) -> torch.Tensor:
    """A finite (num_classes,) or (K, num_classes) tensor, returned as float32 (K, num_classes)."""
    if not isinstance(class_vector, torch.Tensor) or class_vector.dim() not in (1, 2) \
            or class_vector.shape[-1] != num_classes or class_vector.numel() == 0:
        raise GeneratorError(
            f"class_vector must have shape ({num_classes},) or (N, {num_classes}), "
            f"got {describe(class_vector)}"
        )
    if not torch.isfinite(class_vector).all():
        raise GeneratorError("class_vector must be finite")
    return class_vector.detach().reshape(-1, num_classes).float()


def exactly_one_condition(**named: Any) -> str:
    """The name of the single argument that is not None; an error when none or several are given."""
    given = [name for name, value in named.items() if value is not None]
    if len(given) != 1:
        raise GeneratorError(
            f"make_context needs exactly one of {', '.join(named)}, "
            f"got {', '.join(given) if given else 'none'}"
        )
    return given[0]


def check_count_and_seed(n: Any, seed: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise GeneratorError(f"n must be a non-negative integer, got {n!r}")
    check_seed(seed, GeneratorError)


def read_state_dict(path: Path) -> Mapping[str, Any]:
    """``torch.load(weights_only=True)`` onto the CPU, with loading failures as GeneratorError."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for unreadable or unsafe files
        raise GeneratorError(
            f"{str(path)!r} is not a readable PyTorch state dict: {load_failure_reason(error, path)}") from error
    if not isinstance(state, Mapping):
        raise GeneratorError(f"{str(path)!r} must hold a state dict, got {type(state).__name__}")
    return state


def load_state_exactly(model: nn.Module, state: Mapping[str, Any], source: str) -> None:
    """Load ``state`` into ``model``, requiring the same keys and shapes (errors name the offenders)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise GeneratorError(
            f"{source} does not fit the model: missing keys {_first(missing)}, "
            f"unexpected keys {_first(unexpected)}"
        )
    for key, tensor in expected.items():
        if not isinstance(state[key], torch.Tensor) or state[key].shape != tensor.shape:
            raise GeneratorError(
                f"{source}: {key} has shape {describe(state[key])}, the model expects {tuple(tensor.shape)}"
            )
    model.load_state_dict(state, strict=True)


def _first(keys: list[str], limit: int = 5) -> str:
    return str(keys[:limit])[:-1] + (", ...]" if len(keys) > limit else "]")
