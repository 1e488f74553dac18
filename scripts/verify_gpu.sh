#!/usr/bin/env bash
# Verifies cpia_cuda on a machine with an NVIDIA GPU and the CUDA toolkit: builds the extension
# there, runs the whole test suite (the CUDA cases included: CPU-vs-CUDA and reference-vs-CUDA
# equivalence, opcheck, generators and the painting pipeline on the device), then the benchmarks
# with the reference on the GPU, and writes the logs and report.md to OUTDIR.
#
#   scripts/verify_gpu.sh OUTDIR [--wheels DIR] [benchmark options]
#
# Uses the machine's own python3 and torch; needs setuptools, ninja, pytest, numpy. Packages the
# machine lacks can come as wheels in DIR (scripts/fetch_gpu_wheels.sh makes that folder on a
# machine with a package index); they are installed into a folder under OUTDIR, not into the
# system. Tests whose packages are missing skip and say why (pytest -rs).
set -euo pipefail
out=${1:?usage: scripts/verify_gpu.sh OUTDIR [--wheels DIR] [benchmark options]}
shift
wheels=""
if [ "${1:-}" = "--wheels" ]; then
  wheels=${2:?--wheels needs a folder}
  shift 2
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
[ -z "$wheels" ] || wheels=$(cd "$wheels" && pwd)
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
started=$SECONDS
stage() { echo "== $1 (at $((SECONDS - started)) s)"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
if [ -n "$wheels" ]; then
  stage "wheels from $wheels"
  "$python" -m pip install -q --no-index --no-deps --target "$out/site-packages" "$wheels"/*.whl
  export PYTHONPATH="$PYTHONPATH:$out/site-packages"
fi
stage build
CPIA_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} "$python" setup.py build_ext --inplace >"$out/build.log" 2>&1 || {
  tail -n 60 "$out/build.log"; exit 1; }
tail -n 2 "$out/build.log"
"$python" -c "import cpia_cuda._ops as o; assert o.cuda_kernels_available(), 'built without CUDA kernels'"
stage tests
# The suite's result does not stop the benchmarks: both logs are wanted from one run.
tests_status=0
"$python" -m pytest -q -rs -p no:cacheprovider --junitxml="$out/tests.xml" tests 2>&1 | tee "$out/tests.log" ||
  tests_status=$?
stage benchmarks
"$python" -m benchmarks --backends reference,cpu,cuda --reference-device cuda --out "$out" "$@" \
  2>&1 | tee "$out/benchmarks.log"
stage "done (tests exit status $tests_status)"
exit "$tests_status"
