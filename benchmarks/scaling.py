"""Time per stroke of the fused ops against C, H*W, tau, brush size and penetration p."""

from __future__ import annotations

from dataclasses import dataclass

import cpia_cuda

from .inputs import correlated_activation
from .suite import available_backends, timed

STROKES = 2000
BASE = dict(C=256, H=64, W=64, tau=64, brush=1, p=2)
SWEEPS = {
    "C": [64, 128, 256, 512, 1024],
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

    seconds, result = timed(lambda: run(STROKES), device, repeats)
    setup_seconds, _ = timed(lambda: run(0), device, repeats)
    return ScalingPoint(parameter, value, backend, result.num_strokes, seconds, setup_seconds)


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
             "us/stroke = whole call / strokes; marginal = (whole call - call with max_strokes=0) / strokes.", "",
             "| backend | parameter | value | strokes | whole call | setup (0 strokes) | us/stroke | marginal us/stroke |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        lines.append(f"| {p.backend} | {p.parameter} | {p.value} | {p.strokes} | {p.seconds * 1e3:.1f} ms | "
                     f"{p.setup_seconds * 1e3:.1f} ms | {p.us_per_stroke:.2f} | {p.marginal_us_per_stroke:.2f} |")
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
