"""Painting order for planned regions (the paper's Sec. 3.4 and Sec. 4).

The paper orders regions by detection score and mentions semantic side information such as
"paint the persons at the end" or "paint the large objects first". This module implements those
policies, the background region (everything no region covers) and the overlap rule (a pixel is
painted by the first region in plan order that claims it).

A typical plan::

    regions = planner.plan(image)
    plan = resolve_overlaps(order_regions(regions, "score", last_labels=("person",), shape=image.shape[-2:]))
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence

import numpy as np
import torch

from .base import PlanningError, Region

BACKGROUND_LABEL = "background"
POLICIES = ("score", "area", "foreground-first", "background-first")


# ---------------------------------------------------------------------------------------------
# Validation shared by the planners
# ---------------------------------------------------------------------------------------------


def check_image(image: object) -> torch.Tensor:
    """Return ``image`` if it is a float tensor (3, H, W) with values in [0, 1]; else PlanningError."""
    if not isinstance(image, torch.Tensor):
        raise PlanningError(f"image: expected a torch.Tensor (3, H, W), got {type(image).__name__}")
    if image.dim() != 3 or image.shape[0] != 3:
        raise PlanningError(f"image: expected shape (3, H, W), got {tuple(image.shape)}")
    if image.shape[1] < 1 or image.shape[2] < 1:
        raise PlanningError(f"image: expected H, W >= 1, got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise PlanningError(f"image: expected a floating-point tensor in [0, 1], got {image.dtype}")
    if not bool(torch.isfinite(image).all()):
        raise PlanningError("image: expected finite values in [0, 1], got NaN or infinity")
    low, high = float(image.min()), float(image.max())
    if low < 0.0 or high > 1.0:
        raise PlanningError(f"image: expected values in [0, 1], got the range [{low:.4g}, {high:.4g}]")
    return image


def check_regions(regions: object, shape: tuple[int, int] | None = None) -> list[Region]:
    """Return ``regions`` as a list if every item is a Region with a bool (H, W) mask of one shape
    (of ``shape``, the planned image's (H, W), when given)."""
    if isinstance(regions, (Region, torch.Tensor, str)) or not isinstance(regions, Sequence):
        raise PlanningError(f"regions: expected a list of Region, got {type(regions).__name__}")
    for index, region in enumerate(regions):
        if not isinstance(region, Region):
            raise PlanningError(f"regions[{index}]: expected a Region, got {type(region).__name__}")
        mask = region.mask
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 2:
            got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise PlanningError(f"regions[{index}].mask: expected a bool tensor (H, W), got {got}")
        if mask.layout != torch.strided or mask.device.type == "meta":
            got = "a meta tensor" if mask.device.type == "meta" else f"layout {mask.layout}"
            raise PlanningError(f"regions[{index}].mask: expected a dense tensor with values, got {got}")
        if shape is None:
            shape = tuple(mask.shape)
        elif tuple(mask.shape) != shape:
            like = "like regions[0]" if index else "(the planned image's H, W)"
            raise PlanningError(f"regions[{index}].mask: expected shape {shape} {like}, got {tuple(mask.shape)}")
        if not isinstance(region.label, str):
            raise PlanningError(f"regions[{index}].label: expected a str, got {type(region.label).__name__}")
        score = region.score
        if isinstance(score, torch.Tensor) and score.numel() == 1:
            score = score.item()
        if not isinstance(score, numbers.Real) or isinstance(score, (bool, np.bool_)) or not math.isfinite(score):
            raise PlanningError(f"regions[{index}].score: expected a finite float, got {region.score!r}")
    return list(regions)


def _check_shape(shape: object) -> tuple[int, int]:
    try:
        height, width = (operator.index(size) for size in shape)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise PlanningError(f"shape: expected (H, W) of ints, got {shape!r}") from None
    if height < 1 or width < 1:
        raise PlanningError(f"shape: expected H, W >= 1, got {(height, width)}")
    return height, width


# ---------------------------------------------------------------------------------------------
# Background, order, overlaps
# ---------------------------------------------------------------------------------------------


def with_background(regions: Sequence[Region], shape: Sequence[int]) -> list[Region]:
    """Append a ``"background"`` region (score 0) covering every pixel no region covers.

    Nothing is appended when the regions already cover the whole (H, W) ``shape``.
    """
    regions = check_regions(regions)
    height, width = _check_shape(shape)
    if regions and tuple(regions[0].mask.shape) != (height, width):
        raise PlanningError(f"shape: expected the masks' shape {tuple(regions[0].mask.shape)}, got {(height, width)}")
    device = regions[0].mask.device if regions else None
    covered = torch.zeros((height, width), dtype=torch.bool, device=device)
    for region in regions:
        covered |= region.mask
    if bool(covered.all()):
        return regions
    return regions + [Region(mask=~covered, label=BACKGROUND_LABEL, score=0.0)]


def order_regions(
    regions: Sequence[Region],
    policy: str = "score",
    *,
    skip_background: bool = False,
    last_labels: Sequence[str] = (),
    first_labels: Sequence[str] = (),
    reverse: bool = False,
    shape: Sequence[int] | None = None,
) -> list[Region]:
    """Return the regions in painting order (first painted first).

    Policies (all sorts are stable: ties keep the input order):

    - ``"score"``: detection score, descending (the paper's order). The background scores 0.
    - ``"area"``: mask area, descending (large first).
    - ``"foreground-first"``: detected regions by score, then the background.
    - ``"background-first"``: the background, then detected regions by score.

    ``reverse`` reverses the policy's order. Then the semantic rules apply: regions whose label is
    in ``first_labels`` move to the front, those in ``last_labels`` to the end, each group in the
    order the labels are listed (``last_labels=("dog", "person")`` paints persons at the very end)
    and in policy order within a label.

    Unless ``skip_background``, the background region of :func:`with_background` is added first;
    ``shape`` (H, W) is needed only when ``regions`` is empty.
    """
    regions = check_regions(regions)
    if policy not in POLICIES:
        raise PlanningError(f"policy: expected one of {POLICIES}, got {policy!r}")
    for name, value in (("skip_background", skip_background), ("reverse", reverse)):
        if not isinstance(value, (bool, np.bool_)):
            raise PlanningError(f"{name}: expected True or False, got {value!r}")
    last_labels, first_labels = check_labels("last_labels", last_labels), check_labels("first_labels", first_labels)
    clash = set(last_labels) & set(first_labels)
    if clash:
        raise PlanningError(f"labels {sorted(clash)} are in both first_labels and last_labels")

    if not skip_background:
        if not regions and shape is None:
            raise PlanningError("order_regions: no regions to take (H, W) from; pass shape=(H, W) "
                                "or skip_background=True")
        regions = with_background(regions, shape if shape is not None else regions[0].mask.shape)

    def is_background(region: Region) -> bool:
        return region.label == BACKGROUND_LABEL

    if policy == "score":
        ordered = sorted(regions, key=lambda r: -r.score)
    elif policy == "area":
        ordered = sorted(regions, key=lambda r: -int(r.mask.sum()))
    elif policy == "foreground-first":
        ordered = sorted(regions, key=lambda r: (is_background(r), -r.score))
    else:  # background-first
        ordered = sorted(regions, key=lambda r: (not is_background(r), -r.score))
    if reverse:
        ordered.reverse()

    first = [r for label in first_labels for r in ordered if r.label == label]
    last = [r for label in last_labels for r in ordered if r.label == label]
    middle = [r for r in ordered if r.label not in first_labels and r.label not in last_labels]
    return first + middle + last


def check_labels(name: str, labels: object) -> tuple[str, ...]:
    """``labels`` as a tuple of distinct str labels (first listing kept); a PlanningError for a
    single string (``"person"`` would be read as its letters) or anything that is not str labels."""
    if isinstance(labels, str):
        raise PlanningError(f"{name}: expected a tuple of labels, got the single string {labels!r} "
                            f"(write ({labels!r},))")
    try:
        labels = tuple(labels)  # type: ignore[arg-type]
    except TypeError:
        raise PlanningError(f"{name}: expected a tuple of labels, got {type(labels).__name__}") from None
    for label in labels:
        if not isinstance(label, str):
            raise PlanningError(f"{name}: expected str labels, got {label!r}")
    return tuple(dict.fromkeys(labels))


def resolve_overlaps(regions: Sequence[Region]) -> list[Region]:
    """Give each pixel to the first region in plan order that claims it.

    Later regions lose their overlapping pixels; regions left empty are dropped. Labels and scores
    are kept; the input regions are not modified.
    """
    regions = check_regions(regions)
    if not regions:
        return []
    claimed = torch.zeros_like(regions[0].mask)
    resolved = []
    for region in regions:
        own = region.mask & ~claimed
        if bool(own.any()):
            resolved.append(Region(mask=own, label=region.label, score=region.score))
            claimed |= own
    return resolved
