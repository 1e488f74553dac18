import pytest
import torch

from cpia_cuda import _ops

CUDA_READY = torch.cuda.is_available() and _ops.cuda_kernels_available()
needs_cuda = pytest.mark.skipif(not CUDA_READY, reason="needs a CUDA GPU and a CUDA build of cpia_cuda")

DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]
# fused backends; each runs on the device of its name
FUSED_BACKENDS = ["cpu", pytest.param("cuda", marks=needs_cuda)]


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
