"""Region planning: what to paint, in which order (the paper's Sec. 3.4).

A planner turns an image (3, H, W) float in [0, 1] into regions; an order policy sorts them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .._devices import device_problem


@dataclass
class Region:
    """One region of the painting plan: ``mask`` is bool (H, W) at image resolution."""

    mask: torch.Tensor
    label: str
    score: float


class PlanningError(ValueError):
    """Bad planner input or options (image, regions, labels, order policy), or a planner that cannot be
    built or loaded."""


class Planner:
    """Base class of region planners. ``paint`` takes any object with a ``plan`` method like this one."""

    name: str = "planner"

    def plan(self, image: torch.Tensor) -> list[Region]:
        """Regions of ``image`` (3, H, W), float in [0, 1] on the CPU, in any order: each a bool (H, W)
        mask at the image's size, a label and a finite score (what the "score" order sorts by). The
        regions may overlap and need not cover the image; the pipeline orders them, resolves overlaps
        and adds the uncovered rest as the background region."""
        raise NotImplementedError


def check_weights_path(weights: object) -> None:
    """PlanningError unless ``weights`` is None (the planner's default) or a file path."""
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise PlanningError(f"weights: expected a file path, got {type(weights).__name__}")


def planner_device(device: object) -> torch.device:
    """The ``device`` option of a detector planner as a torch.device that exists here."""
    problem = device_problem(device, needs_kernels=False)
    if problem is not None:
        raise PlanningError(problem)
    return torch.device(device)  # type: ignore[arg-type]
