"""Runs the CUDA kernels under the SIMT emulator built with ThreadSanitizer, which reports every two
accesses to one address, one of them a write, that no barrier orders (simt.h): the races inside a
barrier interval that the emulator's schedules cannot show. The process must load ThreadSanitizer's
runtime before anything else:

    LD_PRELOAD=$(g++ -print-file-name=libtsan.so) python tests/simt_emulator/race_check.py kernels

``kernels`` paints and flushes random cases (each also compared with the CPU op, which must give the
same answer); ``planted`` runs the emulator's self-test kernel whose threads all write one shared
variable, which the check must report. Reports go to stderr; with ``TSAN_OPTIONS=exitcode=66`` (the
default) a reported race makes the exit status 66. tests/test_simt_emulator.py runs both."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS)]

from conftest import emulated_channel_flush, emulated_channel_stroke, random_stroke_case  # noqa: E402
from simt_emulator.build import load_emulated_kernels  # noqa: E402

import cpia_cuda  # noqa: E402

# Every random case once with a few strokes (TSan's verdict rests on the barriers, not on the
# schedule, so one schedule will do), and the smallest ones again to their own stop.
STROKE_SEEDS = range(12)
STROKES_PER_CASE = 6
UNCAPPED_STROKE_SEEDS = (2, 7, 8)
# Past one block's threads: more channels than threads (penetration, brush), more tiles than threads.
WIDE_STROKE_CASES = [((1, 40, 20, 20), 12, dict(p=3, brush=2, max_strokes=4)),
                     ((2, 3, 70, 70), 2, dict(p=2, max_strokes=6))]
# Words in registers (up to 1024 channels) and in shared memory.
FLUSH_SHAPES = [((2, 5, 7, 9), 2), ((1, 40, 6, 5), 17), ((1, 700, 2, 3), 350), ((1, 1100, 1, 3), 600)]


def stroke_cases():
    for seed in STROKE_SEEDS:
        Y, tau, kwargs = random_stroke_case(seed)
        yield Y, tau, {**kwargs, "max_strokes": min(kwargs.get("max_strokes", STROKES_PER_CASE), STROKES_PER_CASE)}
    for seed in UNCAPPED_STROKE_SEEDS:
        yield random_stroke_case(seed)
    for index, (shape, tau, kwargs) in enumerate(WIDE_STROKE_CASES):
        yield torch.rand(shape, generator=torch.Generator().manual_seed(index)), tau, kwargs


def check_kernels(ops) -> int:
    mismatches = 0
    for Y, tau, kwargs in stroke_cases():
        expected = cpia_cuda.channel_stroke(Y, tau, backend="cpu", **kwargs)
        got = emulated_channel_stroke(Y, tau, kernels=ops, **kwargs)
        mismatches += not torch.equal(got.order, expected.order)
    for index, (shape, tau) in enumerate(FLUSH_SHAPES):
        Y = torch.randn(shape, generator=torch.Generator().manual_seed(index)).round()  # ties too
        expected = cpia_cuda.channel_flush(Y, tau, backend="cpu")
        mismatches += not torch.equal(emulated_channel_flush(Y, tau, kernels=ops), expected)
    return mismatches


def main(argv: list[str]) -> int:
    if argv not in (["kernels"], ["planted"]):
        print("usage: race_check.py kernels|planted", file=sys.stderr)
        return 2
    os.environ.pop("LD_PRELOAD", None)  # this process has the runtime; the compiler it starts must not
    torch.set_num_threads(1)  # torch's worker threads synchronise in code ThreadSanitizer does not see
    ops = load_emulated_kernels(race_check=True)
    if argv == ["planted"]:
        ops.last_writer(1)
        print("planted race ran")
        return 0
    mismatches = check_kernels(ops)
    print(f"race check: {mismatches} results differ from the CPU op")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
