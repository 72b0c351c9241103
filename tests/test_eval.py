"""skipnet-eval: accuracy, reference comparison and CI gates on real runs and real Fashion-MNIST images."""

import json
import shutil

import numpy as np
import pytest
from conftest import needs_fmnist
from PIL import Image

from skipnet.runtime.cli import eval_main
from skipnet.runtime.evaluate import evaluate

pytestmark = needs_fmnist


@pytest.fixture(scope="module")
def better_run(tmp_path_factory):
    """A run trained longer than small_run, so that small_run falls short of it."""
    from skipnet.training import resolve_config, train

    out = tmp_path_factory.mktemp("runs") / "better"
    cfg = resolve_config(
        {"model": "skipnet_xs", "limit_train": 6000, "limit_val": 200, "batch_size": 64, "epochs": 2, "out": str(out)}
    )
    train(cfg.validate(), progress=False)
    return out


def _run(capsys, args):
    rc = eval_main([str(a) for a in args] + ["--quiet"])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_gate_that_must_pass_and_json_schema(capsys, better_run, tmp_path):
    rc, out, err = _run(
        capsys,
        [
            better_run,
            "--data",
            "fashion-mnist",
            "--limit",
            "500",
            "--min-top1",
            "0.3",
            "--json",
            tmp_path / "r.json",
            "--plot",
            tmp_path / "cm.png",
        ],
    )
    assert rc == 0, err
    r = json.loads((tmp_path / "r.json").read_text())
    assert {
        "model",
        "format",
        "precision",
        "dataset",
        "split",
        "images",
        "top1",
        "top5",
        "per_class_top1",
        "confusion",
        "gates",
        "passed",
        "images_per_second",
    } <= set(r)
    assert r["format"] == "torch" and r["precision"] == "float32" and r["dataset"] == "fashion-mnist"
    assert r["images"] == 500 and 0.3 <= r["top1"] <= r["top5"] <= 1.0  # fractions in JSON
    assert np.asarray(r["confusion"]).sum() == 500 and len(r["per_class_top1"]) == 10
    assert r["gates"] == [{"gate": "min_top1", "threshold": 0.3, "value": r["top1"], "passed": True}] and r["passed"]
    assert f"top-1 {100 * r['top1']:.2f}%" in out  # a percentage in text
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gate_that_must_fail_says_by_how_much(capsys, small_run, tmp_path):
    rc, out, err = _run(
        capsys,
        [small_run, "--data", "fashion-mnist", "--limit", "200", "--min-top1", "0.95", "--json", tmp_path / "r.json"],
    )
    assert rc == 1
    assert "gate failed" in err and "below --min-top1 95.00% by" in err
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is False


def test_reference_runs_on_the_same_images(capsys, small_run, better_run):
    both = evaluate(small_run, "fashion-mnist", limit=300, reference=better_run, progress=False)
    alone = evaluate(better_run, "fashion-mnist", limit=300, progress=False)
    assert both["reference"]["top1"] == alone["top1"]  # the same 300 images
    assert both["reference"]["drop_points"] == pytest.approx(100 * (alone["top1"] - both["top1"]))
    assert 0.0 <= both["reference"]["top1_agreement"] <= 1.0
    assert both["reference"]["drop_points"] > 1.0  # small_run is the weaker model
    rc, out, err = _run(
        capsys, [small_run, "--data", "fashion-mnist", "--limit", "300", "--reference", better_run, "--max-drop", "0.5"]
    )
    assert rc == 1 and "more than --max-drop 0.50" in err
    rc, out, err = _run(
        capsys, [better_run, "--data", "fashion-mnist", "--limit", "300", "--reference", better_run, "--max-drop", "0"]
    )
    assert rc == 0 and "drop 0.00 points, top-1 agreement 100.00%" in out


def _bad(capsys, args, match):
    rc, out, err = _run(capsys, args)
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and match in err, err


def test_bad_input(capsys, small_run, tmp_path):
    _bad(capsys, [small_run, "--data", "fashion-mnist", "--limit", "0"], "--limit 0")
    _bad(capsys, [small_run, "--data", "fashion-mnist", "--min-top1", "1.5"], "--min-top1 1.5 is out of range")
    _bad(capsys, [small_run, "--data", "fashion-mnist", "--max-drop", "0.5"], "add --reference")
    _bad(capsys, [small_run, "--data", "fashion-mnist", "--reference", small_run, "--max-drop", "-1"], "out of range")
    _bad(capsys, [tmp_path / "nope.tflite", "--data", "fashion-mnist"], "does not exist")
    _bad(capsys, [small_run, "--data", "mnist"], "mnist")
    (tmp_path / "junk.onnx").write_text("not a model")
    _bad(capsys, [tmp_path / "junk.onnx", "--data", "fashion-mnist"], "not a loadable ONNX model")
    # a reference trained for another task: the same run with other class names
    other = tmp_path / "other"
    shutil.copytree(small_run, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["class_names"] = [f"class{i}" for i in range(10)]
    (other / "config.json").write_text(json.dumps(cfg))
    _bad(capsys, [small_run, "--data", "fashion-mnist", "--reference", other], "same task")
    # a dataset whose classes are not the model's: a real two-class image folder
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (tmp_path / "folder" / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / "folder" / split / name / "a.png")
    _bad(capsys, [small_run, "--data", "imagefolder", "--data-dir", tmp_path / "folder"], "trained for")
