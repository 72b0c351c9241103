"""MediaPipe's ImageClassifier against skipnet.load on the same .tflite files and test images.

    python benchmarks/mediapipe_agreement.py exports/s.tflite exports/s_int8.tflite exports/s_int8_qat.tflite

For each file: top-1 of MediaPipe Tasks' ImageClassifier (the phones' API, here its Python build)
and of skipnet.load (LiteRT) on the same Fashion-MNIST test images, their top-1 agreement, and
whether MediaPipe's category names are the run's class names (the MediaPipe runtime refuses any
other name). The same figures as `skipnet-eval FILE --runtime mediapipe --reference FILE`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import date
from pathlib import Path

from skipnet.bench import cpu_name, study_out, write_study
from skipnet.common.cli import run_cli
from skipnet.export.tflite_metadata import read_metadata
from skipnet.runtime.evaluate import evaluate


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help=".tflite files exported by skipnet-export")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--limit", type=int, default=1000, help="test images, spread over the split")
    p.add_argument("--out", default="benchmarks/results/mediapipe_agreement")
    args = p.parse_args(argv)
    out = study_out(args.out)
    rows = []
    for path in args.files:
        r = evaluate(path, args.data, limit=args.limit, reference=path, runtime="mediapipe", progress=False)
        side = json.loads(Path(path + ".json").read_text())
        md = read_metadata(Path(path))
        rows.append(
            {
                "file": path,
                "precision": side["precision"],
                "qat": "qat" in side,
                "input": f"{side['input']['dtype']} {side['input']['shape']}",
                "images": r["images"],
                "mediapipe_top1": r["top1"],
                "litert_top1": r["reference"]["top1"],
                "top1_agreement": r["reference"]["top1_agreement"],
                "labels_match": md["labels"] == side["class_names"],
            }
        )
    cmd = "python benchmarks/mediapipe_agreement.py " + " ".join(sys.argv[1:])
    lines = [
        f"# MediaPipe ImageClassifier vs skipnet.load, {args.data} test images",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {cpu_name()}; {date.today()}. MediaPipe Tasks' ImageClassifier (Python build of the C++ "
        "Tasks API) reads each file's own metadata; skipnet.load runs the file in LiteRT. Both see the same "
        "images at the model's input size.",
        "",
        "| file | precision | input | images | MediaPipe top-1 | LiteRT top-1 | top-1 agreement | labels match |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        kind = row["precision"] + (" QAT" if row["qat"] else "")
        lines.append(
            f"| {row['file']} | {kind} | {row['input']} | {row['images']} | {100 * row['mediapipe_top1']:.2f}% | "
            f"{100 * row['litert_top1']:.2f}% | {100 * row['top1_agreement']:.2f}% | {row['labels_match']} |"
        )
    write_study(
        out, "\n".join(lines) + "\n", {"command": cmd, "cpu": cpu_name(), "platform": platform.platform(), "rows": rows}
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(_main, prog="mediapipe_agreement.py"))
