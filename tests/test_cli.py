"""The cpia command, called as cpia_cuda.cli.main([...]) with temporary folders."""

import inspect
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cpia_cuda.cli import main
from cpia_cuda.generators import load_generator
from cpia_cuda.generators.base import GeneratorError

FAST = ["--layer", "5", "--tau", "8", "--max-strokes", "40", "--frames", "3"]


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    from skimage import data

    path = tmp_path_factory.mktemp("images") / "astronaut.png"
    Image.fromarray(data.astronaut()).resize((64, 64), Image.Resampling.BOX).save(path)
    return path


def test_demo_runs_with_a_reduced_size_and_prints_a_summary(tmp_path, capsys):
    assert main(["demo", "--size", "48", "-o", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "strokes over" in out and "stop reasons:" in out and "time:" in out and "wrote" in out
    for name in ("painting.png", "progress.gif", "stroke_map.gif", "stroke_log.json", "coverage.json"):
        assert (tmp_path / "demo" / name).is_file()
    assert Image.open(tmp_path / "demo" / "painting.png").size == (48, 48)


def test_paint_refuses_to_overwrite_then_overwrites_and_replays_identically(image_file, tmp_path, capsys):
    out = tmp_path / "painted"
    assert main(["paint", str(image_file), "--style", "2", *FAST, "-o", str(out)]) == 0
    first = (out / "progress.gif").read_bytes()

    assert main(["paint", str(image_file), "--style", "2", *FAST, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "exists already" in err and "--overwrite" in err and "Traceback" not in err
    assert (out / "progress.gif").read_bytes() == first

    assert main(["paint", str(image_file), "--style", "2", *FAST, "--overwrite", "-o", str(out)]) == 0
    assert (out / "progress.gif").read_bytes() == first  # same seed, same output

    again = tmp_path / "replayed"
    assert main(["replay", str(out / "stroke_log.json"), "-o", str(again)]) == 0
    for name in ("painting.png", "progress.gif", "stroke_map.gif"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name


def test_paint_options_reach_the_pipeline(image_file, tmp_path):
    out = tmp_path / "flush"
    assert main(["paint", str(image_file), "--mode", "flush", "--layer", "res.1", "--tau", "4", "--planner", "none",
                 "--every", "1", "--preview-size", "32", "--background", "black", "-o", str(out)]) == 0
    import json

    log = json.loads((out / "stroke_log.json").read_text())
    assert log["settings"]["mode"] == "flush" and log["layer"]["index"] == 4 and log["settings"]["tau"] == 4
    assert [region["label"] for region in log["plan"]] == ["image"]
    assert log["settings"]["background"] == [0.0, 0.0, 0.0]
    assert Image.open(out / "stroke_map.png").size == (32, 32)


def test_layers_prints_the_layer_table(capsys):
    assert main(["layers", "--size", "64", "96"]) == 0
    out = capsys.readouterr().out
    assert "res.0" in out and "(32, 16, 24)" in out and "expand.1" in out


def test_layers_refuses_a_size_whose_run_would_not_fit_before_allocating_it(capsys, monkeypatch):
    from cpia_cuda.painting import memory

    monkeypatch.setattr(memory, "available_memory", lambda device: 64 * 2**20)
    assert main(["layers", "--size", "2048", "2048"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cpia: error: --size 2048 2048: listing the layers runs multistyle26 at that size, "
                          "which needs about ") and err.count("\n") == 1
    assert main(["layers", "--size", "64", "64"]) == 0  # 64 MiB is plenty for this one


@pytest.mark.parametrize("arguments, message", [
    (["paint", "no-such-image.png"], "image not found: no-such-image.png"),
    (["paint", "FOLDER"], "image FOLDER: a folder, not an image file"),
    (["paint", "IMAGE", "--generator", "no-such-net"], "unknown generator 'no-such-net'"),
    (["paint", "IMAGE", "--layer", "42"], "not an operable layer"),
    (["paint", "IMAGE", "--m", "1.5"], "error: --m must be in (0, 1], got 1.5"),  # flags, not Python names
    (["paint", "IMAGE", "--tau", "33"], "error: --tau must be in [1, C] = [1, 32], got 33"),
    (["paint", "IMAGE", "--max-coverage", "2"], "error: --max-coverage must be in (0, 1], got 2"),
    (["paint", "IMAGE", "--preview-size", "0"], "error: --preview-size must be an int >= 1, got 0"),
    (["paint", "IMAGE", "--style", "99"], "error: --style must be an int in 0..25"),
    (["replay", "missing/stroke_log.json", "-o", "x"], "stroke log file not found"),
    (["paint", "TINY", "--max-strokes", "5"], "sides of at least 5 pixels, got (1, 3, 4, 40)"),
    (["paint", "IMAGE", "--seed", "-1"], "error: --seed must be an int in [0, 2^63 - 1], got -1"),
    (["paint", "IMAGE", "--planner-option", "bogus=3"], "planner 'segments' has no option bogus;"),
    (["paint", "IMAGE", "--planner", "maskrcnn", "--planner-option", "device=tpu"],
     "device: expected 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    (["layers", "--size", "3", "3"], "sides of at least 5 pixels, got (1, 3, 3, 3)"),
    (["paint", "IMAGE", "--mode", "flush", "--m", "7"], "error: --m must be in (0, 1], got 7"),  # logged, so checked
    (["paint", "IMAGE", "-o", ""], "-o/--output: expected a folder, got an empty path"),
    (["paint", "IMAGE", "--style-image", "IMAGE"], "--style-image: generator 'multistyle26' has built-in styles; "
                                                   "choose one with --style N"),
    (["paint", "IMAGE", "--generator", "arbitrary"], "generator 'arbitrary' needs a style image: give --style-image"),
    (["paint", "IMAGE", "--generator", "arbitrary", "--style", "3"], "--style: generator 'arbitrary' takes its style "
                                                                     "from an image"),
    (["demo", "--size", "100000", "-o", "x"], "--size: expected 16 to 8192 pixels, got 100000"),
    (["generate", "--gan", "eyes", "--keyword", "99", "-o", "x"], "error: --keyword must be an integer in [0, 8), got 99"),
])
def test_errors_print_one_line_and_exit_with_status_2(arguments, message, image_file, tmp_path, capsys):
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((4, 40, 3), dtype=np.uint8)).save(tiny)
    folder = tmp_path / "photos"
    folder.mkdir()
    named = {"IMAGE": str(image_file), "TINY": str(tiny), "FOLDER": str(folder)}
    arguments = [named.get(a, a) for a in arguments]
    message = message.replace("FOLDER", str(folder))
    with_output = arguments[0] == "paint" and "-o" not in arguments
    assert main(arguments + ["-o", str(tmp_path / "out")] if with_output else arguments) == 2
    out, err = capsys.readouterr()
    assert err.startswith("cpia: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    if arguments[0] == "layers":
        assert out == ""  # no table begun before the error


def test_paint_with_a_gan_points_to_generate(image_file, tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("omniart_eye_generator") is None:  # importing it loads CUDA tensors
        pytest.skip("omniart-eye-generator is not installed")
    assert main(["paint", str(image_file), "--generator", "eyes", "-o", str(tmp_path / "out")]) == 2
    assert "--generator eyes: a GAN paints its own samples: use `cpia generate --gan eyes" in capsys.readouterr().err


def test_an_unknown_option_is_reported_with_its_command_usage(capsys):
    assert main(["paint", "photo.jpg", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: cpia paint ") and "cpia paint: error: unrecognized arguments: --bogus" in err


def test_labels_are_comma_separated_and_repeatable_and_leave_the_image_alone():
    from cpia_cuda.cli import build_parser

    args = build_parser().parse_args(["paint", "--last-labels", "person,dog", "--last-labels", "cat",
                                      "--first-labels", "sports ball", "photo.jpg"])
    assert args.image == "photo.jpg" and args.last_labels == ["person", "dog", "cat"]
    assert args.first_labels == ["sports ball"]
    assert build_parser().parse_args(["paint", "--min-response", "none", "photo.jpg"]).min_response is None


@pytest.mark.parametrize("arguments, message", [
    (["--order", "bogus"], "argument --order: invalid choice: 'bogus'"),
    (["--planner", "bogus"], "argument --planner: invalid choice: 'bogus'"),
    (["--last-labels", "person,,dog"], "argument --last-labels: expected comma-separated labels, got 'person,,dog'"),
    (["--background", "0.5,grey,1"], "argument --background: expected a colour name, #rrggbb or R,G,B in [0, 1], "
                                     "got '0.5,grey,1'"),
    (["--background", "1,0"], "argument --background: expected a colour name, #rrggbb or R,G,B in [0, 1], got '1,0'"),
])
def test_plan_options_are_checked_as_they_are_parsed(arguments, message, capsys):
    assert main(["paint", "photo.jpg", *arguments]) == 2
    assert message in capsys.readouterr().err


def test_a_folder_in_the_way_of_an_output_is_refused_before_painting_even_with_overwrite(image_file, tmp_path,
                                                                                        capsys):
    (tmp_path / "out" / "painting.png").mkdir(parents=True)
    assert main(["paint", str(image_file), *FAST, "--overwrite", "-o", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "painting.png is a folder; an output file of that name cannot replace it" in captured.err
    assert "memory estimate" not in captured.out


def test_a_folder_named_like_a_file_this_run_does_not_write_is_left_alone(image_file, tmp_path, capsys):
    (tmp_path / "out" / "generated.png").mkdir(parents=True)  # a GAN's output name; a photo has none
    assert main(["paint", str(image_file), *FAST, "--overwrite", "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "generated.png").is_dir() and (tmp_path / "out" / "painting.png").is_file()


@pytest.mark.parametrize("output", ["a_file", "a_file/inside"])
def test_an_output_path_through_a_file_is_refused_before_painting(output, image_file, tmp_path, capsys):
    (tmp_path / "a_file").write_text("mine")
    assert main(["paint", str(image_file), *FAST, "-o", str(tmp_path / output)]) == 2
    err = capsys.readouterr()
    assert f"a_file is a file, not a folder" in err.err and "memory estimate" not in err.out  # nothing ran
    assert (tmp_path / "a_file").read_text() == "mine"


def test_overwrite_removes_the_outputs_of_an_earlier_run(image_file, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "generated.png").write_bytes(b"from a GAN run")
    (out / "notes.txt").write_text("the user's")
    assert main(["paint", str(image_file), *FAST, "-o", str(out)]) == 2  # generated.png is an output name
    assert main(["paint", str(image_file), *FAST, "--overwrite", "-o", str(out)]) == 0
    assert not (out / "generated.png").exists() and (out / "notes.txt").read_text() == "the user's"
    assert "removed" in capsys.readouterr().out


def test_image_files_load_as_a_viewer_shows_them(tmp_path):
    from cpia_cuda.cli import load_image

    sixteen_bit = np.array([[0, 257, 65535]], dtype=np.uint16).repeat(2, axis=0)
    Image.fromarray(sixteen_bit).save(tmp_path / "gray16.png")
    image = load_image(tmp_path / "gray16.png")
    assert image.shape == (3, 2, 3) and image[:, 0].tolist() == [[0.0, float(np.float32(257 / 65535)), 1.0]] * 3
    Image.fromarray(sixteen_bit).save(tmp_path / "gray16_keyed.png", transparency=257)  # tRNS: 257 is clear
    image = load_image(tmp_path / "gray16_keyed.png", background=(1.0, 0.0, 0.0))
    assert image[:, 0, 1].tolist() == [1.0, 0.0, 0.0] and image[:, 0, 2].tolist() == [1.0, 1.0, 1.0]

    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red; the left column opaque, the right one transparent
    rgba[:, 0, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    image = load_image(tmp_path / "rgba.png", background=(0.0, 0.0, 1.0))
    assert image[:, 0, 0].tolist() == [1.0, 0.0, 0.0] and image[:, 0, 1].tolist() == [0.0, 0.0, 1.0]

    Image.fromarray(np.array([[0, 70000]], dtype=np.int32)).save(tmp_path / "int32.tif")
    with pytest.raises(ValueError, match="int32.tif: 32-bit integer values outside 0..65535 are not supported"):
        load_image(tmp_path / "int32.tif")

    pixels = np.zeros((2, 3, 3), dtype=np.uint8)
    pixels[0, 2] = 255  # top right
    photo = Image.fromarray(pixels)
    exif = photo.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    photo.save(tmp_path / "rotated.png", exif=exif)
    image = load_image(tmp_path / "rotated.png")
    assert image.shape == (3, 3, 2) and image[:, 2, 1].tolist() == [1.0, 1.0, 1.0]  # now bottom right


def test_the_log_keeps_an_absolute_weights_path(image_file, tmp_path, monkeypatch):
    import json
    import shutil

    from cpia_cuda.generators.multistyle26 import packaged_model_path

    (tmp_path / "weights").mkdir()
    shutil.copy(packaged_model_path("multistyle26.onnx"), tmp_path / "weights" / "net.onnx")
    monkeypatch.chdir(tmp_path)
    assert main(["paint", str(image_file), *FAST, "--weights", "weights/net.onnx", "-o", "out"]) == 0
    logged = json.loads((tmp_path / "out" / "stroke_log.json").read_text())["generator"]["weights"]
    assert logged == str(tmp_path / "weights" / "net.onnx")
    monkeypatch.chdir(tmp_path / "weights")
    assert main(["replay", "../out/stroke_log.json", "-o", "../again"]) == 0


def test_replay_refuses_a_log_whose_arrays_do_not_fit(image_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["paint", str(image_file), *FAST, "-o", str(out)]) == 0
    with np.load(out / "stroke_log.npz") as stored:
        arrays = dict(stored)
    num_strokes = len(arrays["strokes"])
    shifted = arrays["order"].copy()
    shifted[shifted == 0] = num_strokes
    recounted = arrays["order"].copy()
    recounted[np.unravel_index(np.flatnonzero(recounted.ravel() >= 0)[0], recounted.shape)] = -1
    np.savez(out / "stroke_log.npz", **{**arrays, "order": shifted})
    assert main(["replay", str(out / "stroke_log.json"), "-o", str(tmp_path / "again")]) == 2
    assert "is not the NPZ that stroke_log.json was written with" in capsys.readouterr().err
    # Without the digest (a log written without it), the arrays' own checks find each damage.
    document = json.loads((out / "stroke_log.json").read_text())
    del document["npz_sha256"]
    (out / "stroke_log.json").write_text(json.dumps(document))
    for key, damaged, message in [
        ("order", arrays["order"][:, :-1], "damaged stroke log (order has shape"),
        ("order", arrays["order"][0], "order must be (C, h, w)"),
        ("order", shifted, f"order holds stroke indices outside [-1, {num_strokes})"),
        ("order", recounted, "order and the strokes' pixel counts disagree"),
        ("strokes", arrays["strokes"][:, :4], "strokes must be (S, 6)"),
        ("strokes", arrays["strokes"][:10], f"the JSON counts {num_strokes} strokes, the arrays hold 10"),
        ("strokes", arrays["strokes"][::-1], "strokes are not in plan order"),
        ("content", arrays["content"][:, :-2], "content has shape"),
    ]:
        np.savez(out / "stroke_log.npz", **{**arrays, key: damaged})
        assert main(["replay", str(out / "stroke_log.json"), "-o", str(tmp_path / "again")]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


@pytest.mark.parametrize("edit, message", [
    (lambda d: (d["layer"].update(index=4), d["settings"].update(layer=4)),
     "painted at layer 4 = 'res.2', but layer 4 of multistyle26 is"),
    (lambda d: d["settings"].update(step_fill="bogus"), "step_fill must be one of"),
    (lambda d: d["settings"].update(mode="bogus"), "mode must be one of"),
    (lambda d: d["settings"].update(background=[2, 0, 0]), "background must be"),
    (lambda d: d["settings"].update(preview_size=0), "preview_size must be an int >= 1, got 0"),
    (lambda d: d["settings"].update(frame_batch=0), "frame_batch must be an int >= 1, got 0"),
    (lambda d: d.update(region_mask_shape=[2, 32, 64]), "region masks of shape"),
    (lambda d: d.update(frame_strokes=[5, 3]), "frame_strokes must be ascending"),
    (lambda d: d["plan"][0].update(strokes=d["plan"][0]["strokes"] + 1), "differ from the plan's"),
    # hand edits of the kinds a front end writing JSON might make
    (lambda d: d["settings"].update(tau=8.0), "the stroke log's settings: tau must be an int, got float 8.0"),
    (lambda d: d["settings"].update(tau=1), "more than its tau = 1"),
    (lambda d: d["settings"].update(brush="x"), "the stroke log's settings: brush must be"),
    (lambda d: d["generator"].update(condition=[1]), "field generator.condition is missing or of the wrong type"),
    (lambda d: d["generator"].update(weights=5), "field generator.weights is missing or of the wrong type"),
    (lambda d: d.update(region_mask_shape=[]), "field region_mask_shape is missing or of the wrong type"),
    (lambda d: d["layer"].update(index=5.7), "field layer.index is missing or of the wrong type"),
    (lambda d: d.update(frame_strokes=[True]), "field frame_strokes is missing or of the wrong type"),
    (lambda d: d["plan"][0].update(stop_reason=7), "plan[0].stop_reason must be one of max_strokes"),
    (lambda d: d["plan"][0].update(score="high"), "plan[0] needs a label (text), a score (number)"),
    (lambda d: d.update(stroke_columns=d["stroke_columns"][::-1]), "stroke_columns must be"),
    (lambda d: d["settings"].update(seed=-1), "the stroke log's settings: seed must be an int in [0, 2^63 - 1]"),
    (lambda d: d["settings"].update(backend="tpu"), "the stroke log's settings: backend must be one of auto"),
    (lambda d: d["settings"].update(layer=4), "its settings say layer 4, its layer entry 5"),
])
def test_replay_refuses_a_log_whose_json_does_not_fit(image_file, tmp_path, capsys, edit, message):
    out = tmp_path / "out"
    assert main(["paint", str(image_file), *FAST, "--planner", "segments", "-o", str(out)]) == 0
    document = json.loads((out / "stroke_log.json").read_text())
    edit(document)
    (out / "stroke_log.json").write_text(json.dumps(document))
    assert main(["replay", str(out / "stroke_log.json"), "-o", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_replay_refuses_logs_damaged_past_the_digest(image_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["paint", str(image_file), *FAST, "--planner", "segments", "-o", str(out)]) == 0
    document = json.loads((out / "stroke_log.json").read_text())
    del document["npz_sha256"]  # as a log written without it
    (out / "stroke_log.json").write_text(json.dumps(document))
    with np.load(out / "stroke_log.npz") as stored:
        arrays = dict(stored)
    assert arrays["region_masks"].shape[0] >= 2
    swapped = arrays["region_masks"][[1, 0, *range(2, arrays["region_masks"].shape[0])]]
    for damage, message in [
        (lambda: np.savez(out / "stroke_log.npz", **{**arrays, "region_masks": swapped}),
         "(" + repr(document["plan"][0]["label"]) + ") paint outside its mask"),
        (lambda: np.savez(out / "stroke_log.npz", **{**arrays, "order": arrays["order"].astype(np.int64)}),
         "order must be int32, got int64"),
        (lambda: (out / "stroke_log.npz").write_bytes(b""), "damaged stroke log (EOFError"),
        (lambda: (out / "stroke_log.json").write_text("[" * 100_000), "not JSON"),
    ]:
        damage()
        assert main(["replay", str(out), "-o", str(tmp_path / "again")]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_replay_notes_pixels_that_differ_from_the_logged_painting(image_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["paint", str(image_file), *FAST, "-o", str(out)]) == 0
    assert main(["replay", str(out), "-o", str(tmp_path / "same")]) == 0
    assert "differs from the logged one" not in capsys.readouterr().out
    document = json.loads((out / "stroke_log.json").read_text())
    document["painting_sha256"] = "0" * 64  # as if the weights at the logged path had changed
    (out / "stroke_log.json").write_text(json.dumps(document))
    assert main(["replay", str(out), "-o", str(tmp_path / "again")]) == 0
    assert "note: the replay's painting differs from the logged one" in capsys.readouterr().out


def test_replay_of_another_output_file_says_what_a_log_is(image_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["paint", str(image_file), *FAST, "-o", str(out)]) == 0
    capsys.readouterr()
    for given, message in [("painting.png", "painting.png is not a stroke log: expected its .json or .npz"),
                           ("coverage.json", "coverage.json is not a cpia stroke log (expected format")]:
        assert main(["replay", str(out / given), "-o", str(tmp_path / "again")]) == 2
        assert message in capsys.readouterr().err
    (out / "stroke_log.npz").unlink()
    assert main(["replay", str(out), "-o", str(tmp_path / "again")]) == 2
    assert "stroke_log.npz (the arrays of stroke_log.json)" in capsys.readouterr().err


def test_replay_reads_the_log_it_is_given_and_no_other(image_file, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["paint", str(image_file), *FAST, "-o", str(first)]) == 0
    assert main(["paint", str(image_file), *FAST[:4], "--max-strokes", "7", "--frames", "3", "-o", str(second)]) == 0
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for suffix in (".json", ".npz"):  # a renamed log beside another run's stroke_log.npz
        (mixed / f"keep.v2{suffix}").write_bytes((first / f"stroke_log{suffix}").read_bytes())
    (mixed / "stroke_log.npz").write_bytes((second / "stroke_log.npz").read_bytes())
    first_strokes, second_strokes = (json.loads((folder / "stroke_log.json").read_text())["num_strokes"]
                                     for folder in (first, second))
    assert first_strokes != second_strokes
    capsys.readouterr()
    for given in ("keep.v2.json", "keep.v2.npz", "keep.v2"):
        assert main(["replay", str(mixed / given), "-o", str(tmp_path / given.replace(".", "_"))]) == 0
        assert f"painted {first_strokes} strokes" in capsys.readouterr().out
    assert main(["replay", str(second), "-o", str(tmp_path / "from_folder")]) == 0
    assert f"painted {second_strokes} strokes" in capsys.readouterr().out


def test_replay_with_other_weights_logs_them(image_file, tmp_path, capsys):
    from cpia_cuda.generators.multistyle26 import packaged_model_path

    weights = tmp_path / "a" / "net.onnx"
    weights.parent.mkdir()
    weights.write_bytes(packaged_model_path("multistyle26.onnx").read_bytes())
    assert main(["paint", str(image_file), *FAST, "--weights", str(weights), "-o", str(tmp_path / "out")]) == 0
    moved = weights.rename(tmp_path / "net.onnx")
    capsys.readouterr()
    assert main(["replay", str(tmp_path / "out"), "-o", str(tmp_path / "again")]) == 2
    assert f"the logged weights {weights} are gone" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "out"), "--weights", str(moved), "-o", str(tmp_path / "again")]) == 0
    logged = json.loads((tmp_path / "again" / "stroke_log.json").read_text())["generator"]["weights"]
    assert logged == str(moved)
    assert main(["replay", str(tmp_path / "again"), "-o", str(tmp_path / "third")]) == 0


def test_a_closed_pipe_ends_the_command_quietly():
    listing = subprocess.run(f"{sys.executable} -m cpia_cuda layers | head -1", shell=True, capture_output=True,
                             text=True, check=True)
    assert listing.stdout.startswith("multistyle26") and listing.stderr == ""


def test_bad_command_line_exits_with_status_2(capsys):
    assert main(["paint"]) == 2
    assert main(["paint", "x.png", "--frames", "2", "--every", "3"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_generate_paints_a_gan_sample(tmp_path):
    try:
        load_generator("eyes")
    except GeneratorError as error:
        pytest.skip(f"eye DCGAN weights unavailable: {error}")
    out = tmp_path / "eyes"
    assert main(["generate", "--gan", "eyes", "--keyword", "blue", "--seed", "1", "--layer", "3", "--tau", "64",
                 "--max-strokes", "30", "--frames", "2", "-o", str(out)]) == 0
    generated = np.asarray(Image.open(out / "generated.png"))
    assert generated.shape == (128, 128, 3)
    by_index = tmp_path / "eyes-by-index"  # class 1 is blue
    assert main(["generate", "--gan", "eyes", "--keyword", "1", "--seed", "1", "--layer", "3", "--tau", "64",
                 "--max-strokes", "30", "--frames", "2", "-o", str(by_index)]) == 0
    assert (by_index / "painting.png").read_bytes() == (out / "painting.png").read_bytes()
    assert main(["generate", "--gan", "eyes", "--keyword", "plaid", "-o", str(tmp_path / "bad")]) == 2


def test_python_dash_m_runs_the_command():
    completed = subprocess.run([sys.executable, "-m", "cpia_cuda", "--help"], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert all(command in completed.stdout for command in ("paint", "generate", "layers", "replay", "demo"))


@pytest.mark.parametrize("name, gpus, kernels, message", [
    ("tpu", 1, True, "expected 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    ("meta", 1, True, "expected 'cpu', 'cuda' or 'cuda:N', got 'meta'"),
    ("cuda:1", 1, True, "expected a CUDA device index below 1"),
    ("cuda", 1, False, "has no CUDA kernels"),
    ("cuda", 0, True, "no CUDA device is available"),
])
def test_device_choices_that_cannot_run_are_refused_by_name(name, gpus, kernels, message, monkeypatch):
    import torch

    from cpia_cuda import _ops
    from cpia_cuda.cli import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(_ops, "cuda_kernels_available", lambda: kernels)
    with pytest.raises(ValueError, match=message):
        resolve_device(name)
    assert resolve_device("cpu") == "cpu"


class _PaintCalled(Exception):
    """Raised by the stand-in for paint() once it has recorded its arguments."""


def _paint_arguments(monkeypatch, tmp_path, arguments):
    """The keyword arguments `cpia` gives paint() for ``arguments`` (the painting itself is skipped)."""
    import cpia_cuda.painting

    calls = []

    def record(content, **kwargs):
        calls.append((content, kwargs))
        raise _PaintCalled

    monkeypatch.setattr(cpia_cuda.painting, "paint", record)
    with pytest.raises(_PaintCalled):
        main([*arguments, "-o", str(tmp_path / "out")])
    return calls[0]


# Each paint option, a value other than its default, and the paint() keyword it must become.
PAINT_OPTIONS = [
    (["--layer", "res.2"], "layer", "res.2"),
    (["--layer", "6"], "layer", 6),
    (["--mode", "flush"], "mode", "flush"),
    (["--tau", "5"], "tau", 5),
    (["--brush", "2"], "brush", 2),
    (["--m", "0.55"], "m", 0.55),
    (["--p", "3"], "p", 3),
    (["--channel-cost", "0.25"], "channel_cost", 0.25),
    (["--sigma", "2.5"], "sigma", 2.5),
    (["--min-response", "0.3"], "min_response", 0.3),
    (["--min-response", "none"], "min_response", None),
    (["--max-strokes", "17"], "max_strokes", 17),
    (["--max-coverage", "0.4"], "max_coverage", 0.4),
    (["--backend", "reference"], "backend", "reference"),
    (["--planner", "none"], "planner", None),
    (["--planner", "maskrcnn"], "planner", "maskrcnn"),
    (["--planner-option", "segments=7", "--planner-option", "compactness=0.5", "--planner-option", "mode=fast"],
     "planner_options", {"segments": 7, "compactness": 0.5, "mode": "fast"}),
    (["--order", "area"], "order", "area"),
    (["--reverse-order"], "reverse_order", True),
    (["--skip-background"], "skip_background", True),
    (["--first-labels", "dog,cat"], "first_labels", ["dog", "cat"]),
    (["--last-labels", "person"], "last_labels", ["person"]),
    (["--step-fill", "background"], "step_fill", "background"),
    (["--frames", "9"], "frames", 9),
    (["--every", "4"], "every", 4),
    (["--preview-size", "77"], "preview_size", 77),
    (["--frame-batch", "3"], "frame_batch", 3),
    (["--background", "black"], "background", "black"),
    (["--background", "0.5,0.25,1"], "background", (0.5, 0.25, 1.0)),
    (["--background", "rgb(255,0,0)"], "background", "rgb(255,0,0)"),
    (["--seed", "12"], "seed", 12),
]


def test_every_paint_option_has_a_case_below():
    from cpia_cuda.cli import _painting_options, build_parser

    keywords = set(_painting_options(build_parser().parse_args(["paint", "photo.jpg"])))
    assert keywords == {keyword for _, keyword, _ in PAINT_OPTIONS}


@pytest.mark.parametrize("arguments, keyword, expected", PAINT_OPTIONS,
                         ids=[" ".join(arguments) for arguments, _, _ in PAINT_OPTIONS])
def test_each_paint_option_reaches_paint_as_its_keyword(arguments, keyword, expected, image_file, tmp_path,
                                                         monkeypatch):
    from cpia_cuda.painting import paint

    _, given = _paint_arguments(monkeypatch, tmp_path, ["paint", str(image_file), *arguments])
    assert given[keyword] == expected and type(given[keyword]) is type(expected)
    defaults = {name: parameter.default for name, parameter in inspect.signature(paint).parameters.items()}
    defaults.update(planner_options={}, first_labels=[], last_labels=[])  # the parser's empty lists
    others = {name: value for name, value in given.items()
              if name in defaults and name not in (keyword, "generator", "condition", "weights", "verbose")}
    assert others == {name: defaults[name] for name in others}  # nothing else moved off its default


def test_paint_passes_the_image_style_and_weights(image_file, tmp_path, monkeypatch):
    from cpia_cuda.generators.multistyle26 import packaged_model_path

    weights = packaged_model_path("multistyle26.onnx")
    content, given = _paint_arguments(monkeypatch, tmp_path, ["paint", str(image_file), "--style", "11",
                                                              "--weights", str(weights)])
    assert content.shape == (3, 64, 64) and given["condition"] == {"style": 11}
    assert given["weights"] == str(weights) and given["generator"].name == "multistyle26"


@pytest.mark.parametrize("keyword, condition", [("17", {"class_index": 17}), ("blue", {"keyword": "blue"})])
def test_generate_turns_a_number_into_a_class_index_and_words_into_a_keyword(keyword, condition, tmp_path,
                                                                             monkeypatch):
    import importlib.util

    if importlib.util.find_spec("omniart_eye_generator") is None:
        pytest.skip("omniart-eye-generator is not installed")
    content, given = _paint_arguments(monkeypatch, tmp_path, ["generate", "--gan", "eyes", "--keyword", keyword,
                                                              "--seed", "3", "--tau", "6"])
    assert given["condition"] == condition and given["tau"] == 6 and given["seed"] == 3
    generator = given["generator"]
    assert torch.equal(content, generator.sample_inputs(1, 3))
