"""Channel flush: the top-tau rule with ties, allowed regions, reference-vs-kernel equivalence."""

import pytest
import torch

from cpia_cuda import channel_flush
from conftest import EMULATED, FUSED_BACKENDS, emulated_channel_flush, emulated_kernels, needs_emulator

ALL_BACKENDS = ["reference"] + FUSED_BACKENDS


def flush(Y, tau, backend, allowed=None):
    if backend == EMULATED:
        return emulated_channel_flush(Y, tau, allowed)
    device = "cuda" if backend == "cuda" else "cpu"
    allowed = None if allowed is None else allowed.to(device)
    return channel_flush(Y.to(device), tau, allowed=allowed, backend=backend).cpu()


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_top_tau_with_ties_to_the_smaller_channel(backend):
    Y = torch.tensor([[[1.0, -1.0]], [[2.0, -3.0]], [[2.0, -2.0]]])
    assert flush(Y, 1, backend).tolist() == [[[False, True]], [[True, False]], [[False, False]]]
    assert flush(Y, 2, backend).tolist() == [[[False, True]], [[True, False]], [[True, True]]]
    assert flush(Y, 3, backend).all()
    allowed = torch.tensor([[True, False]])
    assert flush(Y, 2, backend, allowed).tolist() == [[[False, False]], [[True, False]], [[True, False]]]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_signed_zeros_tie(backend):
    Y = torch.tensor([-0.0, 0.0]).view(2, 1, 1)
    assert flush(Y, 1, backend).flatten().tolist() == [True, False]


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("seed", range(20))
def test_fused_matches_reference(backend, seed):
    g = torch.Generator().manual_seed(seed)
    N, C, H, W = (int(torch.randint(1, k, (1,), generator=g)) for k in (3, 40, 17, 17))
    Y = torch.randn(N, C, H, W, generator=g)
    if seed % 2:
        Y = Y.round()
    tau = int(torch.randint(1, C + 1, (1,), generator=g))
    allowed = torch.rand(N, H, W, generator=g) > 0.2
    assert torch.equal(flush(Y, tau, backend, allowed), flush(Y, tau, "reference", allowed))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_keeps_the_topk_set_when_there_are_no_ties(backend):
    Y = torch.randn(64, 9, 7, generator=torch.Generator().manual_seed(1))
    expected = torch.zeros_like(Y, dtype=torch.bool).scatter_(0, Y.topk(10, dim=0).indices, True)
    assert torch.equal(flush(Y, 10, backend), expected)
    assert (flush(Y, 10, backend).sum(0) == 10).all()


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_empty_inputs(backend):
    assert flush(torch.zeros(0, 3, 3), 1, backend).shape == (0, 3, 3)
    assert flush(torch.zeros(2, 0, 3, 3), 1, backend).shape == (2, 0, 3, 3)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("channels, tau", [(100, 37), (129, 64), (300, 1), (300, 299), (513, 256), (1024, 1000)])
def test_fused_matches_reference_on_deep_channel_stacks(backend, channels, tau):
    """Deep stacks, many ties at the tau-th response, signed zeros (the CUDA kernel holds 4 to 32
    words a lane in registers for these C)."""
    g = torch.Generator().manual_seed(channels + tau)
    Y = torch.randn(2, channels, 5, 7, generator=g)
    Y[0] = (Y[0] * 4).round() / 4  # many ties at the tau-th response
    Y[1, :, 0, 0] = 0.0
    Y[1, ::2, 0, 1] = -0.0  # signed zeros tie
    allowed = torch.rand(2, 5, 7, generator=g) > 0.1
    assert torch.equal(flush(Y, tau, backend, allowed), flush(Y, tau, "reference", allowed))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("channels, tau, width", [(1, 1, 37), (2, 1, 17), (33, 5, 16), (200, 100, 1), (64, 63, 41)])
def test_fused_matches_reference_across_location_blocks(backend, channels, tau, width):
    """The CPU selects 16 adjacent locations together: rows that end inside a block, a single
    column, one or two channels, and blocks whose locations hold equal words in every channel."""
    g = torch.Generator().manual_seed(channels * 100 + width)
    Y = (torch.randn(3, channels, 4, width, generator=g) * 2).round() / 2
    Y[1] = 0.25  # every word of every location equal
    Y[2, :, :, ::3] = -0.0
    allowed = torch.rand(3, 4, width, generator=g) > 0.1
    assert torch.equal(flush(Y, tau, backend, allowed), flush(Y, tau, "reference", allowed))


@needs_emulator
def test_emulated_cuda_flush_fits_deep_stacks_in_shared_memory():
    """The CUDA flush shrinks its block to 8 locations when 32 rows of 3000 channels exceed the
    227 KiB of shared memory of an H100/H200 (as the emulator reports), and refuses what never fits."""
    g = torch.Generator().manual_seed(3000)
    Y = (torch.randn(2, 3000, 3, 7, generator=g) * 4).round() / 4
    allowed = torch.rand(2, 3, 7, generator=g) > 0.1
    assert torch.equal(emulated_channel_flush(Y, 1200, allowed), flush(Y, 1200, "reference", allowed))
    limit = (227 * 1024 // 5 - 1) | 1
    emulated_channel_flush(torch.randn(limit, 1, 1), 3)
    with pytest.raises(RuntimeError, match=f"channel_flush on CUDA supports C up to {limit} channels on this "
                                           f"device, got C = {limit + 1}"):
        emulated_channel_flush(torch.randn(limit + 1, 1, 1), 3)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_raw_ops_rank_nan_as_the_reference_does(backend):
    """The ops leave finiteness to their callers (channel_flush refuses NaN/Inf); given NaN anyway,
    every backend ranks it as torch.sort does: above +Inf, whatever its sign and payload, ties to
    the smaller channel."""
    from cpia_cuda.reference import channel_flush_reference

    payloads = torch.tensor([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFBFFFFF], dtype=torch.int64)
    nans = payloads.to(torch.int32).view(torch.float32)  # the wrap to int32 keeps the bit patterns
    g = torch.Generator().manual_seed(5)
    Y = (torch.randn(2, 24, 3, 19, generator=g) * 2).round() / 2
    pick = torch.randint(0, 4, Y.shape, generator=g)
    Y = torch.where(torch.rand(Y.shape, generator=g) < 0.3, nans[pick], Y)
    Y[1, ::3] = torch.where(torch.rand(Y[1, ::3].shape, generator=g) < 0.5, torch.inf, -torch.inf)
    allowed = torch.rand(2, 3, 19, generator=g) > 0.1
    for tau in (1, 5, 12, 24):
        expected = channel_flush_reference(Y, allowed, tau)
        if backend == EMULATED:
            kept = emulated_kernels().channel_flush(Y, allowed, tau)
        else:
            device = "cuda" if backend == "cuda" else "cpu"
            kept = torch.ops.cpia.channel_flush(Y.to(device), allowed.to(device), tau).cpu()
        assert torch.equal(kept, expected), tau
