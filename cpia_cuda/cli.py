"""The ``cpia`` command: paint an image, paint a GAN sample, list layers, replay a log, run a demo.

    cpia paint photo.jpg --style 7 --layer 8 --tau 8 -o out/
    cpia generate --gan eyes --keyword blue --seed 3 -o eyes/
    cpia layers multistyle26 --size 512 512
    cpia replay out/stroke_log.json -o again/
    cpia demo

Errors in the arguments or the inputs print one line ``cpia: error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .generators.biggan import DEFAULT_TRUNCATION
from .ops import BACKENDS
from .painting.pipeline import DEFAULT_FRAMES, MODES, STEP_FILLS, paint
from .painting.render import DEFAULT_PREVIEW_SIZE
from .planning.order import POLICIES
from .planning.registry import planner_names

DEMO_OUTPUT = "cpia-demo"
DEMO_SIZE = 512
DEMO_MIN_SIZE, DEMO_MAX_SIZE = 16, 8192  # the astronaut is 512 px; 8192 is 16x its side
# A res.* layer of multistyle26 with bold strokes: style 7, layer 8 (res.5), tau 8 of 32 channels.
DEMO_SETTINGS = dict(condition={"style": 7}, layer=8, tau=8, min_response=0.1, frames=24)
LAYERS_DEFAULT_SIZE = (256, 256)


# ---------------------------------------------------------------------------------------------
# arguments


def _layer(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


def _planner_option(text: str) -> tuple[str, Any]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    for convert in (int, float):
        try:
            return key, convert(value)
        except ValueError:
            pass
    return key, value


def _optional_real(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or none, got {text!r}") from None


def _background(text: str) -> str | tuple[float, ...]:
    """R,G,B as floats; any other text (a colour name, #rrggbb, rgb(...)) as it is, for paint() to check."""
    if "," not in text or "(" in text:
        return text
    try:
        rgb = tuple(float(part) for part in text.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3:
        raise argparse.ArgumentTypeError(f"expected a colour name, #rrggbb or R,G,B in [0, 1], got {text!r}")
    return rgb


def _labels(text: str) -> list[str]:
    labels = [label.strip() for label in text.split(",")]
    if not all(labels):
        raise argparse.ArgumentTypeError(f"expected comma-separated labels, got {text!r}")
    return labels


# The options' defaults are paint()'s own, so that the command and the Python API cannot drift apart.
_PAINT_DEFAULTS = {name: parameter.default for name, parameter in inspect.signature(paint).parameters.items()}


def _add_painting_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``paint`` and ``generate`` (defaults: those of ``paint()``)."""
    default = _PAINT_DEFAULTS
    stroke = parser.add_argument_group("channel operation")
    stroke.add_argument("--layer", type=_layer, help="operating layer, index or name (default: the middle one)")
    stroke.add_argument("--mode", choices=MODES, default=default["mode"],
                        help=f"channel stroke (greedy strokes) or channel flush (top tau at once) "
                             f"(default {default['mode']})")
    stroke.add_argument("--tau", type=int, help="channels per location (default: max(1, C // 4))")
    stroke.add_argument("--brush", type=int, default=default["brush"],
                        help=f"brush half size z: a (2z+1)^2 box (default {default['brush']})")
    stroke.add_argument("--m", type=float, default=default["m"],
                        help=f"stroke sensitivity in (0, 1] (default {default['m']})")
    stroke.add_argument("--p", type=int, default=default["p"],
                        help=f"stroke penetration, channels per stroke (default {default['p']})")
    stroke.add_argument("--channel-cost", type=float, default=default["channel_cost"],
                        help=f"g in [0, 1] (default {default['channel_cost']})")
    stroke.add_argument("--sigma", type=float, default=default["sigma"],
                        help=f"movement-cost width (default {default['sigma']:g})")
    stroke.add_argument("--min-response", type=_optional_real, default=default["min_response"],
                        help=f"stop a region below this fraction of its largest response (default "
                             f"{default['min_response']}; 0 still stops at negative responses, none never stops "
                             f"on the response)")
    stroke.add_argument("--max-strokes", type=int, help="stop a region after this many strokes")
    stroke.add_argument("--max-coverage", type=float, help="stop a region at this covered fraction")
    stroke.add_argument("--backend", default=default["backend"], choices=BACKENDS,
                        help="implementation of the ops (default: the fused one for the device); all give "
                             "identical results")

    plan = parser.add_argument_group("plan")
    plan.add_argument("--planner", default=default["planner"], choices=(*planner_names(), "none"),
                      help="segments (default; covers every pixel), yolo or maskrcnn (COCO detectors), or none "
                           "(one region, the whole image)")
    plan.add_argument("--planner-option", type=_planner_option, action="append", default=[], metavar="KEY=VALUE",
                      help="planner option, e.g. num_regions=4 or weights=PATH (repeatable)")
    plan.add_argument("--order", default=default["order"], choices=POLICIES,
                      help="score (default), area, foreground-first or background-first (the background is "
                           "what no detected region covers: the segments planner leaves none)")
    plan.add_argument("--reverse-order", action="store_true", help="paint the regions in the opposite order")
    plan.add_argument("--skip-background", action="store_true",
                      help="leave the part no region covers unpainted")
    plan.add_argument("--first-labels", type=_labels, action="extend", default=[], metavar="LABEL[,LABEL...]",
                      help="paint regions with these labels first (e.g. person; repeatable)")
    plan.add_argument("--last-labels", type=_labels, action="extend", default=[], metavar="LABEL[,LABEL...]",
                      help="paint regions with these labels last, the last listed at the very end")
    plan.add_argument("--step-fill", default=default["step_fill"], choices=STEP_FILLS,
                      help="step image outside its region (default: the region's mean colour)")

    render = parser.add_argument_group("rendering and output")
    frames = render.add_mutually_exclusive_group()
    frames.add_argument("--frames", type=int, help=f"frames spread over the painting (default {DEFAULT_FRAMES})")
    frames.add_argument("--every", type=int, help="a frame every K strokes")
    render.add_argument("--preview-size", type=int, help=f"long side of the frames (default {DEFAULT_PREVIEW_SIZE})")
    render.add_argument("--frame-batch", type=int, default=default["frame_batch"],
                        help=f"frames decoded at once (default {default['frame_batch']})")
    render.add_argument("--background", type=_background, default=default["background"],
                        help="paper colour (name, #rrggbb or R,G,B in [0, 1]), also behind transparent input pixels")
    render.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    render.add_argument("--seed", type=int, default=default["seed"],
                        help=f"seeds the planner and a GAN's latent: same seed, same output (default "
                             f"{default['seed']})")
    render.add_argument("--overwrite", action="store_true",
                        help="replace existing output files (and remove those of an earlier run)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cpia", description="Channel Painter In Action")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    paint = commands.add_parser("paint", help="paint an image through a style-transfer network")
    paint.add_argument("image", help="content image file")
    style = paint.add_mutually_exclusive_group()
    style.add_argument("--style", type=int, help="built-in style index (multistyle26: 0..25; default 0)")
    style.add_argument("--style-image", help="style image file (generators arbitrary, msg)")
    paint.add_argument("--generator", default="multistyle26",
                       help="multistyle26 (default), arbitrary or msg; `cpia layers GENERATOR` lists its layers")
    paint.add_argument("--weights", help="weights file or folder, for generators that need one")
    paint.add_argument("-o", "--output", default="cpia-out", help="output folder (default ./cpia-out)")
    _add_painting_arguments(paint)

    generate = commands.add_parser("generate", help="paint a GAN sample")
    generate.add_argument("--gan", required=True, choices=("biggan", "eyes"),
                          help="biggan (weights from a local folder) or eyes (the DCGAN of omniart-eye-generator)")
    generate.add_argument("--weights", help="weights (biggan: its folder)")
    generate.add_argument("--keyword", required=True,
                          help="class keyword (ImageNet name, or an eye colour), or a class index")
    generate.add_argument("--truncation", type=float,
                          help=f"BigGAN truncation in (0, 1] (default {DEFAULT_TRUNCATION})")
    generate.add_argument("-o", "--output", default="cpia-out", help="output folder (default ./cpia-out)")
    _add_painting_arguments(generate)

    layers = commands.add_parser("layers", help="list the operable layers of a generator")
    layers.add_argument("generator", nargs="?", default="multistyle26",
                        help="multistyle26 (default), arbitrary, msg, biggan or eyes")
    layers.add_argument("--weights", help="weights, for generators that need them (msg, biggan)")
    layers.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=LAYERS_DEFAULT_SIZE,
                        help="input size for the shapes (image generators; default 256 256)")

    replay = commands.add_parser("replay", help="re-render a painting from its stroke log")
    replay.add_argument("log", help="stroke_log.json, its .npz, their stem, or the output folder")
    replay.add_argument("-o", "--output", required=True, help="output folder")
    replay.add_argument("--weights", help="weights, when the logged path has moved")
    replay.add_argument("--device", help="cpu, cuda or cuda:N (default: the kind that painted, cpu or cuda, when "
                                         "available here, else cpu)")
    replay.add_argument("--overwrite", action="store_true", help="replace existing output files")

    demo = commands.add_parser("demo", help="paint scikit-image's astronaut with the embedded model")
    demo.add_argument("-o", "--output", default=DEMO_OUTPUT, help=f"output folder (default ./{DEMO_OUTPUT})")
    demo.add_argument("--size", type=int, default=DEMO_SIZE,
                      help=f"long side of the image, {DEMO_MIN_SIZE} to {DEMO_MAX_SIZE} (default {DEMO_SIZE})")
    demo.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    demo.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.command_parsers = commands.choices  # for errors in a command's usage
    return parser


# ---------------------------------------------------------------------------------------------
# helpers


def resolve_device(name: str | None) -> str:
    """``--device``: default CUDA when a GPU and the CUDA kernels are there, else the CPU."""
    from . import _ops
    from ._devices import device_problem

    if name is None:
        return "cuda" if torch.cuda.is_available() and _ops.cuda_kernels_available() else "cpu"
    problem = device_problem(name, name="--device")
    if problem is not None:
        raise ValueError(problem)
    return name


def load_image(path: str | Path, background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """An image file as a float (3, H, W) tensor in [0, 1], turned as its EXIF orientation says.

    8-bit images are uint8 / 255 (so the log stores them exactly), 16-bit grayscale / 65535;
    transparent pixels are composited over ``background`` (the paper colour).
    """
    from PIL import Image, ImageOps

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"image {path}: a folder, not an image file")
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    with warnings.catch_warnings():
        # Large images are for the memory estimate to judge; PIL only refuses the absurd ones.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                rgb, alpha = _image_channels(ImageOps.exif_transpose(image), path)
        except Image.DecompressionBombError as error:
            raise ValueError(f"image {path}: {str(error).rstrip('.')}; downscale it first") from None
    if alpha is not None:
        paper = torch.tensor(background, dtype=torch.float32).view(3, 1, 1)
        rgb = rgb * alpha + paper * (1.0 - alpha)
    return rgb


def _image_channels(image, path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(3, H, W) colours and (1, H, W) opacity (None when opaque) of a PIL image, floats in [0, 1]."""
    if image.mode.startswith("I"):  # 16-bit grayscale (PNG, TIFF; older Pillows open 16-bit PNGs as mode I)
        raw = np.asarray(image, dtype=np.float32)
        if raw.size and (raw.min() < 0 or raw.max() > 65535):
            raise ValueError(f"image {path}: 32-bit integer values outside 0..65535 are not supported; save it "
                             f"with 8 or 16 bits per channel")
        gray = torch.from_numpy(raw / 65535.0).clamp_(0.0, 1.0).expand(3, -1, -1).contiguous()
        transparent = image.info.get("transparency")  # a PNG's tRNS: the one gray value that is transparent
        if isinstance(transparent, int) and bool((raw == transparent).any()):
            return gray, torch.from_numpy(raw != transparent).to(torch.float32)[None]
        return gray, None
    if image.mode == "F":
        raise ValueError(f"image {path}: floating-point images (PIL mode F) are not supported; save it with "
                         "8 or 16 bits per channel")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = torch.from_numpy(np.asarray(image.convert("RGBA")).copy()).permute(2, 0, 1)
        alpha = rgba[3:]
        rgb = rgba[:3].to(torch.float32) / 255.0
        return rgb, None if bool((alpha == 255).all()) else alpha.to(torch.float32) / 255.0
    array = torch.from_numpy(np.asarray(image.convert("RGB")).copy())
    return array.permute(2, 0, 1).to(torch.float32) / 255.0, None


def resize_long_side(image: torch.Tensor, size: int) -> torch.Tensor:
    """``image`` (3, H, W) area-resized so that its long side is ``size``."""
    height, width = image.shape[-2:]
    scale = size / max(height, width)
    target = (max(1, round(height * scale)), max(1, round(width * scale)))
    return torch.nn.functional.interpolate(image[None], size=target, mode="area")[0].clamp(0, 1)


def _painting_options(args: argparse.Namespace) -> dict[str, Any]:
    """paint() keyword arguments from the shared options."""
    return dict(
        layer=args.layer, mode=args.mode, tau=args.tau, brush=args.brush, m=args.m, p=args.p,
        channel_cost=args.channel_cost, sigma=args.sigma, min_response=args.min_response,
        max_strokes=args.max_strokes, max_coverage=args.max_coverage,
        planner=None if args.planner == "none" else args.planner, planner_options=dict(args.planner_option),
        order=args.order, skip_background=args.skip_background, first_labels=args.first_labels,
        last_labels=args.last_labels, reverse_order=args.reverse_order, frames=args.frames, every=args.every,
        seed=args.seed, backend=args.backend, preview_size=args.preview_size, background=args.background,
        step_fill=args.step_fill, frame_batch=args.frame_batch,
    )


def _style_condition(generator, args: argparse.Namespace) -> dict[str, Any]:
    """make_context arguments from --style / --style-image; style 0 for a built-in-style generator."""
    from .painting.render import parse_background

    parameters = inspect.signature(generator.make_context).parameters
    if args.style_image is not None:
        if "style_image" not in parameters:
            raise ValueError(f"--style-image: generator {generator.name!r} has built-in styles; choose one with "
                             f"--style N")
        return {"style_image": load_image(args.style_image, parse_background(args.background))}
    if "style" in parameters:
        return {"style": 0 if args.style is None else args.style}
    if args.style is not None:
        raise ValueError(f"--style: generator {generator.name!r} takes its style from an image: give --style-image "
                         f"FILE")
    if "style_image" in parameters:
        raise ValueError(f"generator {generator.name!r} needs a style image: give --style-image FILE")
    return {}


def _report(result, written: Sequence[Path], seconds: float) -> None:
    reasons = Counter(result.stop_reasons)
    print(f"painted {result.num_strokes} strokes over {len(result.plan)} regions at layer {result.log.layer} "
          f"({result.log.layer_name}), tau {result.settings.tau}, {len(result.frame_strokes)} frames")
    print("stop reasons: " + ", ".join(f"{reason} x{count}" for reason, count in sorted(reasons.items())))
    print(f"wrote {len(written)} files to {written[0].parent if written else '-'}: "
          + ", ".join(path.name for path in written))
    print(f"time: {seconds:.1f} s")


def _check_output(output: str, overwrite: bool, gan: bool) -> None:
    """Fail before the painting, not after it: a folder that cannot take the outputs, or holds some."""
    from .painting.outputs import check_output_folder, painting_output_names, refuse_existing_outputs

    if not output:
        raise ValueError("-o/--output: expected a folder, got an empty path (use . for the current folder)")
    check_output_folder(output, painting_output_names(gan))
    if not overwrite:
        refuse_existing_outputs(output)


def _paint_and_write(content: torch.Tensor, generator, condition: dict[str, Any], weights: str | None,
                     options: dict[str, Any], output: str, overwrite: bool) -> int:
    from .painting import paint, write_outputs

    started = time.perf_counter()
    _check_output(output, overwrite, gan=generator.input_kind != "image")
    result = paint(content, generator=generator, condition=condition, weights=weights, verbose=True, **options)
    written = write_outputs(result, output, overwrite=overwrite, note=print)
    _report(result, written, time.perf_counter() - started)
    return 0


# ---------------------------------------------------------------------------------------------
# commands


def command_paint(args: argparse.Namespace) -> int:
    from .generators import load_generator
    from .painting.render import parse_background

    image = load_image(args.image, parse_background(args.background))
    generator = load_generator(args.generator, weights=args.weights, device=resolve_device(args.device))
    if generator.input_kind != "image":
        raise ValueError(f"--generator {args.generator}: a GAN paints its own samples: use "
                         f"`cpia generate --gan {args.generator} --keyword ...`")
    return _paint_and_write(image, generator, _style_condition(generator, args), args.weights,
                            _painting_options(args), args.output, args.overwrite)


def command_generate(args: argparse.Namespace) -> int:
    from .generators import load_generator

    generator = load_generator(args.gan, weights=args.weights, device=resolve_device(args.device))
    condition: dict[str, Any] = ({"class_index": int(args.keyword)} if args.keyword.isascii() and args.keyword.isdecimal()
                                 else {"keyword": args.keyword})
    sample_options: dict[str, Any] = {}
    if args.truncation is not None:
        if "truncation" not in inspect.signature(generator.make_context).parameters:
            raise ValueError(f"--truncation: generator {args.gan!r} has no truncation")
        condition["truncation"] = sample_options["truncation"] = args.truncation
    latent = generator.sample_inputs(1, args.seed, **sample_options)
    return _paint_and_write(latent, generator, condition, args.weights, _painting_options(args), args.output,
                            args.overwrite)


def command_layers(args: argparse.Namespace) -> int:
    from .generators import load_generator

    generator = load_generator(args.generator, weights=args.weights, device="cpu")
    if generator.input_kind == "image":
        height, width = args.size
        if height < 1 or width < 1:
            raise ValueError(f"--size: expected positive H W, got {height} {width}")
        context = generator.make_context(**_neutral_condition(generator))
        _check_layers_fit(generator, context, height, width)
        inputs = torch.full((1, 3, height, width), 0.5, dtype=torch.float32)
        title = f"{generator.name}: operable layers for a {height}x{width} input"
    else:
        inputs = generator.sample_inputs(1, 0)
        context = generator.make_context(class_index=0, inputs=inputs)
        title = f"{generator.name}: operable layers (a GAN: the shapes do not depend on --size)"
    shapes = generator.layer_shapes(inputs, context)  # before any output: an error prints alone
    print(title)
    print(f"{'index':>5}  {'name':<20} {'channels':>8}  shape (C, H, W)")
    for layer, shape in shapes:
        print(f"{layer.index:>5}  {layer.name:<20} {layer.channels:>8}  {tuple(shape)}")
    return 0


def _check_layers_fit(generator, context, height: int, width: int) -> None:
    """Listing the layers runs the encoder at the full size: refuse a size whose run would not fit in
    memory, measured on a probe scaled by the area (as paint's memory estimate)."""
    from .painting.memory import GIB, available_memory, probe_size, working_set

    size, area_ratio = probe_size(height, width)
    probe = torch.full((1, 3, *size), 0.5)
    needed = working_set(lambda: generator.layer_shapes(probe, context)) * area_ratio + 12 * height * width
    available = available_memory("cpu")
    if available is not None and needed > available:
        raise MemoryError(f"--size {height} {width}: listing the layers runs {generator.name} at that size, "
                          f"which needs about {needed / GIB:.1f} GiB; {available / GIB:.1f} GiB are available")


def _neutral_condition(generator) -> dict[str, Any]:
    """Any valid condition of an image generator (layer shapes do not depend on it)."""
    parameters = inspect.signature(generator.make_context).parameters
    if "style" in parameters:
        return {"style": 0}
    if "style_image" in parameters:
        return {"style_image": torch.full((1, 3, 64, 64), 0.5, dtype=torch.float32)}
    return {}


def command_replay(args: argparse.Namespace) -> int:
    from .painting import ReplayMismatchWarning, load_stroke_log, replay, write_outputs

    started = time.perf_counter()
    log = load_stroke_log(args.log)
    _check_output(args.output, args.overwrite, gan=log.content.dim() != 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReplayMismatchWarning)
        device = None if args.device is None else resolve_device(args.device)
        result = replay(log, weights=args.weights, device=device, verbose=True)
    for warning in caught:
        if issubclass(warning.category, ReplayMismatchWarning):
            print(f"note: {warning.message}")
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    written = write_outputs(result, args.output, overwrite=args.overwrite, note=print)
    _report(result, written, time.perf_counter() - started)
    return 0


def command_demo(args: argparse.Namespace) -> int:
    from skimage import data

    from .generators import load_generator

    if not DEMO_MIN_SIZE <= args.size <= DEMO_MAX_SIZE:
        raise ValueError(f"--size: expected {DEMO_MIN_SIZE} to {DEMO_MAX_SIZE} pixels, got {args.size}")
    astronaut = torch.from_numpy(data.astronaut().copy()).permute(2, 0, 1).to(torch.float32) / 255.0
    image = resize_long_side(astronaut, args.size)
    generator = load_generator("multistyle26", device=resolve_device(args.device))
    settings = dict(DEMO_SETTINGS)
    condition = settings.pop("condition")
    print(f"demo: scikit-image's astronaut at {image.shape[2]}x{image.shape[1]}, multistyle26 style "
          f"{condition['style']}, layer {settings['layer']}, tau {settings['tau']}")
    return _paint_and_write(image, generator, condition, None, settings, args.output, args.overwrite)


def _in_flag_terms(message: str, command_parser: argparse.ArgumentParser) -> str:
    """An error of the Python API as the command line says it: ``max_coverage must ...`` becomes
    ``--max-coverage must ...`` where the parameter is set by a flag of the command."""
    name, must, rest = message.partition(" must ")
    name = _FLAG_OF_PARAMETER.get(name, name)
    for action in command_parser._actions:  # argparse keeps no public list of a parser's options
        if must and action.dest == name and action.option_strings:
            return f"{max(action.option_strings, key=len)}{must}{rest}"
    return message


# parameters that a flag of another name sets (cpia generate --keyword 3: class_index=3)
_FLAG_OF_PARAMETER = {"class_index": "keyword"}


COMMANDS = {"paint": command_paint, "generate": command_generate, "layers": command_layers,
            "replay": command_replay, "demo": command_demo}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cpia`` command; returns the exit status (2 for bad arguments or inputs)."""
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # reported with the command's usage, not the top-level one
            parser.command_parsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exit_request:  # argparse exits on --help (0) and on bad arguments (2)
        return int(exit_request.code or 0)
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # the reader of our output went away (`cpia layers | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except (ValueError, OSError, ImportError, MemoryError, torch.OutOfMemoryError) as error:
        print(f"cpia: error: {_in_flag_terms(str(error), parser.command_parsers[args.command])}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cpia: interrupted", file=sys.stderr)
        return 130
