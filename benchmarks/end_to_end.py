"""End to end: the default network (multistyle26) painting a photo at 512 and 2048 pixels, with the
time split into the memory estimate, planning, encoding, strokes, rendering (final image, frames,
stroke maps), the rest of the call (loading the network, checking the settings) and writing. Each
device paints a small image first, so one-time costs (first calls, allocator growth) are not in the
figures."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SIZES = (512, 2048)
SETTINGS = dict(generator="multistyle26", condition={"style": 7}, layer="res.5", tau=8, planner="segments",
                frames=24)
PHASES = ("estimate", "plan", "encode", "strokes", "render", "other", "write")
WARM_UP_SIZE = 64


@dataclass
class EndToEnd:
    size: int
    device: str
    strokes: int
    seconds: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def astronaut(size: int) -> torch.Tensor:
    from skimage import data

    image = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    return F.interpolate(image, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)[0]


def run_end_to_end(devices: tuple[str, ...], sizes: tuple[int, ...] = SIZES, log=print) -> list[EndToEnd]:
    import cpia_cuda

    results = []
    for device in devices:
        cpia_cuda.paint(astronaut(WARM_UP_SIZE), device=device, **SETTINGS)
        for size in sizes:
            log(f"  paint {size}x{size} on {device}")
            painting = cpia_cuda.paint(astronaut(size), device=device, **SETTINGS)
            with tempfile.TemporaryDirectory() as folder:
                started = time.perf_counter()
                cpia_cuda.write_outputs(painting, folder)
                write_seconds = time.perf_counter() - started
            other = max(painting.seconds - sum(painting.timings.values()), 0.0)
            seconds = dict(painting.timings, other=other, write=write_seconds)
            results.append(EndToEnd(size, device, painting.log.num_strokes, seconds))
    return results


def format_end_to_end(results: list[EndToEnd]) -> str:
    lines = [f"End to end: `cpia_cuda.paint` + `write_outputs`, {SETTINGS}", "",
             "| size | device | strokes | " + " | ".join(PHASES) + " | total |",
             "|---|---|---:|" + "---:|" * (len(PHASES) + 1)]
    for r in results:
        shares = " | ".join(f"{r.seconds.get(p, 0):.2f} s ({100 * r.seconds.get(p, 0) / r.total:.0f}%)"
                            for p in PHASES)
        lines.append(f"| {r.size} | {r.device} | {r.strokes} | {shares} | {r.total:.2f} s |")
    return "\n".join(lines)
