"""Public API of the two painting ops: channel flush and channel stroke.

Both accept one activation ``Y`` (C, H, W) or a batch (N, C, H, W) and run on one of three backends
that give identical results: ``"reference"`` (pure PyTorch, slow, readable), ``"cpu"`` (fused C++)
and ``"cuda"`` (fused CUDA); ``"auto"`` picks the fused op for Y's device. The exact semantics,
ties included, are in docs/algorithm.md.
"""

from __future__ import annotations

import collections
import math
import operator
import reprlib
import threading
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch

from . import _ops
from .reference import channel_flush_reference, channel_stroke_reference

BACKENDS = ("auto", "reference", "cpu", "cuda")
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MAX_BRUSH_CELLS = 2**31 - 1024  # csrc/op_checks.h: the kernels count brush cells in int32
Brush = Union[int, torch.Tensor]


@dataclass
class StrokeResult:
    """Result of :func:`channel_stroke`.

    Attributes:
        order: int32 like Y: index of the stroke that switched the element on, -1 if never (elements
            of ``init_mask`` stay -1).
        strokes: (S, 5) int32 per image, columns ``channel, row, col, pixels_switched_on,
            channels_in_stroke``; a list of those for a batch.
        stop_reason: why the loop stopped ("max_strokes", "max_coverage", "exhausted",
            "min_response"); a list for a batch.
        coverage: float32 (C,) or (N, C): per channel, the fraction of allowed locations where the
            channel is on at the end (``init_mask`` included).
    """

    order: torch.Tensor
    strokes: Union[torch.Tensor, list[torch.Tensor]]
    stop_reason: Union[str, list[str]]
    coverage: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """Bool like Y: the elements the strokes switched on (``order >= 0``)."""
        return self.order >= 0

    @property
    def num_strokes(self) -> Union[int, list[int]]:
        """Strokes made: an int for a (C, H, W) input, one per image for (N, C, H, W)."""
        if isinstance(self.strokes, list):
            return [int(s.shape[0]) for s in self.strokes]
        return int(self.strokes.shape[0])


# ---------------------------------------------------------------------------------------------
# argument checks: the same words as csrc/op_checks.h


def _given(value) -> str:
    """A value of the wrong type as an error message shows it: its type and a short repr."""
    return "None" if value is None else f"{type(value).__name__} {reprlib.repr(value)}"


def _check_activation(Y: torch.Tensor, check_finite: bool = True) -> torch.Tensor:
    """``Y`` as float32, checked. ``check_finite=False`` leaves the finiteness of a float32 ``Y`` to
    the fused stroke op, which checks it itself (one pass over Y, not two)."""
    if not isinstance(Y, torch.Tensor):
        raise TypeError(f"Y must be a torch.Tensor, got {_given(Y)}")
    if Y.dim() not in (3, 4):
        raise ValueError(f"Y must be a 3-D (C, H, W) or 4-D (N, C, H, W) tensor, got {Y.dim()}-D")
    if not Y.is_floating_point():
        raise TypeError(f"Y must be a floating-point tensor, got {Y.dtype}")
    _require_dense("Y", Y)
    if Y.is_meta:
        raise ValueError("Y must hold values (the results depend on them), got a meta tensor")
    Y32 = Y.to(torch.float32)
    # NaN/Inf in the input first, so that a float64 -> float32 overflow gets its own message
    if check_finite or Y32 is not Y:
        _require_finite(Y)
        if Y32 is not Y and not _all_finite(Y32):
            raise ValueError(f"Y must fit in float32 (|Y| <= 3.4e38), got {Y.dtype} values beyond it")
    return Y32


def _require_dense(name: str, value: torch.Tensor) -> None:
    if value.layout != torch.strided:
        raise TypeError(f"{name} must be a dense tensor, got the layout {value.layout}")


def _require_finite(Y: torch.Tensor) -> None:
    if not _all_finite(Y):
        raise ValueError("Y must be finite, got NaN or Inf values")


def _all_finite(Y: torch.Tensor) -> bool:
    # A sum is finite unless an element is NaN/Inf (or the sum overflows): one cheap pass first,
    # the exact check only when that pass is not conclusive.
    return not Y.numel() or bool(torch.isfinite(Y.sum())) or bool(torch.isfinite(Y).all())


def _check_int(name: str, value, low: int, high: Optional[int] = None, high_name: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {_given(value)}")
    value = int(value)
    if high is None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and not low <= value <= high:
        named = f"[{low}, {high_name}] = " if high_name else ""
        raise ValueError(f"{name} must be in {named}[{low}, {high}], got {value}")
    return value


def _check_tau(tau, channels: int) -> int:
    # With no channels no tau is in range; its type and sign are still checked.
    return _check_int("tau", tau, 1, channels, "C") if channels > 0 else _check_int("tau", tau, 1)


def _check_real(name: str, value, low: float, high: float, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {_given(value)}")
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if math.isinf(high) else ']'}"
    try:
        value = float(value)
    except OverflowError:
        raise ValueError(f"{name} must be in {interval}, got an int too large for a float") from None
    below = value <= low if low_open else value < low
    if not math.isfinite(value) or below or value > high:
        raise ValueError(f"{name} must be in {interval}, got {_real_text(value)}")
    return value


def _real_text(value: float) -> str:
    """``value`` with the fewest digits (6 at least) that read back as it (op_checks.h's real_text),
    so that a value just outside a range is not printed as the bound it missed."""
    for digits in range(6, 17):
        text = f"{value:.{digits}g}"
        if float(text) == value:
            return text
    return f"{value:.17g}"


def _check_bool_tensor(name: str, value: torch.Tensor, Y: torch.Tensor) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a bool tensor, got {_given(value)}")
    if value.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got {value.dtype}")
    _require_dense(name, value)
    if value.device != Y.device:
        raise ValueError(f"{name} must be on the same device as Y ({Y.device}), got {value.device}")


def _allowed_4d(allowed: Optional[torch.Tensor], Y4: torch.Tensor, batched: bool) -> torch.Tensor:
    N, _, H, W = Y4.shape
    if allowed is None:
        return torch.ones((N, H, W), dtype=torch.bool, device=Y4.device)
    _check_bool_tensor("allowed", allowed, Y4)
    if allowed.shape == (H, W):
        return allowed.expand(N, H, W).contiguous()
    if batched and allowed.shape == (N, H, W):
        return allowed.contiguous()
    expected = f"({H}, {W}) or ({N}, {H}, {W})" if batched else f"({H}, {W})"
    raise ValueError(f"allowed must have shape {expected}, got {tuple(allowed.shape)}")


def _init_mask_4d(init_mask: Optional[torch.Tensor], Y: torch.Tensor, Y4: torch.Tensor) -> Optional[torch.Tensor]:
    if init_mask is None:
        return None
    _check_bool_tensor("init_mask", init_mask, Y4)
    if init_mask.shape != Y.shape:
        raise ValueError(f"init_mask must have the shape of Y {tuple(Y.shape)}, got {tuple(init_mask.shape)}")
    return init_mask.reshape(Y4.shape).contiguous()


def make_brush(brush: Brush, image_size: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """The brush as a bool (kh, kw) CPU tensor: an int z >= 0 is the (2z+1) x (2z+1) box.

    With ``image_size`` (H, W) the offsets that cannot land in such an image from any centre
    (|dh| >= H or |dw| >= W) are cropped off, which changes no stroke and keeps a huge brush cheap.
    """
    if image_size is not None:
        image_size = _image_size(image_size)
    reach_h, reach_w = (max(image_size[0] - 1, 0), max(image_size[1] - 1, 0)) if image_size else (None, None)
    if isinstance(brush, torch.Tensor):
        if brush.dtype != torch.bool:
            raise TypeError(f"brush must be an int z >= 0 or a bool (kh, kw) tensor, got a {brush.dtype} tensor")
        _require_dense("brush", brush)
        if brush.device.type == "meta":
            raise ValueError("brush must be a tensor with values (CPU or CUDA), got a meta tensor")
        if brush.dim() != 2 or brush.shape[0] % 2 == 0 or brush.shape[1] % 2 == 0:
            raise ValueError(f"brush must be a 2-D tensor with odd sides, got shape {tuple(brush.shape)}")
        centre_h, centre_w = brush.shape[0] // 2, brush.shape[1] // 2
        if not bool(brush[centre_h, centre_w]):
            raise ValueError("brush centre must be True")
        if image_size:
            keep_h, keep_w = min(centre_h, reach_h), min(centre_w, reach_w)
            brush = brush[centre_h - keep_h : centre_h + keep_h + 1, centre_w - keep_w : centre_w + keep_w + 1]
        _check_brush_cells(brush.numel())
        return brush.cpu().contiguous()
    if isinstance(brush, bool) or not isinstance(brush, (int, np.integer)):
        raise TypeError(f"brush must be an int z >= 0 or a bool (kh, kw) tensor, got {_given(brush)}")
    z = _check_int("brush", brush, 0)
    z_h, z_w = (min(z, reach_h), min(z, reach_w)) if image_size else (z, z)
    _check_brush_cells((2 * z_h + 1) * (2 * z_w + 1))
    return torch.ones((2 * z_h + 1, 2 * z_w + 1), dtype=torch.bool)


def _image_size(image_size: object) -> tuple[int, int]:
    """(H, W) as two ints >= 0: ints, numpy ints or 0-d integer tensors (anything with __index__)."""
    sides = list(image_size) if isinstance(image_size, Sequence) and not isinstance(image_size, str) else []
    if len(sides) == 2 and not any(isinstance(side, (bool, np.bool_)) for side in sides):
        try:
            height, width = operator.index(sides[0]), operator.index(sides[1])
        except TypeError:
            pass
        else:
            if height >= 0 and width >= 0:
                return height, width
    raise ValueError(f"image_size must be (H, W), two ints >= 0, or None, got {image_size!r}")


def _check_brush_cells(cells: int) -> None:
    if cells > MAX_BRUSH_CELLS:
        raise ValueError(f"brush must have at most 2^31 - 1024 cells, got {cells}")


# Distance-weight tables by (channel_cost, sigma, max_d2), least recently used first, at most
# _TABLE_CACHE_TABLES tables and _TABLE_CACHE_ENTRIES entries (64 MB of float32) in all.
_table_cache: collections.OrderedDict = collections.OrderedDict()
_table_cache_size = 0  # entries over all tables
_table_cache_lock = threading.Lock()
_TABLE_CACHE_ENTRIES = 1 << 24
_TABLE_CACHE_TABLES = 256
# 256 MB of float32; only a sigma in the thousands on an image thousands of pixels a side needs more.
MAX_DISTANCE_WEIGHTS = 1 << 26


def _distance_weight(channel_cost: float, denominator: float, k: np.ndarray) -> np.ndarray:
    """float32(1 - g*(1 - exp(-k / denominator))) in float64 with the C library's exp (math.exp),
    so the table does not depend on numpy's SIMD code paths."""
    weights = np.empty(k.size, dtype=np.float32)
    chunk = 1 << 22  # bounded float64 temporaries
    for start in range(0, k.size, chunk):
        with np.errstate(over="ignore"):  # a sigma near 1e-160: -k / denominator is -inf, exp 0
            exponent = -k[start : start + chunk] / denominator
        exp = np.exp(exponent)
        value = 1.0 - channel_cost * (1.0 - exp)
        # numpy's exp may differ from the C library's by an ulp or two, which after 1 - exp is
        # rounded to the grid of 1 can move the value by an ulp of 1; where 64 ulps of exp and 4 of
        # 1 could change the float32 rounding, math.exp decides (rare above a weight of 1e-7,
        # the rule below it).
        eps = np.finfo(np.float64).eps
        margin = 64 * eps * exp + 4 * eps
        unsure = np.flatnonzero((value - margin).astype(np.float32) != (value + margin).astype(np.float32))
        if unsure.size:
            exact = np.fromiter(map(math.exp, exponent[unsure].tolist()), dtype=np.float64, count=unsure.size)
            value[unsure] = 1.0 - channel_cost * (1.0 - exact)
        weights[start : start + value.size] = value.astype(np.float32)
    return weights


def _distance_weight_count(channel_cost: float, denominator: float, max_d2: int) -> int:
    """Entries of the table: up to the first k whose weight is that of the largest distance max_d2.

    The weights never increase with k, so every later one is equal too, and the first such k is
    found by bisection. In an image wider than the Gaussian that weight is the floor float32(1 - g)."""
    def weight(k: int) -> np.float32:
        return _distance_weight(channel_cost, denominator, np.array([k], dtype=np.float64))[0]

    last = weight(max_d2)
    low, high = 0, max_d2  # the first k at the last weight lies in [low, high]
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if weight(middle) == last else (middle + 1, high)
    return low + 1


def distance_weights(channel_cost: float, sigma: float, height: int, width: int) -> torch.Tensor:
    """Weight table Wt[k] = float32(1 - g*(1 - exp(-k / (2 sigma^2)))), k = squared distance.

    The factor (1 - G) of the score on the cursor channel, G = J*K with J = g (Eq. 4) and K the
    Gaussian movement cost (Eq. 5). Computed in float64 on the host once, so that every backend
    multiplies by the very same float32 weights. The table stops at the first entry equal to the
    weight of the largest squared distance in an H x W image (the floor float32(1 - g) when the
    image is wider than the Gaussian); larger distances use its last entry. A table of more than
    ``MAX_DISTANCE_WEIGHTS`` entries (sigma in the thousands on an image thousands of pixels a
    side) is refused.
    """
    channel_cost = _check_real("channel_cost", channel_cost, 0.0, 1.0)
    sigma = _check_real("sigma", sigma, 0.0, math.inf, low_open=True)
    height, width = _check_int("height", height, 0), _check_int("width", width, 0)
    return _distance_weight_table(channel_cost, sigma, height, width)


def _distance_weight_table(channel_cost: float, sigma: float, height: int, width: int) -> torch.Tensor:
    """:func:`distance_weights` for arguments already checked (floats, ints)."""
    max_d2 = max(height - 1, 0) ** 2 + max(width - 1, 0) ** 2
    key = (channel_cost, sigma, max_d2)
    with _table_cache_lock:
        values = _table_cache.get(key)
        if values is not None:
            _table_cache.move_to_end(key)
            return torch.from_numpy(values.copy())
    denominator = 2.0 * sigma * sigma
    if denominator == 0.0:  # sigma^2 underflows: every distance > 0 has the floor weight
        values = np.array([1.0, 1.0 - channel_cost][: max_d2 + 1], dtype=np.float32)
    else:
        count = _distance_weight_count(channel_cost, denominator, max_d2)
        if count > MAX_DISTANCE_WEIGHTS:
            raise ValueError(
                f"sigma={sigma:g} on a {height}x{width} image needs a distance-weight table of {count} entries, more "
                f"than {MAX_DISTANCE_WEIGHTS} (the movement cost still changes that far into the image); use a "
                f"smaller sigma")
        values = _distance_weight(channel_cost, denominator, np.arange(count, dtype=np.float64))
    # the bisection's answer, unless the C library's exp is not monotone
    values = values[: np.flatnonzero(values == values[-1])[0] + 1]
    global _table_cache_size
    with _table_cache_lock:
        if key not in _table_cache:
            _table_cache[key] = values
            _table_cache_size += values.size
        while _table_cache_size > _TABLE_CACHE_ENTRIES or len(_table_cache) > _TABLE_CACHE_TABLES:
            _table_cache_size -= _table_cache.popitem(last=False)[1].size
    return torch.from_numpy(values.copy())


def _resolve_backend(backend: str, Y: torch.Tensor) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if backend == "auto":
        backend = "cuda" if Y.is_cuda else "cpu" if Y.device.type == "cpu" else "reference"
    if backend == "reference":
        return backend
    _ops.require_extension()
    if backend == "cpu" and Y.device.type != "cpu":
        raise ValueError(f"backend 'cpu' needs Y on the CPU, got Y on {Y.device}")
    if backend == "cuda":
        if not Y.is_cuda:
            raise ValueError(f"backend 'cuda' needs Y on a CUDA device, got Y on {Y.device}")
        if not _ops.cuda_kernels_available():
            raise RuntimeError("backend 'cuda': this build of cpia_cuda has no CUDA kernels (built without nvcc)")
    return backend


# ---------------------------------------------------------------------------------------------
# public ops


def _flush_op_args(Y: torch.Tensor, tau: int, allowed: Optional[torch.Tensor]) -> tuple:
    """Checks the arguments of :func:`channel_flush` and returns those of the op ``cpia::channel_flush``
    (and of ``channel_flush_reference``): ``(Y, allowed, tau)`` with Y (N, C, H, W) float32."""
    Y = _check_activation(Y)
    batched = Y.dim() == 4
    Y4 = Y if batched else Y.unsqueeze(0)
    tau = _check_tau(tau, Y4.shape[1])
    return Y4.contiguous(), _allowed_4d(allowed, Y4, batched), tau


def channel_flush(
    Y: torch.Tensor, tau: int, *, allowed: Optional[torch.Tensor] = None, backend: str = "auto"
) -> torch.Tensor:
    """Channel flush (the paper's Eq. 3): at each allowed location keep the tau highest channels.

    (c, h, w) is kept iff ``allowed[h, w]`` and fewer than ``tau`` channels c' at (h, w) have
    ``Y[c'] > Y[c]`` or (``Y[c'] == Y[c]`` and ``c' < c``): exactly ``tau`` channels per allowed
    location, ties to the smaller channel index.

    Args:
        Y: float activation (C, H, W) or (N, C, H, W); other float dtypes are converted to float32.
        tau: channels kept per location, 1 <= tau <= C.
        allowed: bool (H, W) (or (N, H, W) for a batch) of locations that may be kept; default all.
        backend: "auto", "reference", "cpu" or "cuda".

    Returns:
        Bool tensor of Y's shape.
    """
    args = _flush_op_args(Y, tau, allowed)
    backend = _resolve_backend(backend, args[0])
    kept = channel_flush_reference(*args) if backend == "reference" else torch.ops.cpia.channel_flush(*args)
    return kept if Y.dim() == 4 else kept.squeeze(0)


def _stroke_op_args(Y: torch.Tensor, tau: int, brush: Brush, m: float, p: int, channel_cost: float, sigma: float,
                    min_response: Optional[float], max_strokes: Optional[int], max_coverage: Optional[float],
                    allowed: Optional[torch.Tensor], init_mask: Optional[torch.Tensor],
                    check_finite: bool = True) -> tuple:
    """Checks the arguments of :func:`channel_stroke` and returns those of the op ``cpia::channel_stroke``
    (and of ``channel_stroke_reference``): ``(Y, allowed, init_mask, brush, distance_weights, tau, m, p,
    min_response, max_strokes, max_coverage)`` with Y (N, C, H, W) float32, allowed (N, H, W)."""
    Y = _check_activation(Y, check_finite)
    batched = Y.dim() == 4
    Y4 = Y if batched else Y.unsqueeze(0)
    N, C, H, W = Y4.shape
    tau = _check_tau(tau, C)
    p = _check_int("p", p, 1, tau, "tau")
    m = _check_real("m", m, 0.0, 1.0, low_open=True)
    if np.float32(m) == 0:  # the kernels compare against float32(m) * Y
        raise ValueError(f"m must not round to 0 in float32, got {_real_text(m)}")
    channel_cost = _check_real("channel_cost", channel_cost, 0.0, 1.0)
    sigma = _check_real("sigma", sigma, 0.0, math.inf, low_open=True)
    if min_response is not None:
        min_response = _check_real("min_response", min_response, 0.0, 1.0)
    if max_strokes is not None:
        max_strokes = _check_int("max_strokes", max_strokes, 0)
        if max_strokes > INT64_MAX:
            raise ValueError(f"max_strokes must be at most 2^63 - 1, got {max_strokes}")
    if max_coverage is not None:
        max_coverage = _check_real("max_coverage", max_coverage, 0.0, 1.0, low_open=True)
    brush_mask = make_brush(brush, (H, W))
    if C * H * W >= 2**32 - 1:
        raise ValueError(f"C*H*W must be below 2^32 - 1 per image, got {C * H * W}")
    if C * H * W > INT32_MAX and (max_strokes is None or max_strokes > INT32_MAX):
        raise ValueError(f"max_strokes must be at most 2^31 - 1 when C*H*W exceeds it (stroke indices in order are "
                         f"int32), got C*H*W = {C * H * W} and max_strokes = {max_strokes}")
    if max(C, H, W) > INT32_MAX:
        raise ValueError(f"C, H and W must each be below 2^31 (stroke records are int32), got {tuple(Y4.shape)}")
    allowed4 = _allowed_4d(allowed, Y4, batched)  # allocates the default: after the size checks
    init4 = _init_mask_4d(init_mask, Y, Y4)
    reach = min(int(brush_mask.count_nonzero()), H * W)  # a stroke switches on at most p channels where it reaches
    if C > 0 and reach * p > INT32_MAX:
        raise ValueError(f"p times the locations a stroke reaches (True brush cells, at most H*W) must be at most "
                         f"2^31 - 1 (a stroke's pixel count is int32), got p = {p} and {reach} locations")
    weights = _distance_weight_table(channel_cost, sigma, H, W).to(Y4.device)
    return (Y4.contiguous(), allowed4, init4, brush_mask, weights, tau, m, p, min_response, max_strokes, max_coverage)


def _stroke_result(args: tuple, outputs: tuple, batched: bool) -> StrokeResult:
    """The :class:`StrokeResult` of the op outputs ``(order, strokes, stroke_counts, stop_reasons,
    channel_counts)`` for the op arguments ``args`` (:func:`_stroke_op_args`)."""
    allowed4 = args[1]
    order, records, counts, reasons, channel_counts = outputs
    allowed_counts = allowed4.sum(dim=(1, 2)).clamp(min=1).to(torch.float32)
    coverage = channel_counts.to(torch.float32) / allowed_counts.unsqueeze(1)
    # each image's own tensor, not a view of the batch's (which pickling one would write out whole)
    strokes = [part.clone() for part in torch.split(records, counts.tolist())] if order.shape[0] else []
    stop_reasons = [_ops.STOP_REASONS[int(r)] for r in reasons.tolist()]
    if batched:
        return StrokeResult(order=order, strokes=strokes, stop_reason=stop_reasons, coverage=coverage)
    return StrokeResult(order=order.squeeze(0), strokes=strokes[0], stop_reason=stop_reasons[0], coverage=coverage[0])


def channel_stroke(
    Y: torch.Tensor,
    tau: int,
    *,
    brush: Brush = 1,
    m: float = 0.8,
    p: int = 1,
    channel_cost: float = 0.5,
    sigma: float = 4.0,
    min_response: Optional[float] = 0.1,
    max_strokes: Optional[int] = None,
    max_coverage: Optional[float] = None,
    allowed: Optional[torch.Tensor] = None,
    init_mask: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> StrokeResult:
    """Channel stroke (the paper's Alg. 1 with penetration, App. A.2): a greedy loop of strokes.

    Each step picks the candidate (c, h, w) of largest score, ties to the smallest flat index
    (c*H + h)*W + w. Candidates are elements that are off, at an allowed location with fewer than
    ``tau`` channels on. The score is Y, except on the channel of the previous stroke, where it is
    ``Y * Wt[d2]`` with d2 the squared distance to the previous stroke (see
    :func:`distance_weights`). The stroke switches on its centre and every brush offset whose response
    on the stroke's channel reaches ``m`` times the centre's, first on c, then on up to p-1 further
    channels of the centre (highest response first) while the location has room under ``tau``.

    The loop stops, checked in this order before each stroke: ``max_strokes`` strokes made;
    ``max_coverage`` of the allowed locations have a channel on; no candidate left ("exhausted");
    the picked response is below ``min_response`` times the largest response at allowed locations
    (with ``min_response=None`` the loop never stops on the response: negative responses are
    painted too).

    Args:
        Y: float activation (C, H, W) or (N, C, H, W).
        tau: channel limit per location, 1 <= tau <= C.
        brush: int z >= 0 for a (2z+1)x(2z+1) box, or a bool (kh, kw) tensor, odd sides, centre True.
        m: sensitivity, 0 < m <= 1.
        p: penetration (channels per stroke), 1 <= p <= tau.
        channel_cost: g, 0 <= g <= 1; sigma: movement-cost width, > 0.
        min_response: stop ratio, 0 <= min_response <= 1; None: no response stop.
        max_strokes: stop after this many strokes (>= 0), per image; None: no limit.
        max_coverage: stop when this fraction (0 < f <= 1) of allowed locations is covered; None: no limit.
        allowed: bool (H, W) or (N, H, W) locations where strokes may switch elements on.
        init_mask: bool like Y: elements already on (not candidates; they count towards tau).
        backend: "auto", "reference", "cpu" or "cuda".

    Returns:
        A :class:`StrokeResult` (``order``, ``mask``, ``strokes``, ``stop_reason``, ``coverage``).

    Raises:
        ValueError (or TypeError for a wrong type) naming the argument, the expected range and the
        value that came.
    """
    args = _stroke_op_args(Y, tau, brush, m, p, channel_cost, sigma, min_response, max_strokes, max_coverage, allowed,
                           init_mask, check_finite=False)
    backend = _resolve_backend(backend, args[0])
    if backend == "reference":  # the fused op checks that Y is finite itself
        _require_finite(args[0])
    stroke_op = channel_stroke_reference if backend == "reference" else torch.ops.cpia.channel_stroke
    return _stroke_result(args, stroke_op(*args), batched=Y.dim() == 4)

