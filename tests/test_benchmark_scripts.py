"""The study scripts under benchmarks/ run end to end on small real inputs."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import benchmark_script, needs_fmnist

ROOT = Path(__file__).resolve().parent.parent


def _cifar100_binary(root: Path, train: int = 256, test: int = 64) -> Path:
    """CIFAR-100's binary release layout: records of <coarse label><fine label><3072 pixel bytes>."""
    folder = root / "cifar-100-binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train.bin", train), ("test.bin", test)):
        fine = rng.integers(0, 100, n, dtype=np.uint8)
        records = np.concatenate(
            [(fine // 5)[:, None], fine[:, None], rng.integers(0, 256, (n, 3072), dtype=np.uint8)], axis=1
        )
        (folder / name).write_bytes(records.tobytes())
    (folder / "fine_label_names.txt").write_text("\n".join(f"class_{i:02d}" for i in range(100)) + "\n")
    (folder / "coarse_label_names.txt").write_text("\n".join(f"super_{i:02d}" for i in range(20)) + "\n")
    return folder


@pytest.mark.slow
def test_bias_vs_ce_runs_cifar100_with_the_paper_recipe(tmp_path):
    data = _cifar100_binary(tmp_path / "data")
    out = tmp_path / "bias_vs_ce.md"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "bias_vs_ce.py"),
        "--data",
        "cifar100",
        "--data-dir",
        str(data),
        "--recipe",
        "paper",
        "--epochs",
        "1",
        "--seeds",
        "2",
        "--models",
        "skipnet_xs",
        "--work",
        str(tmp_path / "runs"),
        "--out",
        str(out),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.with_suffix(".json").read_text())
    s = result["models"]["skipnet_xs"]
    assert s["n"] == 2 and len(s["diffs"]) == 2 and s["ci95"][0] <= s["diff_mean"] <= s["ci95"][1]
    run = json.loads((tmp_path / "runs" / "cifar100" / "skipnet_xs" / "seed1_ce" / "config.json").read_text())
    assert run["train"]["recipe"] == "paper" and run["train"]["milestones"] == [80, 122]
    assert run["loss"]["name"] == "ce" and run["num_classes"] == 100
    assert "recipe `paper`" in out.read_text() and "| skipnet_xs |" in out.read_text()
    # each run's int8 TFLite file, measured on the same test images (64 of them: a multiple of 1/64)
    q = s["int8"]
    assert len(q["diffs"]) == 2 and all(abs(64 * d / 100 - round(64 * d / 100)) < 1e-6 for d in q["diffs"])
    assert (tmp_path / "runs" / "cifar100" / "skipnet_xs" / "seed1_ce_int8.tflite").exists()
    assert "int8 TFLite files" in out.read_text()
    # Started again, it reuses the finished runs instead of training them again.
    weights = tmp_path / "runs" / "cifar100" / "skipnet_xs" / "seed0_bias" / "model.safetensors"
    before = weights.read_bytes()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and weights.read_bytes() == before
    assert json.loads(out.with_suffix(".json").read_text())["models"] == result["models"]
    hosts = json.loads((tmp_path / "runs" / "hosts.json").read_text())
    assert sorted(hosts) == [f"cifar100/skipnet_xs/seed{s}_{loss}" for s in (0, 1) for loss in ("bias", "ce")]
    # --report-only trains nothing: the same table from the finished runs; with none, one line and exit 2
    r = subprocess.run(cmd + ["--report-only", "--no-int8"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and weights.read_bytes() == before, r.stderr[-2000:]
    again = json.loads(out.with_suffix(".json").read_text())["models"]["skipnet_xs"]
    assert again["diffs"] == s["diffs"] and again["seeds"] == [0, 1] and "Partial" not in out.read_text()
    # a model asked for with no finished pair yet marks the table partial
    with_other = [c if c != "skipnet_xs" else "skipnet_xs,mobilenet_v3_small" for c in cmd]
    r = subprocess.run(with_other + ["--report-only", "--no-int8"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "mobilenet_v3_small seeds none of 2" in out.read_text(), r.stderr[-2000:]
    r = subprocess.run(
        cmd[: cmd.index("--work")]
        + ["--work", str(tmp_path / "empty"), "--out", str(tmp_path / "e.md"), "--report-only"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no finished pair" in r.stderr, r.stderr
    # feature_variance.py on the same runs: the decile table of both losses, and its plot
    fv = tmp_path / "fv.md"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "feature_variance.py"),
            "--work",
            str(tmp_path / "runs"),
            "--data",
            "cifar100",
            "--data-dir",
            str(data),
            "--models",
            "skipnet_xs",
            "--seeds",
            "2",
            "--out",
            str(fv),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(fv.with_suffix(".json").read_text())["models"]["skipnet_xs"]
    assert set(rows) == {"bias", "ce"} and all(len(s["bin_top1"]) == 10 and s["seeds"] == 2 for s in rows.values())
    assert "| skipnet_xs | Bias Loss | 2 |" in fv.read_text() and "| skipnet_xs | cross-entropy | 2 |" in fv.read_text()
    assert fv.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    # each run's measurement is kept beside it, and measured again when the run's weights differ from it
    for bad, says in [(["--models", "skipnet_xs,nope"], "unknown --models nope"), (["--seeds", "0"], "at least 1")]:
        b = subprocess.run(r.args + bad, capture_output=True, text=True, timeout=600)
        assert b.returncode == 2 and b.stderr.count("\n") == 1 and says in b.stderr, b.stderr
    cache = tmp_path / "runs" / "cifar100" / "skipnet_xs" / "seed0_bias_feature_variance.json"
    kept = json.loads(cache.read_text())
    assert len(kept["weights_sha256"]) == 64 and kept["data"] == "cifar100"
    cache.write_text(json.dumps({**kept, "weights_sha256": "0" * 64, "top1": 7.0}))
    r = subprocess.run(r.args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and json.loads(cache.read_text()) == kept, r.stderr[-2000:]


def test_bias_vs_ce_needs_two_seeds(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bias_vs_ce.py"), "--seeds", "1", "--work", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--seeds must be at least 2" in r.stderr


def test_bias_vs_ce_checks_every_run_before_training_any(tmp_path):
    """A wrong name late in --models, or a --work that cannot be a folder, is one line and exit 2
    before the first run trains (or --work is made)."""
    script = str(ROOT / "benchmarks" / "bias_vs_ce.py")
    (tmp_path / "afile").write_text("mine")
    for args, says in [
        (["--models", "skipnet_xs,nope", "--work", str(tmp_path / "w")], "unknown --model 'nope'"),
        (["--models", "skipnet_xs", "--work", str(tmp_path / "afile")], "is a file, not a directory"),
        (["--models", ",", "--work", str(tmp_path / "w")], "--models names no model"),
    ]:
        r = subprocess.run([sys.executable, script, *args, "--out", str(tmp_path / "o")], capture_output=True,
                           text=True, timeout=120)  # fmt: skip
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and (tmp_path / "afile").read_text() == "mine"


def test_bias_vs_ce_training_time_leaves_out_pauses():
    """A study paused for an hour in one epoch, or sharing the CPU for a few, still reports the
    quiet run's time: the lower-quartile epoch times the epochs."""
    quiet_seconds = benchmark_script("bias_vs_ce").quiet_seconds
    assert quiet_seconds([60.0] * 20 + [3600.0] + [120.0] * 9) == 60.0 * 30
    assert quiet_seconds([75.0]) == 75.0


STUDY_SCRIPTS = {
    "bias_vs_ce": [],
    "export_figures": ["runs/none"],
    "feature_variance": ["--work", "none"],
    "host_latency": [],
    "int8_ablation": [],
    "int8_latency": [],
    "litert_runtime": [],
    "mediapipe_agreement": ["none.tflite"],
    "onnx_int8": [],
    "onnx_user_path": [],
    "op_profile": [],
    "qat": [],
    "skipnet_ablation": [],
    "small_folder": [],
}


@pytest.mark.parametrize("script", sorted(STUDY_SCRIPTS))
def test_study_scripts_check_their_out_before_any_work(tmp_path, script):
    (tmp_path / "taken.md").mkdir()  # OUT.md cannot be written: the script must stop before measuring
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / f"{script}.py"),
        *STUDY_SCRIPTS[script],
        "--out",
        str(tmp_path / "taken"),
        "--work" if script in ("qat", "small_folder") else "",
        str(tmp_path / "work") if script in ("qat", "small_folder") else "",
    ]
    r = subprocess.run([c for c in cmd if c], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr[-2000:]
    assert "taken.md is a directory" in r.stderr and not (tmp_path / "work").exists()


@needs_fmnist
@pytest.mark.slow
def test_fashion_mnist_table_marks_a_partial_study(tmp_path):
    out = tmp_path / "fashion_mnist.md"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "fashion_mnist.py"),
        "--models",
        "skipnet_xs",
        "--recipe",
        "fast",
        "--epochs",
        "2",
        "--limit-train",
        "6000",
        "--qat-limit",
        "128",
        "--work",
        str(tmp_path / "study"),
        "--out",
        str(out),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)  # 8 min on a slow 2-core host
    assert r.returncode == 0, r.stderr[-2000:]
    md = out.read_text()
    assert md.startswith("# Fashion-MNIST accuracy table (PARTIAL)") and "recipe `fast`" in md
    assert "Not measured yet: skipnet_s, skipnet_m, mobilenet_v3_small, mobilenet_v3_large" in md
    row = next(line for line in md.splitlines() if line.startswith("| skipnet_xs |")).split("|")[1:-1]
    float_top1, ptq, qat = (float(c.strip().rstrip("%")) for c in row[3:6])  # every int8 column measured
    assert 50 < float_top1 <= 100 and abs(ptq - float_top1) < 5 and abs(qat - float_top1) < 10
    shipped = row[6].strip()  # which weights QAT kept, judged on held-out training images
    assert shipped.startswith(("fine-tuned (", "PTQ start (")), shipped
    assert qat == ptq or shipped.startswith("fine-tuned")  # the start kept: the PTQ file's weights and ranges
    report = json.loads(out.with_suffix(".json").read_text())["runs"][-1]["report"]
    assert report["models"]["skipnet_xs"]["eval_images"] == 10000  # the whole test set, not a sample
    assert (tmp_path / "fashion_mnist_report.md").exists()
    # A study in the work directory is not overwritten by accident.
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "pass --resume" in r.stderr
    _check_merging_runs(out)


def _check_merging_runs(out: Path):
    """A later run that measures other models adds its rows; one with other settings replaces the table."""
    fm = benchmark_script("fashion_mnist")
    (first,) = fm.load_runs(out.with_suffix(".json"))
    later = copy.deepcopy(first)
    later["report"]["models"] = {"skipnet_s": later["report"]["models"].pop("skipnet_xs")}
    later["report"]["failures"] = [f.replace("skipnet_xs", "skipnet_s") for f in later["report"]["failures"]]
    later["date"], later["commit"] = "2099-01-01", "abc1234"
    runs, dropped = fm.merge([first], later)
    assert runs == [first, later] and dropped == []
    md = fm.table(runs, fm._partial(runs))
    rows = {
        line.split("|")[1].strip(): line.split("|")[-2].strip()
        for line in md.splitlines()
        if line.startswith("| skipnet_")
    }
    assert rows == {"skipnet_xs": "1", "skipnet_s": "2"}  # each row names its run
    assert "2099-01-01" in md and "commit abc1234" in md and "Not measured yet: skipnet_m," in md
    # Neither run timed mobilenet_v3_large: no ratio against it (the pipeline's own baseline was another model).
    later["report"]["baseline"] = "skipnet_xs"
    later["report"]["models"]["skipnet_s"]["exports"]["tflite-int8"]["latency_vs_baseline"] = 1.5
    md = fm.table(runs, fm._partial(runs))
    assert "vs mobilenet_v3_large" in md and "1.50x" not in md
    # The same model measured again replaces its row; a run with other settings replaces the whole table.
    assert fm.merge(runs, first)[0] == [later, first]
    other = copy.deepcopy(first)
    other["report"]["config"]["export"]["qat_limit"] += 1
    assert fm.merge(runs, other) == ([other], runs)
    # A run saved before an export key existed did what the key's default does: its rows stay.
    older = copy.deepcopy(later)
    del older["report"]["config"]["export"]["full_integer"]
    assert fm.merge([older], first) == ([older, first], [])


def test_fashion_mnist_refuses_a_table_it_cannot_add_to_before_training(tmp_path):
    out = tmp_path / "fashion_mnist.md"
    out.with_suffix(".json").write_text("{not json")
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "fashion_mnist.py"),
        "--work",
        str(tmp_path / "study"),
        "--out",
        str(out),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not valid JSON" in r.stderr
    out.with_suffix(".json").unlink()
    out.write_text("someone's notes\n")  # an .md this script did not write is not overwritten
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "choose another --out" in r.stderr
    assert out.read_text() == "someone's notes\n" and not (tmp_path / "study").exists()
