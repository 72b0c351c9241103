"""On-device benchmarking: the benchmark_model parser on real output, and the adb command sequence
against this test's own stand-in `adb` executable, which records its calls (no phone here)."""

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from skipnet.bench.android import REMOTE_DIR, parse_benchmark_model, run_on_android
from skipnet.common import UserError

DATA = Path(__file__).parent / "data"


def test_parser_on_android_output():
    r = parse_benchmark_model((DATA / "benchmark_model_android.txt").read_text())
    assert r["mean_ms"] == pytest.approx(249.684) and r["init_ms"] == pytest.approx(16.242)
    assert r["first_ms"] == pytest.approx(360.262) and r["warmup_avg_ms"] == pytest.approx(304.586)
    assert r["runs"] == 50 and r["std_ms"] == pytest.approx(1.442) and r["min_ms"] == pytest.approx(247.067)
    assert r["memory_init_mb"] == pytest.approx(4.92969) and r["memory_overall_mb"] == pytest.approx(138.809)
    assert "p50_ms" not in r  # this build prints no percentiles


def test_parser_on_info_prefixed_output_with_percentiles():
    r = parse_benchmark_model((DATA / "benchmark_model_info_prefix.txt").read_text())
    assert r["runs"] == 50  # the timed runs' count line, not the warm-up's
    assert r["mean_ms"] == pytest.approx(1240.27) and r["p50_ms"] == pytest.approx(1239.807)
    assert r["p95_ms"] == pytest.approx(1247.415) and r["warmup_avg_ms"] == pytest.approx(1357.6)
    assert r["memory_overall_mb"] == pytest.approx(109.832)


def test_parser_refuses_output_without_timings():
    with pytest.raises(ValueError, match="did not finish"):
        parse_benchmark_model("ERROR: Could not open 'model.tflite'.\n")


def _stand_in_adb(tmp_path, state="device"):
    """An `adb` on PATH that logs each call as JSON and answers like a phone would."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "adb_calls.jsonl"
    sample = DATA / "benchmark_model_android.txt"
    script = bindir / "adb"
    script.write_text(f"""#!{sys.executable}
import json, sys
args = sys.argv[1:]
with open({str(log)!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
if args[-1:] == ["get-state"]:
    if {state!r} != "device":
        sys.stderr.write("error: no devices/emulators found\\n")
        sys.exit(1)
    print("device")
elif "shell" in args and "benchmark_model --graph=" in args[-1]:
    sys.stdout.write(open({str(sample)!r}).read())
elif "shell" in args and args[-1] == "getprop ro.product.model":
    print("Pixel 8")
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bindir, log


def test_adb_sequence_pushes_runs_parses_and_cleans_up(tmp_path, monkeypatch):
    bindir, log = _stand_in_adb(tmp_path)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    models = [("skipnet_m", tmp_path / "skipnet_m_int8.tflite"), ("mobilenet_v3_large", tmp_path / "mbv3.tflite")]
    for _, p in models:
        p.write_bytes(b"TFL3")
    rows = run_on_android(models, binary, serial="R58M", threads=4, runs=30, warmup=3, delegate="gpu")
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(c[:2] == ["-s", "R58M"] for c in calls)  # every call addressed to the chosen device
    calls = [c[2:] for c in calls]
    assert calls[0] == ["get-state"]
    assert calls[1] == ["shell", f"mkdir -p {REMOTE_DIR}"]
    assert calls[2] == ["push", str(binary), f"{REMOTE_DIR}/benchmark_model"]
    assert calls[3] == ["shell", f"chmod 755 {REMOTE_DIR}/benchmark_model"]
    run = [c for c in calls if c[0] == "shell" and "--graph=" in c[1]]
    assert len(run) == 2
    assert run[0][1] == (
        f"{REMOTE_DIR}/benchmark_model --graph={REMOTE_DIR}/skipnet_m_int8.tflite --num_threads=4 "
        "--num_runs=30 --warmup_runs=3 --use_xnnpack=true --use_gpu=true"
    )
    assert ["push", str(models[1][1]), f"{REMOTE_DIR}/mbv3.tflite"] in calls
    assert calls[-1] == ["shell", f"rm -rf {REMOTE_DIR}"]  # nothing left on the phone
    assert [r["model"] for r in rows] == ["skipnet_m", "mobilenet_v3_large"]
    assert rows[0]["mean_ms"] == pytest.approx(249.684) and rows[0]["device"] == "Pixel 8"
    assert rows[0]["memory_overall_mb"] == pytest.approx(138.809)


def test_no_device_missing_adb_and_missing_binary(tmp_path, monkeypatch):
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    with pytest.raises(UserError, match="does not exist"):
        run_on_android([], tmp_path / "nope")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="adb not found"):
        run_on_android([], binary)
    bindir, log = _stand_in_adb(tmp_path, state="none")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    with pytest.raises(UserError, match="no Android device attached"):
        run_on_android([], binary)
    assert [json.loads(line) for line in log.read_text().splitlines()] == [["get-state"]]  # nothing pushed


@pytest.mark.slow
def test_bench_cli_on_android_through_the_stand_in_adb(tmp_path, monkeypatch, capsys):
    pytest.importorskip("litert_torch")
    from conftest import HAVE_FMNIST

    from skipnet.bench.cli import main as bench_main

    if not HAVE_FMNIST:
        pytest.skip("needs Fashion-MNIST for int8 calibration")
    bindir, log = _stand_in_adb(tmp_path)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    rc = bench_main(
        [
            "--android",
            "--benchmark-binary",
            str(binary),
            "--models",
            "mobilenet_v3_small",
            "--img-size",
            "64",
            "--runs",
            "3",
            "--quiet",
            "--json",
            str(tmp_path / "b.json"),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["format"] for r in rows] == ["tflite", "tflite-int8"]  # the formats a phone runs
    assert all(r["mean_ms"] == pytest.approx(249.684) and r["cpu"] == "Pixel 8" for r in rows)
    pushed = [json.loads(line)[1] for line in log.read_text().splitlines() if json.loads(line)[0] == "push"]
    assert len(pushed) == 3 and pushed[1].endswith(".tflite")  # the binary, then each model


def test_bench_cli_says_no_device_before_exporting(tmp_path, monkeypatch, capsys):
    from skipnet.bench.cli import main as bench_main

    bindir, log = _stand_in_adb(tmp_path, state="none")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    rc = bench_main(["--android", "--benchmark-binary", str(binary), "--models", "mobilenet_v3_small"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "no Android device attached" in err, err
    rc = bench_main(["--android", "--models", "mobilenet_v3_small"])
    assert rc == 2 and "--benchmark-binary" in capsys.readouterr().err
