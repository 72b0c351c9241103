"""The arm64 platform: .tflite files in LiteRT's aarch64 build (XNNPACK's ARM kernels) under qemu.

`make test` sets the platform up first (`make arm64`); these tests run the real emulated LiteRT."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import needs_fmnist

pytest.importorskip("ai_edge_litert")

from skipnet.common.io import file_record  # noqa: E402
from skipnet.runtime import arm64, load  # noqa: E402
from skipnet.runtime.cli import arm64_main, eval_main  # noqa: E402
from skipnet.runtime.evaluate import evaluate  # noqa: E402


@pytest.fixture(scope="module")
def platform():
    return arm64.platform()  # set up on first use when `make arm64` has not run


def test_make_arm64_again_checks_the_setup(capsys, platform):
    assert arm64_main([]) == 0
    out = capsys.readouterr().out
    assert "setting up" not in out and out.startswith("arm64 (emulated) in ") and "ready (aarch64 numpy " in out
    assert arm64.missing(platform) == []


@needs_fmnist
@pytest.mark.parametrize("kind", ["int8", "float"])
def test_arm64_kernels_compute_what_the_host_computes(tflite_exports, platform, kind, tmp_path):
    """One emulated process evaluates the file in batches; the phones' kernels give the host's answers,
    and XNNPACK takes the same part of the graph on both."""
    path = tflite_exports[kind].path
    r = evaluate(path, "fashion-mnist", limit=256, batch_size=100, platform="arm64", compare_host=True, progress=False)
    assert r["platform"] == "arm64 (emulated)" and r["host"]["platform"].startswith("host (")
    assert r["images"] == 256 and r["host"]["top1_agreement"] >= 0.99
    assert abs(r["top1"] - r["host"]["top1"]) <= 0.01
    d, h = r["delegation"], r["host"]["delegation"]
    assert d == h and d["partitions"] >= 1 and d["delegated_nodes"] > 0.9 * d["nodes"]
    # The same logits through the Python API, image by image against a batch: nothing depends on batching.
    predictor = load(path, platform="arm64")
    pixels = predictor.prepare(np.random.default_rng(0).integers(0, 256, (3, 28, 28, 3), dtype=np.uint8))
    batch = predictor.logits(pixels)
    assert np.array_equal(batch, np.concatenate([predictor.logits(pixels[i : i + 1]) for i in range(3)]))
    assert np.allclose(batch, load(path).logits(pixels), atol=1e-4 if kind == "float" else 0.02)


def _eval(capsys, *args):
    rc = eval_main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


@needs_fmnist
def test_gates_work_on_arm64(capsys, tflite_exports, small_run, platform, tmp_path):
    rc, out, err = _eval(
        capsys,
        tflite_exports["int8"].path,
        "--data",
        "fashion-mnist",
        "--limit",
        "64",
        "--platform",
        "arm64",
        "--compare-host",
        "--reference",
        small_run,
        "--max-drop",
        "50",
        "--min-top1",
        "0.99",
        "--json",
        tmp_path / "r.json",
        "--quiet",
    )
    assert rc == 1 and "below --min-top1 99.00%" in err  # a barely trained model
    assert "on arm64 (emulated)" in out and "delegation: " in out and "XNNPACK partition" in out
    assert "top-1 agreement" in out and "gate max_drop 50.0: pass" in out
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["platform"] == "arm64 (emulated)" and r["seconds"] > 0 and "host" in r


@needs_fmnist
def test_bad_platform_input_is_one_line(capsys, small_run, tflite_exports, platform, tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not checked: refused for its extension before it is read")
    for model, message in (
        (small_run, "the arm64 platform runs only .tflite files"),
        (onnx, "the arm64 platform runs only .tflite files"),
    ):
        rc, out, err = _eval(capsys, model, "--data", "fashion-mnist", "--platform", "arm64", "--quiet")
        assert rc == 2 and err.count("\n") == 1 and message in err, err
    rc, _, err = _eval(capsys, tflite_exports["int8"].path, "--data", "fashion-mnist", "--compare-host")
    assert rc == 2 and err.count("\n") == 1 and "add --platform arm64" in err
    rc, _, err = _eval(
        capsys, tflite_exports["int8"].path, "--data", "fashion-mnist", "--platform", "arm64", "--runtime", "mediapipe"
    )
    assert rc == 2 and err.count("\n") == 1 and "in their own runtime only" in err
    # A truncated file whose sidecar matches it: refused by the emulated LiteRT itself, in one line.
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(tflite_exports["int8"].path.read_bytes()[:4000])
    sidecar = json.loads(tflite_exports["int8"].sidecar.read_text())
    (tmp_path / "corrupt.tflite.json").write_text(json.dumps({**sidecar, "file": file_record(corrupt)}))
    rc, _, err = _eval(capsys, corrupt, "--data", "fashion-mnist", "--platform", "arm64", "--quiet")
    assert rc == 2 and err.count("\n") == 1 and "does not load in LiteRT on arm64 (emulated)" in err, err


@needs_fmnist
def test_a_platform_that_cannot_be_set_up_names_make_arm64(tflite_exports, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {**os.environ, "SKIPNET_ARM64_HOME": str(blocker / "arm64")}  # under a file: cannot be created
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from skipnet.runtime.cli import eval_main; raise SystemExit(eval_main())",
            str(tflite_exports["int8"].path),
            "--data",
            "fashion-mnist",
            "--platform",
            "arm64",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "run `make arm64`" in r.stderr, r.stderr


@needs_fmnist
def test_bench_gives_the_census_on_arm64_without_timing(platform, tmp_path):
    from skipnet.bench.cli import main

    out = tmp_path / "census.json"
    assert (
        main(
            [
                "--platform",
                "arm64",
                "--models",
                "skipnet_xs",
                "--img-size",
                "32",
                "--formats",
                "tflite-int8",
                "--json",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    (row,) = json.loads(out.read_text())["rows"]
    assert row["platform"] == "arm64 (emulated)" and "p50_ms" not in row and "not timed" in row["skipped"]
    assert row["delegation"] == row["host_delegation"] and row["delegation"]["partitions"] >= 1


def test_census_walks_each_partition_back_to_its_boundary():
    """conv -> (XNNPACK) ; a CUSTOM op XNNPACK cannot take ; add -> softmax (XNNPACK): two partitions."""
    from skipnet.runtime.delegation import delegation, summary

    ops = [
        {"index": 0, "op_name": "CONV_2D", "inputs": [0, 10], "outputs": [1]},
        {"index": 1, "op_name": "CUSTOM", "inputs": [1], "outputs": [2]},
        {"index": 2, "op_name": "ADD", "inputs": [2, 1], "outputs": [3]},
        {"index": 3, "op_name": "SOFTMAX", "inputs": [3], "outputs": [4]},
        {"index": 4, "op_name": "DELEGATE", "inputs": [0, 10], "outputs": [1]},
        {"index": 5, "op_name": "DELEGATE", "inputs": [2, 1], "outputs": [4]},
    ]
    log = "INFO: Replacing 3 out of 4 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 3 partitions"
    d = delegation(log, ops)
    assert d == {
        "partitions": 2,
        "nodes": 4,
        "delegated_nodes": 3,
        "builtin_ops": {"CUSTOM": 1},
        "delegate": "TfLiteXNNPackDelegate",
    }
    assert summary(d) == "2 XNNPACK partitions, 3 of 4 nodes; left to the builtin kernels: CUSTOM x1"
