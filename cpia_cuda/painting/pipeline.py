"""The painting pipeline, Channel Painter In Action (paper Sec. 3.4, Fig. 4).

1. **Plan.** A planner splits the content image (for a GAN: its generated image) into regions; they
   are ordered by the order policy, overlaps go to the first region, and a background region covers
   what no region does (unless skipped). See :mod:`cpia_cuda.planning`.
2. **Paint.** For each region in plan order, a *step image* (the content with everything outside the
   region filled, see ``step_fill``) is encoded to the operating layer, and channel stroke (or
   channel flush) runs on it, restricted to the region at layer resolution (``allowed``) and starting
   from what earlier steps painted (``init_mask``), until its stopping criterion. Each painted element
   keeps the value of the step that painted it. A GAN's activation does not depend on the region,
   so it is encoded once and the regions only restrict where strokes go.
3. **Render.** The painted activation ``Y * M`` is decoded through the rest of the generator and laid
   on paper with the post-generator mask (:mod:`cpia_cuda.painting.render`), for the final image and
   for progressive frames (F spread over the run, or one every k strokes).

Everything the frames need is in the :class:`~cpia_cuda.painting.stroke_log.StrokeLog`; :func:`replay`
re-renders a painting from it.
"""

from __future__ import annotations

import contextlib
import copy

import importlib
import inspect
import itertools
import json
import os
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .._devices import device_problem
from .._ops import STROKE_COLUMNS
from .._seeds import check_seed
from ..generators import DEFAULT_GENERATOR, generator_names, load_generator
from ..generators.base import Generator, Layer
from ..ops import BACKENDS, channel_flush, channel_stroke
from ..planning.base import Planner, PlanningError, Region
from ..planning.order import POLICIES, check_labels, check_regions, order_regions, resolve_overlaps
from ..planning.registry import PLANNERS, make_planner, planner_names
from .memory import MemoryEstimate, available_memory, estimate_memory, kept_frames_bytes
from .render import (CanvasRenderer, frame_mask, frame_thresholds, grid_span, parse_background, pixels_sha256,
                     preview_shape, render_stroke_maps)
from .stroke_log import FLUSHED, NO_LAYER_CELLS, StrokeLog, current_versions

MODES = ("stroke", "flush")
STEP_FILLS = ("mean", "background", "none")
DEFAULT_FRAMES = 24
PLAN_MAX_SIDE = 1024
WHOLE_IMAGE_LABEL = "image"


class PaintingError(ValueError):
    """A painting cannot be made as asked (bad settings, nothing to paint, not enough memory)."""


class ReplayMismatchWarning(UserWarning):
    """A replay rendered other pixels than the painting its log records (other weights at the logged
    path, other package versions, or another device's floating-point results)."""


def plain_python(value: Any) -> Any:
    """``value`` with numpy scalars and paths, also inside lists, tuples and dicts, turned into Python
    numbers and strings."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return type(value)(plain_python(item) for item in value)
    if isinstance(value, dict):
        return {key: plain_python(item) for key, item in value.items()}
    return value


@dataclass(frozen=True)
class PaintSettings:
    """Every parameter of a painting; stored in the stroke log so that it can be replayed.

    ``max_strokes`` and ``max_coverage`` apply to each region (each step image), like the paper's
    per-ROI stopping criterion. ``brush`` is an int z or a nested list of bools (a brush mask).
    """

    layer: int
    tau: int
    mode: str = "stroke"
    brush: Any = 1
    m: float = 0.8
    p: int = 1
    channel_cost: float = 0.5
    sigma: float = 4.0
    min_response: float | None = 0.1
    max_strokes: int | None = None
    max_coverage: float | None = None
    planner: str | None = "segments"
    planner_options: dict = field(default_factory=dict)
    order: str = "score"
    skip_background: bool = False
    first_labels: Sequence[str] = ()
    last_labels: Sequence[str] = ()
    reverse_order: bool = False
    frames: int | None = DEFAULT_FRAMES
    every: int | None = None
    seed: int = 0
    backend: str = "auto"
    preview_size: int | None = None
    background: Sequence[float] = (1.0, 1.0, 1.0)
    step_fill: str = "mean"
    frame_batch: int = 8
    # the kind of device that painted ("cpu" or "cuda"), where a replay renders by default
    device: str | None = None

    def __post_init__(self):
        # numpy scalars (a tau read from an array, say) as Python ones, so the log's JSON takes them
        for setting in fields(self):
            object.__setattr__(self, setting.name, plain_python(getattr(self, setting.name)))

    def stroke_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`cpia_cuda.channel_stroke` (all but Y, tau, allowed, init_mask)."""
        brush = torch.tensor(self.brush, dtype=torch.bool) if isinstance(self.brush, list) else self.brush
        return dict(brush=brush, m=self.m, p=self.p, channel_cost=self.channel_cost, sigma=self.sigma,
                    min_response=self.min_response, max_strokes=self.max_strokes, max_coverage=self.max_coverage,
                    backend=self.backend)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["first_labels"], document["last_labels"] = list(self.first_labels), list(self.last_labels)
        document["background"] = list(self.background)
        return document


class PhaseTimer:
    """Wall time per phase of a run ("estimate", "plan", "encode", "strokes", "render"), device work included."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


@dataclass
class PaintResult:
    """A finished painting.

    Attributes:
        image: (3, H, W) float in [0, 1]: the final canvas at full resolution.
        frames: (F, 3, h, w): the canvas after each of ``frame_strokes`` strokes, at the preview size.
        stroke_maps: (F, 3, h, w): which channel painted each location (see ``render_stroke_maps``).
        log: the replayable :class:`StrokeLog` (stroke table, element order, plan, parameters).
        plan: the regions in painting order, masks at image resolution.
        content: (3, H, W): the image the plan was made on (the input, or a GAN's generated image).
        coverage: (C,): per channel, the fraction of layer locations where it is painted (Fig. 3).
        coverage_flush: (C,): the same for a channel flush with the same tau on the same regions.
        memory: the memory estimate the run was checked against.
        seconds: wall time of the run.
        timings: seconds per phase: "estimate" (the memory check), "plan", "encode", "strokes"
            (strokes and the comparison flush), "render" (final image, frames, stroke maps).
    """

    image: torch.Tensor
    frames: torch.Tensor
    stroke_maps: torch.Tensor
    log: StrokeLog
    plan: list[Region]
    content: torch.Tensor
    coverage: torch.Tensor
    coverage_flush: torch.Tensor
    memory: MemoryEstimate | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def frame_strokes(self) -> list[int]:
        """The stroke count each frame shows (ascending; the last is all the strokes)."""
        return self.log.frame_strokes

    @property
    def num_strokes(self) -> int:
        """Strokes made over all regions (a flush counts one per region that it changed)."""
        return self.log.num_strokes

    @property
    def stop_reasons(self) -> list[str]:
        """Why each region's strokes stopped, in plan order: the op's reasons, ``"flush"``, or
        ``"no_layer_cells"`` for a region too small or thin to own a cell of the layer grid."""
        return self.log.stop_reasons

    @property
    def settings(self) -> PaintSettings:
        """Every parameter of the painting, as logged."""
        return PaintSettings(**self.log.settings)

    def frame_mask(self, index: int) -> torch.Tensor:
        """Bool (C, h, w): the layer elements painted in frame ``index``."""
        return frame_mask(self.log.order, self.frame_strokes[index])

    def summary(self) -> str:
        """One line: strokes, regions, layer, frames, time and each region's stop reason."""
        reasons = ", ".join(f"{label}: {self.log.stop_reasons[i]}" for i, label in enumerate(self.log.region_labels))
        return (f"{self.num_strokes} strokes over {len(self.plan)} regions at layer {self.log.layer} "
                f"({self.log.layer_name}), {len(self.frame_strokes)} frames, {self.seconds:.1f} s; "
                f"stop reasons: {reasons}")


# ---------------------------------------------------------------------------------------------
# public entry points


def paint(
    content: torch.Tensor,
    *,
    generator: str | Generator = DEFAULT_GENERATOR,
    weights: str | None = None,
    condition: dict[str, Any] | None = None,
    layer: int | str | None = None,
    mode: str = "stroke",
    tau: int | None = None,
    brush: Any = 1,
    m: float = 0.8,
    p: int = 1,
    channel_cost: float = 0.5,
    sigma: float = 4.0,
    min_response: float | None = 0.1,
    max_strokes: int | None = None,
    max_coverage: float | None = None,
    planner: str | Planner | None = "segments",
    planner_options: dict[str, Any] | None = None,
    order: str = "score",
    skip_background: bool = False,
    first_labels: Sequence[str] = (),
    last_labels: Sequence[str] = (),
    reverse_order: bool = False,
    frames: int | None = None,
    every: int | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    backend: str = "auto",
    preview_size: int | None = None,
    background: Any = "white",
    step_fill: str = "mean",
    frame_batch: int = 8,
    verbose: bool = False,
    progress: ProgressCallback | None = None,
) -> PaintResult:
    """Paint ``content`` with channel strokes (or flushes) region by region, and render it.

    Args:
        content: for a style network an image (3, H, W) or (1, 3, H, W) float in [0, 1]; for a GAN
            its latent input (z_dim,) or (1, z_dim).
        generator: a registry name (``cpia_cuda.generators.generator_names()``) or a Generator.
        weights: weights path for a registry generator that needs one; with a Generator passed in,
            where its weights came from (recorded in the log for replay).
        condition: keyword arguments of ``generator.make_context`` (``{"style": 3}``,
            ``{"style_image": tensor}``, ``{"keyword": "volcano"}``); a GAN's ``inputs`` is added.
            Default none: multistyle26 then paints style 0; the others need theirs.
        layer: the operating layer l (index or name); default the middle operable layer.
        mode: ``"stroke"`` (Alg. 1) or ``"flush"`` (Eq. 3).
        tau: channels per location; default max(1, C // 4).
        brush, m, p, channel_cost, sigma, min_response, max_strokes, max_coverage: as in
            :func:`cpia_cuda.channel_stroke` (a bool brush may also come as a numpy array or nested
            lists); the stopping limits apply per region.
        planner: a planner name (``"segments"``, ``"yolo"``, ``"maskrcnn"``), a Planner, or None for
            one region covering the whole image. ``planner_options`` go to ``make_planner`` (so they
            need a planner name); ``seed`` is added when the planner takes one.
        order, skip_background, first_labels, last_labels, reverse_order: the order policy
            (:func:`cpia_cuda.planning.order.order_regions`).
        frames / every: F frames spread over the run (default 24) or one frame every k strokes.
        device: where the generator and the ops run (default: the generator's device, else CPU); a
            Generator passed in is moved there in place, as ``nn.Module.to`` does.
        seed: seeds the planner; the rest of the pipeline is deterministic.
        backend: backend of the ops ("auto", "cpu", "cuda", "reference").
        preview_size: long side of the progressive frames (default 512; never enlarged).
        background: paper colour: a colour name, ``#rrggbb`` or (r, g, b) in [0, 1].
        step_fill: what the step image holds outside its region: ``"mean"`` (the region's mean
            colour), ``"background"`` (the paper colour) or ``"none"`` (the unmasked content).
        frame_batch: frames decoded per batch.
        verbose: print the memory estimate and show progress bars.
        progress: called as ``progress(stage, done, total)`` after each step image (stage
            ``"regions"``) and each batch of frames (``"frames"``); an exception it raises ends the
            run with that exception (a way to cancel a run from another thread).

    Raises:
        PaintingError (a ValueError) for bad settings, an empty plan or a run that cannot fit in
        memory; GeneratorError / PlanningError / the ops' errors for their own arguments.
    """
    started = time.perf_counter()
    feedback = _Feedback(_check_bool("verbose", verbose), progress)
    seed = check_seed(seed, PaintingError)  # numpy integers too: the planners and the log take a plain int
    if condition is not None and not isinstance(condition, dict):
        raise PaintingError(f"condition must be a dict of make_context's keyword arguments, got "
                            f"{type(condition).__name__}")
    # numpy arrays become tensors: copied into the log like tensor conditions, and saved with it.
    condition = {key: torch.tensor(value) if isinstance(value, np.ndarray) else value
                 for key, value in plain_python(condition or {}).items()}
    generator = _resolve_generator(generator, weights, device, backend)
    with _in_eval_mode(generator), _without_autocast():
        inputs = _prepare_inputs(content, generator)
        context = _make_context(generator, condition, inputs)
        layer_info = generator.resolve_layer(_default_layer(generator) if layer is None else layer)
        settings = PaintSettings(
            layer=layer_info.index, tau=max(1, layer_info.channels // 4) if tau is None else tau, mode=mode,
            brush=_brush_setting(brush), m=m, p=p, channel_cost=channel_cost, sigma=sigma,
            min_response=min_response, max_strokes=max_strokes, max_coverage=max_coverage,
            planner=planner if isinstance(planner, str) or planner is None else getattr(planner, "name", "custom"),
            planner_options=_check_planner_options(planner, planner_options), order=order, skip_background=skip_background,
            first_labels=check_labels("first_labels", first_labels),
            last_labels=check_labels("last_labels", last_labels), reverse_order=reverse_order,
            frames=DEFAULT_FRAMES if frames is None and every is None else frames, every=every, seed=seed,
            backend=backend, preview_size=preview_size, background=parse_background(background),
            step_fill=step_fill, frame_batch=frame_batch, device=inputs.device.type,
        )
        _check_settings(settings, layer_info, inputs.device)
        _check_loggable(settings)
        planner = _resolve_planner(planner, settings)
        timer = PhaseTimer(inputs.device)
        with timer.phase("estimate"):
            estimate = _check_memory(generator, inputs, context, layer_info, settings, verbose)
        context = _context_pinned_to_content(generator, condition, inputs, context)
        with timer.phase("plan"):
            content_image = _content_image(generator, inputs, context)
            plan = make_plan(content_image, planner, settings, verbose=verbose)
        painted, flush_kept, log = _paint_regions(generator, inputs, context, layer_info, plan, settings,
                                                  condition, weights, feedback, timer)
        with timer.phase("render"):
            return _render(generator, context, layer_info, log, painted, flush_kept, plan, content_image, settings,
                           estimate, started, feedback, timer)


def replay(log: StrokeLog, *, generator: Generator | None = None, weights: str | None = None,
           device: str | torch.device | None = None, verbose: bool = False,
           progress: ProgressCallback | None = None) -> PaintResult:
    """Re-render a painting from its stroke log (plus the generator, loaded by the logged name).

    The strokes are not searched again: the element order of the log decides the mask of every
    frame, and the painted values come from re-encoding the logged step images. On the same machine
    the frames and the final image equal those of the original run.

    Args:
        log: a log from :func:`load_stroke_log` or a PaintResult's ``log``.
        generator: the Generator to render with; default the logged registry generator, loaded.
        weights: weights path, when the logged one has moved (the returned log records it).
        device: where to render (default: the given generator's device; else the kind of device that
            painted, the log's ``settings["device"]``, where it is here, else the CPU).
        verbose: print the memory estimate and show progress bars.
        progress: as for :func:`paint`.

    Raises:
        PaintingError for a log whose parts disagree (``StrokeLog.check``), that does not fit the
        generator (another layer name) or whose settings are out of range, and what :func:`paint`
        raises for a run that cannot fit.
    """
    if not isinstance(log, StrokeLog):
        hint = "; pass its .log" if isinstance(log, PaintResult) else ""
        raise TypeError(f"log must be a StrokeLog (load_stroke_log(path), or a PaintResult's .log), got "
                        f"{type(log).__name__}{hint}")
    started = time.perf_counter()
    feedback = _Feedback(_check_bool("verbose", verbose), progress)
    try:  # a log from a file was checked when read; one built or edited in memory is checked here
        log.check()
    except ValueError as error:
        raise PaintingError(f"damaged stroke log: {error}") from None
    try:
        settings = PaintSettings(**log.settings)
    except TypeError as error:  # a log written with other settings than this version has
        raise PaintingError(f"the stroke log's settings do not fit this version of cpia_cuda: {error}") from None
    # Settings the replay does not use are still copied into its log: they must be ones paint takes.
    check_seed(settings.seed, PaintingError, name="the stroke log's settings: seed")
    if settings.backend not in BACKENDS:
        raise PaintingError(f"the stroke log's settings: backend must be one of {', '.join(BACKENDS)}, got "
                            f"{settings.backend!r}")
    if settings.device not in (None, "cpu", "cuda"):
        raise PaintingError(f"the stroke log's settings: device must be 'cpu' or 'cuda', got {settings.device!r}")
    if settings.layer != log.layer:
        raise PaintingError(f"damaged stroke log: its settings say layer {settings.layer!r}, its layer entry "
                            f"{log.layer}")
    # The strokes are not searched again; the comparison flush gives the same mask on every backend,
    # so it runs on the replay's device whatever backend the painting used.
    settings = replace(settings, backend="auto", background=parse_background(settings.background))
    if generator is None:
        if log.generator not in generator_names():
            raise PaintingError(f"the stroke log was painted with generator {log.generator!r}, which the registry "
                                f"does not hold: pass it, replay(log, generator=...)")
        if weights is None and log.weights is not None and not Path(log.weights).exists():
            raise PaintingError(f"the logged weights {log.weights} are gone (moved or deleted?); give their place: "
                                f"replay(log, weights=PATH), or cpia replay --weights PATH")
        weights = log.weights if weights is None else weights
        if device is None:  # where it was painted, where that is here: the same floating-point results
            device = "cuda" if settings.device == "cuda" and device_problem("cuda") is None else "cpu"
        generator = _resolve_generator(log.generator, weights, device, settings.backend)
    else:  # the logged weights path is only a record here: it may have moved
        generator = _resolve_generator(generator, weights, device, settings.backend)
        weights = log.weights if weights is None else weights
    with _in_eval_mode(generator), _without_autocast():
        inputs = _prepare_inputs(log.content, generator)
        context = _make_context(generator, log.condition, inputs)
        layer_info = generator.resolve_layer(log.layer)
        if layer_info.name != log.layer_name:
            raise PaintingError(f"the stroke log was painted at layer {log.layer} = {log.layer_name!r}, but layer "
                                f"{log.layer} of {generator.name} is {layer_info.name!r}")
        try:
            _check_settings(settings, layer_info, inputs.device)
        except TypeError as error:  # a hand-edited log: tau = 4.0, say
            raise PaintingError(f"the stroke log's settings: {error}") from None
        timer = PhaseTimer(inputs.device)
        with timer.phase("estimate"):
            estimate = _check_memory(generator, inputs, context, layer_info, settings, verbose)
        context = _context_pinned_to_content(generator, log.condition, inputs, context)
        # The new log is a copy of the caller's (no views of its tensors), with the weights and versions
        # this replay used, so that it replays in turn.
        log = replace(copy.deepcopy(log), weights=None if weights is None else str(Path(weights).resolve()),
                      versions=current_versions())
        content_image = _content_image(generator, inputs, context)
        if tuple(log.region_masks.shape[-2:]) != tuple(content_image.shape[-2:]):
            raise PaintingError(f"the stroke log's region masks are {tuple(log.region_masks.shape[-2:])}, but "
                                f"{generator.name} makes an image of {tuple(content_image.shape[-2:])} (a damaged log, "
                                f"or another generator than the one that painted it)")
        plan = [Region(mask=mask, label=label, score=score)
                for mask, label, score in zip(log.region_masks, log.region_labels, log.region_scores)]
        order = log.order.to(inputs.device)
        ranges = log.region_stroke_ranges()
        most_channels = int((order >= 0).sum(0).max()) if order.numel() else 0
        if most_channels > settings.tau:
            raise PaintingError(f"damaged stroke log: a location has {most_channels} channels painted, more than "
                                f"its tau = {settings.tau}")

        def step(index: int, activation: torch.Tensor, allowed: torch.Tensor, _flushed: torch.Tensor) -> torch.Tensor:
            if order.shape != activation.shape:
                raise PaintingError(f"damaged stroke log: its order has shape {tuple(order.shape)}, but layer "
                                    f"{layer_info.index} gives an activation of shape {tuple(activation.shape)}")
            start, stop = ranges[index]
            painted = (order >= start) & (order < stop)
            if bool((painted & ~allowed).any()):
                raise PaintingError(f"damaged stroke log: the strokes of region {index} "
                                    f"({log.region_labels[index]!r}) paint outside its mask")
            return painted

        painted, flush_kept = _walk_steps(generator, inputs, context, layer_info, plan, settings, step, feedback,
                                          timer, log.cell_placement)
        logged_pixels = log.painting_sha256
        with timer.phase("render"):
            result = _render(generator, context, layer_info, log, painted, flush_kept, plan, content_image,
                             settings, estimate, started, feedback, timer)
        if logged_pixels is not None and result.log.painting_sha256 != logged_pixels:
            warnings.warn("the replay's painting differs from the logged one (its pixels' SHA-256): the weights "
                          "at the logged path, the package versions or the device differ from the painting's",
                          ReplayMismatchWarning, stacklevel=2)
        return result


# ---------------------------------------------------------------------------------------------
# set-up


# Modules in a run, by id: how many runs hold each, the module, and its mode before the first. Counted
# per module, not per generator: two generators (say two HookedGenerators) can share one module.
_runs_in_eval_mode: dict[int, tuple[int, torch.nn.Module, bool]] = {}
_runs_in_eval_mode_lock = threading.Lock()


@contextlib.contextmanager
def _without_autocast() -> Iterator[None]:
    """Float32 whatever autocast region the caller is in: in bfloat16 or float16 the same call
    would paint other strokes, and its log would not replay to the same pixels."""
    with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
        yield


@contextlib.contextmanager
def _in_eval_mode(generator: Generator) -> Iterator[None]:
    """The generator in eval mode for a run (a module in train mode would update its batch-norm
    statistics and drop activations); the first run to take a module saves its mode, the last to
    finish gives it back, so runs in several threads on shared modules stay in eval mode."""
    modules = list(generator.modules())
    with _runs_in_eval_mode_lock:
        for module in modules:
            runs, _, training = _runs_in_eval_mode.get(id(module), (0, module, module.training))
            _runs_in_eval_mode[id(module)] = (runs + 1, module, training)
        generator.eval()
    try:
        yield
    finally:
        with _runs_in_eval_mode_lock:
            for module in modules:
                runs, _, training = _runs_in_eval_mode.pop(id(module))
                if runs > 1:
                    _runs_in_eval_mode[id(module)] = (runs - 1, module, training)
                else:
                    module.training = training


def _resolve_generator(generator: str | Generator, weights: str | None, device: str | torch.device | None,
                       backend: str) -> Generator:
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be a path (str or os.PathLike) or None, got {type(weights).__name__}")
    if device is not None and (problem := device_problem(device, needs_kernels=backend != "reference")):
        raise PaintingError(problem)
    if isinstance(generator, str):
        return load_generator(generator, weights=weights, device="cpu" if device is None else device)
    if not isinstance(generator, Generator):
        raise PaintingError(f"generator must be a registry name or a Generator, got {type(generator).__name__}")
    # A replay loads a registry generator by its name and the logged weights: they must be real.
    if weights is not None and generator.name in generator_names() and not Path(weights).exists():
        raise PaintingError(f"weights {weights}: no such file or folder")
    return generator.to(device) if device is not None else generator


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise PaintingError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _brush_setting(brush: Any) -> Any:
    """``brush`` as the settings keep it: an int, or a bool brush (a tensor, a numpy array or nested
    lists) as nested lists. Bool, as the op wants it: ints are refused, not turned into a mask."""
    if isinstance(brush, (list, tuple, np.ndarray)):
        try:
            brush = torch.tensor(brush)
        except (TypeError, ValueError, RuntimeError):
            raise PaintingError(f"brush must be an int z >= 0 or a bool (kh, kw) mask, got {brush!r:.60}") from None
    if isinstance(brush, torch.Tensor):
        if brush.dtype != torch.bool:
            raise PaintingError(f"brush must be an int z >= 0 or a bool (kh, kw) mask, got {brush.dtype} values")
        return brush.tolist()
    return brush


def _generator_device(generator: Generator) -> torch.device:
    """Where the generator's weights are (a quantised network may hold them all as buffers)."""
    tensor = next(itertools.chain(generator.parameters(), generator.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _prepare_inputs(content: torch.Tensor, generator: Generator) -> torch.Tensor:
    """``content`` as a batch of one on the generator's device: (1, 3, H, W) image or (1, z_dim) latent."""
    if not isinstance(content, torch.Tensor):
        raise PaintingError(f"content must be a torch.Tensor, got {type(content).__name__}")
    expected_dims = 3 if generator.input_kind == "image" else 1
    if content.dim() == expected_dims:
        content = content.unsqueeze(0)
    not_rgb = expected_dims == 3 and content.dim() == 4 and content.shape[1] != 3  # plan, steps, outputs are RGB
    if content.dim() != expected_dims + 1 or content.shape[0] != 1 or not_rgb:
        what = "an image (3, H, W) or (1, 3, H, W)" if expected_dims == 3 else "a latent (z_dim,) or (1, z_dim)"
        raise PaintingError(f"{generator.name} paints {what}, got a tensor of shape {tuple(content.shape)}")
    if not content.is_floating_point():
        raise PaintingError(f"content must be a float tensor, got {content.dtype}")
    if content.layout != torch.strided or content.is_meta:
        raise PaintingError(f"content must be a dense tensor with values, got a {content.layout} tensor on "
                            f"{content.device}")
    if content.numel() == 0:
        raise PaintingError(f"content must not be empty, got a tensor of shape {tuple(content.shape)}")
    generator.check_inputs(content)
    content = content.to(device=_generator_device(generator), dtype=torch.float32)
    if not bool(torch.isfinite(content).all()):  # after the conversion: 1e39 in float64 is Inf in float32
        raise PaintingError("content must be finite (in float32), got NaN or Inf values")
    return content


def _make_context(generator: Generator, condition: dict[str, Any], inputs: torch.Tensor) -> Any:
    condition = {k: v.to(inputs.device) if isinstance(v, torch.Tensor) else v for k, v in condition.items()}
    if generator.input_kind != "image":
        condition["inputs"] = inputs
    try:
        return generator.make_context(**condition)
    except TypeError as error:  # a keyword make_context does not take
        raise PaintingError(f"{generator.name}: condition {sorted(condition)} does not fit make_context: "
                            f"{error}") from None


def _context_pinned_to_content(generator: Generator, condition: dict[str, Any], inputs: torch.Tensor,
                               context: Any) -> Any:
    """The context to paint with. A generator that decodes by replaying the inputs it encoded
    (HookedGenerator: ``make_context(inputs=...)``) gets them pinned to the content image, so that it
    does not replay the step image encoded last; the memory estimate's probe runs (a shrunk image)
    need the unpinned context."""
    if generator.input_kind != "image" or "inputs" not in inspect.signature(generator.make_context).parameters:
        return context
    return _make_context(generator, {"inputs": inputs, **condition}, inputs)


def _default_layer(generator: Generator) -> int:
    layers = list(generator.layers())
    return layers[len(layers) // 2].index


def _check_settings(settings: PaintSettings, layer: Layer, device: torch.device) -> None:
    """Validate the pipeline's own settings, then the ops' by calls on a (C, 1, 1) zero activation
    (so the messages are the ops' own and nothing is checked twice). A flush run has its stroke
    settings checked too: they are logged, and a bad value is an error in either mode."""
    if settings.mode not in MODES:
        raise PaintingError(f"mode must be one of {MODES}, got {settings.mode!r}")
    if settings.order not in POLICIES:
        raise PaintingError(f"order must be one of {POLICIES}, got {settings.order!r}")
    if settings.step_fill not in STEP_FILLS:
        raise PaintingError(f"step_fill must be one of {STEP_FILLS}, got {settings.step_fill!r}")
    for name in ("skip_background", "reverse_order"):
        _check_bool(name, getattr(settings, name))
    if settings.frames is not None and settings.every is not None:
        raise PaintingError("give frames= or every=, not both")
    for name in ("frames", "every", "preview_size", "frame_batch"):
        value = getattr(settings, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise PaintingError(f"{name} must be an int >= 1, got {value!r}")
    probe = torch.zeros((layer.channels, 1, 1), dtype=torch.float32, device=device)
    channel_flush(probe, settings.tau, backend=settings.backend)
    channel_stroke(probe, settings.tau, **settings.stroke_options())


def _check_loggable(settings: PaintSettings) -> None:
    """Refuse, before painting, a setting that the stroke log's JSON file cannot hold. (A condition
    of a generator of one's own may hold anything; the log file is refused when it is written.)"""
    for setting in fields(settings):
        try:
            json.dumps(getattr(settings, setting.name))
        except (TypeError, ValueError) as error:
            raise PaintingError(f"{setting.name} cannot be written to the stroke log file ({error})") from None


def _check_memory(generator: Generator, inputs: torch.Tensor, context: Any, layer: Layer,
                  settings: PaintSettings, verbose: bool) -> MemoryEstimate:
    frames_at_once = min(settings.frame_batch, settings.frames or settings.frame_batch)
    # with every=k the number of frames is known after the strokes: _check_kept_frames then
    estimate = estimate_memory(generator, inputs, context, layer, preview_size=settings.preview_size,
                               frame_batch=frames_at_once, kept_frames=settings.frames or 0)
    if verbose:
        print(estimate.describe())
    if not estimate.fits:
        raise PaintingError(f"this painting does not fit: {estimate.describe()}; use a smaller image, fewer "
                            f"frames, a smaller preview size or frame batch, or a device with more memory")
    return estimate


def _check_kept_frames(frames: int, preview: tuple[int, int], settings: PaintSettings) -> None:
    """PaintingError when the result's frames and stroke maps cannot fit in host memory."""
    needed, available = kept_frames_bytes(frames, preview), available_memory("cpu")
    if available is not None and needed > available:
        asked = f"every={settings.every}" if settings.every else f"frames={settings.frames}"
        raise PaintingError(f"{frames} frames ({asked}) and their stroke maps at {preview[0]}x{preview[1]} need "
                            f"{needed / 1024 ** 3:.2f} GiB, more than the {available / 1024 ** 3:.2f} GiB available; "
                            f"ask for fewer frames or a smaller preview size")


@torch.no_grad()
def _content_image(generator: Generator, inputs: torch.Tensor, context: Any) -> torch.Tensor:
    """The image (3, H, W) that is planned and painted: the input, or what a GAN generates from it."""
    if generator.input_kind == "image":
        return inputs[0]
    return generator.forward(inputs, context)[0].to(torch.float32).clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# planning


def make_plan(image: torch.Tensor, planner: str | Planner | None, settings: PaintSettings, *,
              verbose: bool = False) -> list[Region]:
    """Regions of ``image`` (3, H, W) in painting order, overlaps resolved, background added unless skipped.

    ``planner=None`` plans one region, the whole image. An image larger than ``PLAN_MAX_SIDE`` is
    planned on an area-downscaled copy and the masks are brought back by nearest upsampling
    (segmenting 16 M pixels costs minutes and gigabytes, and regions need no finer outline); a
    planner returns masks of the size of the image it is given. ``verbose`` prints a note for each
    first/last label that no region of the plan has.
    """
    shape = tuple(image.shape[-2:])
    if planner is None:
        regions = [Region(mask=torch.ones(shape, dtype=torch.bool), label=WHOLE_IMAGE_LABEL, score=1.0)]
    else:
        planner = _resolve_planner(planner, settings)
        planned_on = _downscale_for_planning(image.detach().cpu())
        returned = planner.plan(planned_on)
        try:
            planned = check_regions(returned, shape=tuple(planned_on.shape[-2:]))
        except PlanningError as error:
            raise PlanningError(f"{type(planner).__name__}.plan(image) returned bad regions: {error}") from None
        regions = [Region(mask=_upscale_mask(r.mask.cpu(), shape), label=r.label, score=float(r.score))
                   for r in planned]
    ordered = order_regions(regions, settings.order, skip_background=settings.skip_background,
                            last_labels=tuple(settings.last_labels), first_labels=tuple(settings.first_labels),
                            reverse=settings.reverse_order, shape=shape)
    plan = resolve_overlaps(ordered)
    if not plan:
        raise PaintingError("the plan has no region to paint (the planner found nothing and the background "
                            "is skipped)")
    if verbose:
        _note_unmatched_labels(ordered, plan, settings)
    return plan


def _resolve_planner(planner: str | Planner | None, settings: PaintSettings) -> Planner | None:
    """A planner name as the planner it names (built with the settings' options), a planner as is."""
    if planner is None:
        return None
    if isinstance(planner, str):
        return make_planner(planner, **_planner_options(planner, settings))
    if not callable(getattr(planner, "plan", None)):
        raise PaintingError(f"planner must be None, a name among {planner_names()} or an object with a "
                            f"plan(image) method (a cpia_cuda.planning.Planner), got {type(planner).__name__}")
    return planner


def _note_unmatched_labels(ordered: Sequence[Region], plan: Sequence[Region], settings: PaintSettings) -> None:
    """Say which of the first/last labels no region has (a typo, or nothing of the kind in the image),
    or only regions that lost every pixel to regions painted before them."""
    planned = {region.label for region in ordered}
    painted = sorted({region.label for region in plan})
    for option, wanted in (("first_labels", settings.first_labels), ("last_labels", settings.last_labels)):
        for label in wanted:
            if label not in planned:
                print(f"note: {option}: no region is labelled {label} (the plan's labels: {', '.join(painted)})")
            elif label not in painted:
                print(f"note: {option}: the regions labelled {label} lie under regions painted before them "
                      f"and keep no pixel")


def _downscale_for_planning(image: torch.Tensor) -> torch.Tensor:
    height, width = image.shape[-2:]
    if max(height, width) <= PLAN_MAX_SIDE:
        return image
    scale = PLAN_MAX_SIDE / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(image[None], size=size, mode="area")[0].clamp(0.0, 1.0)


def _upscale_mask(mask: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    if tuple(mask.shape) == shape:
        return mask
    return F.interpolate(mask[None, None].to(torch.uint8), size=shape, mode="nearest")[0, 0].bool()


def _check_planner_options(planner: str | Planner | None, options: Any) -> dict[str, Any]:
    """``planner_options`` as a dict: keyword arguments of ``make_planner``, so only with a planner name."""
    if options is None:
        return {}
    if not isinstance(options, dict) or not all(isinstance(key, str) for key in options):
        raise PaintingError(f"planner_options must be a dict of option names (str) to values, got {options!r:.80}")
    if options and not isinstance(planner, str):
        given = "planner=None (one region, no planner)" if planner is None else f"a {type(planner).__name__} object"
        raise PaintingError(f"planner_options (--planner-option) are for a planner given by name, got "
                            f"{sorted(options)} with {given}")
    return dict(options)


def _planner_options(name: str, settings: PaintSettings) -> dict[str, Any]:
    """The user's planner options, plus ``seed`` when the planner takes one and none was given."""
    options = dict(settings.planner_options)
    if name in PLANNERS and "seed" not in options:
        module, class_name = PLANNERS[name]
        planner_class = getattr(importlib.import_module(module), class_name)
        if "seed" in inspect.signature(planner_class).parameters:
            options["seed"] = settings.seed
    return options


def regions_at_layer(masks: torch.Tensor, grid: Sequence[int], size_multiple: int = 1,
                     placement: str = "stride") -> torch.Tensor:
    """Region masks (R, H, W) at image resolution -> (R, h, w) on the layer grid.

    Each layer cell goes to the region that covers the largest fraction of the image pixels under it
    (area-average downsampling), ties to the region first in plan order; a cell mostly covered by no
    region (possible only when the background is skipped) belongs to none. So the layer masks
    partition the grid like the image masks partition the image. The cells lie over the image as the
    network lays them (``render.grid_span``: a stride's worth of pixels each, from the top/left), so a
    cell at the bottom/right edge may reach past the image: its fractions are of the image pixels it
    has, and a cell with none (a network that pads its input) takes those of the image's edge.
    ``placement="stretch"`` stretches the grid over the image instead, as cpia_cuda 0.1.0 did (for the
    replay of its logs: ``StrokeLog.cell_placement``).
    """
    height, width = masks.shape[-2:]
    if placement == "stretch":
        span = (height, width)
    else:
        span = (grid_span(grid[0], height, size_multiple), grid_span(grid[1], width, size_multiple))
    pixels = masks.to(torch.float32).unsqueeze(0)
    fractions = F.interpolate(pixels, size=tuple(grid), mode="area")[0] if span == (height, width) else \
        _edge_cell_fractions(pixels, grid, (0, span[1] - width, 0, span[0] - height))
    uncovered = (1.0 - fractions.sum(0, keepdim=True)).clamp_(min=0.0)
    owner = torch.cat([fractions, uncovered]).argmax(0)  # argmax returns the first maximum
    return owner.unsqueeze(0) == torch.arange(masks.shape[0], device=owner.device).view(-1, 1, 1)


def _edge_cell_fractions(pixels: torch.Tensor, grid: Sequence[int], past: tuple[int, int, int, int]) -> torch.Tensor:
    """Region fractions (R, h, w) of masks (1, R, H, W) whose grid reaches ``past`` (F.pad order) the
    image: of the image pixels under each cell, or, for a cell with none, of the image's edge."""
    image_share = F.interpolate(F.pad(torch.ones_like(pixels[:, :1]), past), size=tuple(grid), mode="area")[0]
    fractions = F.interpolate(F.pad(pixels, past), size=tuple(grid), mode="area")[0] / image_share.clamp(min=1e-12)
    outside = image_share[0] == 0
    if bool(outside.any()):
        edge = F.interpolate(F.pad(pixels, past, mode="replicate"), size=tuple(grid), mode="area")[0]
        fractions[:, outside] = edge[:, outside]
    return fractions


# ---------------------------------------------------------------------------------------------
# painting


def step_image(image: torch.Tensor, mask: torch.Tensor, fill: str, background: Sequence[float]) -> torch.Tensor:
    """The step image of a region: ``image`` (1, 3, H, W) inside ``mask`` (H, W), filled outside.

    ``fill``: ``"mean"`` the region's mean colour (no edge at the region border for the convolutions
    to respond to, and the instance norms see the region's own colours), ``"background"`` the paper
    colour, ``"none"`` the image unchanged.
    """
    if fill == "none":
        return image
    mask = mask.to(image.device)
    if fill == "mean":
        colour = image[0][:, mask].mean(dim=1)
    else:
        colour = torch.tensor(list(background), dtype=image.dtype, device=image.device)
    return torch.where(mask, image, colour.view(1, 3, 1, 1))


@torch.no_grad()
def _step_activations(generator: Generator, inputs: torch.Tensor, context: Any, layer: Layer,
                      plan: Sequence[Region], settings: PaintSettings) -> Iterator[tuple[int, torch.Tensor]]:
    """(region index, activation (C, h, w)) for each region in plan order.

    A GAN, or ``step_fill="none"``, has one activation for all regions: it is encoded once.
    """
    shared = None
    for index, region in enumerate(plan):
        if generator.input_kind != "image" or settings.step_fill == "none":
            if shared is None:
                shared = generator.encode(inputs, layer.index, context)[0].to(torch.float32)
            yield index, shared
        else:
            step = step_image(inputs, region.mask, settings.step_fill, settings.background)
            yield index, generator.encode(step, layer.index, context)[0].to(torch.float32)


#: ``progress(stage, done, total)``: stage "regions" (after each step image) or "frames" (after each
#: batch of frames); an exception it raises ends the run with that exception.
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class _Feedback:
    """What a run tells its caller as it goes: printed notes and tqdm bars (verbose), callbacks."""

    verbose: bool = False
    progress: ProgressCallback | None = None

    def __post_init__(self):
        if self.progress is not None and not callable(self.progress):
            raise PaintingError(f"progress must be a callable progress(stage, done, total), got "
                                f"{type(self.progress).__name__}")

    def bar(self, total: int, stage: str) -> "_Progress":
        return _Progress(total, stage, self)


class _Progress:
    """One stage's progress: a tqdm bar on stderr when verbose and tqdm is installed, and the callback."""

    def __init__(self, total: int, stage: str, feedback: _Feedback):
        self.total, self.stage, self.done = total, stage, 0
        self.callback = feedback.progress
        self.tqdm = None
        if feedback.verbose:
            try:
                from tqdm.auto import tqdm

                self.tqdm = tqdm(total=total, desc=f"painting {stage}" if stage == "regions" else f"rendering {stage}",
                                 file=sys.stderr, leave=False)
            except ImportError:
                pass

    def update(self, count: int = 1) -> None:
        self.done += count
        if self.tqdm is not None:
            self.tqdm.update(count)
        if self.callback is not None:
            self.callback(self.stage, self.done, self.total)

    def note(self, text: str) -> None:
        """Print ``text`` (verbose runs) on its own line, above the bar."""
        if self.tqdm is not None:
            self.tqdm.write(text, file=sys.stdout)
        else:
            print(text)

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()


def _walk_steps(generator: Generator, inputs: torch.Tensor, context: Any, layer: Layer, plan: Sequence[Region],
                settings: PaintSettings, step: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                feedback: _Feedback, timer: PhaseTimer,
                cell_placement: str = "stride") -> tuple[torch.Tensor, torch.Tensor]:
    """Feed the step images in plan order and accumulate the painting.

    A channel flush with the same tau runs on each step (the comparison of the paper's Fig. 3).
    ``step(index, activation, allowed, flushed)``, given that flush, returns the bool (C, h, w) elements
    that step painted; they take their values from that step's activation. Returns (painted activation,
    flush-kept mask).
    """
    painted = kept = allowed_masks = None
    steps = _step_activations(generator, inputs, context, layer, plan, settings)
    # closed on errors too, so that a message does not land on the bar's line
    with contextlib.closing(feedback.bar(len(plan), "regions")) as progress:
        while True:
            with timer.phase("encode"):
                next_step = next(steps, None)
            if next_step is None:
                break
            index, activation = next_step
            with timer.phase("strokes"):
                if painted is None:
                    painted = torch.zeros_like(activation)
                    kept = torch.zeros(activation.shape, dtype=torch.bool, device=activation.device)
                    masks = torch.stack([region.mask for region in plan])
                    allowed_masks = regions_at_layer(masks, activation.shape[-2:], generator.size_multiple,
                                                     cell_placement).to(activation.device)
                    _check_layer_cells(plan, allowed_masks, layer, progress.note if feedback.verbose else None)
                flushed = channel_flush(activation, settings.tau, allowed=allowed_masks[index],
                                        backend=settings.backend)
                new = step(index, activation, allowed_masks[index], flushed)
                painted = torch.where(new, activation, painted)
                kept |= flushed
            progress.update(1)
    return painted, kept


def _check_layer_cells(plan: Sequence[Region], allowed_masks: torch.Tensor, layer: Layer,
                       note: Callable[[str], None] | None) -> None:
    """PaintingError when no region owns a cell of the layer grid; a ``note`` naming the regions that
    own none (they get no strokes: their pixels go with the cells of other regions)."""
    grid = "x".join(str(size) for size in allowed_masks.shape[-2:])
    owns_cells = allowed_masks.flatten(1).any(1).tolist()
    if not any(owns_cells):
        raise PaintingError(f"no region of the plan covers most of any cell of layer {layer.index}'s {grid} grid: "
                            f"nothing to paint; paint at a finer layer or do not skip the background")
    if note is not None and not all(owns_cells):
        labels = [region.label for region, owns in zip(plan, owns_cells) if not owns]
        note(f"note: {len(labels)} region(s) ({', '.join(labels)}) cover most of no cell of layer {layer.index}'s "
             f"{grid} grid and get no strokes (stop reason {NO_LAYER_CELLS!r})")


def _paint_regions(generator: Generator, inputs: torch.Tensor, context: Any, layer: Layer,
                   plan: Sequence[Region], settings: PaintSettings, condition: dict[str, Any],
                   weights: str | None, feedback: _Feedback,
                   timer: PhaseTimer) -> tuple[torch.Tensor, torch.Tensor, StrokeLog]:
    """Stroke (or flush) every step image; return the painted activation, the flush mask and the log."""
    order = None
    rows, stop_reasons = [], []

    def step(index: int, activation: torch.Tensor, allowed: torch.Tensor, flushed: torch.Tensor) -> torch.Tensor:
        nonlocal order
        if order is None:
            order = torch.full(activation.shape, -1, dtype=torch.int32, device=activation.device)
        offset = sum(len(r) for r in rows)
        step_order, records, reason = _paint_step(activation, allowed, order >= 0, flushed, settings)
        new = step_order >= 0
        order = torch.where(new, step_order + offset, order)
        region_column = torch.full((records.shape[0], 1), index, dtype=torch.int32)
        rows.append(torch.cat([region_column, records.cpu().to(torch.int32)], dim=1))
        stop_reasons.append(reason)
        return new

    painted, kept = _walk_steps(generator, inputs, context, layer, plan, settings, step, feedback, timer)
    log = StrokeLog(
        order=order.cpu(), strokes=torch.cat(rows), region_masks=torch.stack([r.mask.cpu() for r in plan]),
        region_labels=[r.label for r in plan], region_scores=[float(r.score) for r in plan],
        stop_reasons=stop_reasons,
        # copies, not views of the caller's tensors: a log must not change when they do
        content=(inputs[0] if generator.input_kind == "image" else inputs).detach().to("cpu", copy=True),
        # absolute, so that the log replays from any working folder
        generator=generator.name, weights=None if weights is None else str(Path(weights).resolve()),
        condition={k: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else v
                   for k, v in condition.items()},
        layer=layer.index, layer_name=layer.name, settings=settings.to_json(), frame_strokes=[],
    )
    return painted, kept, log


def _paint_step(activation: torch.Tensor, allowed: torch.Tensor, painted: torch.Tensor, flushed: torch.Tensor,
                settings: PaintSettings) -> tuple[torch.Tensor, torch.Tensor, str]:
    """One step image: (stroke order of the step, its (S, len(STROKE_COLUMNS)) stroke records, stop reason).

    A flush (``flushed``: the step's channel flush) is one action: every element it keeps that is not
    painted yet gets index 0, recorded as ``(-1, -1, -1, elements, tau)``.
    """
    if not bool(allowed.any()):
        return (torch.full(activation.shape, -1, dtype=torch.int32, device=activation.device),
                torch.empty((0, len(STROKE_COLUMNS)), dtype=torch.int32), NO_LAYER_CELLS)
    if settings.mode == "stroke":
        result = channel_stroke(activation, settings.tau, allowed=allowed, init_mask=painted,
                                **settings.stroke_options())
        return result.order, result.strokes, result.stop_reason
    kept = flushed & ~painted
    count = int(kept.sum())
    step_order = torch.where(kept, 0, -1).to(torch.int32)
    records = torch.tensor([[-1, -1, -1, count, settings.tau]] if count else [], dtype=torch.int32)
    records = records.view(-1, len(STROKE_COLUMNS))
    return step_order, records, FLUSHED


# ---------------------------------------------------------------------------------------------
# rendering


def channel_coverage(mask: torch.Tensor) -> torch.Tensor:
    """Per channel, the fraction of layer locations where ``mask`` (C, h, w) is on (paper Fig. 3)."""
    return mask.to(torch.float32).mean(dim=(1, 2))


def _render(generator: Generator, context: Any, layer: Layer, log: StrokeLog, painted: torch.Tensor,
            flush_kept: torch.Tensor, plan: list[Region], content_image: torch.Tensor, settings: PaintSettings,
            estimate: MemoryEstimate | None, started: float, feedback: _Feedback, timer: PhaseTimer) -> PaintResult:
    """Render the final image, the frames and the stroke maps of a painted activation."""
    order = log.order.to(painted.device)
    renderer = CanvasRenderer(generator=generator, layer=layer, context=context, tau=settings.tau,
                              background=tuple(settings.background), image_size=tuple(content_image.shape[-2:]))
    log.frame_strokes = frame_thresholds(log.num_strokes, settings.frames, settings.every)
    # before any rendering: a refusal should not come after the full-size decode
    _check_kept_frames(len(log.frame_strokes), preview_shape(content_image.shape[-2:], settings.preview_size),
                       settings)
    image = renderer.render_full(painted, order >= 0).cpu()
    log.painting_sha256 = pixels_sha256(image)
    with contextlib.closing(feedback.bar(len(log.frame_strokes), "frames")) as progress:
        frames = renderer.render_frames(painted, order, log.frame_strokes, settings.preview_size,
                                        settings.frame_batch, progress=progress.update)
    if frames.shape[-2:] == image.shape[-2:]:  # the last frame is the painting: the same pixels, whatever the batch
        frames[-1] = image
    stroke_maps = render_stroke_maps(order, log.frame_strokes, settings.tau, tuple(frames.shape[-2:]),
                                     tuple(settings.background), tuple(content_image.shape[-2:]),
                                     generator.size_multiple)
    return PaintResult(
        image=image, frames=frames, stroke_maps=stroke_maps, log=log, plan=plan,
        content=content_image.detach().to("cpu", copy=True),
        coverage=channel_coverage(log.order >= 0), coverage_flush=channel_coverage(flush_kept).cpu(),
        memory=estimate, seconds=time.perf_counter() - started, timings=timer.seconds,
    )
