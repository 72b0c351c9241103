"""ONNX and TFLite export and the runtime predictor, with the real converters and onnxruntime on real
Fashion-MNIST images."""

import collections
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import binomial_floor, needs_fmnist

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from skipnet.common import UserError  # noqa: E402
from skipnet.common.contract import QAT_LR  # noqa: E402
from skipnet.export import export  # noqa: E402
from skipnet.export.cli import held_out_line  # noqa: E402
from skipnet.export.cli import main as export_main  # noqa: E402
from skipnet.export.qat import keep  # noqa: E402
from skipnet.export.tflite_graph import float_ops, op_census  # noqa: E402
from skipnet.models import count_macs, create_model  # noqa: E402
from skipnet.runtime import ModelLoadError, load  # noqa: E402
from skipnet.runtime.cli import predict_main  # noqa: E402


@pytest.fixture(scope="module")
def onnx_export(small_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("exports") / "xs.onnx"
    return export(small_run, "onnx", path, verify_samples=128)


@needs_fmnist
def test_onnx_export_parity_and_metadata(onnx_export, small_run):
    r = onnx_export
    assert r.parity["passed"] and r.parity["images"] == 128
    assert r.parity["max_abs_logit_diff"] <= 1e-3 and r.parity["top1_agreement"] == 1.0
    model = onnx.load(str(r.path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    meta = {p.key: p.value for p in model.metadata_props}
    cfg = json.loads((small_run / "config.json").read_text())
    assert json.loads(meta["labels"]) == cfg["class_names"]
    assert json.loads(meta["preprocess"]) == cfg["preprocess"]
    side = json.loads(r.sidecar.read_text())
    assert r.sidecar.name == "xs.onnx.json"  # NAME.tflite and NAME.onnx of one run keep separate sidecars
    assert side["format"] == "onnx" and side["precision"] == "float32" and side["parity"]["passed"]
    assert side["input"]["layout"] == "NCHW" and side["input"]["range"] == [0, 255]
    assert not [p for p in r.path.parent.iterdir() if p.name.endswith(".tmp")]


def _real_images(n=40):
    """Raw 28x28 uint8 Fashion-MNIST test images, as an app would pass them."""
    from skipnet.data import build_datasets

    _, val, _ = build_datasets("fashion-mnist")
    return [np.asarray(val.source[i][0]) for i in range(n)]


def _top1(model_path, images):
    return [p.indices[0] for p in load(model_path).predict(images, top_k=1)]


@needs_fmnist
def test_predictor_same_top1_as_pytorch_on_real_images(onnx_export, small_run):
    images = _real_images()
    torch_pred = load(small_run).predict(images, top_k=3)
    onnx_pred = load(onnx_export.path).predict(images, top_k=3)
    assert [p.indices[0] for p in torch_pred] == [p.indices[0] for p in onnx_pred]
    assert all(abs(a.probs[0] - b.probs[0]) < 1e-4 for a, b in zip(torch_pred, onnx_pred))
    assert onnx_pred[0].labels[0] in load(onnx_export.path).labels
    # a batch-1 file (the default) is fed a batch of 3 one image at a time
    pixels = load(onnx_export.path).prepare(images[:3])
    assert pixels.shape == (3, 32, 32, 3) and pixels.dtype == np.uint8
    assert load(onnx_export.path).backend.batch == 1 and load(onnx_export.path).logits(pixels).shape == (3, 10)


@needs_fmnist
def test_predict_cli_prints_top5(onnx_export, tmp_path):
    from PIL import Image

    img = tmp_path / "x.png"
    Image.fromarray((np.arange(28 * 28) % 255).astype(np.uint8).reshape(28, 28)).save(img)
    r = subprocess.run(
        [sys.executable, "-m", "skipnet.runtime", str(onnx_export.path), str(img)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == str(img) and len(lines) == 6 and lines[1].strip().endswith(tuple(load(onnx_export.path).labels))


@pytest.fixture(scope="module")
def onnx_int8_export(small_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("exports") / "xs_int8.onnx"
    return export(small_run, "onnx", path, int8=True, verify_samples=64, calibration_samples=64)


def _mobile_checker(path) -> dict[str, tuple[int, str]]:
    """onnxruntime's own mobile checker on ``path``, as its command prints it: execution provider ->
    (partitions, "supported/all" nodes) of the file as it is."""
    import re

    r = subprocess.run(
        [sys.executable, "-m", "onnxruntime.tools.check_onnx_model_mobile_usability", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    found = {}
    for m in re.finditer(r"(\d+) partitions with a total of (\d+/\d+) nodes can be handled by the (.+) EP\.", r.stderr):
        found.setdefault(m[3], (int(m[1]), m[2]))  # the first line per provider is the file as it is
    assert set(found) == {"NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram"}, r.stderr
    return found


def _sidecar_mobile(result) -> dict[str, tuple[int, str]]:
    mobile = json.loads(result.sidecar.read_text())["mobile"]
    names = {"nnapi": "NNAPI", "coreml_neuralnetwork": "CoreML NeuralNetwork", "coreml_mlprogram": "CoreML MLProgram"}
    return {names[k]: (v["partitions"], v["nodes"]) for k, v in mobile.items() if k in names}


def _whole(partitions_nodes: tuple[int, str]) -> bool:
    partitions, nodes = partitions_nodes
    supported, everything = nodes.split("/")
    return partitions == 1 and supported == everything


@needs_fmnist
def test_onnx_files_for_phones_run_whole_on_their_execution_providers(onnx_export, onnx_int8_export):
    """The default batch-1 files, judged by onnxruntime's mobile checker: NNAPI takes the int8 file and
    CoreML MLProgram the float one, each whole in one partition; the sidecar records the same."""
    for r in (onnx_export, onnx_int8_export):
        side = json.loads(r.sidecar.read_text())
        assert side["input"]["batch"] == 1 and side["input"]["shape"] == [1, 3, 32, 32]
        assert [d.dim_value for d in onnx.load(str(r.path)).graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]
        assert _sidecar_mobile(r) == _mobile_checker(r.path)
    assert _whole(_sidecar_mobile(onnx_int8_export)["NNAPI"])
    assert _whole(_sidecar_mobile(onnx_export)["CoreML MLProgram"])
    nnapi = json.loads(onnx_export.sidecar.read_text())["mobile"]["nnapi"]
    # the float file's h-swish and h-sigmoid (as onnxruntime optimises them) are what NNAPI lacks
    assert nnapi["unsupported_ops"] == ["ai.onnx:HardSigmoid"] and nnapi["verdict"] == "NO", nnapi
    assert onnx_int8_export.parity["images"] == 64  # parity ran through the batch-1 file


@needs_fmnist
def test_onnx_batch_dynamic_and_fixed(small_run, onnx_export, tmp_path):
    """--batch dynamic: any batch in one run (for servers; no phone provider takes it); a fixed batch
    above 1 gets partial batches padded, and gives the batch-1 file's logits."""
    out = tmp_path / "dyn.onnx"
    assert (
        export_main([str(small_run), "--format", "onnx", "--batch", "dynamic", "--out", str(out), "--no-verify"]) == 0
    )
    side = json.loads((tmp_path / "dyn.onnx.json").read_text())
    assert side["input"]["batch"] == "dynamic" and side["input"]["shape"] == [-1, 3, 32, 32]
    assert onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert all(v["partitions"] == 0 for k, v in side["mobile"].items() if k != "checker"), side["mobile"]
    assert _mobile_checker(out)["NNAPI"] == (0, side["mobile"]["nnapi"]["nodes"])
    fixed = export(small_run, "onnx", tmp_path / "b3.onnx", batch=3, verify_samples=64)  # 64 = 21 x 3 + 1
    assert fixed.parity["passed"] and fixed.parity["max_abs_logit_diff"] <= 1e-3
    pixels = load(onnx_export.path).prepare(_real_images(7))
    one = load(onnx_export.path).logits(pixels)
    for path, batch in ((out, None), (fixed.path, 3)):
        assert load(path).backend.batch == batch
        np.testing.assert_allclose(load(path).logits(pixels), one, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "257", "9" * 40, "", " 1", "Dynamic", "1e3"])
def test_onnx_export_refuses_a_bad_batch(capsys, tmp_path, value):
    # checked before the run is read: this one does not exist
    _bad(
        capsys, export_main, [tmp_path / "run", "--format", "onnx", f"--batch={value}"], "--batch must be a batch size"
    )


def test_onnx_only_batch_refused_for_other_formats(capsys, tmp_path):
    for fmt in (["tflite"], ["tflite", "--int8"], ["coreml"], ["executorch"]):
        err = _bad(capsys, export_main, [tmp_path / "run", "--format", *fmt, "--batch", "1"], "--batch applies to")
        assert "--format onnx" in err
    with pytest.raises(UserError, match="--batch must be"):
        export(tmp_path / "run", "onnx", batch=True)


def _bad(capsys, main, args, match):
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and match in err, err
    return err


def test_export_bad_input(capsys, tmp_path):
    _bad(capsys, export_main, [tmp_path / "nope", "--format", "onnx"], "does not exist")
    _bad(capsys, export_main, [tmp_path, "--format", "pdf"], "invalid choice")


@needs_fmnist
def test_export_bad_input_on_a_run(capsys, small_run, tmp_path):
    _bad(capsys, export_main, [small_run, "--format", "onnx", "--img-size", "30", "--no-verify"], "multiple of 32")
    _bad(capsys, export_main, [small_run, "--format", "onnx", "--out", tmp_path / "m.tflite"], "should end in .onnx")
    assert not list(tmp_path.iterdir())


@needs_fmnist
@pytest.mark.parametrize(
    "blocked,args,extra",
    [
        ("litert_torch", ["--format", "tflite"], "tflite"),
        ("ai_edge_quantizer", ["--format", "tflite", "--int8"], "tflite"),
        ("onnxsim", ["--format", "onnx"], "onnx"),
        ("coremltools", ["--format", "coreml"], "coreml"),
    ],
)
def test_missing_optional_dependency_names_the_extra(blocked, args, extra, capsys, small_run, tmp_path, monkeypatch):
    if blocked != "litert_torch":  # loaded whole first: it imports ai_edge_quantizer and must not stay half-loaded
        from skipnet.export.tflite_convert import _import_litert_torch

        _import_litert_torch()
    monkeypatch.setitem(sys.modules, blocked, None)  # what an uninstalled package looks like to `import`
    out = tmp_path / ("m" + {"tflite": ".tflite", "onnx": ".onnx", "coreml": ".mlpackage"}[args[1]])
    _bad(
        capsys,
        export_main,
        [small_run, *args, "--out", out, "--calibration-samples", "8", "--verify-samples", "8"],
        f"pip install 'skipnet-deploy[{extra}]'",
    )
    assert not list(tmp_path.iterdir())


@needs_fmnist
def test_missing_calibration_data(capsys, small_run, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train-images-idx3-ubyte").write_bytes(b"")  # the labels and test files are missing
    out = tmp_path / "out"
    _bad(
        capsys,
        export_main,
        [small_run, "--format", "tflite", "--int8", "--data-dir", data, "--out", out / "m.tflite"],
        "lacks the Fashion-MNIST file(s)",
    )
    assert not out.exists()


@needs_fmnist
def test_load_refuses_corrupt_models(tmp_path, onnx_export, capsys):
    data = onnx_export.path.read_bytes()
    (tmp_path / "trunc.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
        load(tmp_path / "trunc.onnx")
    (tmp_path / "text.onnx").write_text("hello")
    with pytest.raises(ModelLoadError):
        load(tmp_path / "text.onnx")
    (tmp_path / "m.xyz").write_text("x")
    with pytest.raises(ModelLoadError, match="unknown model format"):
        load(tmp_path / "m.xyz")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load(tmp_path / "missing.onnx")
    _bad(capsys, predict_main, [onnx_export.path, tmp_path / "missing.png"], "does not exist")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    _bad(capsys, predict_main, [onnx_export.path, tmp_path / "bad.png"], "bad.png is not an image file")


# ---- TFLite (litert-torch converter, LiteRT interpreter) -------------------------------------


@pytest.fixture(scope="module")
def tflite_export(tflite_exports):
    return tflite_exports["float"]


@needs_fmnist
def test_tflite_float_export_parity_layout_and_ops(tflite_export, onnx_export, small_run):
    r = tflite_export
    assert r.parity["passed"] and r.parity["max_abs_logit_diff"] <= 1e-3 and r.parity["top1_agreement"] == 1.0
    side = json.loads(r.sidecar.read_text())
    assert side["input"]["layout"] == "NHWC" and side["input"]["shape"] == [1, 32, 32, 3]
    macs = side["complexity"]["macs"]  # ours (count_macs) and LiteRT's converter estimate agree within 3%
    assert macs == count_macs(create_model("skipnet_xs", 10), 32)
    assert abs(side["complexity"]["macs_litert"] / macs - 1) < 0.03
    predictor = load(r.path)
    ops = [op["op_name"] for op in predictor.backend.interpreter._get_ops_details()]
    assert "TRANSPOSE" not in ops and "CONV_2D" in ops  # the NHWC input needs no layout op
    assert ops[0] == "DEPTHWISE_CONV_2D" and "MUL" not in ops[:3]  # the normalisation as one 1x1 depthwise conv
    pixels = load(onnx_export.path).prepare([np.full((28, 28), v, np.uint8) for v in (0, 90, 200)])
    onnx_log_probs = torch.from_numpy(load(onnx_export.path).logits(pixels)).log_softmax(1).numpy()
    np.testing.assert_allclose(predictor.logits(pixels), onnx_log_probs, atol=1e-3)  # TFLite: probabilities out
    images = _real_images()
    assert _top1(r.path, images) == _top1(small_run, images)  # the predictor agrees with PyTorch


@needs_fmnist
def test_load_refuses_corrupt_tflite(tflite_export, tmp_path):
    data = tflite_export.path.read_bytes()
    config = json.loads(tflite_export.sidecar.read_text())
    (tmp_path / "trunc.tflite").write_bytes(data[: len(data) // 2])
    (tmp_path / "trunc.tflite.json").write_text(tflite_export.sidecar.read_text())
    with pytest.raises(ModelLoadError, match="describes another file"):  # the sidecar's size and sha256
        load(tmp_path / "trunc.tflite")
    with pytest.raises(ModelLoadError, match="not a loadable TFLite model"):  # the interpreter's own check
        load(tmp_path / "trunc.tflite", config=config)
    (tmp_path / "junk.tflite").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="not a TFLite model"):
        load(tmp_path / "junk.tflite", config=config)


def _assert_fast_int8_graph(path, img_size, classes=10, full_integer=False):
    """The int8 graph tflite_graph.py builds: one XNNPACK partition, no layout ops, int8 from the
    uint8 pixels (or, by default, from after the layers on maps at least img_size // 2 tall, so
    writing at least img_size // 4) to the logits, then the float softmax."""
    ops = [op["op_name"] for op in load(path).backend.interpreter._get_ops_details()]
    assert ops.count("DELEGATE") == 1  # XNNPACK runs the whole graph in one partition
    census = op_census(path)
    assert "TRANSPOSE" not in census
    islands = float_ops(path)
    assert islands[-1] == ("SOFTMAX", [1, classes])  # probabilities out in float32, after the int8 logits
    islands = islands[:-1]
    if full_integer:  # uint8 pixels to float to int8 (conversions XNNPACK runs), logits to float
        assert islands == [] and census["DEQUANTIZE"] == 2 and census["QUANTIZE"] == 1, census
    else:
        assert islands and all(shape[1] >= img_size // 4 or op == "AVERAGE_POOL_2D" for op, shape in islands), islands
        # in after the prefix (a few more where a squeeze-excite block straddles it), logits to the softmax
        assert 2 <= census["DEQUANTIZE"] <= 5 and 1 <= census["QUANTIZE"] <= 4, census
    # h-swish after the prefix as int8 ADD/MUL, pools after it as int8 depthwise convolutions
    assert census.get("HARD_SWISH", 0) == sum(op == "HARD_SWISH" for op, _ in islands)
    assert census.get("AVERAGE_POOL_2D", 0) == sum(op == "AVERAGE_POOL_2D" for op, _ in islands)
    inp = load(path).backend.input
    assert inp["dtype"] == np.uint8 and inp["quantization"] == (1.0, 0)  # camera pixels as they are


@needs_fmnist
def test_tflite_int8_ptq_quantization_and_graph(small_run, tflite_exports):
    r = tflite_exports["int8"]
    # small_run is too weak (16 steps) for int8 to keep 97% of its answers: the check says so, honestly
    p = r.parity
    assert p["precision"] == "int8" and p["images"] == 200 and p["passed"] == (p["top1_agreement"] >= 0.97)
    side = json.loads(r.sidecar.read_text())
    # Raw pixels are uint8 exactly: scale 1, zero point 0; probabilities come out in float32.
    assert side["input"]["quantization"] == {"dtype": "uint8", "scale": 1.0, "zero_point": 0}
    assert side["output"] == {"name": "probabilities", "dtype": "float32", "quantization": None}
    assert side["calibration"]["images"] == 64
    assert load(r.path).precision == "int8"
    _assert_fast_int8_graph(r.path, 32)
    assert side["int8_graph"] == "float-prefix"
    assert r.path.stat().st_size < 0.4 * (small_run / "model.safetensors").stat().st_size  # int8 weights


@needs_fmnist
def test_full_integer_tflite_for_npu_delegates(small_run, tflite_exports, tmp_path, capsys):
    out = tmp_path / "full.tflite"
    assert export_main(
        [
            str(small_run),
            "--format",
            "tflite",
            "--int8",
            "--full-integer",
            "--out",
            str(out),
            "--verify-samples",
            "200",
            "--calibration-samples",
            "64",
        ]
    ) in (0, 1)  # 1: parity verdict
    side = json.loads((tmp_path / "full.tflite.json").read_text())
    assert side["int8_graph"] == "full-integer" and side["parity"]["images"] == 200
    _assert_fast_int8_graph(out, 32, full_integer=True)
    shipped = op_census(tflite_exports["int8"].path)
    assert op_census(out)["CONV_2D"] == shipped["CONV_2D"] and "HARD_SWISH" in shipped  # the same network
    capsys.readouterr()
    for fmt, why in ((["onnx", "--int8"], "integer throughout"), (["tflite"], "float graph has nothing")):
        err = _bad(
            capsys,
            export_main,
            [small_run, "--format", *fmt, "--full-integer", "--out", tmp_path / "x"],
            "--full-integer applies to --format tflite --int8",
        )
        assert why in err


@needs_fmnist
def test_int8_export_times_itself_against_float(small_run, tflite_exports, tmp_path, capsys):
    from skipnet.runtime.timing import cpu_name

    assert tflite_exports["float"].speed is None and "speed" not in _sidecar_keys(tflite_exports["float"])
    for kind in ("int8", "qat"):
        r = tflite_exports[kind]
        speed = json.loads(r.sidecar.read_text())["speed"]
        assert speed == r.speed
        assert speed["float_ms"] > 0 and speed["int8_ms"] > 0 and 15 <= speed["rounds"] <= 100
        assert speed["threads"] == 1 and speed["img_size"] == 32 and speed["cpu"] == cpu_name()
        assert ("warning" in speed) == (speed["int8_speedup"] < 1)
    out = tmp_path / "xs_int8.onnx"
    assert (
        export_main(
            [
                str(small_run),
                "--format",
                "onnx",
                "--int8",
                "--out",
                str(out),
                "--no-verify",
                "--calibration-samples",
                "16",
            ]
        )
        == 0
    )
    printed = capsys.readouterr()
    speed = json.loads((tmp_path / "xs_int8.onnx.json").read_text())["speed"]
    line = printed.out.splitlines()[0]
    assert line.startswith(f"wrote {out}") and (f"{speed['int8_ms']:.2f} vs {speed['float_ms']:.2f} ms" in line)
    assert ("faster than float" in line) == (speed["int8_speedup"] >= 1)
    warnings = [w for w in printed.err.splitlines() if w.startswith("skipnet-export: warning:")]
    assert warnings == ([f"skipnet-export: warning: {speed['warning']}"] if speed["int8_speedup"] < 1 else [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["xs_int8.onnx", "xs_int8.onnx.json"]  # no float copy left


def _sidecar_keys(result):
    return {k for k, v in json.loads(result.sidecar.read_text()).items() if v is not None}


def test_slower_int8_is_said_per_runtime():
    from skipnet.common.contract import FORMATS
    from skipnet.export.speed import speed_check, speed_line, with_warning

    fast = {"int8_speedup": 1.5, "float_ms": 3.0, "int8_ms": 2.0, "threads": 1, "cpu": "X"}
    advice = {name: FORMATS[name].record.slow_int8 for name in ("tflite", "onnx")}
    assert "warning" not in with_warning(fast, advice["tflite"])
    assert speed_line(fast) == "int8 1.50x faster than float here (2.00 vs 3.00 ms, 1 thread)"
    slow = dict(fast, int8_speedup=0.8, int8_ms=3.75, threads=2)
    assert speed_line(slow) == "int8 1.25x slower than float here (3.75 vs 3.00 ms, 2 threads)"
    tfl, ort = with_warning(slow, advice["tflite"])["warning"], with_warning(slow, advice["onnx"])["warning"]
    assert tfl.startswith("int8 runs at 0.80x the speed of float on this CPU (X, 2 threads)")
    assert "skipnet-bench --android" in tfl and "ship the float .onnx" in ort and "\n" not in tfl + ort
    assert speed_check(FORMATS["onnx"], None, None, None, {}) is None  # float: nothing to compare
    assert "macOS" in speed_check(FORMATS["coreml-int8"], None, None, None, {})["skipped"]


def _folder_images(folder, n=60):
    """The validation JPEG files of small_folder, every fifth, as paths an app would pass."""
    return sorted(folder.glob("val/*/*.jpg"))[::5][:n]


@needs_fmnist
@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_int8_parity_of_a_trained_model(folder_run, small_folder, tmp_path, fmt):
    r = export(folder_run, fmt, tmp_path / f"int8.{fmt}", int8=True, verify_samples=300, calibration_samples=64)
    assert r.parity["precision"] == "int8" and r.parity["images"] == 300
    # About 97-99% agreement, as each host rounds; the check's verdict follows its 97% rule.
    assert r.parity["passed"] == (r.parity["top1_agreement"] >= 0.97), r.parity
    assert r.parity["top1_agreement"] >= binomial_floor(0.97, 300), r.parity
    images = [str(p) for p in _folder_images(small_folder)]
    agree = np.mean(np.asarray(_top1(r.path, images)) == np.asarray(_top1(folder_run, images)))
    assert agree >= binomial_floor(0.97, len(images)), agree  # the predictor dequantises as the parity check does
    if fmt == "tflite":
        _assert_fast_int8_graph(r.path, 64, classes=3)
    else:
        graph = onnx.load(str(r.path)).graph
        assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}  # QDQ, run by onnxruntime
        zero_points = {i.name: i.data_type for i in graph.initializer if i.name.endswith("_zero_point")}
        assert onnx.TensorProto.UINT8 in zero_points.values()  # uint8 activations: onnxruntime's fast x86 pairing
        _assert_all_integer_onnx(r.path, tmp_path)
    assert load(r.path).precision == "int8"


def _assert_all_integer_onnx(path, tmp_path):
    """The graph onnxruntime runs (its optimised graph) computes every layer with an int8 kernel:
    one QuantizeLinear in, one DequantizeLinear out, layout nodes, and nothing in float."""
    ort = pytest.importorskip("onnxruntime")
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)
    integer = {op for op in ops if op.startswith("QLinear") or op == "QGemm"}
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 1, ops
    assert set(ops) - integer - {"QuantizeLinear", "DequantizeLinear", "Transpose", "Reshape", "Flatten"} == set(), ops
    assert ops["QLinearConv"] >= 40, ops


@pytest.fixture(scope="module")
def mobilenet_run(tmp_path_factory):
    from skipnet.training import resolve_config, train

    out = tmp_path_factory.mktemp("runs") / "mbv3"
    cfg = resolve_config(
        {
            "model": "mobilenet_v3_small",
            "limit_train": 1024,
            "limit_val": 200,
            "batch_size": 64,
            "epochs": 1,
            "optimizer": "adamw",
            "lr": 0.002,
            "out": str(out),
        }
    )
    train(cfg.validate(), progress=False)
    return out


@needs_fmnist
@pytest.mark.parametrize("run", ["small_run", "mobilenet_run"])
def test_qat_int8_tflite_computes_what_was_trained(run, request, tmp_path):
    """QAT fine-tunes the shipped graph itself (fake_quant.py): the file agrees with the fake-quantised
    model on the parity images, and has exactly the PTQ file's ops."""
    run_dir = request.getfixturevalue(run)
    before = (run_dir / "model.safetensors").read_bytes()
    if run == "small_run":  # the conftest exports (QAT: 1 epoch of 256 images), shared with the MediaPipe tests
        r, ptq = request.getfixturevalue("tflite_exports")["qat"], request.getfixturevalue("tflite_exports")["int8"]
    else:
        r = export(
            run_dir, "tflite", tmp_path / "qat.tflite", int8=True, qat_epochs=1, qat_limit=256, verify_samples=200
        )
        ptq = export(run_dir, "tflite", tmp_path / "ptq.tflite", int8=True, verify=False)
    side = json.loads(r.sidecar.read_text())
    q = side["qat"]
    assert (q["epochs"], q["images"], q["lr"], q["batch_size"]) == (1, 256, QAT_LR, 64)
    assert q["loss"]["name"] == "bias" and "KL divergence" in q["objective"]  # the run's own loss + distillation
    assert q["images"] and q["fake_quant_agreement"] >= 0.99, q
    assert 0 <= q["max_logit_diff_steps"] <= 16, q
    p = r.parity
    assert p["passed"] and p["qat"]["fake_quant_agreement"] == q["fake_quant_agreement"]
    assert q["int8_top1"] == p["exported_top1"]  # measured on the same images, with the same runtime
    assert side["input"]["dtype"] == "uint8" and p["precision"] == "int8" and p["images"] == 200
    assert (run_dir / "model.safetensors").read_bytes() == before  # the run itself is untouched
    assert op_census(r.path) == op_census(ptq.path)  # same graph, so the same speed
    _assert_fast_int8_graph(r.path, 32, 10)
    h = q["holdout"]  # 10,000 of Fashion-MNIST's 60,000 training images, never fine-tuned on
    assert h["images"] == 10000 and h["kept"] in (True, False)
    assert round((h["tuned_top1"] - h["start_top1"]) * h["images"]) == h["gained"] - h["lost"], h


def test_keep_only_a_significantly_better_fine_tuning():
    """McNemar's test on the held-out images only one of the two models gets right."""
    start = np.zeros(10000, bool)
    start[:9000] = True

    def tuned(gained: int, lost: int) -> np.ndarray:
        t = start.copy()
        t[9000 : 9000 + gained] = True
        t[:lost] = False
        return t

    assert keep(start, tuned(200, 20))["kept"]  # a weak model won back what PTQ lost
    assert not keep(start, tuned(52, 47))["kept"]  # +5 of 10,000: chance (SkipNet-S, fully trained)
    assert not keep(start, tuned(0, 30))["kept"] and not keep(start, start)["kept"]
    r = keep(start, tuned(40, 20))  # 20 / sqrt(60) = 2.6 standard errors
    assert r == {"images": 10000, "start_top1": 0.9, "tuned_top1": 0.902, "gained": 40, "lost": 20, "kept": True}
    assert not keep(np.zeros(0, bool), np.zeros(0, bool))["kept"]
    # What skipnet-export prints about it.
    assert held_out_line(r).startswith("QAT: kept the fine-tuned weights: 90.00% -> 90.20% top-1 on 10,000 held-out")
    assert held_out_line(keep(start, tuned(52, 47))).startswith("QAT: kept the PTQ weights")
    assert "too few training images" in held_out_line(keep(np.zeros(0, bool), np.zeros(0, bool)))


@needs_fmnist
def test_qat_is_reproducible_and_never_ships_a_worse_fine_tuning(small_run, tflite_exports, tmp_path):
    """The same QAT export twice writes the same int8 graph; a fine-tuning that wrecks the model (lr 1)
    loses on the held-out images, and the file is the PTQ file: the same int8 tensors and scales.
    Both exports of each pair run in one process (the fixture's and the test's), so the same
    computation on the same kernels: exact equality is the claim."""
    again = export(small_run, "tflite", tmp_path / "again.tflite", int8=True, qat_epochs=1, qat_limit=256, verify=False)
    first = tflite_exports["qat"]
    assert again.qat["holdout"] == json.loads(first.sidecar.read_text())["qat"]["holdout"]
    assert _int8_tensors(again.path) == _int8_tensors(first.path)
    wrecked = export(
        small_run,
        "tflite",
        tmp_path / "wrecked.tflite",
        int8=True,
        qat_epochs=1,
        qat_limit=128,
        qat_lr=1.0,
        calibration_samples=64,
        verify_samples=200,
    )
    h = wrecked.qat["holdout"]
    # lr 1 leaves the weights far from any working model: a loss of 5 points is > 5 standard errors
    # of the held-out sample's difference, on any host (its top-1 falls to about chance).
    assert not h["kept"] and h["tuned_top1"] < h["start_top1"] - 0.05, h
    assert _int8_tensors(wrecked.path) == _int8_tensors(tflite_exports["int8"].path)
    assert abs(wrecked.qat["float_top1"] - wrecked.parity["torch_top1"]) <= 0.005  # the run's own weights


def _int8_tensors(path) -> list[tuple]:
    """Every tensor of a .tflite as (name, type, shape, constant bytes, scales, zero points): equal
    lists mean the same graph with the same weights and quantisation, whatever the metadata."""
    from skipnet.export.tflite_graph import load_model

    model = load_model(path)
    out = []
    for t in model.subgraphs[0].tensors:
        q, data = t.quantization, model.buffers[t.buffer].data
        out.append(
            (
                t.name,
                t.type,
                tuple(t.shape),
                None if data is None else bytes(data),
                None if q is None or q.scale is None else tuple(float(v) for v in q.scale),
                None if q is None or q.zeroPoint is None else tuple(int(v) for v in q.zeroPoint),
            )
        )
    return out


def test_qat_needs_int8(capsys, tmp_path):
    _bad(capsys, export_main, [tmp_path, "--format", "onnx", "--qat-epochs", "1"], "--qat-epochs fine-tunes for int8")


def _tflite_activation_scales(path) -> list[tuple[float, int]]:
    """(scale, zero point as uint8) of every int8 activation of a .tflite (not its constants)."""
    from skipnet.export.tflite_graph import load_model

    model = load_model(path)
    out = []
    for t in model.subgraphs[0].tensors:
        q = t.quantization
        if t.type == 9 and model.buffers[t.buffer].data is None and q is not None and len(q.scale) == 1:  # INT8
            out.append((float(q.scale[0]), int(q.zeroPoint[0]) + 128))
    return out


def _onnx_activation_scales(path) -> list[tuple[float, int]]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [
        (float(init[n.input[1]]), int(init[n.input[2]]))
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in init
    ]


def _near(p, scales) -> bool:
    return any(p[1] == q[1] and abs(p[0] - q[0]) <= 1e-5 * q[0] for q in scales)


@needs_fmnist
def test_qat_onnx_has_the_tflite_files_scales(small_run, tflite_exports, tmp_path):
    """--format onnx --int8 --qat-epochs N: the fine-tuned TFLite graph as a QDQ model whose activation
    scales are the QAT .tflite's (same calibration, ranges frozen), uint8 for onnxruntime's kernels."""
    pytest.importorskip("onnxruntime")
    r = export(small_run, "onnx", tmp_path / "qat.onnx", int8=True, qat_epochs=1, qat_limit=64, verify_samples=200)
    q = json.loads(r.sidecar.read_text())["qat"]
    # onnxruntime rounds in places of its own, and this barely trained model (about 40% top-1) has
    # near ties: the agreement with the fake-quantised model is measured, and held to the int8 97%
    # by the parity check (98.7% on benchmarks/qat.py's weak run), but only to 85% here (89.5-92%
    # measured, moving with the fixture's training on each test worker).
    assert q["fake_quant_agreement"] >= 0.85 and abs(q["int8_top1"] - q["fake_quant_top1"]) <= 0.03, json.dumps(q)
    assert "97%" in r.parity["criterion"] and r.parity["passed"] == (q["fake_quant_agreement"] >= 0.97)
    tflite, onnx_scales = _tflite_activation_scales(tflite_exports["qat"].path), _onnx_activation_scales(r.path)
    assert [p for p in tflite if not _near(p, onnx_scales)] == []  # every int8 tensor of the .tflite
    extra = {p for p in onnx_scales if not _near(p, tflite)}  # calibrated by onnxruntime (some quantised twice)
    assert len(extra) <= q["scales"]["calibrated"] < 0.05 * q["scales"]["from_tflite"], (extra, q["scales"])
    assert load(r.path).backend.logits(np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 10)


@needs_fmnist
def test_qat_coreml_is_w8a8(small_run, tflite_exports, tmp_path):
    """--format coreml --int8 --qat-epochs N: int8 weights and int8 activations in the mlprogram, for
    every layer the QAT .tflite runs in int8."""
    pytest.importorskip("coremltools")
    from skipnet.export.tflite_graph import _op_name, load_model

    r = export(small_run, "coreml", tmp_path / "qat.mlpackage", int8=True, qat_epochs=1, qat_limit=64)
    side = json.loads(r.sidecar.read_text())
    assert r.parity["passed"] and r.parity["spec_checks"]["activations_int8"], r.parity
    assert side["activations"] == "int8" and side["qat"]["images"] == 64
    tfl = load_model(tflite_exports["qat"].path)
    g = tfl.subgraphs[0]
    int8_layers = sum(
        _op_name(tfl, op) in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and g.tensors[op.outputs[0]].type == 9
        for op in g.operators
    )
    census = r.parity["w8a8"]
    assert census["layers_on_int8_activations"] == census["int8_weight_ops"] == int8_layers > 0, census
    assert census["quantize_ops"] >= int8_layers
