"""Rewrites of a float ONNX graph before onnxruntime's int8 (QDQ) quantisation, so that its int8
graph stays in integer kernels (each measured in benchmarks/onnx_int8.py):

* ReduceMean over height and width with kept dims (squeeze-excite's pooling) is a
  GlobalAveragePool, which onnxruntime runs in int8; ReduceMean runs in float between a
  DequantizeLinear and a QuantizeLinear.
* HardSwish has no int8 kernel either: as its definition x * Clip(x + 3, 0, 6) * 1/6 it is an
  int8 Add, Mul and Mul (the Clip is absorbed by the quantisation of its output).
* AveragePool with kernel = stride and no padding (SkipNet's skip pools) is a depthwise Conv
  with weights 1/(k*k), where onnxruntime's int8 kernel is much faster than its int8 pooling;
  an 8x8 kernel as a 4x4 then a 2x2 stage.
* Squeeze-excite's Linear layers (a Reshape to [N, C], Gemm, Relu, Gemm, HardSigmoid, a Reshape
  back to [N, C, 1, 1]) are 1x1 Convs on the pooled map: no Reshapes, and the layout transformer
  keeps the branch in its channels-last int8 kernels.
* HardSigmoid (alpha * x + beta, clipped to [0, 1]) has no int8 kernel: after a Conv or Gemm, alpha
  and beta go into its weights and bias, leaving a Clip that quantisation absorbs.
* A Mul by a scalar constant (h-swish's 1/6) whose result reaches only Conv and Gemm nodes,
  through linear ops, is folded into their weights: one int8 Mul fewer over a feature map.

Every rewrite computes the same function in float; only int8 rounding differs.
"""

from __future__ import annotations

import collections

import numpy as np


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Rewriter:
    def __init__(self, model):
        import onnx

        self.model, self.graph, self.helper = model, model.graph, onnx.helper
        self.shapes = _shapes(model)

    def constant(self, name: str, value) -> str:
        return _add_constant(self.model, name, value)

    def reduce_mean(self, node) -> list | None:
        axes = self._constant_value(node.input[1]) if len(node.input) > 1 else _attrs(node).get("axes")
        rank = len(self.shapes.get(node.input[0], []))
        if rank != 4 or _attrs(node).get("keepdims", 1) != 1 or sorted(int(a) % 4 for a in axes) != [2, 3]:
            return None
        return [self.helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=f"{node.name}/gap")]

    def hard_swish(self, node) -> list:
        x, y, n = node.input[0], node.output[0], node.name
        three, zero, six = (self.constant(f"{n}/{k}", v) for k, v in (("three", 3.0), ("zero", 0.0), ("six", 6.0)))
        sixth = self.constant(f"{n}/sixth", 1.0 / 6.0)
        make = self.helper.make_node
        return [
            make("Add", [x, three], [f"{n}/plus3"], name=f"{n}/add"),
            make("Clip", [f"{n}/plus3", zero, six], [f"{n}/relu6"], name=f"{n}/clip"),
            make("Mul", [x, f"{n}/relu6"], [f"{n}/x_relu6"], name=f"{n}/mul"),
            make("Mul", [f"{n}/x_relu6", sixth], [y], name=f"{n}/scale"),
        ]

    def average_pool(self, node) -> list | None:
        from .tflite_graph import _factors

        a, shape = _attrs(node), self.shapes.get(node.input[0], [])
        kernel = list(a.get("kernel_shape", []))
        if (
            len(kernel) != 2
            or list(a.get("strides", [1, 1])) != kernel
            or any(a.get("pads", [0]))
            or a.get("ceil_mode", 0)
            or len(shape) != 4
            or not shape[1]
        ):
            return None
        hs, ws = _factors(kernel[0]), _factors(kernel[1])
        stages = max(len(hs), len(ws))
        hs, ws = hs + [1] * (stages - len(hs)), ws + [1] * (stages - len(ws))
        x, out, channels = node.input[0], [], shape[1]
        for i, (kh, kw) in enumerate(zip(hs, ws)):
            y = node.output[0] if i == stages - 1 else f"{node.name}/stage{i}"
            w = self.constant(f"{node.name}/weight{i}", np.full((channels, 1, kh, kw), 1.0 / (kh * kw)))
            out.append(
                self.helper.make_node(
                    "Conv",
                    [x, w],
                    [y],
                    name=f"{node.name}/conv{i}",
                    group=channels,
                    kernel_shape=[kh, kw],
                    strides=[kh, kw],
                )
            )
            x = y
        return out or None

    def _constant_value(self, name: str):
        from onnx import numpy_helper

        found = _initializer(self.model, name)
        return [] if found is None else numpy_helper.to_array(found).reshape(-1).tolist()


REWRITES = {"ReduceMean": "reduce_mean", "HardSwish": "hard_swish", "AveragePool": "average_pool"}
# Ops through which a tensor scaled by a constant stays scaled by it (input 0; Mul either input).
_LINEAR = {"GlobalAveragePool", "AveragePool", "ReduceMean", "Reshape", "Flatten", "Mul"}


def _shapes(model) -> dict[str, list]:
    """tensor -> its inferred shape (None for a dimension onnx cannot infer)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model).graph
    return {
        v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        for v in list(inferred.value_info) + list(inferred.input)
    }


def _initializer(model, name: str):
    return next((i for i in model.graph.initializer if i.name == name), None)


def _add_constant(model, name: str, value) -> str:
    from onnx import numpy_helper

    model.graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
    return name


def _readers(model) -> dict[str, list]:
    """tensor -> [(node, input index)] of the nodes reading it."""
    readers = collections.defaultdict(list)
    for node in model.graph.node:
        for k, t in enumerate(node.input):
            readers[t].append((node, k))
    return readers


def _own_initializer(model, readers, name: str):
    """The initializer ``name`` if no other node reads it (so it can be changed in place), else None."""
    return _initializer(model, name) if name and len(readers[name]) == 1 else None


def _scaled_weights(model, tensor: str) -> list | None:
    """The weight initializers (input 1) of the Conv and Gemm nodes ``tensor`` reaches through
    linear ops only, each read by that one node; None if it reaches anything else."""
    readers = _readers(model)
    outputs = {o.name for o in model.graph.output}
    weights, seen, todo = [], set(), [tensor]
    while todo:
        t = todo.pop()
        if t in outputs or not readers[t]:
            return None
        for node, k in readers[t]:
            if id(node) in seen:
                return None
            seen.add(id(node))
            w = node.input[1] if len(node.input) > 1 else ""
            weight = _initializer(model, w)
            gemm_ok = node.op_type != "Gemm" or _attrs(node).get("transA", 0) == 0
            if node.op_type in ("Conv", "Gemm") and k == 0 and gemm_ok and len(readers[w]) == 1 and weight is not None:
                weights.append(weight)
            elif node.op_type in _LINEAR and (k == 0 or node.op_type == "Mul"):
                todo.append(node.output[0])
            else:
                return None
    return weights


def fold_scales(model) -> int:
    """Each Mul by a scalar constant (h-swish's 1/6 above) whose result reaches only Conv and Gemm
    nodes through linear ops is dropped, and the constant multiplies their weights instead."""
    from onnx import numpy_helper

    folded = 0
    for node in list(model.graph.node):
        c = _initializer(model, node.input[1]) if node.op_type == "Mul" and len(node.input) == 2 else None
        if c is None or numpy_helper.to_array(c).size != 1 or _initializer(model, node.input[0]) is not None:
            continue
        weights = _scaled_weights(model, node.output[0])
        if weights is None:
            continue
        factor = numpy_helper.to_array(c).reshape(()).astype(np.float32)
        for w in weights:
            w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * factor, w.name))
        model.graph.node.remove(node)
        for other in model.graph.node:
            for k, t in enumerate(other.input):
                if t == node.output[0]:
                    other.input[k] = node.input[0]
        folded += 1
    return folded


_SE_ACTIVATIONS = {"Relu", "Clip", "HardSigmoid", "Sigmoid"}


def _gemm_constants(model, readers, node) -> tuple | None:
    """(weight, bias or None) of a Conv, or of a Gemm that is a 1x1 Conv (transA 0, alpha = beta = 1),
    whose constant weight and bias it alone reads (so they may be changed); else None."""
    a = _attrs(node)
    weight = _own_initializer(model, readers, node.input[1])
    has_bias = len(node.input) > 2 and bool(node.input[2])
    bias = _own_initializer(model, readers, node.input[2]) if has_bias else None
    if (
        weight is None
        or (has_bias and bias is None)
        or a.get("transA", 0)
        or a.get("alpha", 1.0) != 1.0
        or a.get("beta", 1.0) != 1.0
    ):
        return None
    return weight, bias


def _gemm_to_conv(node, weight, bias) -> None:
    from onnx import numpy_helper

    w = numpy_helper.to_array(weight)
    w = w if _attrs(node).get("transB", 0) else w.T
    weight.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w)[:, :, None, None], weight.name))
    if bias is not None:
        bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias).reshape(-1), bias.name))
    node.op_type = "Conv"
    del node.attribute[:]


def _se_chain(readers, shapes, head) -> tuple[list, object] | None:
    """The Gemm/activation nodes between Reshape ``head`` ([N, C, 1, 1] -> [N, C]) and the Reshape
    that restores [N, C', 1, 1], and that Reshape; None if ``head`` does not start such a chain."""
    if shapes.get(head.input[0], [])[2:] != [1, 1] or len(shapes.get(head.output[0], [])) != 2:
        return None
    chain, t = [], head.output[0]
    while len(readers[t]) == 1 and readers[t][0][1] == 0:
        node = readers[t][0][0]
        if node.op_type == "Reshape":
            tail_shape = shapes.get(node.output[0], [])
            return (chain, node) if len(tail_shape) == 4 and tail_shape[2:] == [1, 1] else None
        if node.op_type != "Gemm" and node.op_type not in _SE_ACTIVATIONS:
            return None
        chain.append(node)
        t = node.output[0]
    return None


def squeeze_excite_as_conv(model) -> int:
    """Each Reshape-Gemm-...-Reshape chain on a pooled [N, C, 1, 1] map (squeeze-excite's Linear
    layers) computed on the 4-D map, the Gemms as 1x1 Convs; returns how many chains."""
    shapes, done = _shapes(model), 0
    for head in [n for n in model.graph.node if n.op_type == "Reshape"]:
        readers = _readers(model)
        found = _se_chain(readers, shapes, head)
        if found is None:
            continue
        chain, tail = found
        gemms = {id(n): (n, _gemm_constants(model, readers, n)) for n in chain if n.op_type == "Gemm"}
        if not gemms or any(c is None for _, c in gemms.values()):
            continue
        for node, constants in gemms.values():
            _gemm_to_conv(node, *constants)
        chain[0].input[0], chain[-1].output[0] = head.input[0], tail.output[0]
        stale = {n.output[0] for n in chain}
        kept = [v for v in model.graph.value_info if v.name not in stale]
        del model.graph.value_info[:]
        model.graph.value_info.extend(kept)
        for node in (head, tail):
            model.graph.node.remove(node)
        done += 1
    return done


def fold_hard_sigmoid(model) -> int:
    """Each HardSigmoid that alone reads a Conv's or Gemm's output: its alpha and beta folded into
    that node's weight and bias, itself a Clip to [0, 1]; returns how many."""
    from onnx import numpy_helper

    readers, done = _readers(model), 0
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in [n for n in model.graph.node if n.op_type == "HardSigmoid"]:
        p = producers.get(node.input[0])
        if p is None or p.op_type not in ("Conv", "Gemm") or len(readers[node.input[0]]) != 1:
            continue
        constants = _gemm_constants(model, readers, p)  # a Conv's weight and bias are its inputs 1, 2 too
        if constants is None:
            continue
        weight, bias = constants
        a = _attrs(node)
        alpha, beta = np.float32(a.get("alpha", 0.2)), np.float32(a.get("beta", 0.5))
        w = numpy_helper.to_array(weight)
        out = w.shape[0] if p.op_type == "Conv" or _attrs(p).get("transB", 0) else w.shape[1]
        b = numpy_helper.to_array(bias).reshape(-1) if bias is not None else np.zeros(out, np.float32)
        weight.CopyFrom(numpy_helper.from_array(w * alpha, weight.name))
        if bias is None:
            p.input.append(_add_constant(model, f"{node.name}/bias", b * alpha + beta))
        else:
            bias.CopyFrom(numpy_helper.from_array(b * alpha + beta, bias.name))
        node.op_type = "Clip"
        del node.attribute[:]
        node.input.extend(
            [_add_constant(model, f"{node.name}/zero", 0.0), _add_constant(model, f"{node.name}/one", 1.0)]
        )
        done += 1
    return done


STEPS = (*REWRITES, "squeeze_excite", "hard_sigmoid", "fold_scales")


def rewrite_onnx(model, steps=STEPS) -> dict[str, int]:
    """Apply ``steps`` (op types of REWRITES, then the graph passes "squeeze_excite",
    "hard_sigmoid" and "fold_scales") to ``model`` in place; returns how many of each were done."""
    r, done, nodes = _Rewriter(model), collections.Counter(), []
    for node in model.graph.node:
        replacement = getattr(r, REWRITES[node.op_type])(node) if node.op_type in steps else None
        if replacement is None:
            nodes.append(node)
        else:
            nodes.extend(replacement)
            done[node.op_type] += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    passes = {"squeeze_excite": squeeze_excite_as_conv, "hard_sigmoid": fold_hard_sigmoid, "fold_scales": fold_scales}
    for step, run in passes.items():
        if step in steps:
            done[step] = run(model)
    _drop_unused_initializers(model)
    return {k: v for k, v in done.items() if v}


def _drop_unused_initializers(model) -> None:
    """Constants no node reads any more (folded scales, the dropped Reshapes' shapes): onnxruntime
    would warn about each one on every session it opens."""
    used = {t for node in model.graph.node for t in node.input} | {o.name for o in model.graph.output}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
