"""Training on a few hundred images: a 3-class Fashion-MNIST image folder through the whole pipeline.

    python benchmarks/small_folder.py                       # -> benchmarks/results/small_folder.{md,json}
    python benchmarks/small_folder.py --work /tmp/small3 --out benchmarks/results/small_folder_before

Writes T-shirt/top, Trouser and Sneaker as JPEG image folders (300 training and 100 validation
images per class, 64x64, from the Debian Fashion-MNIST files: train/ from its training split,
val/ from its test split), then runs `skipnet-pipeline` on them with models skipnet_xs and
mobilenet_v3_small, 3 epochs at 64x64 and otherwise the defaults (the imagefolder recipe), and
tabulates validation top-1 after every epoch and the pipeline's int8 gate for each model.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

from skipnet.bench import cpu_name, study_out, write_study
from skipnet.common.cli import run_cli
from skipnet.data import build_datasets

CLASSES = {0: "tshirt", 1: "trouser", 7: "sneaker"}
PER_CLASS = {"train": 300, "val": 100}
MODELS = ["skipnet_xs", "mobilenet_v3_small"]


def write_folder(root: Path, size: int = 64) -> None:
    """The folder, unless a complete one is there already."""
    if all((root / split / name).is_dir() and len(list((root / split / name).glob("*.jpg"))) == n
           for split, n in PER_CLASS.items() for name in CLASSES.values()):
        return
    train, val, _ = build_datasets("fashion-mnist", None, augment=False)
    for split, source in (("train", train.source), ("val", val.source)):
        taken = {label: 0 for label in CLASSES}
        for i in range(len(source)):
            image, label = source[i]
            if label not in CLASSES or taken[label] == PER_CLASS[split]:
                continue
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            gray = Image.fromarray(np.asarray(image, np.uint8)).convert("L")  # the idx files' 28x28 grayscale
            gray.resize((size, size), Image.BILINEAR).convert("RGB").save(folder / f"{i:05d}.jpg", quality=95)
            taken[label] += 1
            if all(v == PER_CLASS[split] for v in taken.values()):
                break


def epochs_of(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(row["val_top1"]) for row in csv.DictReader(f)]


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="runs/small_folder", help="where the folder and the pipeline's runs go")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/small_folder")
    args = p.parse_args(argv)
    out = study_out(args.out)
    work = Path(args.work)
    write_folder(work / "data")
    config = work / "pipeline.yaml"
    config.write_text(json.dumps({"out": str(work / "pipeline"), "data": "imagefolder", "data-dir": str(work / "data"),
                                  "models": MODELS, "train": {"epochs": args.epochs, "img-size": 64}}))
    run = subprocess.run([sys.executable, "-m", "skipnet.pipeline", "--config", str(config), "--overwrite"],
                         capture_output=True, text=True)
    report = json.loads((work / "pipeline" / "report.json").read_text()) if run.returncode in (0, 1) else {}
    rows = {m: epochs_of(work / "pipeline" / "runs" / m) for m in MODELS}
    cmd = "python benchmarks/small_folder.py " + " ".join(sys.argv[1:])
    lines = [f"# A 3-class image folder, {PER_CLASS['train']} training images per class, {args.epochs} epochs at 64x64", "",
             f"Command: `{cmd}`", "", f"Machine: {cpu_name()}; {date.today()}. Pipeline exit code {run.returncode}.", "",
             "| model | " + " | ".join(f"val top-1 after epoch {e + 1}" for e in range(args.epochs)) + " |",
             "|---|" + "---|" * args.epochs]
    lines += [f"| {m} | " + " | ".join(f"{100 * v:.2f}%" for v in rows[m]) + " |" for m in MODELS]
    lines += ["", "Pipeline summary:", "", "```", *report.get("summary", [run.stderr.strip()[-2000:]]), "```"]
    write_study(out, "\n".join(lines) + "\n", {"command": cmd, "cpu": cpu_name(), "val_top1": rows,
                                               "pipeline_exit_code": run.returncode})
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(_main, prog="small_folder.py"))
