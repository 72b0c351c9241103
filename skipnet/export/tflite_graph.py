"""Graph surgery on a float .tflite before int8 quantisation, so that XNNPACK runs all of it, fast.

What the converter emits and why it is slow in int8 (each measured in benchmarks/int8_latency.py):

* HARD_SWISH has no int8 XNNPACK kernel, so each one splits the delegated graph. Rewritten as its
  definition, x * relu6(x + 3) * (1/6): ADD (fused RELU6), MUL, MUL by a constant.
* AVERAGE_POOL_2D has no int8 XNNPACK kernel either. With VALID padding and kernel = stride
  (SkipNet's skip blocks) it is a DEPTHWISE_CONV_2D with weights 1/(kh*kw); large kernels are
  split into stages of at most 4x4, where XNNPACK's int8 depthwise kernel is fast.
* The input normalisation is a MUL and an ADD broadcasting over 3 channels, slow in both
  precisions; as one 1x1 DEPTHWISE_CONV_2D it is a single fast pass (applied to float exports too).
* The first, high-resolution layers have few channels, where XNNPACK's float kernels beat its
  int8 ones: rewrite_graph can mark them to stay float (the quantiser skips FLOAT_SCOPE).

Every rewrite computes the same function in float; only int8 rounding differs. The PyTorch
network is untouched, so any checkpoint (the authors' included) still loads.
"""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np

from ..common import atomic_path


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def load_model(path: Path):
    schema = _schema()
    data = Path(path).read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    for buf in model.buffers or []:
        if buf.offset > 1:  # large-model layout: the bytes sit after the flatbuffer; inline them
            buf.data = np.frombuffer(data, np.uint8, buf.size, buf.offset)
            buf.offset = buf.size = 0
    return model


def save_model(model, path: Path) -> None:
    import flatbuffers

    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(bytes(builder.Output()))


def _op_name(model, op) -> str:
    schema = _schema()
    code = model.operatorCodes[op.opcodeIndex]
    value = max(code.builtinCode, code.deprecatedBuiltinCode)  # small codes live in the deprecated byte
    return next(k for k, v in vars(schema.BuiltinOperator).items() if v == value and not k.startswith("_"))


def op_census(path: Path) -> dict[str, int]:
    """How many of each builtin op a .tflite holds (all subgraphs), sorted by name."""
    model = load_model(path)
    counts = collections.Counter(_op_name(model, op) for g in model.subgraphs for op in g.operators)
    return dict(sorted(counts.items()))


def float_ops(path: Path) -> list[tuple[str, list[int]]]:
    """(op, output shape) of every op computing in float (DEQUANTIZE aside): a graph's float islands."""
    schema, model = _schema(), load_model(path)
    out = []
    for g in model.subgraphs:
        for op in g.operators:
            t = g.tensors[op.outputs[0]]
            name = _op_name(model, op)
            if t.type == schema.TensorType.FLOAT32 and name != "DEQUANTIZE":
                out.append((name, [int(v) for v in t.shape]))
    return out


class _Editor:
    """Adds opcodes, constant tensors and float tensors to one subgraph of a ModelT."""

    def __init__(self, model, graph):
        self.s, self.model, self.graph = _schema(), model, graph

    def opcode(self, name: str) -> int:
        value = getattr(self.s.BuiltinOperator, name)
        for i, code in enumerate(self.model.operatorCodes):
            if max(code.builtinCode, code.deprecatedBuiltinCode) == value:
                return i
        code = self.s.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = value, min(value, 127), 1
        self.model.operatorCodes.append(code)
        return len(self.model.operatorCodes) - 1

    def tensor(self, name: str, shape, data: np.ndarray | None = None) -> int:
        t = self.s.TensorT()
        t.name, t.type, t.shape = name.encode(), self.s.TensorType.FLOAT32, np.asarray(shape, np.int32)
        buf = self.s.BufferT()
        if data is not None:
            buf.data = np.frombuffer(np.ascontiguousarray(data, np.float32).tobytes(), np.uint8)
        self.model.buffers.append(buf)
        t.buffer = len(self.model.buffers) - 1
        self.graph.tensors.append(t)
        return len(self.graph.tensors) - 1

    def depthwise(self, x: int, weight: int, bias: int, out: int, stride: tuple[int, int], activation: int):
        """A VALID, undilated DEPTHWISE_CONV_2D with depth multiplier 1."""
        dw = self.s.DepthwiseConv2DOptionsT()
        dw.padding, (dw.strideH, dw.strideW), dw.depthMultiplier = self.s.Padding.VALID, stride, 1
        dw.dilationHFactor = dw.dilationWFactor = 1
        dw.fusedActivationFunction = activation
        return self.op("DEPTHWISE_CONV_2D", [x, weight, bias], [out], self.s.BuiltinOptions.DepthwiseConv2DOptions, dw)

    def op(self, name: str, inputs, outputs, options_type=None, options=None):
        op = self.s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = self.opcode(name), list(inputs), list(outputs)
        if options is not None:
            op.builtinOptionsType, op.builtinOptions = options_type, options
        return op


def _expand_hard_swish(ed: _Editor, op, n: int) -> list:
    s, x, y = ed.s, op.inputs[0], op.outputs[0]
    shape = ed.graph.tensors[x].shape
    three = ed.tensor(f"hswish{n}/three", [], np.float32(3.0))
    sixth = ed.tensor(f"hswish{n}/sixth", [], np.float32(1.0 / 6.0))
    gate, prod = ed.tensor(f"hswish{n}/relu6", shape), ed.tensor(f"hswish{n}/x_relu6", shape)
    add = s.AddOptionsT()
    add.fusedActivationFunction = s.ActivationFunctionType.RELU6
    mul = s.MulOptionsT()
    return [ed.op("ADD", [x, three], [gate], s.BuiltinOptions.AddOptions, add),
            ed.op("MUL", [x, gate], [prod], s.BuiltinOptions.MulOptions, mul),
            ed.op("MUL", [prod, sixth], [y], s.BuiltinOptions.MulOptions, s.MulOptionsT())]


def _factors(k: int) -> list[int]:
    """k as a product of factors <= 4, largest first (8 -> [4, 2]); a prime > 4 stays whole."""
    out, f = [], 4
    while k > 1 and f > 1:
        if k % f == 0:
            out.append(f)
            k //= f
        else:
            f -= 1
    return out + ([k] if k > 1 else [])


def _avg_pool_as_depthwise(ed: _Editor, op, n: int):
    """A VALID kernel = stride average pool as depthwise convolutions with weights 1/(kh*kw).

    Large kernels are split into stages of at most 4x4 (an 8x8 pool is a 4x4 then a 2x2 pool, the
    same average): XNNPACK's int8 depthwise kernel is 14x slower at 8x8 than at 4x4 (measured).
    """
    s, opts = ed.s, op.builtinOptions
    if opts.padding != s.Padding.VALID or (opts.filterHeight, opts.filterWidth) != (opts.strideH, opts.strideW):
        return None  # SAME padding averages only the valid pixels: not a fixed-weight convolution
    x = op.inputs[0]
    shape = [int(v) for v in ed.graph.tensors[x].shape]
    hs, ws = _factors(opts.filterHeight), _factors(opts.filterWidth)
    stages = max(len(hs), len(ws))
    if stages == 0:
        return None  # a 1x1 pool is the identity; leave it alone
    hs, ws = hs + [1] * (stages - len(hs)), ws + [1] * (stages - len(ws))
    ops = []
    for i, (kh, kw) in enumerate(zip(hs, ws)):
        shape = [shape[0], shape[1] // kh, shape[2] // kw, shape[3]]
        last = i == stages - 1
        out = op.outputs[0] if last else ed.tensor(f"avgpool{n}/stage{i}", shape)
        weight = ed.tensor(f"avgpool{n}/weight{i}", [1, kh, kw, shape[3]],
                           np.full((1, kh, kw, shape[3]), 1.0 / (kh * kw)))
        bias = ed.tensor(f"avgpool{n}/bias{i}", [shape[3]], np.zeros(shape[3]))
        activation = opts.fusedActivationFunction if last else s.ActivationFunctionType.NONE
        ops.append(ed.depthwise(x, weight, bias, out, (kh, kw), activation))
        x = out
    return ops


def _constant(ed: _Editor, tensor: int) -> np.ndarray | None:
    t = ed.graph.tensors[tensor]
    data = ed.model.buffers[t.buffer].data
    if data is None or t.type != ed.s.TensorType.FLOAT32:
        return None
    return np.frombuffer(np.asarray(data, np.uint8).tobytes(), np.float32).reshape([int(v) for v in t.shape])


def _per_channel_affine_as_depthwise(ed: _Editor, ops: list) -> tuple[list, int]:
    """MUL by a per-channel constant then ADD of one (the input normalisation) as a 1x1 depthwise conv.

    The converter emits the normalisation as two broadcasting ops over a 3-channel image; XNNPACK
    runs such narrow broadcasts slowly (0.56 ms at 224x224 in float, measured), a 1x1 depthwise
    convolution computes the same x * a + b in one pass (0.22 ms).
    """
    s, consumers = ed.s, collections.Counter(t for op in ops for t in op.inputs)
    out, folded, i = [], 0, 0
    while i < len(ops):
        op, nxt = ops[i], ops[i + 1] if i + 1 < len(ops) else None
        if (nxt is not None and _op_name(ed.model, op) == "MUL" and _op_name(ed.model, nxt) == "ADD"
                and nxt.inputs[0] == op.outputs[0] and consumers[op.outputs[0]] == 1
                and op.builtinOptions.fusedActivationFunction == s.ActivationFunctionType.NONE):
            x, scale, shift = op.inputs[0], _constant(ed, op.inputs[1]), _constant(ed, nxt.inputs[1])
            shape = [int(v) for v in ed.graph.tensors[x].shape]
            channel = (1, 1, 1, shape[-1]) if len(shape) == 4 else None
            def per_channel(c) -> bool:  # a scalar, or one value per channel along the last axis
                return c is not None and c.size in (1, shape[-1]) and (c.ndim == 0 or c.size == c.shape[-1])

            if channel and _constant(ed, x) is None and per_channel(scale) and per_channel(shift):
                # a grayscale dataset's normalisation is one scalar for all three channels
                weight = ed.tensor(f"affine{folded}/weight", channel, np.broadcast_to(scale.reshape(-1), channel[-1:]))
                bias = ed.tensor(f"affine{folded}/bias", [shape[-1]], np.broadcast_to(shift.reshape(-1), channel[-1:]))
                out.append(ed.depthwise(x, weight, bias, nxt.outputs[0], (1, 1),
                                        nxt.builtinOptions.fusedActivationFunction))
                folded, i = folded + 1, i + 2
                continue
        out.append(op)
        i += 1
    return out, folded


FLOAT_SCOPE = "float_island/"


def _height(ed: _Editor, op) -> int:
    """The tallest 4-D map an op reads (first input) or writes."""
    heights = [0]
    for t in (op.inputs[0] if len(op.inputs) else -1, op.outputs[0]):
        shape = ed.graph.tensors[t].shape if t >= 0 else ()
        heights.append(int(shape[1]) if len(shape) == 4 else 0)
    return max(heights)


def _float_ops(ed: _Editor, ops: list, min_height: int) -> list:
    """The ops to keep float: those reading or writing maps at least min_height tall (the first,
    wide and narrow layers, where XNNPACK's float kernels beat its int8 ones; a stride-2 op reading
    such a map is included, so the graph turns int8 at the smaller map it writes), average
    pools reading a float map (pooling before quantising means quantising a 16x smaller map),
    all measured in benchmarks/int8_latency.py; and the closing SOFTMAX, whose int8 output
    (steps of 1/256) would tie the top classes of a confident prediction."""
    keep, float_tensors = [], set(ed.graph.inputs)
    for op in ops:
        name = _op_name(ed.model, op)
        pools_float_map = name == "AVERAGE_POOL_2D" and op.inputs[0] in float_tensors
        if _height(ed, op) >= min_height or pools_float_map or name == "SOFTMAX":
            keep.append(op)
            float_tensors.update(op.outputs)
    return keep


def _mark_float(ed: _Editor, ops: list) -> int:
    """Prefix the output names of `ops` with FLOAT_SCOPE; the quantiser leaves that scope float."""
    for op in ops:
        t = ed.graph.tensors[op.outputs[0]]
        if not t.name.startswith(FLOAT_SCOPE.encode()):
            t.name = FLOAT_SCOPE.encode() + t.name
    return len(ops)


def _prune_tensors(model, graph) -> None:
    """Drop tensors no op, input or output refers to any more (the runtime rejects dangling ones)."""
    used = sorted({t for op in graph.operators for t in list(op.inputs) + list(op.outputs) if t >= 0}
                  | set(graph.inputs) | set(graph.outputs))
    index = {old: new for new, old in enumerate(used)}
    graph.tensors = [graph.tensors[i] for i in used]
    for op in graph.operators:
        op.inputs = [index[t] if t >= 0 else t for t in op.inputs]
        op.outputs = [index[t] for t in op.outputs]
    graph.inputs, graph.outputs = [index[t] for t in graph.inputs], [index[t] for t in graph.outputs]
    for sig in model.signatureDefs or []:
        if model.subgraphs[sig.subgraphIndex] is graph:
            for io in list(sig.inputs or []) + list(sig.outputs or []):
                io.tensorIndex = index[io.tensorIndex]


REWRITES = {"HARD_SWISH": _expand_hard_swish, "AVERAGE_POOL_2D": _avg_pool_as_depthwise}


def rewrite_graph(src: Path, dst: Path, ops=("HARD_SWISH", "AVERAGE_POOL_2D"), fold_affine: bool = True,
                  float_min_height: int | None = None) -> dict[str, int]:
    """Write `src` with the rewrites above applied; returns how many of each were made.

    ops: op types to replace by int8-friendly equivalents; fold_affine: the input normalisation as
    one depthwise conv; float_min_height: keep ops reading or writing maps this tall float
    (float XNNPACK runs HARD_SWISH and AVERAGE_POOL_2D as they are, so those are not rewritten).
    """
    model = load_model(src)
    done = collections.Counter()
    for graph in model.subgraphs:
        ed, new = _Editor(model, graph), []
        if fold_affine:
            graph.operators, done["input_affine"] = _per_channel_affine_as_depthwise(ed, graph.operators)
        stay_float = _float_ops(ed, graph.operators, float_min_height) if float_min_height else []
        keep = set(map(id, stay_float))
        for op in graph.operators:
            name = _op_name(model, op)
            replacement = REWRITES[name](ed, op, done[name]) if name in ops and id(op) not in keep else None
            if replacement is None:
                new.append(op)
            else:
                new.extend(replacement)
                done[name] += 1
        done["float_ops"] = _mark_float(ed, stay_float)
        graph.operators = new
        _prune_tensors(model, graph)
    save_model(model, dst)
    return {k: v for k, v in done.items() if v}


def uint8_input(src: Path, dst: Path) -> None:
    """Write `src` with its int8 input retyped to uint8 (same scale, zero point + 128: the same
    real values), the pixel type MediaPipe and the TFLite Task Library feed. Every reader of the
    input must be a DEQUANTIZE, which reads uint8 as well: true of the graphs rewrite_graph keeps
    float at full resolution."""
    schema, model = _schema(), load_model(src)
    for graph in model.subgraphs:
        for index in graph.inputs:
            t = graph.tensors[index]
            if t.type != schema.TensorType.INT8:
                continue
            readers = [_op_name(model, op) for op in graph.operators if index in op.inputs]
            if set(readers) != {"DEQUANTIZE"}:
                raise ValueError(f"input {t.name!r} is read by {readers}, not only by DEQUANTIZE")
            t.type = schema.TensorType.UINT8
            t.quantization.zeroPoint = np.asarray(t.quantization.zeroPoint, np.int64) + 128
    save_model(model, dst)
