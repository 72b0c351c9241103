"""onnxruntime int8 against float as a user runs the files skipnet-export writes: the same two
files (per input batch) in every way a session gets made, timed in one interleaved run.

    python benchmarks/onnx_user_path.py          # skipnet_m and mobilenet_v3_large, 224x224, 1 thread

Sessions: onnxruntime's defaults on all cores; its defaults with one intra-op thread;
``skipnet.load(path, threads=1)``; skipnet-bench's (one thread, no spinning). Files: batch 1 (the
default) and ``--batch dynamic``. Models are freshly initialised with BatchNorm statistics from
the calibration images (latency does not depend on the weights); int8 is calibrated on 64 real
Fashion-MNIST images. Prints a markdown table and writes OUT.md / OUT.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from skipnet.bench import calibration_pixels, cpu_name, paired_ratio, study_out, write_study
from skipnet.bench.core import built_model, export_file
from skipnet.common.cli import run_cli
from skipnet.export import ExportOptions
from skipnet.runtime.backends import OnnxBackend
from skipnet.runtime.timing import interleaved_times


def _ort(path: Path, threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"pixels": np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)})


SESSIONS = {
    "onnxruntime defaults (all cores)": lambda p: _ort(p, None),
    "onnxruntime defaults, 1 intra-op thread": lambda p: _ort(p, 1),
    "skipnet.load(threads=1)": lambda p: OnnxBackend(p, 1).logits,
    "skipnet-bench (1 thread, no spinning)": lambda p: OnnxBackend.for_timing(p, 1).logits,
}


def _files(name: str, size: int, calib: np.ndarray, work: Path) -> dict[tuple, Path]:
    model, _ = built_model(name, calib)
    out = {}
    for fmt in ("onnx", "onnx-int8"):
        for batch in (1, "dynamic"):
            path = out[(fmt, batch)] = work / f"{name}_{fmt}_{batch}.onnx"
            export_file(model, name, fmt, size, calib, path, ExportOptions(batch=batch).check())
    return out


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="skipnet_m,mobilenet_v3_large")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--out", default="benchmarks/results/onnx_user_path")
    a = p.parse_args(argv)
    out = study_out(a.out)
    calib = calibration_pixels(64, a.img_size)
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models.split(","):
            for (fmt, batch), path in _files(name, a.img_size, calib, Path(tmp)).items():
                for how, make in SESSIONS.items():
                    runners[(name, batch, how, fmt)] = make(path)
        times = interleaved_times(runners, calib[:1], a.rounds, 5, progress=False)
    rows = []
    for name, batch, how, fmt in runners:
        if fmt == "onnx":
            f, q = times[(name, batch, how, "onnx")], times[(name, batch, how, "onnx-int8")]
            rows.append({"model": name, "batch": batch, "session": how, "float_ms": statistics.median(f),
                         "int8_ms": statistics.median(q), "int8_speedup": paired_ratio(f, q)})  # fmt: skip
    command = "python benchmarks/onnx_user_path.py" + "".join(f" {arg}" for arg in sys.argv[1:])
    lines = [
        f"# onnxruntime int8 against float as users run the files, {a.img_size}x{a.img_size}",
        "",
        f"Command: `{command}`. Machine: {cpu_name()}; {time.strftime('%Y-%m-%d')}; {a.rounds} interleaved rounds "
        "timing every file in every session; int8 speed-up: median of per-round ratios float/int8.",
        "",
        "| model | file's batch | session | float ms | int8 ms | int8 speed-up |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['model']} | {r['batch']} | {r['session']} | {r['float_ms']:.2f} | {r['int8_ms']:.2f} | "
            f"{r['int8_speedup']:.2f}x |"
            for r in rows
        ),  # fmt: skip
        "",
    ]
    write_study(out, "\n".join(lines), {"command": command, "date": time.strftime("%Y-%m-%d"), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(_main, prog="onnx_user_path.py"))
