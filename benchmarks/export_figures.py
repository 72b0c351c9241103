"""Export and quantisation figures for one trained run: wall time, file size and parity against
PyTorch for every format skipnet-export writes.

    skipnet-train --data fashion-mnist --out runs/recipe3          # the default recipe, ~5 min
    python benchmarks/export_figures.py runs/recipe3               # ~5 min
    python benchmarks/export_figures.py runs/recipe3 --qat-full    # + QAT on all 60,000 images (~6 min more)

Each export goes through skipnet.export.export, the code behind skipnet-export, with its own
parity check: the same Fashion-MNIST test images (--samples, all 10,000 by default) through
PyTorch and the exported file; int8 TFLite and ONNX are calibrated on 256 training images.
CoreML's numeric check needs macOS; elsewhere only its spec is validated (said in the table).
Writes OUT.md (with the command, machine and date) and OUT.json; the files go to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from skipnet.bench import cpu_name, study_out, write_study
from skipnet.common import UserError, path_size
from skipnet.common.cli import run_cli
from skipnet.common.contract import FORMATS
from skipnet.export import export

# (label, format, int8, extra export arguments)
EXPORTS = [
    ("ONNX float32", "onnx", False, {}),
    ("ONNX int8 (QDQ)", "onnx", True, {}),
    ("TFLite float32", "tflite", False, {}),
    ("TFLite int8 PTQ", "tflite", True, {}),
    ("TFLite int8 QAT, 1 epoch of 1,280 images", "tflite", True, {"qat_epochs": 1, "qat_limit": 1280}),
    ("CoreML float16", "coreml", False, {}),
    ("CoreML int8 weights", "coreml", True, {}),
]
QAT_FULL = ("TFLite int8 QAT, 1 full epoch", "tflite", True, {"qat_epochs": 1})


def row(label: str, result, size: int) -> dict:
    p = result.parity or {}
    out = {"export": label, "seconds": round(result.seconds, 1), "size_mb": round(size / 1e6, 2)}
    for key in ("images", "max_abs_logit_diff", "top1_agreement", "torch_top1", "exported_top1"):
        if key in p:
            out[key] = p[key]
    if "spec_checks" in p and "top1_agreement" not in p:  # CoreML off macOS
        out["note"] = f"spec {'valid' if p['passed'] else 'INVALID'}; numeric check {p.get('numeric', 'skipped')}"
    return out


def table(rows: list[dict]) -> str:
    lines = [
        "| export | wall s | size MB | images | max logit diff | top-1 agreement | PyTorch top-1 | "
        "exported top-1 | drop (points) |",
        "|---" * 9 + "|",
    ]
    for r in rows:
        if "top1_agreement" not in r:
            lines.append(
                f"| {r['export']} | {r['seconds']} | {r['size_mb']} | - | - | - | - | - | "
                f"{r.get('note', 'not checked')} |"
            )
            continue
        diff = f"{r['max_abs_logit_diff']:.1e}" if "max_abs_logit_diff" in r else "-"
        drop = 100 * (r["torch_top1"] - r["exported_top1"])
        lines.append(
            f"| {r['export']} | {r['seconds']} | {r['size_mb']} | {r['images']} | {diff} | "
            f"{100 * r['top1_agreement']:.2f}% | {100 * r['torch_top1']:.2f}% | "
            f"{100 * r['exported_top1']:.2f}% | {drop:.2f} |"
        )
    return "\n".join(lines)


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--samples", type=int, default=10000, help="parity images (Fashion-MNIST test split)")
    p.add_argument("--qat-full", action="store_true", help="also QAT on one full epoch")
    p.add_argument("--out", default="benchmarks/results/export_figures")
    a = p.parse_args(argv)
    out = study_out(a.out)
    run = Path(a.run_dir)
    if not (run / "config.json").is_file():
        raise UserError(f"{run} is not a run directory; train one with skipnet-train --out {run}")
    config = json.loads((run / "config.json").read_text())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, fmt, int8, extra in EXPORTS + ([QAT_FULL] if a.qat_full else []):
            ext = FORMATS[fmt].extension
            path = Path(tmp) / f"{len(rows)}{ext}"
            result = export(run, fmt, path, int8=int8, verify_samples=a.samples, **extra)
            rows.append(row(label, result, path_size(path)))
            print(rows[-1], flush=True)
    command = "python benchmarks/export_figures.py" + "".join(f" {arg}" for arg in sys.argv[1:])
    train = config.get("train", {})
    text = "\n".join(
        [
            f"# Export and quantisation figures for `{run}`",
            "",
            f"Command: `{command}`",
            "",
            f"Machine: {cpu_name()}, {len(os.sched_getaffinity(0))} cores; {time.strftime('%Y-%m-%d')}.",
            "",
            f"The run: {config['model']} trained on {config['dataset']} with the "
            f"{config.get('loss', {}).get('name', '?')} loss"
            f" for {train.get('epochs', '?')} epochs at {config['img_size']}x{config['img_size']} "
            f"(`skipnet-train --data {config['dataset']} --out {run}`, the default recipe); "
            f"its validation top-1 {100 * config['metrics']['val_top1']:.2f}%.",
            "",
            "Wall time is the whole `skipnet.export.export` call: loading the run, reading calibration and parity "
            "images, converting, quantising (QAT: fine-tuning too) and the parity run. Parity: the same test images "
            "through PyTorch and through the exported file in its runtime (onnxruntime, LiteRT); agreement is the "
            "share of images with the same top-1 class, drop the PyTorch top-1 minus the exported top-1.",
            "",
            table(rows),
            "",
        ]
    )
    write_study(out, text, {"command": command, "date": time.strftime("%Y-%m-%d"), "run": str(run), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(_main, prog="export_figures.py"))
