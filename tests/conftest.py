import contextlib
import functools
import inspect
import platform

import pytest
import torch

from cpia_cuda import _ops, channel_stroke
from cpia_cuda.ops import _flush_op_args, _stroke_op_args, _stroke_result

CUDA_READY = torch.cuda.is_available() and _ops.cuda_kernels_available()
needs_cuda = pytest.mark.skipif(not CUDA_READY, reason="needs a CUDA GPU and a CUDA build of cpia_cuda")
# Where a GPU runs the CUDA kernels, their emulation adds only time.
needs_emulator = pytest.mark.skipif(platform.machine() != "x86_64" or CUDA_READY,
                                    reason="the SIMT emulator runs on x86-64 machines without a GPU")

DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]
# Fused backends: "cpu" and "cuda" run on the device of their name; "cuda-emulated" runs the CUDA
# kernels on the CPU under the SIMT emulator of tests/simt_emulator (their logic, not the GPU).
EMULATED = "cuda-emulated"
FUSED_BACKENDS = ["cpu", pytest.param("cuda", marks=needs_cuda), pytest.param(EMULATED, marks=needs_emulator)]


@contextlib.contextmanager
def default_dtype(dtype):
    """torch's default dtype set to ``dtype`` for the block (as a notebook may leave it)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@functools.cache
def emulated_kernels():
    """``torch.ops.cpia_emulated``: the CUDA kernels built for the SIMT emulator (compiled on first use)."""
    from simt_emulator.build import load_emulated_kernels

    return load_emulated_kernels()


def emulated_channel_stroke(Y, tau, schedule_seed=0, kernels=None, **kwargs):
    """cpia_cuda.channel_stroke on the emulated CUDA kernel; the emulator orders threads by schedule_seed.
    ``kernels``: another build of the emulated ops (default emulated_kernels())."""
    kernels = emulated_kernels() if kernels is None else kernels
    call = inspect.signature(channel_stroke).bind(Y, tau, **kwargs)
    call.apply_defaults()  # channel_stroke's defaults
    del call.arguments["backend"]
    args = _stroke_op_args(**call.arguments)
    kernels.set_schedule_seed(schedule_seed)
    return _stroke_result(args, kernels.channel_stroke(*args), batched=Y.dim() == 4)


def emulated_channel_flush(Y, tau, allowed=None, schedule_seed=0, kernels=None):
    """cpia_cuda.channel_flush on the emulated CUDA kernel (``kernels`` as for emulated_channel_stroke)."""
    kernels = emulated_kernels() if kernels is None else kernels
    kernels.set_schedule_seed(schedule_seed)
    kept = kernels.channel_flush(*_flush_op_args(Y, tau, allowed))
    return kept if Y.dim() == 4 else kept.squeeze(0)


class TinyPainter(torch.nn.Module):
    """A small image-to-image network with a nested submodule and an extra forward argument."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 4, 3, padding=1))
        self.head = nn.Conv2d(4, 3, 1)

    def forward(self, x, gain: float = 1.0):
        return torch.sigmoid(gain * self.head(torch.tanh(self.body(torch.relu(self.stem(x))))))


def random_stroke_case(seed):
    """A small random channel-stroke problem (Y (N, C, H, W), tau, keyword arguments): signed or
    tied responses, custom brushes, allowed regions, init masks and every stop limit, by seed."""
    g = torch.Generator().manual_seed(seed)
    pick = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))
    N, C, H, W = pick(1, 3), pick(1, 12), pick(1, 20), pick(1, 20)
    Y = torch.randn(N, C, H, W, generator=g)
    if seed % 4 == 0:
        Y = (Y * 2).round() / 2  # many exact ties
    if seed % 4 == 1:
        Y = Y.abs()
    tau = pick(1, C)
    kwargs = dict(
        brush=pick(0, 2), m=[0.5, 0.8, 1.0][seed % 3], p=pick(1, tau), channel_cost=[0.0, 0.5, 1.0][seed % 3],
        sigma=[0.7, 2.0, 4.0][(seed // 3) % 3], min_response=[0.0, 0.1, 0.5, None][(seed // 2) % 4],
    )
    if seed % 5 == 0:
        kwargs["brush"] = torch.rand(3, 5, generator=g) > 0.4
        kwargs["brush"][1, 2] = True
    if seed % 3 == 0:
        kwargs["allowed"] = torch.rand(N, H, W, generator=g) > 0.25
    if seed % 7 == 0:
        kwargs["init_mask"] = torch.rand(N, C, H, W, generator=g) > 0.85
    if seed % 6 == 0:
        kwargs["max_coverage"] = 0.6
    if seed % 8 == 0:
        kwargs["max_strokes"] = pick(0, 30)
    return Y, tau, kwargs
