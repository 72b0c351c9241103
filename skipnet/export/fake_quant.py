"""The shipped int8 .tflite graph as a trainable, fake-quantised PyTorch module: the model that
quantisation-aware training (qat.py) trains, so that it trains what ships.

There is one definition of the deployed graph: the file itself. FakeQuantGraph is built from the
int8 graph that post-training quantisation wrote (which ops run in int8, where every tensor is
requantised and with which scale, which ops stay float) and the float graph it was quantised
from (the float weights, BatchNorm folded into them by the converter). It runs the int8 graph's
ops in order, in NHWC as the file does:

* int8 ops: weights fake-quantised per output channel, symmetric in [-127, 127] with scale
  max|w| / 127 (what the quantiser computes from the weights it is given), biases rounded to
  int32 steps of input scale x weight scale, outputs fake-quantised per tensor with the file's
  scale and zero point (frozen: the calibration is the observer);
* float ops (the closing softmax; a float prefix where a graph has one) in float.

After training, ``write_weights`` puts the weights back into the float graph by tensor name and
``ranges`` gives the quantiser the same scales as calibration, so the int8 file written from them
has the same ops and computes what was trained.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .tflite_graph import _op_name, _schema, load_model, save_model

QMIN, QMAX = -128, 127
# Ops with a per-channel quantised weight (input 1) and int32 bias (input 2): the weight's channel axis.
WEIGHTED = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}
# Fixed-function weights tflite_graph.py writes (pool and normalisation as depthwise convolutions).
FIXED_PREFIXES = (b"affine", b"avgpool")
_NUMPY = {"FLOAT32": np.float32, "INT32": np.int32, "INT8": np.int8, "UINT8": np.uint8, "INT64": np.int64}


def _array(model, tensor) -> np.ndarray | None:
    data = model.buffers[tensor.buffer].data
    if data is None:
        return None
    kind = next(k for k, v in vars(_schema().TensorType).items() if v == tensor.type)
    shape = [int(v) for v in tensor.shape] if tensor.shape is not None else []
    return np.frombuffer(np.asarray(data, np.uint8).tobytes(), _NUMPY[kind]).reshape(shape)


def _qparams(tensor) -> tuple[np.ndarray, np.ndarray] | None:
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    return np.asarray(q.scale, np.float64), np.asarray(q.zeroPoint, np.int64)


def _dequantized(value: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    shape = [1] * value.ndim
    if scale.size > 1:  # per channel: along the one axis of that length
        shape[next(a for a, n in enumerate(value.shape) if n == scale.size)] = scale.size
    return np.asarray((value.astype(np.float64) - zero_point.reshape(shape)) * scale.reshape(shape), np.float32)


class _Op:
    __slots__ = ("name", "inputs", "output", "options", "int8")

    def __init__(self, name: str, inputs: list[int], output: int, options, int8: bool):
        self.name, self.inputs, self.output, self.options, self.int8 = name, inputs, output, options, int8


class FakeQuantGraph(nn.Module):
    """NHWC raw pixels (float, 0..255) in, logits out (the input of the closing SOFTMAX).

    After ``track_features``, each call leaves in ``features`` the graph's tensor that computes a
    given feature map of the PyTorch model (Bias Loss's), laid out as that model's (NCHW).
    ``quantize = False`` runs the same graph and weights in float: the fine-tuned model without
    fake quantisation.
    """

    def __init__(self, int8_path: Path, float_path: Path):
        super().__init__()
        s = _schema()
        q, f = load_model(int8_path), load_model(float_path)
        qg = q.subgraphs[0]
        float_tensors = {t.name: t for t in f.subgraphs[0].tensors}
        self.names = [t.name.decode() for t in qg.tensors]
        self.quantize = True
        self.explicit = False  # quantise as quantize/dequantize op pairs, which converters keep (CoreML)
        self.ops: list[_Op] = []
        self.scales: dict[int, tuple[float, int]] = {}  # int8 activation tensor -> (scale, zero point)
        self.weights = nn.ParameterDict()  # trainable, keyed by tensor index
        self.float_consts: dict[int, torch.Tensor] = {}
        self.int8_consts: dict[int, torch.Tensor] = {}  # constants as the int8 ops read them (dequantised)
        self.int8_qparams: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # and their file's scales, zero points
        self.int_consts: dict[int, list] = {}
        for op in qg.operators:
            name, out = _op_name(q, op), op.outputs[0]
            int8 = qg.tensors[out].type == s.TensorType.INT8
            self.ops.append(_Op(name, list(op.inputs), out, op.builtinOptions, int8))
            qp = _qparams(qg.tensors[out])
            if int8 and qp is not None:
                self.scales[out] = (float(qp[0][0]), int(qp[1][0]))
            for k, i in enumerate(op.inputs):
                if i >= 0 and i not in self.float_consts and i not in self.int_consts and str(i) not in self.weights:
                    self._add_constant(q, f, float_tensors, qg.tensors[i], i, name, k)
        self.input = qg.inputs[0]
        softmax = [o for o in self.ops if o.name == "SOFTMAX"]
        self.logits_tensor = softmax[-1].inputs[0] if softmax else qg.outputs[0]
        self.int8_logits_tensor = next(
            (o.inputs[0] for o in self.ops if o.output == self.logits_tensor and o.name == "DEQUANTIZE"), None
        )
        self.features_tensor: int | None = None  # set by track_features
        self.features: torch.Tensor | None = None

    def _add_constant(self, q, f, float_tensors, tensor, i: int, op_name: str, k: int) -> None:
        """A constant input: a trainable weight or bias (float values from the float graph), a
        fixed int8 constant (both its float and its dequantised value), or an index tensor
        (paddings, axes, shapes: Python lists, so that torch.export sees them as constants)."""
        value = _array(q, tensor)
        if value is None:
            return
        int8 = tensor.type == _schema().TensorType.INT8
        learned = op_name in WEIGHTED and k in (1, 2) and not tensor.name.startswith(FIXED_PREFIXES)
        if learned or int8 or (op_name in WEIGHTED and k == 2):
            float_value = torch.from_numpy(_array(f, float_tensors[tensor.name]).astype(np.float32))
        elif value.dtype != np.float32:
            self.int_consts[i] = value.astype(np.int64).tolist()
            return
        else:
            float_value = torch.from_numpy(value.copy())  # the file's buffer is read-only
        if learned:
            self.weights[str(i)] = nn.Parameter(float_value)
            return
        self.float_consts[i] = float_value
        if int8:
            self.int8_consts[i] = torch.from_numpy(_dequantized(value, *_qparams(tensor)))
            self.int8_qparams[i] = _qparams(tensor)

    @torch.no_grad()
    def float_values(self, pixels: torch.Tensor) -> dict[int, torch.Tensor]:
        """Every tensor of the graph (by index), run in float on ``pixels``."""
        quantize, self.quantize = self.quantize, False
        try:
            return self._run(pixels)
        finally:
            self.quantize = quantize

    @staticmethod
    def find(values: dict[int, torch.Tensor], target: torch.Tensor) -> list[int]:
        """The tensors among ``values`` (the graph's NHWC tensors) equal to ``target``, which is laid
        out as the graph (NHWC) or as PyTorch and ONNX lay out maps (NCHW)."""
        views = [target.permute(0, 2, 3, 1)] if target.dim() == 4 else []
        views = [v.reshape(len(target), -1).float() for v in [target, *views]]
        tol = 1e-4 * (1 + views[0].abs().max().item())
        return [
            i
            for i, t in values.items()
            if t.shape[:1] == target.shape[:1]
            and t[0].numel() == views[0].shape[1]
            and any((t.reshape(len(t), -1) - v).abs().max().item() <= tol for v in views)
        ]

    def track_features(self, pixels: torch.Tensor, target: torch.Tensor) -> None:
        """Keep, on every call, the tensor whose float values on ``pixels`` are ``target`` (NCHW, the
        PyTorch model's output of one layer on the same pixels): found by value, since the converter
        renames, fuses and, at 1x1, drops the layers around it."""
        found = self.find(self.float_values(pixels), target)
        if not found:
            raise RuntimeError("no tensor of the TFLite graph computes the model's feature map")
        self.features_tensor = found[-1]
        self._features_nhwc = tuple(target.permute(0, 2, 3, 1).shape[1:]) if target.dim() == 4 else None

    # ---- what training changes, back into files ------------------------------------------------
    def ranges(self) -> dict[str, dict[str, np.ndarray]]:
        """Every int8 activation's range as the quantiser's calibration (tensor name -> min/max),
        chosen so that the quantiser derives exactly this module's scale and zero point."""
        out = {}
        for i, (scale, zp) in self.scales.items():
            name = self.names[i].removesuffix("_quantized")  # a QUANTIZE op's output: its float input's range
            out[name] = {"min": np.float32((QMIN - zp) * scale), "max": np.float32((QMAX - zp) * scale)}
        return out

    def write_weights(self, float_path: Path, dst: Path) -> None:
        """The float graph at ``float_path`` with this module's weights, written to ``dst``."""
        model = load_model(float_path)
        tensors = {t.name.decode(): t for t in model.subgraphs[0].tensors}
        for key, w in self.weights.items():
            t = tensors[self.names[int(key)]]
            data = w.detach().cpu().numpy().astype(np.float32)
            model.buffers[t.buffer].data = np.frombuffer(data.tobytes(), np.uint8)
        save_model(model, dst)

    # ---- fake quantisation --------------------------------------------------------------------
    def _const(self, i: int, int8: bool) -> torch.Tensor:
        if str(i) in self.weights:
            return self.weights[str(i)]
        return self.int8_consts[i] if int8 and self.quantize and i in self.int8_consts else self.float_consts[i]

    def _weight_scale(self, op: _Op, w: torch.Tensor) -> torch.Tensor:
        axis = WEIGHTED[op.name]
        return (w.detach().abs().amax(dim=[d for d in range(w.dim()) if d != axis]) / 127).clamp_min(1e-9 / 127)

    def _weight_and_bias(self, op: _Op) -> tuple[torch.Tensor, torch.Tensor | None]:
        w = self._const(op.inputs[1], op.int8)
        b = self._const(op.inputs[2], op.int8) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        if not (op.int8 and self.quantize and str(op.inputs[1]) in self.weights):
            if self.explicit and op.int8 and self.quantize and op.inputs[1] in self.int8_qparams:
                w = self._explicit_fixed(op, w)
            return w, b
        scale = self._weight_scale(op, w).float()
        zero = torch.zeros_like(scale, dtype=torch.int32)
        if self.explicit:  # the per-channel rounding of fake_quantize below: max |w| maps to exactly 127
            w = torch.quantize_per_channel(
                w.detach(), scale.double(), zero.long(), WEIGHTED[op.name], torch.qint8
            ).dequantize()
        else:
            w = torch.fake_quantize_per_channel_affine(w, scale, zero, WEIGHTED[op.name], -127, 127)
        if b is not None:  # int32 in steps of input scale x weight scale; rounding passes gradients through
            step = scale * self.scales[op.inputs[0]][0]  # an int8 op reads an int8 op's or a QUANTIZE's output
            b = b + (torch.round(b / step) * step - b).detach()
        return w, b

    def _explicit_fixed(self, op: _Op, w: torch.Tensor) -> torch.Tensor:
        """A fixed int8 weight (a pool or the normalisation as a depthwise conv) as a quantize /
        dequantize pair of its file's int8 values, so a converter stores it int8 as well."""
        axis = WEIGHTED[op.name]
        scale, zero = (np.broadcast_to(a, (w.shape[axis],)) for a in self.int8_qparams[op.inputs[1]])
        scale, zero = torch.tensor(scale, dtype=torch.float64), torch.tensor(zero, dtype=torch.int64)
        return torch.quantize_per_channel(w, scale, zero, axis, torch.qint8).dequantize()

    def _fake_quant(self, i: int, x: torch.Tensor) -> torch.Tensor:
        qp = self.scales.get(i)
        if qp is None or not self.quantize:
            return x
        if self.explicit:
            return torch.quantize_per_tensor(x, qp[0], qp[1], torch.qint8).dequantize()
        return torch.fake_quantize_per_tensor_affine(x, qp[0], qp[1], QMIN, QMAX)

    # ---- running the graph --------------------------------------------------------------------
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        env = self._run(pixels)
        if self.features_tensor is not None:  # laid out as the PyTorch model's (NCHW)
            f = env[self.features_tensor]
            nhwc = self._features_nhwc
            self.features = f.reshape(-1, *nhwc).permute(0, 3, 1, 2) if nhwc else f
        return env[self.logits_tensor]

    def _run(self, pixels: torch.Tensor) -> dict[int, torch.Tensor]:
        env = {self.input: pixels.float()}
        for op in self.ops:
            env[op.output] = self._fake_quant(op.output, getattr(self, "_op_" + op.name.lower())(op, env))
        return env

    def _in(self, op: _Op, env, k: int = 0) -> torch.Tensor:
        i = op.inputs[k]
        return env[i] if i in env else self._const(i, op.int8)

    @staticmethod
    def _activation(op: _Op, y: torch.Tensor) -> torch.Tensor:
        act = getattr(op.options, "fusedActivationFunction", 0)
        s = _schema().ActivationFunctionType
        if act == s.NONE:
            return y
        if act == s.RELU:
            return F.relu(y)
        if act == s.RELU6:
            return F.relu6(y)
        if act == s.RELU_N1_TO_1:
            return y.clamp(-1, 1)
        raise NotImplementedError(f"fused activation {act} in a TFLite graph")

    def _conv(self, op: _Op, env, depthwise: bool) -> torch.Tensor:
        o, x = op.options, self._in(op, env)
        w, b = self._weight_and_bias(op)
        stride, dilation = (o.strideH, o.strideW), (o.dilationHFactor, o.dilationWFactor)
        if o.padding == _schema().Padding.SAME:
            x = _same_padding(x, (w.shape[1], w.shape[2]), stride, dilation)
        # TFLite weights: conv (out, kh, kw, in), depthwise (1, kh, kw, channels)
        weight = w.permute(3, 0, 1, 2) if depthwise else w.permute(0, 3, 1, 2)
        y = F.conv2d(x.permute(0, 3, 1, 2), weight, b, stride, 0, dilation, w.shape[3] if depthwise else 1)
        return self._activation(op, y.permute(0, 2, 3, 1))

    def _op_conv_2d(self, op, env):
        return self._conv(op, env, depthwise=False)

    def _op_depthwise_conv_2d(self, op, env):
        return self._conv(op, env, depthwise=True)

    def _op_fully_connected(self, op, env):
        w, b = self._weight_and_bias(op)
        return self._activation(op, F.linear(self._in(op, env).reshape(-1, w.shape[1]), w, b))

    def _operands(self, op: _Op, env) -> tuple[torch.Tensor, torch.Tensor]:
        """A broadcasting op's inputs. The file's shapes have batch 1, where right alignment
        broadcasts (1, C) over (1, H, W, C); with a real batch, a lower-rank activation gets its
        singleton dimensions after the batch instead."""
        a, b = self._in(op, env, 0), self._in(op, env, 1)
        rank = max(a.dim(), b.dim())

        def lift(i: int, t: torch.Tensor) -> torch.Tensor:
            return t.reshape(t.shape[:1] + (1,) * (rank - t.dim()) + t.shape[1:]) if i in env and t.dim() < rank else t

        return lift(op.inputs[0], a), lift(op.inputs[1], b)

    def _op_add(self, op, env):
        a, b = self._operands(op, env)
        return self._activation(op, a + b)

    def _op_sub(self, op, env):
        a, b = self._operands(op, env)
        return self._activation(op, a - b)

    def _op_mul(self, op, env):
        a, b = self._operands(op, env)
        return self._activation(op, a * b)

    def _op_pad(self, op, env):  # int8 PAD fills with the zero point: the real value 0 as well
        pads = self.int_consts[op.inputs[1]]
        return F.pad(self._in(op, env), [v for pair in reversed(pads) for v in pair])

    def _reduce(self, op, env, fn):
        x = self._in(op, env)
        axes = [int(a) % x.dim() for a in np.ravel(self.int_consts[op.inputs[1]])]
        return fn(x, dim=axes, keepdim=bool(op.options.keepDims))

    def _op_mean(self, op, env):
        return self._reduce(op, env, torch.mean)

    def _op_sum(self, op, env):
        return self._reduce(op, env, torch.sum)

    def _op_average_pool_2d(self, op, env):
        o = op.options
        if o.padding != _schema().Padding.VALID:
            raise NotImplementedError("AVERAGE_POOL_2D with SAME padding in a TFLite graph")
        y = F.avg_pool2d(self._in(op, env).permute(0, 3, 1, 2), (o.filterHeight, o.filterWidth), (o.strideH, o.strideW))
        return self._activation(op, y.permute(0, 2, 3, 1))

    def _op_hard_swish(self, op, env):
        return F.hardswish(self._in(op, env))

    def _op_logistic(self, op, env):
        return torch.sigmoid(self._in(op, env))

    def _op_relu(self, op, env):
        return F.relu(self._in(op, env))

    def _op_relu6(self, op, env):
        return F.relu6(self._in(op, env))

    def _op_reshape(self, op, env):
        x = self._in(op, env)
        return x.reshape(x.shape[:1] + tuple(self.int_consts[op.inputs[1]][1:]))

    def _op_softmax(self, op, env):
        return torch.softmax(self._in(op, env) * op.options.beta, dim=-1)

    def _op_quantize(self, op, env):
        return self._in(op, env)

    def _op_dequantize(self, op, env):
        return self._in(op, env)


class NCHWInput(nn.Module):
    """A FakeQuantGraph (NHWC raw pixels) fed NCHW raw pixels, as an ONNX file or a CoreML image is."""

    def __init__(self, graph: FakeQuantGraph):
        super().__init__()
        self.tflite = graph  # not "graph": torch.onnx would confuse it with an FX GraphModule's own attribute

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.tflite(pixels.permute(0, 2, 3, 1))


def _same_padding(x: torch.Tensor, kernel, stride, dilation) -> torch.Tensor:
    """TensorFlow's SAME padding of an NHWC map (the extra pixel, if any, at the bottom/right)."""
    pads = []
    for size, k, s, d in zip(x.shape[1:3], kernel, stride, dilation):
        size, k = int(size), int(k)  # the spatial sizes are fixed: constants to a tracer
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return F.pad(x, (0, 0, left, right, top, bottom))
