"""skipnet-bench on the host: real converters and runtimes, two small models at a small input size."""

import csv
import json
import sys

import pytest
from conftest import needs_fmnist

from skipnet.bench import benchmark
from skipnet.bench.cli import main as bench_main
from skipnet.models import count_macs, create_model

pytestmark = [needs_fmnist, pytest.mark.slow]
pytest.importorskip("litert_torch")


def test_benchmark_table_for_two_small_models(capsys, tmp_path):
    rc = bench_main(
        [
            "--models",
            "skipnet_xs,mobilenet_v3_small",
            "--formats",
            "torch,tflite-int8,coreml",
            "--img-size",
            "64",
            "--threads",
            "1,2",
            "--runs",
            "5",
            "--warmup",
            "1",
            "--quiet",
            "--json",
            str(tmp_path / "b.json"),
            "--csv",
            str(tmp_path / "b.csv"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [(r["model"], r["format"], r["threads"]) for r in rows] == [  # coreml: one row per compute unit
        (m, f, t)
        for m in ("skipnet_xs", "mobilenet_v3_small")
        for f in ("torch", "tflite-int8", "coreml-cpu", "coreml-all")
        for t in (1, 2)
    ]
    for r in rows:
        assert r["macs"] == count_macs(create_model(r["model"], 1000), 64)  # the one MAC counter
        if r["format"].startswith("coreml"):
            assert "macOS" in r["skipped"]
            continue
        assert 0 < r["p50_ms"] <= r["p90_ms"] and r["std_ms"] >= 0 and r["runs"] == 5
        assert r["cpu"] and r["runtime"]
        if r["format"].startswith("tflite"):  # LiteRT's converter counts the same MACs, within 3%
            assert abs(r["macs_litert"] / r["macs"] - 1) < 0.03, r
    by = {(r["model"], r["format"], r["threads"]): r for r in rows}
    assert by[("skipnet_xs", "tflite-int8", 1)]["size_mb"] < 0.4 * by[("skipnet_xs", "torch", 1)]["size_mb"]
    with open(tmp_path / "b.csv") as f:
        assert len(list(csv.DictReader(f))) == 16
    assert "| skipnet_xs | tflite-int8 | 2 |" in out and "LiteRT" in out


def test_litert_mac_estimate_matches_the_paper_figure(tmp_path):
    """count_macs gives docs/paper.md's 216.6 M for MobileNetV3-Large (test_models); LiteRT's converter,
    which also counts element-wise ops, lands within 2% of it at 224x224."""
    from skipnet.bench.core import IMAGENET_MEAN, IMAGENET_STD
    from skipnet.export.tflite_convert import export_tflite
    from skipnet.models import PixelModel

    model = create_model("mobilenet_v3_large", 1000).eval()
    litert = export_tflite(PixelModel(model, IMAGENET_MEAN, IMAGENET_STD, "nhwc"), 224, tmp_path / "m.tflite")
    assert count_macs(model, 224) == 216_589_760
    assert 216.6e6 < litert < 216.6e6 * 1.02


def test_ratio_against_mobilenet_v3_large_is_measured_side_by_side():
    rows = benchmark(
        ["mobilenet_v3_small", "mobilenet_v3_large"], ["tflite"], img_size=64, runs=5, warmup=1, progress=False
    )
    small, large = rows
    assert large["latency_vs_mobilenet_v3_large"] == 1.0
    assert 0 < small["latency_vs_mobilenet_v3_large"] < 1.0  # fewer MACs, faster


def _bad(capsys, args, match):
    rc = bench_main(args)
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and match in err, err


def test_bad_input(capsys, tmp_path):
    _bad(capsys, ["--models", "skipnet_q"], "unknown model")
    _bad(capsys, ["--formats", "tflite,pdf"], "unknown format")
    _bad(capsys, ["--plot", str(tmp_path / "p.png")], "add --accuracy")
    (tmp_path / "a.json").write_text("{}")
    _bad(capsys, ["--accuracy", str(tmp_path / "a.json")], "not a skipnet-eval --json report")
    _bad(capsys, ["--img-size", "50"], "multiple of 32")
    _bad(capsys, ["--threads", "0,2"], "positive thread counts")
    _bad(capsys, ["--threads", "two"], "positive thread counts")
    if sys.platform != "darwin":
        _bad(capsys, ["--formats", "coreml"], "CoreML models run only on macOS")
