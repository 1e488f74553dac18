"""The benchmark runner itself: it must time every backend and detect (non-)identical results."""

import time

import pytest
import torch

from benchmarks.inputs import correlated_activation
from benchmarks.scaling import ScalingPoint, format_scaling, growth_per_4x, paired_timing
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


def test_scaling_growth_pairs_points_whose_size_differs_4x():
    points = [ScalingPoint("C", 64, "cpu", 100, 2e-3, 1e-3, 1e-3), ScalingPoint("C", 256, "cpu", 100, 5e-3, 2e-3, 3e-3),
              ScalingPoint("C", 128, "cpu", 100, 1e-3, 0.0, 1e-3), ScalingPoint("HW", 32, "cpu", 100, 1e-3, 0.0, 1e-3),
              ScalingPoint("HW", 64, "cpu", 100, 3e-3, 1e-3, 2e-3), ScalingPoint("tau", 8, "cpu", 100, 1e-3, 0.0, 1e-3)]
    rows = growth_per_4x(points)
    assert [(r[1], r[2], r[3]) for r in rows] == [("C", 64, 256), ("HW", 32, 64)]
    assert rows[0][4] == pytest.approx(2.5) and rows[0][5] == pytest.approx(3.0)  # 5/2 whole, (3/1) marginal
    assert rows[1][4] == pytest.approx(3.0) and rows[1][5] == pytest.approx(2.0)
    assert "| cpu | C | 64 | 256 | 2.50x | 3.00x |" in format_scaling(points)


def test_paired_timing_alternates_and_takes_the_median_pair_difference():
    calls = []
    # warm-ups, then (whole, setup) pairs: differences 0.03, 0.00, 0.06 -> median 0.03
    durations = iter([0.0, 0.0, 0.05, 0.02, 0.03, 0.03, 0.07, 0.01])

    def sleeper(name):
        def run():
            calls.append(name)
            time.sleep(next(durations))
            return name
        return run

    timing = paired_timing(sleeper("whole"), sleeper("setup"), "cpu", repeats=3)
    whole, setup, difference = timing.seconds
    assert calls == ["whole", "setup"] * 4 and timing.result == "whole"
    assert 0.03 <= whole < 0.05 and 0.01 <= setup < 0.02
    assert 0.02 < difference < 0.045  # the middle pair, not the extremes (0.00 and 0.06)
