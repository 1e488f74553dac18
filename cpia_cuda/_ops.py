"""Loading of the compiled ops and their fake (meta) implementations.

The schemas are declared in csrc/ops.cpp (namespace ``cpia``); CPU and CUDA kernels register
themselves. The fakes here let the ops run under FakeTensor / torch.compile: the stroke count is
data-dependent, so the stroke records get an unbacked size.
"""

from __future__ import annotations

import importlib

import torch
from torch.fx.experimental.symbolic_shapes import sym_and, sym_or

_EXTENSION_ERROR: ImportError | None = None
try:
    _C = importlib.import_module("cpia_cuda._C")
except ImportError as error:  # the package can still run its pure-PyTorch reference
    _C = None
    _EXTENSION_ERROR = error

STOP_REASONS = ("max_strokes", "max_coverage", "exhausted", "min_response")
STROKE_COLUMNS = ("channel", "row", "col", "pixels_switched_on", "channels_in_stroke")


def extension_available() -> bool:
    return _C is not None


def cuda_kernels_available() -> bool:
    """True if the extension was built with its CUDA kernels."""
    if _C is None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("cpia::channel_stroke", "CUDA")


def require_extension() -> None:
    if _C is None:
        raise RuntimeError(
            "the cpia_cuda C++ extension is not built, so only backend='reference' is available; build it with "
            "`pip install --no-build-isolation -e .` in the repository (error: " + str(_EXTENSION_ERROR) + ")"
        )


if _C is not None:

    def _check_same_device(Y, other, name):
        # The fakes also serve as the ops' Meta kernels, which run when any one argument is on "meta":
        # a Y on another device must get the kernels' error, not an uninitialised result.
        if other is not None and other.device != Y.device:
            raise RuntimeError(f"{name} must be on the same device as Y ({Y.device}), got {other.device}")

    def _check_shapes(Y, allowed, tau):
        # What decides the outputs' shapes, with the kernels' words (csrc/op_checks.h), so that a bad
        # call fails at trace time as it would at run time; the values are checked when the op runs.
        if Y.dim() != 4:
            raise RuntimeError(f"Y must be a 4-D tensor (N, C, H, W), got {Y.dim()}-D")
        if Y.dtype != torch.float32:
            raise RuntimeError(f"Y must be float32, got {Y.dtype}")
        if allowed.dtype != torch.bool:
            raise RuntimeError(f"allowed must be bool, got {allowed.dtype}")
        N, C, H, W = Y.shape
        # torch._check, not `if`: under torch.compile a size may be unknown until run time (unbacked),
        # and a check on it is then deferred to a run-time assertion rather than a failed trace.
        torch._check(allowed.dim() == 3 and sym_and(allowed.shape[0] == N, allowed.shape[1] == H,
                                                    allowed.shape[2] == W),
                     lambda: f"allowed must have shape (N, H, W) = ({N}, {H}, {W}), got {list(allowed.shape)}")
        _check_same_device(Y, allowed, "allowed")
        torch._check(sym_or(C != 0, tau >= 1), lambda: f"tau must be >= 1, got {tau}")
        torch._check(sym_or(C == 0, sym_and(tau >= 1, tau <= C)), lambda: f"tau must be in [1, C] = [1, {C}], got {tau}")

    @torch.library.register_fake("cpia::channel_flush")
    def _channel_flush_fake(Y, allowed, tau):
        _check_shapes(Y, allowed, tau)
        return Y.new_empty(Y.shape, dtype=torch.bool)  # the kernels return contiguous outputs

    @torch.library.register_fake("cpia::channel_stroke")
    def _channel_stroke_fake(
        Y, allowed, init_mask, brush, distance_weights, tau, m, p, min_response, max_strokes, max_coverage
    ):
        _check_shapes(Y, allowed, tau)
        if init_mask is not None:
            torch._check(init_mask.dim() == 4 and sym_and(*(a == b for a, b in zip(init_mask.shape, Y.shape))),
                         lambda: f"init_mask must have the shape of Y {list(Y.shape)}, got {list(init_mask.shape)}")
        _check_same_device(Y, init_mask, "init_mask")
        _check_same_device(Y, distance_weights, "distance_weights")
        total_strokes = torch.library.get_ctx().new_dynamic_size()
        order = Y.new_empty(Y.shape, dtype=torch.int32)
        strokes = Y.new_empty((total_strokes, len(STROKE_COLUMNS)), dtype=torch.int32)
        stroke_counts = Y.new_empty((Y.shape[0],), dtype=torch.int64)
        stop_reasons = Y.new_empty((Y.shape[0],), dtype=torch.int32)
        channel_counts = Y.new_empty((Y.shape[0], Y.shape[1]), dtype=torch.int64)
        return order, strokes, stroke_counts, stop_reasons, channel_counts
