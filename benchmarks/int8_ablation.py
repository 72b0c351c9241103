"""Where the int8 graph's remaining time goes, whole model (LiteRT, XNNPACK, 1 thread, 224x224).

    python benchmarks/int8_ablation.py --out benchmarks/results/issue16/int8_ablation

op_profile.py times each op alone; this times whole files with one kind of op taken out or
moved to float, so each figure includes what the delegate fuses. Variants of the int8 file
skipnet-export writes (only "int8" and "full-integer" are networks to ship; the others compute
something else and exist to be timed):
  float            the float file
  int8             skipnet-export --int8 (float prefix)
  full-integer     skipnet-export --int8 --full-integer
  no-pad           int8 with each explicit PAD dropped and its convolution padded SAME (XNNPACK
                   fuses a PAD into the convolution that reads it: this shows what that leaves)
  no-hswish        int8 without h-swish's ADD and MUL (the convolution's output read directly)
  no-se            int8 without the squeeze-excite gates (their pool, layers and MUL)
  float-dw, float-dw-hswish, float-dw-hswish-se
                   the float graph quantised with these op types kept float (depthwise
                   convolutions, PADs, h-swish; with squeeze-excite's MEAN, FULLY_CONNECTED and
                   MUL): what running in float the ops whose int8 kernels gain least would cost
Rounds interleave every file; ratios are medians of per-round ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from skipnet.bench import calibration_pixels, cpu_name, paired_ratio, pixel_interpreter, study_out, write_study
from skipnet.bench.core import model_files
from skipnet.common.cli import run_cli
from skipnet.export.tflite_convert import quantize_tflite_int8
from skipnet.export.tflite_graph import _op_name, _schema, load_model, op_census, save_model
from skipnet.runtime.timing import interleaved_times

FLOAT_OPS = {
    "float-dw": ("DEPTHWISE_CONV_2D", "PAD"),
    "float-dw-hswish": ("DEPTHWISE_CONV_2D", "PAD", "HARD_SWISH"),
    "float-dw-hswish-se": ("DEPTHWISE_CONV_2D", "PAD", "HARD_SWISH", "MEAN", "FULLY_CONNECTED", "MUL"),
}


def _reroute(graph, old: int, new: int) -> None:
    """Every reader of tensor ``old`` reads ``new`` instead (which takes over ``old``'s int8 scale)."""
    graph.tensors[new].quantization = graph.tensors[old].quantization
    for op in graph.operators:
        op.inputs = [new if i == old else i for i in op.inputs]
    graph.outputs = [new if i == old else i for i in graph.outputs]


def _prune(graph) -> None:
    """Drop ops whose outputs nothing reads."""
    while True:
        read = {i for op in graph.operators for i in op.inputs} | set(graph.outputs)
        dead = [op for op in graph.operators if not any(o in read for o in op.outputs)]
        if not dead:
            return
        graph.operators = [op for op in graph.operators if op not in dead]


def _bypass_muls(src: Path, dst: Path, gate: bool) -> None:
    """h-swish's MUL(x, relu6(x + 3)) (gate=False) or squeeze-excite's MUL(x, gate[1x1]) (gate=True)
    replaced by x."""
    model = load_model(src)
    for g in model.subgraphs:
        made = {o: op for op in g.operators for o in op.outputs}
        for op in [op for op in g.operators if _op_name(model, op) == "MUL" and len(op.inputs) == 2]:
            a, b = op.inputs
            shapes = [list(g.tensors[t].shape) for t in (a, b)]
            if gate and shapes[0] != shapes[1]:
                x = a if shapes[0][1] > 1 else b
            elif (
                not gate
                and shapes[0] == shapes[1]
                and b in made
                and _op_name(model, made[b]) == "ADD"
                and a in made[b].inputs
            ):
                x = a
            else:
                continue
            g.operators.remove(op)
            _reroute(g, op.outputs[0], x)
        _prune(g)
    save_model(model, dst)


def _drop_pads(src: Path, dst: Path) -> None:
    schema, model = _schema(), load_model(src)
    for g in model.subgraphs:
        for op in [op for op in g.operators if _op_name(model, op) == "PAD"]:
            for reader in [r for r in g.operators if op.outputs[0] in r.inputs]:
                reader.inputs = [op.inputs[0] if i == op.outputs[0] else i for i in reader.inputs]
                reader.builtinOptions.padding = schema.Padding.SAME
            g.operators.remove(op)
    save_model(model, dst)


def _files(name: str, calib: np.ndarray, work: Path) -> dict[str, Path]:
    shipped = model_files(name, ["tflite", "tflite-int8"], 224, calib, work / name)
    files = {"float": shipped["tflite"], "int8": shipped["tflite-int8"]}
    quantize_tflite_int8(files["float"], calib, work / f"{name}_full.tflite", full_integer=True)
    files["full-integer"] = work / f"{name}_full.tflite"
    for variant, edit in (
        ("no-pad", _drop_pads),
        ("no-hswish", lambda s, d: _bypass_muls(s, d, False)),
        ("no-se", lambda s, d: _bypass_muls(s, d, True)),
    ):
        files[variant] = work / f"{name}_{variant}.tflite"
        edit(files["int8"], files[variant])
    for variant, ops in FLOAT_OPS.items():
        files[variant] = work / f"{name}_{variant}.tflite"
        quantize_tflite_int8(files["float"], calib, files[variant], graph="stock", float_ops=ops)
    return files


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="skipnet_m,mobilenet_v3_large")
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--out", default="benchmarks/results/int8_ablation")
    args = p.parse_args(argv)
    out = study_out(args.out)
    calib = calibration_pixels(64, 224)
    work = Path(tempfile.mkdtemp())
    runners, info = {}, {}
    for name in args.models.split(","):
        for variant, path in _files(name, calib, work).items():
            it, partitions = pixel_interpreter(path, calib[:1])
            runners[(name, variant)] = lambda _x, it=it: it.invoke()
            info[(name, variant)] = {"partitions": partitions, "ops": sum(op_census(path).values())}
    t0 = time.time()
    times = interleaved_times(runners, calib[:1], args.rounds, 5)
    minutes = (time.time() - t0) / 60
    rows = [
        {
            "model": n,
            "variant": v,
            "median_ms": round(statistics.median(ts), 3),
            "vs_float": round(paired_ratio(times[(n, "float")], ts), 3),
            "vs_int8": round(paired_ratio(times[(n, "int8")], ts), 3),
            **info[(n, v)],
        }
        for (n, v), ts in times.items()
    ]
    cmd = "python " + " ".join(sys.argv)
    cpu = cpu_name()
    lines = [
        "# Where int8 time goes, whole model, 224x224, LiteRT XNNPACK, 1 thread",
        "",
        f"Command: `{cmd}` ({minutes:.1f} min of timing)",
        "",
        f"Machine: {cpu}; {time.strftime('%Y-%m-%d')}; {args.rounds} interleaved rounds; speed-ups are "
        "medians of per-round ratios (above 1: faster). Variants: see the script's docstring; only int8 "
        "and full-integer compute the network.",
        "",
        "| model | variant | median ms | speed-up vs float | speed-up vs int8 | ops | XNNPACK partitions |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['variant']} | {r['median_ms']} | {r['vs_float']}x | {r['vs_int8']}x | {r['ops']} | "
        f"{r['partitions']} |"
        for r in rows
    ]
    write_study(out, "\n".join(lines) + "\n", {"command": cmd, "cpu": cpu, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(_main, prog="int8_ablation.py"))
