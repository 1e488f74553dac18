"""A planner that needs no weights: superpixels merged into a few colour-coherent regions.

SLIC superpixels (scikit-image) are grouped by a weighted k-means over their mean CIELAB colour
and centroid, so the painting pipeline always has a plan even without a detector.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage.color import rgb2lab
from skimage.segmentation import slic

from .._seeds import check_seed
from .base import Planner, PlanningError, Region
from .order import check_image


def weighted_kmeans(points: np.ndarray, weights: np.ndarray, clusters: int, seed: int,
                    iterations: int = 50) -> np.ndarray:
    """Cluster ``points`` (N, D) with per-point ``weights``; returns a cluster id per point.

    k-means++ seeding from ``np.random.default_rng(seed)``, then Lloyd iterations; deterministic for
    the same inputs. Distance ties go to the lower cluster id.
    """
    rng = np.random.default_rng(seed)
    count = len(points)
    clusters = min(clusters, count)
    centres = [points[rng.choice(count, p=weights / weights.sum())]]
    for _ in range(1, clusters):
        nearest = ((points[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1).min(axis=1)
        spread = nearest * weights
        if spread.sum() <= 0:  # every point sits on a centre already
            break
        centres.append(points[rng.choice(count, p=spread / spread.sum())])
    centres = np.asarray(centres, dtype=np.float64)
    assignment = np.full(count, -1)
    for _ in range(iterations):
        distances = ((points[:, None, :] - centres[None]) ** 2).sum(-1)
        new_assignment = distances.argmin(axis=1)
        if np.array_equal(new_assignment, assignment):
            break
        assignment = new_assignment
        for cluster in range(len(centres)):
            members = assignment == cluster
            if members.any():
                centres[cluster] = np.average(points[members], axis=0, weights=weights[members])
    return assignment


class SegmentsPlanner(Planner):
    """Regions from SLIC superpixels merged by colour (and position) k-means.

    The masks partition the image: every pixel is in exactly one region. There are at most
    ``num_regions`` regions (fewer when the image has fewer distinct superpixels), labelled
    ``"segment-0"``, ``"segment-1"``, ... in raster order of their first pixel. The score is a
    saliency in [0, 1]: the CIELAB distance of the region's mean colour to the mean colour of the
    image border, divided by the largest such distance (all 0 for a uniform image).
    ``num_superpixels`` is raised to ``num_regions`` when smaller.

    Options: ``num_regions`` (default 6), ``num_superpixels`` (SLIC's target, default 200),
    ``compactness`` (SLIC), ``spatial_weight`` (weight of the centroid against the colour in the
    merge: 0 merges by colour alone), ``seed``.
    """

    name = "segments"

    def __init__(self, *, num_regions: int = 6, num_superpixels: int = 200, compactness: float = 10.0,
                 spatial_weight: float = 0.5, seed: int = 0):
        for name, value in (("num_regions", num_regions), ("num_superpixels", num_superpixels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PlanningError(f"{name}: expected an int >= 1, got {value!r}")
        if isinstance(compactness, bool) or not isinstance(compactness, (int, float)) \
                or not 0 < compactness < math.inf:
            raise PlanningError(f"compactness: expected a finite number > 0, got {compactness!r}")
        if isinstance(spatial_weight, bool) or not isinstance(spatial_weight, (int, float)) \
                or not 0 <= spatial_weight < math.inf:
            raise PlanningError(f"spatial_weight: expected a finite number >= 0, got {spatial_weight!r}")
        seed = check_seed(seed, PlanningError)
        self.num_regions = num_regions
        self.num_superpixels = max(num_superpixels, num_regions)
        self.compactness = float(compactness)
        self.spatial_weight = float(spatial_weight)
        self.seed = seed

    def plan(self, image: torch.Tensor) -> list[Region]:
        rgb = check_image(image).detach().cpu().double().permute(1, 2, 0).numpy()
        height, width = rgb.shape[:2]
        lab = rgb2lab(rgb)
        superpixels = slic(rgb, n_segments=self.num_superpixels, compactness=self.compactness, start_label=0,
                           channel_axis=-1)
        _, superpixels = np.unique(superpixels, return_inverse=True)  # ids 0..S-1 without gaps
        superpixels = superpixels.reshape(height, width)

        count = superpixels.max() + 1
        flat_ids = superpixels.ravel()
        sizes = np.bincount(flat_ids, minlength=count).astype(np.float64)

        def mean_per_superpixel(values: np.ndarray) -> np.ndarray:
            return np.bincount(flat_ids, weights=values.ravel(), minlength=count) / sizes

        rows, cols = np.mgrid[0:height, 0:width]
        scale = max(height, width)
        features = np.stack([mean_per_superpixel(lab[..., c]) / 100.0 for c in range(3)]
                            + [self.spatial_weight * mean_per_superpixel(rows) / scale,
                               self.spatial_weight * mean_per_superpixel(cols) / scale], axis=1)
        cluster_of_superpixel = weighted_kmeans(features, sizes, self.num_regions, self.seed)
        pixel_cluster = cluster_of_superpixel[superpixels]

        # Number the clusters in raster order of their first pixel, so labels do not depend on k-means ids.
        _, first_pixel = np.unique(pixel_cluster.ravel(), return_index=True)
        clusters_in_order = pixel_cluster.ravel()[np.sort(first_pixel)]

        border = np.ones((height, width), dtype=bool)
        border[1:-1, 1:-1] = False
        border_colour = lab[border].mean(axis=0)
        masks = [pixel_cluster == cluster for cluster in clusters_in_order]
        contrasts = np.array([np.linalg.norm(lab[mask].mean(axis=0) - border_colour) for mask in masks])
        # Below 1e-6 Lab units a difference is float noise (a uniform image): no region stands out.
        saliency = contrasts / contrasts.max() if contrasts.max() > 1e-6 else np.zeros_like(contrasts)
        return [Region(mask=torch.from_numpy(mask), label=f"segment-{index}", score=float(score))
                for index, (mask, score) in enumerate(zip(masks, saliency))]
