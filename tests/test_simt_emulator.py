"""The SIMT emulator that runs the CUDA kernels on the CPU (tests/simt_emulator): its warp
operations return what CUDA's do, a race shows as results that change with the schedule seed or,
built with ThreadSanitizer, as a report, and misused barriers are errors instead of silent answers."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import emulated_kernels, needs_emulator

pytestmark = needs_emulator

RACE_CHECK = Path(__file__).resolve().parent / "simt_emulator" / "race_check.py"
RACE_REPORT = "WARNING: ThreadSanitizer: data race"


def thread_sanitizer_runtime():
    """The path of g++'s ThreadSanitizer runtime, or None where it has none."""
    try:
        path = subprocess.run(["g++", "-print-file-name=libtsan.so"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
    return path if os.path.isabs(path) and os.path.exists(path) else None


THREAD_SANITIZER_RUNTIME = thread_sanitizer_runtime()
needs_thread_sanitizer = pytest.mark.skipif(THREAD_SANITIZER_RUNTIME is None,
                                            reason="needs g++'s ThreadSanitizer runtime (libtsan)")


def run_race_check(mode):
    env = dict(os.environ, LD_PRELOAD=THREAD_SANITIZER_RUNTIME, TSAN_OPTIONS="exitcode=66")
    return subprocess.run([sys.executable, str(RACE_CHECK), mode], env=env, capture_output=True, text=True)


def test_warp_operations_follow_cuda():
    threads = 64
    got = emulated_kernels().warp_operations(threads)
    lane = torch.arange(threads) % 32
    warp_base = torch.arange(threads) - lane
    value = 1000 + torch.arange(threads)
    expected_down = torch.where(lane + 3 < 32, value + 3, value)  # lanes past the warp keep their value
    expected_xor = 1000 + warp_base + (lane ^ 5)
    expected_broadcast = 1000 + warp_base + 7
    votes = [sum(1 << k for k in range(32) if (w + k) % 3 == 0) for w in (0, 32)]
    expected_ballot = torch.tensor(votes).repeat_interleave(32)
    assert torch.equal(got, torch.stack([expected_down, expected_xor, expected_broadcast, expected_ballot], 1))


def test_a_race_changes_the_result_with_the_schedule_seed():
    ops = emulated_kernels()
    results = []
    for seed in range(4):
        ops.set_schedule_seed(seed)
        results.append(ops.last_writer(3).tolist())
    ops.set_schedule_seed(2)
    assert ops.last_writer(3).tolist() == results[2]  # a seed fixes the order
    assert len({tuple(r) for r in results}) > 1


@pytest.mark.parametrize(
    "kernel, message",
    [
        ("divergent_barrier", "__syncthreads reached by part of the block, the rest exited"),
        ("different_barriers", "threads wait at different __syncthreads"),
        ("partial_mask", "warp operations with a partial mask are not emulated"),
    ],
)
def test_misused_barriers_are_errors(kernel, message):
    with pytest.raises(RuntimeError, match=message):
        getattr(emulated_kernels(), kernel)()


@needs_thread_sanitizer
def test_race_check_reports_a_planted_race():
    result = run_race_check("planted")
    assert result.returncode == 66, result.stderr[-4000:]
    assert result.stderr.count(RACE_REPORT) == 1
    assert "self_test_kernels.cu" in result.stderr


@needs_thread_sanitizer
def test_kernels_order_every_shared_access_by_a_barrier():
    result = run_race_check("kernels")
    assert result.returncode == 0, result.stdout + result.stderr[-8000:]
    assert RACE_REPORT not in result.stderr
    assert "race check: 0 results differ from the CPU op" in result.stdout
