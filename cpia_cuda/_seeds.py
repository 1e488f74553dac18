"""The seeds the package takes (GAN latents, planners, paint()): ints in [0, MAX_SEED]; and the
caller's random stream, which the package leaves alone."""

from __future__ import annotations

import contextlib
import numbers
from typing import Iterator

import torch

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


@contextlib.contextmanager
def global_rng_untouched() -> Iterator[None]:
    """Restore torch's global CPU random state after the block. A network built only to receive
    loaded weights draws its throw-away initial weights from that stream, and what the caller
    draws next must not depend on whether a painting ran."""
    with torch.random.fork_rng(devices=[]):
        yield
