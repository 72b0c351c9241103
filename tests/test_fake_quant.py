"""FakeQuantGraph: the int8 .tflite run in PyTorch is the file (its float mode is the PyTorch model,
its fake-quantised mode agrees with LiteRT), and its ranges give the quantiser back the file's scales."""

import numpy as np
import pytest
import torch
from conftest import binomial_floor, needs_fmnist

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_quantizer")

from skipnet.data import build_datasets, sample_pixels  # noqa: E402
from skipnet.export.fake_quant import FakeQuantGraph  # noqa: E402
from skipnet.export.tflite_convert import export_tflite, quantize_tflite_int8  # noqa: E402
from skipnet.export.tflite_graph import load_model, rewrite_graph  # noqa: E402
from skipnet.models import PixelModel, load_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def graphs(folder_run, small_folder, tmp_path_factory):
    """folder_run (a trained 3-class model at 64x64) as the QAT path builds it: float, rewritten
    float and PTQ int8 graphs, and 200 validation images."""
    tmp = tmp_path_factory.mktemp("fake_quant")
    model, cfg = load_checkpoint(folder_run)
    train, val, _ = build_datasets("imagefolder", str(small_folder), 64, augment=False)
    calibration = sample_pixels(train.source, cfg["preprocess"], 64)[0]
    pixels, labels = sample_pixels(val.source, cfg["preprocess"], 200)
    pixel_model = PixelModel(model, cfg["mean"], cfg["std"], "nhwc", probabilities=True).eval()
    export_tflite(pixel_model, 64, tmp / "float.tflite")
    rewrite_graph(tmp / "float.tflite", tmp / "fast.tflite", float_min_height=32)
    quantize_tflite_int8(tmp / "fast.tflite", calibration, tmp / "int8.tflite", graph="stock")
    return {"dir": tmp, "model": PixelModel(model, cfg["mean"], cfg["std"], "nhwc").eval(), "pixels": pixels}


def _file_top1(path, pixels):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    answers = []
    for image in pixels:  # the int8 graph before uint8_input: int8 pixels, zero point -128
        it.set_tensor(inp["index"], (image[None].astype(np.int16) - 128).astype(np.int8))
        it.invoke()
        answers.append(int(it.get_tensor(out["index"]).argmax()))
    return np.array(answers)


@needs_fmnist
def test_float_mode_is_the_pytorch_model_and_fake_quant_mode_is_the_file(graphs):
    d, x = graphs["dir"], torch.from_numpy(graphs["pixels"]).float()
    g = FakeQuantGraph(d / "int8.tflite", d / "fast.tflite")
    with torch.no_grad():
        expected = graphs["model"](x)
        g.quantize = False
        assert (g(x) - expected).abs().max().item() < 1e-3  # BatchNorm folded by the converter, same function
        g.quantize = True
        fake = g(x).argmax(1).numpy()
    # The same int8 arithmetic; a float sum in another order can round one value to the next int8 step,
    # which flips a near tie: 98.5-100% agreement across make test-matrix's cells, held to 5 binomial
    # standard errors below 99% (a wrong scale or op would disagree on a large share).
    agree = (fake == _file_top1(d / "int8.tflite", graphs["pixels"])).mean()
    assert agree >= binomial_floor(0.99, len(fake)), agree
    assert len(list(g.parameters())) > 20  # every conv and linear layer's weight and bias is trainable


@needs_fmnist
def test_ranges_give_the_quantiser_back_the_files_scales(graphs, tmp_path):
    d = graphs["dir"]
    g = FakeQuantGraph(d / "int8.tflite", d / "fast.tflite")
    quantize_tflite_int8(d / "fast.tflite", None, tmp_path / "again.tflite", graph="stock", ranges=g.ranges())

    def scales(path):
        graph = load_model(path).subgraphs[0]
        return {
            t.name: (float(t.quantization.scale[0]), int(t.quantization.zeroPoint[0]))
            for t in graph.tensors
            if t.quantization is not None and t.quantization.scale is not None and len(t.quantization.scale) == 1
        }

    before, after = scales(d / "int8.tflite"), scales(tmp_path / "again.tflite")
    assert before.keys() == after.keys() and len(before) > 50
    assert all(after[k][1] == before[k][1] and after[k][0] == pytest.approx(before[k][0], rel=1e-6) for k in before)
