"""Bad input gets a clear error naming the argument; the ops pass torch.library.opcheck."""

import numpy as np
import pytest
import torch

from cpia_cuda import _ops, channel_flush, channel_stroke, distance_weights, make_brush
from conftest import DEVICES, EMULATED, emulated_kernels, needs_emulator

Y = torch.rand(3, 4, 5)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"tau": 0}, ValueError, r"tau must be in \[1, C\] = \[1, 3\], got 0"),
        ({"tau": 4}, ValueError, r"tau must be in \[1, C\] = \[1, 3\], got 4"),
        ({"tau": 1.5}, TypeError, "tau must be an int, got float 1.5$"),
        ({"p": 3, "tau": 2}, ValueError, r"p must be in \[1, tau\] = \[1, 2\], got 3"),
        ({"m": 0.0}, ValueError, r"m must be in \(0, 1\], got 0"),
        ({"m": 1.5}, ValueError, r"m must be in \(0, 1\], got 1.5"),
        ({"m": 1 + 1e-9}, ValueError, r"m must be in \(0, 1\], got 1.000000001"),  # not rounded to the bound
        ({"m": 1e-50}, ValueError, "m must not round to 0 in float32, got 1e-50"),
        ({"channel_cost": -0.1}, ValueError, r"channel_cost must be in \[0, 1\], got -0.1"),
        ({"sigma": 0.0}, ValueError, r"sigma must be in \(0, inf\), got 0"),
        ({"sigma": float("inf")}, ValueError, r"sigma must be in \(0, inf\), got inf"),
        ({"m": 10**400}, ValueError, r"m must be in \(0, 1\], got an int too large for a float"),
        ({"max_strokes": 2**63}, ValueError, "max_strokes must be at most 2\\^63 - 1, got 9223372036854775808"),
        ({"sigma": float("nan")}, ValueError, "sigma must be in"),
        ({"min_response": 2.0}, ValueError, r"min_response must be in \[0, 1\], got 2"),
        ({"max_strokes": -1}, ValueError, "max_strokes must be >= 0, got -1"),
        ({"max_coverage": 0.0}, ValueError, r"max_coverage must be in \(0, 1\], got 0"),
        ({"brush": -1}, ValueError, "brush must be >= 0, got -1"),
        ({"brush": torch.ones(2, 3, dtype=torch.bool)}, ValueError, r"brush must be a 2-D tensor with odd sides, got shape \(2, 3\)"),
        ({"brush": torch.ones(3, 3)}, TypeError, r"brush must be an int z >= 0 or a bool \(kh, kw\) tensor, got a torch.float32 tensor"),
        ({"brush": 1.0}, TypeError, r"brush must be an int z >= 0 or a bool \(kh, kw\) tensor, got float 1.0$"),
        ({"brush": torch.tensor([[True, False, True]])}, ValueError, "brush centre must be True"),
        ({"allowed": torch.ones(4, 4, dtype=torch.bool)}, ValueError, r"allowed must have shape \(4, 5\), got \(4, 4\)"),
        ({"allowed": torch.ones(4, 5)}, TypeError, "allowed must be a bool tensor, got torch.float32"),
        ({"init_mask": torch.zeros(3, 4, 4, dtype=torch.bool)}, ValueError, r"init_mask must have the shape of Y \(3, 4, 5\), got \(3, 4, 4\)"),
        ({"backend": "gpu"}, ValueError, "backend must be one of 'auto', 'reference', 'cpu', 'cuda', got 'gpu'"),
        ({"allowed": torch.ones(4, 5, dtype=torch.bool).to_sparse()}, TypeError,
         "allowed must be a dense tensor, got the layout torch.sparse_coo"),
        ({"init_mask": torch.zeros(3, 4, 5, dtype=torch.bool).to_sparse()}, TypeError,
         "init_mask must be a dense tensor, got the layout torch.sparse_coo"),
        ({"brush": torch.ones(3, 3, dtype=torch.bool).to_sparse()}, TypeError,
         "brush must be a dense tensor, got the layout torch.sparse_coo"),
        ({"brush": torch.ones(3, 3, dtype=torch.bool, device="meta")}, ValueError,
         "brush must be a tensor with values .* got a meta tensor"),
    ],
)
def test_stroke_argument_errors(kwargs, error, message):
    kwargs = dict(kwargs)
    tau = kwargs.pop("tau", 2)
    with pytest.raises(error, match=message):
        channel_stroke(Y, tau, **kwargs)


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (torch.rand(4, 5), ValueError, r"Y must be a 3-D \(C, H, W\) or 4-D \(N, C, H, W\) tensor, got 2-D"),
        (torch.ones(3, 4, 5, dtype=torch.int64), TypeError, "Y must be a floating-point tensor, got torch.int64"),
        (torch.tensor([[[float("nan")]]]), ValueError, "Y must be finite, got NaN or Inf values"),
        (torch.tensor([[[float("inf")]]]), ValueError, "Y must be finite"),
        ([[[1.0]]], TypeError, r"Y must be a torch.Tensor, got list \[\[\[1.0\]\]\]$"),
        (torch.full((2, 2, 2), 1e300, dtype=torch.float64), ValueError,
         r"Y must fit in float32 \(\|Y\| <= 3.4e38\), got torch.float64 values beyond it"),
        (torch.rand(2, 3, 3, device="meta"), ValueError, "Y must hold values .* got a meta tensor"),
        (torch.rand(2, 3, 3).to_sparse(), TypeError, "Y must be a dense tensor, got the layout torch.sparse_coo"),
    ],
)
@pytest.mark.parametrize("op", [channel_stroke, channel_flush])
def test_activation_errors(op, bad, error, message):
    with pytest.raises(error, match=message):
        op(bad, 1)


@pytest.mark.parametrize("args, error, message", [
    ((float("nan"), 4.0, 8, 8), ValueError, r"channel_cost must be in \[0, 1\], got nan"),
    ((2.0, 4.0, 8, 8), ValueError, r"channel_cost must be in \[0, 1\], got 2"),
    ((0.5, -1.0, 8, 8), ValueError, r"sigma must be in \(0, inf\), got -1"),
    ((0.5, torch.tensor(4.0), 8, 8), TypeError, r"sigma must be a real number, got Tensor tensor\(4.\)$"),
    ((0.5, "4", 8, 8), TypeError, "sigma must be a real number, got str '4'$"),
    ((0.5, 4.0, -2, 8), ValueError, "height must be >= 0, got -2"),
    ((0.5, 4.0, 8, 8.0), TypeError, "width must be an int, got float 8.0$"),
])
def test_distance_weight_argument_errors(args, error, message):
    with pytest.raises(error, match=message):
        distance_weights(*args)


def test_a_stroke_whose_pixel_count_could_pass_int32_is_refused():
    # p channels at each of 1025^2 locations a brush of 1025^2 cells reaches: 2048 * 1050625 > 2^31 - 1.
    Y = torch.zeros(1, 1, 1).expand(2048, 1025, 1025)  # no memory
    message = r"p times the locations a stroke reaches .* got p = 2048 and 1050625 locations"
    with pytest.raises(ValueError, match=message):
        channel_stroke(Y, 2048, p=2048, brush=512, max_strokes=10)
    args = [Y.unsqueeze(0), torch.ones(1, 1025, 1025, dtype=torch.bool), None, make_brush(512),
            distance_weights(0.5, 4.0, 1025, 1025), 2048, 0.8, 2048, 0.1, 10, None]
    with pytest.raises(RuntimeError, match=message):
        torch.ops.cpia.channel_stroke(*args)
    # Only the brush's True cells are reached (a call that passes would need Y's 8 GiB in memory).
    holed = torch.ones(1025, 1025, dtype=torch.bool)
    holed[0, 0] = False
    holed_message = "got p = 2048 and 1050624 locations"
    with pytest.raises(ValueError, match=holed_message):
        channel_stroke(Y, 2048, p=2048, brush=holed, max_strokes=10)
    with pytest.raises(RuntimeError, match=holed_message):
        torch.ops.cpia.channel_stroke(*args[:3], holed, *args[4:])


def test_batch_strokes_are_tensors_of_their_own():
    result = channel_stroke(torch.rand(2, 3, 4, 5), 2, max_strokes=4)
    assert all(strokes.untyped_storage().nbytes() == strokes.numel() * 4 for strokes in result.strokes)


def test_flush_errors():
    with pytest.raises(ValueError, match=r"tau must be in \[1, C\] = \[1, 3\], got 5"):
        channel_flush(Y, 5)
    with pytest.raises(ValueError, match=r"allowed must have shape \(2, 4, 5\) or \(2, 4, 5\)|allowed must have shape"):
        channel_flush(Y.unsqueeze(0).expand(2, -1, -1, -1), 1, allowed=torch.ones(3, 4, 5, dtype=torch.bool))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_tau_and_p_are_checked_when_there_are_no_channels(backend):
    """No tau is in [1, C] when C = 0, but a tau that is no int >= 1 (or p > tau) is still an error."""
    Y0 = torch.rand(0, 4, 5)
    with pytest.raises(TypeError, match="tau must be an int, got str 'x'$"):
        channel_stroke(Y0, "x", backend=backend)
    with pytest.raises(TypeError, match="p must be an int, got None$"):
        channel_stroke(Y0, 1, p=None, backend=backend)
    with pytest.raises(ValueError, match=r"p must be in \[1, tau\] = \[1, 1\], got 2"):
        channel_stroke(Y0, 1, p=2, backend=backend)
    with pytest.raises(ValueError, match="tau must be >= 1, got -1"):
        channel_flush(Y0, -1, backend=backend)
    assert channel_flush(Y0, 3, backend=backend).shape == Y0.shape
    assert channel_stroke(Y0, 2**62, p=2**62, backend=backend).num_strokes == 0  # no stroke, no pixel count


def test_backend_device_mismatch():
    with pytest.raises(ValueError, match="backend 'cuda' needs Y on a CUDA device, got Y on cpu"):
        channel_stroke(Y, 1, backend="cuda")


def test_op_level_checks_use_the_same_words():
    """Direct torch.ops calls are checked in C++ with the messages of the Python wrappers."""
    Y4 = Y.unsqueeze(0)
    allowed = torch.ones(1, 4, 5, dtype=torch.bool)
    init = torch.zeros_like(Y4, dtype=torch.bool)
    args = [Y4, allowed, init, make_brush(1), distance_weights(0.5, 4.0, 4, 5), 2, 0.8, 1, 0.1, None, None]
    with pytest.raises(RuntimeError, match=r"tau must be in \[1, C\] = \[1, 3\], got 9"):
        torch.ops.cpia.channel_stroke(*args[:5], 9, *args[6:])
    with pytest.raises(RuntimeError, match=r"m must be in \(0, 1\], got 0"):
        torch.ops.cpia.channel_stroke(*args[:6], 0.0, *args[7:])
    with pytest.raises(RuntimeError, match=r"p must be in \[1, tau\] = \[1, 2\], got 3"):
        torch.ops.cpia.channel_stroke(*args[:7], 3, *args[8:])
    with pytest.raises(RuntimeError, match=r"min_response must be in \[0, 1\], got 2"):
        torch.ops.cpia.channel_stroke(*args[:8], 2.0, *args[9:])
    with pytest.raises(RuntimeError, match=r"min_response must be in \[0, 1\], got -1"):  # not the kernels' None
        torch.ops.cpia.channel_stroke(*args[:8], -1.0, *args[9:])
    no_response_stop = torch.ops.cpia.channel_stroke(*args[:8], None, *args[9:])
    assert _ops.STOP_REASONS[int(no_response_stop[3][0])] == "exhausted"
    with pytest.raises(RuntimeError, match="max_strokes must be >= 0, got -1"):
        torch.ops.cpia.channel_stroke(*args[:9], -1, None)
    with pytest.raises(RuntimeError, match=r"max_coverage must be in \(0, 1\], got 0"):
        torch.ops.cpia.channel_stroke(*args[:10], 0.0)
    with pytest.raises(RuntimeError, match="brush centre must be True"):
        torch.ops.cpia.channel_stroke(*args[:3], torch.tensor([[True, False, True]]), *args[4:])
    huge_brush = torch.ones(1, 1, dtype=torch.bool).expand(46341, 46341)  # 2^31 + 5657 cells, no memory
    message = "brush must have at most 2\\^31 - 1024 cells, got 2147488281"
    # Counted after the crop to (2H - 1) x (2W - 1), as make_brush does: an image it can cover (views, no memory).
    Y_wide = torch.zeros(1, 1, 1, 1).expand(1, 2, 23171, 23171)
    allowed_wide = torch.ones(1, 1, 1, dtype=torch.bool).expand(1, 23171, 23171)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.cpia.channel_stroke(Y_wide, allowed_wide, None, huge_brush, *args[4:])
    with pytest.raises(ValueError, match=message):
        make_brush(huge_brush)
    with pytest.raises(ValueError, match=message):
        make_brush(23170)
    for bad_size in ((0,), "ab", (2, -1), (True, 3), (2.0, 3), 5):
        with pytest.raises(ValueError, match=r"image_size must be \(H, W\), two ints >= 0, or None, got "):
            make_brush(2, image_size=bad_size)
    assert make_brush(2, image_size=torch.Size([2, 9])).shape == (3, 5)
    assert make_brush(2, image_size=(torch.tensor(2), np.int64(9))).shape == (3, 5)
    with pytest.raises(RuntimeError, match=r"m must be in \(0, 1\], got 1.000000001"):
        torch.ops.cpia.channel_stroke(*args[:6], 1 + 1e-9, *args[7:])
    with pytest.raises(RuntimeError, match="m must not round to 0 in float32, got 1e-50"):
        torch.ops.cpia.channel_stroke(*args[:6], 1e-50, *args[7:])
    for bad_table, entry in ((torch.tensor([1.0, 0.5, 0.7]), "2 = 0.7"), (torch.tensor([2.0]), "0 = 2"),
                             (torch.tensor([1.0, float("nan")]), "1 = nan")):
        with pytest.raises(RuntimeError, match=rf"distance_weights must be in \[0, 1\] and non-increasing, got "
                                               rf"entry {entry}"):
            torch.ops.cpia.channel_stroke(*args[:4], bad_table, *args[5:])
    not_finite = Y4.clone()
    not_finite[0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="Y must be finite, got NaN or Inf values"):  # the kernel would crash
        torch.ops.cpia.channel_stroke(not_finite, *args[1:])
    no_channels = [torch.rand(1, 0, 4, 5), allowed, None, *args[3:]]
    with pytest.raises(RuntimeError, match="tau must be >= 1, got -5"):
        torch.ops.cpia.channel_stroke(*no_channels[:5], -5, *no_channels[6:])
    with pytest.raises(RuntimeError, match=r"p must be in \[1, tau\] = \[1, 2\], got 3"):
        torch.ops.cpia.channel_stroke(*no_channels[:7], 3, *no_channels[8:])
    with pytest.raises(RuntimeError, match="tau must be >= 1, got -5"):
        torch.ops.cpia.channel_flush(no_channels[0], allowed, -5)
    huge = 2**62  # no pixel-count bound with no channels, and no int64 overflow computing one
    assert torch.ops.cpia.channel_stroke(*no_channels[:5], huge, no_channels[6], huge, *no_channels[8:])[1].numel() == 0
    with pytest.raises(RuntimeError, match="Y must be float32, got Double"):
        torch.ops.cpia.channel_flush(Y4.double(), allowed, 1)
    # An argument on "meta" sends the call to the ops' Meta kernels (the fakes): the device check still holds.
    on_meta = {1: allowed.to("meta"), 2: init.to("meta"), 4: args[4].to("meta")}
    for position, name in ((1, "allowed"), (2, "init_mask"), (4, "distance_weights")):
        with pytest.raises(RuntimeError, match=rf"{name} must be on the same device as Y \(cpu\), got meta"):
            torch.ops.cpia.channel_stroke(*args[:position], on_meta[position], *args[position + 1:])
    with pytest.raises(RuntimeError, match=r"allowed must be on the same device as Y \(cpu\), got meta"):
        torch.ops.cpia.channel_flush(Y4, on_meta[1], 1)


@pytest.mark.parametrize("Y, allowed, tau, message", [
    (torch.rand(2, 4, 5), torch.ones(1, 4, 5, dtype=torch.bool), 1, "Y must be a 4-D tensor \\(N, C, H, W\\), got 3-D"),
    (torch.rand(1, 3, 4, 5, dtype=torch.float64), torch.ones(1, 4, 5, dtype=torch.bool), 1, "Y must be float32"),
    (torch.rand(1, 3, 4, 5), torch.ones(1, 4, 5), 1, "allowed must be bool"),
    (torch.rand(1, 3, 4, 5), torch.ones(7, dtype=torch.bool), 1,
     r"allowed must have shape \(N, H, W\) = \(1, 4, 5\), got \[7\]"),
    (torch.rand(2, 3, 4, 5), torch.ones(1, 4, 5, dtype=torch.bool), 1,
     r"allowed must have shape \(N, H, W\) = \(2, 4, 5\), got \[1, 4, 5\]"),
    (torch.rand(1, 3, 4, 5), torch.ones(1, 4, 5, dtype=torch.bool), 4, r"tau must be in \[1, C\] = \[1, 3\], got 4"),
    (torch.rand(1, 0, 4, 5), torch.ones(1, 4, 5, dtype=torch.bool), 0, "tau must be >= 1, got 0"),
])
@pytest.mark.parametrize("op", ["channel_flush", "channel_stroke"])
@pytest.mark.parametrize("device", ["cpu", "meta", pytest.param(EMULATED, marks=needs_emulator)])
def test_kernels_and_fakes_refuse_bad_shapes_with_the_same_words(op, Y, allowed, tau, message, device):
    """On meta tensors the ops run their fakes (as under torch.compile): they refuse what decides the
    outputs' shapes as the kernels do (the CPU ones, and the CUDA ones' host code under the emulator),
    rather than return a result for it."""
    ops = emulated_kernels() if device == EMULATED else torch.ops.cpia
    device = "cpu" if device == EMULATED else device
    Y, allowed = Y.to(device), allowed.to(device)
    if op == "channel_flush":
        args = (Y, allowed, tau)
    else:
        weights = distance_weights(0.5, 4.0, 4, Y.shape[-1]).to(device)
        args = (Y, allowed, None, make_brush(0), weights, tau, 0.8, 1, 0.1, None, None)
    with pytest.raises(RuntimeError, match=message):
        getattr(ops, op)(*args)


def test_the_stroke_fake_refuses_an_init_mask_of_another_shape():
    Y = torch.rand(1, 3, 4, 5, device="meta")
    args = (Y, torch.ones(1, 4, 5, dtype=torch.bool, device="meta"), torch.zeros(1, 3, 4, dtype=torch.bool, device="meta"),
            make_brush(0), distance_weights(0.5, 4.0, 4, 5).to("meta"), 2, 0.8, 1, 0.1, None, None)
    with pytest.raises(RuntimeError, match=r"init_mask must have the shape of Y \[1, 3, 4, 5\], got \[1, 3, 4\]"):
        torch.ops.cpia.channel_stroke(*args)


def test_the_ops_compile_where_the_channel_count_is_known_only_at_run_time(monkeypatch):
    """The fakes' checks on sizes are deferred, not guarded on, when a size is data-dependent."""
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo.config, "capture_scalar_outputs", True)

    def flush_first_channels(x, count):
        k = count.item()
        torch._check(k >= 0)
        torch._check(k <= x.shape[1])
        Y = x[:, :k]
        return torch.ops.cpia.channel_flush(Y, torch.ones(Y.shape[0], *Y.shape[2:], dtype=torch.bool), 1)

    x, count = torch.rand(1, 5, 4, 5), torch.tensor(3)
    torch._dynamo.reset()
    compiled = torch.compile(flush_first_channels, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x, count), flush_first_channels(x, count))


@needs_emulator
def test_the_cuda_op_checks_the_device_of_init_mask():
    """The CUDA op's host code reads init_mask on Y's device, and this check is all that guards it.
    Without a GPU it is reached through the emulated op (registered for every dispatch key) with an
    init_mask on "meta"; for the CPU op the Meta kernel (the fake) answers such a call instead."""
    args = [torch.rand(1, 3, 4, 5), torch.ones(1, 4, 5, dtype=torch.bool),
            torch.zeros(1, 3, 4, 5, dtype=torch.bool, device="meta"), make_brush(1),
            distance_weights(0.5, 4.0, 4, 5), 2, 0.8, 1, 0.1, None, None]
    with pytest.raises(RuntimeError, match=r"init_mask must be on the same device as Y \(cpu\), got meta"):
        emulated_kernels().channel_stroke(*args)


def sample_stroke_args(device):
    g = torch.Generator().manual_seed(0)
    Y = torch.randn(2, 5, 6, 7, generator=g).to(device)
    allowed = (torch.rand(2, 6, 7, generator=g) > 0.2).to(device)
    init = (torch.rand(2, 5, 6, 7, generator=g) > 0.9).to(device)
    weights = distance_weights(0.5, 2.0, 6, 7).to(device)
    return [
        (Y, allowed, init, make_brush(1), weights, 3, 0.8, 2, 0.1, None, None),
        (Y, allowed, None, make_brush(0), weights, 5, 0.5, 1, 0.0, 7, None),
        (Y, allowed, init, make_brush(2), weights, 2, 1.0, 2, 0.0, None, 0.5),
    ]


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_channel_stroke(device):
    for args in sample_stroke_args(device):
        torch.library.opcheck(torch.ops.cpia.channel_stroke.default, args)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_channel_flush(device):
    Y = torch.randn(2, 6, 5, 4).to(device)
    allowed = (torch.rand(2, 5, 4) > 0.3).to(device)
    for tau in (1, 3, 6):
        torch.library.opcheck(torch.ops.cpia.channel_flush.default, (Y, allowed, tau))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_on_a_non_contiguous_activation(device):
    """The kernels return contiguous outputs whatever Y's strides; the fakes must say so too."""
    Y = torch.randn(2, 6, 4, 5).to(device).transpose(2, 3)
    allowed = torch.ones(2, 5, 4, dtype=torch.bool, device=device)
    torch.library.opcheck(torch.ops.cpia.channel_flush.default, (Y, allowed, 2))
    weights = distance_weights(0.5, 2.0, 5, 4).to(device)
    torch.library.opcheck(torch.ops.cpia.channel_stroke.default,
                          (Y, allowed, None, make_brush(1), weights, 2, 0.8, 1, 0.1, 9, None))


def test_huge_finite_values_are_accepted():
    """The finiteness check must not mistake an overflowing sum for a NaN/Inf input."""
    Y = torch.full((4, 3, 3), 3e38)
    Y[1] = 2e38
    assert channel_flush(Y, 1)[0].all()
    assert channel_stroke(Y, 1, brush=0).stop_reason == "exhausted"


def test_cpu_kernels_are_built_with_intra_op_threads():
    """Without OpenMP at build time, at::parallel_for in the kernels silently runs on one thread."""
    assert _ops._C.intra_op_parallel()


def test_images_past_int32_stroke_indices_need_max_strokes():
    """Past 2^31 - 1 elements an image could take more strokes than order's int32 indices can count."""
    H, W = 2**8, 2**8 + 1
    big = torch.zeros(1).expand(2**15, H, W)  # C*H*W = 2^31 + 2^23, never materialised
    message = r"max_strokes must be at most 2\^31 - 1 when C\*H\*W exceeds it .* = 2155872256 and max_strokes = None"
    with pytest.raises(ValueError, match=message):
        channel_stroke(big, 1)
    with pytest.raises(ValueError, match=r"max_strokes = 2147483648"):
        channel_stroke(big, 1, max_strokes=2**31)
    args = [big.unsqueeze(0), torch.ones(1, H, W, dtype=torch.bool), None, make_brush(1),
            distance_weights(0.5, 4.0, H, W), 1, 0.8, 1, 0.1, None, None]
    with pytest.raises(RuntimeError, match=message):
        torch.ops.cpia.channel_stroke(*args)
    with pytest.raises(RuntimeError, match=r"C\*H\*W must be below 2\^32 - 1 per image, got 4311744512"):
        torch.ops.cpia.channel_stroke(torch.zeros(1).expand(1, 2**16, H, W), *args[1:9], 10, None)


def test_an_image_too_large_is_refused_before_its_default_allowed_is_made(monkeypatch):
    """The size checks come before any allocation: a (4, 1, 65536, 65536) view of one float would
    otherwise first get an all-True `allowed` of 16 GiB."""
    import cpia_cuda.ops

    def must_not_run(*args):
        raise AssertionError("allowed was built before the size checks")

    monkeypatch.setattr(cpia_cuda.ops, "_allowed_4d", must_not_run)
    huge = torch.zeros(1, 1, 1, 1).expand(4, 1, 2**16, 2**16)  # C*H*W = 2^32 per image, never materialised
    with pytest.raises(ValueError, match=r"C\*H\*W must be below 2\^32 - 1 per image, got 4294967296"):
        channel_stroke(huge, 1, max_strokes=3)
