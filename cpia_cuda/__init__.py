"""cpia_cuda: Channel Painter In Action, with fused C++/CUDA stroke ops.

The ops (``channel_flush``, ``channel_stroke``) decompose a generator layer into painting actions;
``paint`` runs the whole painting pipeline (plan regions, stroke each, render frames).
"""

from .generators.base import GeneratorError
from .ops import StrokeResult, channel_flush, channel_stroke, distance_weights, make_brush
from .painting import (PaintingError, PaintResult, PaintSettings, ReplayMismatchWarning, StrokeLog, load_stroke_log,
                       paint, replay, write_outputs)
from .planning.base import PlanningError

__version__ = "0.2.0"

__all__ = [
    "GeneratorError", "PaintResult", "PaintSettings", "PaintingError", "PlanningError", "ReplayMismatchWarning",
    "StrokeLog", "StrokeResult", "channel_flush", "channel_stroke", "distance_weights", "load_stroke_log",
    "make_brush", "paint", "replay", "write_outputs",
]
