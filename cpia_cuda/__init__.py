"""cpia_cuda: Channel Painter In Action, with fused C++/CUDA stroke ops."""

from .ops import StrokeResult, channel_flush, channel_stroke, distance_weights, make_brush

__version__ = "0.1.0"

__all__ = ["StrokeResult", "channel_flush", "channel_stroke", "distance_weights", "make_brush", "__version__"]
