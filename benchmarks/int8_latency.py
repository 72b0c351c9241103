"""int8 vs float TFLite latency (LiteRT, XNNPACK, 1 thread, 224x224) and the op census of each graph.

    python benchmarks/int8_latency.py                      # skipnet_m and mobilenet_v3_large
    python benchmarks/int8_latency.py --models skipnet_s --img-size 160

Variants per model: float32; int8 with every op quantised ("int8-all", h-swish included);
int8 with HARD_SWISH kept in float ("int8", what skipnet-export --int8 writes). Calibration
uses real Fashion-MNIST training images, resized like a 224 model's input (latency does not
depend on the weights, so the models are freshly initialised). Invocations of all variants are
interleaved round-robin, and each figure is the median.
"""
from __future__ import annotations

import argparse
import collections
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from skipnet.data import build_datasets, build_transform, pixel_batch
from skipnet.export.tflite_export import export_tflite, quantize_tflite_int8
from skipnet.models import PixelModel, count_macs, create_model


def calibration_pixels(n: int, size: int) -> np.ndarray:
    train, _, info = build_datasets("fashion-mnist", augment=False)
    pre = {"img_size": size, "resize": size, "crop": size, "grayscale_to_rgb": True,
           "mean": list(info.mean), "std": list(info.std)}
    tf = build_transform(pre, train=False, normalize=False)
    idx = [i * len(train) // n for i in range(n)]
    return pixel_batch(tf, [train.source[i][0] for i in idx])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="skipnet_m,mobilenet_v3_large")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=60, help="timed invocations per variant (interleaved)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--calibration", type=int, default=64)
    p.add_argument("--out", default="benchmarks/results/int8_latency")
    args = p.parse_args()
    from ai_edge_litert.interpreter import Interpreter

    calib = calibration_pixels(args.calibration, args.img_size)
    work = Path(tempfile.mkdtemp())
    interpreters, census, sizes, macs = {}, {}, {}, {}
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = create_model(name, 1000).eval()
        macs[name] = count_macs(model, args.img_size)
        pm = PixelModel(model, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], "nhwc")
        fp = work / f"{name}_float.tflite"
        export_tflite(pm, args.img_size, fp)
        paths = {"float": fp}
        paths["int8-all"] = work / f"{name}_int8_all.tflite"
        quantize_tflite_int8(fp, calib, paths["int8-all"], float_ops=())
        paths["int8"] = work / f"{name}_int8.tflite"
        quantize_tflite_int8(fp, calib, paths["int8"])
        for variant, path in paths.items():
            it = Interpreter(model_path=str(path), num_threads=args.threads)
            it.allocate_tensors()
            inp = it.get_input_details()[0]
            x = calib[:1].astype(np.float32)
            if inp["quantization"][0]:
                x = np.clip(np.round(x / inp["quantization"][0] + inp["quantization"][1]), -128, 127)
            it.set_tensor(inp["index"], x.astype(inp["dtype"]))
            interpreters[(name, variant)] = it
            ops = collections.Counter(o["op_name"] for o in it._get_ops_details())
            census[(name, variant)] = dict(sorted(ops.items()))
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
        flt = statistics.median(times[(name, "float")]) * 1e3
        rows.append({"model": name, "variant": variant, "median_ms": round(med, 2),
                     "speedup_vs_float": round(flt / med, 2), "size_mb": round(sizes[(name, variant)] / 1e6, 2),
                     "MACs_M": round(macs[name] / 1e6, 1),
                     "QUANTIZE": ops.get("QUANTIZE", 0), "DEQUANTIZE": ops.get("DEQUANTIZE", 0),
                     "TRANSPOSE": ops.get("TRANSPOSE", 0), "DELEGATE": ops.get("DELEGATE", 0), "ops": ops})
    cmd = "python " + " ".join(sys.argv)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    lines = [f"# int8 vs float TFLite latency, {args.img_size}x{args.img_size}, LiteRT XNNPACK, {args.threads} thread(s)",
             "", f"Command: `{cmd}`", "",
             f"Machine: {cpu}, {len(__import__('os').sched_getaffinity(0))} cores; {time.strftime('%Y-%m-%d')}; "
             f"median of {args.runs} interleaved invocations per variant.", "",
             "| model | variant | median ms | speed-up vs float | size MB | QUANTIZE | DEQUANTIZE | TRANSPOSE | XNNPACK partitions |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['variant']} | {r['median_ms']} | {r['speedup_vs_float']}x | {r['size_mb']} | "
                     f"{r['QUANTIZE']} | {r['DEQUANTIZE']} | {r['TRANSPOSE']} | {r['DELEGATE']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"command": cmd, "cpu": cpu, "platform": platform.platform(),
                                                    "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
