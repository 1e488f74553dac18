"""Planners by name: ``make_planner("segments")``, ``make_planner("yolo", score_threshold=0.4)``."""

from __future__ import annotations

import importlib
import inspect

from .base import Planner, PlanningError

# name -> (module, class); imported on demand so that optional planners cost nothing until used.
PLANNERS = {
    "maskrcnn": ("cpia_cuda.planning.maskrcnn", "MaskRCNNPlanner"),
    "yolo": ("cpia_cuda.planning.yolo_seg", "YoloSegPlanner"),
    "segments": ("cpia_cuda.planning.segments", "SegmentsPlanner"),
}


def planner_names() -> tuple[str, ...]:
    return tuple(PLANNERS)


def make_planner(name: str, **options) -> Planner:
    """Build the planner registered as ``name`` with its keyword ``options``.

    Raises PlanningError for an unknown name, and whatever the planner raises (PlanningError) when
    its weights are missing or an option is bad.
    """
    if not isinstance(name, str) or name not in PLANNERS:
        raise PlanningError(f"planner: expected one of {planner_names()}, got {name!r}")
    module_name, class_name = PLANNERS[name]
    planner_class = getattr(importlib.import_module(module_name), class_name)
    known = _option_names(planner_class)
    unknown = sorted(option for option in options if option not in known)
    if unknown:
        raise PlanningError(f"planner {name!r} has no option {', '.join(unknown)}; expected options among {known}")
    return planner_class(**options)


def _option_names(planner_class: type) -> list[str]:
    return [p for p in inspect.signature(planner_class).parameters if p not in ("self", "args", "kwargs")]
