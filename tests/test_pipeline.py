"""skipnet-pipeline end to end on a tiny setting: real training on Fashion-MNIST, the real
converters (TFLite, ONNX, CoreML), the real runtimes for the gate and the benchmark.

The tiny runs (8 optimiser steps) are too weak for an int8 file to keep 97% of their top-1
answers, so the chain's mechanics are tested with float exports; int8 through the pipeline, with
its parity check and a real gate, is tested on a small image folder trained to ~93%."""

import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import binomial_floor, needs_fmnist

from skipnet.common import UserError
from skipnet.models import count_macs, count_params, create_model
from skipnet.pipeline import load_config
from skipnet.pipeline.cli import main
from skipnet.pipeline.run import _finished

TINY = """
out: {out}
models: [skipnet_xs, mobilenet_v3_small]
train: {{epochs: {epochs}, limit-train: 512, limit-val: 200, batch-size: 64}}
export: {{formats: [tflite, onnx, coreml], verify-samples: 64}}
gate: {{limit: 300, max-drop: 50, min-top1: {min_top1}}}
bench: {{runs: 5, warmup: 1}}
"""


def _config(tmp_path, min_top1, epochs=1):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(out=tmp_path / "demo", min_top1=min_top1, epochs=epochs))
    return str(path)


@needs_fmnist
@pytest.mark.slow
def test_pipeline_end_to_end_gate_and_resume(tmp_path, capsys):
    out = tmp_path / "demo"
    # A gate the barely trained models cannot pass: the whole chain still runs and reports, exit 1.
    assert main(["--config", _config(tmp_path, 0.99), "--quiet"]) == 1
    printed = capsys.readouterr().out
    assert f"report: {out}/report.md" in printed
    summary = printed.split("report:")[1].strip().splitlines()[1:]
    assert len(summary) == 7 and "check(s) FAILED" in summary[-1]
    # A float file's gate: no quantisation to change, so only training longer is named.
    assert "skipnet_xs: to try: more epochs (train: epochs: 2, now 1)" in [line.strip() for line in summary]

    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is False and any("below --min-top1" in f for f in report["failures"])
    for name in ("skipnet_xs", "mobilenet_v3_small"):
        m = report["models"][name]
        net = create_model(name, 10)
        assert m["params"] == count_params(net) and m["macs"] == count_macs(net, 32)
        assert m["eval_images"] == 300 and 0 <= m["gated_top1"] <= 1 and m["gated_format"] == "tflite"
        assert set(m["exports"]) == {"tflite", "onnx", "coreml"}
        assert m["exports"]["tflite"]["p50_ms"] > 0 and m["exports"]["onnx"]["p50_ms"] > 0
        assert "p50_ms" not in m["exports"]["coreml"]  # timing CoreML needs macOS
        assert m["exports"]["onnx"]["parity"]["passed"] and m["exports"]["coreml"]["parity"]["passed"]
    assert report["models"]["skipnet_xs"]["exports"]["tflite"]["latency_vs_baseline"] > 0
    for png in ("accuracy_vs_macs.png", "accuracy_vs_latency.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "| skipnet_xs |" in md and "| mobilenet_v3_small |" in md and "**FAILED**" in md
    assert "make demo FULL=1" in md  # a short budget says so
    steps = json.loads((out / "steps.json").read_text())
    assert {"train skipnet_xs", "export skipnet_xs tflite", "gate mobilenet_v3_small", "bench"} <= set(steps)

    # A relaxed gate redoes only the gate (and the report): nothing is retrained or re-exported.
    weights = out / "runs" / "skipnet_xs" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns, (out / "exports" / "skipnet_xs.tflite").stat().st_mtime_ns
    assert main(["--config", _config(tmp_path, 0.0), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "[train skipnet_xs] done earlier" in printed and "[gate] settings changed" in printed
    assert "all checks passed" in printed
    assert (weights.stat().st_mtime_ns, (out / "exports" / "skipnet_xs.tflite").stat().st_mtime_ns) == stamp

    # An interrupted pipeline resumes: a missing export is redone, and so is one whose model no longer
    # matches its sidecar (an export killed between the two); the rest is kept.
    for p in (out / "exports").glob("mobilenet_v3_small.onnx*"):
        p.unlink()
    with open(out / "exports" / "mobilenet_v3_small.tflite", "ab") as f:
        f.write(b"\0")
    shutil.rmtree(out / "eval")
    assert main(["--config", _config(tmp_path, 0.0), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "[export mobilenet_v3_small onnx] mobilenet_v3_small onnx ->" in printed
    assert "mobilenet_v3_small.tflite does not match its sidecar" in printed
    assert "[export mobilenet_v3_small tflite] mobilenet_v3_small tflite ->" in printed
    assert "[export skipnet_xs onnx] done earlier" in printed
    assert (out / "exports" / "mobilenet_v3_small.onnx").exists()

    # Dropping a model from the study keeps every other step and times the remaining files again.
    stamp = weights.stat().st_mtime_ns
    assert main(["--config", _config(tmp_path, 0.0), "--models", "skipnet_xs", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "[models] dropping mobilenet_v3_small: redoing the benchmark" in printed
    assert "[bench] latency of 2 files" in printed and "[gate skipnet_xs] done earlier" in printed
    assert list(json.loads((out / "report.json").read_text())["models"]) == ["skipnet_xs"]
    assert weights.stat().st_mtime_ns == stamp
    # Added back, its finished steps are found again: nothing is trained, only the timing is redone.
    assert main(["--config", _config(tmp_path, 0.0), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "[models] adding mobilenet_v3_small: redoing the benchmark" in printed
    assert "[train mobilenet_v3_small] done earlier" in printed and "[bench] latency of 4 files" in printed

    # Other training settings on the same directory are refused, not mixed in.
    assert main(["--config", _config(tmp_path, 0.0, epochs=2), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "other settings (train differ)" in err and "--overwrite" in err

    # A run whose last validation sat at chance (training's line, kept in its config.json) says so in the
    # summary and in report.md; the runs above did not.
    assert "warning:" not in printed
    run_config = out / "runs" / "skipnet_xs" / "config.json"
    line = "warning: validation top-1 10.0% is chance level (10.0%) while training top-1 is 40.0%: ..."
    run_config.write_text(json.dumps({**json.loads(run_config.read_text()), "warnings": [line]}))
    assert main(["--config", _config(tmp_path, 0.0), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"  skipnet_xs: {line}\n" in printed and "[train skipnet_xs] done earlier" in printed
    assert f"- skipnet_xs: {line}\n" in (out / "report.md").read_text()


def test_pipeline_missing_data_is_one_line(tmp_path, capsys):
    partial = tmp_path / "fmnist"
    partial.mkdir()
    (partial / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert main(["--data-dir", str(partial), "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "apt-get install dataset-fashion-mnist" in err
    assert not (tmp_path / "demo").exists()  # nothing started


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"models": "skipnet_xs,nope"}, "unknown model(s) nope"),
        ({"models": "skipnet_xs,skipnet_xs"}, "lists a model twice"),
        ({"data": "imagefolder"}, "needs data-dir"),
    ],
)
def test_pipeline_bad_settings(flags, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(**flags)


@pytest.mark.parametrize(
    "yaml, message",
    [
        ("export: {formats: [tflite-int8, pdf]}", "export.formats.*pdf"),
        ("gate: {max-drop: 0.5, min-top1: 95}", "min-top1.*got 95.*fraction"),
        ("train: {model: skipnet_m}", "put it at the top level"),
        ("trian: {}", "unknown key 'trian'"),
        ("export: {formats: [onnx], batch: 0}", "field export.batch: must be a batch size 1..256 .* or 'dynamic'"),
        ("export: {formats: [onnx], batch: any}", r"field export.batch: must be a batch size .*\(got 'any'\)"),
        pytest.param(
            "export: {formats: [coreml]}",
            "CoreML models run only on macOS.*add .*tflite-int8",
            marks=pytest.mark.skipif(sys.platform == "darwin", reason="CoreML runs on macOS"),
        ),
    ],
)
def test_pipeline_bad_yaml_keys(tmp_path, yaml, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml + "\n")
    with pytest.raises(UserError, match=message):
        load_config(str(bad))


def test_pipeline_onnx_batch(tmp_path):
    """export: batch: the .onnx files' batch size, 1 unless set (the other formats have none to set)."""
    assert load_config()["export"]["batch"] == 1
    mine = tmp_path / "mine.yaml"
    mine.write_text("export: {formats: [tflite-int8, onnx], batch: dynamic}\n")
    assert load_config(str(mine))["export"]["batch"] == "dynamic"


def test_full_and_demo_defaults(tmp_path):
    demo, full = load_config(), load_config(full=True)
    assert demo["out"] == "runs/demo" and demo["train"]["limit_train"] == 30000  # the short demo budget
    assert full["out"] == "runs/demo-full" and full["train"]["recipe"] == "full" and "limit_train" not in full["train"]
    assert demo["models"][0].startswith("skipnet") and "mobilenet_v3_large" in demo["models"]
    # A user's config gets the dataset's own recipe, not the demo's shortened one.
    mine = load_config(
        str(Path(__file__).parent.parent / "examples" / "pipeline" / "imagefolder.yaml"), data_dir=str(tmp_path)
    )
    assert mine["train"]["recipe"] == "finetune" and "limit_train" not in mine["train"]
    assert mine["baseline"] == "mobilenet_v3_large" and mine["gate"] == {
        "max_drop": 0.5,
        "min_top1": 0.8,
        "limit": None,
    }


def test_export_names():
    from pathlib import Path

    from skipnet.pipeline.run import export_path, gated_format

    out = Path("o")
    assert export_path(out, "skipnet_m", "tflite-int8-qat") == out / "exports" / "skipnet_m_int8_qat.tflite"
    assert export_path(out, "skipnet_m", "coreml") == out / "exports" / "skipnet_m.mlpackage"
    assert gated_format(["onnx", "coreml-int8", "tflite-int8"]) == "tflite-int8"
    assert gated_format(["coreml", "onnx"]) == "onnx"
    with pytest.raises(UserError, match="baseline resnet18 is not among"):
        load_config(baseline="resnet18")


def test_settings_saved_before_a_new_export_key_still_resume():
    from skipnet.pipeline.config import with_new_keys

    now = load_config()
    saved = json.loads(json.dumps(now))
    del saved["export"]["full_integer"]  # a pipeline.json written before the key existed
    assert with_new_keys(saved) == now and "full_integer" not in saved["export"]


def _folder_config(folder_pipeline: Path, out: Path, export: str, gate: str = "{}") -> Path:
    """A YAML config beside ``out`` with folder_pipeline's data and training, and these export and gate sections."""
    data_dir = json.loads((folder_pipeline / "pipeline.json").read_text())["data_dir"]
    path = out.with_name(out.name + ".yaml")
    path.write_text(f"""
out: {out}
data: imagefolder
data-dir: {data_dir}
models: [skipnet_xs]
train: {{epochs: 3, img-size: 64, workers: 0}}
export: {export}
gate: {gate}
bench: {{runs: 3, warmup: 1}}
""")
    return path


@needs_fmnist
def test_pipeline_full_integer_export(folder_pipeline, tmp_path):
    """export: full-integer: true ships the all-integer TFLite graph (the folder pipeline's own file
    has the default float prefix)."""
    from skipnet.export.tflite_graph import float_ops

    out = tmp_path / "npu"
    mine = _folder_config(folder_pipeline, out, "{formats: [tflite-int8], full-integer: true, verify-samples: 300}")
    assert main(["--config", str(mine), "--quiet"]) in (0, 1)  # the gate's verdict is not the point here
    sidecar = json.loads((out / "exports" / "skipnet_xs_int8.tflite.json").read_text())
    assert sidecar["int8_graph"] == "full-integer"
    assert [op for op, _ in float_ops(out / "exports" / "skipnet_xs_int8.tflite")] == ["SOFTMAX"]
    default = folder_pipeline / "exports" / "skipnet_xs_int8.tflite"
    assert json.loads(default.with_suffix(".tflite.json").read_text())["int8_graph"] == "float-prefix"
    assert len(float_ops(default)) > 1  # the float prefix


def test_finished_counts_epochs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert not _finished(run)
    (run / "config.json").write_text(json.dumps({"train": {"epochs": 3}}))
    (run / "metrics.csv").write_text("epoch,val_top1\n1,0.5\n2,0.6\n")
    assert not _finished(run)  # interrupted in epoch 3: resume it
    (run / "metrics.csv").write_text("epoch,val_top1\n1,0.5\n2,0.6\n3,0.7\n")
    assert _finished(run)


@needs_fmnist
def test_pipeline_on_image_folders(folder_pipeline):
    """A user's own data: 900 JPEG files in class folders, 3 epochs with the imagefolder recipe, int8
    TFLite with its parity check and the default accuracy gate (at most 1 point below float)."""
    report = json.loads((folder_pipeline / "report.json").read_text())
    m = report["models"]["skipnet_xs"]
    assert m["eval_images"] == 300 and m["img_size"] == 64 and m["train"]["recipe"] == "finetune"
    # Three epochs reach about 93-94% on any host; the gate (at most 1 point, 3 of 300 images) and the
    # parity check (97% agreement) are decided by each host's rounding: their verdicts follow their rules.
    assert m["float_top1"] >= binomial_floor(0.93, 300) and m["gates"][0]["gate"] == "max_drop"
    assert m["gate_passed"] == (m["drop_points"] <= m["gates"][0]["threshold"])
    parity = m["exports"]["tflite-int8"]["parity"]
    assert parity["passed"] == (parity["top1_agreement"] >= 0.97) and parity["images"] == 300
    assert parity["top1_agreement"] >= binomial_floor(0.97, 300)
    assert report["passed"] == (m["gate_passed"] and parity["passed"])
    assert report["baseline"] is None and m["exports"]["tflite-int8"]["p50_ms"] > 0 and m["warnings"] == []
    sidecar = json.loads((folder_pipeline / "exports" / "skipnet_xs_int8.tflite.json").read_text())
    assert sidecar["class_names"] == ["sneaker", "trouser", "tshirt"]
    assert m["train"]["limit_train"] is None  # all of them: the demo's short budget is not applied to a config
    run = json.loads((folder_pipeline / "runs" / "skipnet_xs" / "config.json").read_text())
    assert run["train"]["batch_size"] == 16  # the small-data rule


@needs_fmnist
def test_a_failed_int8_gate_names_what_to_try(folder_pipeline, tmp_path, capsys):
    """The folder pipeline with a drop gate no int8 file meets (-1 points: better than float): only the
    gate is redone, and the summary and report.md say how many images the drop is and what to try."""
    out = tmp_path / "copy"
    shutil.copytree(folder_pipeline, out)
    config = _folder_config(folder_pipeline, out, "{formats: [tflite-int8]}", gate="{max-drop: 0, min-top1: 1.0}")
    assert main(["--config", str(config), "--quiet"]) == 1
    printed = capsys.readouterr().out
    assert "[train skipnet_xs] done earlier" in printed and "[gate] settings changed" in printed
    advice = [line.strip() for line in printed.splitlines() if "to try:" in line]
    m = json.loads((out / "report.json").read_text())["models"]["skipnet_xs"]
    assert len(advice) == 1 and advice[0].startswith("skipnet_xs: ") and not m["gate_passed"]
    assert (
        "to try: QAT (export: formats: [tflite-int8-qat], which ships the fine-tuning only when it wins on "
        "held-out training images); more calibration images (export: calibration-samples: 512, now 256); "
        "more epochs (train: epochs: 6, now 3)"
    ) in advice[0]
    if m["drop_points"] > 0:  # the drop gate failed too: its size in images and its spread are named
        assert f"is {round(m['drop_points'] * 3)} of 300 images (+/-" in advice[0]
    assert advice[0][len("skipnet_xs: ") :] in (out / "report.md").read_text()


def test_interrupted_exits_like_the_shell():
    import signal

    from skipnet.pipeline import Interrupted

    assert Interrupted(signal.SIGTERM).exit_code == 143 and Interrupted(None).exit_code == 130  # None: Ctrl-C
