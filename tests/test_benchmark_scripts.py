"""The study scripts under benchmarks/ run end to end on small real inputs."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_fmnist

ROOT = Path(__file__).resolve().parent.parent


def _cifar100_binary(root: Path, train: int = 256, test: int = 64) -> Path:
    """CIFAR-100's binary release layout: records of <coarse label><fine label><3072 pixel bytes>."""
    folder = root / "cifar-100-binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train.bin", train), ("test.bin", test)):
        fine = rng.integers(0, 100, n, dtype=np.uint8)
        records = np.concatenate([(fine // 5)[:, None], fine[:, None],
                                  rng.integers(0, 256, (n, 3072), dtype=np.uint8)], axis=1)
        (folder / name).write_bytes(records.tobytes())
    (folder / "fine_label_names.txt").write_text("\n".join(f"class_{i:02d}" for i in range(100)) + "\n")
    (folder / "coarse_label_names.txt").write_text("\n".join(f"super_{i:02d}" for i in range(20)) + "\n")
    return folder


@pytest.mark.slow
def test_bias_vs_ce_runs_cifar100_with_the_paper_recipe(tmp_path):
    data = _cifar100_binary(tmp_path / "data")
    out = tmp_path / "bias_vs_ce.md"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bias_vs_ce.py"), "--data", "cifar100", "--data-dir", str(data),
           "--recipe", "paper", "--epochs", "1", "--seeds", "2", "--models", "skipnet_xs",
           "--work", str(tmp_path / "runs"), "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.with_suffix(".json").read_text())
    s = result["models"]["skipnet_xs"]
    assert s["n"] == 2 and len(s["diffs"]) == 2 and s["ci95"][0] <= s["diff_mean"] <= s["ci95"][1]
    run = json.loads((tmp_path / "runs" / "cifar100" / "skipnet_xs" / "seed1_ce" / "config.json").read_text())
    assert run["train"]["recipe"] == "paper" and run["train"]["milestones"] == [80, 122]
    assert run["loss"]["name"] == "ce" and run["num_classes"] == 100
    assert "recipe `paper`" in out.read_text() and "| skipnet_xs |" in out.read_text()
    # Started again, it reuses the finished runs instead of training them again.
    weights = tmp_path / "runs" / "cifar100" / "skipnet_xs" / "seed0_bias" / "model.safetensors"
    before = weights.read_bytes()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and weights.read_bytes() == before
    assert json.loads(out.with_suffix(".json").read_text())["models"] == result["models"]


def test_bias_vs_ce_needs_two_seeds(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bias_vs_ce.py"), "--seeds", "1",
                        "--work", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--seeds must be at least 2" in r.stderr


@needs_fmnist
@pytest.mark.slow
def test_fashion_mnist_table_marks_a_partial_study(tmp_path):
    out = tmp_path / "fashion_mnist.md"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "fashion_mnist.py"), "--models", "skipnet_xs", "--recipe", "fast",
           "--epochs", "2", "--limit-train", "6000", "--qat-limit", "128", "--work", str(tmp_path / "study"),
           "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)  # 8 min on a slow 2-core host
    assert r.returncode == 0, r.stderr[-2000:]
    md = out.read_text()
    assert md.startswith("# Fashion-MNIST accuracy table (PARTIAL)") and "recipe `fast`" in md
    assert "Not measured yet: skipnet_s, skipnet_m, mobilenet_v3_small, mobilenet_v3_large" in md
    row = next(line for line in md.splitlines() if line.startswith("| skipnet_xs |")).split("|")[1:-1]
    float_top1, ptq, qat = (float(c.strip().rstrip("%")) for c in row[3:6])  # every int8 column measured
    assert 50 < float_top1 <= 100 and abs(ptq - float_top1) < 5 and abs(qat - float_top1) < 10
    report = json.loads(out.with_suffix(".json").read_text())["report"]
    assert report["models"]["skipnet_xs"]["eval_images"] == 10000  # the whole test set, not a sample
    assert (tmp_path / "fashion_mnist_report.md").exists()
    # A study in the work directory is not overwritten by accident.
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "pass --resume" in r.stderr
