"""The benchmark runner itself: it must time every backend and detect (non-)identical results."""

import torch

from benchmarks.inputs import correlated_activation
from benchmarks.suite import FlushCase, StrokeCase, format_table, run_flush_case, run_stroke_case


def test_stroke_case_rows_and_identity():
    case = StrokeCase("tiny", lambda: correlated_activation((8, 12, 12)), 3, dict(p=2, max_strokes=40))
    rows = run_stroke_case(case, ("reference", "cpu"), repeats=1)
    by_backend = {row.backend: row for row in rows}
    assert set(by_backend) == {"reference", "cpu"}
    assert by_backend["cpu"].identical == "yes"
    assert by_backend["cpu"].strokes == by_backend["reference"].strokes == 40
    assert by_backend["cpu"].speedup > 0
    assert "| tiny | cpu |" in format_table(rows)


def test_reference_prefix_is_labelled_as_extrapolated():
    case = StrokeCase("prefix", lambda: correlated_activation((6, 10, 10)), 2, dict(max_strokes=30),
                      reference_prefix=5)
    rows = {row.backend: row for row in run_stroke_case(case, ("reference", "cpu"), repeats=1)}
    assert "extrapolated from 5 strokes" in rows["reference"].note
    assert rows["cpu"].identical == "yes (first 5 strokes)"


def test_flush_case_compares_with_reference_and_topk():
    case = FlushCase("flush", lambda: correlated_activation((16, 6, 6)), 5)
    rows = {row.backend: row for row in run_flush_case(case, ("reference", "cpu"), repeats=1)}
    assert rows["cpu"].identical == "yes" and rows["topk"].note == "baseline"


def test_correlated_activation_is_smooth_and_non_negative():
    Y = correlated_activation((4, 32, 32))
    assert (Y >= 0).all()
    neighbour_gap = (Y[:, :, 1:] - Y[:, :, :-1]).abs().mean()
    assert neighbour_gap < (Y - Y.mean()).abs().mean()  # neighbours closer than random pairs
    assert torch.equal(Y, correlated_activation((4, 32, 32)))
