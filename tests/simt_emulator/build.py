"""Builds the CUDA kernels of csrc/cuda as a CPU library that runs them under the SIMT emulator (simt.h).

The .cu files (and the emulator's own test kernels) are compiled as they are, except for three
mechanical rewrites that C++ cannot express: kernel launches ``k<<<grid, block, shared, stream>>>(args)``
become ``::simt::launch(k, grid, block, shared, stream)(args)``, ``extern __shared__`` arrays become
the emulator's dynamic shared memory, and the ``TORCH_LIBRARY_IMPL(cpia, CUDA, ...)`` registrations
are replaced by ops of the namespace ``cpia_emulated`` (so both can live in one process). Line
numbers are kept, so compiler errors and barrier lines point into the original files. Headers the
sources include are tracked by the build (ninja), so an edit to paint_rules.h rebuilds it too."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

import torch
import torch.utils.cpp_extension

EMULATOR = Path(__file__).resolve().parent
REPOSITORY = EMULATOR.parents[1]
KERNEL_SOURCES = tuple(REPOSITORY / "csrc" / "cuda" / name for name in ("channel_stroke_cuda.cu", "channel_flush_cuda.cu"))
SELF_TEST_SOURCE = EMULATOR / "self_test_kernels.cu"  # registers its own ops

LAUNCH = re.compile(r"(\w+)<<<(.*?)>>>\(", re.DOTALL)
DYNAMIC_SHARED = re.compile(r"extern __shared__ (\w+) (\w+)\[\];")
# An op's host code, run here on the CPU, stands in for device work too (the CUDA op's torch
# reductions): it runs in the GPU's floating-point mode, denormals kept whatever the caller's
# torch.set_flush_denormal, as the kernels' fibers do (simt.h).
ON_DEVICE = """
template <auto Op> struct OnDevice;
template <typename Result, typename... Args, Result (*Op)(Args...)>
struct OnDevice<Op> {
  static Result call(Args... args) {
    const cpia::DenormalsKept float_mode;
    return Op(args...);
  }
};
"""
REGISTRATION = re.compile(r"TORCH_LIBRARY_IMPL\(cpia, CUDA, m\) \{ m\.impl\(\"(\w+)\", &(\w+)\); \}")


def emulated_source() -> str:
    """One translation unit: the emulator, then every CUDA source rewritten, then the op definitions."""
    parts = ["#include <ATen/ATen.h>", "#include <torch/library.h>", '#include "simt.h"', '#include "cpu/float_mode.h"']
    definitions = []
    for path in KERNEL_SOURCES + (SELF_TEST_SOURCE,):
        text = path.read_text()
        text, launches = LAUNCH.subn(r"::simt::launch(\1, \2)(", text)
        text = DYNAMIC_SHARED.sub(r"\1* \2 = ::simt::dynamic_shared<\1>();", text)
        registered = REGISTRATION.findall(text)
        text = REGISTRATION.sub("", text)
        if launches == 0 or (path != SELF_TEST_SOURCE and not registered):
            raise RuntimeError(f"{path}: found {launches} kernel launches and {len(registered)} op registrations; "
                               "update tests/simt_emulator/build.py to the file's new form")
        definitions += [f'  m.def("{op}", &OnDevice<&cpia::{function}>::call);' for op, function in registered]
        parts += [f'#line 1 "{path}"', text]
    parts += [ON_DEVICE, "TORCH_LIBRARY(cpia_emulated, m) {", *definitions,
              '  m.def("set_schedule_seed", [](int64_t seed) { ::simt::schedule_seed() = static_cast<uint64_t>(seed); });',
              '  m.def("block_barriers", []() { return static_cast<int64_t>(::simt::block_barriers_released()); });',
              '  m.def("warp_barriers", []() { return static_cast<int64_t>(::simt::warp_barriers_released()); });',
              "}"]
    return "\n".join(parts) + "\n"


def load_emulated_kernels(race_check: bool = False):
    """Compiles (once per source version) and loads the emulated kernels; returns ``torch.ops.cpia_emulated``.

    ``race_check`` builds them under ThreadSanitizer (simt.h, race_check.py): the process must have
    ThreadSanitizer's runtime loaded first (``LD_PRELOAD``)."""
    source = emulated_source()
    # Few stroke records per launch and few blocks in the set-up grids, so that the emulated runs go on
    # over many launches and the set-up kernels loop over their work.
    cflags = ["-DCPIA_CUDA_STROKE_RECORDS_PER_LAUNCH=7", "-DCPIA_CUDA_SETUP_GRID_BLOCKS=3"]
    cflags += ["-O1", "-g", "-fsanitize=thread"] if race_check else ["-O2"]
    digest = hashlib.sha256(source.encode() + (EMULATOR / "simt.h").read_bytes() + " ".join(cflags).encode()
                            ).hexdigest()[:12]
    build_dir = REPOSITORY / "build" / "simt_emulator" / digest
    build_dir.mkdir(parents=True, exist_ok=True)
    source_path = build_dir / "emulated_kernels.cpp"
    if not source_path.exists() or source_path.read_text() != source:
        source_path.write_text(source)
    # ninja from the interpreter's own environment, where PATH does not name it (a venv not activated)
    scripts = str(Path(sys.executable).parent)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([scripts, os.environ.get("PATH", "")])
    torch.utils.cpp_extension.load(
        name=f"cpia_emulated_{digest}",
        sources=[str(source_path)],
        extra_include_paths=[str(EMULATOR / "include"), str(EMULATOR), str(REPOSITORY / "csrc" / "cuda"),
                             str(REPOSITORY / "csrc")],
        extra_cflags=cflags,
        extra_ldflags=["-fsanitize=thread"] if race_check else [],
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=False,
    )
    return torch.ops.cpia_emulated
