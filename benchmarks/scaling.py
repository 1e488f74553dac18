"""Time per stroke of the fused ops against C, H*W, tau, brush size and penetration p."""

from __future__ import annotations

import time
from dataclasses import dataclass

import cpia_cuda

from .inputs import correlated_activation
from .suite import available_backends, synchronize

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

    @property
    def us_per_stroke(self) -> float:
        """Whole call divided by the strokes (the O(C*H*W) setup included)."""
        return self.seconds / max(self.strokes, 1) * 1e6

    @property
    def marginal_us_per_stroke(self) -> float:
        """What one more stroke costs: (whole call - setup) / strokes."""
        return (self.seconds - self.setup_seconds) / max(self.strokes, 1) * 1e6


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

    seconds, setup_seconds, result = fastest_interleaved(lambda: run(STROKES), lambda: run(0), device, repeats)
    return ScalingPoint(parameter, value, backend, result.num_strokes, seconds, setup_seconds)


def fastest_interleaved(run_whole, run_setup, device: str, repeats: int):
    """Fastest of ``repeats`` runs of each, the two alternating after a warm-up of each.

    The marginal cost is a difference of two timings; alternating them exposes both to the same
    state of the machine, and the fastest run is the one least disturbed by other work on it.
    """
    result = run_whole()
    run_setup()
    whole, setup = [], []
    for _ in range(repeats):
        for run, times in ((run_whole, whole), (run_setup, setup)):
            synchronize(device)
            start = time.perf_counter()
            outcome = run()
            synchronize(device)
            times.append(time.perf_counter() - start)
            if run is run_whole:
                result = outcome
    return min(whole), min(setup), result


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
             "us/stroke = whole call / strokes; marginal = (whole call - call with max_strokes=0) / strokes; "
             "each time the fastest of the repeats, the two calls alternating.", "",
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
