"""The seeds the package takes (GAN latents, planners, paint()): ints in [0, MAX_SEED]."""

import numbers

# torch.Generator seeds are 64-bit; non-negative, so that a seed means the same to numpy too.
MAX_SEED = 2**63 - 1


def is_seed(value: object) -> bool:
    """An int (numpy ints too, not bools) in [0, MAX_SEED]; each caller raises its own error."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and 0 <= value <= MAX_SEED
