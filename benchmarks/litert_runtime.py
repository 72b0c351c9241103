"""What the LiteRT runtime, rather than the graph, changes in the int8 speed-up (XNNPACK, 1 thread).

    python benchmarks/litert_runtime.py --out benchmarks/results/issue16/litert_runtime
    python benchmarks/litert_runtime.py --litert /tmp/nightly     # another LiteRT build beside the installed one

--litert names a folder holding another build's ai_edge_litert package, e.g. a nightly:
    pip download --no-deps ai-edge-litert-nightly==2.4.0.dev20261026 -d /tmp/w
    pip install --no-deps --target /tmp/nightly /tmp/w/ai_edge_litert_nightly-*.whl

Files per model (224x224): float and int8 as skipnet-export writes them (default graph), and
int8-hswish-op: that int8 graph with h-swish left as one int8 HARD_SWISH op instead of ADD and
MUL, which stays in one XNNPACK partition only where the runtime has an int8 h-swish kernel.
Ways to run each file:
  interpreter   ai_edge_litert's Interpreter, XNNPACK delegate (what skipnet.load uses)
  latest        the same with experimental_default_delegate_latest_features (XNNPACK's
                flag-protected features)
  compiled      LiteRT's CompiledModel API on the CPU accelerator (XNNPACK)
  ynnpack       CompiledModel with enable_ynnpack (XNNPACK's successor), where the build links it
Two builds of one package cannot share a process, so every build runs in processes of its own,
the builds taking turns --repeats times; each process interleaves rounds over every file and way.
Ratios are medians of per-round ratios in a process, then the median over that build's processes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FILES = ("float", "int8", "int8-hswish-op")
WAYS = ("interpreter", "latest", "compiled", "ynnpack")


def _compiled(path: Path, pixels: np.ndarray, ynnpack: bool):
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.cpu_options import CpuOptions
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import Options

    cpu = CpuOptions(num_threads=1, enable_ynnpack=ynnpack)
    model = CompiledModel.from_file(
        str(path), options=Options(hardware_accelerators=HardwareAccelerator.CPU, cpu_options=cpu)
    )
    inputs, outputs = model.create_input_buffers(0), model.create_output_buffers(0)
    inputs[0].write(pixels)
    return lambda: model.run_by_index(0, inputs, outputs)


def _order(path: Path) -> tuple[str, int]:
    name, variant = path.stem.split("@")
    return name, FILES.index(variant)


def _worker(work: Path, rounds: int) -> dict:
    """Time every file every way in this process (whichever ai_edge_litert it imports)."""
    import ai_edge_litert

    from skipnet.bench import pixel_interpreter
    from skipnet.runtime.timing import interleaved_times

    pixels = np.load(work / "pixels.npy", allow_pickle=False)
    runners, partitions, missing = {}, {}, {}
    for path in sorted(work.glob("*.tflite"), key=_order):
        for way in WAYS:
            key = f"{path.stem}|{way}"
            if way in ("interpreter", "latest"):
                it, partitions[key] = pixel_interpreter(path, pixels, 1, latest_features=way == "latest")
                runners[key] = lambda _x, it=it: it.invoke()
                continue
            data = it.get_tensor(it.get_input_details()[0]["index"])  # the pixels as this file's input wants
            try:
                run = _compiled(path, data, way == "ynnpack")
            except RuntimeError as e:
                missing[way] = " ".join(line.lstrip("└ ") for line in str(e).strip().splitlines())
                continue
            runners[key] = lambda _x, run=run: run()
    times = interleaved_times(runners, pixels, rounds, 5, progress=False)
    return {"litert": ai_edge_litert.__version__, "times": times, "partitions": partitions, "missing": missing}


def _process(build: str, work: Path, rounds: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (build, os.environ.get("PYTHONPATH")) if p))
    r = subprocess.run(
        [sys.executable, __file__, "--worker", str(work), "--rounds", str(rounds)],
        capture_output=True,
        text=True,
        env=env,
    )
    if r.returncode:
        raise SystemExit(f"litert_runtime.py: a worker failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _files(models: list[str], work: Path) -> None:
    from skipnet.bench import calibration_pixels
    from skipnet.bench.core import model_files
    from skipnet.export.tflite_convert import quantize_deployed
    from skipnet.export.tflite_graph import input_height, rewrite_graph

    calib = calibration_pixels(64, 224)
    np.save(work / "pixels.npy", calib[:1])
    for name in models:
        shipped = model_files(name, ["tflite", "tflite-int8"], 224, calib, work / "build" / name)
        os.replace(shipped["tflite"], work / f"{name}@float.tflite")
        os.replace(shipped["tflite-int8"], work / f"{name}@int8.tflite")
        kept = work / "build" / f"{name}_hswish.tflite"  # the default graph's rewrites but h-swish's
        rewrite_graph(
            work / f"{name}@float.tflite",
            kept,
            ops=("AVERAGE_POOL_2D",),
            int8=True,
            float_min_height=input_height(work / f"{name}@float.tflite") // 2,
        )
        quantize_deployed(kept, calib, work / f"{name}@int8-hswish-op.tflite")


def _rows(results: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for build, runs in results.items():
        for key in runs[0]["times"]:
            stem, way = key.split("|")
            name, variant = stem.split("@")

            def across(ref: str, key: str = key, runs: list = runs) -> float:
                per_process = [statistics.median(a / b for a, b in zip(r["times"][ref], r["times"][key])) for r in runs]
                return round(statistics.median(per_process), 3)

            rows.append(
                {
                    "build": build,
                    "litert": runs[0]["litert"],
                    "model": name,
                    "file": variant,
                    "way": way,
                    "median_ms": round(statistics.median(statistics.median(r["times"][key]) for r in runs), 3),
                    "vs_float": across(f"{name}@float|{way}"),
                    "vs_interpreter": across(f"{stem}|interpreter"),
                    "partitions": runs[0]["partitions"].get(key),
                }
            )
    return rows


def _main(argv: list[str]) -> int:
    from skipnet.bench import cpu_name, study_out, write_study
    from skipnet.common import UserError

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="skipnet_m,mobilenet_v3_large")
    p.add_argument("--litert", action="append", default=[], help="folder holding another ai_edge_litert build")
    p.add_argument("--rounds", type=int, default=100, help="interleaved rounds per process")
    p.add_argument("--repeats", type=int, default=2, help="processes per build")
    p.add_argument("--out", default="benchmarks/results/litert_runtime")
    args = p.parse_args(argv)
    out = study_out(args.out)
    for folder in args.litert:
        if not (Path(folder) / "ai_edge_litert" / "__init__.py").is_file():
            raise UserError(f"--litert {folder} holds no ai_edge_litert package; pip install --target it there")
    if args.rounds < 1 or args.repeats < 1:
        raise UserError("--rounds and --repeats must be at least 1")
    builds = ["", *[str(Path(f).resolve()) for f in args.litert]]
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _files(args.models.split(","), work)
        results = {b: [] for b in builds}
        for _ in range(args.repeats):
            for build in builds:
                results[build].append(_process(build, work, args.rounds))
    rows = _rows(results)
    missing = {f"{results[b][0]['litert']} {way}": why for b in builds for way, why in results[b][0]["missing"].items()}
    cmd = "python benchmarks/litert_runtime.py" + "".join(f" {a}" for a in (argv or []))
    lines = [
        "# LiteRT builds and APIs against the int8 speed-up, 224x224, 1 thread",
        "",
        f"Command: `{cmd}` ({(time.time() - t0) / 60:.1f} min)",
        "",
        f"Machine: {cpu_name()}; {time.strftime('%Y-%m-%d')}; {args.repeats} processes per build, "
        f"{args.rounds} interleaved rounds each; ratios are medians of per-round ratios (above 1: faster). "
        "Files and ways of running them: see the script's docstring.",
        "",
        "| LiteRT | model | file | way | median ms | speed-up vs float | speed-up vs interpreter | "
        "XNNPACK partitions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['litert']} | {r['model']} | {r['file']} | {r['way']} | {r['median_ms']} | {r['vs_float']}x | "
        f"{r['vs_interpreter']}x | {r['partitions'] if r['partitions'] is not None else '-'} |"
        for r in rows
    ]
    lines += ["", "Not run:", ""] + [f"- {k}: {v}" for k, v in missing.items()] if missing else []
    write_study(out, "\n".join(lines) + "\n", {"command": cmd, "cpu": cpu_name(), "rows": rows, "not_run": missing})
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        print(json.dumps(_worker(Path(sys.argv[2]), int(sys.argv[4]))))
    else:
        from skipnet.common.cli import run_cli

        sys.exit(run_cli(_main, prog="litert_runtime.py"))
