"""Time per stroke of the fused ops against C, H*W, tau, brush size and penetration p."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import cpia_cuda

from .inputs import correlated_activation
from .suite import available_backends, time_once

STROKES = 2000
BASE = dict(C=256, H=64, W=64, tau=64, brush=1, p=2)
SWEEPS = {
    "C": [64, 128, 256, 512, 1024, 2048, 4096],
    "HW": [32, 64, 128, 256],  # side of the square image
    "tau": [8, 16, 32, 64, 128],
    "brush": [0, 1, 2, 3],
    "p": [1, 2, 4, 8],
}


@dataclass
class ScalingPoint:
    parameter: str
    value: int
    backend: str
    strokes: int
    seconds: float        # the whole call
    setup_seconds: float  # the same call with max_strokes=0: checks, one pass over Y, outputs
    strokes_seconds: float  # what the strokes add: median of (whole - setup) over adjacent pairs of runs

    @property
    def us_per_stroke(self) -> float:
        """Whole call divided by the strokes (the O(C*H*W) setup included)."""
        return self.seconds / max(self.strokes, 1) * 1e6

    @property
    def marginal_us_per_stroke(self) -> float:
        """What one more stroke costs: the strokes' share of the call / strokes."""
        return self.strokes_seconds / max(self.strokes, 1) * 1e6


def measure(parameter: str, value: int, backend: str, repeats: int) -> ScalingPoint:
    config = dict(BASE)
    if parameter == "HW":
        config["H"] = config["W"] = value
    else:
        config[parameter] = value
    device = "cuda" if backend == "cuda" else "cpu"
    Y = correlated_activation((config["C"], config["H"], config["W"])).to(device)
    def run(strokes: int):
        return cpia_cuda.channel_stroke(Y, config["tau"], brush=config["brush"], p=config["p"], max_strokes=strokes,
                                        min_response=0.0, backend=backend)

    timing = paired_timing(lambda: run(STROKES), lambda: run(0), device, repeats)
    return ScalingPoint(parameter, value, backend, timing.result.num_strokes, *timing.seconds)


@dataclass
class PairedTiming:
    seconds: tuple[float, float, float]  # fastest whole call, fastest setup, median (whole - setup)
    result: object


def paired_timing(run_whole, run_setup, device: str, repeats: int) -> PairedTiming:
    """``repeats`` pairs of a whole call and its setup alone, run back to back after a warm-up.

    What the strokes add is a difference of two timings, small beside the setup for large inputs;
    taking it within each pair exposes both runs to the same state of the shared machine, and the
    median over pairs drops the disturbed ones.
    """
    result = run_whole()
    run_setup()
    whole, setup = [], []
    for _ in range(repeats):
        seconds, result = time_once(run_whole, device)
        whole.append(seconds)
        setup.append(time_once(run_setup, device)[0])
    pair_differences = [w - s for w, s in zip(whole, setup)]
    return PairedTiming((min(whole), min(setup), statistics.median(pair_differences)), result)


def growth_per_4x(points: list[ScalingPoint]) -> list[tuple[str, str, int, int, float, float]]:
    """(backend, parameter, from, to, whole-call ratio, marginal ratio) for every pair of sweep points
    of C or H*W whose C*H*W differs 4x: time per stroke at `to` over time per stroke at `from`."""
    rows = []
    for p in points:
        if p.parameter not in ("C", "HW"):
            continue
        target = p.value * (4 if p.parameter == "C" else 2)  # HW sweeps the side
        for q in points:
            if (q.backend, q.parameter, q.value) == (p.backend, p.parameter, target):
                rows.append((p.backend, p.parameter, p.value, q.value, q.us_per_stroke / p.us_per_stroke,
                             q.marginal_us_per_stroke / p.marginal_us_per_stroke))
    return rows


def run_scaling(backends: tuple[str, ...], repeats: int = 3, log=print) -> list[ScalingPoint]:
    points = []
    for backend in available_backends(tuple(b for b in backends if b in ("cpu", "cuda"))):
        for parameter, values in SWEEPS.items():
            for value in values:
                point = measure(parameter, value, backend, repeats)
                log(f"  {backend} {parameter}={value}: {point.us_per_stroke:.2f} us/stroke, "
                    f"{point.marginal_us_per_stroke:.2f} us marginal")
                points.append(point)
    return points


def format_scaling(points: list[ScalingPoint]) -> str:
    lines = [f"Time per stroke, {STROKES} strokes, base {BASE} (one value varied at a time; HW is the side). "
             "whole call and setup (max_strokes=0): the fastest of the repeats; us/stroke = whole call / strokes; "
             "marginal = median over back-to-back pairs of (whole call - setup) / strokes.", "",
             "| backend | parameter | value | strokes | whole call | setup (0 strokes) | us/stroke | marginal us/stroke |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        lines.append(f"| {p.backend} | {p.parameter} | {p.value} | {p.strokes} | {p.seconds * 1e3:.1f} ms | "
                     f"{p.setup_seconds * 1e3:.1f} ms | {p.us_per_stroke:.2f} | {p.marginal_us_per_stroke:.2f} |")
    lines += ["", "Growth of the time per stroke when C*H*W grows 4x (HW: the side doubles):", "",
              "| backend | parameter | from | to | whole call / strokes | marginal |", "|---|---|---:|---:|---:|---:|"]
    for backend, parameter, start, end, whole, marginal in growth_per_4x(points):
        lines.append(f"| {backend} | {parameter} | {start} | {end} | {whole:.2f}x | {marginal:.2f}x |")
    return "\n".join(lines)


def plot_scaling(points: list[ScalingPoint], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(SWEEPS), figsize=(4 * len(SWEEPS), 3.5))
    for axis, parameter in zip(axes, SWEEPS):
        for backend in sorted({p.backend for p in points}):
            series = [p for p in points if p.parameter == parameter and p.backend == backend]
            axis.plot([p.value for p in series], [p.us_per_stroke for p in series], marker="o",
                      label=f"{backend}, whole call / strokes")
            axis.plot([p.value for p in series], [p.marginal_us_per_stroke for p in series], marker="x",
                      linestyle="--", label=f"{backend}, marginal")
        axis.set_xlabel(parameter + (" (side)" if parameter == "HW" else ""))
        axis.set_ylabel("us per stroke")
        if parameter in ("C", "HW", "tau"):
            axis.set_xscale("log", base=2)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(f"channel_stroke: time per stroke ({STROKES} strokes; base {BASE})")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
