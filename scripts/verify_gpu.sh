#!/usr/bin/env bash
# Verifies cpia_cuda on a machine with an NVIDIA GPU and the CUDA toolkit: builds the extension
# there, runs the whole test suite (the CUDA cases included: CPU-vs-CUDA and reference-vs-CUDA
# equivalence, opcheck, generators and the painting pipeline on the device), then the benchmarks
# with the reference on the GPU, and writes the logs and report.md to OUTDIR.
#
#   [CPIA_COMMIT=HASH] scripts/verify_gpu.sh OUTDIR [--wheels DIR] [benchmark options]
#
# Uses the machine's own python3 and torch; needs setuptools, ninja, pytest, numpy. Packages the
# machine lacks can come as wheels in DIR (scripts/fetch_gpu_wheels.sh makes that folder on a
# machine with a package index); they are installed into a temporary folder, not into the system
# (setuptools only where the machine's is older than pyproject.toml's licence field needs), and
# OUTDIR holds only the results: gpu.txt, build.log, tests.log, tests.xml, benchmarks.log,
# report.md (the benchmark table, then the tests' summary line). Tests whose packages are missing
# skip and say why (pytest -rs). The report names the commit from git, or from CPIA_COMMIT where
# the tree is a copy without .git. Each stage has a time limit in seconds (a hung kernel ends its
# stage, not the run): BUILD_TIMEOUT (420), TESTS_TIMEOUT (420), BENCHMARKS_TIMEOUT (300); a test
# that runs for 2 minutes has its stack dumped to tests.log.
set -euo pipefail
usage="usage: scripts/verify_gpu.sh OUTDIR [--wheels DIR] [benchmark options]"
out=${1:?$usage}
shift
wheels=""
benchmark_options=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--wheels" ]; then
    wheels=${2:?--wheels needs a folder}
    shift 2
  else
    benchmark_options+=("$1")
    shift
  fi
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
# A stage cut short must not leave an earlier run's file in its place.
rm -f "$out"/{gpu.txt,build.log,tests.log,tests.xml,benchmarks.log,report.md,scaling.png}
[ -z "$wheels" ] || wheels=$(cd "$wheels" && pwd)
cd "$(dirname "$(readlink -f "$0")")/.."
python=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
started=$SECONDS
stage() { echo "== $1 (at $((SECONDS - started)) s)"; }

export CPIA_COMMIT=${CPIA_COMMIT:-$(git describe --always --dirty --abbrev=7 2>/dev/null || echo unknown)}
{  # a record only: what is missing is named here, and the checks below decide
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "nvidia-smi: failed"
  "$python" -c "import sys, torch
try:
    import setuptools
    setuptools_version = setuptools.__version__
except ImportError:
    setuptools_version = 'missing'
print('python', sys.version.split()[0], '| torch', torch.__version__, '(CUDA', str(torch.version.cuda) + ')',
      '| setuptools', setuptools_version)
print('GPU seen by torch:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none',
      '| compute capability', torch.cuda.get_device_capability(0) if torch.cuda.is_available() else '-')" ||
    echo "python: cannot import torch"
  { nvcc --version || "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" --version; } 2>/dev/null | grep release ||
    echo "nvcc: not found (on PATH or in CUDA_HOME)"
  echo "commit $CPIA_COMMIT"
} | tee "$out/gpu.txt"
"$python" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'"
if [ -n "$wheels" ]; then
  stage "wheels from $wheels"
  site=$(mktemp -d)
  trap 'rm -rf "$site"' EXIT
  recent_setuptools=0
  "$python" -c "import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 77)" 2>/dev/null &&
    recent_setuptools=1
  to_install=()
  for wheel in "$wheels"/*.whl; do
    [ -e "$wheel" ] || continue  # no wheels there: the pattern itself
    [[ $recent_setuptools == 1 && $(basename "$wheel") == setuptools-* ]] || to_install+=("$wheel")
  done
  [ ${#to_install[@]} -eq 0 ] ||
    "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" "${to_install[@]}"
  export PYTHONPATH="$site:$PYTHONPATH"
fi
stage build
CPIA_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} timeout -k 10 "${BUILD_TIMEOUT:-420}" "$python" setup.py build_ext --inplace >"$out/build.log" 2>&1 || {
  tail -n 60 "$out/build.log"; exit 1; }
tail -n 2 "$out/build.log"
"$python" -c "import cpia_cuda._ops as o
assert o.cuda_kernels_available(), f'no CUDA kernels in the built extension (import error: {o._EXTENSION_ERROR})'"
stage tests
# The suite's result does not stop the benchmarks: both logs are wanted from one run.
tests_status=0
timeout -k 10 "${TESTS_TIMEOUT:-420}" "$python" -m pytest -q -rs -p no:cacheprovider -o faulthandler_timeout=120 \
  --junitxml="$out/tests.xml" tests 2>&1 | tee "$out/tests.log" || tests_status=$?
stage benchmarks
benchmarks_status=0
timeout -k 10 "${BENCHMARKS_TIMEOUT:-300}" "$python" -m benchmarks --backends reference,cpu,cuda \
  --reference-device cuda --out "$out" --overwrite ${benchmark_options[@]+"${benchmark_options[@]}"} 2>&1 | tee "$out/benchmarks.log" || benchmarks_status=$?
[ ! -f "$out/report.md" ] || printf '\nTests (exit status %s): %s\n' "$tests_status" "$(tail -n 1 "$out/tests.log")" \
  >>"$out/report.md"
stage "done (tests exit status $tests_status, benchmarks exit status $benchmarks_status)"
[ "$tests_status" -ne 0 ] && exit "$tests_status"
exit "$benchmarks_status"
