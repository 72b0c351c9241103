"""int8 vs float TFLite latency (LiteRT, XNNPACK, 1 thread, 224x224) and the op census of each graph.

    python benchmarks/int8_latency.py                      # skipnet_m and mobilenet_v3_large
    python benchmarks/int8_latency.py --models skipnet_s --img-size 160

Variants per model; the int8 ones are cumulative steps of the graph work (tflite_graph.py):
  float-converter   litert-torch's float graph as it is
  float             + the input normalisation as one depthwise conv, MULs by a constant folded
                    into the weights they reach (see int8-folded): what skipnet-export writes
  int8-stock-all    the converter's graph, every op int8 (int8 HARD_SWISH splits the XNNPACK graph)
  int8-stock        the converter's graph, HARD_SWISH kept float (the first skipnet-export int8)
  int8-hswish       every op int8, HARD_SWISH rewritten as ADD(+3, relu6), MUL, MUL(1/6)
  int8-pools        + average pools as depthwise convs, 8x8 split into 4x4 then 2x2
  int8-all-integer  + the input normalisation as one depthwise conv
  int8-folded       + each MUL by a constant (h-swish's and the squeeze-excite gate's 1/6) folded
                    into the weights of the layers it reaches
  int8-full-integer int8-folded with uint8 pixels in: skipnet-export --int8 --full-integer
  int8              what skipnet-export --int8 writes: int8-full-integer with the ops reading or
                    writing maps at least half the input size (the stem and first block) kept
                    float (the default graph)
Every graph ends in the softmax skipnet-export puts there (float in the int8 graphs too).
Calibration uses real Fashion-MNIST training images resized to the input size. The models are
freshly initialised (latency does not depend on the weights) with BatchNorm statistics estimated
on those images, so activation ranges, and with them the int8 scales, look like a trained
network's (with untouched initial statistics some int8 ADDs fall outside XNNPACK's supported
scale ratios and split the graph, which a trained model would not do). Invocations of all
variants are interleaved round-robin, and each figure is the median.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from skipnet.bench import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    calibration_pixels,
    cpu_name,
    estimate_bn_statistics,
    paired_ratio,
    pixel_interpreter,
    study_out,
    write_study,
)
from skipnet.common.cli import run_cli
from skipnet.export.tflite_convert import export_tflite, quantize_tflite_int8
from skipnet.export.tflite_graph import float_ops, op_census, rewrite_graph
from skipnet.models import PixelModel, count_macs, create_model

VARIANTS = (
    "float-converter",
    "float",
    "int8-stock-all",
    "int8-stock",
    "int8-hswish",
    "int8-pools",
    "int8-all-integer",
    "int8-folded",
    "int8-full-integer",
    "int8",
)
# The rewritten all-integer steps: rewrite_graph arguments applied to the converter's float graph.
INTEGER_STEPS = {
    "int8-hswish": {"ops": ("HARD_SWISH",), "fold_affine": False, "fold_scales": False},
    "int8-pools": {"ops": ("HARD_SWISH", "AVERAGE_POOL_2D"), "fold_affine": False, "fold_scales": False},
    "int8-all-integer": {"fold_scales": False},
    "int8-folded": {},
}


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="skipnet_m,mobilenet_v3_large")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=300, help="timed invocations per variant (interleaved)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--calibration", type=int, default=64)
    p.add_argument("--out", default="benchmarks/results/int8_latency")
    args = p.parse_args(argv)
    out = study_out(args.out)
    calib = calibration_pixels(args.calibration, args.img_size)
    work = Path(tempfile.mkdtemp())
    interpreters, census, sizes, macs, islands = {}, {}, {}, {}, {}
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = create_model(name, 1000).eval()
        macs[name] = count_macs(model, args.img_size)
        pm = PixelModel(model, IMAGENET_MEAN, IMAGENET_STD, "nhwc", probabilities=True)  # as exported
        estimate_bn_statistics(pm, calib)
        p = {v: work / f"{name}_{v}.tflite" for v in VARIANTS}
        export_tflite(pm, args.img_size, p["float-converter"], optimize=False)
        export_tflite(pm, args.img_size, p["float"])
        quantize_tflite_int8(p["float-converter"], calib, p["int8-stock-all"], graph="stock")
        quantize_tflite_int8(p["float-converter"], calib, p["int8-stock"], graph="stock", float_ops=("HARD_SWISH",))
        for variant, kwargs in INTEGER_STEPS.items():
            rewritten = work / f"{name}_{variant}_float.tflite"
            rewrite_graph(p["float-converter"], rewritten, **kwargs)
            quantize_tflite_int8(rewritten, calib, p[variant], graph="stock")
        quantize_tflite_int8(p["float"], calib, p["int8-full-integer"], full_integer=True)
        quantize_tflite_int8(p["float"], calib, p["int8"])
        for variant, path in p.items():
            ops = op_census(path)
            interpreters[(name, variant)], ops["XNNPACK_PARTITIONS"] = pixel_interpreter(path, calib[:1], args.threads)
            census[(name, variant)] = ops
            islands[(name, variant)] = [] if variant.startswith("float") else float_ops(path)
            sizes[(name, variant)] = path.stat().st_size

    for it in interpreters.values():
        for _ in range(args.warmup):
            it.invoke()
    times = {k: [] for k in interpreters}
    for _ in range(args.runs):
        for k, it in interpreters.items():
            t = time.perf_counter()
            it.invoke()
            times[k].append(time.perf_counter() - t)

    rows = []
    for (name, variant), ts in times.items():
        ops = census[(name, variant)]
        med = statistics.median(ts) * 1e3
        # Each round times every variant once, back to back: the median of the per-round ratios is
        # robust to the machine's speed drifting between rounds (it moves by 10-20% here).
        paired = paired_ratio(times[(name, "float")], ts)
        rows.append(
            {
                "model": name,
                "variant": variant,
                "median_ms": round(med, 2),
                "speedup_vs_float": round(paired, 2),
                "size_mb": round(sizes[(name, variant)] / 1e6, 2),
                "MACs_M": round(macs[name] / 1e6, 1),
                "ops_total": sum(v for k, v in ops.items() if k.isupper() and k != "XNNPACK_PARTITIONS"),
                "float_ops": islands[(name, variant)],
                "census": ops,
            }
        )
    cmd = "python " + " ".join(sys.argv)
    cpu = cpu_name()
    lines = [
        f"# int8 vs float TFLite latency, {args.img_size}x{args.img_size}, LiteRT XNNPACK, {args.threads} thread(s)",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {cpu}, {len(os.sched_getaffinity(0))} cores; {time.strftime('%Y-%m-%d')}; "
        f"median of {args.runs} interleaved rounds (each times every variant once); speed-up against "
        "`float` is the median of the per-round ratios, "
        "the float graph skipnet-export writes. Variants are explained in the script's docstring; "
        "int8-hswish to int8-full-integer are cumulative, so each row against the one above is what that "
        "step bought; int8 (shipped) is int8-full-integer with its first layers float. "
        "'float ops' counts the ops an int8 graph computes in float (DEQUANTIZE aside).",
        "",
        "| model | variant | median ms | speed-up vs float | size MB | ops | float ops (int8 graphs) | "
        "QUANTIZE | DEQUANTIZE | TRANSPOSE | HARD_SWISH | AVERAGE_POOL_2D | XNNPACK partitions |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["census"]
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['median_ms']} | {r['speedup_vs_float']}x | {r['size_mb']} | "
            f"{r['ops_total']} | {len(r['float_ops']) if r['variant'].startswith('int8') else '-'} | "
            + " | ".join(
                str(c.get(k, 0))
                for k in ("QUANTIZE", "DEQUANTIZE", "TRANSPOSE", "HARD_SWISH", "AVERAGE_POOL_2D", "XNNPACK_PARTITIONS")
            )
            + " |"
        )
    lines += ["", "Op census of each graph:", ""]
    for r in rows:
        lines.append(f"- {r['model']} {r['variant']}: " + ", ".join(f"{k} {v}" for k, v in r["census"].items()))
    write_study(
        out, "\n".join(lines) + "\n", {"command": cmd, "cpu": cpu, "platform": platform.platform(), "rows": rows}
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(_main, prog="int8_latency.py"))
