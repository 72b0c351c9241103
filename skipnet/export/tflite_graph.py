"""Graph surgery on a float .tflite before int8 quantisation, so that XNNPACK runs all of it, fast.

What the converter emits and why it is slow in int8 (each measured in benchmarks/int8_latency.py):

* HARD_SWISH has no int8 XNNPACK kernel, so each one splits the delegated graph. Rewritten as its
  definition, x * relu6(x + 3) * (1/6): ADD (fused RELU6), MUL, and the 1/6 folded into the
  weights of the layers it reaches (squeeze-excite's 1/6 too), else a MUL by a constant.
* AVERAGE_POOL_2D has no int8 XNNPACK kernel either. With VALID padding and kernel = stride
  (SkipNet's skip blocks) it is a DEPTHWISE_CONV_2D with weights 1/(kh*kw); large kernels are
  split into stages of at most 4x4, where XNNPACK's int8 depthwise kernel is fast.
* The input normalisation is a MUL and an ADD broadcasting over 3 channels, slow in both
  precisions; as one 1x1 DEPTHWISE_CONV_2D it is a single fast pass (applied to float exports too).
* An op computing what an earlier one computes (the first 4x4 stage of two skip pools over one
  map) is dropped.
* The closing SOFTMAX stays float (the quantiser skips FLOAT_SCOPE), and with float_min_height
  so do the first, high-resolution layers: what skipnet-export ships unless asked for a
  full-integer graph (tflite_convert.deployed_float_graph says why).

Every rewrite computes the same function in float; only int8 rounding differs. The PyTorch
network is untouched, so any checkpoint (the authors' included) still loads.
"""

from __future__ import annotations

import collections
import copy
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


def input_height(path: Path) -> int:
    """The height of a .tflite's (NHWC) input."""
    g = load_model(path).subgraphs[0]
    return int(g.tensors[g.inputs[0]].shape[1])


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
    return [
        ed.op("ADD", [x, three], [gate], s.BuiltinOptions.AddOptions, add),
        ed.op("MUL", [x, gate], [prod], s.BuiltinOptions.MulOptions, mul),
        ed.op("MUL", [prod, sixth], [y], s.BuiltinOptions.MulOptions, s.MulOptionsT()),
    ]


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
        weight = ed.tensor(
            f"avgpool{n}/weight{i}", [1, kh, kw, shape[3]], np.full((1, kh, kw, shape[3]), 1.0 / (kh * kw))
        )
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
        if (
            nxt is not None
            and _op_name(ed.model, op) == "MUL"
            and _op_name(ed.model, nxt) == "ADD"
            and nxt.inputs[0] == op.outputs[0]
            and consumers[op.outputs[0]] == 1
            and op.builtinOptions.fusedActivationFunction == s.ActivationFunctionType.NONE
        ):
            x, scale, shift = op.inputs[0], _constant(ed, op.inputs[1]), _constant(ed, nxt.inputs[1])
            shape = [int(v) for v in ed.graph.tensors[x].shape]
            channel = (1, 1, 1, shape[-1]) if len(shape) == 4 else None

            def per_channel(c, shape=shape) -> bool:  # a scalar, or one value per channel along the last axis
                return c is not None and c.size in (1, shape[-1]) and (c.ndim == 0 or c.size == c.shape[-1])

            if channel and _constant(ed, x) is None and per_channel(scale) and per_channel(shift):
                # a grayscale dataset's normalisation is one scalar for all three channels
                weight = ed.tensor(f"affine{folded}/weight", channel, np.broadcast_to(scale.reshape(-1), channel[-1:]))
                bias = ed.tensor(f"affine{folded}/bias", [shape[-1]], np.broadcast_to(shift.reshape(-1), channel[-1:]))
                out.append(
                    ed.depthwise(x, weight, bias, nxt.outputs[0], (1, 1), nxt.builtinOptions.fusedActivationFunction)
                )
                folded, i = folded + 1, i + 2
                continue
        out.append(op)
        i += 1
    return out, folded


# Ops through which a tensor scaled by a constant stays scaled by it (input 0; MUL either input).
_LINEAR = {"PAD", "MEAN", "AVERAGE_POOL_2D", "RESHAPE", "MUL"}
_WEIGHTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def _plain(ed: _Editor, op) -> bool:
    """No fused activation (a MUL's output is then linear in each input)."""
    o = op.builtinOptions
    return o is None or o.fusedActivationFunction == ed.s.ActivationFunctionType.NONE


def _scaled_weights(ed: _Editor, ops: list, tensor: int) -> list[int] | None:
    """The weight tensors (input 1) of the convolutions and fully connected layers that ``tensor``
    reaches through linear ops only, each read by that one op; None if it reaches anything else
    (an ADD, an activation, a graph output), or one op by two paths."""
    readers = collections.defaultdict(list)
    for op in ops:
        for k, t in enumerate(op.inputs):
            readers[t].append((op, k))
    weights, seen, todo = [], set(), [tensor]
    while todo:
        t = todo.pop()
        if t in ed.graph.outputs or not readers[t]:
            return None
        for op, k in readers[t]:
            name = _op_name(ed.model, op)
            if id(op) in seen:
                return None
            seen.add(id(op))
            w = op.inputs[1] if len(op.inputs) > 1 else -1
            if name in _WEIGHTED and k == 0 and len(readers[w]) == 1 and _constant(ed, w) is not None:
                weights.append(w)
            elif name in _LINEAR and (k == 0 or name == "MUL") and (name != "MUL" or _plain(ed, op)):
                todo.append(op.outputs[0])
            else:
                return None
    return weights


def _set_constant(ed: _Editor, tensor: int, value: np.ndarray) -> None:
    """New float values for a constant tensor: in its buffer if no other tensor shares it (an
    orphaned buffer would stay in the file), else in a new one."""
    t = ed.graph.tensors[tensor]
    shared = sum(other.buffer == t.buffer for g in ed.model.subgraphs for other in g.tensors) > 1
    if shared:
        ed.model.buffers.append(ed.s.BufferT())
        t.buffer = len(ed.model.buffers) - 1
    ed.model.buffers[t.buffer].data = np.frombuffer(np.ascontiguousarray(value, np.float32).tobytes(), np.uint8)


def _fold_constant_muls(ed: _Editor, ops: list) -> tuple[list, int]:
    """Each MUL by a scalar constant c (h-swish's 1/6, the squeeze-excite gate's 1/6) whose result
    reaches only convolution and fully connected layers, through linear ops, is dropped and c
    multiplies those layers' weights instead: the same function, one int8 MUL fewer over a whole
    feature map."""
    folded = 0
    for op in list(ops):
        if _op_name(ed.model, op) != "MUL" or not _plain(ed, op):
            continue
        c, x = _constant(ed, op.inputs[1]), op.inputs[0]
        if c is None or c.size != 1 or _constant(ed, x) is not None:
            continue
        weights = _scaled_weights(ed, ops, op.outputs[0])
        if weights is None:
            continue
        for w in weights:
            _set_constant(ed, w, _constant(ed, w) * np.float32(c.reshape(())))
        ops.remove(op)
        for other in ops:
            other.inputs = [x if t == op.outputs[0] else t for t in other.inputs]
        folded += 1
    return ops, folded


def _op_key(ed: _Editor, op) -> tuple:
    """What an op computes: its code, options and inputs (constants by value)."""
    inputs = []
    for t in op.inputs:
        c = _constant(ed, t) if t >= 0 else None
        inputs.append(t if c is None else (c.shape, c.tobytes()))
    fields = sorted(vars(op.builtinOptions).items()) if op.builtinOptions is not None else []
    options = tuple((k, v.tobytes() if isinstance(v, np.ndarray) else repr(v)) for k, v in fields)
    return op.opcodeIndex, tuple(inputs), options


def _dedupe(ed: _Editor, ops: list) -> tuple[list, int]:
    """Ops computing what an earlier op computes are dropped, their readers reading its output:
    SkipNet's two skip pools over one map (4x4 and 8x8) both begin with the same 4x4 stage."""
    seen, kept, dropped = {}, [], 0
    for op in ops:
        key = _op_key(ed, op)
        first = seen.get(key)
        if first is None or len(op.outputs) != 1 or op.outputs[0] in ed.graph.outputs:
            seen.setdefault(key, op)
            kept.append(op)
            continue
        for other in ops:
            other.inputs = [first.outputs[0] if t == op.outputs[0] else t for t in other.inputs]
        dropped += 1
    return kept, dropped


FLOAT_SCOPE = "float_island/"


def _height(ed: _Editor, op) -> int:
    """The tallest 4-D map an op reads (first input) or writes."""
    heights = [0]
    for t in (op.inputs[0] if len(op.inputs) else -1, op.outputs[0]):
        shape = ed.graph.tensors[t].shape if t >= 0 else ()
        heights.append(int(shape[1]) if len(shape) == 4 else 0)
    return max(heights)


def _float_ops(ed: _Editor, ops: list, min_height: int | None) -> list:
    """The ops an int8 graph keeps float: the closing SOFTMAX, whose int8 output (steps of 1/256)
    would tie the top classes of a confident prediction; with ``min_height``, also those reading
    or writing maps at least that tall (a stride-2 op reading such a map is included, so the
    graph turns int8 at the smaller map it writes) and average pools reading a float map
    (pooling before quantising means quantising a 16x smaller map): a float prefix, which on
    some x86 CPUs is faster than int8 (benchmarks/int8_latency.py)."""
    keep, float_tensors = [], set(ed.graph.inputs) if min_height else set()
    for op in ops:
        name = _op_name(ed.model, op)
        pools_float_map = name == "AVERAGE_POOL_2D" and op.inputs[0] in float_tensors
        if (min_height and _height(ed, op) >= min_height) or pools_float_map or name == "SOFTMAX":
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
    used = sorted(
        {t for op in graph.operators for t in list(op.inputs) + list(op.outputs) if t >= 0}
        | set(graph.inputs)
        | set(graph.outputs)
    )
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


def rewrite_graph(
    src: Path,
    dst: Path,
    ops=("HARD_SWISH", "AVERAGE_POOL_2D"),
    fold_affine: bool = True,
    float_min_height: int | None = None,
    fold_scales: bool = True,
    int8: bool = False,
) -> dict[str, int]:
    """Write `src` with the rewrites above applied; returns how many of each were made.

    ops: op types to replace by int8-friendly equivalents; fold_affine: the input normalisation as
    one depthwise conv; fold_scales: MULs by a constant folded into the weights of the layers
    they feed; int8: the graph is to be quantised (its closing SOFTMAX is marked to stay float);
    float_min_height (implies int8): also keep ops reading or writing maps this tall float (float
    XNNPACK runs HARD_SWISH and AVERAGE_POOL_2D as they are, so those are not rewritten).
    """
    model = load_model(src)
    done = collections.Counter()
    for graph in model.subgraphs:
        ed, new = _Editor(model, graph), []
        if fold_affine:
            graph.operators, done["input_affine"] = _per_channel_affine_as_depthwise(ed, graph.operators)
        stay_float = _float_ops(ed, graph.operators, float_min_height) if int8 or float_min_height else []
        keep = set(map(id, stay_float))
        for op in graph.operators:
            name = _op_name(model, op)
            replacement = REWRITES[name](ed, op, done[name]) if name in ops and id(op) not in keep else None
            if replacement is None:
                new.append(op)
            else:
                new.extend(replacement)
                done[name] += 1
        if fold_scales:
            new, done["scales_folded"] = _fold_constant_muls(ed, new)
        new, done["duplicates"] = _dedupe(ed, new)
        done["float_ops"] = _mark_float(ed, [op for op in stay_float if op in new])
        graph.operators = new
        _prune_tensors(model, graph)
    save_model(model, dst)
    return {k: v for k, v in done.items() if v}


def uint8_input(src: Path, dst: Path) -> None:
    """Write `src` with a uint8 input in place of its int8 one (same scale, zero point + 128: the
    same real values), the pixel type MediaPipe and the TFLite Task Library feed. An input read
    only by DEQUANTIZE ops (which read uint8 as well) is retyped; one that int8 ops read gets a
    QUANTIZE from the new uint8 input (uint8 v to int8 v - 128) in front of them."""
    schema, model = _schema(), load_model(src)
    for graph in model.subgraphs:
        for k, index in enumerate(graph.inputs):
            t = graph.tensors[index]
            if t.type != schema.TensorType.INT8:
                continue
            readers = {_op_name(model, op) for op in graph.operators if index in op.inputs}
            if readers == {"DEQUANTIZE"}:
                t.type = schema.TensorType.UINT8
                t.quantization.zeroPoint = np.asarray(t.quantization.zeroPoint, np.int64) + 128
            else:
                _quantize_from_uint8(model, graph, k)
    save_model(model, dst)


def _quantize_from_uint8(model, graph, k: int) -> None:
    """Graph input k (int8) becomes the output of a QUANTIZE reading a new uint8 input."""
    s, ed = _schema(), _Editor(model, graph)
    old = graph.tensors[graph.inputs[k]]
    new = copy.copy(old)
    new.quantization = copy.copy(old.quantization)
    new.type, new.quantization.zeroPoint = s.TensorType.UINT8, np.asarray(old.quantization.zeroPoint, np.int64) + 128
    old.name = old.name + b"/int8"
    graph.tensors.append(new)
    index = len(graph.tensors) - 1
    # uint8 -> float -> int8: two conversions XNNPACK runs, where a direct uint8 -> int8 QUANTIZE
    # falls back to LiteRT's own kernel (0.1 ms more at 224x224, benchmarks/int8_latency.py)
    pixels = ed.tensor(old.name.decode() + "/float", old.shape)
    graph.operators[:0] = [ed.op("DEQUANTIZE", [index], [pixels]), ed.op("QUANTIZE", [pixels], [graph.inputs[k]])]
    for sig in model.signatureDefs or []:
        for io in sig.inputs or []:
            if io.tensorIndex == graph.inputs[k]:
                io.tensorIndex = index
    graph.inputs = [index if j == k else int(t) for j, t in enumerate(graph.inputs)]
