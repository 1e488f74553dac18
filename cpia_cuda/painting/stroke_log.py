"""The stroke log: everything needed to re-render a painting, frame by frame.

A log is two files with one stem: ``stroke_log.json`` (parameters, plan labels and scores, generator
name, weights path and condition, versions, how the region masks lie on the layer grid, frame stroke
counts, the NPZ's SHA-256, the SHA-256 of the final painting's pixels) and ``stroke_log.npz`` (arrays):

| NPZ key | content |
|---|---|
| ``order`` | int32 (C, h, w): global index of the stroke that switched each layer element on, -1 never |
| ``strokes`` | int32 (S, 6): ``region, channel, row, col, pixels, channels`` (pixels switched on, channels in the stroke) per stroke, in painting order (flush actions have channel/row/col -1) |
| ``region_masks`` | the plan: bool (R, H, W) at image resolution, bit-packed along W (``np.packbits``) |
| ``content`` | the content image (3, H, W) as uint8 when that is exact, else float32; a GAN's latent z |
| ``condition.<name>`` | tensor-valued generator conditions (a style image) |

``order`` is the painting: the canvas after k strokes is rendered from ``0 <= order < k``. The values
of the painted activation are recomputed from the content, the plan and the generator (each element
takes the value of the step image of the region its stroke belongs to).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import numbers
import os
import platform
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._ops import STOP_REASONS

# A logged stroke: its region's index in the plan, then the op's stroke record (_ops.STROKE_COLUMNS)
# under the log format's shorter names.
LOG_STROKE_COLUMNS = ("region", "channel", "row", "col", "pixels", "channels")
_REGION = LOG_STROKE_COLUMNS.index("region")
_PIXELS = LOG_STROKE_COLUMNS.index("pixels")
LOG_FORMAT = "cpia-stroke-log/1"
CELL_PLACEMENTS = ("stride", "stretch")  # StrokeLog.cell_placement
_TENSOR_TAG = "__tensor__"
# A region's stop reason: the stroke op's, or one of these (a flush region; a region too small or thin
# to own a cell of the layer grid).
FLUSHED = "flush"
NO_LAYER_CELLS = "no_layer_cells"
REGION_STOP_REASONS = (*STOP_REASONS, FLUSHED, NO_LAYER_CELLS)


@dataclass
class StrokeLog:
    """A replayable record of one painting (see the module docstring for the file layout)."""

    order: torch.Tensor
    strokes: torch.Tensor
    region_masks: torch.Tensor
    region_labels: list[str]
    region_scores: list[float]
    stop_reasons: list[str]
    content: torch.Tensor
    generator: str
    weights: str | None
    condition: dict[str, Any]
    layer: int
    layer_name: str
    settings: dict[str, Any]
    frame_strokes: list[int]
    versions: dict[str, str] = field(default_factory=lambda: current_versions())
    # SHA-256 of the final painting's pixels (render.pixels_sha256), which a replay compares with its own
    painting_sha256: str | None = None
    # How the region masks were laid on the layer grid (pipeline.regions_at_layer): "stride", each cell
    # over its stride's pixels; "stretch", the grid stretched over the image (logs of cpia_cuda 0.1.0,
    # which have no such field)
    cell_placement: str = "stride"

    @property
    def num_strokes(self) -> int:
        return int(self.strokes.shape[0])

    def check(self) -> None:
        """Raise ValueError where the parts of the log disagree with one another (a damaged log, or
        one edited or put together in memory): what a replay relies on."""
        for name, dim in (("order", 3), ("strokes", 2)):
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor) or value.dtype != torch.int32 or value.dim() != dim:
                got = f"{value.dtype} of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else \
                    type(value).__name__
                raise ValueError(f"{name} must be an int32 tensor of {dim} dimensions, got {got}")
        if self.strokes.shape[1] != len(LOG_STROKE_COLUMNS):
            raise ValueError(f"strokes must be (S, {len(LOG_STROKE_COLUMNS)}), got shape {tuple(self.strokes.shape)}")
        masks = self.region_masks
        if not isinstance(masks, torch.Tensor) or masks.dtype != torch.bool or masks.dim() != 3:
            raise ValueError("region_masks must be a bool tensor (regions, H, W)")
        if not isinstance(self.content, torch.Tensor):
            raise ValueError(f"content must be a tensor, got {type(self.content).__name__}")
        for name, fits in (("region_labels", lambda item: isinstance(item, str)),
                           ("region_scores", lambda item: isinstance(item, numbers.Real)
                            and not isinstance(item, (bool, np.bool_)) and math.isfinite(item)),
                           ("stop_reasons", lambda item: isinstance(item, str))):
            items = getattr(self, name)
            if not isinstance(items, list) or not all(fits(item) for item in items):
                raise ValueError(f"{name} must be a list of {'finite numbers' if name == 'region_scores' else 'str'}")
        plan_lengths = {len(self.region_labels), len(self.region_scores), len(self.stop_reasons)}
        if plan_lengths != {masks.shape[0]}:
            raise ValueError(f"{masks.shape[0]} region masks for {len(self.region_labels)} labels, "
                             f"{len(self.region_scores)} scores and {len(self.stop_reasons)} stop reasons")
        unknown = [reason for reason in self.stop_reasons if reason not in REGION_STOP_REASONS]
        if unknown:
            raise ValueError(f"stop reasons must be among {', '.join(REGION_STOP_REASONS)}, got {unknown[0]!r}")
        if self.cell_placement not in CELL_PLACEMENTS:
            raise ValueError(f"cell_placement must be one of {', '.join(CELL_PLACEMENTS)}, got {self.cell_placement!r}")
        num_strokes, regions = self.num_strokes, self.strokes[:, _REGION].long()
        if num_strokes and not (int(regions.min()) >= 0 and int(regions.max()) < masks.shape[0]):
            raise ValueError(f"strokes name regions outside the plan of {masks.shape[0]} regions")
        if num_strokes and bool((regions[1:] < regions[:-1]).any()):
            raise ValueError("strokes are not in plan order")
        order = self.order
        if order.numel() and not (int(order.min()) >= -1 and int(order.max()) < num_strokes):
            raise ValueError(f"order holds stroke indices outside [-1, {num_strokes})")
        switched = torch.bincount(order[order >= 0].long().cpu(), minlength=num_strokes)
        if not torch.equal(switched, self.strokes[:, _PIXELS].long().cpu()):
            raise ValueError("order and the strokes' pixel counts disagree")
        if self.content.dim() == 3 and tuple(self.content.shape[-2:]) != tuple(masks.shape[-2:]):
            raise ValueError(f"region masks of {tuple(masks.shape[-2:])} for an image of "
                             f"{tuple(self.content.shape[-2:])}")

    def region_stroke_ranges(self) -> list[tuple[int, int]]:
        """[start, stop) of the global stroke indices of each region (strokes are in region order)."""
        counts = torch.bincount(self.strokes[:, _REGION].long(), minlength=len(self.region_labels)).tolist()
        ranges, start = [], 0
        for count in counts:
            ranges.append((start, start + count))
            start += count
        return ranges

    # -- serialisation -----------------------------------------------------------------------------

    def npz_bytes(self) -> bytes:
        arrays = {
            "order": self.order.cpu().numpy().astype(np.int32),
            "strokes": self.strokes.cpu().numpy().astype(np.int32).reshape(-1, len(LOG_STROKE_COLUMNS)),
            "region_masks": np.packbits(self.region_masks.cpu().numpy().astype(bool), axis=-1),
            "content": _compact_content(self.content),
        }
        for name, value in self.condition.items():
            if isinstance(value, torch.Tensor):
                arrays[f"condition.{name}"] = value.detach().cpu().numpy()
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    def json_text(self, npz_name: str, npz_digest: str | None = None) -> str:
        """The JSON part; ``npz_digest`` (:func:`npz_sha256` of the NPZ written beside it) ties the pair."""
        document = {
            "format": LOG_FORMAT,
            "npz": npz_name,
            **({"npz_sha256": npz_digest} if npz_digest is not None else {}),
            "generator": {"name": self.generator, "weights": self.weights,
                          "condition": {k: _TENSOR_TAG if isinstance(v, torch.Tensor) else v
                                        for k, v in self.condition.items()}},
            "layer": {"index": self.layer, "name": self.layer_name, "shape": list(self.order.shape)},
            "settings": self.settings,
            "content": {"shape": list(self.content.shape), "kind": "latent" if self.content.dim() != 3 else "image"},
            "plan": [{"label": label, "score": score, "stop_reason": reason, "strokes": stop - start}
                     for label, score, reason, (start, stop) in
                     zip(self.region_labels, self.region_scores, self.stop_reasons, self.region_stroke_ranges())],
            "region_mask_shape": list(self.region_masks.shape),
            "num_strokes": self.num_strokes,
            "stroke_columns": list(LOG_STROKE_COLUMNS),
            "frame_strokes": self.frame_strokes,
            "versions": self.versions,
            "cell_placement": self.cell_placement,
            **({"painting_sha256": self.painting_sha256} if self.painting_sha256 is not None else {}),
        }
        try:
            return json.dumps(document, indent=2) + "\n"
        except (TypeError, ValueError):  # the settings were checked before painting: name the condition
            for name, value in document["generator"]["condition"].items():
                try:
                    json.dumps(value)
                except (TypeError, ValueError) as error:
                    raise TypeError(f"condition {name!r} cannot be written to the stroke log file: a condition is "
                                    f"a tensor (kept in the NPZ) or a JSON value ({error})") from None
            raise


def npz_sha256(npz: bytes) -> str:
    return hashlib.sha256(npz).hexdigest()


def current_versions() -> dict[str, str]:
    from .. import __version__

    return {"cpia_cuda": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _compact_content(content: torch.Tensor) -> np.ndarray:
    """uint8 when ``content`` is exactly ``uint8 / 255`` (how images are loaded), else float32."""
    content = content.detach().cpu().to(torch.float32)
    if content.dim() == 3:
        as_bytes = (content * 255.0).round().clamp(0, 255).to(torch.uint8)
        if torch.equal(as_bytes.to(torch.float32) / 255.0, content):
            return as_bytes.numpy()
    return content.numpy()


def _expand_content(array: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.to(torch.float32) / 255.0 if tensor.dtype == torch.uint8 else tensor


def log_paths(path: str | Path) -> tuple[Path, Path]:
    """(json, npz) paths of the log named by either file, by their common stem, or by the output
    folder that holds ``stroke_log.json``."""
    path = Path(path)
    if path.is_dir():
        path = path / "stroke_log.json"
    stem = path.with_suffix("") if path.suffix in (".json", ".npz") else path
    return stem.parent / f"{stem.name}.json", stem.parent / f"{stem.name}.npz"


def load_stroke_log(path: str | Path) -> StrokeLog:
    """Read a log written by :func:`cpia_cuda.painting.write_outputs` (give the .json or the .npz).

    The two files are read as a pair with one stem (the JSON's ``npz`` entry names the file as it
    was written), and checked against each other; a log whose parts disagree is refused.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a stroke log path (str or os.PathLike), got {type(path).__name__}")
    if Path(path).is_file() and Path(path).suffix not in (".json", ".npz"):
        raise ValueError(f"{path} is not a stroke log: expected its .json or .npz, their common stem, or the "
                         f"output folder holding stroke_log.json")
    json_path, npz_path = log_paths(path)
    if not json_path.is_file():
        raise FileNotFoundError(f"stroke log file not found: {json_path}")
    try:
        document = json.loads(json_path.read_text())
    except (ValueError, RecursionError) as error:
        raise ValueError(f"{json_path} is not a cpia stroke log: not JSON ({error})") from None
    if not isinstance(document, dict) or document.get("format") != LOG_FORMAT:
        raise ValueError(f"{json_path} is not a cpia stroke log (expected format {LOG_FORMAT!r})")
    if not npz_path.is_file():
        raise FileNotFoundError(f"stroke log file not found: {npz_path} (the arrays of {json_path.name})")
    npz = npz_path.read_bytes()
    if "npz_sha256" in document and document["npz_sha256"] != npz_sha256(npz):
        raise ValueError(f"{npz_path} is not the NPZ that {json_path.name} was written with (their digests differ: "
                         f"a changed file, or the halves of two logs)")
    try:
        _check_fields(document)
        return _read_log(document, npz)
    except (KeyError, TypeError, ValueError, IndexError, EOFError, zipfile.BadZipFile) as error:
        detail = str(error) if type(error) is ValueError else repr(error)
        raise ValueError(f"{json_path}: damaged stroke log ({detail})") from None


def _check_fields(document: dict[str, Any]) -> None:
    """Raise ValueError naming the first field of the JSON whose type or value no writer gives it."""
    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def is_counts(value: Any, length: int | None = None) -> bool:
        return (isinstance(value, list) and (length is None or len(value) == length)
                and all(is_int(item) and item >= 0 for item in value))

    generator, layer, content = document.get("generator"), document.get("layer"), document.get("content")
    expected = [
        ("generator", isinstance(generator, dict)),
        ("generator.name", isinstance(generator, dict) and isinstance(generator.get("name"), str)),
        ("generator.weights", isinstance(generator, dict) and isinstance(generator.get("weights"), (str, type(None)))),
        ("generator.condition", isinstance(generator, dict) and isinstance(generator.get("condition"), dict)),
        ("layer.index", isinstance(layer, dict) and is_int(layer.get("index")) and layer["index"] >= 1),
        ("layer.name", isinstance(layer, dict) and isinstance(layer.get("name"), str)),
        ("layer.shape", isinstance(layer, dict) and is_counts(layer.get("shape"), 3)),
        ("settings", isinstance(document.get("settings"), dict)),
        ("content.shape", isinstance(content, dict) and is_counts(content.get("shape"))),
        ("region_mask_shape", is_counts(document.get("region_mask_shape"), 3)),
        ("num_strokes", is_int(document.get("num_strokes"))),
        ("frame_strokes", is_counts(document.get("frame_strokes"))),
        ("versions", isinstance(document.get("versions"), dict)),
        ("painting_sha256", isinstance(document.get("painting_sha256"), (str, type(None)))),
        ("cell_placement", document.get("cell_placement", "stretch") in CELL_PLACEMENTS),
        ("plan", isinstance(document.get("plan"), list) and all(isinstance(r, dict) for r in document["plan"])),
    ]
    for name, fits in expected:
        if not fits:
            raise ValueError(f"field {name} is missing or of the wrong type")
    for number, region in enumerate(document["plan"]):
        score = region.get("score")
        if not (isinstance(region.get("label"), str) and isinstance(score, (int, float))
                and not isinstance(score, bool) and is_int(region.get("strokes")) and region["strokes"] >= 0):
            raise ValueError(f"plan[{number}] needs a label (text), a score (number) and strokes (a count)")
        if region.get("stop_reason") not in REGION_STOP_REASONS:
            raise ValueError(f"plan[{number}].stop_reason must be one of {', '.join(REGION_STOP_REASONS)}, got "
                             f"{region.get('stop_reason')!r}")
    if list(document.get("stroke_columns", LOG_STROKE_COLUMNS)) != list(LOG_STROKE_COLUMNS):
        raise ValueError(f"stroke_columns must be {list(LOG_STROKE_COLUMNS)}, got {document['stroke_columns']}")


def _read_log(document: dict[str, Any], npz: bytes) -> StrokeLog:
    with np.load(io.BytesIO(npz)) as arrays:
        for name in ("order", "strokes"):  # written as int32: another type is another file
            if arrays[name].dtype != np.int32:
                raise ValueError(f"{name} must be int32, got {arrays[name].dtype}")
        order = torch.from_numpy(arrays["order"])
        strokes = torch.from_numpy(arrays["strokes"])
        packed, mask_shape = arrays["region_masks"], document["region_mask_shape"]
        if packed.dtype != np.uint8 or packed.ndim != 3 or packed.shape[-1] != -(-mask_shape[-1] // 8):
            raise ValueError(f"region masks packed as {packed.dtype} {list(packed.shape)} cannot hold "
                             f"{mask_shape}")
        masks = np.unpackbits(packed, axis=-1, count=mask_shape[-1]).astype(bool)
        content = _expand_content(arrays["content"])
        generator = document["generator"]
        condition = {name: torch.from_numpy(arrays[f"condition.{name}"]) if value == _TENSOR_TAG else value
                     for name, value in generator["condition"].items()}
    plan = document["plan"]
    if order.dim() != 3:
        raise ValueError(f"order must be (C, h, w), got shape {tuple(order.shape)}")
    if strokes.dim() != 2 or strokes.shape[1] != len(LOG_STROKE_COLUMNS):
        raise ValueError(f"strokes must be (S, {len(LOG_STROKE_COLUMNS)}), got shape {tuple(strokes.shape)}")
    if list(masks.shape) != list(document["region_mask_shape"]):
        raise ValueError(f"region masks of shape {list(masks.shape)}, the JSON says {document['region_mask_shape']}")
    _check_consistent(document, order, strokes, masks, content)
    log = StrokeLog(
        order=order, strokes=strokes, region_masks=torch.from_numpy(masks),
        region_labels=[r["label"] for r in plan], region_scores=[float(r["score"]) for r in plan],
        stop_reasons=[r["stop_reason"] for r in plan], content=content, generator=generator["name"],
        weights=generator["weights"], condition=condition, layer=int(document["layer"]["index"]),
        layer_name=document["layer"]["name"], settings=document["settings"],
        frame_strokes=[int(k) for k in document["frame_strokes"]], versions=document["versions"],
        painting_sha256=document.get("painting_sha256"), cell_placement=document.get("cell_placement", "stretch"),
    )
    log.check()
    return log


def _check_consistent(document: dict[str, Any], order: torch.Tensor, strokes: torch.Tensor, masks: np.ndarray,
                      content: torch.Tensor) -> None:
    """Raise ValueError where the JSON and the arrays of a log disagree (a damaged or mixed pair);
    the arrays among themselves: StrokeLog.check."""
    plan, num_strokes = document["plan"], strokes.shape[0]
    if masks.shape[0] != len(plan):
        raise ValueError(f"{masks.shape[0]} region masks for a plan of {len(plan)} regions")
    if document["num_strokes"] != num_strokes:
        raise ValueError(f"the JSON counts {document['num_strokes']} strokes, the arrays hold {num_strokes}")
    regions = strokes[:, _REGION].long()
    if num_strokes and not (int(regions.min()) >= 0 and int(regions.max()) < len(plan)):
        raise ValueError(f"strokes name regions outside the plan of {len(plan)} regions")
    per_region = torch.bincount(regions, minlength=len(plan)).tolist()
    if per_region != [int(region["strokes"]) for region in plan]:
        raise ValueError(f"strokes per region {per_region} differ from the plan's {[r['strokes'] for r in plan]}")
    if list(order.shape) != list(document["layer"]["shape"]):
        raise ValueError(f"order has shape {list(order.shape)}, the layer {document['layer']['shape']}")
    if list(content.shape) != list(document["content"]["shape"]):
        raise ValueError(f"content has shape {list(content.shape)}, the JSON says {document['content']['shape']}")
    frames = document["frame_strokes"]
    if not all(isinstance(k, int) and 0 <= k <= num_strokes for k in frames) or frames != sorted(frames):
        raise ValueError(f"frame_strokes must be ascending stroke counts in [0, {num_strokes}]")
