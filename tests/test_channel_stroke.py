"""Channel stroke: hand-computed cases for each rule, then reference-vs-kernel equivalence."""

import math

import numpy as np
import pytest
import torch

from cpia_cuda import channel_stroke, distance_weights
from cpia_cuda.ops import _stroke_op_args
from cpia_cuda.reference import channel_stroke_reference
from conftest import (EMULATED, FUSED_BACKENDS, emulated_channel_stroke, emulated_kernels, needs_cuda,
                      needs_emulator, random_stroke_case)

ALL_BACKENDS = ["reference"] + FUSED_BACKENDS


def run(Y, tau, backend, **kwargs):
    if backend == EMULATED:
        return emulated_channel_stroke(Y, tau, **kwargs)
    device = "cuda" if backend == "cuda" else "cpu"
    moved = {k: (v.to(device) if isinstance(v, torch.Tensor) and k != "brush" else v) for k, v in kwargs.items()}
    return channel_stroke(Y.to(device), tau, backend=backend, **moved)


def strokes_list(result):
    return result.strokes.cpu().tolist()


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    return request.param


def test_min_response_none_paints_negative_responses_too(backend):
    Y = torch.tensor([[[2.0, -1.0, 0.5, -3.0]]])
    stopped = run(Y, 1, backend, brush=0, channel_cost=0.0, min_response=0.0)
    assert strokes_list(stopped) == [[0, 0, 0, 1, 1], [0, 0, 2, 1, 1]] and stopped.stop_reason == "min_response"
    painted = run(Y, 1, backend, brush=0, channel_cost=0.0, min_response=None)
    assert strokes_list(painted)[2:] == [[0, 0, 1, 1, 1], [0, 0, 3, 1, 1]] and painted.stop_reason == "exhausted"


def test_ties_go_to_smallest_flat_index_and_tau_saturates(backend):
    Y = torch.ones(2, 2, 2)
    r = run(Y, 1, backend, brush=0, channel_cost=0.0, min_response=0.0)
    assert r.order.cpu().tolist() == [[[0, 1], [2, 3]], [[-1, -1], [-1, -1]]]
    assert strokes_list(r) == [[0, 0, 0, 1, 1], [0, 0, 1, 1, 1], [0, 1, 0, 1, 1], [0, 1, 1, 1, 1]]
    assert r.stop_reason == "exhausted"
    assert r.coverage.cpu().tolist() == [1.0, 0.0]


def test_channel_cost_penalises_the_cursor_channel(backend):
    Y = torch.tensor([[[1.0, 0.0, 0.9]], [[0.0, 0.6, 0.0]]])
    penalised = run(Y, 2, backend, brush=0, channel_cost=0.5, sigma=1.0)
    # 0.9 * Wt[4] = 0.9 * (1 - 0.5 * (1 - e^-2)) = 0.511 < 0.6: the second stroke changes channel
    assert [s[:3] for s in strokes_list(penalised)] == [[0, 0, 0], [1, 0, 1], [0, 0, 2]]
    free = run(Y, 2, backend, brush=0, channel_cost=0.0, sigma=1.0)
    assert [s[:3] for s in strokes_list(free)] == [[0, 0, 0], [0, 0, 2], [1, 0, 1]]
    assert penalised.stop_reason == free.stop_reason == "min_response"


def test_sensitivity_threshold_and_brush_extension(backend):
    Y = torch.tensor([[[0.5, 0.79, 1.0, 0.8, 0.3]]])
    r = run(Y, 1, backend, brush=1, m=0.8)
    # centre 1.0: 0.8 >= float32(0.8) * 1.0 joins the stroke, 0.79 does not
    assert r.order.cpu().tolist() == [[[2, 1, 0, 0, 3]]]
    assert strokes_list(r) == [[0, 0, 2, 2, 1], [0, 0, 1, 1, 1], [0, 0, 0, 1, 1], [0, 0, 4, 1, 1]]
    assert r.stop_reason == "exhausted"


def test_sensitivity_compares_with_the_float32_product(backend):
    """The rule is Y[q, h', w'] >= float32(m) * Y[q, h, w], the product rounded to float32."""
    def threshold(centre):
        return np.float32(0.8) * np.float32(centre)

    rounded_down, rounded_apart = 1.001953125, 1.0000019073486328
    # A float64 product would exclude the float32 threshold itself ...
    assert float(threshold(rounded_down)) < 0.8 * rounded_down
    # ... and 0.8 * Y in float64 rounded to float32 lands one step below the float32 product.
    below_by_float64_m = np.float32(0.8 * rounded_apart)
    assert below_by_float64_m < threshold(rounded_apart)
    cases = [(rounded_down, threshold(rounded_down), True),
             (rounded_down, np.nextafter(threshold(rounded_down), np.float32(0)), False),
             (rounded_apart, below_by_float64_m, False)]
    for centre, neighbour, joins in cases:
        Y = torch.tensor([[[centre, float(neighbour)]]])
        r = run(Y, 1, backend, brush=1, m=0.8, channel_cost=0.0, min_response=0.0)
        assert r.order.cpu().tolist() == ([[[0, 0]]] if joins else [[[0, 1]]]), (centre, float(neighbour))


def test_min_response_compares_with_the_float32_product(backend):
    y_max = np.float32(1.001953125)
    threshold = np.float32(0.1) * y_max  # float32(min_response) * Ymax, rounded to float32
    assert float(threshold) < 0.1 * float(y_max)  # rounded down: a float64 product would stop at it
    for second, reason, count in [(threshold, "exhausted", 2),
                                  (np.nextafter(threshold, np.float32(0)), "min_response", 1)]:
        r = run(torch.tensor([[[float(y_max), float(second)]]]), 1, backend, brush=0, min_response=0.1)
        assert (r.stop_reason, len(strokes_list(r))) == (reason, count)


def test_penetration_order_ties_and_room_under_tau(backend):
    Y = torch.tensor([0.2, 0.9, 0.5, 0.5]).view(4, 1, 1)
    r = run(Y, 3, backend, brush=0, p=3)
    assert strokes_list(r) == [[1, 0, 0, 3, 3]]
    assert r.order.flatten().cpu().tolist() == [-1, 0, 0, 0]
    # one channel already on leaves room for two: the tie 0.5/0.5 goes to channel 2
    init = torch.tensor([True, False, False, False]).view(4, 1, 1)
    r = run(Y, 3, backend, brush=0, p=3, init_mask=init)
    assert strokes_list(r) == [[1, 0, 0, 2, 2]]
    assert r.order.flatten().cpu().tolist() == [-1, 0, 0, -1]
    assert r.stop_reason == "exhausted"


def test_custom_brush_shape_and_raster_order(backend):
    Y = torch.ones(1, 3, 3)
    cross = torch.tensor([[False, True, False], [True, True, True], [False, True, False]])
    r = run(Y, 1, backend, brush=cross, m=1.0, max_strokes=1)
    assert r.order[0].cpu().tolist() == [[0, 0, -1], [0, -1, -1], [-1, -1, -1]]
    r = run(Y, 1, backend, brush=cross, m=1.0, max_strokes=1, init_mask=torch.zeros(1, 3, 3, dtype=torch.bool))
    assert strokes_list(r) == [[0, 0, 0, 3, 1]]
    big = run(torch.ones(1, 5, 5), 1, backend, brush=2, m=1.0, channel_cost=0.0)
    assert strokes_list(big) == [[0, 0, 0, 9, 1], [0, 0, 3, 6, 1], [0, 3, 0, 6, 1], [0, 3, 3, 4, 1]]
    # with a movement cost the nearer (3, 3) comes before (3, 0)
    moving = run(torch.ones(1, 5, 5), 1, backend, brush=2, m=1.0, channel_cost=0.5)
    assert strokes_list(moving) == [[0, 0, 0, 9, 1], [0, 0, 3, 6, 1], [0, 3, 3, 8, 1], [0, 3, 0, 2, 1]]


def test_allowed_region_restricts_strokes_and_ymax(backend):
    Y = torch.tensor([[[5.0, 1.0], [1.0, 1.0]]])
    allowed = torch.tensor([[False, True], [True, True]])
    r = run(Y, 1, backend, brush=1, m=1.0, allowed=allowed)
    assert r.order.cpu().tolist() == [[[-1, 0], [0, 0]]]
    assert strokes_list(r) == [[0, 0, 1, 3, 1]]
    assert r.coverage.cpu().tolist() == [1.0]  # of the 3 allowed locations


@pytest.mark.parametrize(
    "limits, reason, count",
    [({"max_strokes": 1}, "max_strokes", 1), ({"max_strokes": 0}, "max_strokes", 0),
     ({"max_coverage": 0.5}, "max_coverage", 2), ({"min_response": 0.6}, "min_response", 2),
     ({"min_response": 0.0}, "exhausted", 4),
     # both limits are reached before the third stroke: max_strokes is checked first
     ({"max_strokes": 2, "max_coverage": 0.5}, "max_strokes", 2)],
)
def test_each_stop_reason(backend, limits, reason, count):
    Y = torch.tensor([[[4.0, 3.0, 2.0, 1.0]]])
    r = run(Y, 1, backend, brush=0, **limits)
    assert r.stop_reason == reason
    assert [s[2] for s in strokes_list(r)] == [0, 1, 2, 3][:count]


def test_init_mask_elements_are_not_candidates_and_count_towards_tau(backend):
    Y = torch.tensor([[[3.0, 1.0]], [[2.0, 2.0]]])
    init = torch.tensor([[[True, False]], [[False, False]]])
    r = run(Y, 1, backend, brush=0, init_mask=init, min_response=0.0)
    # location 0 is full (tau=1) from the start; channel 0 at location 1 has 1.0 < 2.0
    assert strokes_list(r) == [[1, 0, 1, 1, 1]]
    assert r.order.cpu().tolist() == [[[-1, -1]], [[-1, 0]]]
    assert r.coverage.cpu().tolist() == [0.5, 0.5]


def test_batch_matches_single_images(backend):
    g = torch.Generator().manual_seed(3)
    Y = torch.randn(3, 4, 6, 5, generator=g)
    allowed = torch.rand(3, 6, 5, generator=g) > 0.3
    batch = run(Y, 2, backend, p=2, allowed=allowed, min_response=0.0)
    for n in range(3):
        single = run(Y[n], 2, backend, p=2, allowed=allowed[n], min_response=0.0)
        assert torch.equal(batch.order[n], single.order)
        assert torch.equal(batch.strokes[n], single.strokes)
        assert batch.stop_reason[n] == single.stop_reason


def test_empty_dimensions_give_empty_results(backend):
    for shape in [(0, 4, 4), (3, 0, 4), (2, 3, 0)]:
        r = run(torch.zeros(shape), 1, backend)
        assert r.order.shape == shape and r.strokes.shape == (0, 5)
        for limits in ({}, {"max_strokes": 0}, {"max_coverage": 0.5}):  # no loop runs: no limit is reached
            assert run(torch.zeros(shape), 1, backend, **limits).stop_reason == "exhausted"
    r = run(torch.zeros(0, 2, 3, 3), 1, backend)
    assert r.order.shape == (0, 2, 3, 3) and r.strokes == []


def test_distance_weight_table():
    table = distance_weights(0.5, 4.0, 64, 64)
    expected = [np.float32(1 - 0.5 * (1 - np.exp(-k / 32.0))) for k in range(table.numel())]
    assert table.tolist() == [float(v) for v in expected]
    assert table[-1] == np.float32(0.5) and table[-2] != table[-1]  # cut where it reaches its floor
    assert distance_weights(0.0, 4.0, 64, 64).tolist() == [1.0]
    assert distance_weights(0.5, 100.0, 3, 3).numel() == 9  # image smaller than the Gaussian
    assert distance_weights(0.5, 1e30, 6000, 6000).tolist() == [1.0]  # no distance changes the weight
    assert distance_weights(0.01, 1000.0, 30, 30).numel() == 29**2 + 29**2 + 1 - 6


def literal_distance_weights(g, sigma, height, width):
    """The table of docs/algorithm.md, entry by entry with the C library's exp, up to its first entry
    equal to the weight of the largest distance."""
    values = [float(np.float32(1.0 - g * (1.0 - math.exp(-k / (2.0 * sigma * sigma)))))
              for k in range((height - 1) ** 2 + (width - 1) ** 2 + 1)]
    return values[: values.index(values[-1]) + 1]


@pytest.mark.parametrize("g, sigma, height, width", [
    (0.5, 4.0, 64, 64), (1.0, 0.3, 20, 30), (0.123456, 7.3, 100, 1), (0.9, 60.0, 90, 90), (0.7, 3000.0, 40, 50),
    (1.0, 4.234749300956133, 50, 50),  # numpy's exp and the C library's round entry 200 differently
    (0.01, 1000.0, 30, 30),  # the last 7 weights of the image are equal: the table stops at the first
])
def test_distance_weight_table_follows_its_definition(g, sigma, height, width):
    assert distance_weights(g, sigma, height, width).tolist() == literal_distance_weights(g, sigma, height, width)


def test_distance_weight_table_limits():
    # 2 sigma^2 underflows: the formula's limit, weight 1 at the cursor and the floor elsewhere
    assert distance_weights(0.5, 1e-200, 5, 5).tolist() == [1.0, 0.5]
    with pytest.raises(ValueError, match=r"sigma=100000 on a 1x65536 image needs a distance-weight table of "
                                         r"4294834885 entries, more than 67108864 .* use a smaller sigma"):
        distance_weights(0.5, 1e5, 1, 65536)


@pytest.mark.parametrize("fused", FUSED_BACKENDS)
def test_tiny_sigma_matches_reference(fused):
    Y = torch.rand(3, 6, 7, generator=torch.Generator().manual_seed(3))
    expected = run(Y, 2, "reference", sigma=1e-200, max_strokes=30)
    assert strokes_list(run(Y, 2, fused, sigma=1e-200, max_strokes=30)) == strokes_list(expected)


@pytest.mark.parametrize("fused", FUSED_BACKENDS)
def test_the_fused_kernels_keep_denormals_in_flush_denormal_mode(fused):
    """torch.set_flush_denormal(True) sets the calling thread's mode only: image 0 of a batch, painted
    on that thread, must not be painted otherwise than the images on the worker threads."""
    image = torch.tensor([[[1e-38, 4e-39, 0.0]]])  # denormal responses; 4e-39 < m * 1e-38
    batch = image.expand(4, 1, 1, 3).contiguous()
    options = dict(brush=1, m=0.5, min_response=0.0, max_strokes=1)
    expected = strokes_list(run(image, 1, "reference", **options))
    assert expected == [[0, 0, 0, 1, 1]]
    # the threshold min_response * Ymax of a denormal Ymax (the CUDA op takes Ymax with a torch reduction)
    smallest = torch.tensor([[[1.401298464324817e-45, 0.0, 1.401298464324817e-45, -1.401298464324817e-45]]])
    smallest_options = dict(brush=0, min_response=1.0, channel_cost=1.0, sigma=0.3)
    smallest_expected = strokes_list(run(smallest, 1, "reference", **smallest_options))
    assert len(smallest_expected) == 1
    torch.set_flush_denormal(True)
    try:
        painted = run(batch, 1, fused, **options)
        smallest_painted = run(smallest, 1, fused, **smallest_options)
    finally:
        torch.set_flush_denormal(False)
    assert [strokes.cpu().tolist() for strokes in painted.strokes] == [expected] * 4
    assert strokes_list(smallest_painted) == smallest_expected


def uncropped_reference_strokes(Y, tau, brush_cells, **kwargs):
    """The reference op run on a brush tensor as given, past the public API's crop."""
    args = list(_stroke_op_args(Y, tau, 0, 0.8, 1, 0.5, 4.0, 0.1, None, None, None, None))
    args[3], args[6] = brush_cells, kwargs["m"]
    records = channel_stroke_reference(*args)[1]
    return records.tolist()


def test_brush_larger_than_the_image_is_cropped_without_changing_strokes(backend):
    Y = torch.rand(4, 5, 7, generator=torch.Generator().manual_seed(5)) + 0.5  # with m small, every offset passes
    box = torch.ones(17, 21, dtype=torch.bool)  # reaches past every edge from every centre
    assert strokes_list(run(Y, 2, backend, brush=10**9, m=0.01)) == uncropped_reference_strokes(Y, 2, box, m=0.01)
    pattern = torch.rand(41, 61, generator=torch.Generator().manual_seed(6)) > 0.5
    pattern[20, 30] = True
    assert strokes_list(run(Y, 2, backend, brush=pattern, m=0.01)) == uncropped_reference_strokes(Y, 2, pattern,
                                                                                                  m=0.01)


@pytest.mark.parametrize("fused", FUSED_BACKENDS)
def test_the_ops_crop_a_brush_they_are_given_whole(fused):
    """Called directly, past make_brush, the ops crop the brush themselves: a brush of 2^31 + 5657
    cells (a view of one) on a 4 x 5 image paints as its 7 x 9 crop, and is not refused as too large."""
    Y = torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(8)) + 0.5  # with m small, every offset passes
    args = list(_stroke_op_args(Y, 2, 0, 0.01, 1, 0.5, 4.0, 0.1, None, None, None, None))
    args[3] = torch.ones(1, 1, dtype=torch.bool).expand(46341, 46341)
    if fused == EMULATED:
        order, records = emulated_kernels().channel_stroke(*args)[:2]
    else:
        moved = [a.to(fused) if isinstance(a, torch.Tensor) and i != 3 else a for i, a in enumerate(args)]
        order, records = (out.cpu() for out in torch.ops.cpia.channel_stroke(*moved)[:2])
    expected = run(Y, 2, "reference", brush=10**9, m=0.01)
    assert records.tolist() == strokes_list(expected) and len(records) > 1
    assert torch.equal(order[0], expected.order)


@pytest.mark.parametrize("fused", FUSED_BACKENDS)
@pytest.mark.parametrize("seed", range(60))
def test_fused_kernel_matches_reference(fused, seed):
    Y, tau, kwargs = random_stroke_case(seed)
    expected = run(Y, tau, "reference", **kwargs)
    got = run(Y, tau, fused, **kwargs)
    assert torch.equal(got.order.cpu(), expected.order)
    assert got.stop_reason == expected.stop_reason
    for a, b in zip(got.strokes, expected.strokes):
        assert torch.equal(a.cpu(), b)
    assert torch.equal(got.coverage.cpu(), expected.coverage)


def test_fused_kernel_matches_reference_on_a_correlated_activation():
    g = torch.Generator().manual_seed(0)
    Y = torch.nn.functional.avg_pool2d(torch.rand(1, 48, 40, 40, generator=g), 5, 1, 2)[0]
    kwargs = dict(brush=1, m=0.8, p=2, channel_cost=0.5, sigma=4.0, min_response=0.1, max_strokes=300)
    expected = run(Y, 12, "reference", **kwargs)
    got = run(Y, 12, "cpu", **kwargs)
    assert got.num_strokes == 300
    assert torch.equal(got.order, expected.order) and torch.equal(got.strokes, expected.strokes)


@pytest.mark.parametrize("fused", FUSED_BACKENDS)
@pytest.mark.parametrize("C, p", [(17, 3), (300, 6)])
def test_penetration_on_deep_channel_stacks_matches_reference(fused, C, p):
    """Penetration over many channels (the CPU's per-location channel tree gets two and three levels)
    with ties between channels, elements on from the start and channels switched on by earlier
    strokes that the penetration must skip."""
    g = torch.Generator().manual_seed(C)
    Y = (torch.rand(C, 13, 11, generator=g) * 4).round() / 4  # few distinct values: ties across channels
    init_mask = torch.rand(C, 13, 11, generator=g) > 0.7
    kwargs = dict(brush=1, m=0.5, p=p, channel_cost=0.5, sigma=2.0, min_response=0.0, max_strokes=400,
                  init_mask=init_mask)
    expected = run(Y, C // 2, "reference", **kwargs)
    got = run(Y, C // 2, fused, **kwargs)
    assert (expected.strokes[:, 4] == p).sum() > 20  # full penetrations happened
    assert torch.equal(got.order.cpu(), expected.order)
    assert torch.equal(got.strokes.cpu(), expected.strokes)


def test_reference_runs_on_the_device_of_y():
    Y = torch.rand(2, 4, 4)
    r = channel_stroke(Y, 1, backend="reference")
    assert r.order.device == Y.device and r.mask.dtype == torch.bool
    assert torch.equal(r.mask, r.order >= 0)


def test_other_float_dtypes_are_converted():
    Y = torch.rand(3, 5, 5, dtype=torch.float64)
    a = channel_stroke(Y, 2)
    b = channel_stroke(Y.float(), 2)
    assert torch.equal(a.order, b.order)


@needs_cuda
@pytest.mark.parametrize(
    "shape, tau, kwargs",
    [
        ((3, 64, 96, 80), 8, dict(p=3, brush=2, min_response=0.0, max_strokes=1500)),
        ((16, 300, 260), 4, dict(p=2, m=0.6, max_strokes=3000)),
        ((32, 1024, 1024), 8, dict(p=2, max_strokes=500)),
        ((256, 64, 64), 64, dict(p=2, max_strokes=2000)),
    ],
)
def test_cuda_matches_cpu_on_larger_inputs(shape, tau, kwargs):
    """Images whose tiles far outnumber a block's threads, batches, deep channel stacks."""
    g = torch.Generator().manual_seed(sum(shape))
    Y = torch.nn.functional.avg_pool2d(torch.rand(shape, generator=g).reshape(-1, 1, *shape[-2:]), 5, 1, 2)
    Y = Y.reshape(shape) - 0.2  # negative responses too
    cpu = channel_stroke(Y, tau, backend="cpu", **kwargs)
    cuda = channel_stroke(Y.cuda(), tau, backend="cuda", **kwargs)
    assert torch.equal(cuda.order.cpu(), cpu.order)
    assert cuda.stop_reason == cpu.stop_reason
    for a, b in zip(cuda.strokes if isinstance(cuda.strokes, list) else [cuda.strokes],
                    cpu.strokes if isinstance(cpu.strokes, list) else [cpu.strokes]):
        assert torch.equal(a.cpu(), b)


@needs_cuda
def test_cuda_run_that_spans_launches_matches_cpu():
    """2048 images whose 4096 one-element strokes each overflow the 2^22 records a launch keeps
    over the batch (2048 per image): every image stops with its buffer full and is resumed."""
    g = torch.Generator().manual_seed(4096)
    Y = torch.rand(2048, 4, 32, 32, generator=g)
    kwargs = dict(brush=0, p=1, min_response=0.0)
    cpu = channel_stroke(Y, 4, backend="cpu", **kwargs)
    cuda = channel_stroke(Y.cuda(), 4, backend="cuda", **kwargs)
    assert cpu.num_strokes == [4096] * 2048
    assert torch.equal(cuda.order.cpu(), cpu.order)
    assert cuda.stop_reason == cpu.stop_reason
    assert all(torch.equal(a.cpu(), b) for a, b in zip(cuda.strokes, cpu.strokes))


@needs_emulator
@pytest.mark.parametrize(
    "shape, tau, kwargs",
    [
        ((700, 9, 9), 350, dict(p=4, brush=1, m=0.5, min_response=0.0, max_strokes=40)),
        ((2, 190, 180), 1, dict(p=1, brush=2, m=0.6, min_response=0.0, max_strokes=40)),
        ((3, 24, 30, 30), 4, dict(p=2, brush=1, m=0.6, max_strokes=100)),
    ],
)
def test_emulated_cuda_matches_cpu_on_inputs_wider_than_a_block(shape, tau, kwargs):
    """The CUDA kernel's block-strided loops: more channels (penetration, saturation sweeps) and
    more tiles (the cursor channel's floors) than a block has threads, and a batch, each under
    several thread orders of the emulator."""
    g = torch.Generator().manual_seed(sum(shape))
    Y = torch.nn.functional.avg_pool2d(torch.rand(shape, generator=g).reshape(-1, 1, *shape[-2:]), 5, 1, 2)
    Y = ((Y.reshape(shape) - 0.2) * 64).round() / 64  # signed, with ties
    if len(shape) == 4:
        kwargs = dict(kwargs, allowed=torch.rand(shape[0], *shape[2:], generator=g) > 0.2,
                      init_mask=torch.rand(shape, generator=g) > 0.9)
    expected = channel_stroke(Y, tau, backend="cpu", **kwargs)
    for schedule_seed in range(3):
        got = emulated_channel_stroke(Y, tau, schedule_seed=schedule_seed, **kwargs)
        assert torch.equal(got.order, expected.order)
        assert got.stop_reason == expected.stop_reason
        assert all(torch.equal(a, b) for a, b in zip(got.strokes, expected.strokes))


@needs_emulator
def test_emulated_cuda_stroke_block_barriers_per_stroke():
    """On a GPU every block barrier makes the block wait for its slowest thread, so the number per
    stroke bounds the loop's latency; counted under the emulator, where it is exact. With p = 2 and
    no location reaching tau, one barrier each: two block reductions for the argmax, one to pick the
    penetrating channel, the brush and the stroke's end: 5 (18 here before the brush took its
    channels without barriers between them and the tree repair one warp a path, 13 before a block
    reduction took one barrier instead of three, 6 before P's first two channels stayed in registers)."""
    noise = torch.rand(1, 24, 32, 32, generator=torch.Generator().manual_seed(5))
    Y = torch.nn.functional.avg_pool2d(noise, 3, 1, 1)[0]
    kwargs = dict(brush=1, m=0.8, p=2, channel_cost=0.5, sigma=4.0, min_response=0.0)
    barriers = []
    for strokes in (1, 6):  # one launch each (the emulated build records 7 strokes a launch)
        before = emulated_kernels().block_barriers()
        result = emulated_channel_stroke(Y, 24, max_strokes=strokes, **kwargs)
        barriers.append(emulated_kernels().block_barriers() - before)
        assert result.num_strokes == strokes and (result.strokes[:, 4] == 2).all()
    assert (barriers[1] - barriers[0]) / 5 <= 5


@needs_emulator
def test_emulated_cuda_run_that_stops_on_min_response_at_a_full_buffer_ends_in_that_launch():
    """The CUDA loop checks min_response before the stroke buffer's room, so a run whose next pick is
    below the threshold just as the buffer fills stops in that launch, rather than in one more launch
    (a host synchronisation on a GPU) that stops at once. The emulated build keeps 7 records a launch:
    7 strokes, then a pick below min_response * Ymax. In block barriers, the same 7 strokes with
    max_strokes = 7 skip only the last argmax's two block reductions."""
    Y = torch.tensor([[[1.0] * 7 + [0.01]]])
    options = dict(brush=0, channel_cost=0.0, min_response=0.1)
    barriers = []
    for limits in ({}, {"max_strokes": 7}):
        before = emulated_kernels().block_barriers()
        result = emulated_channel_stroke(Y, 1, **options, **limits)
        barriers.append(emulated_kernels().block_barriers() - before)
        assert result.num_strokes == 7
    assert result.stop_reason == "max_strokes"
    assert barriers[0] - barriers[1] == 2


@pytest.mark.parametrize(
    "shape, tau, kwargs",
    [
        ((12, 70, 45), 3, dict(p=3, brush=2, m=0.6, channel_cost=0.9, sigma=6.0, min_response=0.0, max_strokes=700)),
        ((40, 33, 57), 2, dict(p=2, brush=1, channel_cost=0.5, sigma=1.5, min_response=0.2)),
        ((2, 6, 90, 20), 6, dict(p=1, brush=0, channel_cost=1.0, sigma=3.0, min_response=0.0, max_coverage=0.9)),
    ],
)
def test_cpu_matches_reference_on_many_tiles(shape, tau, kwargs):
    """Images of dozens of 8x8 tiles (deep tile trees, partial edge tiles) with signed, tied responses,
    where locations saturate often (small tau): the CPU search, its lazy saturation and the tree
    repair must still pick exactly the reference's element at every stroke."""
    g = torch.Generator().manual_seed(sum(shape))
    Y = torch.nn.functional.avg_pool2d(torch.randn(shape, generator=g).reshape(-1, 1, *shape[-2:]), 3, 1, 1)
    Y = (Y.reshape(shape) * 8).round() / 8  # ties
    expected = run(Y, tau, "reference", **kwargs)
    got = run(Y, tau, "cpu", **kwargs)
    assert torch.equal(got.order, expected.order)
    assert got.stop_reason == expected.stop_reason
    for a, b in zip(got.strokes if isinstance(got.strokes, list) else [got.strokes],
                    expected.strokes if isinstance(expected.strokes, list) else [expected.strokes]):
        assert torch.equal(a, b)
