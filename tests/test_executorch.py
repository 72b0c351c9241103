"""ExecuTorch: .pte export (float and PT2E int8) checked in ExecuTorch's own runtime, then loaded,
evaluated, gated and timed like every other format, on real trained runs and real images."""

import json
import shutil

import numpy as np
import pytest
from conftest import benchmark_script, needs_fmnist

from skipnet.runtime import ModelLoadError, load

pytest.importorskip("executorch")
pytestmark = needs_fmnist

from skipnet.export import export  # noqa: E402
from skipnet.export.cli import main as export_main  # noqa: E402
from skipnet.runtime.cli import eval_main  # noqa: E402


@pytest.fixture(scope="module")
def pte(folder_run, tmp_path_factory):
    """folder_run (SkipNet-XS trained on 64x64 image folders) as the float and int8 .pte an app ships."""
    out = tmp_path_factory.mktemp("pte")
    return {
        "float": export(folder_run, "executorch", out / "xs.pte", verify_samples=300),
        "int8": export(folder_run, "executorch", out / "xs_int8.pte", int8=True, verify_samples=300),
    }


def test_float_pte_is_the_pytorch_model(pte, folder_run, small_folder):
    r = pte["float"]
    assert r.path.suffix == ".pte" and r.parity["passed"] and r.parity["top1_agreement"] == 1.0
    assert r.parity["max_abs_logit_diff"] <= 1e-3
    side = json.loads(r.sidecar.read_text())
    assert side["format"] == "executorch" and side["precision"] == "float32"
    assert side["input"] == {"name": "pixels", "layout": "NHWC", "dtype": "uint8", "shape": [1, 64, 64, 3],
                             "batch": 1, "range": [0, 255], "quantization": None}  # fmt: skip
    d = side["delegation"]
    # The whole network in one XNNPACK partition; only the uint8 -> float cast of the input is portable.
    assert d["delegate"] == "XnnpackBackend" and d["partitions"] == 1
    assert d["portable_ops"] == {"dim_order_ops._to_dim_order_copy.default": 1}
    images = sorted(small_folder.glob("val/*/*.jpg"))[::10]
    assert [p.top1 for p in load(r.path).predict(images)] == [p.top1 for p in load(folder_run).predict(images)]


def test_int8_pte_keeps_the_answers_and_times_itself(pte):
    r = pte["int8"]
    assert r.parity["passed"] and r.parity["top1_agreement"] >= 0.97 and r.parity["images"] == 300
    side = json.loads(r.sidecar.read_text())
    assert side["precision"] == "int8" and "PT2E" in side["quantization"]
    assert side["delegation"]["partitions"] == 1 and side["delegation"]["portable_nodes"] == 1
    assert r.speed["int8_ms"] > 0 and r.speed["float_ms"] > 0 and "int8_speedup" in r.speed
    assert r.path.stat().st_size < pte["float"].path.stat().st_size / 2  # int8 weights


def test_eval_gates_a_pte(pte, folder_run, small_folder, tmp_path, capsys):
    rc = eval_main([str(pte["int8"].path), "--data", "imagefolder", "--data-dir", str(small_folder), "--reference",
                    str(folder_run), "--max-drop", "3", "--json", str(tmp_path / "r.json"), "--quiet"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["format"] == "executorch" and r["precision"] == "int8" and r["images"] == 300
    assert r["reference"]["top1_agreement"] >= 0.97 and r["passed"]


def test_threads_and_bench(pte, tmp_path):
    from skipnet.bench import time_files

    pixels = np.zeros((1, 64, 64, 3), np.uint8)
    load(pte["float"].path, threads=1).logits(pixels)  # the pool is sized once per process (1 by default)
    with pytest.raises(ModelLoadError, match="one thread count per process"):
        load(pte["float"].path, threads=3).logits(pixels)
    from skipnet.bench.cli import main as bench_main

    assert bench_main(["--formats", "executorch", "--threads", "1,2", "--models", "skipnet_xs"]) == 2
    rows = time_files({"f": pte["float"].path, "q": pte["int8"].path}, pixels, 1, runs=3, warmup=1, progress=False)
    assert {r["format"] for r in rows.values()} == {"executorch"} and all(r["p50_ms"] > 0 for r in rows.values())
    assert rows["q"]["precision"] == "int8"


def _bad(capsys, fn, match):
    rc = fn()
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err and match in err, err


def test_hostile_pte_files(pte, folder_run, tmp_path, capsys):
    good = pte["float"]
    data = good.path.read_bytes()
    config = json.loads(good.sidecar.read_text())
    cases = {"trunc": data[: len(data) // 2], "zero": b"", "random": np.random.default_rng(0).bytes(4096),
             "mutated": data[:8] + bytes(b ^ 0xFF for b in data[8:4096]) + data[4096:],
             "noise": data[:20000] + np.random.default_rng(1).bytes(5000) + data[25000:]}  # fmt: skip
    for name, blob in cases.items():
        (tmp_path / f"{name}.pte").write_bytes(blob)
        with pytest.raises(ModelLoadError, match="ExecuTorch program|describes another file"):
            load(tmp_path / f"{name}.pte", config=config)
    # a .pte beside another model's sidecar
    shutil.copy(good.path, tmp_path / "other.pte")
    shutil.copy(pte["int8"].sidecar, tmp_path / "other.pte.json")
    with pytest.raises(ModelLoadError, match="describes another file"):
        load(tmp_path / "other.pte")
    # metadata that says another input size than the file takes
    with pytest.raises(ModelLoadError, match="takes 64x64 images"):
        load(good.path, config=dict(config, preprocess=dict(config["preprocess"], crop=32)))
    # QAT is not offered for this backend: said before any work
    _bad(capsys, lambda: export_main([str(folder_run), "--format", "executorch", "--int8", "--qat-epochs", "1",
                                      "--out", str(tmp_path / "q.pte")]), "no QAT export")  # fmt: skip
    assert not (tmp_path / "q.pte").exists()


def test_pipeline_ships_an_int8_pte(folder_pipeline, tmp_path):
    """export: formats: [executorch-int8] in the folder pipeline's settings, as a new pipeline (another
    export list is another pipeline): trained, exported with its parity check, gated and timed."""
    from skipnet.pipeline.cli import main as pipeline_main

    out = tmp_path / "pte"
    config = (folder_pipeline.parent / "mine.yaml").read_text()
    config = config.replace(str(folder_pipeline), str(out)).replace("[tflite-int8]", "[executorch-int8]")
    config = config.replace("epochs: 3", "epochs: 1")  # what is checked is the export, gate and timing
    (tmp_path / "pte.yaml").write_text(config)
    assert pipeline_main(["--config", str(tmp_path / "pte.yaml"), "--quiet"]) in (0, 1)  # the gate is the host's luck
    m = json.loads((out / "report.json").read_text())["models"]["skipnet_xs"]
    e = m["exports"]["executorch-int8"]
    assert e["parity"]["passed"] == (e["parity"]["top1_agreement"] >= 0.97) and e["p50_ms"] > 0
    assert m["gate_passed"] == (m["drop_points"] <= m["gates"][0]["threshold"])
    assert (out / "exports" / "skipnet_xs_int8.pte").read_bytes()[4:8] == b"ET12"


def test_bench_times_pte_files_at_two_threads(tmp_path):
    """skipnet-bench in a process of its own at --threads 2: the exporter must not size ExecuTorch's
    one-per-process pool to 1 thread before the timing asks for 2 (the float file's export lowers a
    program, as the int8 one does)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "skipnet.bench", "--models", "skipnet_xs", "--formats", "executorch",
           "--threads", "2", "--img-size", "32", "--runs", "2", "--warmup", "1",
           "--json", str(tmp_path / "b.json")]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((tmp_path / "b.json").read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    assert {(row["format"], row["threads"]) for row in rows} == {("executorch", 2)}
    assert all(row["p50_ms"] > 0 for row in rows)


def test_op_profile_reads_executorch_event_tracer(pte, tmp_path):
    """benchmarks/op_profile.py's ExecuTorch column: every event of the int8 program is an op of a
    known kind, the delegate's per-call work is its own row, and the uint8 cast is the portable op."""
    op_profile = benchmark_script("op_profile")
    prof = op_profile.executorch_profile(pte["int8"].path, 64, 1, 3, tmp_path)
    kinds = {o["op"]: op_profile.kind_of(o["op"]) for o in prof["ops"]}
    assert "other" not in kinds.values(), kinds
    assert {"depthwise convolution", "convolution and fully connected (GEMM)"} <= set(kinds.values())
    assert [op for op in kinds if op.startswith("portable")] == ["portable _to_dim_order_copy"]
    assert kinds[op_profile._ET_DELEGATE_OVERHEAD].startswith("delegate call outside")
    assert prof["whole_ms"] > 0 and prof["program_ms"] > 0
