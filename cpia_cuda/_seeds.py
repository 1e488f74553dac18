"""The seeds the package takes (GAN latents, planners, paint()): ints in [0, MAX_SEED]; and the
caller's random stream, which the package leaves alone."""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

# torch.Generator seeds are 64-bit; non-negative, so that a seed means the same to numpy too.
MAX_SEED = 2**63 - 1


def is_seed(value: object) -> bool:
    """An int (numpy ints too, not bools) in [0, MAX_SEED]."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and 0 <= value <= MAX_SEED


def check_seed(value: object, error: type[Exception], name: str = "seed") -> int:
    """``value`` as a plain int if it is a seed; else ``error`` (the caller's exception class) naming ``name``."""
    if not is_seed(value):
        raise error(f"{name} must be an int in [0, 2^63 - 1], got {value!r}")
    return int(value)  # type: ignore[arg-type]


# The random draws a network's constructor makes: torch.nn.init's fills and the tensor methods and
# factories under them; each takes a generator= argument.
_RANDOM_DRAWS = frozenset([
    *(getattr(torch.nn.init, name) for name in ("uniform_", "normal_", "trunc_normal_", "xavier_uniform_",
                                                 "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
                                                 "orthogonal_", "sparse_")),
    *(getattr(torch.Tensor, name) for name in ("uniform_", "normal_", "random_", "bernoulli_", "exponential_",
                                                "geometric_", "log_normal_", "cauchy_")),
    torch.rand, torch.randn, torch.randint, torch.randperm, torch.normal, torch.bernoulli, torch.multinomial,
])


class global_rng_untouched(TorchFunctionMode):
    """Within the block, the random draws of this thread that name no generator come from a private
    one: a network built only to receive loaded weights fills its throw-away initial weights from
    it, so the global stream, which the caller and other threads draw from, does not move. (Saving
    and restoring the global state instead would hand another thread's draws out a second time.)"""

    def __init__(self):
        super().__init__()
        self._generators: dict[torch.device, torch.Generator] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _RANDOM_DRAWS and kwargs.get("generator") is None:
            device = self._device_of(args, kwargs)
            if device.type != "meta":  # a meta tensor draws nothing
                kwargs["generator"] = self._generator(device)
        return func(*args, **kwargs)

    @staticmethod
    def _device_of(args: tuple, kwargs: dict[str, Any]) -> torch.device:
        tensor = next((value for value in args if isinstance(value, torch.Tensor)), None)
        if tensor is not None:
            return tensor.device
        return torch.device(kwargs.get("device") or torch.get_default_device())

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(0)
        return self._generators[device]
