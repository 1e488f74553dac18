"""Rendering: a painted activation through the rest of the generator, composited on paper.

The canvas of a mask ``M`` (bool (C, h, w) at the operating layer) is

    out    = decode(Y_painted * M)                       # the rest of the generator (paper Fig. 4)
    alpha  = upsample(stroke_opacity(M.sum(0), tau))     # the post-generator mask (Sec. 3.4, Sec. 4)
    canvas = lerp(background, out, alpha)

``stroke_opacity`` is ``min(1, count / tau)``: a location is fully opaque once it holds tau stroked
channels and fades linearly with fewer ("the mask opacity increases as the location collects more
stroked channels", Sec. 4). ``torch.lerp`` returns ``out`` exactly where alpha is 1, so ``tau = C``
with every channel stroked gives back ``decode(Y_painted)``: the generator's plain output when every
region was painted from the plain activation (one region, ``step_fill="none"``, or a GAN).

Progressive frames are rendered at a preview size. For fully convolutional (image-to-image)
generators the masked activation is area-downsampled to the preview's layer grid and decoded there
(cheap, so a 4096 px painting can show 512 px frames); a GAN has a fixed activation size, and a
HookedGenerator's module is not known to be convolutional, so their frames are decoded at full size
and the canvas is resized.
"""

from __future__ import annotations

import colorsys
import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..generators.base import Generator, Layer

DEFAULT_PREVIEW_SIZE = 512
Color = tuple[float, float, float]


def parse_background(background: Any) -> Color:
    """``"white"``, any colour name or ``#rrggbb`` PIL knows, or an (r, g, b) of floats in [0, 1]."""
    if isinstance(background, str):
        from PIL import ImageColor

        try:
            rgb = ImageColor.getrgb(background)
        except ValueError:
            raise ValueError(f"background must be a colour name, #rrggbb or (r, g, b) in [0, 1], "
                             f"got {background!r}") from None
        return tuple(channel / 255.0 for channel in rgb[:3])  # type: ignore[return-value]
    try:
        rgb = tuple(float(channel) for channel in background)
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3 or not all(0.0 <= channel <= 1.0 for channel in rgb):
        raise ValueError(f"background must be a colour name, #rrggbb or (r, g, b) in [0, 1], got {background!r}")
    return rgb  # type: ignore[return-value]


def stroke_opacity(count: torch.Tensor, tau: int) -> torch.Tensor:
    """Opacity of the post-generator mask: ``min(1, count / tau)`` per location (float32)."""
    return (count.to(torch.float32) / float(tau)).clamp_(0.0, 1.0)


def grid_span(cells: int, pixels: int, size_multiple: int = 1) -> int:
    """Image pixels that a side of ``cells`` layer cells spans, for an image side of ``pixels``.

    A layer of stride s has ``ceil(pixels / s)`` cells (convolutions round sizes up), so its cells span
    ``s * cells`` pixels from the top/left, past the image's bottom/right by less than a stride (or
    than the generator's ``size_multiple``, where the network pads its input). s is taken as
    ``ceil(pixels / cells)``, the stride whenever there are at least s cells. A grid that fits no such
    stride (a module that resizes) spans the image exactly."""
    stride = -(-pixels // cells)
    span = stride * cells
    return span if span - pixels < max(stride, size_multiple) else pixels


def decoded_span(pixels: int, cells: int) -> int:
    """Decoded pixels that a side of ``cells`` layer cells spans, for a decode ``pixels`` long: a whole
    stride per cell from the top/left (a decoder that rounds sizes up adds at most a stride past it),
    else, for a size that is no such multiple, all of it."""
    stride = pixels // cells
    span = stride * cells
    return span if stride > 0 and pixels - span <= stride else pixels


def opacity_at(alpha: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Opacity (N, 1, h, w) of the layer cells at the decoded size (Ho, Wo), bilinear (soft stroke edges).

    Cell i covers the pixels of its stride (:func:`decoded_span`): a decoder that rounds sizes up
    decodes a layer grid to more than the cells times their stride (multistyle26's ``contract.1``: 5
    cells, stride 2, 12 rows, as the input is padded to a multiple of 4), and those rows lie below the
    last cell, so the edge is extended there rather than the grid stretched."""
    inner = (decoded_span(size[0], alpha.shape[-2]), decoded_span(size[1], alpha.shape[-1]))
    alpha = F.interpolate(alpha, size=inner, mode="bilinear", align_corners=False)
    extra = (size[0] - inner[0], size[1] - inner[1])
    if any(extra):
        alpha = F.pad(alpha, (0, extra[1], 0, extra[0]), mode="replicate")
    return alpha.clamp_(0, 1)


def image_of(canvas: torch.Tensor, cells: Sequence[int], image_span: Sequence[tuple[int, int]],
             target: Sequence[int]) -> torch.Tensor:
    """The image's part of ``canvas`` (N, 3, Ho, Wo), decoded from ``cells`` (h, w) layer cells, at the
    ``target`` size (rows, cols).

    ``image_span`` holds, per axis, ``(pixels, span)``: the image side and the pixels its layer grid
    spans (:func:`grid_span`); a grid shrunk for a preview spans the same image share. So the image
    is the first ``pixels / span`` of the decoded span (:func:`decoded_span`): taken exactly where that
    is the target size (the decoder's rounding cut off), else resampled (bilinear, antialiased) with
    the scale that maps it onto the target."""
    extents = [(pixels * decoded_span(canvas.shape[-2 + axis], cells[axis]), span)  # extent = a / b
               for axis, (pixels, span) in enumerate(image_span)]
    if all(a == size * b for (a, b), size in zip(extents, target)):
        return canvas[..., : target[0], : target[1]]
    scale = tuple(size * b / a for (a, b), size in zip(extents, target))
    canvas = canvas[..., : -(-extents[0][0] // extents[0][1]), : -(-extents[1][0] // extents[1][1])]  # no pixel past it
    for _ in range(2):  # the second time with a replicated edge, should rounding leave the output short
        resized = F.interpolate(canvas, scale_factor=scale, mode="bilinear", antialias=True, align_corners=False,
                                recompute_scale_factor=False)
        if resized.shape[-2] >= target[0] and resized.shape[-1] >= target[1]:
            break
        canvas = F.pad(canvas, (0, 1, 0, 1), mode="replicate")
    return resized[..., : target[0], : target[1]].clamp_(0, 1)


def cells_under(pixels_out: int, pixels: int, cells: int, size_multiple: int, device=None) -> torch.Tensor:
    """The layer cell under the centre of each of ``pixels_out`` pixels laid over an image side of
    ``pixels``, whose ``cells`` span :func:`grid_span` pixels (int64, for indexing)."""
    span = grid_span(cells, pixels, size_multiple)
    centres = (torch.arange(pixels_out, dtype=torch.float64, device=device) + 0.5) * (pixels / pixels_out)
    return (centres * (cells / span)).floor().long().clamp_(0, cells - 1)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, the pixels of the written images."""
    return (image.detach().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()


def pixels_sha256(image: torch.Tensor) -> str:
    """SHA-256 of ``to_uint8(image)``: the painting's pixels as ``painting.png`` holds them."""
    return hashlib.sha256(np.ascontiguousarray(to_uint8(image)).tobytes()).hexdigest()


def frame_thresholds(total_strokes: int, frames: int | None = None, every: int | None = None) -> list[int]:
    """Stroke counts after which a frame is taken; the last is always ``total_strokes``.

    ``every=k``: after k, 2k, ... strokes (and the end). ``frames=F``: F counts spread evenly,
    ``ceil(i * total / F)`` for i = 1..F, duplicates dropped (fewer frames than F when there are
    fewer strokes). With no stroke at all there is one (blank) frame.
    """
    if (frames is None) == (every is None):
        raise ValueError("give exactly one of frames= or every=")
    if every is not None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        counts = list(range(every, total_strokes, every))
    else:
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        counts = [math.ceil(i * total_strokes / frames) for i in range(1, frames)]
    return sorted(set(counts) | {total_strokes})


def frame_mask(order: torch.Tensor, strokes_done: int) -> torch.Tensor:
    """Bool like ``order``: the elements painted by the first ``strokes_done`` strokes."""
    return (order >= 0) & (order < strokes_done)


def preview_shape(size: Sequence[int], preview_size: int | None) -> tuple[int, int]:
    """(H, W) scaled so that the long side is at most ``preview_size`` (never enlarged)."""
    height, width = int(size[0]), int(size[1])
    limit = DEFAULT_PREVIEW_SIZE if preview_size is None else int(preview_size)
    scale = min(1.0, limit / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def channel_palette(channels: int) -> torch.Tensor:
    """(C, 3) distinct colours, one per channel: hues spaced by the golden ratio."""
    golden = 0.6180339887498949
    colours = [colorsys.hsv_to_rgb((c * golden) % 1.0, 0.75, 0.9) for c in range(channels)]
    return torch.tensor(colours, dtype=torch.float32)


def batch_context(context: Any, batch: int) -> Any:
    """The context for a batch of ``batch`` activations.

    Style contexts hold one row that serves any batch. Contexts that carry the network inputs (a GAN's
    noise z, a hooked module's inputs) need one row per image: those rows are repeated.
    """
    inputs = getattr(context, "inputs", None)
    if not isinstance(inputs, torch.Tensor) or inputs.shape[0] == batch:
        return context
    return dataclasses.replace(context, inputs=inputs[:1].expand(batch, *inputs.shape[1:]))


@dataclass
class CanvasRenderer:
    """Decodes painted activations of one generator split at ``layer`` and composites them.

    ``image_size`` is the (H, W) of the finished painting (the content image for style networks,
    the generated image for GANs).
    """

    generator: Generator
    layer: Layer
    context: Any
    tau: int
    background: Color
    image_size: tuple[int, int]

    def _image_span(self, grid: Sequence[int]) -> list[tuple[int, int]]:
        """Per axis, the image side and the pixels of it that the layer grid spans (:func:`image_of`)."""
        return [(pixels, grid_span(cells, pixels, self.generator.size_multiple))
                for cells, pixels in zip(grid, self.image_size)]

    def _background(self, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.background, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)

    @torch.no_grad()
    def composite(self, activation: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """Decode ``activation`` (N, C, h, w), already masked, and lay it on the background with the
        opacity of ``count`` (N, h, w) stroked channels per location. Returns (N, 3, Ho, Wo)."""
        decoded = self.generator.decode(activation, self.layer.index, batch_context(self.context, activation.shape[0]))
        decoded = decoded.to(torch.float32).clamp(0.0, 1.0)
        alpha = opacity_at(stroke_opacity(count, self.tau).unsqueeze(1), decoded.shape[-2:])
        return torch.lerp(self._background(decoded).expand_as(decoded), decoded, alpha)

    @torch.no_grad()
    def render_full(self, painted: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The canvas (3, H, W) at full resolution for ``painted`` (C, h, w) under ``mask`` (C, h, w)."""
        activation = (painted * mask).unsqueeze(0)
        canvas = self.composite(activation, mask.sum(0, keepdim=True))
        grid = mask.shape[-2:]
        return image_of(canvas, grid, self._image_span(grid), self.image_size)[0]

    @torch.no_grad()
    def render_frames(self, painted: torch.Tensor, order: torch.Tensor, thresholds: Sequence[int],
                      preview_size: int | None, batch_size: int = 8, progress=None) -> torch.Tensor:
        """Canvases (F, 3, ph, pw) after each stroke count in ``thresholds``, at the preview size.

        Frames are decoded ``batch_size`` at a time. For a generator whose decode takes any size, each
        frame's masked activation is area-downsampled as soon as it is built, so only one full-size masked
        activation exists at a time; otherwise the batch holds ``batch_size`` full-size ones.
        """
        target = preview_shape(self.image_size, preview_size)
        scale = target[0] / self.image_size[0]
        grid = tuple(order.shape[-2:])
        shrink = self.generator.decodes_any_size and scale < 1.0
        small_grid = _shrunk_grid(grid, scale, self.image_size, self.generator.min_image_side) if shrink else grid
        frames = torch.empty((len(thresholds), 3, *target), dtype=torch.float32)  # filled batch by batch: no second copy
        for start in range(0, len(thresholds), batch_size):
            activations, counts = [], []
            for strokes_done in thresholds[start:start + batch_size]:
                mask = frame_mask(order, strokes_done)
                activation, count = painted * mask, mask.sum(0, keepdim=True).to(torch.float32)
                if shrink:
                    activation = F.interpolate(activation.unsqueeze(0), size=small_grid, mode="area")[0]
                    count = F.interpolate(count.unsqueeze(0), size=small_grid, mode="area")[0]
                activations.append(activation)
                counts.append(count[0])
            canvas = self.composite(torch.stack(activations), torch.stack(counts))
            # a shrunk grid spans the image share of the full one: area downsampling keeps proportions
            frames[start:start + len(activations)] = image_of(canvas, small_grid, self._image_span(grid), target)
            if progress is not None:
                progress(len(activations))
        return frames


def _shrunk_grid(grid: tuple[int, int], scale: float, image_size: Sequence[int],
                 min_image_side: int) -> tuple[int, int]:
    """The layer grid scaled by ``scale``, each side kept at the cells a decode needs: 2 (the layers of
    the networks that decode any size reflect-pad by 1) and enough for an image side of
    ``min_image_side`` pixels."""
    sides = []
    for cells, pixels in zip(grid, image_size):
        needed = max(2, math.ceil(min_image_side * cells / pixels))
        sides.append(max(math.ceil(cells * scale), min(cells, needed)))
    return sides[0], sides[1]


@torch.no_grad()
def render_stroke_maps(order: torch.Tensor, thresholds: Sequence[int], tau: int, size: tuple[int, int],
                       background: Color = (1.0, 1.0, 1.0), image_size: Sequence[int] | None = None,
                       size_multiple: int = 1) -> torch.Tensor:
    """Stroke-map frames (F, 3, H, W): which channel painted each location, and how much.

    At each layer location the colour is that of the channel (:func:`channel_palette`) of the latest
    stroke that reached it, the opacity is :func:`stroke_opacity` of its stroked channels. Each pixel
    shows the cell under its centre (:func:`cells_under`; the cells visible as blocks), the grid laid
    over an image of ``image_size`` (default: ``size``) as the network lays it (:func:`grid_span`).
    """
    image_size = tuple(size) if image_size is None else tuple(image_size)
    rows = cells_under(size[0], image_size[0], order.shape[-2], size_multiple, order.device)
    cols = cells_under(size[1], image_size[1], order.shape[-1], size_multiple, order.device)
    palette = channel_palette(order.shape[0]).to(order.device)
    paper = torch.tensor(background, dtype=torch.float32, device=order.device).view(3, 1, 1)
    maps = torch.empty((len(thresholds), 3, *size), dtype=torch.float32)  # filled frame by frame: no full-size stack on the device
    for index, strokes_done in enumerate(thresholds):
        on = frame_mask(order, strokes_done)
        latest, channel = torch.where(on, order, -1).max(dim=0)
        colour = palette[channel].permute(2, 0, 1)
        alpha = stroke_opacity(on.sum(0), tau) * (latest >= 0)
        stroke_map = torch.lerp(paper.expand_as(colour), colour, alpha.unsqueeze(0))
        maps[index] = stroke_map[:, rows][:, :, cols]
    return maps
