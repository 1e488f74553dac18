"""Region planning: which regions of the content image are painted, in which order.

A planner turns an image (3, H, W) in [0, 1] into regions (bool mask at image size, label, score):
``segments`` (superpixels merged by colour and position, no weights), ``yolo`` (YOLOv5s-seg, COCO) and
``maskrcnn`` (torchvision's COCO Mask R-CNN, the paper's), built by name with
``make_planner(name, **options)``. ``order_regions`` applies an order policy and
``resolve_overlaps`` makes the plan a partition; ``cpia_cuda.paint`` does both. Options per planner:
docs/pipeline.md, section 1.
"""

from .base import Planner, PlanningError, Region
from .order import order_regions, resolve_overlaps
from .registry import make_planner, planner_names

__all__ = ["Planner", "PlanningError", "Region", "make_planner", "order_regions", "planner_names",
           "resolve_overlaps"]
