"""pytest-benchmark cases: ``pytest benchmarks/ --benchmark-only`` (not part of the test suite).

The same inputs as ``python -m benchmarks``. Each fused case first asserts that it matches the
reference (the stroke cases on their first strokes, the flush case whole); the torch.topk baseline
runs on every device a fused case runs on.
"""

import pytest
import torch

import cpia_cuda
from cpia_cuda import _ops

from .inputs import correlated_activation
from .suite import topk_flush

STD = dict(brush=1, m=0.8, p=2, channel_cost=0.5, sigma=4.0, min_response=0.1)
BACKENDS = ["cpu"] + (["cuda"] if torch.cuda.is_available() and _ops.cuda_kernels_available() else [])


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("backend", BACKENDS)
def test_stroke_std(benchmark, backend):
    Y = correlated_activation((256, 64, 64)).to("cuda" if backend == "cuda" else "cpu")
    prefix = cpia_cuda.channel_stroke(Y.cpu(), 64, backend="reference", max_strokes=50, **STD)
    assert torch.equal(cpia_cuda.channel_stroke(Y, 64, backend=backend, max_strokes=50, **STD).order.cpu(),
                       prefix.order)

    def run():
        result = cpia_cuda.channel_stroke(Y, 64, backend=backend, max_strokes=2000, **STD)
        _sync(backend)
        return result

    assert benchmark(run).num_strokes == 2000


def test_stroke_small_reference(benchmark):
    Y = correlated_activation((64, 32, 32))
    benchmark.pedantic(lambda: cpia_cuda.channel_stroke(Y, 16, backend="reference", max_strokes=200), rounds=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stroke_batch(benchmark, backend):
    Y = correlated_activation((64, 64, 32, 32), seed=1).to("cuda" if backend == "cuda" else "cpu")
    prefix = cpia_cuda.channel_stroke(Y.cpu(), 16, backend="reference", max_strokes=5)
    assert torch.equal(cpia_cuda.channel_stroke(Y, 16, backend=backend, max_strokes=5).order.cpu(), prefix.order)
    benchmark(lambda: (cpia_cuda.channel_stroke(Y, 16, backend=backend), _sync(backend)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_flush_std(benchmark, backend):
    Y = correlated_activation((512, 128, 128))
    reference = cpia_cuda.channel_flush(Y, 256, backend="reference")
    Y = Y.to("cuda" if backend == "cuda" else "cpu")
    assert torch.equal(cpia_cuda.channel_flush(Y, 256, backend=backend).cpu(), reference)
    benchmark(lambda: (cpia_cuda.channel_flush(Y, 256, backend=backend), _sync(backend)))


@pytest.mark.parametrize("device", BACKENDS)
def test_flush_std_topk_baseline(benchmark, device):
    Y = correlated_activation((512, 128, 128)).to(device)
    benchmark(lambda: (topk_flush(Y, 256), _sync(device)))
