"""Build of the cpia_cuda extension (against the torch installed: build with --no-build-isolation;
without torch only the commands that do not compile run, such as sdist).

The CUDA kernels are built when the CUDA toolkit's nvcc is found, else a CPU-only extension is
built. CPIA_CUDA=1 forces the CUDA build (failing without nvcc), CPIA_CUDA=0 forces CPU-only.
CPIA_DEBUG=1 builds with -O0 -g and debug-only assertions. With no GPU visible and
TORCH_CUDA_ARCH_LIST unset, the CUDA build targets sm_80 and sm_90 (+PTX for newer cards). Object
files stay in build/temp-* between builds, so a rebuild compiles only what changed.
"""

import glob
import os
import sys
import sysconfig

from setuptools import setup

# torch guesses CUDA_HOME from the nvcc on PATH, which can be a link outside the toolkit; prefer
# the standard install location when it is there.
if not os.environ.get("CUDA_HOME") and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

try:
    from torch.utils import cpp_extension  # reads CUDA_HOME at import
except ImportError:
    cpp_extension = None
# The commands that compile; the others (sdist, egg_info, --version, ...) run without torch, as an
# isolated source-distribution build does.
COMPILING_COMMANDS = {"build", "build_ext", "bdist", "bdist_wheel", "editable_wheel", "install", "develop"}

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"


def nvcc_found() -> bool:
    home = cpp_extension.CUDA_HOME
    return home is not None and os.path.exists(os.path.join(home, "bin", "nvcc"))


def cuda_wanted() -> bool:
    forced = os.environ.get("CPIA_CUDA")
    if forced is not None:
        if forced not in ("0", "1"):
            raise SystemExit(f"CPIA_CUDA must be 0 or 1, got {forced!r}")
        return forced == "1"
    return nvcc_found()


def configure_cuda_environment() -> None:
    if not nvcc_found():
        raise SystemExit(f"CPIA_CUDA=1 but no nvcc was found (CUDA_HOME={cpp_extension.CUDA_HOME}): set "
                         f"CUDA_HOME to a CUDA toolkit (e.g. /usr/local/cuda)")
    import torch

    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST


def build_ext_command():
    class BuildExtension(cpp_extension.BuildExtension):
        """torch's build_ext with its object files in one folder per Python and build kind, kept
        between builds (pip's editable install would otherwise compile everything in a new
        temporary folder)."""

        def finalize_options(self):
            super().finalize_options()
            kind = "cuda" if cuda_wanted() else "cpu"
            folder = f"temp-{sysconfig.get_platform()}-{sys.implementation.cache_tag}-{kind}"
            self.build_temp = os.path.join(ROOT, "build", folder)

    return BuildExtension


def extension():
    debug = os.environ.get("CPIA_DEBUG", "0") == "1"
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


if cpp_extension is None:
    if COMPILING_COMMANDS.intersection(sys.argv[1:]):
        raise SystemExit("building cpia_cuda needs torch installed first (it compiles against it): install "
                         "requirements.txt, then pip install --no-build-isolation .")
    setup()
else:
    setup(
        ext_modules=[extension()],
        cmdclass={"build_ext": build_ext_command()},
    )
