import pytest
import torch

from cpia_cuda import _ops

CUDA_READY = torch.cuda.is_available() and _ops.cuda_kernels_available()
needs_cuda = pytest.mark.skipif(not CUDA_READY, reason="needs a CUDA GPU and a CUDA build of cpia_cuda")

DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]
# fused backends; each runs on the device of its name
FUSED_BACKENDS = ["cpu", pytest.param("cuda", marks=needs_cuda)]
