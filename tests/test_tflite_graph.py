"""Graph surgery on real converter output: every rewrite computes the same function in float."""

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("litert_torch")

from skipnet.export.tflite_convert import export_tflite, quantization_of, quantize_tflite_int8  # noqa: E402
from skipnet.export.tflite_graph import _factors, float_ops, op_census, rewrite_graph, uint8_input  # noqa: E402
from skipnet.models import PixelModel  # noqa: E402


class Tiny(nn.Module):
    """conv -> h-swish -> 8x8 average pool (kernel = stride, as SkipNet's skip blocks) -> h-swish -> mean -> linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AvgPool2d(8, 8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.pool(nn.functional.hardswish(self.conv(x)))
        return self.fc(nn.functional.hardswish(x).mean((2, 3), keepdim=True).flatten(1))


def _run(path, x):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    if inp["quantization"][0]:
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / inp["quantization"][0] + inp["quantization"][1]), info.min, info.max)
    it.set_tensor(inp["index"], x.astype(inp["dtype"]))
    it.invoke()
    y = it.get_tensor(out["index"]).astype(np.float32)
    return (y - out["quantization"][1]) * out["quantization"][0] if out["quantization"][0] else y


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    torch.manual_seed(0)
    model = PixelModel(Tiny().eval(), [0.5, 0.4, 0.3], [0.2, 0.25, 0.3], "nhwc").eval()
    path = tmp_path_factory.mktemp("graph") / "tiny.tflite"
    export_tflite(model, 16, path, optimize=False)
    pixels = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3)).astype(np.float32)
    return path, pixels


def test_factors_split_kernels_into_small_stages():
    assert _factors(8) == [4, 2] and _factors(16) == [4, 4] and _factors(4) == [4]
    assert _factors(6) == [3, 2] and _factors(7) == [7] and _factors(1) == []


def test_rewrites_keep_the_float_function(converted, tmp_path):
    path, pixels = converted
    before = op_census(path)
    assert before["HARD_SWISH"] == 2 and before["AVERAGE_POOL_2D"] == 1 and before["MUL"] >= 1
    out = tmp_path / "rw.tflite"
    done = rewrite_graph(path, out)
    assert done == {"HARD_SWISH": 2, "AVERAGE_POOL_2D": 1, "input_affine": 1, "scales_folded": 2}
    after = op_census(out)
    assert "HARD_SWISH" not in after and "AVERAGE_POOL_2D" not in after
    # 1x1 normalisation + two pool stages (4x4 then 2x2); each h-swish is ADD(relu6) then MUL, its
    # 1/6 folded into the weights it reaches (the first pool stage; through the mean, the linear layer)
    assert after["DEPTHWISE_CONV_2D"] == 3 and after["ADD"] == 2 and after["MUL"] == 2
    for i in range(len(pixels)):
        np.testing.assert_allclose(_run(out, pixels[i : i + 1]), _run(path, pixels[i : i + 1]), rtol=1e-5, atol=1e-5)


def test_float_prefix_keeps_hard_swish_and_only_high_resolution_ops_float(converted, tmp_path):
    path, pixels = converted
    out = tmp_path / "prefix.tflite"
    done = rewrite_graph(path, out, float_min_height=16)
    # conv, h-swish, pool stay float
    assert done == {"HARD_SWISH": 1, "input_affine": 1, "float_ops": 4, "scales_folded": 1}
    q = tmp_path / "int8.tflite"
    quantize_tflite_int8(out, pixels.astype(np.uint8), q, graph="stock")
    islands = float_ops(q)
    # ops reading or writing 16 // 2 = 8-pixel maps or larger: the normalisation, conv, h-swish and pool
    assert islands == [
        ("DEPTHWISE_CONV_2D", [1, 16, 16, 3]),
        ("CONV_2D", [1, 16, 16, 8]),
        ("HARD_SWISH", [1, 16, 16, 8]),
        ("AVERAGE_POOL_2D", [1, 2, 2, 8]),
    ], islands
    ref = np.concatenate([_run(path, pixels[i : i + 1]) for i in range(len(pixels))])
    got = np.concatenate([_run(q, pixels[i : i + 1]) for i in range(len(pixels))])
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max() + 0.05  # int8 rounding, not a different function


class Residual(nn.Module):
    """An h-swish read by a convolution and by the residual ADD after it: its 1/6 cannot be folded."""

    def __init__(self):
        super().__init__()
        self.conv, self.conv2, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1), nn.Linear(8, 5)

    def forward(self, x):
        y = nn.functional.hardswish(self.conv(x))
        return self.fc((y + self.conv2(y)).mean((2, 3)))


def test_a_scale_reaching_an_add_stays_a_mul(tmp_path):
    torch.manual_seed(0)
    path, out = tmp_path / "res.tflite", tmp_path / "rw.tflite"
    export_tflite(PixelModel(Residual().eval(), [0.5] * 3, [0.25] * 3, "nhwc").eval(), 16, path, optimize=False)
    assert rewrite_graph(path, out, fold_affine=False) == {"HARD_SWISH": 1}
    assert op_census(out)["MUL"] == op_census(path).get("MUL", 0) + 2  # x * relu6(x + 3), then * 1/6
    pixels = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3)).astype(np.float32)
    for i in range(len(pixels)):
        np.testing.assert_allclose(_run(out, pixels[i : i + 1]), _run(path, pixels[i : i + 1]), rtol=1e-5, atol=1e-5)


def test_shipped_int8_graphs_from_uint8_pixels(converted, tmp_path):
    path, pixels = converted
    shipped, full, stock = tmp_path / "shipped.tflite", tmp_path / "full.tflite", tmp_path / "stock.tflite"
    quantize_tflite_int8(path, pixels.astype(np.uint8), shipped)  # skipnet-export --int8
    quantize_tflite_int8(path, pixels.astype(np.uint8), full, full_integer=True)  # ... --full-integer
    quantize_tflite_int8(path, pixels.astype(np.uint8), stock, graph="stock")
    for fast in (shipped, full):
        assert quantization_of(fast)["input"] == {"dtype": "uint8", "scale": 1.0, "zero_point": 0}
        assert quantization_of(fast)["output"]["dtype"] == "int8"
    assert quantization_of(stock)["input"] == {"dtype": "int8", "scale": 1.0, "zero_point": -128}
    # by default the ops on maps at least half the input's height stay float (the h-swish as it is)
    assert float_ops(shipped) == [
        ("DEPTHWISE_CONV_2D", [1, 16, 16, 3]),
        ("CONV_2D", [1, 16, 16, 8]),
        ("HARD_SWISH", [1, 16, 16, 8]),
        ("AVERAGE_POOL_2D", [1, 2, 2, 8]),
    ]
    assert float_ops(full) == []  # no softmax in this model: nothing float at all
    census = op_census(full)
    assert census["QUANTIZE"] == census["DEQUANTIZE"] == 1  # uint8 -> float -> int8 in, int8 out
    ref = np.concatenate([_run(path, pixels[i : i + 1]) for i in range(len(pixels))])
    for fast in (shipped, full):
        got = np.concatenate([_run(fast, pixels[i : i + 1]) for i in range(len(pixels))])
        assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max() + 0.05


def _tensors(path, x=None):
    """name -> (value, scales, zero points) of every tensor of a .tflite after running ``x``."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    if x is not None:
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
    out = {}
    for t in it.get_tensor_details():
        q = t["quantization_parameters"]
        try:
            out[t["name"]] = (it.get_tensor(t["index"]), q["scales"], q["zero_points"])
        except ValueError:  # a tensor the interpreter does not keep
            continue
    return out


def test_calibration_ranges_cover_every_calibration_image(converted, tmp_path):
    """Each int8 activation can represent every value the float graph computes on the calibration
    images, whichever image comes first: one bright image among many dark ones is not clipped
    (a moving average of per-image ranges forgets it after a few dozen images)."""
    path, _ = converted
    rng = np.random.default_rng(2)
    pixels = np.concatenate([np.full((1, 16, 16, 3), 255), rng.integers(0, 48, (48, 16, 16, 3))]).astype(np.uint8)
    int8 = tmp_path / "int8.tflite"
    quantize_tflite_int8(path, pixels, int8, graph="stock")
    seen: dict[str, tuple[float, float]] = {}
    for i in range(len(pixels)):
        for name, (v, _, _) in _tensors(path, pixels[i : i + 1].astype(np.float32)).items():
            lo, hi = seen.get(name, (np.inf, -np.inf))
            seen[name] = min(lo, float(v.min())), max(hi, float(v.max()))
    checked = 0
    for name, (_, scales, zps) in _tensors(int8).items():
        if name in seen and len(scales) == 1 and name != "serving_default_args_0:0":
            lo, hi = seen[name]
            step = float(scales[0])
            assert (127 - zps[0]) * step >= hi - step and (-128 - zps[0]) * step <= lo + step, name
            checked += 1
    assert checked >= 5


def test_uint8_input_retypes_or_quantizes(converted, tmp_path):
    path, pixels = converted
    prefix, stock = tmp_path / "prefix.tflite", tmp_path / "stock.tflite"
    rewrite_graph(path, tmp_path / "p.tflite", float_min_height=16)
    quantize_tflite_int8(tmp_path / "p.tflite", pixels.astype(np.uint8), prefix, graph="stock")
    quantize_tflite_int8(path, pixels.astype(np.uint8), stock, graph="stock")
    for src, readers in ((prefix, "DEQUANTIZE"), (stock, "an int8 op")):
        out = tmp_path / f"u8_{src.name}"
        uint8_input(src, out)
        assert quantization_of(out)["input"] == {"dtype": "uint8", "scale": 1.0, "zero_point": 0}
        added = op_census(out).get("QUANTIZE", 0) - op_census(src).get("QUANTIZE", 0)
        assert added == (0 if readers == "DEQUANTIZE" else 1), readers  # retyped, or a QUANTIZE in front
        # the same real values in: uint8 v and int8 v - 128 give the same outputs
        for i in range(3):
            np.testing.assert_array_equal(_run(out, pixels[i : i + 1]), _run(src, pixels[i : i + 1]))
