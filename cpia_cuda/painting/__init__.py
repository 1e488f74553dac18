"""Channel Painter In Action: plan, paint region by region, render, and write the results.

``paint`` runs the pipeline (:mod:`.pipeline`), ``replay`` re-renders a painting from its stroke log,
``write_outputs`` writes the images, animations, stroke log and coverage statistics (:mod:`.outputs`).
"""

from .memory import MemoryEstimate, available_memory, estimate_memory
from .outputs import write_outputs
from .pipeline import (PaintingError, PaintResult, PaintSettings, ReplayMismatchWarning, make_plan, paint,
                       regions_at_layer, replay)
from .render import DEFAULT_PREVIEW_SIZE, frame_thresholds, stroke_opacity
from .stroke_log import StrokeLog, load_stroke_log

__all__ = [
    "DEFAULT_PREVIEW_SIZE", "MemoryEstimate", "PaintResult", "PaintSettings", "PaintingError",
    "ReplayMismatchWarning", "StrokeLog",
    "available_memory", "estimate_memory", "frame_thresholds", "load_stroke_log", "make_plan", "paint",
    "regions_at_layer", "replay", "stroke_opacity", "write_outputs",
]
