"""ONNX graph rewrites before int8 quantisation, on real torch.onnx output run by onnxruntime: each
computes the same function in float."""

import collections

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from skipnet.export.onnx_export import export_onnx  # noqa: E402
from skipnet.export.onnx_graph import rewrite_onnx  # noqa: E402
from skipnet.models import PixelModel  # noqa: E402

CONFIG = {"model": "tiny", "class_names": [str(i) for i in range(5)], "preprocess": {}}


class Tiny(nn.Module):
    """conv -> h-swish -> 8x8 pool -> conv -> h-swish -> squeeze-excite -> residual add -> linear."""

    def __init__(self):
        super().__init__()
        self.conv, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1)
        self.fc1, self.fc2, self.fc = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1), nn.Linear(8, 5)
        self.pool = nn.AvgPool2d(8, 8)

    def forward(self, x):
        x = self.pool(nn.functional.hardswish(self.conv(x)))
        y = nn.functional.hardswish(self.conv2(x))
        gate = nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(y.mean((2, 3), keepdim=True)))))
        return self.fc((x + y * gate).mean((2, 3)))


def _run(model_proto, x):
    session = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"pixels": x})[0]


def test_rewrites_keep_the_float_function(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.onnx"
    export_onnx(PixelModel(Tiny().eval(), [0.5] * 3, [0.25] * 3, "nchw").eval(), 16, path, CONFIG)
    before = onnx.load(str(path))
    model = onnx.load(str(path))
    done = rewrite_onnx(model)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    # the first h-swish's 1/6 reaches the pool's convolutions and is folded into them; the second's
    # reaches a residual Add and stays a Mul
    assert done == {"HardSwish": 2, "AveragePool": 1, "ReduceMean": 1, "hard_sigmoid": 1, "fold_scales": 1}, done
    assert not {"HardSwish", "AveragePool", "HardSigmoid"} & set(ops), ops
    # squeeze-excite's mean keeps its dims: a GlobalAveragePool; the last one (to the Linear) does not
    assert ops["GlobalAveragePool"] == 1 and ops["ReduceMean"] == 1 and ops["Clip"] == 3
    onnx.checker.check_model(model)
    x = np.random.default_rng(0).uniform(0, 255, (4, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(_run(model, x), _run(before, x), rtol=1e-4, atol=1e-4)


class WithSqueezeExcite(nn.Module):
    """SkipNet's squeeze-excite (Linear layers on the pooled vector, h-sigmoid gate), with biases."""

    def __init__(self):
        super().__init__()
        from skipnet.models.skipnet import SqueezeExcite

        self.conv, self.se, self.fc = nn.Conv2d(3, 16, 3, padding=1), SqueezeExcite(16), nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.se(torch.relu(self.conv(x))).mean((2, 3)))


def test_squeeze_excite_runs_as_convolutions_on_the_pooled_map(tmp_path):
    torch.manual_seed(0)
    net = WithSqueezeExcite().eval()
    for p in net.se.parameters():  # nonzero biases, as a trained network has (the exporter drops zero ones)
        torch.nn.init.uniform_(p, -0.5, 0.5)
    path = tmp_path / "se.onnx"
    export_onnx(PixelModel(net, [0.5] * 3, [0.25] * 3, "nchw").eval(), 16, path, CONFIG)
    before, model = onnx.load(str(path)), onnx.load(str(path))
    done = rewrite_onnx(model)
    assert done == {"ReduceMean": 1, "squeeze_excite": 1, "hard_sigmoid": 1}, done
    ops = collections.Counter(n.op_type for n in model.graph.node)
    # the classifier's Linear stays a Gemm; the squeeze-excite has no Reshape or HardSigmoid left
    assert ops["Gemm"] == 1 and ops["Conv"] == 3 and not {"HardSigmoid", "Reshape"} & set(ops), ops
    read = {t for n in model.graph.node for t in n.input}
    assert all(i.name in read for i in model.graph.initializer)  # no constant left over from the rewrites
    onnx.checker.check_model(model)
    x = np.random.default_rng(0).uniform(0, 255, (4, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(_run(model, x), _run(before, x), rtol=1e-4, atol=1e-4)
