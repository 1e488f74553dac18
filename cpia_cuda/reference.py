"""Pure-PyTorch reference of channel flush and channel stroke.

A literal transcription of the semantics in docs/algorithm.md: every stroke recomputes the masked,
penalised score over all of (C, H, W) and takes its argmax. It is slow on purpose (O(C*H*W) per
stroke) and exists to be read and to check the fused kernels, which must give identical results.
Arguments are the normalised ones of the ``cpia`` ops (4-D ``Y``, bool masks, the distance-weight
table); use :func:`cpia_cuda.channel_stroke` with ``backend="reference"`` for the checked public API.
"""

from __future__ import annotations

import torch

from ._ops import STOP_REASONS, STROKE_COLUMNS


def channel_flush_reference(Y: torch.Tensor, allowed: torch.Tensor, tau: int) -> torch.Tensor:
    """Keep (c,h,w) iff allowed[h,w] and fewer than tau channels outrank c at (h,w).

    c' outranks c when Y[c'] > Y[c], or Y[c'] == Y[c] and c' < c. A stable descending sort puts the
    channels of each location in exactly that order.
    """
    kept = torch.zeros_like(Y, dtype=torch.bool)
    if Y.numel() == 0:
        return kept
    ranking = torch.sort(Y, dim=1, descending=True, stable=True).indices
    top = ranking[:, :tau]
    kept.scatter_(1, top, True)
    return kept & allowed.unsqueeze(1)


def _brush_offsets(brush: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(K, 2) offsets (dh, dw) of the brush's True cells in raster order."""
    kh, kw = brush.shape
    cells = brush.nonzero()  # row-major, so raster order
    return (cells - torch.tensor([kh // 2, kw // 2], device=cells.device)).to(device)


def _stroke_one_image(Y, allowed, init_mask, order, offsets, weights, tau, m, p, min_response, max_strokes,
                      max_coverage):
    C, H, W = Y.shape
    on = init_mask.clone()
    channels_on = on.sum(0, dtype=torch.int32)
    allowed_count = int(allowed.sum())
    covered = int((allowed & (channels_on > 0)).sum())
    m32 = torch.tensor(m, dtype=torch.float32, device=Y.device)
    threshold = None  # no response stop (min_response None), or nothing allowed to stop on
    if allowed_count and min_response is not None:
        threshold = torch.tensor(min_response, dtype=torch.float32, device=Y.device) * Y[:, allowed].max()
    rows = torch.arange(H, device=Y.device).view(H, 1)
    cols = torch.arange(W, device=Y.device).view(1, W)
    minus_inf = torch.tensor(float("-inf"), dtype=Y.dtype, device=Y.device)
    cursor = None
    strokes = []
    while True:
        if max_strokes is not None and len(strokes) >= max_strokes:
            return strokes, "max_strokes"
        if max_coverage is not None and covered >= max_coverage * allowed_count:
            return strokes, "max_coverage"
        candidates = allowed & ~on & (channels_on < tau)
        if not bool(candidates.any()):
            return strokes, "exhausted"
        score = Y.clone()
        if cursor is not None:
            cc, ch, cw = cursor
            d2 = (rows - ch) ** 2 + (cols - cw) ** 2
            score[cc] = Y[cc] * weights[d2.clamp(max=weights.numel() - 1)]
        flat = int(torch.argmax(torch.where(candidates, score, minus_inf).flatten()))  # first max wins
        c, h, w = flat // (H * W), (flat // W) % H, flat % W
        if threshold is not None and bool(Y[c, h, w] < threshold):
            return strokes, "min_response"

        stroke_index = len(strokes)
        channels = [c]
        extra = min(p - 1, tau - int(channels_on[h, w]) - 1)  # penetration_extra in paint_rules.h
        if extra > 0:
            free = ~on[:, h, w]
            free[c] = False
            followers = free.nonzero().flatten()
            by_response = torch.sort(Y[followers, h, w], descending=True, stable=True).indices
            channels += followers[by_response[:extra]].tolist()
        # One channel's brush cells are distinct locations, so they can be decided together;
        # the channels follow one another because each one changes the counts under tau.
        hh, ww = h + offsets[:, 0], w + offsets[:, 1]
        inside = (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
        hh, ww = hh[inside], ww[inside]
        is_centre = (hh == h) & (ww == w)
        pixels_on = 0
        for q in channels:
            switched = allowed[hh, ww] & ~on[q, hh, ww] & (channels_on[hh, ww] < tau)
            switched &= is_centre | (Y[q, hh, ww] >= m32 * Y[q, h, w])  # brush_cell_switches_on
            sh, sw = hh[switched], ww[switched]
            covered += int((channels_on[sh, sw] == 0).sum())
            on[q, sh, sw] = True
            order[q, sh, sw] = stroke_index
            channels_on[sh, sw] += 1
            pixels_on += int(sh.numel())
        if pixels_on == 0:  # the picked element is a candidate, and a stroke's centre always switches on
            raise RuntimeError(f"channel_stroke (reference): internal error, stroke {stroke_index} at {(c, h, w)} "
                               "switched nothing on")
        strokes.append((c, h, w, pixels_on, len(channels)))
        cursor = (c, h, w)


def channel_stroke_reference(
    Y: torch.Tensor,
    allowed: torch.Tensor,
    init_mask: torch.Tensor | None,
    brush: torch.Tensor,
    distance_weights: torch.Tensor,
    tau: int,
    m: float,
    p: int,
    min_response: float | None,
    max_strokes: int | None,
    max_coverage: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same arguments and results as ``torch.ops.cpia.channel_stroke`` (N, C, H, W inputs)."""
    N = Y.shape[0]
    if init_mask is None:
        init_mask = torch.zeros_like(Y, dtype=torch.bool)
    order = torch.full(Y.shape, -1, dtype=torch.int32, device=Y.device)
    offsets = _brush_offsets(brush, Y.device)
    records, counts, reasons = [], [], []
    for n in range(N):
        if Y[n].numel() == 0:
            strokes, reason = [], "exhausted"
        else:
            strokes, reason = _stroke_one_image(Y[n], allowed[n], init_mask[n], order[n], offsets, distance_weights,
                                                tau, m, p, min_response, max_strokes, max_coverage)
        records += strokes
        counts.append(len(strokes))
        reasons.append(STOP_REASONS.index(reason))
    strokes_t = torch.tensor(records, dtype=torch.int32, device=Y.device).reshape(-1, len(STROKE_COLUMNS))
    on_at_allowed = ((order >= 0) | init_mask) & allowed.unsqueeze(1)
    return (order, strokes_t, torch.tensor(counts, dtype=torch.int64, device=Y.device),
            torch.tensor(reasons, dtype=torch.int32, device=Y.device), on_at_allowed.sum(dim=(2, 3)))
