"""Writing a painting to a folder: images, animations, the stroke log and coverage statistics.

| file | content |
|---|---|
| ``painting.png`` | the final canvas at full resolution |
| ``progress.gif`` / ``progress.mp4`` | the painting in progress (the frames, preview size); MP4 needs imageio-ffmpeg |
| ``stroke_map.gif`` / ``stroke_map.png`` | the stroke-map frames / the last one |
| ``plan.png`` | the content with each region tinted, in painting-order colours |
| ``generated.png`` | a GAN's plain generated image (GAN runs only) |
| ``stroke_log.json`` / ``stroke_log.npz`` | the replayable stroke log (:mod:`.stroke_log`) |
| ``coverage.png`` / ``coverage.json`` | per-channel coverage, stroke vs flush (paper Fig. 3) |

Every file is first written to a temporary file in the same folder; only when all of them are
written are they put in place (a reader never sees half a file, and a failure while writing, a full
disk say, leaves the folder as it was). Unless ``overwrite``, nothing is written when any of the
files exists already, and the files get their names by hard links, which fail on a name that
exists: a second run writing into the same folder at the same time is refused, not overwritten.
With ``overwrite`` the files are moved into place with ``os.replace``, and the files of this table
that an earlier run left and this run does not write (``generated.png`` of a GAN run, say) are
removed, so the folder holds one painting.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .pipeline import PaintResult
from .render import channel_palette, to_uint8
from .stroke_log import npz_sha256

FRAME_MS = 120
LAST_FRAME_MS = 1500
MP4_FPS = 8
HISTOGRAM_BINS = 20

PAINTING = "painting.png"
PROGRESS_GIF = "progress.gif"
PROGRESS_MP4 = "progress.mp4"
STROKE_MAP_GIF = "stroke_map.gif"
STROKE_MAP_PNG = "stroke_map.png"
PLAN_PNG = "plan.png"
GENERATED_PNG = "generated.png"
LOG_JSON = "stroke_log.json"
LOG_NPZ = "stroke_log.npz"
COVERAGE_PNG = "coverage.png"
COVERAGE_JSON = "coverage.json"
OUTPUT_NAMES = (PAINTING, PROGRESS_GIF, PROGRESS_MP4, STROKE_MAP_GIF, STROKE_MAP_PNG, PLAN_PNG, GENERATED_PNG,
                LOG_NPZ, LOG_JSON, COVERAGE_PNG, COVERAGE_JSON)


def write_outputs(result: PaintResult, outdir: str | Path, overwrite: bool = False,
                  note: Callable[[str], None] | None = None) -> list[Path]:
    """Write every output of ``result`` into ``outdir`` (created if needed); return the paths written.

    Raises FileExistsError naming the first existing output file (of this run or any other, a GAN
    run's ``generated.png`` say), before anything is written, unless ``overwrite`` (which also
    removes the outputs of an earlier run that this one does not write).
    Optional parts whose library is missing (MP4: imageio + imageio-ffmpeg; the coverage plot:
    matplotlib) are skipped (not in the returned paths); ``note``, if given, is called with a line
    on each skipped part and each removed file (the command line prints them).
    """
    if not isinstance(result, PaintResult):
        raise TypeError(f"result must be a PaintResult (from paint or replay), got {type(result).__name__}")
    if not isinstance(outdir, (str, os.PathLike)):
        raise TypeError(f"outdir must be a folder path (str or os.PathLike), got {type(outdir).__name__}")
    if not isinstance(overwrite, (bool, np.bool_)):  # a truthy "no" must not replace anything
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
    if note is not None and not callable(note):
        raise TypeError(f"note must be a callable note(line) or None, got {type(note).__name__}")
    note = note or (lambda line: None)
    outdir = Path(outdir)
    writers = _planned_writers(result, note)
    check_output_folder(outdir, writers)
    if not overwrite:
        refuse_existing_outputs(outdir)  # every output name: the folder is to hold one painting
    created = _first_missing(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, write in writers.items():
            staged.append((staged_file(outdir / name, write), outdir / name))
        if overwrite:
            for tmp, path in staged:
                os.replace(tmp, path)
        else:
            _place_without_replacing(staged)
    except BaseException:
        if created is not None:  # an interrupted first write leaves none of the folders it made
            _remove_created(outdir, created, {tmp.name for tmp, _ in staged})
        raise
    finally:  # the staged files: hard-linked into place, or not placed after an error
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    written = [path for _, path in staged]
    if overwrite:
        for name in OUTPUT_NAMES:
            if name not in writers and (outdir / name).is_file():
                (outdir / name).unlink()
                note(f"note: removed {outdir / name}, left by an earlier run")
    return written


def _first_missing(folder: Path) -> Path | None:
    """The outermost folder on the way to ``folder`` that does not exist yet; None if it exists."""
    missing = None
    while not folder.exists():
        missing, folder = folder, folder.parent
    return missing


def _remove_created(outdir: Path, outermost: Path, staged_names: set[str]) -> None:
    """Remove ``outdir`` and its parents up to ``outermost`` (the folders a write created) while they hold
    nothing but the staged files named; a failure to clean up does not hide the error being handled."""
    with contextlib.suppress(OSError):
        for path in outdir.iterdir():
            if path.name not in staged_names:
                return
            path.unlink()
        folder = outdir
        while True:
            folder.rmdir()
            if folder == outermost:
                return
            folder = folder.parent


def _place_without_replacing(staged: list[tuple[Path, Path]]) -> None:
    """Give each staged file its name only if no file has it: a hard link fails on an existing name,
    so a run writing into the same folder since the check is not overwritten; the names this call
    gave are taken back and FileExistsError names the file. Where the file system has no hard links,
    the names are checked again and the files moved."""
    placed: list[Path] = []
    try:
        for tmp, path in staged:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"{path} exists already (written since this run checked); pass "
                                      f"overwrite=True (--overwrite) to replace it") from None
            except OSError:  # no hard links here
                refuse_existing_outputs(path.parent, [path.name for _, path in staged[len(placed):]])
                for rest_tmp, rest_path in staged[len(placed):]:
                    os.replace(rest_tmp, rest_path)
                return
            placed.append(path)
    except BaseException:
        for path in placed:
            path.unlink(missing_ok=True)
        raise


def check_output_folder(outdir: str | Path, names: Sequence[str] = OUTPUT_NAMES) -> None:
    """Raise OSError unless ``outdir`` is, or can be created as, a folder this process can write in,
    with no folder in it named like one of the output files ``names``.

    Meant to be called before a painting, so that a file in the way or a read-only folder is reported
    at once rather than after the work. Nothing is created: the test file goes into the nearest
    existing folder on the path and is removed at once.
    """
    outdir = Path(outdir)
    existing = outdir
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"output folder {outdir}: {existing} is a file, not a folder")
    in_the_way = [outdir / name for name in names if (outdir / name).is_dir()]
    if in_the_way:
        raise IsADirectoryError(f"{in_the_way[0]} is a folder; an output file of that name cannot replace it")
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".cpia-write-test.")
    except OSError as error:
        raise PermissionError(f"output folder {outdir}: cannot write in {existing} ({error.strerror})") from None
    os.close(handle)
    os.unlink(probe)


def painting_output_names(gan: bool) -> tuple[str, ...]:
    """The files a painting may write: generated.png only for a GAN (optional ones included)."""
    return tuple(name for name in OUTPUT_NAMES if gan or name != GENERATED_PNG)


def refuse_existing_outputs(outdir: str | Path, names: Sequence[str] = OUTPUT_NAMES) -> None:
    """Raise FileExistsError naming the first of ``names`` that is a file (or a link) in ``outdir``; a
    folder of such a name is the user's (check_output_folder refuses one in the way of a write)."""
    for path in (Path(outdir) / name for name in names):
        if path.is_file() or path.is_symlink():
            raise FileExistsError(f"{path} exists already; pass overwrite=True (--overwrite) to replace it")


def _planned_writers(result: PaintResult, note: Callable[[str], None]) -> dict[str, Callable[[Path], None]]:
    """File name -> function writing that file's content to the path it is given; decided (and
    optional parts checked) up front."""

    def content(make: Callable[[], bytes]) -> Callable[[Path], None]:
        return lambda path: path.write_bytes(make())

    writers: dict[str, Callable[[Path], None]] = {
        PAINTING: content(lambda: png_bytes(result.image)),
        PROGRESS_GIF: content(lambda: gif_bytes(result.frames)),
    }
    if _mp4_available():
        writers[PROGRESS_MP4] = lambda path: write_mp4(path, result.frames)
    else:
        note("note: progress.mp4 skipped (needs imageio and imageio-ffmpeg: pip install imageio-ffmpeg)")
    writers[STROKE_MAP_GIF] = content(lambda: gif_bytes(result.stroke_maps))
    writers[STROKE_MAP_PNG] = content(lambda: png_bytes(result.stroke_maps[-1]))
    writers[PLAN_PNG] = content(lambda: png_bytes(plan_overlay(result)))
    if result.log.content.dim() != 3:
        writers[GENERATED_PNG] = content(lambda: png_bytes(result.content))
    npz = functools.cache(result.log.npz_bytes)  # written, and its digest recorded in the JSON
    writers[LOG_NPZ] = content(npz)
    writers[LOG_JSON] = content(lambda: result.log.json_text(LOG_NPZ, npz_sha256(npz())).encode())
    if _matplotlib_available():
        writers[COVERAGE_PNG] = content(lambda: coverage_plot_bytes(result))
    else:
        note("note: coverage.png skipped (needs matplotlib); the numbers are in coverage.json")
    writers[COVERAGE_JSON] = content(lambda: coverage_json(result).encode())
    return writers


# ---------------------------------------------------------------------------------------------
# atomic files


def staged_file(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a new temporary file next to ``path`` (same suffix) and return it, ready
    to be moved to ``path``; on an error the temporary file is removed."""
    tmp = _new_file(path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_with(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path`` (same suffix), then move it to ``path``."""
    tmp = staged_file(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _new_file(folder: Path, prefix: str, suffix: str) -> Path:
    """A new empty file of a unique name in ``folder``, with the permissions of any new file (mode 0666
    less the umask, which the system applies; mkstemp's 0600 would need the umask read, and reading it
    means setting it, for the whole process)."""
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no unused temporary file name {prefix}*{suffix} in {folder}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


# ---------------------------------------------------------------------------------------------
# images and animations


def png_bytes(image: torch.Tensor) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def gif_bytes(frames: torch.Tensor) -> bytes:
    """An endlessly looping GIF of ``frames`` (F, 3, H, W); the last frame is held longer.

    Every frame is mapped to one palette, made from a few frames spread over the run, without
    dithering: a part of the canvas that does not change keeps its colours from frame to frame (with
    a palette per frame, or error diffusion, it flickers). Frames left identical by the 256 colours
    are merged by the GIF writer into one frame of their summed duration."""
    from PIL import Image

    palette = _shared_palette(frames)
    images = [Image.fromarray(to_uint8(frame)).quantize(palette=palette, dither=Image.Dither.NONE)
              for frame in frames]
    durations = [FRAME_MS] * (len(images) - 1) + [LAST_FRAME_MS]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    return buffer.getvalue()


def _shared_palette(frames: torch.Tensor, samples: int = 8):
    """A 256-colour palette image for all ``frames``: fast octree quantisation (median cut takes
    seconds per large frame) of up to ``samples`` frames spread over the run, the last included."""
    from PIL import Image

    picked = sorted({round(i * (len(frames) - 1) / max(samples - 1, 1)) for i in range(samples)})
    strip = np.concatenate([to_uint8(frames[index]) for index in picked], axis=0)
    return Image.fromarray(strip).quantize(method=Image.Quantize.FASTOCTREE)


def _mp4_available() -> bool:
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return False
    return True


def write_mp4(path: Path, frames: torch.Tensor, fps: int = MP4_FPS) -> None:
    """H.264 MP4 of ``frames``; sides padded (edge pixels) to even sizes, as yuv420p needs."""
    import imageio.v2 as imageio

    height, width = frames.shape[-2:]
    pad = ((0, height % 2), (0, width % 2), (0, 0))
    held = [frames[-1]] * fps  # hold the finished painting for a second
    with imageio.get_writer(str(path), format="FFMPEG", mode="I", fps=fps, codec="libx264",
                            pixelformat="yuv420p", macro_block_size=1) as writer:
        for frame in list(frames) + held:
            writer.append_data(np.pad(to_uint8(frame), pad, mode="edge"))


def plan_overlay(result: PaintResult, tint: float = 0.5) -> torch.Tensor:
    """The content (3, H, W) with region k tinted in colour k of the channel palette (plan order)."""
    content = result.content.to(torch.float32)
    palette = channel_palette(len(result.plan))
    colours = torch.zeros_like(content)
    for index, region in enumerate(result.plan):
        colours[:, region.mask] = palette[index].view(3, 1)
    return torch.lerp(content, colours, tint)


# ---------------------------------------------------------------------------------------------
# coverage (paper Fig. 3)


def _matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _coverage_series(result: PaintResult) -> dict[str, np.ndarray]:
    """What the plot shows: the painting's coverage, and in stroke mode the flush comparison beside it."""
    if result.settings.mode == "flush":
        return {"flush": result.coverage.numpy()}
    return {"stroke": result.coverage.numpy(), "flush (same tau)": result.coverage_flush.numpy()}


def _summary(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "max": float(values.max()), "unused_channels": int((values == 0).sum())}


def _histogram_edges(series: dict[str, np.ndarray]) -> np.ndarray:
    """HISTOGRAM_BINS bins from 0 to the largest coverage: the bars of coverage.png and the counts of
    coverage.json."""
    upper = max(1e-6, max(float(values.max()) for values in series.values()))
    return np.linspace(0.0, upper, HISTOGRAM_BINS + 1)


def coverage_json(result: PaintResult) -> str:
    """Per-channel coverage of the painting and of the flush comparison, their summaries and histograms."""
    series = {"painting": result.coverage.numpy().astype(np.float64),
              "flush": result.coverage_flush.numpy().astype(np.float64)}
    edges = _histogram_edges(series)
    document = {
        "layer": {"index": result.log.layer, "name": result.log.layer_name},
        "mode": result.settings.mode, "tau": result.settings.tau, "channels": int(result.coverage.numel()),
        "definition": "per channel, the fraction of layer locations where the channel is painted",
        "histogram_bin_edges": edges.round(6).tolist(),
    }
    for name, values in series.items():
        document[name] = {"per_channel": values.round(6).tolist(), "summary": _summary(values),
                          "histogram": np.histogram(values, bins=edges)[0].tolist()}
    return json.dumps(document, indent=2) + "\n"


def coverage_plot_bytes(result: PaintResult) -> bytes:
    """PNG: histograms of per-channel coverage side by side, and the per-channel values sorted."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = _coverage_series(result)
    figure = Figure(figsize=(10, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    histogram_axes = figure.add_subplot(1, 2, 1)
    edges = _histogram_edges(series)
    histogram_axes.hist(list(series.values()), bins=edges, label=list(series), color=_colours(len(series)))
    histogram_axes.set_xlabel("channel coverage (fraction of locations)")
    histogram_axes.set_ylabel("channels")
    histogram_axes.set_title(f"layer {result.log.layer} ({result.log.layer_name}), tau = {result.settings.tau}")
    histogram_axes.legend()
    sorted_axes = figure.add_subplot(1, 2, 2)
    for (name, values), colour in zip(series.items(), _colours(len(series))):
        sorted_axes.plot(np.sort(values)[::-1], label=name, color=colour, marker=".")
    sorted_axes.set_xlabel("channels, by coverage")
    sorted_axes.set_ylabel("coverage")
    sorted_axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _colours(count: int) -> Sequence[str]:
    return ["tab:orange", "tab:blue"][:count]
