"""Build of the cpia_cuda extension.

The CUDA kernels are built when the CUDA toolkit is found, else a CPU-only extension is built.
CPIA_CUDA=1 forces the CUDA build (failing without a toolkit), CPIA_CUDA=0 forces CPU-only.
DEBUG=1 builds with -O0 -g and debug-only assertions. With no GPU visible and
TORCH_CUDA_ARCH_LIST unset, the CUDA build targets sm_80 and sm_90 (+PTX for newer cards).
"""

import glob
import os

from setuptools import setup

# torch guesses CUDA_HOME from the nvcc on PATH, which can be a link outside the toolkit; prefer
# the standard install location when it is there.
if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

from torch.utils import cpp_extension  # noqa: E402  (reads CUDA_HOME at import)

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"


def cuda_wanted() -> bool:
    forced = os.environ.get("CPIA_CUDA")
    if forced is not None:
        if forced not in ("0", "1"):
            raise SystemExit(f"CPIA_CUDA must be 0 or 1, got {forced!r}")
        return forced == "1"
    return cpp_extension.CUDA_HOME is not None


def configure_cuda_environment() -> None:
    if cpp_extension.CUDA_HOME is None:
        raise SystemExit("CPIA_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME (e.g. /usr/local/cuda)")
    import torch

    if "TORCH_CUDA_ARCH_LIST" not in os.environ and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST


def extension():
    debug = os.environ.get("DEBUG", "0") == "1"
    optimise = ["-O0", "-g", "-UNDEBUG"] if debug else ["-O3"]  # -UNDEBUG: debug-only assertions on
    sources = [os.path.join("csrc", "ops.cpp")] + sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    # -fopenmp: at::parallel_for only runs in parallel in code compiled with OpenMP (the library
    # then uses the libgomp that torch has loaded).
    cxx_flags = optimise + ["-ffp-contract=off", "-fopenmp"]
    with_cuda = cuda_wanted()
    if with_cuda:
        configure_cuda_environment()
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        nvcc_flags = optimise + ["--fmad=false", "-lineinfo"]
        build = cpp_extension.CUDAExtension
        flags = {"cxx": cxx_flags, "nvcc": nvcc_flags}
    else:
        build = cpp_extension.CppExtension
        flags = {"cxx": cxx_flags}
    print(f"cpia_cuda: building the {'CUDA + CPU' if with_cuda else 'CPU-only'} extension", flush=True)
    return build(
        name="cpia_cuda._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args=flags,
        extra_link_args=["-fopenmp"],
    )


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
)
