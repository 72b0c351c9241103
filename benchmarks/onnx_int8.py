"""onnxruntime int8 against onnxruntime float, configuration by configuration (CPU provider).

    python benchmarks/onnx_int8.py                         # skipnet_m and mobilenet_v3_large, 224x224, 1 thread
    python benchmarks/onnx_int8.py --models skipnet_m --rounds 200

Every int8 file is quantised by onnxruntime's static quantiser from the float .onnx skipnet-export
writes, calibrated on real Fashion-MNIST images. Configurations:
  float              the float .onnx, session at ORT_ENABLE_ALL (MLAS NCHWc kernels): the reference
  qdq-stock          QDQ, uint8 activations, per-channel int8 weights (U8S8), the exported graph as is
  qoperator-u8s8     the same in QOperator format (QLinearConv nodes in the file)
  qoperator-u8u8     QOperator with uint8 weights
  qdq-s8s8           QDQ with int8 activations
  qdq-dw-float       qdq-stock with the depthwise convolutions left float
  qdq-conv-gemm      only Conv and Gemm quantised
  pre-process        qdq-stock after onnxruntime's quant_pre_process optimisation
  +gap ... +hsigmoid cumulative steps of skipnet/export/onnx_graph.py on top of pre-process:
                     squeeze-excite's ReduceMean as GlobalAveragePool, HardSwish as Add/Clip/Mul,
                     kernel=stride AveragePool as depthwise Conv, scalar Muls folded into weights,
                     squeeze-excite's Linear layers as 1x1 Convs, HardSigmoid folded into them;
                     +hsigmoid is what `skipnet-export --format onnx --int8` writes
  shipped/extended   +hsigmoid in a session at ORT_ENABLE_EXTENDED: without the layout
                     transformer that runs QLinearConv channels-last (NHWC)
  shipped/basic      ... at ORT_ENABLE_BASIC (no QDQ fusion: DQ -> float op -> Q everywhere)
  shipped/offline    the session's optimised graph saved by onnxruntime (optimized_model_filepath,
                     ORT_ENABLE_EXTENDED, portable) and loaded with optimisations off
  shipped/spinning   +hsigmoid with the intra-op pool allowed to spin (onnxruntime's default; the
                     others do not, as skipnet-bench)
The models are freshly initialised with BatchNorm statistics from the calibration images (latency
does not depend on the weights). Rounds interleave every session of every model; each figure is a
median, and int8/float is the median of per-round ratios. The census counts the nodes of each
session's optimised graph: int8 kernels, float compute nodes, Q/DQ conversions, layout nodes.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from skipnet.bench import calibration_pixels, cpu_name, paired_ratio, study_out, write_study
from skipnet.bench.core import model_files
from skipnet.common.cli import run_cli
from skipnet.export.onnx_export import quantize_onnx_int8
from skipnet.export.onnx_graph import STEPS
from skipnet.runtime.timing import interleaved_times

_STEP_NAMES = {
    "+gap": "ReduceMean",
    "+hswish": "HardSwish",
    "+pools": "AveragePool",
    "+fold": "fold_scales",
    "+se-conv": "squeeze_excite",
    "+hsigmoid": "hard_sigmoid",
}
assert set(_STEP_NAMES.values()) == set(STEPS)
SHIPPED = "+hsigmoid"


def _quantisations() -> dict[str, dict]:
    """Configuration -> quantize_onnx_int8 keyword arguments (None: a float node list, filled per model)."""
    from onnxruntime.quantization import QuantFormat, QuantType

    stock = {"optimize": False}
    configs = {
        "qdq-stock": stock,
        "qoperator-u8s8": {**stock, "quantizer": {"quant_format": QuantFormat.QOperator}},
        "qoperator-u8u8": {
            **stock,
            "quantizer": {"quant_format": QuantFormat.QOperator, "weight_type": QuantType.QUInt8},
        },
        "qdq-s8s8": {**stock, "quantizer": {"activation_type": QuantType.QInt8}},
        "qdq-dw-float": {**stock, "float_nodes": None},
        "qdq-conv-gemm": {**stock, "quantizer": {"op_types_to_quantize": ["Conv", "Gemm"]}},
        "pre-process": {"steps": ()},
    }
    steps: list[str] = []
    for label, step in _STEP_NAMES.items():
        steps.append(step)
        configs[label] = {"steps": tuple(steps)}
    return configs


# Session variants of the shipped file: (graph optimisation level, spinning, offline-optimised).
SESSIONS = {
    "shipped/extended": ("ORT_ENABLE_EXTENDED", False, False),
    "shipped/basic": ("ORT_ENABLE_BASIC", False, False),
    "shipped/offline": ("ORT_ENABLE_EXTENDED", False, True),
    "shipped/spinning": ("ORT_ENABLE_ALL", True, False),
}
_INT8_OPS = ("QLinear", "QGemm", "DynamicQuantize", "MatMulInteger", "ConvInteger")
_CONVERSIONS = {"QuantizeLinear", "DequantizeLinear"}
_LAYOUT = {"Transpose", "Reshape", "ReorderInput", "ReorderOutput", "Flatten", "Squeeze", "Unsqueeze"}


def _depthwise_nodes(path: Path) -> list[str]:
    import onnx

    return [
        n.name
        for n in onnx.load(str(path)).graph.node
        if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    ]


def _session(path: Path, threads: int, level: str = "ORT_ENABLE_ALL", spin: bool = False, save: Path | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if save is not None:
        opts.optimized_model_filepath = str(save)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _census(path: Path) -> dict[str, int]:
    """Nodes of an optimised graph by kind."""
    import onnx

    ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    kinds = collections.Counter()
    for op, k in ops.items():
        kind = (
            "int8"
            if op.startswith(_INT8_OPS)
            else "q/dq"
            if op in _CONVERSIONS
            else "layout"
            if op in _LAYOUT
            else "float"
        )
        kinds[kind] += k
    return {**kinds, "ops": dict(sorted(ops.items()))}


def _build(name: str, args, calib: np.ndarray, work: Path) -> dict[str, tuple]:
    """Configuration -> (session, file, census) for ``name``."""
    float_path = model_files(name, ["onnx"], args.img_size, calib, work / name)["onnx"]
    files = {"float": float_path}
    for label, kwargs in _quantisations().items():
        if "float_nodes" in kwargs:
            kwargs = {**kwargs, "float_nodes": _depthwise_nodes(float_path)}
        files[label] = work / name / f"{label}.onnx"
        quantize_onnx_int8(float_path, calib, files[label], **kwargs)
    out = {}
    for label, path in files.items():
        seen = work / name / f"{label}.optimised.onnx"
        _session(path, args.threads, save=seen)  # the graph onnxruntime runs, for the census
        out[label] = (_session(path, args.threads), path, _census(seen))
    for label, (level, spin, offline) in SESSIONS.items():
        path = files[SHIPPED]
        if offline:
            path = work / name / "shipped.offline.onnx"
            _session(files[SHIPPED], args.threads, level, save=path)
            level = "ORT_DISABLE_ALL"
        seen = work / name / f"{label.replace('/', '_')}.optimised.onnx"
        _session(path, args.threads, level, save=seen)
        out[label] = (_session(path, args.threads, level, spin), path, _census(seen))
    return out


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="skipnet_m,mobilenet_v3_large")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=100, help="interleaved rounds (each times every session once)")
    p.add_argument("--calibration", type=int, default=64)
    p.add_argument("--out", default="benchmarks/results/onnx_int8")
    args = p.parse_args(argv)
    study_out(args.out)
    calib = calibration_pixels(args.calibration, args.img_size)
    work = Path(tempfile.mkdtemp())
    built = {
        (name, label): v for name in args.models.split(",") for label, v in _build(name, args, calib, work).items()
    }
    x = np.ascontiguousarray(calib[:1].transpose(0, 3, 1, 2), dtype=np.float32)
    runners = {k: (lambda s: lambda v: s.run(None, {"pixels": v}))(session) for k, (session, _, _) in built.items()}
    times = interleaved_times(runners, x, args.rounds, warmup=5)
    rows = []
    for (name, label), ts in times.items():
        census = built[(name, label)][2]
        rows.append(
            {
                "model": name,
                "config": label,
                "median_ms": round(statistics.median(ts), 3),
                "int8_speedup": round(paired_ratio(times[(name, "float")], ts), 3),
                "size_mb": round(built[(name, label)][1].stat().st_size / 1e6, 2),
                "census": census,
            }
        )
    _write(args, rows)
    return 0


def _write(args, rows: list[dict]) -> None:
    cmd = "python " + " ".join(sys.argv)
    cpu = cpu_name()
    lines = [
        f"# onnxruntime int8 against float, {args.img_size}x{args.img_size}, {args.threads} thread(s)",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {cpu}, {len(os.sched_getaffinity(0))} cores; onnxruntime "
        f"{__import__('onnxruntime').__version__}; {time.strftime('%Y-%m-%d')}; {args.rounds} interleaved "
        "rounds. 'speed vs float' is the median of per-round ratios float/config (above 1: faster than "
        "float). Configurations are explained in the script's docstring; +gap to +hsigmoid are cumulative "
        "steps, so each row against the one above is what that step bought. The census counts the nodes "
        "of the graph onnxruntime runs (its optimised graph).",
        "",
        "| model | configuration | median ms | speed vs float | size MB | int8 nodes | float nodes | "
        "Q/DQ nodes | layout nodes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["census"]
        lines.append(
            f"| {r['model']} | {r['config']} | {r['median_ms']:.2f} | {r['int8_speedup']:.2f}x | "
            f"{r['size_mb']} | {c.get('int8', 0)} | {c.get('float', 0)} | {c.get('q/dq', 0)} | "
            f"{c.get('layout', 0)} |"
        )
    lines += ["", "Node census of each optimised graph:", ""]
    lines += [
        f"- {r['model']} {r['config']}: " + ", ".join(f"{k} {v}" for k, v in r["census"]["ops"].items()) for r in rows
    ]
    write_study(
        args.out, "\n".join(lines) + "\n", {"command": cmd, "cpu": cpu, "platform": platform.platform(), "rows": rows}
    )


if __name__ == "__main__":
    sys.exit(run_cli(_main, prog="onnx_int8.py"))
