"""The benchmark runner itself: it must time every backend and detect (non-)identical results."""

import time

import pytest
import torch

from cpia_cuda import channel_stroke
from benchmarks.inputs import correlated_activation
from benchmarks.scaling import (STROKES_SCOPE, ScalingPoint, format_scaling, growth_per_4x, measure_sweep,
                                profiled_scope_seconds)
from benchmarks import suite
from benchmarks.__main__ import main as benchmarks_main
from benchmarks.suite import (FlushCase, StrokeCase, available_backends, format_table, run_flush_case,
                              run_stroke_case)


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


def test_extrapolation_counts_the_set_up_once(monkeypatch):
    # A reference whose every call costs 1 s before its first stroke and 0.1 s per stroke: 30
    # strokes take 4 s, not the (1 + 0.5) / 5 * 30 = 9 s that scaling the whole prefix would say.
    clock = [0.0]
    real = suite.cpia_cuda.channel_stroke

    def costed(Y, tau, backend="auto", **params):
        result = real(Y, tau, backend=backend, **params)
        clock[0] += 1.0 + 0.1 * result.num_strokes if backend == "reference" else 0.001
        return result

    monkeypatch.setattr(suite.cpia_cuda, "channel_stroke", costed)
    monkeypatch.setattr(suite.time, "perf_counter", lambda: clock[0])
    case = StrokeCase("prefix", lambda: correlated_activation((6, 10, 10)), 2, dict(max_strokes=30),
                      reference_prefix=5)
    rows = {row.backend: row for row in run_stroke_case(case, ("reference", "cpu"), repeats=1)}
    assert rows["reference"].seconds == pytest.approx(1.0 + 0.1 * 30)
    assert "1.50 s, of which 1.00 s before the first stroke" in rows["reference"].note


def test_flush_case_compares_with_reference_and_topk():
    case = FlushCase("flush", lambda: correlated_activation((16, 6, 6)), 5)
    rows = {row.backend: row for row in run_flush_case(case, ("reference", "cpu"), repeats=1)}
    assert rows["cpu"].identical == "yes" and rows["topk"].note == "baseline on cpu"
    assert rows["cpu"].speedup == pytest.approx(rows["topk"].seconds / rows["cpu"].seconds)


def test_a_failing_case_is_reported_and_the_others_still_run(monkeypatch):
    def out_of_memory():
        raise RuntimeError("CUDA out of memory.\nTried to allocate | 2 GiB\n")

    cases = [StrokeCase("broken", out_of_memory, 2), StrokeCase("tiny", lambda: correlated_activation((8, 6, 6)), 2,
                                                              dict(max_strokes=10))]
    monkeypatch.setattr(suite, "stroke_cases", lambda quick: cases)
    monkeypatch.setattr(suite, "flush_cases", lambda quick: [])
    logged = []
    rows = suite.run_suite(("reference", "cpu"), repeats=1, log=logged.append)
    assert [(row.case, row.backend) for row in rows] == [("broken", "failed"), ("tiny", "reference"), ("tiny", "cpu")]
    assert rows[0].note == "RuntimeError: CUDA out of memory. Tried to allocate | 2 GiB"
    assert format_table(rows[:1], header=False).count("\n") == 0 and "allocate / 2 GiB" in format_table(rows[:1])
    assert logged[0] == "# broken" and logged[1].startswith("| broken | failed |  |")  # rows logged as measured
    assert logged[3].count("\n") == 1 and "| tiny | cpu |" in logged[3]
    assert "| us/stroke |" in format_table(rows)
    cpu = rows[2]
    assert f"| {1e6 / cpu.strokes_per_second:.2f} |" in format_table(rows)


@pytest.mark.parametrize("row", [suite.Row("case", "failed", float("nan"), note="RuntimeError: boom"),
                                 suite.Row("case", "cpu", 1.0, 10, 2.0, "NO"),
                                 suite.Row("case", "cuda", 1.0, 10, 2.0, "yes; != cpu")])
def test_the_runner_exits_with_1_when_a_case_failed_or_differed(tmp_path, monkeypatch, capsys, row):
    monkeypatch.setattr("benchmarks.__main__.run_suite", lambda *a, **k: [row])
    assert benchmarks_main(["--backends", "cpu", "--out", str(tmp_path)]) == 1
    assert f"| case | {row.backend} |" in (tmp_path / "report.md").read_text()  # the table is still written
    assert "a case failed or a backend's result differed" in capsys.readouterr().err
    monkeypatch.setattr("benchmarks.__main__.run_suite", lambda *a, **k: [suite.Row("case", "cpu", 1.0, 10, 2.0, "yes")])
    assert benchmarks_main(["--backends", "cpu"]) == 0


@pytest.mark.parametrize("argv, expected", [
    (["--repeats", "0"], "--repeats: expected a whole number >= 1, got '0'"),
    (["--backends", ","], "--backends: expected a comma-separated list of reference, cpu, cuda, got ','"),
    (["--backends", "cpu,gpu"], "--backends: expected a comma-separated list"),
    (["--backends", "reference"], "the reference is timed beside a fused backend"),
])
def test_command_line_refuses_bad_options(capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_info:
        benchmarks_main(argv + ["--skip-ops"])
    assert exit_info.value.code == 2 and expected in capsys.readouterr().err


@pytest.mark.skipif(available_backends(("cuda",)) == ("cuda",), reason="CUDA runs here")
def test_command_line_refuses_cuda_where_it_does_not_run(capsys):
    with pytest.raises(SystemExit):
        benchmarks_main(["--backends", "cpu,cuda", "--skip-ops"])
    assert "--backends cuda: no CUDA device" in capsys.readouterr().err


def test_report_is_not_overwritten_without_asking(tmp_path, capsys):
    report = tmp_path / "report.md"
    report.write_text("notes of my own")
    with pytest.raises(SystemExit):
        benchmarks_main(["--skip-ops", "--backends", "cpu", "--out", str(tmp_path)])
    assert "pass --overwrite" in capsys.readouterr().err and report.read_text() == "notes of my own"
    assert benchmarks_main(["--skip-ops", "--backends", "cpu", "--out", str(tmp_path), "--overwrite"]) == 0
    assert report.read_text().startswith("Machine: ") and sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_output_folder_through_a_file_is_refused_before_measuring(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setattr("benchmarks.__main__.run_suite", lambda *a, **k: pytest.fail("measured first"))
    with pytest.raises(SystemExit):
        benchmarks_main(["--quick", "--backends", "cpu", "--out", str(tmp_path / "file" / "results")])
    assert "--out" in capsys.readouterr().err


def test_correlated_activation_is_smooth_and_non_negative():
    Y = correlated_activation((4, 32, 32))
    assert (Y >= 0).all()
    neighbour_gap = (Y[:, :, 1:] - Y[:, :, :-1]).abs().mean()
    assert neighbour_gap < (Y - Y.mean()).abs().mean()  # neighbours closer than random pairs
    assert torch.equal(Y, correlated_activation((4, 32, 32)))


def test_scaling_growth_pairs_points_whose_size_differs_4x():
    points = [ScalingPoint("C", 64, "cpu", 100, 2e-3, 1e-3), ScalingPoint("C", 256, "cpu", 100, 5e-3, 3e-3),
              ScalingPoint("C", 128, "cpu", 100, 1e-3, 1e-3), ScalingPoint("HW", 32, "cpu", 100, 1e-3, 1e-3),
              ScalingPoint("HW", 64, "cpu", 100, 3e-3, 2e-3), ScalingPoint("tau", 8, "cpu", 100, 1e-3, 1e-3)]
    rows = growth_per_4x(points)
    assert [(r[1], r[2], r[3]) for r in rows] == [("C", 64, 256), ("HW", 32, 64)]
    assert rows[0][4] == pytest.approx(2.5) and rows[0][5] == pytest.approx(3.0)  # 5/2 whole, 3/1 loop
    assert rows[1][4] == pytest.approx(3.0) and rows[1][5] == pytest.approx(2.0)
    assert "| cpu | C | 64 | 256 | 2.50x | 3.00x |" in format_scaling(points)


def test_stroke_loop_is_timed_inside_the_cpu_kernel():
    Y = correlated_activation((32, 24, 24))
    run = lambda: channel_stroke(Y, 4, p=2, max_strokes=300, backend="cpu")  # noqa: E731
    start = time.perf_counter()
    loop = profiled_scope_seconds(run, STROKES_SCOPE)
    whole = time.perf_counter() - start
    assert 0 < loop < whole
    assert profiled_scope_seconds(run, "cpia::no_such_scope") == 0


def test_sweep_measures_every_value_with_its_stroke_loop():
    base = dict(C=8, H=16, W=16, tau=4, brush=1, p=2)
    points = measure_sweep("C", [8, 32], "cpu", repeats=2, base=base, strokes=50)
    assert [(p.parameter, p.value, p.strokes) for p in points] == [("C", 8, 50), ("C", 32, 50)]
    assert all(0 < p.strokes_seconds < p.seconds for p in points)
    hw = measure_sweep("HW", [8], "cpu", repeats=1, base=base, strokes=10)
    assert hw[0].strokes == 10


def test_shape_sweep_sets_channels_and_side_and_gets_its_own_table():
    base = dict(C=8, H=16, W=16, tau=4, brush=1, p=2)
    points = measure_sweep("shape", [(16, 8), (4, 16)], "cpu", repeats=1, base=base, strokes=20)
    assert [(p.value, p.strokes) for p in points] == [((16, 8), 20), ((4, 16), 20)]
    table = format_scaling(points)
    assert "| cpu | 16 | 8 | 1,024 |" in table and "| cpu | 4 | 16 | 1,024 |" in table
    assert "| cpu | shape |" not in table  # not mixed into the one-parameter rows
