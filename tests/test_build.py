"""setup.py's choice of build: CUDA where the toolkit's nvcc is, CPU-only elsewhere, forced either way."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _setup_py(tmp_path, **environment):
    env = {key: value for key, value in os.environ.items() if key not in ("CPIA_CUDA", "CUDA_HOME", "CUDA_PATH")}
    env.update(environment)
    return subprocess.run([sys.executable, str(ROOT / "setup.py"), "--version"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_cuda_home_without_nvcc_builds_cpu_only_unless_cuda_is_forced(tmp_path):
    runtime_only = tmp_path / "cuda-runtime"
    (runtime_only / "lib64").mkdir(parents=True)  # a CUDA runtime, no compiler
    chosen = _setup_py(tmp_path, CUDA_HOME=str(runtime_only))
    assert chosen.returncode == 0, chosen.stderr
    assert "building the CPU-only extension" in chosen.stdout
    forced = _setup_py(tmp_path, CUDA_HOME=str(runtime_only), CPIA_CUDA="1")
    assert forced.returncode != 0 and "CPIA_CUDA=1 but no nvcc was found" in forced.stderr


@pytest.mark.skipif(not Path("/usr/local/cuda/bin/nvcc").exists(), reason="needs the CUDA toolkit in /usr/local/cuda")
def test_the_toolkit_builds_cuda_and_cpia_cuda_0_turns_it_off(tmp_path):
    assert "building the CUDA + CPU extension" in _setup_py(tmp_path, CUDA_HOME="").stdout
    assert "building the CPU-only extension" in _setup_py(tmp_path, CPIA_CUDA="0").stdout
    refused = _setup_py(tmp_path, CPIA_CUDA="yes")
    assert refused.returncode != 0 and "CPIA_CUDA must be 0 or 1, got 'yes'" in refused.stderr


def test_without_torch_the_sources_pack_and_a_build_says_what_is_missing(tmp_path):
    hide_torch = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = ['setup.py'] + sys.argv[1:]; "
                  f"runpy.run_path({str(ROOT / 'setup.py')!r}, run_name='__main__')")
    described = subprocess.run([sys.executable, "-c", hide_torch, "--name"], cwd=ROOT, capture_output=True,
                               text=True, timeout=120)
    assert described.returncode == 0 and described.stdout.strip() == "cpia_cuda", described.stderr
    built = subprocess.run([sys.executable, "-c", hide_torch, "build_ext", "--inplace"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert built.returncode != 0 and "building cpia_cuda needs torch installed first" in built.stderr
