"""The devices the package takes (``device=`` of paint, replay, load_generator, the planners, --device)."""

from __future__ import annotations

import torch


def device_problem(device: object, *, name: str = "device", needs_kernels: bool = True) -> str | None:
    """Why ``device`` cannot be used here, as a message about the argument ``name``, or None if it can:
    cpu, or cuda / cuda:N with a GPU of that index and, where ``needs_kernels``, this build's CUDA
    kernels."""
    from . import _ops

    try:
        parsed = torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        return f"{name}: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}"
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            return f"{name} {device!r}: no CUDA device is available"
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            return f"{name} {device!r}: expected a CUDA device index below {torch.cuda.device_count()}"
        if needs_kernels and not _ops.cuda_kernels_available():
            return (f"{name} {device!r}: this build of cpia_cuda has no CUDA kernels (built without the CUDA "
                    "toolkit); use the CPU, or rebuild with CPIA_CUDA=1")
    return None
