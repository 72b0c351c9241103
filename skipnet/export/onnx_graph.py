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
        inferred = onnx.shape_inference.infer_shapes(model).graph
        self.shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
                       for v in list(inferred.value_info) + list(inferred.input)}

    def constant(self, name: str, value) -> str:
        from onnx import numpy_helper

        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

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
        return [make("Add", [x, three], [f"{n}/plus3"], name=f"{n}/add"),
                make("Clip", [f"{n}/plus3", zero, six], [f"{n}/relu6"], name=f"{n}/clip"),
                make("Mul", [x, f"{n}/relu6"], [f"{n}/x_relu6"], name=f"{n}/mul"),
                make("Mul", [f"{n}/x_relu6", sixth], [y], name=f"{n}/scale")]

    def average_pool(self, node) -> list | None:
        from .tflite_graph import _factors

        a, shape = _attrs(node), self.shapes.get(node.input[0], [])
        kernel = list(a.get("kernel_shape", []))
        if (len(kernel) != 2 or list(a.get("strides", [1, 1])) != kernel or any(a.get("pads", [0]))
                or a.get("ceil_mode", 0) or len(shape) != 4 or not shape[1]):
            return None
        hs, ws = _factors(kernel[0]), _factors(kernel[1])
        stages = max(len(hs), len(ws))
        hs, ws = hs + [1] * (stages - len(hs)), ws + [1] * (stages - len(ws))
        x, out, channels = node.input[0], [], shape[1]
        for i, (kh, kw) in enumerate(zip(hs, ws)):
            y = node.output[0] if i == stages - 1 else f"{node.name}/stage{i}"
            w = self.constant(f"{node.name}/weight{i}", np.full((channels, 1, kh, kw), 1.0 / (kh * kw)))
            out.append(self.helper.make_node("Conv", [x, w], [y], name=f"{node.name}/conv{i}", group=channels,
                                             kernel_shape=[kh, kw], strides=[kh, kw]))
            x = y
        return out or None

    def _constant_value(self, name: str):
        from onnx import numpy_helper

        found = _initializer(self.model, name)
        return [] if found is None else numpy_helper.to_array(found).reshape(-1).tolist()


REWRITES = {"ReduceMean": "reduce_mean", "HardSwish": "hard_swish", "AveragePool": "average_pool"}
# Ops through which a tensor scaled by a constant stays scaled by it (input 0; Mul either input).
_LINEAR = {"GlobalAveragePool", "AveragePool", "ReduceMean", "Reshape", "Flatten", "Mul"}


def _initializer(model, name: str):
    return next((i for i in model.graph.initializer if i.name == name), None)


def _scaled_weights(model, tensor: str) -> list | None:
    """The weight initializers (input 1) of the Conv and Gemm nodes ``tensor`` reaches through
    linear ops only, each read by that one node; None if it reaches anything else."""
    readers = collections.defaultdict(list)
    for node in model.graph.node:
        for k, t in enumerate(node.input):
            readers[t].append((node, k))
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


def rewrite_onnx(model, ops=tuple(REWRITES)) -> dict[str, int]:
    """Apply the rewrites of ``ops`` (op types) to ``model`` in place; returns how many of each."""
    r, done, nodes = _Rewriter(model), collections.Counter(), []
    for node in model.graph.node:
        replacement = getattr(r, REWRITES[node.op_type])(node) if node.op_type in ops else None
        if replacement is None:
            nodes.append(node)
        else:
            nodes.extend(replacement)
            done[node.op_type] += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    done["scales_folded"] = fold_scales(model)
    return {k: v for k, v in done.items() if v}
