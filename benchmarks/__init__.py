"""Benchmark suite of cpia_cuda: the fused ops against the pure-PyTorch reference.

Run ``python -m benchmarks --help``.
"""
