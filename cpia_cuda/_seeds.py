"""The seeds the package takes (GAN latents, planners, paint()): ints in [0, MAX_SEED]."""

# torch.Generator seeds are 64-bit; non-negative, so that a seed means the same to numpy too.
MAX_SEED = 2**63 - 1
