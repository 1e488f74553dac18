"""Time per stroke of the fused ops against C, H*W, tau, brush size and penetration p."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import cpia_cuda
from cpia_cuda.painting.outputs import atomic_write_with

from .inputs import correlated_activation
from .suite import available_backends, time_once

STROKES = 2000
STROKES_SCOPE = "cpia::channel_stroke.strokes"  # the CPU kernel's profiler scope around its stroke loop
BASE = dict(C=256, H=64, W=64, tau=64, brush=1, p=2)
SWEEPS = {
    "C": [64, 128, 256, 512, 1024, 2048, 4096],
    "HW": [32, 64, 128, 256],  # side of the square image
    "tau": [8, 16, 32, 64, 128],
    "brush": [0, 1, 2, 3],
    "p": [1, 2, 4, 8],
}
# (C, side) pairs of two sizes, 2^20 and 2^22 elements, each reached with few channels on a large
# image and many channels on a small one: whether the time per stroke follows C, H*W, or C*H*W.
SHAPES = [(1024, 32), (256, 64), (64, 128), (1024, 64), (256, 128), (64, 256)]


@dataclass
class ScalingPoint:
    parameter: str
    value: int | tuple[int, int]  # "shape": (C, side)
    backend: str
    strokes: int
    seconds: float          # the whole call: checks, the O(C*H*W) preparation, the strokes, the outputs
    strokes_seconds: float  # the stroke loop alone (see stroke_loop_seconds)

    @property
    def us_per_stroke(self) -> float:
        """Whole call divided by the strokes (the O(C*H*W) preparation included)."""
        return self.seconds / max(self.strokes, 1) * 1e6

    @property
    def loop_us_per_stroke(self) -> float:
        """The stroke loop divided by the strokes: what one stroke costs."""
        return self.strokes_seconds / max(self.strokes, 1) * 1e6


def measure_sweep(parameter: str, values: list[int], backend: str, repeats: int, base: dict = BASE,
                  strokes: int = STROKES) -> list[ScalingPoint]:
    """One point per value of ``parameter``, the others at ``base``.

    The values are measured in rounds, one call of each per round, so that every value meets the
    same moments of a shared machine whose speed drifts; each point keeps its fastest round (CUDA's
    stroke loop: the median round, being a difference of two timings).
    """
    device = "cuda" if backend == "cuda" else "cpu"
    runs = {value: _stroke_run(dict(base, **_setting(parameter, value)), backend, device) for value in values}
    whole = {value: [] for value in values}
    loop = {value: [] for value in values}
    results = {value: run(strokes) for value, run in runs.items()}  # warm-up
    for _ in range(repeats):
        for value, run in runs.items():
            seconds, results[value] = time_once(lambda: run(strokes), device)
            whole[value].append(seconds)
            if backend == "cpu":
                loop[value].append(profiled_scope_seconds(lambda: run(strokes), STROKES_SCOPE))
            else:
                loop[value].append(seconds - time_once(lambda: run(0), device)[0])
    pick_loop = min if backend == "cpu" else statistics.median
    return [ScalingPoint(parameter, value, backend, results[value].num_strokes, min(whole[value]),
                         pick_loop(loop[value])) for value in values]


def _setting(parameter: str, value) -> dict:
    if parameter == "shape":
        return dict(C=value[0], H=value[1], W=value[1])
    return dict(H=value, W=value) if parameter == "HW" else {parameter: value}


def _stroke_run(config: dict, backend: str, device: str):
    Y = correlated_activation((config["C"], config["H"], config["W"])).to(device)

    def run(strokes: int):
        return cpia_cuda.channel_stroke(Y, config["tau"], brush=config["brush"], p=config["p"], max_strokes=strokes,
                                        min_response=0.0, backend=backend)

    return run


def profiled_scope_seconds(run, scope: str) -> float:
    """Total seconds of the profiler events named ``scope`` during ``run()``."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU]) as profiler:
        run()
    return sum(event.cpu_time_total for event in profiler.events() if event.name == scope) * 1e-6


@contextlib.contextmanager
def _quiet_native_stderr():
    """The profiler's native library logs every start and stop on file descriptor 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def growth_per_4x(points: list[ScalingPoint]) -> list[tuple[str, str, int, int, float, float]]:
    """(backend, parameter, from, to, whole-call ratio, stroke-loop ratio) for every pair of sweep
    points of C or H*W whose C*H*W differs 4x: time per stroke at `to` over time per stroke at `from`."""
    rows = []
    for p in points:
        if p.parameter not in ("C", "HW"):
            continue
        target = p.value * (4 if p.parameter == "C" else 2)  # HW sweeps the side
        for q in points:
            if (q.backend, q.parameter, q.value) == (p.backend, p.parameter, target):
                rows.append((p.backend, p.parameter, p.value, q.value, q.us_per_stroke / p.us_per_stroke,
                             q.loop_us_per_stroke / p.loop_us_per_stroke))
    return rows


def run_scaling(backends: tuple[str, ...], repeats: int = 3, log=print) -> list[ScalingPoint]:
    points = []
    for backend in available_backends(tuple(b for b in backends if b in ("cpu", "cuda"))):
        for parameter, values in [*SWEEPS.items(), ("shape", SHAPES)]:
            for point in measure_sweep(parameter, values, backend, repeats):
                log(f"  {backend} {parameter}={point.value}: {point.us_per_stroke:.2f} us/stroke, "
                    f"{point.loop_us_per_stroke:.2f} us in the stroke loop")
                points.append(point)
    return points


def format_scaling(points: list[ScalingPoint]) -> str:
    lines = [f"Time per stroke, {STROKES} strokes, base {BASE} (one value varied at a time; HW is the side). "
             "Each sweep runs in rounds, one call per value per round. whole call: the fastest round; stroke "
             f"loop: CPU, timed inside the kernel (profiler scope {STROKES_SCOPE}), the fastest round; CUDA, "
             "the median round of the whole call minus the same call with no strokes.", "",
             "| backend | parameter | value | strokes | whole call | stroke loop | us/stroke (whole call) | "
             "us/stroke (loop) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        if p.parameter == "shape":
            continue
        lines.append(f"| {p.backend} | {p.parameter} | {p.value} | {p.strokes} | {p.seconds * 1e3:.1f} ms | "
                     f"{p.strokes_seconds * 1e3:.2f} ms | {p.us_per_stroke:.2f} | {p.loop_us_per_stroke:.2f} |")
    shapes = [p for p in points if p.parameter == "shape"]
    if shapes:
        lines += ["", "The same C*H*W reached with other shapes (the other parameters at the base):", "",
                  "| backend | C | H = W | C*H*W | us/stroke (whole call) | us/stroke (loop) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for p in shapes:
            channels, side = p.value
            lines.append(f"| {p.backend} | {channels} | {side} | {channels * side * side:,} | {p.us_per_stroke:.2f} | "
                         f"{p.loop_us_per_stroke:.2f} |")
    lines += ["", "Growth of the time per stroke when C*H*W grows 4x (HW: the side doubles):", "",
              "| backend | parameter | from | to | whole call / strokes | stroke loop / strokes |",
              "|---|---|---:|---:|---:|---:|"]
    for backend, parameter, start, end, whole, loop in growth_per_4x(points):
        lines.append(f"| {backend} | {parameter} | {start} | {end} | {whole:.2f}x | {loop:.2f}x |")
    return "\n".join(lines)


def plot_scaling(points: list[ScalingPoint], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(SWEEPS), figsize=(4 * len(SWEEPS), 3.5))
    for axis, parameter in zip(axes, SWEEPS):
        for backend in sorted({p.backend for p in points}):
            series = [p for p in points if p.parameter == parameter and p.backend == backend]
            axis.plot([p.value for p in series], [p.us_per_stroke for p in series], marker="o",
                      label=f"{backend}, whole call / strokes")
            axis.plot([p.value for p in series], [p.loop_us_per_stroke for p in series], marker="x",
                      linestyle="--", label=f"{backend}, stroke loop / strokes")
        axis.set_xlabel(parameter + (" (side)" if parameter == "HW" else ""))
        axis.set_ylabel("us per stroke")
        if parameter in ("C", "HW", "tau"):
            axis.set_xscale("log", base=2)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(f"channel_stroke: time per stroke ({STROKES} strokes; base {BASE})")
    figure.tight_layout()
    atomic_write_with(Path(path), lambda tmp: figure.savefig(tmp, dpi=100))
    plt.close(figure)
