"""How much memory a painting needs, and whether the device has it.

The estimate has four parts:

* the painting state at the operating layer, ``PER_ELEMENT_BYTES`` per element of C*h*w: the step
  activation and the painted activation (float32 each), the global and per-step stroke order (int32
  each), the bool masks (painted, flush comparison, allowed/init copies inside the op), and the
  stroke op's own working copies (on the CPU a tile-major copy of the activation and, for p > 1, a
  per-location channel tree: 9 bytes; on CUDA about 1.5 bytes, and a stroke buffer of at most
  80 MB that is emptied between launches);
* the generator's working set at full size: the peak bytes of the tensors that ``forward`` holds at
  once on a small probe (counted op by op under a dispatch mode; on the CPU a convolution counts a
  transient copy of the larger of its input and output too), scaled by the area ratio;
* the frame batch: ``frame_batch`` frames (no more than there are frames) at the preview size (at
  full size for a generator whose decode needs the size encode produced), each ``FRAME_FACTOR``
  times the working set of a decode from the operating layer, counted on the probe alike;
* the kept frames: every progressive frame and stroke-map frame of the result, float32 RGB at the
  preview size (``KEPT_FRAME_BYTES_PER_PIXEL``), in host memory whatever the device. With ``every=k``
  their number is known only after the strokes: the pipeline checks them again then.

It is an estimate (allocator overhead and fragmentation come on top); it is meant to refuse what
clearly cannot fit before minutes of work, not to promise that what passes fits.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..generators.base import Generator, Layer
from .render import preview_shape

PER_ELEMENT_BYTES = 29
# A frame holds its decode's working set and, beside it, its masked activation, opacity and
# composite. Measured on the CPU (multistyle26, 512 and 1024 px, batches of 8): 1.26-1.43x the
# decode as counted there (with its convolutions' copies), 1.8-2.3x the decode counted without
# them, as it is on a GPU.
FRAME_FACTOR = {"cpu": 1.5, "other": 2.0}
# A progressive frame and its stroke map, float32 RGB each, per preview pixel.
KEPT_FRAME_BYTES_PER_PIXEL = 2 * 3 * 4
_PROBE_SIDE = 128
GIB = 1024 ** 3


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs (``total``) by part, and what the device has free (None if unknown).

    ``kept_frames`` (the result's frames and stroke maps) live in host memory: on a CPU run they are
    part of ``total``, on a GPU run they are held against ``host_available``."""

    device: str
    activation_shape: tuple[int, int, int]
    painting_state: int
    generator_working_set: int
    frame_batch: int
    available: int | None
    kept_frames: int = 0
    host_available: int | None = None

    @property
    def on_host(self) -> bool:
        return _is_host(self.device)

    @property
    def total(self) -> int:
        kept = self.kept_frames if self.on_host else 0
        return self.painting_state + self.generator_working_set + self.frame_batch + kept

    @property
    def fits(self) -> bool:
        fits_device = self.available is None or self.total <= self.available
        fits_host = self.on_host or self.host_available is None or self.kept_frames <= self.host_available
        return fits_device and fits_host

    def describe(self) -> str:
        c, h, w = self.activation_shape
        parts = (f"activation {c}x{h}x{w}: {self.painting_state / GIB:.2f} GiB, generator at full size: "
                 f"{self.generator_working_set / GIB:.2f} GiB, frame batch: {self.frame_batch / GIB:.2f} GiB")
        kept = f"kept frames: {self.kept_frames / GIB:.2f} GiB"
        if self.on_host:
            return (f"memory estimate on {self.device}: {self.total / GIB:.2f} GiB ({parts}, {kept}); "
                    f"available: {_gib(self.available)}")
        return (f"memory estimate on {self.device}: {self.total / GIB:.2f} GiB ({parts}); available: "
                f"{_gib(self.available)}; {kept} of host memory, available: {_gib(self.host_available)}")


def _is_host(device: torch.device | str) -> bool:
    return torch.device(device).type == "cpu"


def _gib(size: int | None) -> str:
    return "unknown" if size is None else f"{size / GIB:.2f} GiB"


def kept_frames_bytes(frames: int, preview: tuple[int, int]) -> int:
    """Bytes of ``frames`` progressive frames and as many stroke maps at the ``preview`` (H, W) size."""
    return frames * preview[0] * preview[1] * KEPT_FRAME_BYTES_PER_PIXEL


def available_memory(device: torch.device | str) -> int | None:
    """Free bytes on ``device``: on CUDA what the driver has free (``mem_get_info``) plus what torch's
    caching allocator holds unused; on the CPU psutil, else /proc/meminfo; None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        cached_unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(torch.cuda.mem_get_info(device)[0]) + int(cached_unused)
    if device.type != "cpu":
        return None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class _PeakLiveBytes(TorchDispatchMode):
    """Counts the bytes of the tensor storages that the ops run under it create and that are still
    alive, and keeps the peak: the working set of a run, functional ops, the insides of composite
    ones and TorchScript included."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Nothing here is compiled; without this torch wraps __torch_dispatch__ to keep its compiler
        # out, importing that compiler (seconds) on the first call.
        return False

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._sizes: dict[int, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        # An output on the storage of an argument (a view of a weight, an op in place) is no new memory.
        held = {storage.data_ptr() for storage in map(_storage_of, tree_flatten((args, kwargs))[0]) if storage}
        for storage in map(_storage_of, tree_flatten(output)[0]):
            if storage is None or storage.data_ptr() in held or storage.data_ptr() in self._sizes:
                continue
            key = storage.data_ptr()
            self._sizes[key] = storage.nbytes()
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._freed, key)
        if func is torch.ops.aten.convolution.default and args[0].device.type == "cpu":
            # oneDNN convolves in its blocked layout: beside the output it holds a copy of the larger
            # of input and output for the length of the call (measured on multistyle26's convolutions:
            # the forward's resident peak at 4096 px is 6.52 GiB, this count 6.63, without it 4.56;
            # other shapes, transposed convolutions say, can hold more)
            self.peak = max(self.peak, self.live + max(args[0].nbytes, output.nbytes))
        return output

    def _freed(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)


def _storage_of(value: Any) -> torch.UntypedStorage | None:
    """The storage of a dense tensor that holds memory; None for anything else (sparse, meta, empty)."""
    if not isinstance(value, torch.Tensor) or value.layout != torch.strided or value.is_meta:
        return None
    storage = value.untyped_storage()
    return storage if storage.nbytes() > 0 else None


@torch.no_grad()
def working_set(run: Callable[[], Any]) -> int:
    """Peak bytes of the tensors ``run()`` creates and holds at once (its inputs and weights not
    included)."""
    counter = _PeakLiveBytes()
    with counter:
        run()
    return counter.peak


def probe_size(height: int, width: int) -> tuple[tuple[int, int], float]:
    """The size of a probe image for an image of (height, width), its long side about _PROBE_SIDE,
    and the area ratio full / probe by which a probe's measurement is scaled."""
    scale = min(1.0, _PROBE_SIDE / max(height, width))
    size = (max(8, round(height * scale)), max(8, round(width * scale)))
    return size, (height * width) / (size[0] * size[1])


def _probe_image(image: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``image`` (1, 3, H, W) shrunk to the probe size, and the area ratio full / probe."""
    size, area_ratio = probe_size(*image.shape[-2:])
    probe = F.interpolate(image, size=size, mode="area") if size != tuple(image.shape[-2:]) else image
    return probe, area_ratio


def estimate_memory(generator: Generator, inputs: torch.Tensor, context: Any, layer: Layer, *,
                    preview_size: int | None, frame_batch: int, kept_frames: int = 0) -> MemoryEstimate:
    """Estimate the memory of painting ``inputs`` (a (1, 3, H, W) image or a latent) at ``layer``.

    ``preview_size`` is the long side of the progressive frames (None: the default), ``frame_batch``
    the frames decoded at once, ``kept_frames`` the frames the result keeps (0 when not known yet).
    """
    if generator.input_kind == "image":
        probe, area_ratio = _probe_image(inputs)
    else:
        probe, area_ratio = inputs, 1.0
    with torch.no_grad():
        probe_activation = generator.encode(probe, layer.index, context)
    channels, height, width = probe_activation.shape[1:]
    height, width = math.ceil(height * math.sqrt(area_ratio)), math.ceil(width * math.sqrt(area_ratio))
    output_sizes: list[tuple[int, int]] = []
    full_working = int(working_set(lambda: output_sizes.append(generator.forward(probe, context).shape[-2:]))
                       * area_ratio)
    image_size = tuple(inputs.shape[-2:]) if generator.input_kind == "image" else tuple(output_sizes[0])
    preview = preview_shape(image_size, preview_size)
    decoding = working_set(lambda: generator.decode(probe_activation, layer.index, context)) * area_ratio
    frame_scale = (preview[0] * preview[1]) / (image_size[0] * image_size[1]) if generator.decodes_any_size else 1.0
    frame_factor = FRAME_FACTOR["cpu" if _is_host(inputs.device) else "other"]
    return MemoryEstimate(
        device=str(inputs.device),
        activation_shape=(channels, height, width),
        painting_state=PER_ELEMENT_BYTES * channels * height * width,
        generator_working_set=full_working,
        frame_batch=int(frame_batch * decoding * frame_factor * frame_scale),
        available=available_memory(inputs.device),
        kept_frames=kept_frames_bytes(kept_frames, preview),
        host_available=None if _is_host(inputs.device) else available_memory("cpu"),
    )
